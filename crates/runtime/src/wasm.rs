//! WebAssembly functions on wasmtime: WASI preview 1 core modules that can only do what the host gives them.
//!
//! **The guest.** A module exports its entry point (the function's `main`, or `_start` for a WASI command) and
//! imports, from module `specfaas`:
//!
//! | import | what it does |
//! |---|---|
//! | `input_len() -> i32` | length of the activation's JSON input |
//! | `input_read(ptr: i32)` | copies the input to `ptr` |
//! | `output(ptr: i32, len: i32)` | sets the JSON result (an object; `{"error": ...}` is an application error) |
//! | `call(ptr: i32, len: i32) -> i32` | a platform call, as JSON (`{"call": "kv.get", "key": ...}`, `kv.put`, `kv.delete`, `invoke`, `http`); blocks; returns the length of the reply |
//! | `reply_read(ptr: i32)` | copies the last reply: `{"ok": true, "value": ...}` or `{"ok": false, "error": ..., "kind": "function"?}` |
//!
//! The `specfaas` guest crate wraps these (`crates/guest`). Calls go to the platform's [`Host`] like every other
//! runtime's, so storage goes through the engine's data buffer and HTTP waits until the function is
//! non-speculative.
//!
//! **What the guest does not get.** WASI is present but empty: no preopened directories, no sockets, no
//! environment, no arguments. The clocks and the random stream are the host's, per activation and
//! deterministic: the wall clock starts at the Unix epoch and the monotonic clock at zero, each read advancing
//! them by one microsecond, and random bytes come from a stream determined by the function's version and input.
//! So one input always gives one output, and memoization and re-execution stay sound (RELIABILITY.md §1.4).
//! stdout and stderr become the activation's logs.
//!
//! **Activations.** A module is compiled once at load (cached on disk by wasmtime's cache, when configured) and
//! pre-linked ([`InstancePre`]); each activation gets a fresh instance from the pooling allocator, whose linear
//! memories are copy-on-write images of the module's data.
//!
//! **Where an activation runs.** On the async runtime's workers, as a task, through wasmtime's async API: the guest
//! runs on a fiber, a platform call or a sleep suspends it (the worker serves other tasks meanwhile), and a guest
//! that computes yields to the scheduler at every epoch tick (1 ms). So a hand-off costs no thread switch: the
//! platform launches the next function as a task on the worker that received the last report. A compute-bound
//! guest shares the workers in 1 ms slices with the platform's own tasks.
//!
//! **Limits and squash.** Epoch interruption: a ticker advances the engine's epoch every millisecond while a guest
//! runs (every 10 ms otherwise), and each store's epoch callback checks its deadline (the timeout) and its kill
//! flag. A kill sets the flag and advances the epoch at once, so a running guest stops at its next loop back-edge
//! or call; a guest suspended in the host (a platform call, a sleep, or its yield) is dropped at once, which
//! unwinds its fiber. Memory grows trap at the function's `memory_mb`; the wasm stack is bounded; fuel is optional.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use model::{Code, FunctionSpec, Kind};
use serde_json::{Value, json};
use wasmtime::{
    Caller, Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module, PoolingAllocationConfig, Store,
    StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtxBuilder};

use crate::{Activation, BoxFuture, Call, Done, Error, Host, HostRequest, Killer, LogSink, Outcome, Reply};
use crate::{Report, Runtime, Warm};

/// How the wasm runtime is set up; every field has a documented default.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where compiled modules are cached across restarts; `None` compiles on every load.
    pub cache_dir: Option<PathBuf>,
    /// Fuel per activation (roughly, wasm instructions); `None` runs without fuel accounting (faster).
    pub fuel: Option<u64>,
    /// Bytes of native stack wasm may use; deeper recursion traps (default 512 KiB).
    pub stack_bytes: usize,
    /// Instances that may exist at once, across all wasm functions (default 1000).
    pub instances_max: u32,
    /// The largest linear memory any function may have, whatever its `memory_mb` (default 2 GiB, the largest
    /// `memory_mb` allows; the pool reserves address space, not memory, for it).
    pub memory_bytes_max: u64,
    /// The largest module accepted, in bytes (default 50 MiB, about OpenWhisk's action size limit).
    pub module_bytes_max: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cache_dir: None,
            fuel: None,
            stack_bytes: 512 * 1024,
            instances_max: 1000,
            memory_bytes_max: 2 << 30,
            module_bytes_max: 50 << 20,
        }
    }
}

