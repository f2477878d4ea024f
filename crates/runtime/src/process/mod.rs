//! Warm process functions: Python and Node.js, written the OpenWhisk way.
//!
//! Per warm function there is one long-lived **initializer** process that loads the code once, and a pool of
//! **handlers** it creates on request: forked child processes (Python) or worker threads (Node.js; see
//! `assets/node/runner.js`). Each handler holds its own connection to the function's Unix socket and runs one
//! activation at a time over the line-delimited JSON protocol of [`protocol`]: the platform sends `run`, answers
//! the handler's storage reads and calls while it runs, and reads the `result`.
//!
//! Hand-off: an activation goes straight to an idle handler; one spare handler is kept ready, so creating one
//! (a fork costs about 1.5 ms for a Python process on a small VM) stays off the invocation's path. A handler that
//! finishes cleanly is reused, as OpenWhisk reuses a warm container; one that was killed, timed out or crashed is
//! never reused.
//!
//! Kill: a Python handler gets `SIGKILL` straight from this process (its pid came with its hello); a Node.js
//! worker is terminated by its initializer on a `kill` message. Either way the initializer stays warm. If an
//! initializer dies, the next activation starts a new one.
//!
//! Limits: the timeout is enforced here; memory by `RLIMIT_AS` on the Python initializer (inherited by handlers)
//! and by per-worker heap limits in Node.js (V8 reserves more address space than any sane `RLIMIT_AS`); logs by a
//! [`LogSink`]; open files by `RLIMIT_NOFILE` (1024, as OpenWhisk).

pub mod protocol;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use model::{Code, FunctionSpec, Kind};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::UnixListener;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::{Activation, BoxFuture, Done, Error, Host, HostRequest, Killer, LogSink, Outcome, Report, Runtime, Warm};
use protocol::{FromHandler, FromInit, Hello, Reply, ToHandler, ToInit, line};

const RUNNER_PY: &str = include_str!("../../assets/python/runner.py");
const SDK_PY: &str = include_str!("../../assets/python/specfaas/__init__.py");
const RUNNER_JS: &str = include_str!("../../assets/node/runner.js");
const SDK_JS: &str = include_str!("../../assets/node/specfaas/index.js");
const SDK_JS_PACKAGE: &str = include_str!("../../assets/node/specfaas/package.json");

/// How long an initializer may take to load code before the load fails.
const INIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for a handler's exit status after its connection closed without a result.
const EXIT_WAIT: Duration = Duration::from_secs(2);
/// Open-file limit of function processes (OpenWhisk's value).
const NOFILE_MAX: u64 = 1024;
/// Idle handlers kept ready beyond the activations waiting for one.
const SPARES: usize = 1;
/// Idle handlers kept at most; more are retired when they finish.
const IDLE_MAX: usize = 8;

/// Runs Python and Node.js functions in warm processes.
pub struct ProcessRuntime {
    dir: PathBuf,
    next: AtomicU64,
}

impl ProcessRuntime {
    /// Prepares `dir` (which should have a short path: it holds Unix sockets) with the runners and SDKs.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self, Error> {
        let dir = dir.as_ref().to_path_buf();
        let io = |e: std::io::Error| Error::Io(format!("cannot prepare {}: {e}", dir.display()));
        std::fs::create_dir_all(dir.join("py/specfaas")).map_err(io)?;
        std::fs::create_dir_all(dir.join("js/node_modules/specfaas")).map_err(io)?;
        std::fs::create_dir_all(dir.join("fn")).map_err(io)?;
        for (path, text) in [
            ("py/runner.py", RUNNER_PY),
            ("py/specfaas/__init__.py", SDK_PY),
            ("js/runner.js", RUNNER_JS),
            ("js/node_modules/specfaas/index.js", SDK_JS),
            ("js/node_modules/specfaas/package.json", SDK_JS_PACKAGE),
        ] {
            std::fs::write(dir.join(path), text).map_err(io)?;
        }
        Ok(ProcessRuntime { dir, next: AtomicU64::new(0) })
    }
}

