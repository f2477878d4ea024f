//! WebAssembly functions on the platform: their storage goes through the engine (buffered while speculative,
//! discarded when squashed), and speculation with wasm functions in the mix gives what sequential execution gives.

use std::sync::Arc;
use std::time::Duration;

use engine::oracle::{BranchPredictor, Called, CalleePredictor, Memo};
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
    assert_eq!(store.get(NS, "trail").await.unwrap().value, Some(json!(["w2", ["w1", null]])));
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
    let before = store.get(NS, "trail").await.unwrap();
    let inv = p.invoke(NS, "gated", json!({"open": false, "i": 99})).await.unwrap();
    assert_eq!(inv.result, json!({"closed": true}));
    let writer: Vec<_> = inv.runs.iter().filter(|r| r.name == "writer").collect();
    assert!(!writer.is_empty(), "the writer must have started on the predicted branch: {:?}", inv.runs);
    assert!(writer.iter().all(|r| fate(r) == "squashed"), "{writer:?}");
    assert_eq!(store.get(NS, "trail").await.unwrap(), before, "the squashed write never reached the store");
}

/// A predictor that is wrong on purpose, over the real tables (which it trains): every branch prediction is a
/// target other than the learned one, with full confidence; every memoized output and callee argument it gives
/// has a field that no run produces, except for `n1`, which it never predicts, so that the `Choice` after `n1`
/// goes to the branch predictor. Speculation under it must still give what sequential execution gives.
pub(crate) struct Liar {
    branches: engine::tables::BranchTable,
    memo: engine::tables::MemoTable,
    callees: engine::tables::CalleeTable,
}

impl Liar {
    /// The lying predictors, with the real dependence table.
    pub(crate) fn oracle() -> engine::Oracle {
        let sizes = engine::tables::Sizes::default();
        let liar = Arc::new(Liar {
            branches: engine::tables::BranchTable::new(sizes.branch_entries),
            memo: engine::tables::MemoTable::new(sizes.memo_entries),
            callees: engine::tables::CalleeTable::new(sizes.callee_entries),
        });
        engine::Oracle { branches: liar.clone(), memo: liar.clone(), callees: liar, ..engine::tables::learning(sizes) }
    }
}

impl BranchPredictor for Liar {
    fn predict(&self, choice: &str, history: u64, targets: &[usize]) -> Option<(usize, f64)> {
        let learned = self.branches.predict(choice, history, targets).map(|(t, _)| t);
        targets.iter().find(|t| Some(**t) != learned).map(|t| (*t, 1.0))
    }
    fn train(&self, choice: &str, history: u64, target: usize) {
        self.branches.train(choice, history, target)
    }
}

impl Memo for Liar {
    fn lookup(&self, f: &str, v: &str, input: &Value) -> Option<Value> {
        if f == "n1" {
            return None;
        }
        let mut lie = self.memo.lookup(f, v, input).unwrap_or_else(|| json!({}));
        lie["lie"] = json!(true);
        Some(lie)
    }
    fn train(&self, f: &str, v: &str, input: &Value, output: &Value) {
        self.memo.train(f, v, input, output)
    }
}

impl CalleePredictor for Liar {
    fn predict(&self, f: &str, v: &str, input: &Value) -> Option<Vec<(String, Value)>> {
        let learned = self.callees.predict(f, v, input)?;
        Some(learned.into_iter().map(|(callee, args)| (callee, json!({"lie": args}))).collect())
    }
    fn next(&self, f: &str, v: &str, input: &Value, earlier: &[Called]) -> Option<(String, Value)> {
        let (callee, args) = self.callees.next(f, v, input, earlier)?;
        Some((callee, json!({"lie": args})))
    }
    fn train(&self, f: &str, v: &str, input: &Value, calls: &[Called]) {
        self.callees.train(f, v, input, calls)
    }
}