/// How often the epoch advances while a guest runs: the resolution of timeouts, and a computing guest's slice.
const TICK: Duration = Duration::from_millis(1);

/// How often it advances while none runs, so that an idle platform (or one running only short guests, between
/// them) is not woken a thousand times a second. A guest that starts meanwhile gets its first tick (its first
/// deadline check and yield) up to this late; a kill does not wait for ticks.
const IDLE_TICK: Duration = Duration::from_millis(10);

/// The wasm runtime. Its engine (and the pool's address-space reservation, and the epoch ticker) starts with the
/// first wasm function loaded, so a platform that runs none pays nothing.
pub struct WasmRuntime {
    options: Options,
    started: std::sync::OnceLock<Result<Started, String>>,
}

struct Started {
    engine: Engine,
    linker: Arc<Linker<State>>,
    /// Guests running now (the ticker's pace), and the ticker's life: it stops when the runtime goes.
    running: Arc<AtomicU64>,
}

/// Why a guest was stopped by its epoch callback.
#[derive(Debug)]
enum Stopped {
    Killed,
    Timeout,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for Stopped {}

/// Per-activation state of a store.
struct State {
    /// WASI, built on the guest's first WASI call ([`State::wasi`]): building it costs about 10 µs, and a guest that
    /// neither prints nor reads the clock or random bytes never pays it.
    wasi: Option<WasiP1Ctx>,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    /// What seeds the random stream: the function's version and the activation's input.
    seed: (Arc<FunctionSpec>, Value),
    limits: StoreLimits,
    input: Vec<u8>,
    output: Option<Vec<u8>>,
    reply: Vec<u8>,
    host: Host,
    kill: Arc<Kill>,
    deadline: Instant,
    /// The activation's virtual clock, in nanoseconds; sleeping advances it.
    clock: Arc<AtomicU64>,
}

impl State {
    /// The activation's WASI context: stdout and stderr into the logs, the step clock, the deterministic random
    /// stream; nothing else.
    fn wasi(&mut self) -> &mut WasiP1Ctx {
        self.wasi.get_or_insert_with(|| {
            let stream = random_stream(&self.seed.0.version, &self.seed.1);
            let random = || wasmtime_wasi::Deterministic::new(stream.clone());
            WasiCtxBuilder::new()
                .stdout(self.stdout.clone())
                .stderr(self.stderr.clone())
                .wall_clock(StepClock(self.clock.clone()))
                .monotonic_clock(StepClock(self.clock.clone()))
                .secure_random(random())
                .insecure_random(random())
                .insecure_random_seed(0)
                .build_p1()
        })
    }
}

/// An activation's kill switch: a flag the epoch callback checks while the guest runs, and a notification for a
/// guest suspended in the host.
#[derive(Default)]
struct Kill {
    killed: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Kill {
    fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    fn killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// Awaits `what`, unless the activation is killed or its deadline passes first (then `what` is dropped).
    async fn unless_stopped<F: Future>(&self, what: F, deadline: Instant) -> Result<F::Output, Stopped> {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable(); // registered before the flag is read: a kill in between is not missed
        if self.killed() {
            return Err(Stopped::Killed);
        }
        tokio::select! {
            biased;
            _ = notified => Err(Stopped::Killed),
            _ = tokio::time::sleep_until(deadline.into()) => Err(Stopped::Timeout),
            out = what => Ok(out),
        }
    }
}

impl WasmRuntime {
    pub fn new(options: Options) -> Result<WasmRuntime, Error> {
        Ok(WasmRuntime { options, started: std::sync::OnceLock::new() })
    }

