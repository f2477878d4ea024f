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
//! memories are copy-on-write images of the module's data. An activation runs on a blocking thread, as its host
//! calls block.
//!
//! **Limits and squash.** Epoch interruption: a ticker advances the engine's epoch every millisecond, and each
//! store's epoch callback checks its deadline (the timeout) and its kill flag. A kill sets the flag and advances
//! the epoch at once, so a running guest stops at its next loop back-edge or call; a guest blocked in the host (a
//! platform call, or a sleep: `poll_oneoff` is the host's, interruptible) wakes at once. Memory grows trap at the
//! function's `memory_mb`; the wasm stack is bounded; fuel is optional.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
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

use crate::{Activation, BoxFuture, Done, Error, Host, HostCall, HostReply, HostRequest, Killer, LogSink, Outcome};
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

/// How often the epoch advances: the resolution of timeouts.
const TICK: Duration = Duration::from_millis(1);

/// The wasm runtime. Its engine (and the pool's address-space reservation, and the epoch ticker) starts with the
/// first wasm function loaded, so a platform that runs none pays nothing.
pub struct WasmRuntime {
    options: Options,
    started: std::sync::OnceLock<Result<Started, String>>,
}

struct Started {
    engine: Engine,
    linker: Arc<Linker<State>>,
    /// Stops the ticker when the runtime goes.
    _ticker: Arc<()>,
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
    wasi: WasiP1Ctx,
    limits: StoreLimits,
    input: Vec<u8>,
    output: Option<Vec<u8>>,
    reply: Vec<u8>,
    host: Host,
    wake: Arc<Wake>,
    deadline: Instant,
    /// The activation's virtual clock, in nanoseconds; sleeping advances it.
    clock: Arc<AtomicU64>,
}

/// What a guest blocked in the host (waiting for a reply, or sleeping) waits on: a reply, a kill, or its deadline.
#[derive(Default)]
struct Wake {
    killed: AtomicBool,
    reply: Mutex<Option<HostReply>>,
    cv: Condvar,
}

impl Wake {
    fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        let _held = self.reply.lock().unwrap_or_else(|e| e.into_inner());
        self.cv.notify_all();
    }

    fn killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    fn deliver(&self, reply: HostReply) {
        *self.reply.lock().unwrap_or_else(|e| e.into_inner()) = Some(reply);
        self.cv.notify_all();
    }

    /// Blocks until `until` (a reply when `want_reply`), a kill or the deadline, whichever is first.
    fn wait(&self, want_reply: bool, until: Instant, deadline: Instant) -> Result<Option<HostReply>, Stopped> {
        let mut slot = self.reply.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.killed() {
                return Err(Stopped::Killed);
            }
            if want_reply && let Some(reply) = slot.take() {
                return Ok(Some(reply));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Stopped::Timeout);
            }
            if !want_reply && now >= until {
                return Ok(None);
            }
            let wake_at = if want_reply { deadline } else { until.min(deadline) };
            slot = self.cv.wait_timeout(slot, wake_at - now).unwrap_or_else(|e| e.into_inner()).0;
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
        config.epoch_interruption(true).max_wasm_stack(options.stack_bytes).memory_init_cow(true);
        if options.fuel.is_some() {
            config.consume_fuel(true);
        }
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(options.instances_max)
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
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut State| &mut s.wasi).map_err(io)?;
        add_specfaas(&mut linker).map_err(io)?;
        let ticker = Arc::new(());
        let alive = Arc::downgrade(&ticker);
        let ticking = engine.clone();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || tick(ticking, alive))
            .map_err(|e| Error::Io(format!("cannot start the epoch ticker: {e}")))?;
        Ok(Started { engine, linker: Arc::new(linker), _ticker: ticker })
    }
}

