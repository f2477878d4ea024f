//! The conformance suite every [`Store`] backend must pass. Each check is a public async function on
//! `&dyn Store`; [`conformance_tests!`](crate::conformance_tests) turns them into one `#[test]` per check for a
//! backend, each run to completion on its own multi-threaded tokio runtime ([`block_on`]):
//!
//! ```ignore
//! storage::conformance_tests!(MyStore::new());
//! ```

use std::sync::Arc;

use serde_json::{Value, json};

use crate::{ActivationEntry, ActivationQuery, Batch, Error, Op, Store, Write};

fn put(key: &str, value: Value) -> Write {
    Write { key: key.into(), op: Op::Put(value) }
}

fn batch(ns: &str, writes: Vec<Write>) -> Batch {
    Batch { namespace: ns.into(), writes, expect: vec![] }
}

pub async fn missing_key_has_version_zero(store: &dyn Store) {
    let got = store.get("ns", "nothing").await.unwrap();
    assert_eq!(got.value, None);
    assert_eq!(got.version, 0);
}

pub async fn put_then_get_round_trips_json(store: &dyn Store) {
    let values = [json!(null), json!(0), json!("s"), json!([1, {"a": null}]), json!({"deep": {"x": [true]}})];
    for (i, v) in values.iter().enumerate() {
        store.apply(batch("ns", vec![put(&format!("k{i}"), v.clone())])).await.unwrap();
        let got = store.get("ns", &format!("k{i}")).await.unwrap();
        assert_eq!(got.value.as_ref(), Some(v), "a stored JSON null must stay distinct from a missing key");
        assert!(got.version > 0);
    }
}

pub async fn versions_increase_and_delete_leaves_a_tombstone(store: &dyn Store) {
    let v1 = store.apply(batch("ns", vec![put("k", json!(1))])).await.unwrap();
    let v2 = store.apply(batch("ns", vec![put("k", json!(2))])).await.unwrap();
    assert!(v2 > v1);
    let v3 = store.apply(batch("ns", vec![Write { key: "k".into(), op: Op::Delete }])).await.unwrap();
    let got = store.get("ns", "k").await.unwrap();
    assert_eq!(got.value, None);
    assert_eq!(got.version, v3, "a delete is versioned, so a reader can tell it happened");
}