    fn started(&self) -> Result<&Started, Error> {
        self.started
            .get_or_init(|| Started::new(&self.options).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Error::Io(e.clone()))
    }
}

impl Started {
    fn new(options: &Options) -> Result<Started, Error> {
        let io = |e: wasmtime::Error| Error::Io(format!("wasm runtime: {e}"));
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .max_wasm_stack(options.stack_bytes)
            .memory_init_cow(true)
            // No wasm backtrace on traps: collecting one cost about 20 µs per trap, and every squash is a trap. A
            // guest's error still names the trap and its last stderr line (a Rust panic message).
            .wasm_backtrace_max_frames(None);
        if options.fuel.is_some() {
            config.consume_fuel(true);
        }
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(options.instances_max)
            .total_stacks(options.instances_max)
            .total_memories(options.instances_max)
            .total_tables(options.instances_max)
            .max_memory_size(options.memory_bytes_max as usize)
            // Reset the first pages of a returned instance by memset, not madvise: no syscall and no TLB
            // shootdown per activation for small guests.
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(1 << 16);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if let Some(dir) = &options.cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| Error::Io(format!("{}: {e}", dir.display())))?;
            // wasmtime's cache wants an absolute path; a relative data directory (`--data-dir x`) is fine for users.
            let dir = std::path::absolute(dir).map_err(|e| Error::Io(format!("{}: {e}", dir.display())))?;
            let mut cache = wasmtime::CacheConfig::new();
            cache.with_directory(dir);
            config.cache(Some(wasmtime::Cache::new(cache).map_err(io)?));
        }
        let engine = Engine::new(&config).map_err(io)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, State::wasi).map_err(io)?;
        add_specfaas(&mut linker).map_err(io)?;
        let running = Arc::new(AtomicU64::new(0));
        let (ticking, alive) = (engine.clone(), Arc::downgrade(&running));
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || tick(ticking, alive))
            .map_err(|e| Error::Io(format!("cannot start the epoch ticker: {e}")))?;
        Ok(Started { engine, linker: Arc::new(linker), running })
    }
}

fn tick(engine: Engine, running: Weak<AtomicU64>) {
    while let Some(running) = running.upgrade() {
        let busy = running.load(Ordering::Relaxed) > 0;
        drop(running);
        std::thread::sleep(if busy { TICK } else { IDLE_TICK });
        engine.increment_epoch();
    }
}

/// Counts a guest as running while it lives.
struct Running(Arc<AtomicU64>);