impl Runtime for ProcessRuntime {
    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Python, Kind::Node]
    }

    fn load(&self, spec: Arc<FunctionSpec>) -> BoxFuture<'_, Result<Arc<dyn Warm>, Error>> {
        Box::pin(async move {
            let Code::Source { text, main } = &spec.code else {
                return Err(Error::WrongKind {
                    runtime: "process",
                    function: spec.name.clone(),
                    kind: spec.kind.as_openwhisk(),
                });
            };
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let io = |e: std::io::Error| Error::Io(e.to_string());
            let fn_dir = self.dir.join("fn").join(format!("{n}"));
            std::fs::create_dir_all(&fn_dir).map_err(io)?;
            let (file, interpreter, runner, path_var, path_val) = match spec.kind {
                Kind::Python => ("action.py", "python3", "py/runner.py", "PYTHONPATH", "py"),
                Kind::Node => ("action.js", "node", "js/runner.js", "NODE_PATH", "js/node_modules"),
                Kind::Native | Kind::Wasm => unreachable!("native and wasm code is not Source"),
            };
            let code_file = fn_dir.join(file);
            std::fs::write(&code_file, text).map_err(io)?;
            let socket = self.dir.join(format!("{n}.sock"));
            let _ = std::fs::remove_file(&socket);
            let listener = UnixListener::bind(&socket).map_err(io)?;
            let shared = Arc::new(Shared {
                spec: spec.clone(),
                launch: Launch {
                    interpreter: interpreter.into(),
                    args: vec![
                        self.dir.join(runner).display().to_string(),
                        socket.display().to_string(),
                        code_file.display().to_string(),
                        main.clone(),
                        spec.limits.memory_mb.to_string(),
                    ],
                    env: (path_var, module_path(&self.dir.join(path_val), spec.kind)),
                    memory_bytes: (spec.kind == Kind::Python).then_some(spec.limits.memory_mb * 1024 * 1024),
                },
                socket,
                init: tokio::sync::Mutex::new(None),
                pending_init: Mutex::new(None),
                control: Mutex::new(None),
                pool: Mutex::new(Pool::default()),
                exits: Mutex::new(HashMap::new()),
            });
            tokio::spawn(accept_loop(listener, Arc::downgrade(&shared)));
            shared.ensure_init().await?;
            Ok(Arc::new(ProcessWarm { shared }) as Arc<dyn Warm>)
        })
    }
}

/// The module search path of a runner: our SDK first, then, for Node.js, whatever `SPECFAAS_NODE_PATH` adds
/// (where an operator installs packages actions may `require`, such as `openwhisk`, which OpenWhisk's Node.js
/// runtime has preinstalled).
fn module_path(sdk: &Path, kind: Kind) -> String {
    let mut path = sdk.display().to_string();
    let extra = std::env::var("SPECFAAS_NODE_PATH").unwrap_or_default();
    if kind == Kind::Node && !extra.is_empty() {
        path.push(':');
        path.push_str(&extra);
    }
    path
}

struct Launch {
    interpreter: String,
    args: Vec<String>,
    env: (&'static str, String),
    memory_bytes: Option<u64>,
}

type Conn = (Lines<BufReader<OwnedReadHalf>>, OwnedWriteHalf);

/// An idle or busy handler: its connection, and how to kill it.
struct Handler {
    hid: i64,
    pid: Option<i32>,
    lines: Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
}

#[derive(Default)]
struct Pool {
    idle: Vec<Handler>,
    waiters: VecDeque<oneshot::Sender<Handler>>,
    /// Handlers requested from the initializer that have not connected yet.
    spawning: usize,
    /// Handlers that connected and have not exited.
    connected: std::collections::HashSet<i64>,
}

#[derive(Debug)]
struct Exit {
    code: Option<i32>,
    signal: Option<i32>,
    reason: Option<String>,
}

/// A live initializer process.
struct Init {
    alive: Arc<AtomicBool>,
    _child: tokio::process::Child,
}

struct Shared {
    spec: Arc<FunctionSpec>,
    launch: Launch,
    socket: PathBuf,
    init: tokio::sync::Mutex<Option<Init>>,
    pending_init: Mutex<Option<oneshot::Sender<Conn>>>,
    /// The live initializer's control channel, if there is one.
    control: Mutex<Option<mpsc::UnboundedSender<String>>>,
    pool: Mutex<Pool>,
    /// Busy handlers' activations, waiting to hear if the handler dies: hid → sender.
    exits: Mutex<HashMap<i64, oneshot::Sender<Exit>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn accept_loop(listener: UnixListener, shared: Weak<Shared>) {
    while let Ok((stream, _)) = listener.accept().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            let (read, write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            let Ok(Some(first)) = lines.next_line().await else {
                return;
            };
            let Ok(hello) = serde_json::from_str::<Hello>(&first) else {
                return;
            };
            if hello.op != "hello" {
                return;
            }
            match (hello.role.as_str(), hello.hid) {
                ("init", _) => {
                    if let Some(tx) = lock(&shared.pending_init).take() {
                        let _ = tx.send((lines, write));
                    }
                }
                ("handler", Some(hid)) => {
                    {
                        let mut pool = lock(&shared.pool);
                        pool.spawning = pool.spawning.saturating_sub(1);
                        pool.connected.insert(hid);
                    }
                    shared.handler_ready(Handler { hid, pid: hello.pid, lines, write });
                    shared.request_spawns();
                }
                _ => {}
            }
        });
    }
}

