//! Warm process functions: Python and Node.js, written the OpenWhisk way.
//!
//! Per warm function there is one long-lived **initializer** process that loads the code once, and per activation
//! one **handler**: a forked child process (Python) or a worker thread (Node.js; see `assets/node/runner.js`).
//! Each handler opens its own connection to the function's Unix socket and speaks the line-delimited JSON
//! protocol of [`protocol`]: its storage reads and calls are answered by the platform while it runs.
//!
//! Kill: a Python handler gets `SIGKILL` straight from this process (pid reported by the initializer); a Node.js
//! worker is terminated by its initializer on a `kill` message. Either way the initializer stays warm. If an
//! initializer dies, the next activation starts a new one.
//!
//! Limits: the timeout is enforced here; memory by `RLIMIT_AS` on the Python initializer (inherited by handlers)
//! and by per-worker heap limits in Node.js (V8 reserves more address space than any sane `RLIMIT_AS`); logs by a
//! [`LogSink`]; open files by `RLIMIT_NOFILE` (1024, as OpenWhisk).

pub mod protocol;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use model::{Code, FunctionSpec, Kind};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::{
    Activation, BoxFuture, Error, Host, HostCall, HostReply, HostRequest, Killer, LogSink, Outcome,
    Report, Running, Runtime, Warm,
};
use protocol::{FromHandler, FromInit, Hello, Reply, ToInit, line};

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

/// Runs Python and Node.js functions in warm processes.
pub struct ProcessRuntime {
    dir: PathBuf,
    next: AtomicU64,
    python: String,
    node: String,
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
        Ok(ProcessRuntime {
            dir,
            next: AtomicU64::new(0),
            python: "python3".into(),
            node: "node".into(),
        })
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
            let (code_file, interpreter, runner, path_var, path_val) = match spec.kind {
                Kind::Python => (
                    fn_dir.join("action.py"),
                    self.python.clone(),
                    self.dir.join("py/runner.py"),
                    "PYTHONPATH",
                    self.dir.join("py"),
                ),
                Kind::Node => (
                    fn_dir.join("action.js"),
                    self.node.clone(),
                    self.dir.join("js/runner.js"),
                    "NODE_PATH",
                    self.dir.join("js/node_modules"),
                ),
                Kind::Native => unreachable!("native code is not Source"),
            };
            std::fs::write(&code_file, text).map_err(io)?;
            let socket = self.dir.join(format!("{n}.sock"));
            let _ = std::fs::remove_file(&socket);
            let listener = UnixListener::bind(&socket).map_err(io)?;
            let shared = Arc::new(Shared {
                spec: spec.clone(),
                launch: Launch {
                    interpreter,
                    args: vec![
                        runner.display().to_string(),
                        socket.display().to_string(),
                        code_file.display().to_string(),
                        main.clone(),
                        spec.limits.memory_mb.to_string(),
                    ],
                    env: (path_var, path_val.display().to_string()),
                    memory_bytes: (spec.kind == Kind::Python)
                        .then_some(spec.limits.memory_mb * 1024 * 1024),
                },
                socket,
                routes: Mutex::new(HashMap::new()),
                init: tokio::sync::Mutex::new(None),
                pending_init: Mutex::new(None),
            });
            tokio::spawn(accept_loop(listener, Arc::downgrade(&shared)));
            shared.ensure_init().await?;
            Ok(Arc::new(ProcessWarm { shared }) as Arc<dyn Warm>)
        })
    }
}