impl Running {
    fn new(count: &Arc<AtomicU64>) -> Running {
        count.fetch_add(1, Ordering::Relaxed);
        Running(count.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads `len` bytes of the guest's memory at `ptr`.
fn read_guest(caller: &mut Caller<'_, State>, ptr: i32, len: i32) -> wasmtime::Result<Vec<u8>> {
    let memory = caller
        .get_export("memory")
        .and_then(|e| e.into_memory())
        .ok_or_else(|| wasmtime::Error::msg("the module exports no memory"))?;
    let (start, len) = (ptr as u32 as usize, len.max(0) as usize);
    if start.saturating_add(len) > memory.data_size(&caller) {
        return Err(wasmtime::Error::msg("a pointer passed to the host is out of bounds")); // checked before allocating
    }
    let mut bytes = vec![0u8; len];
    memory.read(&caller, start, &mut bytes).map_err(|_| wasmtime::Error::msg("out of bounds"))?;
    Ok(bytes)
}

fn write_guest(caller: &mut Caller<'_, State>, ptr: i32, bytes: &[u8]) -> wasmtime::Result<()> {
    let memory = caller
        .get_export("memory")
        .and_then(|e| e.into_memory())
        .ok_or_else(|| wasmtime::Error::msg("the module exports no memory"))?;
    memory.write(caller, ptr as u32 as usize, bytes).map_err(|_| wasmtime::Error::msg("out of bounds"))
}

/// The `specfaas` imports.
fn add_specfaas(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    linker.func_wrap("specfaas", "input_len", |caller: Caller<'_, State>| caller.data().input.len() as i32)?;
    linker.func_wrap("specfaas", "input_read", |mut caller: Caller<'_, State>, ptr: i32| {
        let input = std::mem::take(&mut caller.data_mut().input);
        let written = write_guest(&mut caller, ptr, &input);
        caller.data_mut().input = input;
        written
    })?;
    linker.func_wrap("specfaas", "output", |mut caller: Caller<'_, State>, ptr: i32, len: i32| {
        let bytes = read_guest(&mut caller, ptr, len)?;
        caller.data_mut().output = Some(bytes);
        Ok(())
    })?;
    linker.func_wrap_async("specfaas", "call", |mut caller: Caller<'_, State>, (ptr, len): (i32, i32)| {
        Box::new(async move {
            let request = read_guest(&mut caller, ptr, len)?;
            let parsed = serde_json::from_slice::<Value>(&request).map_err(|e| e.to_string()).and_then(to_host_call);
            let reply = match parsed {
                Ok(call) => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let reply: crate::ReplyTo = Box::new(move |r| {
                        let _ = tx.send(r);
                    });
                    (caller.data().host)(HostRequest { call, reply });
                    // The guest is suspended until the platform answers (a kill or the deadline ends the activation
                    // meanwhile: see `Job::run`).
                    match rx.await {
                        Ok(reply) => reply,
                        Err(_) => Reply::Refused("the platform dropped the call unanswered".into()),
                    }
                }
                Err(message) => Reply::Refused(message),
            };
            let reply = match reply {
                Reply::Ok(value) => json!({"ok": true, "value": value}),
                Reply::Refused(error) => json!({"ok": false, "error": error}),
                Reply::FunctionFailed(error) => json!({"ok": false, "error": error, "kind": "function"}),
            };
            let bytes = serde_json::to_vec(&reply).expect("JSON serializes");
            let n = bytes.len() as i32;
            caller.data_mut().reply = bytes;
            Ok(n)
        })
    })?;
    linker.func_wrap("specfaas", "reply_read", |mut caller: Caller<'_, State>, ptr: i32| {
        let reply = std::mem::take(&mut caller.data_mut().reply);
        let written = write_guest(&mut caller, ptr, &reply);
        caller.data_mut().reply = reply;
        written
    })?;
    // WASI's poll_oneoff, replaced: the guest has no files or sockets to wait on, only time, and its sleep must end
    // at once on a kill or at the deadline (a host call cannot be interrupted by the epoch).
    linker.allow_shadowing(true);
    linker.func_wrap_async(
        "wasi_snapshot_preview1",
        "poll_oneoff",
        |caller: Caller<'_, State>, (subs, events, n, nevents): (i32, i32, i32, i32)| {
            Box::new(poll_oneoff(caller, subs, events, n, nevents))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// `poll_oneoff(subscriptions, events, n, nevents_out) -> errno`: clock subscriptions sleep (interruptibly) until
/// the earliest one is due and advance the activation's clock; descriptor subscriptions are ready at once.
async fn poll_oneoff(
    mut caller: Caller<'_, State>,
    subs: i32,
    events: i32,
    n: i32,
    nevents: i32,
) -> wasmtime::Result<i32> {
    const SUB: usize = 48;
    const EVENT: usize = 32;
    // A guest may pass anything: a count out of range is an error to it (EINVAL), never a panic of the host.
    if !(1..=1024).contains(&n) {
        return Ok(28);
    }
    let n = n as usize;
    let bytes = read_guest(&mut caller, subs, (n * SUB) as i32)?;
    let now = caller.data().clock.load(Ordering::Relaxed);
    let mut clocks = Vec::new(); // (userdata, due in ns from now)
    let mut ready = Vec::new(); // (userdata, type)
    for i in 0..n {
        let s = &bytes[i * SUB..(i + 1) * SUB];
        let userdata = u64::from_le_bytes(s[0..8].try_into().expect("8 bytes"));
        match s[8] {
            0 => {
                let timeout = u64::from_le_bytes(s[24..32].try_into().expect("8 bytes"));
                let absolute = u16::from_le_bytes(s[40..42].try_into().expect("2 bytes")) & 1 == 1;
                clocks.push((userdata, if absolute { timeout.saturating_sub(now) } else { timeout }));
            }
            kind => ready.push((userdata, kind)),
        }
    }
    if ready.is_empty() {
        let Some(&(_, wait)) = clocks.iter().min_by_key(|(_, due)| *due) else { return Ok(28) };
        // The guest is suspended while it sleeps; a kill or the deadline ends the activation meanwhile.
        tokio::time::sleep_until((Instant::now() + Duration::from_nanos(wait)).into()).await;
        caller.data().clock.fetch_add(wait, Ordering::Relaxed);
        ready.extend(clocks.iter().filter(|(_, due)| *due <= wait).map(|(u, _)| (*u, 0u8)));
    }
    let mut out = vec![0u8; ready.len() * EVENT];
    for (i, (userdata, kind)) in ready.iter().enumerate() {
        out[i * EVENT..i * EVENT + 8].copy_from_slice(&userdata.to_le_bytes());
        out[i * EVENT + 10] = *kind;
    }
    write_guest(&mut caller, events, &out)?;
    write_guest(&mut caller, nevents, &(ready.len() as u32).to_le_bytes())?;
    Ok(0)
}

fn to_host_call(request: Value) -> Result<Call, String> {
    let key = || request["key"].as_str().map(str::to_string).ok_or_else(|| "the call needs a string key".to_string());
    Ok(match request["call"].as_str().unwrap_or_default() {
        "kv.get" => Call::Get { key: key()? },
        "kv.put" => Call::Put { key: key()?, value: request["value"].clone() },
        "kv.delete" => Call::Delete { key: key()? },
        "invoke" => Call::Invoke {
            function: request["function"].as_str().ok_or("invoke needs a function name")?.to_string(),
            args: if request["args"].is_null() { json!({}) } else { request["args"].clone() },
        },
        "http" => Call::Http { request: request["request"].clone() },
        other => return Err(format!("unknown platform call \"{other}\"")),
    })
}

/// The activation's clock: it starts at zero (the Unix epoch, for the wall clock), advances one microsecond per
/// read, and by the time slept: time without nondeterminism.
struct StepClock(Arc<AtomicU64>);

impl HostWallClock for StepClock {
    fn resolution(&self) -> Duration {
        Duration::from_micros(1)
    }
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.fetch_add(1_000, Ordering::Relaxed))
    }
}