fn tick(engine: Engine, alive: Weak<()>) {
    while alive.upgrade().is_some() {
        std::thread::sleep(TICK);
        engine.increment_epoch();
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
    linker.func_wrap("specfaas", "call", |mut caller: Caller<'_, State>, ptr: i32, len: i32| {
        let request = read_guest(&mut caller, ptr, len)?;
        let reply = match serde_json::from_slice::<Value>(&request).map_err(|e| e.to_string()).and_then(to_host_call) {
            Ok(call) => {
                let wake = caller.data().wake.clone();
                let deliver = wake.clone();
                (caller.data().host)(HostRequest { call, reply: Box::new(move |r| deliver.deliver(r)) });
                // The platform answers from another thread; a kill or the deadline ends the wait first.
                let deadline = caller.data().deadline;
                match wake.wait(true, deadline, deadline) {
                    Ok(Some(reply)) => reply,
                    Ok(None) => unreachable!("a reply wait ends with a reply or a stop"),
                    Err(stopped) => return Err(wasmtime::Error::new(stopped)),
                }
            }
            Err(message) => HostReply::Refused(message),
        };
        let reply = match reply {
            HostReply::Ok(value) => json!({"ok": true, "value": value}),
            HostReply::Refused(error) => json!({"ok": false, "error": error}),
            HostReply::FunctionFailed(error) => json!({"ok": false, "error": error, "kind": "function"}),
        };
        let bytes = serde_json::to_vec(&reply).expect("JSON serializes");
        let n = bytes.len() as i32;
        caller.data_mut().reply = bytes;
        Ok(n)
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
    linker.func_wrap("wasi_snapshot_preview1", "poll_oneoff", poll_oneoff)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// `poll_oneoff(subscriptions, events, n, nevents_out) -> errno`: clock subscriptions sleep (interruptibly) until
/// the earliest one is due and advance the activation's clock; descriptor subscriptions are ready at once.
fn poll_oneoff(mut caller: Caller<'_, State>, subs: i32, events: i32, n: i32, nevents: i32) -> wasmtime::Result<i32> {
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
        let (wake, deadline) = (caller.data().wake.clone(), caller.data().deadline);
        let until = Instant::now() + Duration::from_nanos(wait);
        if let Err(stopped) = wake.wait(false, until, deadline) {
            return Err(wasmtime::Error::new(stopped));
        }
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

fn to_host_call(request: Value) -> Result<HostCall, String> {
    let key = || request["key"].as_str().map(str::to_string).ok_or_else(|| "the call needs a string key".to_string());
    Ok(match request["call"].as_str().unwrap_or_default() {
        "kv.get" => HostCall::KvGet { key: key()? },
        "kv.put" => HostCall::KvPut { key: key()?, value: request["value"].clone() },
        "kv.delete" => HostCall::KvDelete { key: key()? },
        "invoke" => HostCall::Invoke {
            function: request["function"].as_str().ok_or("invoke needs a function name")?.to_string(),
            args: if request["args"].is_null() { json!({}) } else { request["args"].clone() },
        },
        "http" => HostCall::Http { request: request["request"].clone() },
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
            let warm =
                WasmWarm { spec: spec.clone(), engine: started.engine.clone(), pre, entry, fuel: self.options.fuel };
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
}

impl Warm for WasmWarm {
    fn spec(&self) -> &FunctionSpec {
        &self.spec
    }

    fn start(&self, activation: Activation, host: Host, done: Done) -> Killer {
        let wake = Arc::new(Wake::default());
        let killer = {
            let (wake, engine) = (wake.clone(), self.engine.clone());
            Killer::new(move || {
                wake.kill(); // a guest blocked in the host wakes up
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
        tokio::task::spawn_blocking(move || {
            // Every ending arrives as a report, even a bug in a host function.
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(activation, host, wake)));
            let (report, store) = ran.unwrap_or_else(|_| {
                let outcome = Outcome::DeveloperError("The wasm runtime failed on this activation.".into());
                (Report { outcome, logs: Vec::new(), cpu_us: None }, None)
            });
            done(report);
            drop(store); // returning the instance to the pool resets its memory: after the report, not before
        });
        killer
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
    fn run(self, activation: Activation, host: Host, wake: Arc<Wake>) -> (Report, Option<Store<State>>) {
        let limits = self.spec.limits;
        let finish = |outcome, logs: LogSink| Report { outcome, logs: logs.into_lines(), cpu_us: None };
        let mut logs = LogSink::new(limits.logs_bytes_max);
        if wake.killed() {
            return (finish(Outcome::Killed, logs), None);
        }
        let stdout = MemoryOutputPipe::new(limits.logs_bytes_max as usize + 1);
        let stderr = MemoryOutputPipe::new(limits.logs_bytes_max as usize + 1);
        let stream = random_stream(&self.spec.version, &activation.input);
        let random = || wasmtime_wasi::Deterministic::new(stream.clone());
        let clock = Arc::new(AtomicU64::new(0));
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .wall_clock(StepClock(clock.clone()))
            .monotonic_clock(StepClock(clock.clone()))
            .secure_random(random())
            .insecure_random(random())
            .insecure_random_seed(0)
            .build_p1();
        let state = State {
            wasi,
            limits: StoreLimitsBuilder::new()
                .memory_size((limits.memory_mb as usize).saturating_mul(1 << 20))
                .trap_on_grow_failure(true)
                .build(),
            input: serde_json::to_vec(&activation.input).expect("JSON serializes"),
            output: None,
            reply: Vec::new(),
            host,
            wake: wake.clone(),
            deadline: Instant::now() + Duration::from_millis(limits.timeout_ms),
            clock,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            let s = ctx.data();
            if s.wake.killed() {
                return Err(wasmtime::Error::new(Stopped::Killed));
            }
            if Instant::now() >= s.deadline {
                return Err(wasmtime::Error::new(Stopped::Timeout));
            }
            Ok(UpdateDeadline::Continue(1))
        });
        if let Some(fuel) = self.fuel {
            let _ = store.set_fuel(fuel);
        }
        let result = self
            .pre
            .instantiate(&mut store)
            .and_then(|instance| instance.get_typed_func::<(), ()>(&mut store, &self.entry))
            .and_then(|entry| entry.call(&mut store, ()));
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
            Err(e) => match self.error_outcome(e, &wake, &mut store) {
                // A Rust guest prints its panic message, then traps: the message says what went wrong.
                Outcome::DeveloperError(m) if !last_err.is_empty() => {
                    Outcome::DeveloperError(format!("{m} Last stderr line: {last_err}"))
                }
                other => other,
            },
        };
        (finish(outcome, logs), Some(store))
    }

    fn error_outcome(&self, e: wasmtime::Error, wake: &Wake, store: &mut Store<State>) -> Outcome {
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
        if wake.killed() {
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
