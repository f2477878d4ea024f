//! Bug 7: the port opens at once after a start; stored resources are restored in the background, and one not
//! restored yet answers `503` with `Retry-After`. The restore is held by a gate, so nothing depends on timing.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::{put_action, start, start_gated};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_answers_before_its_actions_are_restored() {
    let s = start().await;
    let auth = Some(s.auth.as_str());
    const ACTIONS: usize = 12;
    for i in 0..ACTIONS {
        let code = format!("def main(args):\n    return {{'n': {i}}}\n");
        assert_eq!(put_action(&s, &format!("a{i}"), "python:3", &code).await.0, 200);
    }
    let seq = json!({"exec": {"kind": "sequence", "components": ["a0", "a1"]}});
    assert_eq!(s.call("PUT", "/api/v1/namespaces/_/actions/seq", auth, Some(seq)).await.0, 200);
    let asl = json!({"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "a2", "End": true}}});
    assert_eq!(s.call("PUT", "/api/v1/namespaces/_/workflows/flow", auth, Some(asl)).await.0, 200);
    let data = s.stop().await;

    // Restart with the restore held shut: the server starts and answers anyway.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let limits = api::NamespaceLimits { concurrent_invocations_max: 100, invocations_per_minute_max: 10_000 };
    let s = start_gated(data, api::BLOCKING_WAIT, limits, Some(gate.clone())).await;
    let auth = Some(s.auth.as_str());
    let (status, _) = s.call("GET", "/health", None, None).await;
    assert_eq!(status, 200);
    let (status, list) = s.call("GET", "/api/v1/namespaces/_/actions", auth, None).await;
    assert_eq!((status, list.as_array().map(Vec::len)), (200, Some(ACTIONS + 1)), "{list}");
    let (status, got) = s.call("GET", "/api/v1/namespaces/_/actions/a3", auth, None).await;
    assert_eq!((status, got["name"].clone()), (200, json!("a3")), "reads come from the store");
    for path in ["actions/a0", "actions/seq", "workflows/flow"] {
        let (status, headers, err) =
            s.exchange("POST", &format!("/api/v1/namespaces/_/{path}?blocking=true&result=true"), auth, None).await;
        assert_eq!(status, 503, "{path}: {err}");
        let name = path.split('/').next_back().unwrap();
        let message = err["error"].as_str().unwrap();
        assert!(message.contains(&format!("'{name}'")) && message.contains("restored"), "{path}: {err}");
        assert!(err["code"].is_string(), "{err}");
        let retry: u64 = headers.get("retry-after").expect("Retry-After").to_str().unwrap().parse().unwrap();
        assert!(retry >= 1, "{retry}");
    }
    // A sequence over an action still being restored cannot be checked yet: 503 too, naming the action.
    let seq = json!({"exec": {"kind": "sequence", "components": ["a5"]}});
    let (status, err) = s.call("PUT", "/api/v1/namespaces/_/actions/seq5", auth, Some(seq)).await;
    assert_eq!(status, 503, "{err}");
    assert!(err["error"].as_str().unwrap().contains("'a5'"), "{err}");
    // An update of a pending action wins over the stored version: the restore does not deploy the old one over it.
    let (status, _) = put_action(&s, "a4", "python:3", "def main(args):\n    return {'n': 'new'}\n").await;
    assert_eq!(status, 200);

    // Open the gate: everything is restored, each invocation succeeds.
    gate.add_permits(ACTIONS + 2);
    assert_eq!(
        until_restored(&s, "/api/v1/namespaces/_/actions/a0?blocking=true&result=true").await,
        (200, json!({"n": 0}))
    );
    assert_eq!(
        until_restored(&s, "/api/v1/namespaces/_/actions/seq?blocking=true&result=true").await,
        (200, json!({"n": 1}))
    );
    assert_eq!(
        until_restored(&s, "/api/v1/namespaces/_/workflows/flow?blocking=true&result=true").await,
        (200, json!({"n": 2}))
    );
    let (status, result) = until_restored(&s, "/api/v1/namespaces/_/actions/a4?blocking=true&result=true").await;
    assert_eq!((status, result), (200, json!({"n": "new"})));
    let (status, result) = until_restored(&s, "/api/v1/namespaces/_/actions/a11?blocking=true&result=true").await;
    assert_eq!((status, result), (200, json!({"n": 11})));
    s.stop().await;
}

/// Invokes `path` until it no longer answers 503.
async fn until_restored(s: &crate::Server, path: &str) -> (u16, serde_json::Value) {
    for _ in 0..600 {
        let (status, result) = s.call("POST", path, Some(&s.auth), None).await;
        if status != 503 {
            return (status, result);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} was never restored");
}
