//! The behaviour every [`Runtime`] must show. A runtime's test module provides a [`Fixture`] that turns each
//! [`Behaviour`] into a function of its kind; [`runtime_conformance_tests!`](crate::runtime_conformance_tests)
//! generates one `#[tokio::test]` per check.
//!
//! The checks use a [`MockHost`] that answers storage calls from a map and invokes by echoing, and records every
//! call, so a test can assert what the function asked of the platform.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use model::{FunctionSpec, Limits};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::{Activation, Call, Cpu, Killer, Outcome, Reply, Report, Runtime, Warm};

/// A WebAssembly function whose output is its input, in WAT: the wasm no-op of the benchmarks and API tests.
pub const WASM_ECHO: &str = r#"(module
  (import "specfaas" "input_len" (func $len (result i32)))
  (import "specfaas" "input_read" (func $read (param i32)))
  (import "specfaas" "output" (func $out (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "main") (local $n i32)
    (local.set $n (call $len))
    (call $read (i32.const 0))
    (call $out (i32.const 0) (local.get $n))))"#;

/// What a fixture function must do. Inputs and outputs are fixed here so every runtime is held to the same bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Returns the input with `"echoed": true` added.
    Echo,
    /// Prints `out-line` to stdout and `err-line` to stderr, returns `{}`.
    Logs,
    /// Returns `{"error": "bad input"}`.
    AppError,
    /// Throws an exception whose message contains `boom`.
    Throw,
    /// `put("k", {"v": input.n})`, then returns `{"got": get("k"), "missing": get("nope")}`; `delete("k")` last.
    Kv,
    /// Returns `{"r": invoke("callee", {"x": 1}), "caught": <error of invoke("failing", {})>}`.
    Invoke,
    /// Sleeps `input.ms` milliseconds (without blocking other activations), returns `{"slept": ms}`.
    Sleep,
}

pub trait Fixture: Send + Sync {
    fn runtime(&self) -> Arc<dyn Runtime>;
    fn spec(&self, behaviour: Behaviour, limits: Limits) -> FunctionSpec;
}

/// A host that serves storage from a map and answers invokes; it records every call.
#[derive(Clone, Default)]
pub struct MockHost {
    pub calls: Arc<Mutex<Vec<Call>>>,
    store: Arc<Mutex<BTreeMap<String, Value>>>,
}

impl MockHost {
    /// The [`Host`](crate::Host) callback a function gets: calls are served by a task, in order.
    pub fn channel(&self) -> crate::Host {
        let (tx, mut rx) = mpsc::unbounded_channel::<crate::HostRequest>();
        let me = self.clone();
        tokio::spawn(async move {
            while let Some(req) = rx.recv().await {
                me.calls.lock().unwrap().push(req.call.clone());
                let mut store = me.store.lock().unwrap();
                let reply = match req.call {
                    Call::Get { key } => Reply::Ok(store.get(&key).cloned().unwrap_or(Value::Null)),
                    Call::Put { key, value } => {
                        store.insert(key, value);
                        Reply::Ok(Value::Null)
                    }
                    Call::Delete { key } => {
                        store.remove(&key);
                        Reply::Ok(Value::Null)
                    }
                    Call::Invoke { function, .. } if function == "failing" => {
                        Reply::FunctionFailed(json!("callee broke"))
                    }
                    Call::Invoke { function, args } => Reply::Ok(json!({"from": function, "args": args})),
                    Call::Http { request } => Reply::Ok(json!({"status": 200, "echo": request})),
                    // A mock host releases a held system call at once, as for a non-speculative run.
                    Call::Syscall { .. } => Reply::Ok(Value::Null),
                };
                (req.reply)(reply);
            }
        });
        Arc::new(move |req| {
            let _ = tx.send(req);
        })
    }
}

/// A started activation, for tests: its killer and a receiver for its report.
pub struct Started {
    pub killer: Killer,
    pub done: oneshot::Receiver<Report>,
}

impl Started {
    pub fn kill(&self) {
        self.killer.kill()
    }
}

/// Starts `activation` on `warm` with `host`, collecting the report in a oneshot.
pub fn start(warm: &dyn Warm, activation: Activation, host: &MockHost) -> Started {
    let (tx, rx) = oneshot::channel();
    let killer = warm.start(
        activation,
        host.channel(),
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    Started { killer, done: rx }
}

pub async fn load(fixture: &dyn Fixture, behaviour: Behaviour, limits: Limits) -> Arc<dyn Warm> {
    let spec = Arc::new(fixture.spec(behaviour, limits));
    fixture.runtime().load(spec).await.unwrap_or_else(|e| panic!("loading {behaviour:?}: {e}"))
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Processes whose command line holds `marker`, anywhere on the machine: how tests see whether a function's
/// processes outlived it.
pub fn processes_with(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .expect("/proc lists the machine's processes")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()))
        .filter(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(marker)
        })
        .count()
}

