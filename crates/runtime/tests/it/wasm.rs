//! The wasm runtime: the conformance suite on WAT fixtures, and the bad inputs of a sandbox (invalid, oversized or
//! incomplete modules; traps, infinite loops, memory bombs, deep recursion), with no wasm toolchain needed.
//!
//! The fixtures are written in a tiny assembler ([`Step`]) that emits WAT: the guest reads its input, builds
//! platform calls and its output by splicing constant text, slices of the input and slices of replies.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use model::{Annotations, Code, FunctionSpec, Kind, Limits};
use runtime::conformance::{Behaviour, Fixture, MockHost, activation, run, start};
use runtime::wasm::{Options, WasmRuntime};
use runtime::{Outcome, Runtime};
use serde_json::json;

pub fn wasm_runtime() -> Arc<WasmRuntime> {
    static RT: OnceLock<Arc<WasmRuntime>> = OnceLock::new();
    RT.get_or_init(|| Arc::new(WasmRuntime::new(Options::default()).expect("the wasm runtime starts"))).clone()
}

/// One step of a fixture guest.
enum Step {
    /// Appends text to the output.
    Out(&'static str),
    /// Appends the input without its first `.0` and last `.1` bytes.
    OutInput(usize, usize),
    /// Appends reply `.0` without its first `.1` and last `.2` bytes.
    OutReply(usize, usize, usize),
    /// Appends text to the request being built.
    Req(&'static str),
    /// Appends a slice of the input (as [`Step::OutInput`]) to the request.
    ReqInput(usize, usize),
    /// Sends the request built so far; its reply is reply `.0`.
    Call(usize),
    /// Writes text to a file descriptor (1: stdout, 2: stderr).
    Write(u32, &'static str),
    /// Sleeps the number of milliseconds the input holds between its first `.0` and last `.1` bytes.
    SleepInputMs(usize, usize),
    Trap,
}

const INPUT: u32 = 8192;
const REPLIES: u32 = 16384; // 4 KiB each
const REQUEST: u32 = 49152;
const OUTPUT: u32 = 53248;
const SCRATCH: u32 = 60000;

/// Assembles a guest module from steps; the output is sent at the end.
fn assemble(steps: &[Step]) -> String {
    let mut data = Vec::new();
    let mut at = 0u32;
    let mut konst = |text: &str, data: &mut Vec<String>| {
        let offset = at;
        data.push(format!(
            "(data (i32.const {offset}) \"{}\")",
            text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\0a")
        ));
        at += text.len() as u32;
        (offset, text.len() as u32)
    };
    let mut body = Vec::new();
    for step in steps {
        body.push(match step {
            Step::Out(t) => {
                let (o, n) = konst(t, &mut data);
                format!("(call $out (i32.const {o}) (i32.const {n}))")
            }
            Step::OutInput(a, b) => format!("(call $out {})", slice(INPUT, "(global.get $in_len)", *a, *b)),
            Step::OutReply(k, a, b) => {
                let len = format!("(i32.load (i32.const {}))", SCRATCH + 4 * *k as u32);
                format!("(call $out {})", slice(REPLIES + 4096 * *k as u32, &len, *a, *b))
            }
            Step::Req(t) => {
                let (o, n) = konst(t, &mut data);
                format!("(call $req (i32.const {o}) (i32.const {n}))")
            }
            Step::ReqInput(a, b) => format!("(call $req {})", slice(INPUT, "(global.get $in_len)", *a, *b)),
            Step::Call(k) => format!(
                "(i32.store (i32.const {}) (call $call (i32.const {REQUEST}) (global.get $req_len)))
                 (call $reply_read (i32.const {})) (global.set $req_len (i32.const 0))",
                SCRATCH + 4 * *k as u32,
                REPLIES + 4096 * *k as u32
            ),
            Step::Write(fd, t) => {
                let (o, n) = konst(t, &mut data);
                format!(
                    "(i32.store (i32.const 61000) (i32.const {o})) (i32.store (i32.const 61004) (i32.const {n}))
                     (drop (call $fd_write (i32.const {fd}) (i32.const 61000) (i32.const 1) (i32.const 61008)))"
                )
            }
            Step::SleepInputMs(a, b) => {
                format!("(call $sleep_ms (call $atoi {}))", slice(INPUT, "(global.get $in_len)", *a, *b))
            }
            Step::Trap => "(unreachable)".to_string(),
        });
    }
    format!(
        r#"(module
  (import "specfaas" "input_len" (func $input_len (result i32)))
  (import "specfaas" "input_read" (func $input_read (param i32)))
  (import "specfaas" "output" (func $output (param i32 i32)))
  (import "specfaas" "call" (func $call (param i32 i32) (result i32)))
  (import "specfaas" "reply_read" (func $reply_read (param i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $in_len (mut i32) (i32.const 0))
  (global $out_len (mut i32) (i32.const 0))
  (global $req_len (mut i32) (i32.const 0))
  {data}
  (func $out (param $p i32) (param $n i32)
    (memory.copy (i32.add (i32.const {OUTPUT}) (global.get $out_len)) (local.get $p) (local.get $n))
    (global.set $out_len (i32.add (global.get $out_len) (local.get $n))))
  (func $req (param $p i32) (param $n i32)
    (memory.copy (i32.add (i32.const {REQUEST}) (global.get $req_len)) (local.get $p) (local.get $n))
    (global.set $req_len (i32.add (global.get $req_len) (local.get $n))))
  (func $atoi (param $p i32) (param $n i32) (result i64) (local $v i64)
    (block $done (loop $next
      (br_if $done (i32.eqz (local.get $n)))
      (local.set $v (i64.add (i64.mul (local.get $v) (i64.const 10))
        (i64.extend_i32_u (i32.sub (i32.load8_u (local.get $p)) (i32.const 48)))))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br $next)))
    (local.get $v))
  (func $sleep_ms (param $ms i64)
    ;; one relative clock subscription at 62000 (48 bytes), one event at 62100, nevents at 62200
    (memory.fill (i32.const 62000) (i32.const 0) (i32.const 48))
    (i64.store (i32.const 62024) (i64.mul (local.get $ms) (i64.const 1000000)))
    (drop (call $poll_oneoff (i32.const 62000) (i32.const 62100) (i32.const 1) (i32.const 62200))))
  (func (export "main")
    (global.set $in_len (call $input_len))
    (call $input_read (i32.const {INPUT}))
    {body}
    (call $output (i32.const {OUTPUT}) (global.get $out_len))))"#,
        data = data.join("\n  "),
        body = body.join("\n    ")
    )
}

/// `ptr len` of a buffer at `base` of length `len` without its first `a` and last `b` bytes.
fn slice(base: u32, len: &str, a: usize, b: usize) -> String {
    format!("(i32.const {}) (i32.sub {len} (i32.const {}))", base + a as u32, a + b)
}

/// A wasm function from WAT text.
pub fn wasm_spec(name: &str, wat: &str, limits: Limits) -> FunctionSpec {
    let bytes = wat::parse_str(wat).unwrap_or_else(|e| panic!("fixture {name} is not valid WAT: {e}\n{wat}"));
    FunctionSpec::new(name, Kind::Wasm, Code::Wasm { bytes, main: "main".into() }, limits, Annotations::default())
        .unwrap()
}

struct WasmFixture;

impl Fixture for WasmFixture {
    fn runtime(&self) -> Arc<dyn Runtime> {
        wasm_runtime()
    }

    fn spec(&self, behaviour: Behaviour, limits: Limits) -> FunctionSpec {
        use Step::*;
        let steps = match behaviour {
            // {"n":1,"s":"é"} -> {"n":1,"s":"é","echoed":true}
            Behaviour::Echo => vec![OutInput(0, 1), Out(",\"echoed\":true}")],
            Behaviour::Logs => vec![Write(1, "out-line\n"), Write(2, "err-line\n"), Out("{}")],
            Behaviour::AppError => vec![Out("{\"error\":\"bad input\"}")],
            Behaviour::Throw => vec![Write(2, "boom\n"), Trap],
            // {"n":7}: put k = {"v":7}, get k, get nope, delete k.
            Behaviour::Kv => vec![
                Req("{\"call\":\"kv.put\",\"key\":\"k\",\"value\":{\"v\":"),
                ReqInput(5, 1),
                Req("}}"),
                Call(0),
                Req("{\"call\":\"kv.get\",\"key\":\"k\"}"),
                Call(1),
                Req("{\"call\":\"kv.get\",\"key\":\"nope\"}"),
                Call(2),
                Req("{\"call\":\"kv.delete\",\"key\":\"k\"}"),
                Call(3),
                // replies: {"ok":true,"value":V}
                Out("{\"got\":"),
                OutReply(1, 19, 1),
                Out(",\"missing\":"),
                OutReply(2, 19, 1),
                Out("}"),
            ],
            Behaviour::Invoke => vec![
                Req("{\"call\":\"invoke\",\"function\":\"callee\",\"args\":{\"x\":1}}"),
                Call(0),
                Req("{\"call\":\"invoke\",\"function\":\"failing\",\"args\":{}}"),
                Call(1),
                Out("{\"r\":"),
                OutReply(0, 19, 1),
                // {"error":E,"kind":"function","ok":false}
                Out(",\"caught\":"),
                OutReply(1, 9, 30),
                Out("}"),
            ],
            // {"ms":N} -> {"slept":N}
            Behaviour::Sleep => vec![SleepInputMs(6, 1), Out("{\"slept\":"), OutInput(6, 1), Out("}")],
        };
        wasm_spec(&format!("{behaviour:?}").to_lowercase(), &assemble(&steps), limits)
    }
}

runtime::runtime_conformance_tests!(WasmFixture);

async fn load_err(spec: FunctionSpec) -> String {
    match wasm_runtime().load(Arc::new(spec)).await {
        Ok(_) => panic!("the module loaded"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn a_module_that_is_not_wasm_is_refused_with_a_clear_error() {
    let code = Code::Wasm { bytes: b"print('hello')".to_vec(), main: "main".into() };
    let err = FunctionSpec::new("f", Kind::Wasm, code, Limits::default(), Annotations::default()).unwrap_err();
    assert!(err.to_string().contains("not a WebAssembly module"), "{err}");
    // The header is right but the rest is not.
    let mut bytes = b"\0asm\x01\0\0\0".to_vec();
    bytes.extend_from_slice(&[0xff; 16]);
    let spec = FunctionSpec::new(
        "broken",
        Kind::Wasm,
        Code::Wasm { bytes, main: "main".into() },
        Limits::default(),
        Annotations::default(),
    )
    .unwrap();
    let err = load_err(spec).await;
    assert!(err.contains("broken") && err.contains("not a valid module"), "{err}");
}

#[tokio::test]
async fn a_module_without_its_entry_or_memory_is_refused() {
    let err = load_err(wasm_spec(
        "noentry",
        r#"(module (memory (export "memory") 1) (func (export "other")))"#,
        Limits::default(),
    ))
    .await;
    assert!(err.contains("exports no function \"main\""), "{err}");
    let err = load_err(wasm_spec("nomemory", r#"(module (func (export "main")))"#, Limits::default())).await;
    assert!(err.contains("exports no memory"), "{err}");
    let err = load_err(wasm_spec(
        "sockets",
        r#"(module (import "wasi_snapshot_preview1" "sock_open" (func (param i32))) (memory (export "memory") 1) (func (export "main")))"#,
        Limits::default(),
    ))
    .await;
    assert!(err.contains("cannot link"), "a module asking for what the host does not give is refused: {err}");
}

#[tokio::test]
async fn a_module_over_the_size_limit_is_refused() {
    let rt = WasmRuntime::new(Options { module_bytes_max: 64, ..Options::default() }).unwrap();
    let spec = WasmFixture.spec(Behaviour::Echo, Limits::default());
    let err = match rt.load(Arc::new(spec)).await {
        Ok(_) => panic!("loaded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("over the limit of 64 bytes"), "{err}");
}

const LOOP: &str = r#"(module (memory (export "memory") 1) (func (export "main") (loop $l (br $l))))"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_is_stopped_by_the_deadline_and_the_host_stays_healthy() {
    let limits = Limits { timeout_ms: 200, ..Limits::default() };
    let warm = wasm_runtime().load(Arc::new(wasm_spec("spin", LOOP, limits))).await.unwrap();
    let started = Instant::now();
    let report = run(&*warm, json!({})).await;
    assert_eq!(report.outcome, Outcome::Timeout { timeout_ms: 200 });
    assert!(started.elapsed() < Duration::from_millis(200 + 1000), "took {:?}", started.elapsed());
    let echo = wasm_runtime().load(Arc::new(WasmFixture.spec(Behaviour::Echo, Limits::default()))).await.unwrap();
    assert_eq!(run(&*echo, json!({"a": 1})).await.outcome, Outcome::Success(json!({"a": 1, "echoed": true})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_stops_a_running_guest_at_once() {
    let warm = wasm_runtime().load(Arc::new(wasm_spec("spin2", LOOP, Limits::default()))).await.unwrap();
    let host = MockHost::default();
    let running = start(&*warm, activation(json!({})), &host);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let killed = Instant::now();
    running.kill();
    let report = tokio::time::timeout(Duration::from_secs(5), running.done).await.expect("kill hung").unwrap();
    assert_eq!(report.outcome, Outcome::Killed);
    assert!(killed.elapsed() < Duration::from_millis(500), "a spinning guest took {:?} to stop", killed.elapsed());
}

/// Activations run as tasks on the async runtime's workers: a guest that computes must give its worker back, or one
/// busy function would stall the platform. On a single worker, a timer and a kill still get through.
#[tokio::test(flavor = "current_thread")]
async fn a_computing_guest_shares_its_worker_and_still_dies_at_once() {
    let warm = wasm_runtime().load(Arc::new(wasm_spec("spin3", LOOP, Limits::default()))).await.unwrap();
    let host = MockHost::default();
    let running = start(&*warm, activation(json!({})), &host);
    let before = Instant::now();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(1)).await; // each needs the worker the guest is spinning on
    }
    assert!(before.elapsed() < Duration::from_secs(2), "20 sleeps of 1 ms took {:?}", before.elapsed());
    running.kill();
    let report = tokio::time::timeout(Duration::from_secs(5), running.done).await.expect("kill hung").unwrap();
    assert_eq!(report.outcome, Outcome::Killed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_traps_at_the_limit() {
    let bomb = r#"(module (memory (export "memory") 1)
      (func (export "main") (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))))"#;
    let limits = Limits { memory_mb: 128, ..Limits::default() };
    let warm = wasm_runtime().load(Arc::new(wasm_spec("bomb", bomb, limits))).await.unwrap();
    match run(&*warm, json!({})).await.outcome {
        Outcome::DeveloperError(m) => assert!(m.contains("memory limit of 128 MB"), "{m}"),
        other => panic!("expected a developer error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_recursion_traps_with_a_stack_overflow() {
    let deep = r#"(module (memory (export "memory") 1)
      (func $down (param i32) (result i32) (i32.add (call $down (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))
      (func (export "main") (drop (call $down (i32.const 0)))))"#;
    let warm = wasm_runtime().load(Arc::new(wasm_spec("deep", deep, Limits::default()))).await.unwrap();
    match run(&*warm, json!({})).await.outcome {
        Outcome::DeveloperError(m) => assert!(m.contains("stack"), "{m}"),
        other => panic!("expected a developer error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_is_a_developer_error_with_the_guests_last_words() {
    let warm = wasm_runtime().load(Arc::new(WasmFixture.spec(Behaviour::Throw, Limits::default()))).await.unwrap();
    match run(&*warm, json!({})).await.outcome {
        Outcome::DeveloperError(m) => assert!(m.contains("unreachable") && m.contains("boom"), "{m}"),
        other => panic!("expected a developer error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_and_randomness_are_the_same_for_the_same_input() {
    // Reads the wall clock and 16 random bytes, and returns them as the output's raw bytes in a JSON string of hex.
    let wat = r#"(module
      (import "specfaas" "output" (func $output (param i32 i32)))
      (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
      (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "{\"hex\":\"")
      (data (i32.const 100) "0123456789abcdef")
      (func (export "main") (local $i i32) (local $b i32)
        (drop (call $clock (i32.const 0) (i64.const 1) (i32.const 200)))
        (drop (call $random (i32.const 208) (i32.const 16)))
        (loop $l
          (local.set $b (i32.load8_u (i32.add (i32.const 200) (local.get $i))))
          (i32.store8 (i32.add (i32.const 8) (i32.mul (local.get $i) (i32.const 2)))
            (i32.load8_u (i32.add (i32.const 100) (i32.shr_u (local.get $b) (i32.const 4)))))
          (i32.store8 (i32.add (i32.const 9) (i32.mul (local.get $i) (i32.const 2)))
            (i32.load8_u (i32.add (i32.const 100) (i32.and (local.get $b) (i32.const 15)))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (i32.const 24))))
        (i32.store16 (i32.const 56) (i32.const 0x7d22)) ;; "}
        (call $output (i32.const 0) (i32.const 58))))"#;
    let warm = wasm_runtime().load(Arc::new(wasm_spec("dice", wat, Limits::default()))).await.unwrap();
    let a = run(&*warm, json!({"x": 1})).await.outcome;
    let b = run(&*warm, json!({"x": 1})).await.outcome;
    let c = run(&*warm, json!({"x": 2})).await.outcome;
    assert!(matches!(a, Outcome::Success(_)), "{a:?}");
    assert_eq!(a, b, "the same input sees the same clock and random bytes");
    assert_ne!(a, c, "another input gets another random stream");
    let Outcome::Success(v) = a else { unreachable!() };
    let hex = v["hex"].as_str().unwrap();
    let clock = u64::from_le_bytes(std::array::from_fn(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()));
    assert!(clock < 1_000_000_000, "the wall clock starts at the Unix epoch: {clock} ns");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_stops_a_guest_when_configured() {
    let rt = WasmRuntime::new(Options { fuel: Some(100_000), ..Options::default() }).unwrap();
    let warm = rt.load(Arc::new(wasm_spec("fuelled", LOOP, Limits::default()))).await.unwrap();
    match run(&*warm, json!({})).await.outcome {
        Outcome::DeveloperError(m) => assert!(m.contains("ran out of fuel"), "{m}"),
        other => panic!("expected a developer error, got {other:?}"),
    }
    // Enough fuel for a function that returns at once.
    let echo = rt.load(Arc::new(WasmFixture.spec(Behaviour::Echo, Limits::default()))).await.unwrap();
    assert_eq!(run(&*echo, json!({"a": 1})).await.outcome, Outcome::Success(json!({"a": 1, "echoed": true})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_modules_are_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let files = |p: &std::path::Path| -> usize {
        fn count(p: &std::path::Path) -> usize {
            std::fs::read_dir(p)
                .map_or(0, |d| d.flatten().map(|e| if e.path().is_dir() { count(&e.path()) } else { 1 }).sum())
        }
        count(p)
    };
    let rt = WasmRuntime::new(Options { cache_dir: Some(cache.clone()), ..Options::default() }).unwrap();
    rt.load(Arc::new(WasmFixture.spec(Behaviour::Echo, Limits::default()))).await.unwrap();
    assert!(files(&cache) > 0, "compiling a module writes it to the cache");
    // A relative directory (as `--data-dir` may give) works too.
    let relative = std::path::PathBuf::from(format!("target/wasm-cache-test-{}", std::process::id()));
    let rt = WasmRuntime::new(Options { cache_dir: Some(relative.clone()), ..Options::default() }).unwrap();
    rt.load(Arc::new(WasmFixture.spec(Behaviour::Echo, Limits::default()))).await.unwrap();
    assert!(files(&relative) > 0, "a relative cache directory is used");
    let _ = std::fs::remove_dir_all(&relative);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pointers_and_counts_from_a_guest_are_its_error_not_the_hosts() {
    // output() with a length past the end of memory; poll_oneoff with a huge count.
    let cases = [
        (
            r#"(module (import "specfaas" "output" (func $o (param i32 i32))) (memory (export "memory") 1)
            (func (export "main") (call $o (i32.const 0) (i32.const 2147483647))))"#,
            true,
        ),
        (
            r#"(module (import "wasi_snapshot_preview1" "poll_oneoff" (func $p (param i32 i32 i32 i32) (result i32)))
            (import "specfaas" "output" (func $o (param i32 i32))) (memory (export "memory") 1)
            (data (i32.const 0) "{}")
            (func (export "main") (drop (call $p (i32.const 0) (i32.const 0) (i32.const 2147483647) (i32.const 0)))
              (call $o (i32.const 0) (i32.const 2))))"#,
            false,
        ),
    ];
    for (i, (wat, fails)) in cases.into_iter().enumerate() {
        let warm = wasm_runtime().load(Arc::new(wasm_spec(&format!("bad{i}"), wat, Limits::default()))).await.unwrap();
        let outcome = run(&*warm, json!({})).await.outcome;
        if fails {
            assert!(matches!(&outcome, Outcome::DeveloperError(m) if m.contains("out of bounds")), "{outcome:?}");
        } else {
            assert_eq!(outcome, Outcome::Success(json!({})), "poll_oneoff answers EINVAL and the guest goes on");
        }
    }
}

/// A wasm guest keeps its sandbox whatever the process sandbox does: no preopened directory (so no file at all), no
/// environment, no socket (and so no DNS, which WASI preview 1 has no call for).
#[tokio::test]
async fn files_environment_and_sockets_stay_denied() {
    let wat = r#"(module
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $envsz (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_accept" (func $accept (param i32 i32 i32) (result i32)))
  (import "specfaas" "output" (func $out (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "{\"denied\":true}")
  (data (i32.const 200) "{\"denied\":false}")
  (data (i32.const 300) "etc/passwd")
  (func (export "main") (local $ok i32)
    (local.set $ok (i32.const 1))
    (if (i32.eqz (call $prestat (i32.const 3) (i32.const 0))) (then (local.set $ok (i32.const 0))))
    (drop (call $envsz (i32.const 16) (i32.const 20)))
    (if (i32.ne (i32.load (i32.const 16)) (i32.const 0)) (then (local.set $ok (i32.const 0))))
    (if (i32.eqz (call $open (i32.const 3) (i32.const 0) (i32.const 300) (i32.const 10) (i32.const 0)
                   (i64.const 2) (i64.const 2) (i32.const 0) (i32.const 24)))
      (then (local.set $ok (i32.const 0))))
    (if (i32.eqz (call $accept (i32.const 3) (i32.const 0) (i32.const 28))) (then (local.set $ok (i32.const 0))))
    (if (local.get $ok)
      (then (call $out (i32.const 100) (i32.const 15)))
      (else (call $out (i32.const 200) (i32.const 16))))))"#;
    let warm = wasm_runtime().load(Arc::new(wasm_spec("denied", wat, Limits::default()))).await.unwrap();
    let report = runtime::conformance::run(&*warm, json!({})).await;
    assert_eq!(report.outcome, Outcome::Success(json!({"denied": true})), "{report:?}");
}
