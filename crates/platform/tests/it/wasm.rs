//! WebAssembly functions on the platform: their storage goes through the engine (buffered while speculative,
//! discarded when squashed), and speculation with wasm functions in the mix gives what sequential execution gives.

use std::sync::Arc;
use std::time::Duration;

use model::{Annotations, Application, Code, FunctionSpec, Kind, Limits};
use platform::{InvokeOptions, Status};
use serde_json::{Value, json};
use storage::{MemoryStore, Store};

use super::{NS, fate, fixture_on, native, sequence, source};

/// A wasm function that pushes `tag` onto the list at key `trail` (`[tag, previous]`) and returns its input.
fn pusher(name: &str, tag: &str) -> FunctionSpec {
    let get = r#"{"call":"kv.get","key":"trail"}"#;
    let put = format!(r#"{{"call":"kv.put","key":"trail","value":["{tag}","#);
    let esc = |s: &str| s.replace('"', "\\\"");
    let wat = format!(
        r#"(module
  (import "specfaas" "input_len" (func $input_len (result i32)))
  (import "specfaas" "input_read" (func $input_read (param i32)))
  (import "specfaas" "output" (func $output (param i32 i32)))
  (import "specfaas" "call" (func $call (param i32 i32) (result i32)))
  (import "specfaas" "reply_read" (func $reply_read (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{get}")
  (data (i32.const 100) "{put}")
  (data (i32.const 200) "]}}")
  (func (export "main") (local $in i32) (local $r i32) (local $v i32) (local $p i32)
    (local.set $in (call $input_len))
    (call $input_read (i32.const 8192))
    ;; reply = {{"ok":true,"value":V}}: V is at 19, of length r - 20
    (local.set $r (call $call (i32.const 0) (i32.const {get_len})))
    (call $reply_read (i32.const 16384))
    (local.set $v (i32.sub (local.get $r) (i32.const 20)))
    ;; request = put prefix, V, "]}}"
    (memory.copy (i32.const 32768) (i32.const 100) (i32.const {put_len}))
    (memory.copy (i32.const {after_put}) (i32.const 16403) (local.get $v))
    (local.set $p (i32.add (i32.const {after_put}) (local.get $v)))
    (memory.copy (local.get $p) (i32.const 200) (i32.const 2))
    (drop (call $call (i32.const 32768) (i32.sub (i32.add (local.get $p) (i32.const 2)) (i32.const 32768))))
    (call $output (i32.const 8192) (local.get $in))))"#,
        get = esc(get),
        put = esc(&put),
        get_len = get.len(),
        put_len = put.len(),
        after_put = 32768 + put.len(),
    );
    let bytes = wat::parse_str(&wat).unwrap_or_else(|e| panic!("{e}\n{wat}"));
    FunctionSpec::new(
        name,
        Kind::Wasm,
        Code::Wasm { bytes, main: "main".into() },
        Limits::default(),
        Annotations::default(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_functions_storage_goes_through_the_engine() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let f = fixture_on(store.clone());
    let p = &f.platform;
    p.deploy_function(NS, pusher("w1", "w1")).await.unwrap();
    p.deploy_function(NS, pusher("w2", "w2")).await.unwrap();
    sequence(p, "app", &["w1", "w2"]).await;
    let inv = p.invoke(NS, "app", json!({"x": 1})).await.unwrap();
    assert_eq!((inv.status, inv.result), (Status::Success, json!({"x": 1})));
    assert_eq!(store.get(NS, "trail").unwrap().value, Some(json!(["w2", ["w1", null]])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_squashed_speculative_wasm_write_never_lands() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let f = fixture_on(store.clone());
    let p = &f.platform;
    // `gate` decides slowly; the wasm writer on its usual branch starts speculatively meanwhile.
    p.native().register("gate", |_, input| async move {
        tokio::time::sleep(Duration::from_millis(60)).await;
        Ok(json!({"open": input["open"]}))
    });
    p.native().register("closed", |_, _| async move { Ok(json!({"closed": true})) });
    for name in ["gate", "closed"] {
        p.deploy_function(NS, native(name)).await.unwrap();
    }
    p.deploy_function(NS, pusher("writer", "writer")).await.unwrap();
    let text = r#"{"StartAt": "Gate", "States": {
      "Gate": {"Type": "Task", "Resource": "gate", "ResultPath": "$.gate", "Next": "Open?"},
      "Open?": {"Type": "Choice", "Choices": [{"Variable": "$.gate.open", "BooleanEquals": true, "Next": "Write"}],
                "Default": "Closed"},
      "Write": {"Type": "Task", "Resource": "writer", "Parameters": {"i.$": "$.i"}, "End": true},
      "Closed": {"Type": "Task", "Resource": "closed", "End": true}}}"#;
    let graph = model::asl::parse("gated.asl.json", text, &|f| p.has_function(NS, f)).unwrap();
    let app = Application::workflow("gated", graph).unwrap();
    p.deploy_app(NS, app);
    for i in 0..6 {
        let inv = p.invoke(NS, "gated", json!({"open": true, "i": i})).await.unwrap();
        assert_eq!(inv.status, Status::Success);
    }
    let before = store.get(NS, "trail").unwrap();
    let inv = p.invoke(NS, "gated", json!({"open": false, "i": 99})).await.unwrap();
    assert_eq!(inv.result, json!({"closed": true}));
    let writer: Vec<_> = inv.runs.iter().filter(|r| r.name == "writer").collect();
    assert!(!writer.is_empty(), "the writer must have started on the predicted branch: {:?}", inv.runs);
    assert!(writer.iter().all(|r| fate(r) == "squashed"), "{writer:?}");
    assert_eq!(store.get(NS, "trail").unwrap(), before, "the squashed write never reached the store");
}

/// A small differential test at the platform level: the same random invocations, with wasm, native and Python
/// functions in one sequence, give the same results and the same store with speculation on as off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speculation_with_wasm_functions_in_the_mix_equals_sequential_execution() {
    let seed: u64 = std::env::var("SPECFAAS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed);
    let mut sides = Vec::new();
    for speculation in [false, true] {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let f = fixture_on(store.clone());
        let p = &f.platform;
        p.native().register("n1", |ctx, input| async move {
            let old = ctx.kv_get("trail").await.map_err(|e| e.to_string())?;
            ctx.kv_put("trail", json!(["n1", old])).await.map_err(|e| e.to_string())?;
            Ok(json!({"k": input["k"], "n": input["k"].as_i64().unwrap_or(0) % 3}))
        });
        p.deploy_function(NS, native("n1")).await.unwrap();
        p.deploy_function(NS, pusher("w1", "w1")).await.unwrap();
        let py = "import specfaas\ndef main(args):\n    specfaas.kv.put('trail', ['py', specfaas.kv.get('trail')])\n    return args\n";
        p.deploy_function(NS, source("py", Kind::Python, py, Limits::default())).await.unwrap();
        p.deploy_function(NS, pusher("w2", "w2")).await.unwrap();
        sequence(p, "mix", &["n1", "w1", "py", "w2"]).await;
        // Inputs repeat (so memoization predicts) and change (so it mispredicts).
        let mut x = seed;
        let mut results = Vec::new();
        for _ in 0..12 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let input = json!({"k": (x >> 33) % 4});
            let options = InvokeOptions { speculation: Some(speculation), ..Default::default() };
            let inv = p.invoke_with(NS, "mix", input, options).await.unwrap();
            results.push((inv.status, inv.result));
        }
        let trail: Value = store.get(NS, "trail").unwrap().value.unwrap_or(Value::Null);
        sides.push((results, trail, p.metrics().speculative_launches));
    }
    let (off, on) = (&sides[0], &sides[1]);
    assert_eq!(off.0, on.0, "seed {seed}: results differ (rerun with SPECFAAS_SEED={seed})");
    assert_eq!(off.1, on.1, "seed {seed}: the stores differ (rerun with SPECFAAS_SEED={seed})");
    assert!(on.2 > 0, "speculation must have launched something, or this proves nothing");
}