pub fn activation(input: Value) -> Activation {
    let n = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Activation {
        id: format!("{n:032x}"),
        input,
        env: BTreeMap::new(),
        speculative: false,
        cpu: Cpu::Full,
        after_squash: Default::default(),
    }
}

pub async fn run(warm: &dyn Warm, input: Value) -> Report {
    run_with(warm, input, &MockHost::default()).await
}

pub async fn run_with(warm: &dyn Warm, input: Value, host: &MockHost) -> Report {
    let running = start(warm, activation(input), host);
    tokio::time::timeout(Duration::from_secs(30), running.done).await.expect("activation hung").expect("report")
}

pub async fn echo_returns_the_result(f: &dyn Fixture) {
    let warm = load(f, Behaviour::Echo, Limits::default()).await;
    let report = run(&*warm, json!({"n": 1, "s": "é"})).await;
    assert_eq!(report.outcome, Outcome::Success(json!({"n": 1, "s": "é", "echoed": true})));
}

pub async fn stdout_and_stderr_become_logs(f: &dyn Fixture) {
    let warm = load(f, Behaviour::Logs, Limits::default()).await;
    let report = run(&*warm, json!({})).await;
    assert_eq!(report.outcome, Outcome::Success(json!({})));
    let has = |needle: &str| report.logs.iter().any(|l| l.ends_with(needle));
    assert!(has("stdout: out-line"), "{:?}", report.logs);
    assert!(has("stderr: err-line"), "{:?}", report.logs);
}

pub async fn returned_error_is_an_application_error(f: &dyn Fixture) {
    let warm = load(f, Behaviour::AppError, Limits::default()).await;
    assert_eq!(run(&*warm, json!({})).await.outcome, Outcome::ApplicationError(json!("bad input")));
}

/// A thrown exception keeps its name and message, as Lambda reports them (a workflow's `Retry` and `Catch` match
/// on the name); a runtime that cannot tell them reports a developer error that shows the message.
pub async fn exception_is_a_developer_error(f: &dyn Fixture) {
    let warm = load(f, Behaviour::Throw, Limits::default()).await;
    match run(&*warm, json!({})).await.outcome {
        Outcome::Threw { name, cause, message } => {
            assert!(!name.is_empty() && cause.contains("boom") && message.contains(&name), "{name} {cause} {message}")
        }
        Outcome::DeveloperError(m) => assert!(m.contains("boom"), "{m}"),
        other => panic!("expected a developer error, got {other:?}"),
    }
}

pub async fn storage_calls_go_through_the_host(f: &dyn Fixture) {
    let warm = load(f, Behaviour::Kv, Limits::default()).await;
    let host = MockHost::default();
    let report = run_with(&*warm, json!({"n": 7}), &host).await;
    assert_eq!(report.outcome, Outcome::Success(json!({"got": {"v": 7}, "missing": null})));
    let calls = host.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        vec![
            Call::Put { key: "k".into(), value: json!({"v": 7}) },
            Call::Get { key: "k".into() },
            Call::Get { key: "nope".into() },
            Call::Delete { key: "k".into() },
        ]
    );
}

pub async fn invoke_returns_the_callee_result_or_its_error(f: &dyn Fixture) {
    let warm = load(f, Behaviour::Invoke, Limits::default()).await;
    let report = run(&*warm, json!({})).await;
    assert_eq!(
        report.outcome,
        Outcome::Success(json!({"r": {"from": "callee", "args": {"x": 1}}, "caught": "callee broke"}))
    );
}

pub async fn timeout_stops_the_activation(f: &dyn Fixture) {
    let limits = Limits { timeout_ms: 300, ..Limits::default() };
    let warm = load(f, Behaviour::Sleep, limits).await;
    let started = std::time::Instant::now();
    let report = run(&*warm, json!({"ms": 60_000})).await;
    assert_eq!(report.outcome, Outcome::Timeout { timeout_ms: 300 });
    // F4: killed within timeout + max(100 ms, 10%), with generous slack for a loaded CI machine.
    assert!(started.elapsed() < Duration::from_millis(300 + 1500), "took {:?}", started.elapsed());
    // The warm function still serves.
    assert_eq!(run(&*warm, json!({"ms": 1})).await.outcome, Outcome::Success(json!({"slept": 1})));
}