struct Launch {
    interpreter: String,
    args: Vec<String>,
    env: (&'static str, String),
    memory_bytes: Option<u64>,
}

/// Per-activation routing state, keyed by activation id.
#[derive(Default)]
struct Route {
    conn: Option<oneshot::Sender<Conn>>,
    exited: Option<oneshot::Sender<Exit>>,
    pid: Option<i32>,
    killed: bool,
}

#[derive(Debug)]
struct Exit {
    code: Option<i32>,
    signal: Option<i32>,
    reason: Option<String>,
}

/// A live initializer process.
struct Init {
    control: mpsc::UnboundedSender<String>,
    alive: Arc<AtomicBool>,
    _child: tokio::process::Child,
}

struct Shared {
    spec: Arc<FunctionSpec>,
    launch: Launch,
    socket: PathBuf,
    routes: Mutex<HashMap<String, Route>>,
    init: tokio::sync::Mutex<Option<Init>>,
    pending_init: Mutex<Option<oneshot::Sender<Conn>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// A connection after its hello line: the buffered read half (it may already hold the next lines) and the write
/// half.
type Conn = (
    tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    tokio::net::unix::OwnedWriteHalf,
);

async fn accept_loop(listener: UnixListener, shared: std::sync::Weak<Shared>) {
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
            let conn: Conn = (lines, write);
            match (hello.role.as_str(), hello.id) {
                ("init", _) => {
                    if let Some(tx) = shared.pending_init.lock().expect("poisoned").take() {
                        let _ = tx.send(conn);
                    }
                }
                ("handler", Some(id)) => {
                    let tx = shared
                        .routes
                        .lock()
                        .expect("poisoned")
                        .get_mut(&id)
                        .and_then(|r| r.conn.take());
                    if let Some(tx) = tx {
                        let _ = tx.send(conn);
                    }
                }
                _ => {}
            }
        });
    }
}

fn sigkill(pid: i32) {
    // SAFETY: kill(2) with a pid we were told by our own initializer; at worst the process is already gone.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

impl Shared {
    /// Starts the initializer if none is alive; returns its control channel.
    async fn ensure_init(self: &Arc<Self>) -> Result<mpsc::UnboundedSender<String>, Error> {
        let mut guard = self.init.lock().await;
        if let Some(init) = guard.as_ref() {
            if init.alive.load(Ordering::Acquire) {
                return Ok(init.control.clone());
            }
        }
        let init = self.spawn_init().await?;
        let control = init.control.clone();
        *guard = Some(init);
        Ok(control)
    }

    async fn spawn_init(self: &Arc<Self>) -> Result<Init, Error> {
        let fail = |message: String| Error::Init {
            function: self.spec.name.clone(),
            message,
        };
        let (tx, rx) = oneshot::channel();
        *self.pending_init.lock().expect("poisoned") = Some(tx);
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
                    let lim = libc::rlimit {
                        rlim_cur: value as libc::rlim_t,
                        rlim_max: value as libc::rlim_t,
                    };
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
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Io(format!("cannot start {}: {e}", self.launch.interpreter)))?;
        let stderr = child.stderr.take();
        let stderr_tail = Arc::new(Mutex::new(String::new()));
        if let Some(stderr) = stderr {
            let tail = stderr_tail.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    let mut t = tail.lock().expect("poisoned");
                    t.push_str(&l);
                    t.push('\n');
                    if t.len() > 4096 {
                        let cut = t.len() - 4096;
                        let cut = (cut..t.len())
                            .find(|i| t.is_char_boundary(*i))
                            .unwrap_or(t.len());
                        t.drain(..cut);
                    }
                }
            });
        }
        let (mut lines, mut write) = tokio::select! {
            s = rx => s.map_err(|_| fail("the runner did not connect".into()))?,
            status = child.wait() => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let tail = stderr_tail.lock().expect("poisoned").clone();
                return Err(fail(format!("the runner exited ({}) before connecting: {tail}",
                    status.map(|s| s.to_string()).unwrap_or_default())));
            }
            _ = tokio::time::sleep(INIT_TIMEOUT) => return Err(fail("the runner did not connect in time".into())),
        };
        let first = tokio::time::timeout(INIT_TIMEOUT, lines.next_line())
            .await
            .map_err(|_| {
                fail(format!(
                    "loading the code took longer than {}s",
                    INIT_TIMEOUT.as_secs()
                ))
            })?;
        match first
            .ok()
            .flatten()
            .map(|l| serde_json::from_str::<FromInit>(&l))
        {
            Some(Ok(FromInit::Ready)) => {}
            Some(Ok(FromInit::InitError { error })) => return Err(fail(error)),
            other => {
                let tail = stderr_tail.lock().expect("poisoned").clone();
                return Err(fail(format!(
                    "the runner failed while loading the code: {other:?} {tail}"
                )));
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
        let me = Arc::downgrade(self);
        let alive_flag = alive.clone();
        tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                let Some(shared) = me.upgrade() else { return };
                match serde_json::from_str::<FromInit>(&l) {
                    Ok(FromInit::Forked { id, pid }) => {
                        let mut routes = shared.routes.lock().expect("poisoned");
                        match routes.get_mut(&id) {
                            Some(route) if route.killed => sigkill(pid),
                            Some(route) => route.pid = Some(pid),
                            None => sigkill(pid), // its activation is already over
                        }
                    }
                    Ok(FromInit::Exited {
                        id,
                        code,
                        signal,
                        reason,
                    }) => {
                        let tx = shared
                            .routes
                            .lock()
                            .expect("poisoned")
                            .get_mut(&id)
                            .and_then(|r| r.exited.take());
                        if let Some(tx) = tx {
                            let _ = tx.send(Exit {
                                code,
                                signal,
                                reason,
                            });
                        }
                    }
                    _ => {}
                }
            }
            alive_flag.store(false, Ordering::Release);
            // The initializer is gone: fail every activation still waiting on it.
            if let Some(shared) = me.upgrade() {
                let mut routes = shared.routes.lock().expect("poisoned");
                for route in routes.values_mut() {
                    if let Some(tx) = route.exited.take() {
                        let _ = tx.send(Exit {
                            code: None,
                            signal: None,
                            reason: Some("the runtime process exited".into()),
                        });
                    }
                }
            }
        });
        Ok(Init {
            control: control_tx,
            alive,
            _child: child,
        })
    }
}