impl HostMonotonicClock for StepClock {
    fn resolution(&self) -> u64 {
        1_000
    }
    fn now(&self) -> u64 {
        self.0.fetch_add(1_000, Ordering::Relaxed)
    }
}

impl Runtime for WasmRuntime {
    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Wasm]
    }

    fn load(&self, spec: Arc<FunctionSpec>) -> BoxFuture<'_, Result<Arc<dyn Warm>, Error>> {
        Box::pin(async move {
            let Code::Wasm { bytes, main } = &spec.code else {
                return Err(Error::WrongKind {
                    runtime: "wasm",
                    function: spec.name.clone(),
                    kind: spec.kind.as_openwhisk(),
                });
            };
            let fail = |message: String| Error::Init { function: spec.name.clone(), message };
            if bytes.len() > self.options.module_bytes_max {
                return Err(fail(format!(
                    "the module is {} bytes, over the limit of {} bytes",
                    bytes.len(),
                    self.options.module_bytes_max
                )));
            }
            let started = self.started()?;
            let (engine, linker, bytes) = (started.engine.clone(), started.linker.clone(), bytes.clone());
            // Compiling takes milliseconds to seconds: off the async workers.
            let compiled = tokio::task::spawn_blocking(move || -> Result<(Module, InstancePre<State>), String> {
                let module = Module::new(&engine, &bytes).map_err(|e| format!("not a valid module: {e:#}"))?;
                let pre = linker.instantiate_pre(&module).map_err(|e| format!("cannot link the module: {e:#}"))?;
                Ok((module, pre))
            })
            .await
            .map_err(|e| Error::Io(e.to_string()))?
            .map_err(fail)?;
            let (module, pre) = compiled;
            let entry = [main.as_str(), "_start"]
                .into_iter()
                .find(|name| {
                    module.get_export(name).and_then(|e| e.func().cloned()).is_some_and(|f| f.params().len() == 0)
                })
                .ok_or_else(|| {
                    fail(format!("the module exports no function \"{main}\" (or \"_start\") taking no arguments"))
                })?
                .to_string();
            if module.get_export("memory").and_then(|e| e.memory().cloned()).is_none() {
                return Err(fail("the module exports no memory named \"memory\"".into()));
            }
            let warm = WasmWarm {
                spec: spec.clone(),
                engine: started.engine.clone(),
                pre,
                entry,
                fuel: self.options.fuel,
                running: started.running.clone(),
            };
            Ok(Arc::new(warm) as Arc<dyn Warm>)
        })
    }
}

