//! The API against a real server on 127.0.0.1:0, driven over HTTP.

mod attacks;
mod deploy;
mod restore;

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

struct Server {
    base: String,
    auth: String,
    data: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

async fn start_on(data: tempfile::TempDir, blocking_wait: Duration) -> Server {
    start_with(data, blocking_wait, api::NamespaceLimits::default()).await
}

async fn start_with(data: tempfile::TempDir, blocking_wait: Duration, limits: api::NamespaceLimits) -> Server {
    start_gated(data, blocking_wait, limits, None).await
}

/// A server whose restore of stored resources takes a permit from `restore_gate` for each, when there is one.
async fn start_gated(
    data: tempfile::TempDir,
    blocking_wait: Duration,
    limits: api::NamespaceLimits,
    restore_gate: Option<std::sync::Arc<tokio::sync::Semaphore>>,
) -> Server {
    let options = api::Options {
        // Speculation must not pause when parallel tests saturate the machine: some tests check what it does.
        config: platform::Config {
            engine: engine::Config { pause_percent: 101, ..Default::default() },
            ..Default::default()
        },
        blocking_wait,
        limits,
        restore_gate: restore_gate.clone(),
        ..api::Options::new("127.0.0.1:0".parse().unwrap(), data.path().to_path_buf())
    };
    // Bounded: a start that waited for the restore would never return while the gate is shut.
    let running = tokio::time::timeout(Duration::from_secs(20), api::Server::start(options))
        .await
        .expect("the server starts without waiting for the restore")
        .unwrap();
    let base = format!("http://{}", running.addr);
    let restored = running.restored();
    let auth = std::fs::read_to_string(data.path().join("auth")).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        running
            .serve(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    if restore_gate.is_none() {
        // The tests that restart a server invoke what it restores: wait for that, as a client would retry 503s.
        restored.await;
    }
    Server { base, auth, data, stop: Some(stop), task: Some(task) }
}

async fn start() -> Server {
    start_on(tempfile::tempdir().unwrap(), api::BLOCKING_WAIT).await
}

impl Server {
    async fn stop(mut self) -> tempfile::TempDir {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await; // let the store close
        self.data
    }

    /// One HTTP request; `auth` is `uuid:key` or `None`. Returns (status, JSON body).
    async fn call(&self, method: &str, path: &str, auth: Option<&str>, body: Option<Value>) -> (u16, Value) {
        self.raw(method, path, auth, body.map(|b| b.to_string())).await
    }

    async fn raw(&self, method: &str, path: &str, auth: Option<&str>, body: Option<String>) -> (u16, Value) {
        let (status, _, body) = self.exchange(method, path, auth, body).await;
        (status, body)
    }

    /// [`Server::raw`], with the response's headers.
    async fn exchange(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<String>,
    ) -> (u16, ureq::http::HeaderMap, Value) {
        let url = format!("{}{path}", self.base);
        let auth = auth.map(|a| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(a)));
        let method = method.to_string();
        tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
            let mut builder = ureq::http::Request::builder().method(method.as_str()).uri(&url);
            builder = builder.header("content-type", "application/json");
            if let Some(a) = auth {
                builder = builder.header("authorization", a);
            }
            let request = builder.body(body.unwrap_or_default().into_bytes()).unwrap();
            let mut response = agent.run(request).unwrap();
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let text = response.body_mut().with_config().limit(16 << 20).read_to_string().unwrap();
            (status, headers, serde_json::from_str(&text).unwrap_or(Value::String(text)))
        })
        .await
        .unwrap()
    }
}

const HELLO_PY: &str = "def main(args):\n    print('hello', args.get('name', 'world'))\n    return {'greeting': 'hello ' + args.get('name', 'world')}\n";