fn sigkill(pid: i32) {
    // SAFETY: kill(2) on a handler pid our own initializer forked; at worst the process is already gone.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

impl Shared {
    fn send_control(&self, msg: String) -> bool {
        lock(&self.control).as_ref().is_some_and(|c| c.send(msg).is_ok())
    }

    /// Asks the initializer for handlers until the pool covers the waiting activations plus the spares.
    fn request_spawns(&self) {
        let mut pool = lock(&self.pool);
        while pool.idle.len() + pool.spawning < pool.waiters.len() + SPARES {
            if !self.send_control(line(&ToInit::Spawn {})) {
                return;
            }
            pool.spawning += 1;
        }
    }

    /// A handler connected, or finished an activation cleanly: give it to a waiting activation, or keep it idle.
    fn handler_ready(&self, mut handler: Handler) {
        let mut pool = lock(&self.pool);
        while let Some(waiter) = pool.waiters.pop_front() {
            match waiter.send(handler) {
                Ok(()) => return,
                Err(h) => handler = h, // that activation gave up waiting
            }
        }
        if pool.idle.len() < IDLE_MAX {
            pool.idle.push(handler);
        } // else: dropping the connection retires the handler
    }

    /// Starts the initializer if none is alive.
    async fn ensure_init(self: &Arc<Self>) -> Result<(), Error> {
        let mut guard = self.init.lock().await;
        if guard.as_ref().is_some_and(|i| i.alive.load(Ordering::Acquire)) {
            return Ok(());
        }
        *guard = Some(self.spawn_init().await?);
        drop(guard);
        self.request_spawns();
        Ok(())
    }

    async fn spawn_init(self: &Arc<Self>) -> Result<Init, Error> {
        let fail = |message: String| Error::Init { function: self.spec.name.clone(), message };
        let (tx, rx) = oneshot::channel();
        *lock(&self.pending_init) = Some(tx);
        let mut cmd = tokio::process::Command::new(&self.launch.interpreter);
        cmd.args(&self.launch.args)
            .env(self.launch.env.0, &self.launch.env.1)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let memory = self.launch.memory_bytes;
        // SAFETY: only async-signal-safe calls (setrlimit, prctl) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let set = |resource, value: u64| {
                    let lim = libc::rlimit { rlim_cur: value as libc::rlim_t, rlim_max: value as libc::rlim_t };
                    if libc::setrlimit(resource, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                };
                set(libc::RLIMIT_NOFILE, NOFILE_MAX)?;
                if let Some(bytes) = memory {
                    set(libc::RLIMIT_AS, bytes)?;
                }
                // Die with the platform.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| Error::Io(format!("cannot start {}: {e}", self.launch.interpreter)))?;
        let stderr_tail = Arc::new(Mutex::new(String::new()));
        if let Some(stderr) = child.stderr.take() {
            let tail = stderr_tail.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    let mut t = lock(&tail);
                    t.push_str(&l);
                    t.push('\n');
                    if t.len() > 4096 {
                        let cut = (t.len() - 4096..t.len()).find(|i| t.is_char_boundary(*i)).unwrap_or(t.len());
                        t.drain(..cut);
                    }
                }
            });
        }
        let tail = || lock(&stderr_tail).clone();
        let (mut lines, mut write) = tokio::select! {
            s = rx => s.map_err(|_| fail("the runner did not connect".into()))?,
            status = child.wait() => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Err(fail(format!("the runner exited ({}) before connecting: {}",
                    status.map(|s| s.to_string()).unwrap_or_default(), tail())));
            }
            _ = tokio::time::sleep(INIT_TIMEOUT) => return Err(fail("the runner did not connect in time".into())),
        };
        let first = tokio::time::timeout(INIT_TIMEOUT, lines.next_line())
            .await
            .map_err(|_| fail(format!("loading the code took longer than {}s", INIT_TIMEOUT.as_secs())))?;
        match first.ok().flatten().map(|l| serde_json::from_str::<FromInit>(&l)) {
            Some(Ok(FromInit::Ready)) => {}
            Some(Ok(FromInit::InitError { error })) => return Err(fail(error)),
            other => {
                return Err(fail(format!("the runner failed while loading the code: {other:?} {}", tail())));
            }
        }
        let alive = Arc::new(AtomicBool::new(true));
        let (control_tx, mut control_rx) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(msg) = control_rx.recv().await {
                if write.write_all(msg.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
        *lock(&self.control) = Some(control_tx);
        let me = Arc::downgrade(self);
        let alive_flag = alive.clone();
        tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                let Some(shared) = me.upgrade() else { return };
                if let Ok(FromInit::Exited { hid, code, signal, reason }) = serde_json::from_str::<FromInit>(&l) {
                    let never_connected = {
                        let mut pool = lock(&shared.pool);
                        pool.idle.retain(|h| h.hid != hid);
                        let never = !pool.connected.remove(&hid);
                        if never {
                            pool.spawning = pool.spawning.saturating_sub(1);
                        }
                        never
                    };
                    if never_connected {
                        // It died before connecting: it will never come, so ask for another.
                        shared.request_spawns();
                    }
                    if let Some(tx) = lock(&shared.exits).remove(&hid) {
                        let _ = tx.send(Exit { code, signal, reason });
                    }
                }
            }
            alive_flag.store(false, Ordering::Release);
            // The initializer is gone, and its handlers with it: fail every activation still using one.
            if let Some(shared) = me.upgrade() {
                *lock(&shared.control) = None;
                let mut pool = lock(&shared.pool);
                pool.idle.clear();
                pool.spawning = 0;
                pool.connected.clear();
                drop(pool);
                for (_, tx) in lock(&shared.exits).drain() {
                    let _ =
                        tx.send(Exit { code: None, signal: None, reason: Some("the runtime process exited".into()) });
                }
            }
        });
        Ok(Init { alive, _child: child })
    }
}