pub async fn batch_is_atomic_under_conflict(store: &dyn Store) {
    let v = store.apply(batch("ns", vec![put("a", json!(1))])).await.unwrap();
    // A batch whose read-set validation fails writes nothing, not even its first write.
    let stale = Batch {
        namespace: "ns".into(),
        writes: vec![put("b", json!(1)), put("a", json!(9))],
        expect: vec![("a".into(), v - 1)],
    };
    match store.apply(stale.clone()).await {
        Err(Error::Conflict { key, expected, found }) => {
            assert_eq!((key.as_str(), expected, found), ("a", v - 1, v));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.get("ns", "b").await.unwrap().version, 0);
    assert_eq!(store.get("ns", "a").await.unwrap().value, Some(json!(1)));
    // With the right expectation the same batch lands, and both keys get the one commit version.
    let ok = Batch { expect: vec![("a".into(), v), ("never".into(), 0)], ..stale };
    let v2 = store.apply(ok).await.unwrap();
    assert_eq!(store.get("ns", "a").await.unwrap().version, v2);
    assert_eq!(store.get("ns", "b").await.unwrap().version, v2);
}

pub async fn namespaces_are_isolated_whatever_the_key(store: &dyn Store) {
    // Keys crafted to look like another namespace's path must stay inside their own namespace.
    store.apply(batch("alice", vec![put("secret", json!("alice's"))])).await.unwrap();
    for (ns, key) in [
        ("bob", "secret"),
        ("bob", "../alice/secret"),
        ("bob", "alice/secret"),
        ("bob", "alice\0secret"),
        ("ali", "ce/secret"),
        ("alice/", "secret"),
        ("", "alice/secret"),
    ] {
        assert_eq!(store.get(ns, key).await.unwrap().value, None, "({ns:?}, {key:?}) must not see alice's key");
        store.apply(batch(ns, vec![put(key, json!("mallory"))])).await.unwrap();
    }
    assert_eq!(store.get("alice", "secret").await.unwrap().value, Some(json!("alice's")));
}

pub async fn concurrent_validated_increments_lose_nothing(store: Arc<dyn Store>) {
    const TASKS: usize = 4;
    const PER_TASK: usize = 25;
    let handles: Vec<_> = (0..TASKS)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut done = 0;
                while done < PER_TASK {
                    let cur = store.get("ns", "counter").await.unwrap();
                    let n = cur.value.as_ref().and_then(Value::as_u64).unwrap_or(0);
                    let b = Batch {
                        namespace: "ns".into(),
                        writes: vec![put("counter", json!(n + 1))],
                        expect: vec![("counter".into(), cur.version)],
                    };
                    match store.apply(b).await {
                        Ok(_) => done += 1,
                        Err(Error::Conflict { .. }) => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(store.get("ns", "counter").await.unwrap().value, Some(json!(TASKS * PER_TASK)));
}

pub async fn scan_lists_a_prefix_in_one_namespace_in_order(store: &dyn Store) {
    store
        .apply(batch("ns", vec![put("action:b", json!(2)), put("action:a", json!(1)), put("other", json!(0))]))
        .await
        .unwrap();
    store.apply(batch("ns2", vec![put("action:c", json!(3))])).await.unwrap();
    store.apply(batch("ns", vec![put("action:gone", json!(9))])).await.unwrap();
    store.apply(batch("ns", vec![Write { key: "action:gone".into(), op: Op::Delete }])).await.unwrap();
    let got = store.scan("ns", "action:").await.unwrap();
    assert_eq!(got, vec![("action:a".to_string(), json!(1)), ("action:b".to_string(), json!(2))]);
    assert!(store.scan("ns", "zzz").await.unwrap().is_empty());
}

fn entry(ns: &str, id: &str, name: &str, start_ms: u64) -> ActivationEntry {
    ActivationEntry {
        namespace: ns.into(),
        id: id.into(),
        name: name.into(),
        start_ms,
        record: json!({"activationId": id, "name": name, "start": start_ms}),
    }
}

pub async fn activations_are_listed_newest_first_and_filtered(store: &dyn Store) {
    store
        .put_activations(vec![
            entry("ns", "a1", "f", 10),
            entry("ns", "a2", "g", 20),
            entry("ns", "a3", "f", 30),
            entry("other", "o1", "f", 40),
        ])
        .await
        .unwrap();
    let ids = async |q: ActivationQuery| -> Vec<String> {
        store.list_activations("ns", &q).await.unwrap().into_iter().map(|e| e.id).collect()
    };
    assert_eq!(ids(ActivationQuery::default()).await, ["a3", "a2", "a1"]);
    assert_eq!(ids(ActivationQuery { name: Some("f".into()), ..Default::default() }).await, ["a3", "a1"]);
    assert_eq!(
        ids(ActivationQuery { since_ms: Some(15), upto_ms: Some(30), ..Default::default() }).await,
        ["a3", "a2"]
    );
    assert_eq!(ids(ActivationQuery { skip: 1, limit: 1, ..Default::default() }).await, ["a2"]);
    let got = store.get_activation("ns", "a2").await.unwrap().unwrap();
    assert_eq!(got.record["name"], "g");
    assert_eq!(got.start_ms, 20);
    assert!(
        store.get_activation("ns", "o1").await.unwrap().is_none(),
        "another namespace's activation must not be found"
    );
    // Replacing a record keeps one index entry.
    store.put_activations(vec![entry("ns", "a1", "f", 50)]).await.unwrap();
    assert_eq!(ids(ActivationQuery::default()).await, ["a1", "a3", "a2"]);
}

/// Runs one check to completion on a fresh multi-threaded tokio runtime (backends may use the blocking pool, and
/// the concurrency check needs more than one worker).
pub fn block_on<F: std::future::Future>(check: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
        .block_on(check)
}

/// Instantiates every conformance check as a `#[test]` for the backend `$make` builds.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            missing_key_has_version_zero,
            put_then_get_round_trips_json,
            versions_increase_and_delete_leaves_a_tombstone,
            batch_is_atomic_under_conflict,
            namespaces_are_isolated_whatever_the_key,
            scan_lists_a_prefix_in_one_namespace_in_order,
            activations_are_listed_newest_first_and_filtered,
        );
        #[test]
        fn concurrent_validated_increments_lose_nothing() {
            $crate::conformance::block_on(async {
                $crate::conformance::concurrent_validated_increments_lose_nothing(std::sync::Arc::new($make)).await
            });
        }
    };
    (@each $make:expr; $($check:ident,)*) => {
        $(
            #[test]
            fn $check() {
                $crate::conformance::block_on(async { $crate::conformance::$check(&$make).await });
            }
        )*
    };
}
