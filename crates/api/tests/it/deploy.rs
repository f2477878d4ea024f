//! Deploying over a working action: a failed update, overwrites under load, and the limits a `PUT` may set.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{put_action, start, start_with};

const V1: &str = "def main(args):\n    return {'v': 1}\n";
const V2: &str = "def main(args):\n    return {'v': 2}\n";

/// Bug 2: an update whose code does not load leaves the old version serving, and the store keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_update_leaves_the_old_version_serving() {
    let s = start().await;
    let auth = Some(s.auth.as_str());
    let (status, created) = put_action(&s, "keep", "python:3", V1).await;
    assert_eq!(status, 200, "{created}");
    let (status, err) = put_action(&s, "keep", "python:3", "def main(a)\n").await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"].as_str().unwrap().contains("SyntaxError"), "{err}");
    let (status, got) = s.call("GET", "/api/v1/namespaces/_/actions/keep", auth, None).await;
    assert_eq!((status, got["exec"]["code"].clone()), (200, json!(V1)), "the store keeps the old definition");
    let (status, result) =
        s.call("POST", "/api/v1/namespaces/_/actions/keep?blocking=true&result=true", auth, None).await;
    assert_eq!((status, result), (200, json!({"v": 1})), "the old version still serves");
    s.stop().await;
}

/// Bug 3: clients invoking while the action is overwritten again and again always find a version, old or new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocations_during_overwrites_see_the_old_or_the_new_version() {
    let limits = api::NamespaceLimits { concurrent_invocations_max: 100, invocations_per_minute_max: 100_000 };
    let s = std::sync::Arc::new(start_with(tempfile::tempdir().unwrap(), api::BLOCKING_WAIT, limits).await);
    assert_eq!(put_action(&s, "swap", "python:3", V1).await.0, 200);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (s, stop) = (s.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut seen: Vec<(u16, Value)> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let path = "/api/v1/namespaces/_/actions/swap?blocking=true&result=true";
                seen.push(s.call("POST", path, Some(&s.auth), None).await);
            }
            seen
        }));
    }
    for i in 0..8 {
        let (status, err) = put_action(&s, "swap", "python:3", if i % 2 == 0 { V2 } else { V1 }).await;
        assert_eq!(status, 200, "{err}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut all = Vec::new();
    for c in clients {
        all.extend(c.await.unwrap());
    }
    assert!(!all.is_empty());
    let failed: Vec<_> = all.iter().filter(|(status, _)| *status != 200).collect();
    assert!(failed.is_empty(), "{} of {} invocations failed, e.g. {:?}", failed.len(), all.len(), failed.first());
    assert!(all.iter().all(|(_, r)| *r == json!({"v": 1}) || *r == json!({"v": 2})), "{all:?}");
    std::sync::Arc::into_inner(s).expect("the clients are done").stop().await;
}

/// Bug 4: every limit a `PUT` can set has a maximum; past it, a 400 names the limit, and nothing is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_past_their_maximum_are_refused_by_name() {
    let s = start().await;
    let auth = Some(s.auth.as_str());
    let put = |limits: Value| {
        let body = json!({"exec": {"kind": "python:3", "code": V1}, "limits": limits});
        s.call("PUT", "/api/v1/namespaces/_/actions/limited?overwrite=true", auth, Some(body))
    };
    for (limits, name) in [
        (json!({"logs": 1_000_000_000u64}), "logs"),
        (json!({"logs": u64::MAX}), "logs"),
        (json!({"timeout": 1_000_000_000u64}), "timeout"),
        (json!({"timeout": 0}), "timeout"),
        (json!({"memory": 1_000_000}), "memory"),
        (json!({"concurrency": 500}), "concurrency"),
        (json!({"tmp": 1025}), "tmp"),
        (json!({"processes": 5000}), "processes"),
        (json!({"logs": "lots"}), "limits.logs"),
    ] {
        let (status, err) = put(limits.clone()).await;
        assert_eq!(status, 400, "{limits}: {err}");
        assert!(err["error"].as_str().unwrap().contains(&format!("'{name}'")), "{limits}: {err}");
    }
    let (status, _) = s.call("GET", "/api/v1/namespaces/_/actions/limited", auth, None).await;
    assert_eq!(status, 404, "a refused action leaves nothing behind");
    // The maximums themselves are accepted, and shown back.
    let max = json!({"logs": 10, "timeout": 300_000, "memory": 2048, "concurrency": 1, "tmp": 1024, "processes": 1024});
    let (status, created) = put(max.clone()).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["limits"], max);
    s.stop().await;
}

/// An overwrite may change what a name is: a sequence becomes a function and back. Each time the name runs the new
/// definition, and so does a sequence over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overwrite_can_turn_a_sequence_into_a_function_and_back() {
    async fn run(s: &crate::Server, name: &str) -> (u16, Value) {
        let path = format!("/api/v1/namespaces/_/actions/{name}?blocking=true&result=true");
        s.call("POST", &path, Some(&s.auth), Some(json!({"n": 1}))).await
    }
    async fn put(s: &crate::Server, name: &str, body: Value) -> (u16, Value) {
        s.call("PUT", &format!("/api/v1/namespaces/_/actions/{name}?overwrite=true"), Some(&s.auth), Some(body)).await
    }
    let s = start().await;
    let seq = |components: Value| json!({"exec": {"kind": "sequence", "components": components}});
    put_action(&s, "inc", "nodejs:20", "function main(p) { return { n: p.n + 1 }; }").await;
    assert_eq!(put(&s, "twice", seq(json!(["inc", "inc"]))).await.0, 200);
    assert_eq!(run(&s, "twice").await, (200, json!({"n": 3})));
    // The sequence becomes a function.
    assert_eq!(put_action(&s, "twice", "python:3", "def main(a):\n    return {'n': a['n'] * 2}\n").await.0, 200);
    assert_eq!(run(&s, "twice").await, (200, json!({"n": 2})));
    let (status, err) = put(&s, "outer", seq(json!(["twice", "inc"]))).await;
    assert_eq!(status, 200, "a function that replaced a sequence can be a component: {err}");
    assert_eq!(run(&s, "outer").await, (200, json!({"n": 3})));
    // And back into a sequence: it runs the sequence, and the function it replaced is gone.
    assert_eq!(put(&s, "twice", seq(json!(["inc", "inc"]))).await.0, 200);
    assert_eq!(run(&s, "twice").await, (200, json!({"n": 3})));
    let (status, _) = run(&s, "outer").await;
    assert_ne!(status, 200, "a sequence over a name that is now a sequence does not run the replaced function");
    s.stop().await;
}