struct ProcessWarm {
    shared: Arc<Shared>,
}

/// CPU time a process has used so far, in microseconds, from `/proc/PID/sched` (`se.sum_exec_runtime`, in ms with
/// microsecond precision). `None` where the kernel does not provide it.
fn cpu_us(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/sched")).ok()?;
    let line = text.lines().find(|l| l.starts_with("se.sum_exec_runtime"))?;
    let ms: f64 = line.split(':').nth(1)?.trim().parse().ok()?;
    Some((ms * 1000.0) as u64)
}

/// What a [`Killer`] needs to stop the handler of one activation.
#[derive(Default)]
struct KillState {
    killed: bool,
    handler: Option<(i64, Option<i32>)>,
    /// The handler's CPU time when this (speculative) activation started, and what it had used when killed.
    cpu_start_us: Option<u64>,
    cpu_used_us: Option<u64>,
}

impl KillState {
    /// Kills the handler, if the activation has one; `shared` is used to reach a Node.js initializer. A measured
    /// activation's CPU time is read first, while the process still exists.
    fn kill_handler(&mut self, shared: &Shared) {
        match self.handler {
            Some((_, Some(pid))) => {
                if let (Some(start), None) = (self.cpu_start_us, self.cpu_used_us) {
                    self.cpu_used_us = cpu_us(pid).map(|now| now.saturating_sub(start));
                }
                sigkill(pid)
            }
            Some((hid, None)) => {
                shared.send_control(line(&ToInit::Kill { hid }));
            }
            None => {}
        }
    }
}

impl Warm for ProcessWarm {
    fn spec(&self) -> &FunctionSpec {
        &self.shared.spec
    }