async fn put_action(s: &Server, name: &str, kind: &str, code: &str) -> (u16, Value) {
    let body = json!({"exec": {"kind": kind, "code": code}});
    s.call("PUT", &format!("/api/v1/namespaces/_/actions/{name}?overwrite=true"), Some(&s.auth), Some(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_are_created_listed_invoked_and_deleted() {
    let s = start().await;
    let auth = Some(s.auth.as_str());
    let (status, created) = put_action(&s, "hello", "python:3", HELLO_PY).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!((created["name"].clone(), created["namespace"].clone()), (json!("hello"), json!("guest")));
    assert_eq!(created["exec"]["kind"], "python:3");
    let (_, got) = s.call("GET", "/api/v1/namespaces/guest/actions/hello", auth, None).await;
    assert_eq!(got["exec"]["code"], HELLO_PY);
    let (_, list) = s.call("GET", "/api/v1/namespaces/_/actions", auth, None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0]["exec"].get("code").is_none(), "listings carry no code");

    // Blocking, result only.
    let (status, result) = s
        .call(
            "POST",
            "/api/v1/namespaces/_/actions/hello?blocking=true&result=true",
            auth,
            Some(json!({"name": "ada"})),
        )
        .await;
    assert_eq!((status, result), (200, json!({"greeting": "hello ada"})));
    // Blocking, the whole record.
    let (status, record) =
        s.call("POST", "/api/v1/namespaces/_/actions/hello?blocking=true", auth, Some(json!({}))).await;
    assert_eq!(status, 200);
    assert_eq!(record["response"]["result"], json!({"greeting": "hello world"}));
    assert_eq!(record["response"]["status"], "success");
    // Non-blocking: 202 and an id; the activation, its result and logs appear.
    let (status, accepted) =
        s.call("POST", "/api/v1/namespaces/_/actions/hello", auth, Some(json!({"name": "bo"}))).await;
    assert_eq!(status, 202);
    let id = accepted["activationId"].as_str().unwrap().to_string();
    let mut record = Value::Null;
    for _ in 0..100 {
        let (status, r) = s.call("GET", &format!("/api/v1/namespaces/_/activations/{id}"), auth, None).await;
        if status == 200 {
            record = r;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(record["activationId"], id);
    let (_, result) = s.call("GET", &format!("/api/v1/namespaces/_/activations/{id}/result"), auth, None).await;
    assert_eq!(result["result"], json!({"greeting": "hello bo"}));
    let (_, logs) = s.call("GET", &format!("/api/v1/namespaces/_/activations/{id}/logs"), auth, None).await;
    assert!(logs["logs"][0].as_str().unwrap().ends_with("stdout: hello bo"), "{logs}");
    let (_, list) = s.call("GET", "/api/v1/namespaces/_/activations?name=hello&limit=2", auth, None).await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["activationId"], id, "newest first");

    let (status, _) = s.call("DELETE", "/api/v1/namespaces/_/actions/hello", auth, None).await;
    assert_eq!(status, 200);
    let (status, err) = s.call("GET", "/api/v1/namespaces/_/actions/hello", auth, None).await;
    assert_eq!(status, 404);
    assert!(err["error"].is_string() && err["code"].is_string(), "{err}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_and_errors_have_openwhisk_shapes() {
    let s = start().await;
    let auth = Some(s.auth.as_str());
    put_action(&s, "inc", "nodejs:default", "function main(p) { return { n: (p.n || 0) + 1 }; }").await;
    put_action(&s, "boom", "nodejs:20", "function main() { return { error: 'no luck' }; }").await;
    let seq = json!({"exec": {"kind": "sequence", "components": ["/guest/inc", "/_/inc", "inc"]}});
    let (status, created) = s.call("PUT", "/api/v1/namespaces/_/actions/three", auth, Some(seq)).await;
    assert_eq!(status, 200, "{created}");
    let (status, result) = s
        .call("POST", "/api/v1/namespaces/_/actions/three?blocking=true&result=true", auth, Some(json!({"n": 1})))
        .await;
    assert_eq!((status, result), (200, json!({"n": 4})));
    // An application error: 502 with the error as result.
    let (status, result) =
        s.call("POST", "/api/v1/namespaces/_/actions/boom?blocking=true&result=true", auth, None).await;
    assert_eq!((status, result), (502, json!({"error": "no luck"})));
    // Creating over an existing action without overwrite is a conflict.
    let body = json!({"exec": {"kind": "nodejs:20", "code": "function main() { return {}; }"}});
    let (status, _) = s.call("PUT", "/api/v1/namespaces/_/actions/inc", auth, Some(body)).await;
    assert_eq!(status, 409);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_right_status_and_leaves_nothing_behind() {
    let s = start().await;
    let auth = Some(s.auth.as_str());
    let cases: Vec<(&str, &str, Option<String>, u16, &str)> = vec![
        ("PUT", "/api/v1/namespaces/_/actions/a", Some("{not json".into()), 400, "malformed"),
        (
            "PUT",
            "/api/v1/namespaces/_/actions/a",
            Some(json!({"exec": {"kind": "cobol", "code": "x"}}).to_string()),
            400,
            "cobol",
        ),
        (
            "PUT",
            "/api/v1/namespaces/_/actions/a",
            Some(json!({"exec": {"kind": "python:3", "code": "def main(a)\n"}}).to_string()),
            400,
            "SyntaxError",
        ),
        (
            "PUT",
            "/api/v1/namespaces/_/actions/a",
            Some(json!({"exec": {"kind": "python:3", "code": "x"}, "colour": 1}).to_string()),
            400,
            "unknown field 'colour'",
        ),
        (
            "PUT",
            "/api/v1/namespaces/_/actions/a",
            Some(json!({"exec": {"kind": "sequence", "components": ["/other/x"]}}).to_string()),
            403,
            "namespace 'other'",
        ),
        (
            "PUT",
            "/api/v1/namespaces/_/actions/a%2Fb",
            Some(json!({"exec": {"kind": "python:3", "code": "x"}}).to_string()),
            400,
            "contains '/'",
        ),
        ("POST", "/api/v1/namespaces/_/actions/ghost?blocking=true", Some("{}".into()), 404, "does not exist"),
        ("GET", "/api/v1/namespaces/_/activations?limit=lots", None, 400, "'limit' must be a number"),
    ];
    for (method, path, body, want, needle) in cases {
        let (status, err) = s.raw(method, path, auth, body).await;
        assert_eq!(status, want, "{method} {path}: {err}");
        assert!(err["error"].as_str().unwrap_or("").contains(needle), "{method} {path}: {err}");
    }
    let (_, list) = s.call("GET", "/api/v1/namespaces/_/actions", auth, None).await;
    assert_eq!(list, json!([]), "nothing was created");
    // An oversized payload: 413, and the server goes on serving.
    put_action(&s, "echo", "python:3", "def main(a):\n    return a\n").await;
    let big = json!({"blob": "x".repeat(1 << 20)});
    let (status, err) = s.call("POST", "/api/v1/namespaces/_/actions/echo?blocking=true", auth, Some(big)).await;
    assert_eq!(status, 413, "{err}");
    let (status, _) = s.call("GET", "/health", None, None).await;
    assert_eq!(status, 200);
    // Metrics count what happened: requests by route and status, invocations by status.
    let (status, metrics) = s.raw("GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap().to_string();
    assert!(
        text.contains(r#"specfaas_http_requests_total{method="PUT",route="/api/v1/namespaces/{ns}/actions/{name}",status="400"} 5"#),
        "{text}"
    );
    assert!(text.contains(r#"status="413"} 1"#), "{text}");
    assert!(text.contains("specfaas_speculative_launches_total "), "{text}");
    s.stop().await;
}

/// Every counter the platform declares reaches `/metrics`, with its value, whether or not anything counted it yet:
/// the names come from the one declaration (`Snapshot::COUNTERS`), so a counter added there and left out of the
/// export fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_platform_counter_reaches_metrics() {
    let s = start().await;
    put_action(&s, "echo", "python:3", "def main(a):\n    return a\n").await;
    let (status, _) =
        s.call("POST", "/api/v1/namespaces/_/actions/echo?blocking=true", Some(&s.auth), Some(json!({"n": 1}))).await;
    assert_eq!(status, 200);
    let (status, metrics) = s.raw("GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap().to_string();
    let counters = platform::metrics::Snapshot::COUNTERS;
    assert!(counters.len() >= 14, "{counters:?}");
    for c in counters {
        let name = format!("specfaas_{}_total", c.name);
        assert!(text.contains(&format!("# TYPE {name} counter")), "{name} is not exported:\n{text}");
        let sample = text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).unwrap_or_else(|| panic!("{name}"));
        assert!(sample.parse::<u64>().is_ok(), "{name} has value {sample:?}");
    }
    for name in ["effects_replayed", "budget_exhausted", "effects_suspended"] {
        assert!(text.contains(&format!("specfaas_{name}_total 0")), "{name}:\n{text}");
    }
    assert!(text.contains(r#"specfaas_invocations_total{status="success"} 1"#), "{text}");
    assert!(text.contains("# TYPE specfaas_squashes_total counter"), "{text}");
    assert!(text.contains("specfaas_http_request_seconds_sum{"), "{text}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_required_and_namespaces_are_isolated() {
    let s = start().await;
    for auth in [None, Some("nope:nope"), Some(&*format!("{}x", s.auth))] {
        let (status, err) = s.call("GET", "/api/v1/namespaces", auth, None).await;
        assert_eq!(status, 401, "{auth:?}: {err}");
        assert!(!err.to_string().contains(&s.auth), "errors never echo keys");
    }
    let (status, namespaces) = s.call("GET", "/api/v1/namespaces", Some(&s.auth), None).await;
    assert_eq!((status, namespaces), (200, json!(["guest"])));
    // A second tenant's key cannot reach guest's actions, nor see them listed.
    put_action(&s, "secret", "python:3", "def main(a):\n    return {'s': 1}\n").await;
    let (status, _) = s.call("GET", "/api/v1/namespaces/other/actions", Some(&s.auth), None).await;
    assert_eq!(status, 403);
    let data = s.stop().await;
    // Restart on the same data dir: the action survives; a key for another namespace is isolated.
    let store = storage::RedbStore::open(data.path().join("store.redb")).unwrap();
    let bob = api::keys::create(&store, "bob").await.unwrap();
    drop(store);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = start_on(data, api::BLOCKING_WAIT).await;
    let (status, result) =
        s.call("POST", "/api/v1/namespaces/_/actions/secret?blocking=true&result=true", Some(&s.auth), None).await;
    assert_eq!((status, result), (200, json!({"s": 1})), "deployed actions survive a restart");
    let bob_auth = bob.auth();
    let (status, list) = s.call("GET", "/api/v1/namespaces/_/actions", Some(&bob_auth), None).await;
    assert_eq!((status, list), (200, json!([])), "bob sees none of guest's actions");
    let (status, _) =
        s.call("POST", "/api/v1/namespaces/guest/actions/secret?blocking=true", Some(&bob_auth), None).await;
    assert_eq!(status, 403);
    let (status, _) = s.call("GET", "/api/v1/namespaces/_/actions/secret", Some(&bob_auth), None).await;
    assert_eq!(status, 404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_and_concurrency_limits_answer_429() {
    let limits = api::NamespaceLimits { concurrent_invocations_max: 1, invocations_per_minute_max: 4 };
    // A short blocking wait, so a slow invocation is still in flight when the caller gets its 202.
    let s = start_with(tempfile::tempdir().unwrap(), Duration::from_millis(100), limits).await;
    let auth = Some(s.auth.as_str());
    put_action(&s, "slow", "python:3", "import time\ndef main(a):\n    time.sleep(a.get('s', 0))\n    return {}\n")
        .await;
    let (status, _) =
        s.call("POST", "/api/v1/namespaces/_/actions/slow?blocking=true", auth, Some(json!({"s": 1}))).await;
    assert_eq!(status, 202, "the slow invocation goes on after the blocking wait");
    let (status, err) = s.call("POST", "/api/v1/namespaces/_/actions/slow?blocking=true", auth, Some(json!({}))).await;
    assert_eq!(status, 429, "{err}");
    assert!(err["error"].as_str().unwrap().contains("concurrent"), "{err}");
    tokio::time::sleep(Duration::from_millis(1200)).await; // the slow one ends and frees its slot
    let (status, _) = s.call("POST", "/api/v1/namespaces/_/actions/slow?blocking=true", auth, Some(json!({}))).await;
    assert_eq!(status, 200);
    // 4 per minute: every invocation so far spent a token (the concurrency refusal too: the rate is checked first),
    // so the quota runs out within the next few.
    let mut refused = None;
    for i in 0..5 {
        let (status, err) =
            s.call("POST", "/api/v1/namespaces/_/actions/slow?blocking=true", auth, Some(json!({}))).await;
        if status == 429 {
            refused = Some((i, err));
            break;
        }
    }
    let (_, err) = refused.expect("the per-minute quota runs out");
    assert!(err["error"].as_str().unwrap().contains("in the last minute"), "{err}");
    let (status, _) = s.call("GET", "/health", None, None).await;
    assert_eq!(status, 200, "the server goes on serving");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_are_deployed_from_asl_invoked_and_restored() {
    let s = start().await;
    let auth = Some(s.auth.as_str());
    put_action(&s, "double", "nodejs:20", "function main(p) { return { n: p.n * 2 }; }").await;
    let asl = json!({"StartAt": "D", "States": {
        "D": {"Type": "Task", "Resource": "double", "Next": "Big?"},
        "Big?": {"Type": "Choice", "Choices": [{"Variable": "$.n", "NumericGreaterThan": 10, "Next": "Yes"}], "Default": "No"},
        "Yes": {"Type": "Pass", "Result": {"big": true}, "End": true},
        "No": {"Type": "Task", "Resource": "double", "End": true}}});
    let (status, created) = s.call("PUT", "/api/v1/namespaces/_/workflows/flow", auth, Some(asl)).await;
    assert_eq!(status, 200, "{created}");
    let (status, result) = s
        .call("POST", "/api/v1/namespaces/_/workflows/flow?blocking=true&result=true", auth, Some(json!({"n": 2})))
        .await;
    assert_eq!((status, result), (200, json!({"n": 8})));
    let (_, record) =
        s.call("POST", "/api/v1/namespaces/_/workflows/flow?blocking=true", auth, Some(json!({"n": 9}))).await;
    assert_eq!(record["response"]["result"], json!({"big": true}));
    let path = record["annotations"].as_array().unwrap().iter().find(|a| a["key"] == "path").unwrap()["value"].clone();
    assert_eq!(path, json!(["D", "Big?", "Yes"]));
    let (_, list) = s.call("GET", "/api/v1/namespaces/_/workflows", auth, None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    // YAML text, and errors that name the state.
    let yaml = json!({"definition": "StartAt: X\nStates:\n  X:\n    Type: Task\n    Resource: ghost\n    End: true\n"});
    let (status, err) = s.call("PUT", "/api/v1/namespaces/_/workflows/bad", auth, Some(yaml)).await;
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().contains("state \"X\""), "{err}");
    let data = s.stop().await;
    let s = start_on(data, api::BLOCKING_WAIT).await;
    let (status, result) = s
        .call(
            "POST",
            "/api/v1/namespaces/_/workflows/flow?blocking=true&result=true",
            Some(&s.auth),
            Some(json!({"n": 1})),
        )
        .await;
    assert_eq!((status, result), (200, json!({"n": 4})), "workflows survive a restart");
    let (status, _) = s.call("DELETE", "/api/v1/namespaces/_/workflows/flow", Some(&s.auth), None).await;
    assert_eq!(status, 200);
    let (status, _) = s.call("POST", "/api/v1/namespaces/_/workflows/flow?blocking=true", Some(&s.auth), None).await;
    assert_eq!(status, 404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_actions_travel_in_base64_and_bad_modules_are_refused() {
    let s = start().await;
    let auth = Some(s.auth.as_str());
    // Echoes its input: the same module the hand-off benchmark chains.
    let module = wat::parse_str(runtime::conformance::WASM_ECHO).unwrap();
    let code = base64::engine::general_purpose::STANDARD.encode(&module);
    let body = json!({"exec": {"kind": "wasm", "code": code, "binary": true}});
    let (status, created) = s.call("PUT", "/api/v1/namespaces/_/actions/echo?overwrite=true", auth, Some(body)).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["exec"]["kind"], "wasm:wasip1");
    let (status, result) = s
        .call("POST", "/api/v1/namespaces/_/actions/echo?blocking=true&result=true", auth, Some(json!({"a": 1})))
        .await;
    assert_eq!((status, result), (200, json!({"a": 1})));
    // Not base64; base64 of something that is not a module; a module without the entry point.
    for (code, needle) in [
        ("%%%".to_string(), "must be the module in base64"),
        (base64::engine::general_purpose::STANDARD.encode("print('hi')"), "not a WebAssembly module"),
        (
            base64::engine::general_purpose::STANDARD
                .encode(wat::parse_str(r#"(module (memory (export "memory") 1))"#).unwrap()),
            "exports no function",
        ),
    ] {
        let body = json!({"exec": {"kind": "wasm", "code": code, "binary": true}});
        let (status, err) = s.call("PUT", "/api/v1/namespaces/_/actions/bad?overwrite=true", auth, Some(body)).await;
        assert_eq!(status, 400, "{err}");
        assert!(err["error"].as_str().unwrap().contains(needle), "{err}");
    }
    let (status, _) = s.call("GET", "/api/v1/namespaces/_/actions/bad", auth, None).await;
    assert_eq!(status, 404, "a refused action leaves nothing behind");
    s.stop().await;
}