struct WasmWarm {
    spec: Arc<FunctionSpec>,
    engine: Engine,
    pre: InstancePre<State>,
    entry: String,
    fuel: Option<u64>,
    running: Arc<AtomicU64>,
}

impl Warm for WasmWarm {
    fn spec(&self) -> &FunctionSpec {
        &self.spec
    }

    fn start(&self, activation: Activation, host: Host, done: Done) -> Killer {
        let kill = Arc::new(Kill::default());
        let killer = {
            let (kill, engine) = (kill.clone(), self.engine.clone());
            Killer::new(move || {
                kill.kill(); // a guest suspended in the host, in a sleep or in its yield is dropped
                engine.increment_epoch(); // a running guest checks its flag at its next back-edge or call
            })
        };
        let job = Job {
            spec: self.spec.clone(),
            engine: self.engine.clone(),
            pre: self.pre.clone(),
            entry: self.entry.clone(),
            fuel: self.fuel,
        };
        let done = Deliver(Some(done));
        // A task on this worker: it runs as soon as the caller (the platform's driver) yields, with no thread switch.
        let running = Running::new(&self.running);
        tokio::spawn(async move {
            let _running = running;
            let (report, store) = job.run(activation, host, kill).await;
            done.deliver(report);
            drop(store); // returning the instance to the pool resets its memory: after the report, not before
        });
        killer
    }
}

/// Delivers an activation's report exactly once: if the task ends without one (a bug in a host function panicked,
/// or the async runtime shut down), dropping this delivers a failure.
struct Deliver(Option<Done>);

impl Deliver {
    fn deliver(mut self, report: Report) {
        if let Some(done) = self.0.take() {
            done(report);
        }
    }
}

impl Drop for Deliver {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            let outcome = Outcome::DeveloperError("The wasm runtime failed on this activation.".into());
            done(Report { outcome, logs: Vec::new(), cpu_us: None, held: Vec::new() });
        }
    }
}

struct Job {
    spec: Arc<FunctionSpec>,
    engine: Engine,
    pre: InstancePre<State>,
    entry: String,
    fuel: Option<u64>,
}