    fn start(&self, activation: Activation, host: Host, done: Done) -> Killer {
        let state = Arc::new(Mutex::new(KillState::default()));
        let killed = Arc::new(Notify::new());
        let killer = {
            let shared = Arc::downgrade(&self.shared);
            let state = state.clone();
            let killed = killed.clone();
            Killer::new(move || {
                let mut s = lock(&state);
                s.killed = true;
                if let Some(shared) = shared.upgrade() {
                    s.kill_handler(&shared);
                }
                drop(s);
                killed.notify_one();
            })
        };
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let report = run_activation(&shared, activation, host, &state, &killed).await;
            done(report);
        });
        killer
    }
}

/// Takes an idle handler, or waits for one.
async fn acquire(shared: &Arc<Shared>) -> Result<Handler, Error> {
    shared.ensure_init().await?;
    let waiter = {
        let mut pool = lock(&shared.pool);
        match pool.idle.pop() {
            Some(h) => Ok(h),
            None => {
                let (tx, rx) = oneshot::channel();
                pool.waiters.push_back(tx);
                Err(rx)
            }
        }
    };
    shared.request_spawns();
    match waiter {
        Ok(h) => Ok(h),
        Err(rx) => rx.await.map_err(|_| Error::Io("the runtime process exited".into())),
    }
}

async fn run_activation(
    shared: &Arc<Shared>,
    activation: Activation,
    host: Host,
    state: &Mutex<KillState>,
    killed: &Notify,
) -> Report {
    let spec = &shared.spec;
    let mut logs = LogSink::new(spec.limits.logs_bytes_max);
    let timeout_ms = spec.limits.timeout_ms;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    let finish = |outcome, logs: LogSink| Report { outcome, logs: logs.into_lines(), cpu_us: None };
    if lock(state).killed {
        return finish(Outcome::Killed, logs);
    }
    let mut handler = tokio::select! {
        h = acquire(shared) => match h {
            Ok(h) => h,
            Err(e) => return finish(Outcome::DeveloperError(e.to_string()), logs),
        },
        _ = killed.notified() => return finish(Outcome::Killed, logs),
        _ = tokio::time::sleep_until(deadline) => return finish(Outcome::Timeout { timeout_ms }, logs),
    };
    let (exit_tx, mut exit_rx) = oneshot::channel();
    lock(&shared.exits).insert(handler.hid, exit_tx);
    {
        let mut s = lock(state);
        s.handler = Some((handler.hid, handler.pid));
        if activation.speculative {
            s.cpu_start_us = handler.pid.and_then(cpu_us);
        }
        if s.killed {
            s.kill_handler(shared);
            lock(&shared.exits).remove(&handler.hid);
            return finish(Outcome::Killed, logs);
        }
    }
    let run = line(&ToHandler::Run { id: &activation.id, args: &activation.input, env: &activation.env });
    let (reply_tx, mut reply_rx) = mpsc::unbounded_channel::<(u64, crate::Reply)>();
    let mut clean = false;
    let outcome = if handler.write.write_all(run.as_bytes()).await.is_err() {
        Outcome::DeveloperError("the handler went away before the activation started".into())
    } else {
        loop {
            tokio::select! {
                next = handler.lines.next_line() => match next {
                    Ok(Some(l)) => match serde_json::from_str::<FromHandler>(&l) {
                        Ok(FromHandler::Log { stream, line }) => logs.push(&stream, &line),
                        Ok(FromHandler::Call(call)) => {
                            let rid = call.rid;
                            match to_host_call(call) {
                                Ok(call) => {
                                    let tx = reply_tx.clone();
                                    let reply = Box::new(move |r| { let _ = tx.send((rid, r)); });
                                    host(HostRequest { call, reply });
                                }
                                Err(m) => { let _ = reply_tx.send((rid, crate::Reply::Refused(m))); }
                            }
                        }
                        Ok(FromHandler::Result { value }) => { clean = true; break Outcome::from_returned(value) }
                        Ok(FromHandler::Error { message }) => { clean = true; break Outcome::DeveloperError(message) }
                        Err(e) => break Outcome::DeveloperError(format!("protocol error from the handler: {e}")),
                    },
                    // The handler closed its connection without a result: ask the initializer why.
                    Ok(None) | Err(_) => {
                        let exit = tokio::select! {
                            e = &mut exit_rx => e.ok(),
                            _ = tokio::time::sleep(EXIT_WAIT) => None,
                        };
                        break if lock(state).killed { Outcome::Killed } else { exit_outcome(spec, exit) };
                    }
                },
                Some((rid, reply)) = reply_rx.recv() => {
                    let msg = line(&to_reply(rid, reply));
                    if handler.write.write_all(msg.as_bytes()).await.is_err() {
                        continue; // the read side will see the handler go
                    }
                }
                _ = killed.notified() => break Outcome::Killed,
                exit = &mut exit_rx => break exit_outcome(spec, exit.ok()),
                _ = tokio::time::sleep_until(deadline) => break Outcome::Timeout { timeout_ms },
            }
        }
    };
    lock(&shared.exits).remove(&handler.hid);
    let mut s = lock(state);
    // A kill races with what it causes (the connection closing, the exit notice): whichever the loop saw first,
    // an activation that was killed before it finished cleanly reports Killed.
    let outcome = if s.killed && !clean { Outcome::Killed } else { outcome };
    if let (Some(start), None, Some(pid)) = (s.cpu_start_us, s.cpu_used_us, handler.pid) {
        s.cpu_used_us = cpu_us(pid).map(|now| now.saturating_sub(start));
    }
    let cpu = s.cpu_used_us;
    if clean && !s.killed {
        // The handler goes back to the pool and will serve others: a late kill of this activation must not reach it.
        s.handler = None;
        drop(s);
        shared.handler_ready(handler);
    } else {
        // Never reuse a handler that was killed, timed out, crashed or broke the protocol.
        s.kill_handler(shared);
    }
    Report { cpu_us: cpu, ..finish(outcome, logs) }
}