/// One random workflow for `seed`: a few of the wasm, Python and native functions in random order, then `n1`,
/// whose output's `n` a `Choice` branches on, to one of two wasm functions. Every function appends itself to the
/// list at `trail`, so the final store records the order in which writes landed.
fn random_workflow(seed: u64) -> String {
    let mut x = seed;
    let mut next = move |n: u64| {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (x >> 33) % n
    };
    let mut pool = vec!["w1", "w2", "w3", "py"];
    let mut prefix = Vec::new();
    for _ in 0..1 + next(3) {
        prefix.push(pool.remove(next(pool.len() as u64) as usize));
    }
    let (a, b) = (["w2", "w3"][next(2) as usize], ["w1", "w3"][next(2) as usize]);
    let mut states = serde_json::Map::new();
    for (i, f) in prefix.iter().enumerate() {
        let next = if i + 1 < prefix.len() { format!("S{}", i + 1) } else { "N".into() };
        states.insert(format!("S{i}"), json!({"Type": "Task", "Resource": f, "Next": next}));
    }
    // n1's output goes aside (`$.r`), and the branches take only `k`: their input is known before n1 ends, so
    // the branch predictor alone can start them.
    states.insert("N".into(), json!({"Type": "Task", "Resource": "n1", "ResultPath": "$.r", "Next": "C"}));
    states.insert(
        "C".into(),
        json!({"Type": "Choice", "Choices": [{"Variable": "$.r.n", "NumericEquals": 0, "Next": "A"}], "Default": "B"}),
    );
    for (state, f) in [("A", a), ("B", b)] {
        states.insert(state.into(), json!({"Type": "Task", "Resource": f, "Parameters": {"k.$": "$.k"}, "End": true}));
    }
    json!({"StartAt": "S0", "States": states}).to_string()
}

/// The speculation property (RELIABILITY.md S1) at the platform level with wasm functions in the mix: random
/// workflows of wasm, Python and native functions, run on the same inputs with speculation off (the sequential
/// reference) and on, under the learning predictor and under one that lies ([`Liar`]), give the same results and
/// the same store. Each failure prints its seed: rerun it with `SPECFAAS_SEED=<seed>`, or run more cases with
/// `SPECFAAS_CASES=<n>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speculation_with_wasm_functions_in_the_mix_equals_sequential_execution() {
    let seeds: Vec<u64> = match std::env::var("SPECFAAS_SEED") {
        Ok(seed) => vec![seed.parse().expect("SPECFAAS_SEED is a number")],
        Err(_) => (1..=std::env::var("SPECFAAS_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(4)).collect(),
    };
    let mut total = platform::metrics::Snapshot::default();
    for seed in seeds {
        let workflow = random_workflow(seed);
        let mut sides = Vec::new();
        for (speculation, liar) in [(false, false), (true, false), (true, true)] {
            let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
            let f = fixture_on(store.clone());
            let p = &f.platform;
            if liar {
                p.set_oracle(NS, Liar::oracle());
            }
            p.native().register("n1", |ctx, input| async move {
                let old = ctx.kv_get("trail").await.map_err(|e| e.to_string())?;
                ctx.kv_put("trail", json!(["n1", old])).await.map_err(|e| e.to_string())?;
                Ok(json!({"k": input["k"], "n": input["k"].as_i64().unwrap_or(0) % 3}))
            });
            p.deploy_function(NS, native("n1")).await.unwrap();
            for w in ["w1", "w2", "w3"] {
                p.deploy_function(NS, pusher(w, w)).await.unwrap();
            }
            let py = "import specfaas\ndef main(args):\n    specfaas.kv.put('trail', ['py', specfaas.kv.get('trail')])\n    return args\n";
            p.deploy_function(NS, source("py", Kind::Python, py, Limits::default())).await.unwrap();
            let graph = model::asl::parse("mix.asl.json", &workflow, &|f| p.has_function(NS, f)).unwrap();
            p.deploy_app(NS, Application::workflow("mix", graph).unwrap());
            // Inputs repeat (so the tables predict) and change (so they mispredict).
            let mut x = seed;
            let mut results = Vec::new();
            for _ in 0..10 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let input = json!({"k": (x >> 33) % 4});
                let options = InvokeOptions { speculation: Some(speculation), ..Default::default() };
                let inv = p.invoke_with(NS, "mix", input, options).await.unwrap();
                results.push((inv.status, inv.result));
            }
            let trail: Value = store.get(NS, "trail").await.unwrap().value.unwrap_or(Value::Null);
            total.add(&p.metrics());
            sides.push((results, trail));
        }
        for (side, name) in [(&sides[1], "learning"), (&sides[2], "liar")] {
            let rerun =
                format!("seed {seed}, predictor {name} (rerun with SPECFAAS_SEED={seed})\nworkflow: {workflow}");
            assert_eq!(side.0, sides[0].0, "{rerun}: the results differ from sequential execution");
            assert_eq!(side.1, sides[0].1, "{rerun}: the store differs from sequential execution");
        }
    }
    // Speculation must have happened, and been wrong, or this proves nothing.
    assert!(total.speculative_launches > 0, "{total:?}");
    for cause in [engine::Cause::ControlMispredict, engine::Cause::MemoMismatch] {
        assert!(total.squashes.get(&cause).copied().unwrap_or(0) > 0, "no {cause:?} squash: {total:?}");
    }
}