impl Job {
    /// Runs the activation; returns its report and the store, to be dropped once the report is delivered.
    async fn run(self, activation: Activation, host: Host, kill: Arc<Kill>) -> (Report, Option<Store<State>>) {
        let limits = self.spec.limits;
        let finish =
            |outcome, logs: LogSink| Report { outcome, logs: logs.into_lines(), cpu_us: None, held: Vec::new() };
        let mut logs = LogSink::new(limits.logs_bytes_max);
        if kill.killed() {
            return (finish(Outcome::Killed, logs), None);
        }
        let stdout = MemoryOutputPipe::new(limits.logs_bytes_max as usize + 1);
        let stderr = MemoryOutputPipe::new(limits.logs_bytes_max as usize + 1);
        let state = State {
            wasi: None,
            stdout: stdout.clone(),
            stderr: stderr.clone(),
            limits: StoreLimitsBuilder::new()
                .memory_size((limits.memory_mb as usize).saturating_mul(1 << 20))
                .trap_on_grow_failure(true)
                .build(),
            input: serde_json::to_vec(&activation.input).expect("JSON serializes"),
            seed: (self.spec.clone(), activation.input),
            output: None,
            reply: Vec::new(),
            host,
            kill: kill.clone(),
            deadline: Instant::now() + Duration::from_millis(limits.timeout_ms),
            clock: Arc::new(AtomicU64::new(0)),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            let s = ctx.data();
            if s.kill.killed() {
                return Err(wasmtime::Error::new(Stopped::Killed));
            }
            if Instant::now() >= s.deadline {
                return Err(wasmtime::Error::new(Stopped::Timeout));
            }
            // A guest that computes gives the worker back to the scheduler once per tick. wasmtime sets the next
            // deadline after the yield, from the epoch then: a kill that lands during the yield must not resume the
            // guest (it would run to the next tick), so the yield then never ends and `Job::run` drops the guest.
            let kill = s.kill.clone();
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(async move {
                    tokio::task::yield_now().await;
                    if kill.killed() {
                        std::future::pending::<()>().await;
                    }
                }),
            ))
        });
        if let Some(fuel) = self.fuel {
            let _ = store.set_fuel(fuel);
        }
        let deadline = store.data().deadline;
        let run = async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            let entry = instance.get_typed_func::<(), ()>(&mut store, &self.entry)?;
            entry.call_async(&mut store, ()).await
        };
        // A running guest meets its kill or deadline in the epoch callback; a suspended one (in a platform call, a
        // sleep, or yielding its slice) here: the guest's future is dropped, which unwinds its fiber.
        let result =
            kill.unless_stopped(run, deadline).await.unwrap_or_else(|stopped| Err(wasmtime::Error::new(stopped)));
        let mut last_err = String::new();
        for (stream, pipe) in [("stdout", &stdout), ("stderr", &stderr)] {
            let text = pipe.contents();
            for line in String::from_utf8_lossy(&text).lines() {
                logs.push(stream, line);
                if stream == "stderr" && !line.trim().is_empty() {
                    last_err = line.trim().to_string();
                }
            }
        }
        let outcome = match result {
            Ok(()) => output_outcome(store.data_mut().output.take()),
            Err(e) => match self.error_outcome(e, &kill, &mut store) {
                // A Rust guest prints its panic message, then traps: the message says what went wrong.
                Outcome::DeveloperError(m) if !last_err.is_empty() => {
                    Outcome::DeveloperError(format!("{m} Last stderr line: {last_err}"))
                }
                other => other,
            },
        };
        (finish(outcome, logs), Some(store))
    }

    fn error_outcome(&self, e: wasmtime::Error, kill: &Kill, store: &mut Store<State>) -> Outcome {
        if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            // A WASI command that calls exit(0) after setting its output finished normally.
            return match exit.0 {
                0 => output_outcome(store.data_mut().output.take()),
                code => Outcome::DeveloperError(format!("The action exited with code {code}.")),
            };
        }
        match e.downcast_ref::<Stopped>() {
            Some(Stopped::Killed) => return Outcome::Killed,
            Some(Stopped::Timeout) => return Outcome::Timeout { timeout_ms: self.spec.limits.timeout_ms },
            None => {}
        }
        if kill.killed() {
            return Outcome::Killed;
        }
        let memory_mb = self.spec.limits.memory_mb;
        Outcome::DeveloperError(match e.downcast_ref::<Trap>() {
            Some(Trap::StackOverflow) => "The action exhausted its stack (too deep a recursion).".to_string(),
            Some(Trap::OutOfFuel) => "The action ran out of fuel.".to_string(),
            Some(trap) => format!("The action trapped: {trap}."),
            None if format!("{e:?}").contains("growing memory") => {
                format!("The action exceeded its memory limit of {memory_mb} MB.")
            }
            None => format!("The action failed: {e:#}"),
        })
    }
}

/// 4 KiB of random-looking bytes determined by the function's version and input: a SHA-256 of both seeds a
/// splitmix64 generator (fast; deterministic by design, so not a source of secrets). The guest's random stream
/// cycles through them.
fn random_stream(version: &str, input: &Value) -> Vec<u8> {
    use sha2::Digest;
    let digest = sha2::Sha256::new().chain_update(version.as_bytes()).chain_update(model::json::canonical(input));
    let mut state = u64::from_le_bytes(digest.finalize()[..8].try_into().expect("8 bytes"));
    (0..512)
        .flat_map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)).to_le_bytes()
        })
        .collect()
}

/// The outcome of a guest that returned: its output, classified the OpenWhisk way.
fn output_outcome(output: Option<Vec<u8>>) -> Outcome {
    match output {
        None => Outcome::DeveloperError("The action did not set an output.".into()),
        Some(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(value) => Outcome::from_returned(value),
            Err(e) => Outcome::DeveloperError(format!("The action's output is not JSON: {e}.")),
        },
    }
}