fn to_reply(rid: u64, reply: crate::Reply) -> Reply {
    match reply {
        crate::Reply::Ok(v) => Reply { op: "reply", rid, ok: true, value: Some(v), error: None, kind: None },
        crate::Reply::Refused(m) => {
            Reply { op: "reply", rid, ok: false, value: None, error: Some(Value::String(m)), kind: None }
        }
        crate::Reply::FunctionFailed(e) => {
            Reply { op: "reply", rid, ok: false, value: None, error: Some(e), kind: Some("function") }
        }
    }
}

fn to_host_call(call: protocol::Call) -> Result<crate::Call, String> {
    let key = || call.key.clone().ok_or_else(|| format!("{} needs a string key", call.call));
    Ok(match call.call.as_str() {
        "kv.get" => crate::Call::Get { key: key()? },
        "kv.put" => crate::Call::Put { key: key()?, value: call.value.clone().unwrap_or(Value::Null) },
        "kv.delete" => crate::Call::Delete { key: key()? },
        "invoke" => crate::Call::Invoke {
            function: call.function.clone().ok_or("invoke needs a function name")?,
            args: call.args.clone().unwrap_or(Value::Object(Default::default())),
        },
        "http" => crate::Call::Http { request: call.request.clone().ok_or("http needs a request")? },
        other => return Err(format!("unknown platform call \"{other}\"")),
    })
}

fn exit_outcome(spec: &FunctionSpec, exit: Option<Exit>) -> Outcome {
    let memory_mb = spec.limits.memory_mb;
    Outcome::DeveloperError(match exit {
        Some(Exit { reason: Some(r), .. }) if r.contains("OUT_OF_MEMORY") => {
            format!("The action exceeded its memory limit of {memory_mb} MB.")
        }
        Some(Exit { reason: Some(r), .. }) => format!("The action did not produce a result: {r}."),
        Some(Exit { signal: Some(s), .. }) => {
            let name = match s {
                libc::SIGKILL => "SIGKILL",
                libc::SIGSEGV => "SIGSEGV",
                libc::SIGABRT => "SIGABRT",
                libc::SIGBUS => "SIGBUS",
                _ => "a signal",
            };
            format!("The action crashed: it was killed by signal {s} ({name}) before producing a result.")
        }
        Some(Exit { code: Some(c), .. }) => {
            format!("The action exited with code {c} before producing a result.")
        }
        _ => "The action did not produce a result.".to_string(),
    })
}