struct ProcessWarm {
    shared: Arc<Shared>,
}

impl Warm for ProcessWarm {
    fn spec(&self) -> &FunctionSpec {
        &self.shared.spec
    }

    fn start(&self, activation: Activation, host: Host) -> Running {
        let (done_tx, done_rx) = oneshot::channel();
        let (conn_tx, conn_rx) = oneshot::channel();
        let (exit_tx, exit_rx) = oneshot::channel();
        let killed = Arc::new(Notify::new());
        let control_slot: Arc<Mutex<Option<mpsc::UnboundedSender<String>>>> =
            Arc::new(Mutex::new(None));
        self.shared.routes.lock().expect("poisoned").insert(
            activation.id.clone(),
            Route {
                conn: Some(conn_tx),
                exited: Some(exit_tx),
                pid: None,
                killed: false,
            },
        );
        let killer = {
            let shared = Arc::downgrade(&self.shared);
            let id = activation.id.clone();
            let killed = killed.clone();
            let control_slot = control_slot.clone();
            Killer::new(move || {
                if let Some(shared) = shared.upgrade() {
                    let mut routes = shared.routes.lock().expect("poisoned");
                    if let Some(route) = routes.get_mut(&id) {
                        route.killed = true;
                        match route.pid {
                            Some(pid) => sigkill(pid),
                            None => {
                                if let Some(control) =
                                    control_slot.lock().expect("poisoned").as_ref()
                                {
                                    let _ = control.send(line(&ToInit::Kill { id: &id }));
                                }
                            }
                        }
                    }
                }
                killed.notify_one();
            })
        };
        let shared = self.shared.clone();
        let kill_again = killer.clone();
        tokio::spawn(async move {
            let report = run_activation(
                &shared,
                activation.clone(),
                host,
                conn_rx,
                exit_rx,
                killed,
                control_slot,
            )
            .await;
            let was_killed = {
                let mut routes = shared.routes.lock().expect("poisoned");
                routes.remove(&activation.id).map(|r| (r.killed, r.pid))
            };
            // A handler that outlived its activation (timeout, platform error) must not keep running.
            if !matches!(
                report.outcome,
                Outcome::Success(_) | Outcome::ApplicationError(_)
            ) {
                if let Some((_, Some(pid))) = was_killed {
                    sigkill(pid);
                }
            }
            drop(kill_again);
            let _ = done_tx.send(report);
        });
        Running {
            kill: killer,
            done: done_rx,
        }
    }
}