pub async fn kill_stops_one_activation_and_the_function_stays_warm(f: &dyn Fixture) {
    let warm = load(f, Behaviour::Sleep, Limits::default()).await;
    let host = MockHost::default();
    let victim = start(&*warm, activation(json!({"ms": 60_000})), &host);
    let bystander = start(&*warm, activation(json!({"ms": 200})), &host);
    tokio::time::sleep(Duration::from_millis(100)).await;
    victim.kill();
    let report = tokio::time::timeout(Duration::from_secs(5), victim.done).await.expect("kill hung").unwrap();
    assert_eq!(report.outcome, Outcome::Killed);
    let other = tokio::time::timeout(Duration::from_secs(10), bystander.done).await.unwrap().unwrap();
    assert_eq!(other.outcome, Outcome::Success(json!({"slept": 200})), "a kill must not disturb other activations");
    assert_eq!(run(&*warm, json!({"ms": 1})).await.outcome, Outcome::Success(json!({"slept": 1})));
}

/// Squashes kill handlers over and over; the function must keep serving promptly (no activation may wait for a
/// handler that will never come).
pub async fn many_kills_leave_the_pool_serving(f: &dyn Fixture) {
    let warm = load(f, Behaviour::Sleep, Limits::default()).await;
    let host = MockHost::default();
    for round in 0..12 {
        let victims: Vec<_> = (0..2).map(|_| start(&*warm, activation(json!({"ms": 60_000})), &host)).collect();
        tokio::time::sleep(Duration::from_millis(30)).await;
        for v in &victims {
            v.kill();
        }
        for v in victims {
            let report = tokio::time::timeout(Duration::from_secs(5), v.done).await.expect("kill hung").unwrap();
            assert_eq!(report.outcome, Outcome::Killed);
        }
        let next = tokio::time::timeout(Duration::from_secs(10), run(&*warm, json!({"ms": 1})))
            .await
            .unwrap_or_else(|_| panic!("round {round}: an activation after kills waited 10 s for a handler"));
        assert_eq!(next.outcome, Outcome::Success(json!({"slept": 1})));
    }
}

/// Killing an activation that has already finished must not touch the handler, which serves others now.
pub async fn a_late_kill_does_not_hit_the_next_activation(f: &dyn Fixture) {
    let warm = load(f, Behaviour::Sleep, Limits::default()).await;
    let host = MockHost::default();
    let Started { killer, done } = start(&*warm, activation(json!({"ms": 1})), &host);
    let report = tokio::time::timeout(Duration::from_secs(10), done).await.unwrap().unwrap();
    assert_eq!(report.outcome, Outcome::Success(json!({"slept": 1})));
    let second = start(&*warm, activation(json!({"ms": 300})), &host);
    tokio::time::sleep(Duration::from_millis(100)).await;
    killer.kill();
    let report = tokio::time::timeout(Duration::from_secs(10), second.done).await.unwrap().unwrap();
    assert_eq!(report.outcome, Outcome::Success(json!({"slept": 300})), "the late kill hit another activation");
}

pub async fn concurrent_activations_are_independent(f: &dyn Fixture) {
    let warm = load(f, Behaviour::Echo, Limits::default()).await;
    let host = MockHost::default();
    let running: Vec<_> = (0..8).map(|i| start(&*warm, activation(json!({"i": i})), &host)).collect();
    for (i, r) in running.into_iter().enumerate() {
        let report = r.done.await.unwrap();
        assert_eq!(report.outcome, Outcome::Success(json!({"i": i, "echoed": true})));
    }
}

/// Generates every conformance check as a test for `$fixture` (an expression building a [`Fixture`]).
#[macro_export]
macro_rules! runtime_conformance_tests {
    ($fixture:expr) => {
        $crate::runtime_conformance_tests!(@each $fixture;
            echo_returns_the_result, stdout_and_stderr_become_logs, returned_error_is_an_application_error,
            exception_is_a_developer_error, storage_calls_go_through_the_host,
            invoke_returns_the_callee_result_or_its_error, timeout_stops_the_activation,
            kill_stops_one_activation_and_the_function_stays_warm, many_kills_leave_the_pool_serving,
            a_late_kill_does_not_hit_the_next_activation, concurrent_activations_are_independent);
    };
    (@each $fixture:expr; $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let fixture = $fixture;
                $crate::conformance::$check(&fixture).await;
            }
        )*
    };
}
