//! Platform tests: real runtimes and stores, driven through the public `Platform` API.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use model::{Annotations, Application, Code, FunctionSpec, Kind, Limits};
use platform::{Platform, Status};
use serde_json::{Value, json};
use storage::{MemoryStore, RedbStore, Store};

mod asl;
mod builder;
mod sandbox;
mod wasm;

const NS: &str = "guest";

struct Fixture {
    platform: Platform,
    _work: tempfile::TempDir,
}

fn fixture_on(store: Arc<dyn Store>) -> Fixture {
    fixture_allowing(store, &[])
}

/// A fixture whose sandbox lets functions (and the HTTP effects made for them) reach `allow`, loopback listeners
/// of the test that the defaults deny.
fn fixture_allowing(store: Arc<dyn Store>, allow: &[std::net::SocketAddr]) -> Fixture {
    let work = tempfile::Builder::new().prefix("sfpt").tempdir_in("/tmp").unwrap();
    // These tests check what speculation does, so it must not pause when parallel tests saturate the machine.
    let mut config = platform::Config::default();
    config.engine.pause_percent = 101;
    let sandbox = runtime::sandbox::Config {
        allow: allow.iter().map(|a| a.to_string().parse().unwrap()).collect(),
        ..Default::default()
    };
    let platform = Platform::builder(store)
        .work_dir(work.path())
        .config(config)
        .sandbox(sandbox)
        .default_runtimes()
        .build()
        .unwrap();
    Fixture { platform, _work: work }
}

fn fixture() -> Fixture {
    fixture_on(Arc::new(MemoryStore::new()))
}

fn native(name: &str) -> FunctionSpec {
    FunctionSpec::new(name, Kind::Native, Code::Native, Limits::default(), Annotations::default()).unwrap()
}

fn source(name: &str, kind: Kind, text: &str, limits: Limits) -> FunctionSpec {
    let code = Code::Source { text: text.into(), main: "main".into() };
    FunctionSpec::new(name, kind, code, limits, Annotations::default()).unwrap()
}

/// "committed", "squashed", "failed" or "discarded": what speculation did to a run, from its record.
fn fate(record: &platform::ActivationRecord) -> String {
    let spec = record.annotations.iter().find(|a| a.key == "speculation").expect("every run record says");
    match &spec.value["fate"] {
        Value::String(s) => s.clone(),
        Value::Object(o) => o.keys().next().cloned().unwrap_or_default(),
        other => other.to_string(),
    }
}

async fn value(store: &Arc<dyn Store>, key: &str) -> Option<Value> {
    store.get(NS, key).await.unwrap().value
}