async fn run_activation(
    shared: &Arc<Shared>,
    activation: Activation,
    host: Host,
    conn_rx: oneshot::Receiver<Conn>,
    mut exit_rx: oneshot::Receiver<Exit>,
    killed: Arc<Notify>,
    control_slot: Arc<Mutex<Option<mpsc::UnboundedSender<String>>>>,
) -> Report {
    let spec = &shared.spec;
    let mut logs = LogSink::new(spec.limits.logs_bytes_max);
    let timeout_ms = spec.limits.timeout_ms;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    let finish = |outcome, logs: LogSink| Report {
        outcome,
        logs: logs.into_lines(),
    };
    let control = match shared.ensure_init().await {
        Ok(c) => c,
        Err(e) => return finish(Outcome::DeveloperError(e.to_string()), logs),
    };
    *control_slot.lock().expect("poisoned") = Some(control.clone());
    let kill_handler = |shared: &Arc<Shared>| {
        let pid = shared
            .routes
            .lock()
            .expect("poisoned")
            .get(&activation.id)
            .and_then(|r| r.pid);
        match pid {
            Some(pid) => sigkill(pid),
            None => {
                let _ = control.send(line(&ToInit::Kill { id: &activation.id }));
            }
        }
    };
    if shared
        .routes
        .lock()
        .expect("poisoned")
        .get(&activation.id)
        .is_some_and(|r| r.killed)
    {
        return finish(Outcome::Killed, logs);
    }
    let run = line(&ToInit::Run {
        id: &activation.id,
        args: &activation.input,
        env: &activation.env,
    });
    if control.send(run).is_err() {
        return finish(
            Outcome::DeveloperError("the runtime process is gone".into()),
            logs,
        );
    }
    // Wait for the handler to connect.
    let (mut lines, mut write) = tokio::select! {
        s = conn_rx => match s {
            Ok(s) => s,
            Err(_) => return finish(Outcome::DeveloperError("the handler never connected".into()), logs),
        },
        exit = &mut exit_rx => return finish(exit_outcome(spec, exit.ok()), logs),
        _ = killed.notified() => { kill_handler(shared); return finish(Outcome::Killed, logs) }
        _ = tokio::time::sleep_until(deadline) => { kill_handler(shared); return finish(Outcome::Timeout { timeout_ms }, logs) }
    };
    let (reply_tx, mut reply_rx) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(msg) = reply_rx.recv().await {
            if write.write_all(msg.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    let outcome = loop {
        tokio::select! {
            next = lines.next_line() => match next {
                Ok(Some(l)) => match serde_json::from_str::<FromHandler>(&l) {
                    Ok(FromHandler::Log { stream, line }) => logs.push(&stream, &line),
                    Ok(FromHandler::Call(call)) => {
                        let rid = call.rid;
                        match to_host_call(call) {
                            Ok(call) => {
                                let (tx, rx) = oneshot::channel();
                                if host.send(HostRequest { call, reply: tx }).is_err() {
                                    let _ = reply_tx.send(line(&refused(rid, "the platform is gone".into())));
                                    continue;
                                }
                                let reply_tx = reply_tx.clone();
                                tokio::spawn(async move {
                                    let reply = match rx.await {
                                        Ok(HostReply::Ok(v)) => Reply { op: "reply", rid, ok: true, value: Some(v), error: None, kind: None },
                                        Ok(HostReply::Refused(m)) => refused(rid, m),
                                        Ok(HostReply::FunctionFailed(e)) => Reply { op: "reply", rid, ok: false, value: None, error: Some(e), kind: Some("function") },
                                        Err(_) => refused(rid, "the platform dropped the call".into()),
                                    };
                                    let _ = reply_tx.send(line(&reply));
                                });
                            }
                            Err(m) => { let _ = reply_tx.send(line(&refused(rid, m))); }
                        }
                    }
                    Ok(FromHandler::Result { value }) => break Outcome::from_returned(value),
                    Ok(FromHandler::Error { message }) => break Outcome::DeveloperError(message),
                    Err(e) => break Outcome::DeveloperError(format!("protocol error from the handler: {e}")),
                },
                // The handler closed its connection without a result: ask the initializer why.
                Ok(None) | Err(_) => {
                    let exit = tokio::select! {
                        e = &mut exit_rx => e.ok(),
                        _ = tokio::time::sleep(EXIT_WAIT) => None,
                    };
                    let was_killed = shared.routes.lock().expect("poisoned").get(&activation.id).is_some_and(|r| r.killed);
                    break if was_killed { Outcome::Killed } else { exit_outcome(spec, exit) };
                }
            },
            _ = killed.notified() => { kill_handler(shared); break Outcome::Killed }
            _ = tokio::time::sleep_until(deadline) => { kill_handler(shared); break Outcome::Timeout { timeout_ms } }
        }
    };
    writer.abort();
    finish(outcome, logs)
}

fn refused(rid: u64, message: String) -> Reply {
    Reply {
        op: "reply",
        rid,
        ok: false,
        value: None,
        error: Some(Value::String(message)),
        kind: None,
    }
}

fn to_host_call(call: protocol::Call) -> Result<HostCall, String> {
    let key = || {
        call.key
            .clone()
            .ok_or_else(|| format!("{} needs a string key", call.call))
    };
    Ok(match call.call.as_str() {
        "kv.get" => HostCall::KvGet { key: key()? },
        "kv.put" => HostCall::KvPut {
            key: key()?,
            value: call.value.clone().unwrap_or(Value::Null),
        },
        "kv.delete" => HostCall::KvDelete { key: key()? },
        "invoke" => HostCall::Invoke {
            function: call
                .function
                .clone()
                .ok_or("invoke needs a function name")?,
            args: call
                .args
                .clone()
                .unwrap_or(Value::Object(Default::default())),
        },
        other => return Err(format!("unknown platform call \"{other}\"")),
    })
}

fn exit_outcome(spec: &FunctionSpec, exit: Option<Exit>) -> Outcome {
    let memory_mb = spec.limits.memory_mb;
    Outcome::DeveloperError(match exit {
        Some(Exit {
            reason: Some(r), ..
        }) if r.contains("OUT_OF_MEMORY") => {
            format!("The action exceeded its memory limit of {memory_mb} MB.")
        }
        Some(Exit {
            reason: Some(r), ..
        }) => format!("The action did not produce a result: {r}."),
        Some(Exit {
            signal: Some(s), ..
        }) => {
            let name = match s {
                libc::SIGKILL => "SIGKILL",
                libc::SIGSEGV => "SIGSEGV",
                libc::SIGABRT => "SIGABRT",
                libc::SIGBUS => "SIGBUS",
                _ => "a signal",
            };
            format!(
                "The action crashed: it was killed by signal {s} ({name}) before producing a result."
            )
        }
        Some(Exit { code: Some(c), .. }) => {
            format!("The action exited with code {c} before producing a result.")
        }
        _ => "The action did not produce a result.".to_string(),
    })
}