async fn sequence(p: &Platform, name: &str, functions: &[&str]) {
    let functions: Vec<String> = functions.iter().map(|s| s.to_string()).collect();
    p.deploy_app(NS, Application::sequence(name, &functions, &|f| p.has_function(NS, f)).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_function_leaves_nothing_half_written() {
    let f = fixture();
    let p = &f.platform;
    p.native().register("first", |ctx, input| async move {
        ctx.kv_put("a", json!(1)).await.map_err(|e| e.to_string())?;
        Ok(input)
    });
    p.native().register("breaks", |ctx, _| async move {
        ctx.kv_put("b", json!(1)).await.map_err(|e| e.to_string())?;
        ctx.kv_put("c", json!(1)).await.map_err(|e| e.to_string())?;
        Err("disk on fire".to_string())
    });
    p.native().register("never", |ctx, input| async move {
        ctx.kv_put("d", json!(1)).await.map_err(|e| e.to_string())?;
        Ok(input)
    });
    for name in ["first", "breaks", "never"] {
        p.deploy_function(NS, native(name)).await.unwrap();
    }
    sequence(p, "app", &["first", "breaks", "never"]).await;
    let inv = p.invoke(NS, "app", json!({})).await.unwrap();
    assert_eq!(inv.status, Status::DeveloperError);
    assert_eq!(inv.result, json!({"error": "disk on fire"}));
    let store = p.store();
    assert_eq!(value(store, "a").await, Some(json!(1)), "the function before the failure committed");
    assert_eq!((value(store, "b").await, value(store, "c").await, value(store, "d").await), (None, None, None));
    // Runs that count (not squashed): `first`, then `breaks`, whose failure ends the application.
    let counted: Vec<_> = inv.runs.iter().filter(|r| fate(r) != "squashed").collect();
    assert_eq!(counted.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["first", "breaks"]);
    assert_eq!(counted[1].response.status, "action developer error");
    assert!(inv.runs.iter().all(|r| r.name != "never"), "nothing runs after the failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_disturbs_neither_the_warm_function_nor_other_invocations() {
    let f = fixture();
    let p = f.platform.clone();
    let code = "import os, time\ndef main(a):\n    if a.get('crash'):\n        os._exit(9)\n    time.sleep(0.3)\n    return {'ok': a['i']}\n";
    p.deploy_function(NS, source("flaky", Kind::Python, code, Limits::default())).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let p = p.clone();
        let input = if i == 1 { json!({"crash": true, "i": i}) } else { json!({"i": i}) };
        tasks.push(tokio::spawn(async move { p.invoke(NS, "flaky", input).await.unwrap() }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let inv = t.await.unwrap();
        if i == 1 {
            assert_eq!(inv.status, Status::DeveloperError);
            assert!(inv.result["error"].as_str().unwrap().contains("exited with code 9"), "{}", inv.result);
        } else {
            assert_eq!((inv.status, inv.result), (Status::Success, json!({"ok": i})));
        }
    }
    let again = p.invoke(NS, "flaky", json!({"i": 7})).await.unwrap();
    assert_eq!(again.result, json!({"ok": 7}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_a_developer_error_and_commits_nothing() {
    let f = fixture();
    let p = &f.platform;
    let code =
        "import specfaas, time\ndef main(a):\n    specfaas.kv.put('half', 1)\n    time.sleep(30)\n    return {}\n";
    let limits = Limits { timeout_ms: 400, ..Limits::default() };
    p.deploy_function(NS, source("slow", Kind::Python, code, limits)).await.unwrap();
    let started = std::time::Instant::now();
    let inv = p.invoke(NS, "slow", json!({})).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(inv.status, Status::DeveloperError);
    assert_eq!(inv.result, json!({"error": "The action exceeded its time limits of 400 milliseconds."}));
    assert_eq!(inv.error, Some(engine::ErrorName::Timeout), "a timeout keeps its name up to the invocation");
    assert_eq!(value(p.store(), "half").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_is_named_by_its_class_and_other_failures_task_failed() {
    let f = fixture();
    let p = &f.platform;
    let code = "def main(a):\n    raise ValueError('no')\n";
    p.deploy_function(NS, source("raises", Kind::Python, code, Limits::default())).await.unwrap();
    let inv = p.invoke(NS, "raises", json!({})).await.unwrap();
    assert_eq!(inv.status, Status::DeveloperError);
    assert_eq!(inv.error, Some(engine::ErrorName::Custom("ValueError".into())), "as Lambda names it");
    let code = "exports.main = () => { const e = new Error('nope'); e.name = 'Denied'; throw e; };\n";
    p.deploy_function(NS, source("throws", Kind::Node, code, Limits::default())).await.unwrap();
    let inv = p.invoke(NS, "throws", json!({})).await.unwrap();
    assert_eq!(inv.error.map(|e| e.to_string()), Some("Denied".to_string()), "error.name");
    let code = "def main(a):\n    return {'error': 'bad'}\n";
    p.deploy_function(NS, source("returns_error", Kind::Python, code, Limits::default())).await.unwrap();
    let inv = p.invoke(NS, "returns_error", json!({})).await.unwrap();
    assert_eq!(inv.status, Status::ApplicationError);
    assert_eq!(inv.error.map(|e| e.to_string()), Some("States.TaskFailed".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_calls_across_languages_commit_with_the_caller() {
    let f = fixture();
    let p = &f.platform;
    let front = "import specfaas
def main(a):
    specfaas.kv.put('trail', ['py'])
    r = specfaas.invoke('middle', {'n': a['n']})
    return {'r': r, 'trail': specfaas.kv.get('trail')}
";
    let middle = "const specfaas = require('specfaas');\n\
async function main(p) {\n\
  const trail = await specfaas.kv.get('trail');\n\
  trail.push('js');\n\
  await specfaas.kv.put('trail', trail);\n\
  return { doubled: p.n * 2, leaf: await specfaas.invoke('leaf', {}) };\n\
}";
    p.native().register("leaf", |ctx, _| async move {
        let mut trail = ctx.kv_get("trail").await.map_err(|e| e.to_string())?;
        trail.as_array_mut().unwrap().push(json!("rust"));
        ctx.kv_put("trail", trail).await.map_err(|e| e.to_string())?;
        Ok(json!({"leaf": true}))
    });
    p.deploy_function(NS, native("leaf")).await.unwrap();
    p.deploy_function(NS, source("middle", Kind::Node, middle, Limits::default())).await.unwrap();
    p.deploy_function(NS, source("front", Kind::Python, front, Limits::default())).await.unwrap();
    let inv = p.invoke(NS, "front", json!({"n": 21})).await.unwrap();
    assert_eq!(inv.status, Status::Success, "{}", inv.result);
    assert_eq!(inv.result, json!({"r": {"doubled": 42, "leaf": {"leaf": true}}, "trail": ["py", "js", "rust"]}));
    assert_eq!(value(p.store(), "trail").await, Some(json!(["py", "js", "rust"])));
    // The direct invocation's record is the entry function's; callees point at their callers.
    assert_eq!(inv.record.name, "front");
    assert_eq!(inv.runs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["middle", "leaf"]);
    let caused_by =
        |r: &platform::ActivationRecord| r.annotations.iter().find(|a| a.key == "causedBy").unwrap().value.clone();
    assert_eq!(caused_by(&inv.runs[0]), json!(inv.record.activation_id));
    assert_eq!(caused_by(&inv.runs[1]), json!(inv.runs[0].activation_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_stored_queryable_and_carry_logs() {
    let f = fixture();
    let p = &f.platform;
    let code = "def main(a):\n    print('hello', a['who'])\n    return {'greeted': a['who']}\n";
    p.deploy_function(NS, source("greet", Kind::Python, code, Limits::default())).await.unwrap();
    sequence(p, "hello", &["greet"]).await;
    let inv = p.invoke(NS, "hello", json!({"who": "ada"})).await.unwrap();
    p.flush_records().await;
    let app = p.activation(NS, &inv.record.activation_id).await.unwrap().expect("app record stored");
    assert_eq!(app["name"], "hello");
    assert_eq!(app["response"]["result"], json!({"greeted": "ada"}));
    assert_eq!(app["logs"], json!([inv.runs[0].activation_id]));
    assert_eq!(
        app["annotations"].as_array().unwrap().iter().find(|a| a["key"] == "path").unwrap()["value"],
        json!(["0:greet"])
    );
    let run = p.activation(NS, &inv.runs[0].activation_id).await.unwrap().expect("run record stored");
    assert_eq!(run["response"]["status"], "success");
    assert!(run["logs"][0].as_str().unwrap().ends_with("stdout: hello ada"), "{}", run["logs"]);
    assert!(p.activation("other", &inv.record.activation_id).await.unwrap().is_none(), "records are per namespace");
    let query = storage::ActivationQuery { name: Some("greet".into()), ..Default::default() };
    assert_eq!(p.store().list_activations(NS, &query).await.unwrap().len(), 1);
}

/// Records queue behind a slow disk and are written in batches: after a burst of concurrent invocations and a
/// flush, every record of every invocation is stored, on the embedded redb store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_invocations_loses_no_record() {
    let data = tempfile::tempdir().unwrap();
    let f = fixture_on(Arc::new(storage::RedbStore::open(data.path().join("store.redb")).unwrap()));
    let p = &f.platform;
    p.native().register("id", |_, input| async move { Ok(input) });
    p.deploy_function(NS, native("id")).await.unwrap();
    sequence(p, "three", &["id", "id", "id"]).await;
    let invocations = (0..200).map(|i| {
        let p = p.clone();
        tokio::spawn(async move { p.invoke(NS, "three", json!({"i": i})).await.unwrap() })
    });
    let mut ids = Vec::new();
    for inv in invocations {
        let inv = inv.await.unwrap();
        ids.push(inv.record.activation_id.clone());
        ids.extend(inv.runs.iter().map(|r| r.activation_id.clone()));
    }
    p.flush_records().await;
    assert_eq!(ids.len(), 200 * 4);
    for id in &ids {
        assert!(p.activation(NS, id).await.unwrap().is_some(), "record {id} was lost");
    }
    let query = storage::ActivationQuery { limit: 10_000, ..Default::default() };
    assert_eq!(p.store().list_activations(NS, &query).await.unwrap().len(), ids.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_parameters_are_defaults_that_invocations_override() {
    let f = fixture();
    let p = &f.platform;
    let mut spec = source("params", Kind::Node, "function main(p) { return p; }", Limits::default());
    spec.parameters = json!({"greeting": "hi", "name": "world"}).as_object().unwrap().clone();
    p.deploy_function(NS, spec).await.unwrap();
    let inv = p.invoke(NS, "params", json!({"name": "ada"})).await.unwrap();
    assert_eq!(inv.result, json!({"greeting": "hi", "name": "ada"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_invocations_are_refused_with_a_reason() {
    let f = fixture();
    let p = &f.platform;
    p.native().register("echo", |_, input| async move { Ok(input) });
    p.deploy_function(NS, native("echo")).await.unwrap();
    let err = p.invoke(NS, "nope", json!({})).await.unwrap_err().to_string();
    assert!(err.contains("\"nope\" does not exist in namespace \"guest\""), "{err}");
    let err = p.invoke("elsewhere", "echo", json!({})).await.unwrap_err().to_string();
    assert!(err.contains("does not exist in namespace \"elsewhere\""), "{err}");
    let err = p.invoke(NS, "echo", json!([1])).await.unwrap_err().to_string();
    assert!(err.contains("must be a JSON object"), "{err}");
    let err = p.invoke(NS, "echo", json!({"x": "y".repeat(2 << 20)})).await.unwrap_err().to_string();
    assert!(err.contains("over the limit of 1048576 bytes"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_over_the_limit_fails_and_commits_nothing() {
    let f = fixture();
    let p = &f.platform;
    p.native().register("big", |ctx, _| async move {
        ctx.kv_put("k", json!(1)).await.map_err(|e| e.to_string())?;
        Ok(json!({"blob": "z".repeat(2 << 20)}))
    });
    p.deploy_function(NS, native("big")).await.unwrap();
    let inv = p.invoke(NS, "big", json!({})).await.unwrap();
    assert_eq!(inv.status, Status::DeveloperError);
    assert!(inv.result["error"].as_str().unwrap().contains("exceeded the allowed length"), "{}", inv.result);
    assert_eq!(value(p.store(), "k").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_writes_survive_a_restart_on_the_embedded_store() {
    let data = tempfile::tempdir().unwrap();
    let path = data.path().join("store.redb");
    {
        let f = fixture_on(Arc::new(RedbStore::open(&path).unwrap()));
        let p = &f.platform;
        p.native().register("count", |ctx, _| async move {
            let n = ctx.kv_get("n").await.map_err(|e| e.to_string())?.as_u64().unwrap_or(0);
            ctx.kv_put("n", json!(n + 1)).await.map_err(|e| e.to_string())?;
            Ok(json!({"n": n + 1}))
        });
        p.deploy_function(NS, native("count")).await.unwrap();
        for _ in 0..3 {
            p.invoke(NS, "count", json!({})).await.unwrap();
        }
        f.platform.shutdown().await;
    }
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.get(NS, "n").await.unwrap().value, Some(json!(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_errors_name_the_file_and_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("f.py", "def main(a):\n    return a\n");
    write("bad.py", "def main(a)\n");
    write("flow.json", r#"{"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "ghost", "End": true}}}"#);
    let f = fixture();
    // (manifest, fragments the error must contain)
    let cases: [(&str, &[&str]); 4] = [
        (
            "[functions.f]\nkind = \"python:3\"\ncode = \"f.py\"\n[apps.flow]\nworkflow = \"flow.json\"\n",
            &["flow.json", "state \"A\"", "\"ghost\""],
        ),
        ("[functions.f]\nkind = \"cobol\"\ncode = \"f.py\"\n", &["specfaas.toml", "function \"f\"", "cobol"]),
        ("[functions.f]\nkind = \"python:3\"\ncode = \"missing.py\"\n", &["missing.py", "cannot read"]),
        ("[functions.f]\nkind = \"python:3\"\ncode = \"bad.py\"\n", &["function \"f\"", "SyntaxError"]),
    ];
    for (manifest, needles) in cases {
        write("specfaas.toml", manifest);
        let err = f.platform.deploy_project(NS, dir.path()).await.unwrap_err().to_string();
        for needle in needles {
            assert!(err.contains(needle), "{manifest}: error lacks {needle:?}: {err}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_deploy_and_seed_without_overwriting() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/travel");
    let f = fixture();
    let p = &f.platform;
    let summary = p.deploy_project(NS, &root).await.unwrap();
    assert_eq!(summary.apps, ["travel"]);
    assert_eq!(summary.seeded, 5);
    let inv = p.invoke(NS, "travel", json!({"from": "paris", "to": "lyon", "rider": "ada"})).await.unwrap();
    assert_eq!(inv.result["train"], "TGV-6601");
    assert_eq!(value(p.store(), "seats:TGV-6601").await, Some(json!(1)));
    let again = p.deploy_project(NS, &root).await.unwrap();
    assert_eq!(again.seeded, 0, "seeds never overwrite");
    assert_eq!(value(p.store(), "seats:TGV-6601").await, Some(json!(1)));
}

/// The smart-home workflow, many times with repeating inputs, on two platforms: speculation off and on. Results
/// and the final stores must be identical, and the speculative side must really have speculated (memo hits,
/// speculative launches). Input order is fixed, so the reference is the same sequence of invocations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speculation_changes_nothing_a_user_can_see_on_the_smart_home_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/smarthome");
    let inputs = [
        json!({"user": "alice", "password": "wonderland", "room": "living"}),
        json!({"user": "alice", "password": "wonderland", "room": "cellar"}),
        json!({"user": "bob", "password": "builder", "room": "living"}),
        json!({"user": "alice", "password": "nope", "room": "living"}),
    ];
    let mut outcomes = Vec::new();
    for speculation in [false, true] {
        let f = fixture();
        let p = &f.platform;
        p.deploy_project(NS, &root).await.unwrap();
        let mut results = Vec::new();
        for round in 0..4 {
            for input in &inputs {
                let options = platform::InvokeOptions { speculation: Some(speculation), ..Default::default() };
                let inv = p.invoke_with(NS, "smarthome", input.clone(), options).await.unwrap();
                results.push((round, inv.status, inv.result));
            }
        }
        let keys = ["ac:living", "ac:cellar", "user:alice", "temp:living"];
        let mut store: Vec<Option<Value>> = Vec::new();
        for k in keys {
            store.push(value(p.store(), k).await);
        }
        outcomes.push((results, store, p.metrics()));
    }
    let (off, on) = (&outcomes[0], &outcomes[1]);
    assert_eq!(on.0, off.0, "results differ with speculation on");
    assert_eq!(on.1, off.1, "stores differ with speculation on");
    assert_eq!(off.2.speculative_launches, 0);
    assert!(on.2.speculative_launches > 10, "{:?}", on.2);
    assert!(on.2.memo_hits > 10, "{:?}", on.2);
    assert!(on.2.skipped > 0, "the pure `normalize` and `done` are skipped on memo hits: {:?}", on.2);
}

/// A tiny HTTP server on loopback that answers `ok` and remembers every request body, in order.
async fn http_sink() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = bodies.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some(end) = text.find("\r\n\r\n") else { continue };
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() < end + 4 + length {
                        continue;
                    }
                    seen.lock().unwrap().push(text[end + 4..end + 4 + length].to_string());
                    let _ =
                        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").await;
                    return;
                }
            });
        }
    });
    (url, bodies)
}

/// S4 on the real platform: `notify` posts to an HTTP endpoint. With speculation on, after warm-up, `notify` runs
/// speculatively while `prepare` is still running; its request must wait until it is non-speculative, and exactly
/// one request per invocation reaches the server, in invocation order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_effects_happen_once_per_invocation_and_never_speculatively() {
    let (url, bodies) = http_sink().await;
    let sink = url.trim_start_matches("http://").trim_end_matches("/hook").parse().unwrap();
    let f = fixture_allowing(Arc::new(MemoryStore::new()), &[sink]);
    let p = &f.platform;
    p.native().register("prepare", |_, input| async move {
        tokio::time::sleep(Duration::from_millis(30)).await; // long enough for notify to start speculatively
        Ok(json!({"n": input["n"], "url": input["url"]}))
    });
    p.deploy_function(NS, native("prepare")).await.unwrap();
    let notify = "import json, specfaas
def main(args):
    r = specfaas.http(args['url'], method='POST', body=json.dumps({'n': args['n']}))
    return {'status': r['status'], 'body': r['body']}
";
    p.deploy_function(NS, source("notify", Kind::Python, notify, Limits::default())).await.unwrap();
    sequence(p, "alert", &["prepare", "notify"]).await;
    let mut want = Vec::new();
    for i in 0..6 {
        let n = i % 2;
        let inv = p.invoke(NS, "alert", json!({"n": n, "url": url})).await.unwrap();
        assert_eq!(inv.result, json!({"status": 200, "body": "ok"}), "{}", inv.result);
        want.push(json!({"n": n}).to_string());
    }
    // The Node.js SDK's http, the same way.
    let notify_js = "const specfaas = require('specfaas');
async function main(args) {
  const r = await specfaas.http({ url: args.url, method: 'POST', body: JSON.stringify({ n: args.n }) });
  return { status: r.status, body: r.body };
}";
    p.deploy_function(NS, source("notify_js", Kind::Node, notify_js, Limits::default())).await.unwrap();
    sequence(p, "alert_js", &["prepare", "notify_js"]).await;
    let inv = p.invoke(NS, "alert_js", json!({"n": 7, "url": url})).await.unwrap();
    assert_eq!(inv.result, json!({"status": 200, "body": "ok"}), "{}", inv.result);
    want.push(json!({"n": 7}).to_string());
    let got: Vec<Value> = bodies.lock().unwrap().iter().map(|b| serde_json::from_str(b).unwrap()).collect();
    let want: Vec<Value> = want.iter().map(|b| serde_json::from_str(b).unwrap()).collect();
    assert_eq!(got, want, "exactly one request per invocation, in order");
    let m = p.metrics();
    assert_eq!(m.effects, 7, "{m:?}");
    assert!(m.effects_suspended > 0, "notify ran speculatively and its request waited: {m:?}");
}

/// Speculation in the records: after warm-up the branch predictor expects a successful login; a login by an
/// unknown user (no memoized output) is predicted to succeed, `ReadTemp` starts early on that prediction, and the
/// real data then takes `Fail`. The early run's record shows it was squashed for a control mispredict, what was
/// predicted and what happened, and nothing it produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_show_predicted_and_actual_branches_of_squashed_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/smarthome");
    let f = fixture();
    let p = &f.platform;
    p.deploy_project(NS, &root).await.unwrap();
    for _ in 0..5 {
        let ok = json!({"user": "alice", "password": "wonderland", "room": "living"});
        assert_eq!(p.invoke(NS, "smarthome", ok).await.unwrap().status, Status::Success);
    }
    let inv = p.invoke(NS, "smarthome", json!({"user": "mallory", "password": "x", "room": "living"})).await.unwrap();
    assert_eq!(inv.result, json!({"error": "States.TaskFailed", "cause": "login failed for user 'mallory'"}));
    let squashed: Vec<_> = inv.runs.iter().filter(|r| fate(r) == "squashed").collect();
    assert!(!squashed.is_empty(), "ReadTemp must have started on the predicted branch: {:?}", inv.runs);
    let spec =
        |r: &platform::ActivationRecord| r.annotations.iter().find(|a| a.key == "speculation").unwrap().value.clone();
    let read_temp = squashed.iter().find(|r| r.name == "read_temp").expect("the early ReadTemp");
    assert_eq!(spec(read_temp)["fate"], json!({"squashed": "control_mispredict"}));
    assert_eq!(
        spec(read_temp)["branches"],
        json!([{"choice": "smarthome:LoggedIn?", "predicted": "ReadTemp", "actual": "Fail"}])
    );
    assert_eq!(read_temp.response.result, json!({}), "a squashed run shows no result");
    assert!(read_temp.logs.is_empty(), "a squashed run shows no logs");
}

/// Bug 1: a `pure` function's memoized outputs are keyed on its bound parameters too. Redeployed with new
/// parameters (same code), it must not serve outputs memoized with the old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pure_function_redeployed_with_new_parameters_serves_no_stale_output() {
    let f = fixture();
    let p = &f.platform;
    p.native().register("scale", |_, input| async move {
        Ok(json!({"y": input["x"].as_i64().unwrap_or(0) * input["factor"].as_i64().unwrap_or(0)}))
    });
    let scale = |factor: i64| {
        let annotations = Annotations { pure: true, ..Default::default() };
        let mut spec = FunctionSpec::new("scale", Kind::Native, Code::Native, Limits::default(), annotations).unwrap();
        spec.parameters.insert("factor".into(), json!(factor));
        spec
    };
    // After a first function, so the pure one is derived, and skipped on a memo hit, rather than started at once.
    p.native().register("id", |_, input| async move { Ok(input) });
    p.deploy_function(NS, native("id")).await.unwrap();
    p.deploy_function(NS, scale(1)).await.unwrap();
    sequence(p, "scaled", &["id", "scale"]).await;
    for _ in 0..3 {
        assert_eq!(p.invoke(NS, "scaled", json!({"x": 5})).await.unwrap().result, json!({"y": 5}));
    }
    assert!(p.metrics().skipped > 0, "the pure function's output is memoized and reused: {:?}", p.metrics());
    p.deploy_function(NS, scale(2)).await.unwrap();
    for _ in 0..3 {
        let inv = p.invoke(NS, "scaled", json!({"x": 5})).await.unwrap();
        assert_eq!(inv.result, json!({"y": 10}), "the output reflects the new bound parameter");
    }
}

/// Bug 6: a key that is not a string (an integer, or a string that is not valid Unicode) gets a clear error the
/// function can catch, at the call, and the activation goes on; it used to end the activation with a protocol
/// error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_type_is_an_error_the_function_catches() {
    let f = fixture();
    let p = &f.platform;
    let python = r#"import specfaas

def main(args):
    caught = []
    for key in [5, "\ud800", None]:
        for call in [lambda: specfaas.kv.get(key), lambda: specfaas.kv.put(key, 1), lambda: specfaas.kv.delete(key)]:
            try:
                call()
                caught.append("nothing")
            except (TypeError, ValueError) as e:
                caught.append(type(e).__name__ + ": " + str(e))
    specfaas.kv.put("after", "py")
    return {"caught": caught}
"#;
    let node = r#"const specfaas = require('specfaas');
async function main() {
  const caught = [];
  for (const key of [5, '\ud800', null]) {
    for (const call of [() => specfaas.kv.get(key), () => specfaas.kv.put(key, 1), () => specfaas.kv.delete(key)]) {
      try {
        await call();
        caught.push('nothing');
      } catch (e) {
        caught.push(e.name + ': ' + e.message);
      }
    }
  }
  await specfaas.kv.put('after_js', 'js');
  return { caught };
}"#;
    p.deploy_function(NS, source("py_bad_key", Kind::Python, python, Limits::default())).await.unwrap();
    p.deploy_function(NS, source("js_bad_key", Kind::Node, node, Limits::default())).await.unwrap();
    for (function, after) in [("py_bad_key", "after"), ("js_bad_key", "after_js")] {
        let inv = p.invoke(NS, function, json!({})).await.unwrap();
        assert_eq!(inv.status, Status::Success, "{function}: {}", inv.result);
        let caught: Vec<String> =
            inv.result["caught"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
        assert_eq!(caught.len(), 9, "{function}: {caught:?}");
        for (i, message) in caught.iter().enumerate() {
            // Python: TypeError for a key that is not a str, ValueError for a str that is not valid Unicode.
            // Node.js: TypeError for both.
            let want = if i / 3 == 1 && function == "py_bad_key" { "ValueError" } else { "TypeError" };
            assert!(message.starts_with(want), "{function} call {i}: {message}");
            assert!(message.contains("key"), "{function} call {i} names the key: {message}");
        }
        assert!(value(p.store(), after).await.is_some(), "{function}: the activation went on after the errors");
    }
}

/// A store that counts the record transactions it is asked for.
struct CountingStore {
    inner: MemoryStore,
    record_writes: std::sync::atomic::AtomicUsize,
}

impl Store for CountingStore {
    fn get<'a>(
        &'a self,
        ns: &'a str,
        key: &'a str,
    ) -> storage::BoxFuture<'a, Result<storage::Versioned, storage::Error>> {
        self.inner.get(ns, key)
    }
    fn apply(&self, batch: storage::Batch) -> storage::BoxFuture<'_, Result<storage::Version, storage::Error>> {
        self.inner.apply(batch)
    }
    fn scan<'a>(
        &'a self,
        ns: &'a str,
        prefix: &'a str,
    ) -> storage::BoxFuture<'a, Result<Vec<(String, Value)>, storage::Error>> {
        self.inner.scan(ns, prefix)
    }
    fn put_activations(
        &self,
        entries: Vec<storage::ActivationEntry>,
    ) -> storage::BoxFuture<'_, Result<(), storage::Error>> {
        self.record_writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.put_activations(entries)
    }
    fn get_activation<'a>(
        &'a self,
        ns: &'a str,
        id: &'a str,
    ) -> storage::BoxFuture<'a, Result<Option<storage::ActivationEntry>, storage::Error>> {
        self.inner.get_activation(ns, id)
    }
    fn list_activations<'a>(
        &'a self,
        ns: &'a str,
        query: &'a storage::ActivationQuery,
    ) -> storage::BoxFuture<'a, Result<Vec<storage::ActivationEntry>, storage::Error>> {
        self.inner.list_activations(ns, query)
    }
}

/// Invocations that finish within `record_batch_ms` of each other have their records written in one
/// transaction (one sync to disk), and a flush (which every read of activations through the API makes first) never
/// waits for the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_invocations_close_together_share_one_transaction() {
    let store = Arc::new(CountingStore { inner: MemoryStore::new(), record_writes: Default::default() });
    let config = platform::Config { record_batch_ms: 1000, ..Default::default() };
    let p = Platform::builder(store.clone()).config(config).build().unwrap();
    p.native().register("id", |_, input| async move { Ok(input) });
    p.deploy_function(NS, native("id")).await.unwrap();
    sequence(&p, "one", &["id"]).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(p.invoke(NS, "one", json!({"i": i})).await.unwrap().record.activation_id);
    }
    // The API flushes before it reads activations: a flush writes what was gathered at once.
    let started = std::time::Instant::now();
    p.flush_records().await;
    assert!(started.elapsed() < Duration::from_millis(500), "a flush waited for the batch window");
    assert!(p.activation(NS, &ids[4]).await.unwrap().is_some(), "the last invocation's record is readable at once");
    assert_eq!(store.record_writes.load(std::sync::atomic::Ordering::SeqCst), 1, "five invocations, one transaction");
    for id in &ids {
        assert!(p.activation(NS, id).await.unwrap().is_some(), "record {id} was lost");
    }
}

#[tokio::test]
async fn a_record_batch_window_over_its_maximum_is_refused_by_name() {
    let config = platform::Config { record_batch_ms: platform::RECORD_BATCH_MS_MAX + 1, ..Default::default() };
    let Err(e) = Platform::builder(Arc::new(MemoryStore::new())).config(config).build() else {
        panic!("a window over the maximum was accepted");
    };
    assert!(e.to_string().contains("record_batch_ms"), "{e}");
}

/// A caller seen on a few inputs has its callees predicted by path on an input never seen: the first call's
/// arguments from the caller's input, the second's from what the first returned. The result is the one without
/// speculation, and the records say the callees were predicted by path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callees_of_an_input_never_seen_are_predicted_by_path() {
    let f = fixture();
    let p = &f.platform;
    let front = "import specfaas, time
def main(a):
    time.sleep(0.05)
    who = specfaas.invoke('lookup', {'user': a['user']})
    orders = specfaas.invoke('orders', {'id': who['id'], 'limit': 3})
    return {'who': who, 'orders': orders}
";
    p.native().register("lookup", |_, args| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(json!({"id": format!("id-{}", args["user"].as_str().unwrap_or("?"))}))
    });
    p.native().register("orders", |_, args| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(json!({"of": args["id"], "n": args["limit"]}))
    });
    p.deploy_function(NS, native("lookup")).await.unwrap();
    p.deploy_function(NS, native("orders")).await.unwrap();
    p.deploy_function(NS, source("front", Kind::Python, front, Limits::default())).await.unwrap();
    let expected = |u: &str| json!({"who": {"id": format!("id-{u}")}, "orders": {"of": format!("id-{u}"), "n": 3}});
    for user in ["ann", "bob", "cy"] {
        let inv = p.invoke(NS, "front", json!({"user": user})).await.unwrap();
        assert_eq!(inv.result, expected(user));
    }
    let before = p.metrics();
    let off = platform::InvokeOptions { speculation: Some(false), ..Default::default() };
    let reference = p.invoke_with(NS, "front", json!({"user": "dee"}), off).await.unwrap();
    let no_paths = platform::InvokeOptions { callee_paths: Some(false), ..Default::default() };
    let without = p.invoke_with(NS, "front", json!({"user": "eve"}), no_paths).await.unwrap();
    assert_eq!(without.result, expected("eve"));
    assert_eq!(p.metrics().since(&before).callees_predicted, 0, "no exact row, and paths off: nothing predicted");
    let inv = p.invoke(NS, "front", json!({"user": "fay"})).await.unwrap();
    assert_eq!(reference.result, expected("dee"));
    assert_eq!(inv.result, expected("fay"));
    let c = p.metrics().since(&before);
    assert_eq!((c.callees_predicted_path, c.callees_used_path), (2, 2), "{c:?}");
    for run in &inv.runs {
        let speculation = run.annotations.iter().find(|a| a.key == "speculation").expect("speculation annotation");
        assert_eq!(speculation.value["predicted"], "path", "{}: {}", run.name, speculation.value);
    }
}

/// A function seen on a few inputs has its output guessed field by field on an input never seen: the field it
/// passes through and the one that was always the same. The next task, which needs only those, starts before the
/// first finishes; with `field_guesses` off it waits. A guess the real output contradicts is squashed, and the
/// result is always the one without speculation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_of_an_input_never_seen_are_guessed_field_by_field() {
    let f = fixture();
    let p = &f.platform;
    p.native().register("profile", |_, args| async move {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let user = args["user"].as_str().unwrap_or("?").to_string();
        let region = if user.starts_with('x') { "us" } else { "eu" };
        Ok(json!({"user": user, "region": region, "score": user.len() * 7 + user.as_bytes()[0] as usize}))
    });
    p.native().register("greet", |_, args| async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok(json!({"hello": args["user"], "in": args["region"]}))
    });
    for name in ["profile", "greet"] {
        p.deploy_function(NS, native(name)).await.unwrap();
    }
    let text = r#"{"StartAt": "Profile", "States": {
      "Profile": {"Type": "Task", "Resource": "profile", "ResultPath": "$.p", "Next": "Greet"},
      "Greet": {"Type": "Task", "Resource": "greet", "Parameters": {"user.$": "$.p.user", "region.$": "$.p.region"},
                "End": true}}}"#;
    let graph = model::asl::parse("greet.asl.json", text, &|f| p.has_function(NS, f)).unwrap();
    p.deploy_app(NS, Application::workflow("greeting", graph).unwrap());
    let expected = |u: &str, region: &str| json!({"hello": u, "in": region});
    for user in ["ann", "bob", "cy", "dee", "eve"] {
        let inv = p.invoke(NS, "greeting", json!({"user": user})).await.unwrap();
        assert_eq!(inv.result, expected(user, "eu"));
    }
    let greet_was_speculative = |inv: &platform::Invocation| {
        let greet = inv.runs.iter().find(|r| r.name == "greet").expect("greet ran");
        let spec = greet.annotations.iter().find(|a| a.key == "speculation").expect("every run record says");
        spec.value["speculative"] == json!(true)
    };
    // The record of `profile` says what `greet` was derived on.
    let derived_on = |inv: &platform::Invocation| {
        let profile = inv.runs.iter().find(|r| r.name == "profile").expect("profile ran");
        let spec = profile.annotations.iter().find(|a| a.key == "speculation").expect("every run record says");
        spec.value["output"].clone()
    };
    let seen = p.invoke(NS, "greeting", json!({"user": "ann"})).await.unwrap();
    assert_eq!(derived_on(&seen), json!("exact"), "a memo row: {:?}", seen.runs);
    let before = p.metrics();
    let off = platform::InvokeOptions { field_guesses: Some(false), ..Default::default() };
    let without = p.invoke_with(NS, "greeting", json!({"user": "fay"}), off).await.unwrap();
    assert_eq!(without.result, expected("fay", "eu"));
    let c = p.metrics().since(&before);
    assert_eq!((c.field_guesses, c.speculative_launches), (0, 0), "no memo row, no guess: greet waits: {c:?}");
    assert!(!greet_was_speculative(&without));
    assert_eq!(derived_on(&without), json!("none"), "{:?}", without.runs);
    let before = p.metrics();
    let inv = p.invoke(NS, "greeting", json!({"user": "gus"})).await.unwrap();
    assert_eq!(inv.result, expected("gus", "eu"));
    let c = p.metrics().since(&before);
    assert!(c.field_guesses > 0, "{c:?}");
    assert!(greet_was_speculative(&inv), "greet started on the guess: {:?}", inv.runs);
    assert_eq!(derived_on(&inv), json!("fields"), "{:?}", inv.runs);
    assert!(c.squashes.is_empty(), "the guess was right: {c:?}");
    // `region` was always "eu": for this user it is not, and the early greet is squashed.
    let before = p.metrics();
    let inv = p.invoke(NS, "greeting", json!({"user": "xia"})).await.unwrap();
    assert_eq!(inv.result, expected("xia", "us"));
    let c = p.metrics().since(&before);
    assert!(c.field_guesses > 0, "{c:?}");
    assert_eq!(c.squashes.get(&engine::Cause::MemoMismatch), Some(&1), "{c:?}");
    assert!(inv.runs.iter().any(|r| r.name == "greet" && fate(r) == "squashed"), "{:?}", inv.runs);
}
