//! Warm process functions: Python and Node.js, written the OpenWhisk way.
//!
//! Per warm function there is a pool of **handlers**: each a process of its own (a Python or Node.js runner that
//! has loaded the function's code), started through the [`Sandbox`] — confined in enforce mode — with one end of
//! a socket pair as its channel (fd 3). A handler runs one activation at a time over the line-delimited JSON
//! protocol of [`protocol`]: the platform sends `run`, answers the handler's storage reads and calls while it
//! runs, and reads the `result`.
//!
//! Hand-off: an activation goes straight to an idle handler; one spare handler is kept started, so starting one
//! (tens of milliseconds: a sandbox, an interpreter, the code) stays off the invocation's path. A spare starts in
//! the background ([`sandbox::Priority`]), so that it never takes CPU from running invocations either. A handler that
//! finishes cleanly is reused, as OpenWhisk reuses a warm container, unless it left processes behind; one that
//! was killed, timed out or crashed is never reused. A handler that ran a **speculative** activation is parked
//! until the activation is settled ([`Killer::settle`]: its result stands) and only then reused; if the run is
//! squashed instead, the handler is killed, so nothing a squashed run left in its scratch space reaches another
//! activation, unless the activation may leave it for reuse ([`AfterSquash::Reuse`], confined): then a squashed
//! activation that held no effect and left its `/tmp` as it found it gives its handler back. One that still ran
//! is **abandoned** rather than killed: its gate is shut, every call it makes from then on is refused here, and
//! it runs to its end on idle CPU (or to its timeout, and is killed then).
//!
//! Kill: the activation's gate is shut (a held call is dropped, no supervised call goes out), its channel is no
//! longer read, and the `Killed` report goes out at once, from the thread that kills. Then `SIGKILL` to the
//! handler, from this process. Confined, the handler is the first process of its PID namespace, so the kernel ends
//! every process of the namespace with it; it is put in the background first (`cpu.idle`), and the signal goes
//! from a thread of its own (see [`signaller`]), so that neither the report nor the caller waits for the kernel to
//! tear it down. Unconfined, the signal goes to its process group, at once.
//!
//! Limits: the timeout is enforced here; memory by the handler's memory cgroup (and `RLIMIT_AS` for Python, which
//! turns most overruns into a `MemoryError`) and V8's heap limit for Node.js; processes by its pids cgroup;
//! scratch space by the size of its `/tmp`; logs by a [`LogSink`]; open files by `RLIMIT_NOFILE` (1024, as
//! OpenWhisk). A failure at a limit says which limit.

pub mod protocol;

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use model::{Code, FunctionSpec, Kind};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::sandbox::{self, Bind, Gate, Job, Sandbox};
use crate::{
    Activation, AfterSquash, BoxFuture, Cpu, Done, Error, HandlerCounts, Host, HostRequest, Killer, LogSink, Outcome,
    Report, Runtime, Warm,
};
use protocol::{FromHandler, Reply, ToHandler, line};

const RUNNER_PY: &str = include_str!("../../assets/python/runner.py");
const SDK_PY: &str = include_str!("../../assets/python/specfaas/__init__.py");
const RUNNER_JS: &str = include_str!("../../assets/node/runner.js");
const SDK_JS: &str = include_str!("../../assets/node/specfaas/index.js");
const SDK_JS_PACKAGE: &str = include_str!("../../assets/node/specfaas/package.json");

/// How long a handler may take to load code before the load fails.
const INIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for a handler's exit status after its channel closed without a result.
const EXIT_WAIT: Duration = Duration::from_secs(2);
/// Open-file limit of function processes (OpenWhisk's value).
const NOFILE_MAX: u64 = 1024;
/// Descriptors the platform holds per warm handler: its channel, stderr pipe, pidfd, filter listener and two
/// cgroup files.
pub const FDS_PER_HANDLER: u64 = 6;

/// Raises this process's soft open-file limit to its hard limit, once: the platform holds
/// [`FDS_PER_HANDLER`] descriptors per warm handler, and the usual soft limit (1024) would cap a machine at about
/// 170 of them, where the hard limit is usually far higher. Any process may raise its soft limit that far; this
/// is what Go and systemd services do too. Function processes keep their own limit ([`NOFILE_MAX`]).
fn raise_open_file_limit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: plain system calls on a local struct.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
                lim.rlim_cur = lim.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
        }
    });
}

/// Idle handlers kept ready beyond the activations waiting for one.
const SPARES: usize = 1;
/// Idle handlers kept at most; more are retired when they finish. As many as the iterations of one `Map` that
/// run at once by default (`engine.workflows.map_concurrency_max`), so a fan-out of one function finds them warm.
const IDLE_MAX: usize = 16;
/// Where a confined handler sees the runners and SDKs, and its code.
const SDK_INSIDE: &str = "/opt/specfaas";
const CODE_INSIDE: &str = "/action";

/// An interpreter as found on this machine: the executable, and the directories a sandbox must show for it.
#[derive(Debug, Clone)]
struct Interpreter {
    exe: PathBuf,
    dirs: Vec<PathBuf>,
}

/// Runs Python and Node.js functions in warm handler processes.
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    sandbox: Sandbox,
    python: Result<Interpreter, String>,
    node: Result<Interpreter, String>,
    /// Directories `SPECFAAS_NODE_PATH` adds to Node.js's module path.
    node_path: Vec<PathBuf>,
    next: AtomicU64,
    /// Handlers started and retired, shared with each handler's reaper.
    counts: Arc<Counts>,
}

/// Why a handler was retired, set by the first kill; one that exits with none set exited by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retired {
    IdleMax,
    LeftProcesses,
    Killed,
    Failed,
    Released,
}

/// The counters behind [`HandlerCounts`]. A handler is counted as retired when it is reaped, so each started
/// one is counted once, with the reason of the first kill.
#[derive(Default)]
struct Counts {
    started_for_waiter: AtomicU64,
    started_spare: AtomicU64,
    waits: AtomicU64,
    wait_us: AtomicU64,
    retired_idle_max: AtomicU64,
    retired_left_processes: AtomicU64,
    retired_killed: AtomicU64,
    retired_failed: AtomicU64,
    exited: AtomicU64,
    released: AtomicU64,
}

impl Counts {
    fn ended(&self, why: Option<Retired>) {
        let counter = match why {
            Some(Retired::IdleMax) => &self.retired_idle_max,
            Some(Retired::LeftProcesses) => &self.retired_left_processes,
            Some(Retired::Killed) => &self.retired_killed,
            Some(Retired::Failed) => &self.retired_failed,
            Some(Retired::Released) => &self.released,
            None => &self.exited,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> HandlerCounts {
        let Counts {
            started_for_waiter,
            started_spare,
            waits,
            wait_us,
            retired_idle_max,
            retired_left_processes,
            retired_killed,
            retired_failed,
            exited,
            released,
        } = self;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        HandlerCounts {
            started_for_waiter: n(started_for_waiter),
            started_spare: n(started_spare),
            waits: n(waits),
            wait_us: n(wait_us),
            retired_idle_max: n(retired_idle_max),
            retired_left_processes: n(retired_left_processes),
            retired_killed: n(retired_killed),
            retired_failed: n(retired_failed),
            exited: n(exited),
            released: n(released),
        }
    }
}

impl ProcessRuntime {
    /// Prepares `dir` with the runners and SDKs, and confines every handler ([`sandbox::Mode::Enforce`]).
    pub fn new(dir: impl AsRef<Path>) -> Result<Self, Error> {
        Self::with_sandbox(dir, &sandbox::Config::default())
    }

    /// Prepares `dir` with the runners and SDKs; handlers run under `config`. In enforce mode this fails, naming
    /// what is missing, where the machine cannot confine them.
    pub fn with_sandbox(dir: impl AsRef<Path>, config: &sandbox::Config) -> Result<Self, Error> {
        let dir = dir.as_ref().to_path_buf();
        raise_open_file_limit();
        let io = |e: std::io::Error| Error::Io(format!("cannot prepare {}: {e}", dir.display()));
        std::fs::create_dir_all(dir.join("rt/py/specfaas")).map_err(io)?;
        std::fs::create_dir_all(dir.join("rt/js/node_modules/specfaas")).map_err(io)?;
        std::fs::create_dir_all(dir.join("fn")).map_err(io)?;
        for (path, text) in [
            ("rt/py/runner.py", RUNNER_PY),
            ("rt/py/specfaas/__init__.py", SDK_PY),
            ("rt/js/runner.js", RUNNER_JS),
            ("rt/js/node_modules/specfaas/index.js", SDK_JS),
            ("rt/js/node_modules/specfaas/package.json", SDK_JS_PACKAGE),
        ] {
            std::fs::write(dir.join(path), text).map_err(io)?;
        }
        let node_path: Vec<PathBuf> = std::env::var("SPECFAAS_NODE_PATH")
            .unwrap_or_default()
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        let python = find_interpreter(
            "python3",
            &["-c", "import os, sys; print(os.path.realpath(sys.executable)); print(sys.base_prefix)"],
        );
        let node = find_interpreter("node", &["-p", "require('fs').realpathSync(process.execPath)"]);
        let mut config = config.clone();
        for interp in [&python, &node].into_iter().flatten() {
            config.expose.extend(interp.dirs.iter().cloned());
        }
        config.expose.extend(node_path.iter().cloned());
        let sandbox = Sandbox::new(&config, &dir).map_err(|e| Error::Io(e.to_string()))?;
        let counts = Arc::default();
        Ok(ProcessRuntime {
            inner: Arc::new(Inner { dir, sandbox, python, node, node_path, next: AtomicU64::new(0), counts }),
        })
    }

    /// The network rules handlers run under (the platform adds its API address).
    pub fn policy_handle(&self) -> Arc<sandbox::Policy> {
        self.inner.sandbox.policy.clone()
    }

    /// Whether handlers are confined.
    pub fn confined(&self) -> bool {
        self.inner.sandbox.confined()
    }
}

/// Finds `name` on `PATH` and asks it where it lives: the first line printed is its real executable, later lines
/// directories it needs (Python's prefix).
fn find_interpreter(name: &str, args: &[&str]) -> Result<Interpreter, String> {
    let out = std::process::Command::new(name)
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {name}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{name} failed to report where it lives ({})", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().map(|l| PathBuf::from(l.trim()));
    let exe = lines.next().filter(|p| p.is_absolute()).ok_or_else(|| format!("{name} printed no executable path"))?;
    let mut dirs: Vec<PathBuf> = lines.filter(|p| p.is_absolute()).collect();
    if let Some(parent) = exe.parent() {
        dirs.push(parent.to_path_buf());
    }
    dirs.retain(|d| !d.starts_with("/usr") && d != Path::new("/"));
    Ok(Interpreter { exe, dirs })
}

impl Runtime for ProcessRuntime {
    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Python, Kind::Node]
    }

    fn handlers(&self) -> HandlerCounts {
        self.inner.counts.snapshot()
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
            let inner = &self.inner;
            let n = inner.next.fetch_add(1, Ordering::Relaxed);
            let io = |e: std::io::Error| Error::Io(e.to_string());
            let fn_dir = inner.dir.join("fn").join(format!("{n}"));
            std::fs::create_dir_all(&fn_dir).map_err(io)?;
            let file = match spec.kind {
                Kind::Python => "action.py",
                Kind::Node => "action.js",
                Kind::Native | Kind::Wasm => unreachable!("native and wasm code is not Source"),
            };
            std::fs::write(fn_dir.join(file), text).map_err(io)?;
            let launch = launch(inner, &spec, &fn_dir, file, main)?;
            let shared = Arc::new(Shared {
                spec: spec.clone(),
                runtime: inner.clone(),
                launch,
                fn_dir,
                pool: Mutex::new(Pool::default()),
            });
            // The first handler loads the code: its outcome is the load's.
            let first = start_handler(&shared, sandbox::Priority::Foreground).await?;
            shared.handler_ready(first);
            shared.request_spawns();
            Ok(Arc::new(ProcessWarm { shared }) as Arc<dyn Warm>)
        })
    }
}

/// How a function's handlers are started.
struct Launch {
    exe: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    binds: Vec<Bind>,
    rlimits: Vec<(u32, u64)>,
}

fn launch(inner: &Inner, spec: &FunctionSpec, fn_dir: &Path, file: &str, main: &str) -> Result<Launch, Error> {
    let confined = inner.sandbox.confined();
    let (sdk, code) = if confined {
        (PathBuf::from(SDK_INSIDE), PathBuf::from(CODE_INSIDE))
    } else {
        (inner.dir.join("rt"), fn_dir.to_path_buf())
    };
    let binds = vec![
        Bind { src: inner.dir.join("rt"), dst: PathBuf::from(SDK_INSIDE) },
        Bind { src: fn_dir.to_path_buf(), dst: PathBuf::from(CODE_INSIDE) },
    ];
    let code_file = code.join(file).display().to_string();
    let memory = spec.limits.memory_mb;
    let missing =
        |kind: &str, e: &String| Error::Init { function: spec.name.clone(), message: format!("no {kind}: {e}") };
    let mut rlimits = vec![(libc::RLIMIT_NOFILE, NOFILE_MAX)];
    let (exe, args, env) = match spec.kind {
        Kind::Python => {
            let interp = inner.python.as_ref().map_err(|e| missing("Python", e))?;
            rlimits.push((libc::RLIMIT_AS, memory * 1024 * 1024));
            let args = vec![
                // A full path: Python finds its prefix (and standard library) from it.
                interp.exe.display().to_string(),
                "-u".into(),
                // No `site` at start: the runner puts site-packages on the path itself, without running the host's
                // `.pth` hooks (arbitrary code, tens of ms per handler start on some machines) in a tenant's process.
                "-S".into(),
                sdk.join("py/runner.py").display().to_string(),
                code_file,
                main.to_string(),
            ];
            let env = vec![
                ("PYTHONPATH".to_string(), sdk.join("py").display().to_string()),
                ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
            ];
            (interp.exe.clone(), args, env)
        }
        Kind::Node => {
            let interp = inner.node.as_ref().map_err(|e| missing("Node.js", e))?;
            let args = vec![
                interp.exe.display().to_string(),
                format!("--max-old-space-size={memory}"),
                sdk.join("js/runner.js").display().to_string(),
                code_file,
                main.to_string(),
            ];
            let mut path = sdk.join("js/node_modules").display().to_string();
            for extra in &inner.node_path {
                path.push(':');
                path.push_str(&extra.display().to_string());
            }
            (interp.exe.clone(), args, vec![("NODE_PATH".to_string(), path)])
        }
        Kind::Native | Kind::Wasm => unreachable!("native and wasm code is not Source"),
    };
    Ok(Launch { exe, args, env, binds, rlimits })
}

type HandlerLines = Lines<BufReader<OwnedReadHalf>>;

/// How a handler process ended.
#[derive(Debug, Clone)]
struct Exit {
    code: Option<i32>,
    signal: Option<i32>,
}

/// A handler process, shared by its connection, its activation, its reaper and its supervisor.
struct Proc {
    /// What is killed: confined, the first process of its PID namespace (`/bin/sh`, with the runner its child).
    pid: i32,
    /// The CPU-time clock of the runner itself (all its threads), set once it is ready.
    cpu_clock: std::sync::OnceLock<Option<libc::clockid_t>>,
    /// The runner's pid (confined, the child of `pid`), set once it is ready.
    runner: std::sync::OnceLock<i32>,
    /// Whether it takes only idle CPU now ([`Cpu::Idle`]: it runs a speculative activation).
    idle: std::sync::atomic::AtomicBool,
    /// Forks the pids cgroup had refused when last looked at: more now means this activation met the limit.
    pids_refused_seen: AtomicU64,
    confined: bool,
    /// Set by the first kill: a killed activation, its end and the retired handler each ask for one, and only the
    /// first signal does anything (each further one is a system call that wakes the dying process again).
    signalled: std::sync::atomic::AtomicBool,
    /// Why it was retired: set by the first kill, read by its reaper.
    retired: Arc<std::sync::OnceLock<Retired>>,
    gate: Arc<Gate>,
    /// Shared with the reaper, so the cgroup is removed only after the processes are gone.
    cgroup: Option<Arc<sandbox::HandlerCgroup>>,
    /// Tasks (processes and threads) in its cgroup once it was ready: the runner's own, which live as long as it.
    /// No more after an activation means no process was left behind, without listing the cgroup.
    tasks_at_ready: AtomicU64,
    root: Option<PathBuf>,
    exit: watch::Receiver<Option<Exit>>,
    stderr_tail: Arc<Mutex<String>>,
}

impl Proc {
    /// Ends the handler. Confined with a cpu cgroup, it is first put in the background, where it takes only CPU
    /// nothing else wants, and the signal is left to the [`signaller`]: the caller (the engine squashing a run,
    /// a task reporting) does not wait for it, nor for the kernel's teardown that the signal starts. Otherwise
    /// the signal goes at once.
    fn kill(self: &Arc<Self>, why: Retired) {
        if self.exit.borrow().is_some() {
            return; // reaped: the pid may belong to someone else now, and it went by itself
        }
        let _ = self.retired.set(why);
        if self.signalled.swap(true, Ordering::AcqRel) {
            return;
        }
        let demoted = self.confined && self.cgroup.as_ref().is_some_and(|c| c.background());
        if !demoted || signaller().send(self.clone()).is_err() {
            self.signal();
        }
    }

    /// `SIGKILL`, now.
    fn signal(&self) {
        if self.exit.borrow().is_some() {
            return; // reaped: the pid may belong to someone else now
        }
        let target = if self.confined { self.pid } else { -self.pid };
        // SAFETY: kill(2) on our own child (confined: the first process of its PID namespace; else its group).
        unsafe {
            libc::kill(target, libc::SIGKILL);
        }
    }

    /// Gives the handler the CPU share `cpu`, if that changes it.
    fn share(&self, sandbox: &sandbox::Sandbox, cpu: Cpu) {
        let idle = cpu == Cpu::Idle;
        if self.idle.swap(idle, Ordering::AcqRel) == idle || self.exit.borrow().is_some() {
            return; // unchanged; or reaped, and the pid may belong to someone else now
        }
        if let Some(&runner) = self.runner.get() {
            sandbox.share(runner, self.cgroup.as_deref(), idle);
        }
    }

    fn cpu_us(&self) -> Option<u64> {
        if self.exit.borrow().is_some() {
            return None; // reaped: the pid, and so its clock, may belong to someone else now
        }
        cpu_us(self.cpu_clock.get().copied().flatten())
    }

    fn stderr_tail(&self) -> String {
        lock(&self.stderr_tail).clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(root) = &self.root {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

/// An idle or busy handler: its process and its channel.
struct Handler {
    proc_: Arc<Proc>,
    lines: HandlerLines,
    write: OwnedWriteHalf,
}

impl Handler {
    /// Retires it, for `why`.
    fn retire(self, why: Retired) {
        self.proc_.kill(why);
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        // A handler that is let go is retired: its channel closes, and it goes. Any reason to retire it was given
        // before; none means it was let go with its function.
        self.proc_.kill(Retired::Released);
    }
}

#[derive(Default)]
struct Pool {
    idle: Vec<Handler>,
    /// Activations waiting for a handler, in arrival order. Those with the full CPU share are served first.
    waiters: VecDeque<Waiter>,
    /// Handlers being started, and how many of them in the foreground.
    starting: usize,
    starting_foreground: usize,
}

/// An activation waiting for a handler.
struct Waiter {
    tx: oneshot::Sender<Result<Handler, String>>,
    /// Whether it has the full CPU share: it never had [`Cpu::Idle`], or it was promoted while it waited.
    full: Arc<AtomicBool>,
}

impl Waiter {
    fn full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }
}

struct Shared {
    spec: Arc<FunctionSpec>,
    runtime: Arc<Inner>,
    launch: Launch,
    fn_dir: PathBuf,
    pool: Mutex<Pool>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.fn_dir);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The thread that sends the `SIGKILL` of handlers already put in the background, at `SCHED_IDLE`.
///
/// `kill(2)` wakes the dying processes, and on a kernel that does not preempt (`preempt=none`) a woken one can hold
/// the CPU of the thread that signalled it until the next tick, 4 ms at 250 Hz: measured, that was the p99 of a
/// kill. Here it holds this thread's CPU instead, and at `SCHED_IDLE` waking this thread never preempts the one
/// that asks. The handler, in the background already, takes only CPU nothing else wants until then.
fn signaller() -> &'static std::sync::mpsc::Sender<Arc<Proc>> {
    static TX: std::sync::OnceLock<std::sync::mpsc::Sender<Arc<Proc>>> = std::sync::OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Arc<Proc>>();
        let started = std::thread::Builder::new().name("specfaas-signal".into()).spawn(move || {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: sets this thread's own policy; the parameter outlives the call.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
            for proc_ in rx {
                proc_.signal();
            }
        });
        // Without the thread, the receiver is gone and every send fails: callers signal at once.
        drop(started);
        tx
    })
}

/// Starts one handler and waits until it has loaded the code. A [`sandbox::Priority::Background`] start (a spare)
/// takes only CPU nothing else wants until it is ready.
async fn start_handler(shared: &Arc<Shared>, priority: sandbox::Priority) -> Result<Handler, Error> {
    let spec = &shared.spec;
    let fail = |message: String| Error::Init { function: spec.name.clone(), message };
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(|e| Error::Io(format!("socketpair: {e}")))?;
    let (err_r, err_w) = std::io::pipe().map_err(|e| Error::Io(format!("pipe: {e}")))?;
    let l = &shared.launch;
    let job = Job {
        exe: l.exe.clone(),
        shell_first: true,
        args: l.args.clone(),
        env: l.env.clone(),
        binds: l.binds.clone(),
        limits: sandbox::Limits {
            memory_mb: spec.limits.memory_mb,
            processes: spec.limits.processes,
            tmp_mb: spec.limits.tmp_mb,
        },
        priority,
        rlimits: l.rlimits.clone(),
        channel: OwnedFd::from(theirs),
        stderr: Some(OwnedFd::from(err_w)),
    };
    let runtime = shared.runtime.clone();
    let started = tokio::task::spawn_blocking(move || runtime.sandbox.start(job))
        .await
        .map_err(|e| Error::Io(format!("the spawner failed: {e}")))?
        .map_err(|e| fail(e.0))?;
    let sandbox::Started { child, cgroup, root } = started;
    let counts = &shared.runtime.counts;
    match priority {
        sandbox::Priority::Foreground => &counts.started_for_waiter,
        sandbox::Priority::Background => &counts.started_spare,
    }
    .fetch_add(1, Ordering::Relaxed);
    let cgroup = cgroup.map(Arc::new);
    let stderr_tail = Arc::new(Mutex::new(String::new()));
    {
        let tail = stderr_tail.clone();
        let receiver = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(err_r))
            .map_err(|e| Error::Io(format!("stderr pipe: {e}")))?;
        tokio::spawn(async move {
            let mut receiver = receiver;
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = receiver.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let mut t = lock(&tail);
                t.push_str(&String::from_utf8_lossy(&buf[..n]));
                if t.len() > 4096 {
                    let cut = (t.len() - 4096..t.len()).find(|i| t.is_char_boundary(*i)).unwrap_or(t.len());
                    t.drain(..cut);
                }
            }
        });
    }
    let (exit_tx, exit_rx) = watch::channel(None);
    let pid = child.pid;
    let retired = Arc::new(std::sync::OnceLock::new());
    tokio::spawn(reap(child.pidfd, pid, exit_tx, cgroup.clone(), retired.clone(), counts.clone()));
    let gate = Arc::new(Gate::default());
    if let Some(listener) = child.listener {
        let (gate, policy) = (gate.clone(), shared.runtime.sandbox.policy.clone());
        std::thread::Builder::new()
            .name(format!("specfaas-supervise-{pid}"))
            .spawn(move || sandbox::supervisor::supervise(listener, gate, policy))
            .map_err(|e| Error::Io(format!("cannot start the supervisor: {e}")))?;
    }
    let proc_ = Arc::new(Proc {
        pid,
        cpu_clock: std::sync::OnceLock::new(),
        runner: std::sync::OnceLock::new(),
        idle: Default::default(),
        pids_refused_seen: AtomicU64::new(0),
        signalled: Default::default(),
        retired,
        confined: shared.runtime.sandbox.confined(),
        gate,
        cgroup,
        tasks_at_ready: AtomicU64::new(u64::MAX),
        root,
        exit: exit_rx,
        stderr_tail,
    });
    ours.set_nonblocking(true).map_err(|e| Error::Io(e.to_string()))?;
    let stream = tokio::net::UnixStream::from_std(ours).map_err(|e| Error::Io(e.to_string()))?;
    let (read, write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let handler_proc = proc_.clone();
    let first = tokio::time::timeout(INIT_TIMEOUT, lines.next_line()).await;
    let first = match first {
        Err(_) => {
            handler_proc.kill(Retired::Failed);
            return Err(fail(format!("loading the code took longer than {}s", INIT_TIMEOUT.as_secs())));
        }
        Ok(line) => line.ok().flatten(),
    };
    match first.as_deref().map(serde_json::from_str::<FromHandler>) {
        Some(Ok(FromHandler::Ready { .. })) => {
            let runner = if proc_.confined { first_child(pid).unwrap_or(pid) } else { pid };
            let _ = proc_.cpu_clock.set(cpu_clock(runner));
            let _ = proc_.runner.set(runner);
            if priority == sandbox::Priority::Background {
                // Ready to serve: from now on it competes for CPU like anything else.
                shared.runtime.sandbox.to_foreground(runner, proc_.cgroup.as_deref());
            }
            if let Some(c) = &proc_.cgroup {
                proc_.tasks_at_ready.store(c.tasks(), Ordering::Relaxed);
            }
            Ok(Handler { proc_, lines, write })
        }
        Some(Ok(FromHandler::InitError { error })) => {
            handler_proc.kill(Retired::Failed);
            Err(fail(error))
        }
        other => {
            // It died while loading: wait a moment for its exit status and last words.
            let mut exit = handler_proc.exit.clone();
            let _ = tokio::time::timeout(EXIT_WAIT, exit.wait_for(|e| e.is_some())).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            let status = exit.borrow().clone();
            handler_proc.kill(Retired::Failed);
            let what = match other {
                None => format!("the runner exited ({}) before it was ready", describe(status.as_ref())),
                Some(r) => format!("the runner broke the protocol: {r:?}"),
            };
            Err(fail(format!("{what}: {}", handler_proc.stderr_tail().trim())))
        }
    }
}

/// The first child of `pid` (its pid in this process's namespace).
fn first_child(pid: i32) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

fn describe(exit: Option<&Exit>) -> String {
    match exit {
        Some(Exit { signal: Some(s), .. }) => format!("signal {s}"),
        Some(Exit { code: Some(c), .. }) => format!("exit code {c}"),
        _ => "unknown status".into(),
    }
}

/// Waits for a handler process to exit, reaps it, publishes how it ended, and counts it retired with the reason its
/// first kill gave. Its cgroup (this task's share of it) is let go only then, so the last holder removes it empty.
async fn reap(
    pidfd: OwnedFd,
    pid: i32,
    exit: watch::Sender<Option<Exit>>,
    _cgroup: Option<Arc<sandbox::HandlerCgroup>>,
    retired: Arc<std::sync::OnceLock<Retired>>,
    counts: Arc<Counts>,
) {
    reap_exit(pidfd, pid, exit).await;
    counts.ended(retired.get().copied());
}

async fn reap_exit(pidfd: OwnedFd, pid: i32, exit: watch::Sender<Option<Exit>>) {
    // SAFETY: the AsyncFd owns the pidfd, so the descriptor outlives its registration.
    let registered = unsafe { tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) };
    if let Ok(fd) = registered {
        let _ = fd.readable().await;
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own child's pidfd into a local siginfo.
        let r = unsafe { libc::waitid(libc::P_PIDFD, fd.as_raw_fd() as libc::id_t, &mut info, libc::WEXITED) };
        if r == 0 {
            // SAFETY: waitid filled the siginfo of a CLD_* event.
            let (code, status) = unsafe { (info.si_code, info.si_status()) };
            let e = if code == libc::CLD_EXITED && status > 128 && status < 128 + 65 {
                // `/bin/sh` reports a handler killed by a signal as 128 + the signal.
                Exit { code: None, signal: Some(status - 128) }
            } else if code == libc::CLD_EXITED {
                Exit { code: Some(status), signal: None }
            } else {
                Exit { code: None, signal: Some(status) }
            };
            let _ = exit.send(Some(e));
            return;
        }
    }
    // SAFETY: fall back to reaping by pid.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    let _ = exit.send(Some(Exit { code: None, signal: None }));
}

impl Shared {
    /// Starts handlers until the pool covers the waiting activations with the full CPU share plus the spares. A
    /// start for such an activation runs in the foreground, a spare's in the background.
    ///
    /// A speculative activation ([`Cpu::Idle`]) never has a handler started for it: it takes a handler that is
    /// idle, or the spare, and waits behind every non-speculative one for a handler that frees up. So speculation
    /// grows a pool by one background spare at a time, and never by a burst of starts that would take CPU from
    /// non-speculative work; one promoted while it waits counts from then on, and gets a foreground start.
    fn request_spawns(self: &Arc<Self>) {
        let mut pool = lock(&self.pool);
        let full = pool.waiters.iter().filter(|w| w.full()).count();
        loop {
            let priority = if pool.idle.len() + pool.starting_foreground < full {
                sandbox::Priority::Foreground
            } else if pool.idle.len() + pool.starting < full + SPARES {
                sandbox::Priority::Background
            } else {
                break;
            };
            let foreground = priority == sandbox::Priority::Foreground;
            pool.starting += 1;
            pool.starting_foreground += usize::from(foreground);
            let me = Arc::downgrade(self);
            tokio::spawn(async move {
                let Some(shared) = me.upgrade() else { return };
                let started = start_handler(&shared, priority).await;
                {
                    let mut pool = lock(&shared.pool);
                    pool.starting -= 1;
                    pool.starting_foreground -= usize::from(foreground);
                }
                match started {
                    Ok(h) => shared.handler_ready(h),
                    Err(e) => {
                        // Tell one waiting activation why, instead of trying forever; with none left, stop there.
                        let mut pool = lock(&shared.pool);
                        while let Some(w) = pool.next_waiter() {
                            if w.tx.send(Err(e.to_string())).is_ok() {
                                break;
                            }
                        }
                        if pool.waiters.is_empty() {
                            return;
                        }
                    }
                }
                // Speculative waiters have no start of their own: each start that ends asks again, so that while any
                // waits with no handler idle, one is on its way.
                shared.request_spawns();
            });
        }
    }

    /// A handler started, or finished an activation cleanly: give it to a waiting activation (one with the full
    /// CPU share first), or keep it idle.
    fn handler_ready(&self, mut handler: Handler) {
        let mut pool = lock(&self.pool);
        while let Some(waiter) = pool.next_waiter() {
            match waiter.tx.send(Ok(handler)) {
                Ok(()) => return,
                Err(Ok(h)) => handler = h, // that activation gave up waiting
                Err(Err(_)) => return,
            }
        }
        if pool.idle.len() < IDLE_MAX {
            pool.idle.push(handler);
        } else {
            handler.retire(Retired::IdleMax);
        }
    }
}

impl Pool {
    /// The waiter served next: the first with the full CPU share, or else the first.
    fn next_waiter(&mut self) -> Option<Waiter> {
        let i = self.waiters.iter().position(Waiter::full).unwrap_or(0);
        self.waiters.remove(i)
    }
}

struct ProcessWarm {
    shared: Arc<Shared>,
}

/// The CPU-time clock of process `pid` (all its threads), for [`cpu_us`]. `None` where the kernel refuses it.
fn cpu_clock(pid: i32) -> Option<libc::clockid_t> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: clock_getcpuclockid writes one clockid_t into a local.
    (unsafe { libc::clock_getcpuclockid(pid, &mut clock) } == 0).then_some(clock)
}

/// CPU time the process of `clock` has used so far, in microseconds: one system call, no file to read or parse, so
/// measuring a speculative run costs it almost nothing. `None` once the process is gone.
fn cpu_us(clock: Option<libc::clockid_t>) -> Option<u64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into a local.
    (unsafe { libc::clock_gettime(clock?, &mut ts) } == 0)
        .then(|| ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000)
}

/// What a [`Killer`] needs to stop (or settle) one activation.
#[derive(Default)]
struct KillState {
    killed: bool,
    /// Killed while it ran, but left to run to its end with every call refused, so that its handler may serve
    /// again ([`KillState::abandon`]).
    abandoned: bool,
    settled: bool,
    /// The CPU share the activation has now: what it asked for, until it is promoted.
    cpu: Cpu,
    /// The process of the handler running the activation.
    running: Option<Arc<Proc>>,
    /// The handler of a speculative activation that finished cleanly, until the activation is settled.
    parked: Option<Handler>,
    /// What the handler's scratch space held when a speculative activation that may leave it for reuse
    /// ([`AfterSquash::Reuse`]) started; cleared if the activation held an effect. A kill after it finished reuses
    /// the parked handler only if its scratch space is just as it was.
    scratch_at_start: Option<Scratch>,
    /// The handler's CPU time when this (speculative) activation started, and what it had used when killed.
    cpu_start_us: Option<u64>,
    cpu_used_us: Option<u64>,
    /// Where the report goes, until it is sent: by the kill, at once, or by the activation's task.
    done: Option<Done>,
    /// The activation's log lines so far.
    logs: Option<LogSink>,
}

impl KillState {
    /// Kills the handler, if the activation has one, and returns what it held. A measured activation's CPU time is
    /// read first, while the process still exists.
    fn kill_handler(&mut self, why: Retired) -> Vec<sandbox::HeldCall> {
        let mut held = Vec::new();
        if let Some(p) = &self.running {
            if let (Some(start), None) = (self.cpu_start_us, self.cpu_used_us) {
                self.cpu_used_us = p.cpu_us().map(|now| now.saturating_sub(start));
            }
            held = p.gate.kill();
            p.kill(why);
        }
        if let Some(parked) = self.parked.take() {
            parked.retire(why);
        }
        held
    }

    /// Abandons the running activation instead of killing its handler, if it may be reused after a squash
    /// ([`AfterSquash::Reuse`], confined) and has held no effect: its gate is shut, and the activation's task refuses
    /// whatever it asks from now on and reuses the handler if it ends cleanly with its scratch space as it was.
    /// Returns what the gate held, or `None` where it kills instead.
    fn abandon(&mut self, sandbox: &sandbox::Sandbox) -> Option<Vec<sandbox::HeldCall>> {
        let p = self.running.as_ref()?;
        self.scratch_at_start.as_ref()?;
        if let (Some(start), None) = (self.cpu_start_us, self.cpu_used_us) {
            self.cpu_used_us = p.cpu_us().map(|now| now.saturating_sub(start));
        }
        let held = p.gate.kill();
        if !held.is_empty() {
            p.kill(Retired::Killed); // it held an effect: nothing of it may serve again
            return Some(held);
        }
        self.abandoned = true;
        p.share(sandbox, Cpu::Idle); // what it still does is waste: it must not delay anyone
        Some(held)
    }

    /// The parked handler of a squashed activation, if it may serve others: the activation held no effect, and
    /// the handler's scratch space is as it was when the activation started. Anything else retires it.
    fn reusable_after_squash(&mut self) -> Option<Handler> {
        let parked = self.parked.take()?;
        match self.scratch_at_start.take() {
            Some(before) if scratch(parked.proc_.pid).as_ref() == Some(&before) => Some(parked),
            _ => {
                parked.retire(Retired::Killed);
                None
            }
        }
    }

    /// The parked handler of a finished speculative activation, if it may serve others whatever becomes of the
    /// activation: as [`KillState::reusable_after_squash`] would find it. Otherwise it stays parked.
    fn release_if_clean(&mut self) -> Option<Handler> {
        let parked = self.parked.as_ref()?;
        let before = self.scratch_at_start.as_ref()?;
        if scratch(parked.proc_.pid).as_ref() == Some(before) { self.parked.take() } else { None }
    }

    fn logs(&mut self) -> Vec<String> {
        self.logs.take().map(LogSink::into_lines).unwrap_or_default()
    }
}

impl Warm for ProcessWarm {
    fn spec(&self) -> &FunctionSpec {
        &self.shared.spec
    }

    fn start(&self, activation: Activation, host: Host, done: Done) -> Killer {
        let logs = LogSink::new(self.shared.spec.limits.logs_bytes_max);
        let cpu = activation.cpu;
        let state = Arc::new(Mutex::new(KillState { done: Some(done), logs: Some(logs), cpu, ..Default::default() }));
        let full = Arc::new(AtomicBool::new(cpu == Cpu::Full));
        let killed = Arc::new(Notify::new());
        let kill = {
            let state = state.clone();
            let killed = killed.clone();
            let shared = Arc::downgrade(&self.shared);
            move || {
                // The kill reports at once: once the gate is shut and the channel is no longer read, nothing the
                // run does reaches anyone, so the report waits neither for the signal nor for a task to wake up.
                let mut s = lock(&state);
                s.killed = true;
                let shared = shared.upgrade();
                if let (Some(h), Some(shared)) = (s.reusable_after_squash(), &shared) {
                    reuse(shared, h); // it ran to the end and left nothing behind: as after a clean activation
                }
                let held = match shared.as_ref().and_then(|sh| s.abandon(&sh.runtime.sandbox)) {
                    Some(held) => held,
                    None => s.kill_handler(Retired::Killed),
                };
                let report = s.done.take().map(|done| {
                    let report = Report { outcome: Outcome::Killed, logs: s.logs(), cpu_us: s.cpu_used_us, held };
                    (done, report)
                });
                drop(s);
                if let Some((done, report)) = report {
                    done(report);
                }
                killed.notify_one();
                if let Some(shared) = &shared {
                    shared.request_spawns(); // a handler retired here may leave waiters with none on its way
                }
            }
        };
        let settle = {
            let state = state.clone();
            let shared = Arc::downgrade(&self.shared);
            move || {
                let mut s = lock(&state);
                s.settled = true;
                let parked = s.parked.take();
                drop(s);
                if let (Some(h), Some(shared)) = (parked, shared.upgrade()) {
                    // At once (two reads of open cgroup files), so the next invocation finds it idle.
                    reuse(&shared, h);
                }
            }
        };
        let promote = {
            let state = state.clone();
            let shared = Arc::downgrade(&self.shared);
            let full = full.clone();
            move || {
                let mut s = lock(&state);
                s.cpu = Cpu::Full;
                full.store(true, Ordering::Relaxed);
                let Some(shared) = shared.upgrade() else { return };
                match &s.running {
                    Some(p) => p.share(&shared.runtime.sandbox, Cpu::Full),
                    None => {
                        drop(s);
                        shared.request_spawns(); // if it waits for a handler, one starts in the foreground now
                    }
                }
            }
        };
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let (report, reusable) = run_activation(&shared, activation, host, &state, &full, &killed).await;
            let done = lock(&state).done.take(); // none if a kill reported first
            if let Some(done) = done {
                done(report);
            }
            // After the report, and after the invocation has run on it, so that the check for leftover
            // processes is not on the invocation's path.
            if let Some(handler) = reusable {
                tokio::task::yield_now().await;
                reuse(&shared, handler);
            } else {
                // A speculative run parked its handler. If it held no effect and left its scratch space as it found
                // it, the handler serves again now, whatever becomes of the run: a squash would reuse it as it is
                // ([`AfterSquash::Reuse`]), and so does a commit. Parked, it would be held for the whole time the
                // run stays speculative, and the pool would need handlers that sequential runs do not.
                tokio::task::yield_now().await;
                let released = lock(&state).release_if_clean();
                if let Some(handler) = released {
                    reuse(&shared, handler);
                }
            }
        });
        Killer::new(kill).with_settle(settle).with_promote(promote)
    }
}

/// A handler that finished cleanly and is settled goes back to the pool, unless it left processes behind.
fn reuse(shared: &Arc<Shared>, handler: Handler) {
    // Confined, a handler is two processes: the namespace's `/bin/sh` and the runner.
    let own = if handler.proc_.confined { 2 } else { 1 };
    if let Some(c) = &handler.proc_.cgroup {
        // Forks refused at the limit during a clean activation are its business, not a later one's failure.
        handler.proc_.pids_refused_seen.store(c.pids_refused(), Ordering::Relaxed);
        // No more tasks than the runner's own (which it keeps as long as it lives): nothing was left behind. More:
        // threads, or processes; only listing the cgroup tells.
        let more_tasks = c.tasks() > handler.proc_.tasks_at_ready.load(Ordering::Relaxed);
        if more_tasks && c.processes() > own {
            handler.retire(Retired::LeftProcesses); // its children would outlive the activation: retire it, with them
            shared.request_spawns();
            return;
        }
    }
    shared.handler_ready(handler);
}

/// One activation's wait for a handler. It is counted, with its time, however it ends: with a handler, an error,
/// or the activation killed while it waited. A handler sent to it after it gave up goes back to the pool.
struct Waiting<'a> {
    shared: &'a Shared,
    rx: oneshot::Receiver<Result<Handler, String>>,
    since: std::time::Instant,
}

impl<'a> Waiting<'a> {
    fn new(shared: &'a Shared, rx: oneshot::Receiver<Result<Handler, String>>) -> Self {
        shared.runtime.counts.waits.fetch_add(1, Ordering::Relaxed);
        Waiting { shared, rx, since: std::time::Instant::now() }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.shared.runtime.counts.wait_us.fetch_add(self.since.elapsed().as_micros() as u64, Ordering::Relaxed);
        self.rx.close();
        if let Ok(Ok(handler)) = self.rx.try_recv() {
            self.shared.handler_ready(handler);
        }
    }
}

/// Takes an idle handler, or waits for one; `full` says whether the activation has the full CPU share now.
async fn acquire(shared: &Arc<Shared>, full: &Arc<AtomicBool>) -> Result<Handler, Error> {
    let waiter = {
        let mut pool = lock(&shared.pool);
        // A handler that died while idle (killed by the kernel, crashed in a background thread) is dropped.
        while let Some(h) = pool.idle.pop() {
            if h.proc_.exit.borrow().is_none() {
                drop(pool);
                shared.request_spawns();
                return Ok(h);
            }
        }
        let (tx, rx) = oneshot::channel();
        pool.waiters.push_back(Waiter { tx, full: full.clone() });
        rx
    };
    shared.request_spawns();
    let mut waiting = Waiting::new(shared, waiter);
    match (&mut waiting.rx).await {
        Ok(Ok(h)) => Ok(h),
        Ok(Err(e)) => Err(Error::Io(e)),
        Err(_) => Err(Error::Io("the runtime was shut down".into())),
    }
}

async fn run_activation(
    shared: &Arc<Shared>,
    activation: Activation,
    host: Host,
    state: &Mutex<KillState>,
    full: &Arc<AtomicBool>,
    killed: &Notify,
) -> (Report, Option<Handler>) {
    let spec = &shared.spec;
    let timeout_ms = spec.limits.timeout_ms;
    let finish = |outcome| Report { outcome, logs: lock(state).logs(), cpu_us: None, held: Vec::new() };
    if lock(state).killed {
        return (finish(Outcome::Killed), None);
    }
    // No deadline while it waits: the timeout bounds the function's run, as OpenWhisk's does, and a speculative
    // activation may wait long for a handler to free up.
    let mut handler = tokio::select! {
        h = acquire(shared, full) => match h {
            Ok(h) => h,
            Err(e) => return (finish(Outcome::DeveloperError(e.to_string())), None),
        },
        _ = killed.notified() => return (finish(Outcome::Killed), None),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    if lock(state).killed {
        shared.handler_ready(handler); // it ran nothing of this activation: it serves another
        return (finish(Outcome::Killed), None);
    }
    let proc_ = handler.proc_.clone();
    proc_.gate.begin(host.clone(), activation.speculative);
    {
        let mut s = lock(state);
        s.running = Some(proc_.clone());
        proc_.share(&shared.runtime.sandbox, s.cpu);
        if activation.speculative {
            s.cpu_start_us = proc_.cpu_us();
            if activation.after_squash == AfterSquash::Reuse && proc_.confined {
                // Confined, its `/tmp` is its own: what it holds now tells whether the activation wrote to it.
                s.scratch_at_start = scratch(proc_.pid);
            }
        }
        if s.killed {
            s.kill_handler(Retired::Killed);
            return (Report { outcome: Outcome::Killed, logs: s.logs(), cpu_us: None, held: Vec::new() }, None);
        }
    }
    let mut exit = proc_.exit.clone();
    let run = line(&ToHandler::Run { id: &activation.id, args: &activation.input, env: &activation.env });
    let (reply_tx, mut reply_rx) = mpsc::unbounded_channel::<(u64, crate::Reply)>();
    let mut clean = false;
    // Calls sent on and not answered yet; once the activation is abandoned, each is refused here, and so is every
    // later call, so that it runs to its end without the platform.
    let mut outstanding = std::collections::HashSet::new();
    let mut draining = false;
    let refusal = |rid| line(&to_reply(rid, crate::Reply::Refused("the activation was squashed".into())));
    let outcome = if handler.write.write_all(run.as_bytes()).await.is_err() {
        Outcome::DeveloperError("the handler went away before the activation started".into())
    } else {
        loop {
            tokio::select! {
                next = handler.lines.next_line() => match next {
                    Ok(Some(l)) => match serde_json::from_str::<FromHandler>(&l) {
                        Ok(FromHandler::Log { stream, line }) => {
                            if let Some(logs) = lock(state).logs.as_mut() {
                                logs.push(&stream, &line)
                            }
                        }
                        Ok(FromHandler::Call(call)) if draining => {
                            if handler.write.write_all(refusal(call.rid).as_bytes()).await.is_err() {
                                continue; // the read side will see the handler go
                            }
                        }
                        Ok(FromHandler::Call(call)) => {
                            let rid = call.rid;
                            outstanding.insert(rid);
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
                        Ok(FromHandler::Error { message, name: Some(name), cause }) => {
                            clean = true;
                            let message = with_limits(spec, &proc_, message);
                            break Outcome::Threw { name, cause: cause.unwrap_or_default(), message }
                        }
                        Ok(FromHandler::Error { message, name: None, .. }) => {
                            clean = true;
                            break Outcome::DeveloperError(with_limits(spec, &proc_, message))
                        }
                        Ok(FromHandler::Ready { .. } | FromHandler::InitError { .. }) => {
                            break Outcome::DeveloperError("protocol error from the handler: a second hello".into())
                        }
                        Err(e) => break Outcome::DeveloperError(format!("protocol error from the handler: {e}")),
                    },
                    // The handler closed its channel without a result: wait for its exit status.
                    Ok(None) | Err(_) => {
                        let _ = tokio::time::timeout(EXIT_WAIT, exit.wait_for(|e| e.is_some())).await;
                        let status = exit.borrow().clone();
                        break if lock(state).killed { Outcome::Killed } else { exit_outcome(spec, &proc_, status) };
                    }
                },
                Some((rid, reply)) = reply_rx.recv() => {
                    if !outstanding.remove(&rid) {
                        continue; // refused already, when the activation was abandoned
                    }
                    let msg = line(&to_reply(rid, reply));
                    if handler.write.write_all(msg.as_bytes()).await.is_err() {
                        continue; // the read side will see the handler go
                    }
                }
                _ = killed.notified(), if !draining => {
                    if !lock(state).abandoned {
                        break Outcome::Killed;
                    }
                    draining = true;
                    for rid in std::mem::take(&mut outstanding) {
                        if handler.write.write_all(refusal(rid).as_bytes()).await.is_err() {
                            break; // the read side will see the handler go
                        }
                    }
                }
                Ok(()) = exit.changed() => {
                    let status = exit.borrow().clone();
                    if status.is_some() {
                        break if lock(state).killed { Outcome::Killed } else { exit_outcome(spec, &proc_, status) };
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break Outcome::Timeout { timeout_ms },
            }
        }
    };
    let held = proc_.gate.end();
    let mut s = lock(state);
    // A kill races with what it causes (the channel closing, the exit): whichever the loop saw first, an
    // activation that was killed before it finished cleanly reports Killed.
    let outcome = if s.killed && !clean { Outcome::Killed } else { outcome };
    if let (Some(start), None) = (s.cpu_start_us, s.cpu_used_us) {
        s.cpu_used_us = proc_.cpu_us().map(|now| now.saturating_sub(start));
    }
    let cpu = s.cpu_used_us;
    let logs = s.logs();
    let mut reusable = None;
    if clean && !s.killed {
        // The handler will serve others: a late kill of this activation must not reach it, and they get a full
        // share of CPU (until one of them asks for less).
        s.running = None;
        proc_.share(&shared.runtime.sandbox, Cpu::Full);
        if activation.speculative && !s.settled {
            // Until its run is settled, nothing it left in its scratch space may reach another activation.
            if !held.is_empty() {
                s.scratch_at_start = None; // it held an effect: never reused if squashed
            }
            s.parked = Some(handler);
        } else {
            reusable = Some(handler);
        }
    } else if clean && s.abandoned && s.scratch_at_start.take().is_some_and(|b| scratch(proc_.pid) == Some(b)) {
        // Squashed while it ran, it ran to its end on refusals and left nothing behind: it may serve again.
        s.running = None;
        proc_.share(&shared.runtime.sandbox, Cpu::Full);
        reusable = Some(handler);
    } else {
        // Never reuse a handler that was killed, timed out, crashed or broke the protocol.
        let why = if s.killed { Retired::Killed } else { Retired::Failed };
        s.kill_handler(why);
        drop(s);
        handler.retire(why);
        shared.request_spawns();
    }
    (Report { outcome, logs, cpu_us: cpu, held }, reusable)
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

/// A function's own error, with the limit it ran into, if it did: processes (a fork refused at the pids limit) or
/// scratch space (its `/tmp` is full).
fn with_limits(spec: &FunctionSpec, proc_: &Proc, message: String) -> String {
    let mut message = message;
    let refused = proc_.cgroup.as_ref().map_or(0, |c| c.pids_refused());
    if refused > proc_.pids_refused_seen.swap(refused, Ordering::Relaxed) {
        message.push_str(&format!(
            " The action reached its limit of {} processes and threads (processes).",
            spec.limits.processes
        ));
    }
    if proc_.confined && scratch_full(proc_.pid) {
        message.push_str(&format!(" The action filled its scratch space of {} MB (tmp_mb).", spec.limits.tmp_mb));
    }
    message
}

/// What a handler's scratch space holds: every entry below its `/tmp` on the same file system (a bind exposed
/// into it is another), `/tmp` itself included, with its size, modification time and mode.
type Scratch = std::collections::BTreeMap<PathBuf, (u64, i64, i64, u32)>;

/// The most entries [`scratch`] looks at; a scratch space with more is never compared (its handler is retired).
const SCRATCH_ENTRIES_MAX: usize = 256;

/// What the `/tmp` of handler `pid` holds; `None` if it cannot be read or holds over [`SCRATCH_ENTRIES_MAX`]
/// entries.
fn scratch(pid: i32) -> Option<Scratch> {
    use std::os::unix::fs::MetadataExt;
    let root = PathBuf::from(format!("/proc/{pid}/root/tmp"));
    let top = std::fs::symlink_metadata(&root).ok()?;
    let mut found = Scratch::new();
    found.insert(PathBuf::new(), (top.len(), top.mtime(), top.mtime_nsec(), top.mode()));
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).ok()? {
            let path = entry.ok()?.path();
            let m = std::fs::symlink_metadata(&path).ok()?;
            if m.dev() != top.dev() {
                continue; // a bind exposed from the host
            }
            if found.len() >= SCRATCH_ENTRIES_MAX {
                return None;
            }
            if m.is_dir() {
                dirs.push(path.clone());
            }
            found.insert(path.strip_prefix(&root).ok()?.to_path_buf(), (m.len(), m.mtime(), m.mtime_nsec(), m.mode()));
        }
    }
    Some(found)
}

/// Whether the handler's `/tmp` has no room left.
fn scratch_full(pid: i32) -> bool {
    let Ok(path) = std::ffi::CString::new(format!("/proc/{pid}/root/tmp")) else { return false };
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs into a local struct.
    unsafe { libc::statvfs(path.as_ptr(), &mut st) == 0 && st.f_bavail == 0 }
}

fn exit_outcome(spec: &FunctionSpec, proc_: &Proc, exit: Option<Exit>) -> Outcome {
    let memory_mb = spec.limits.memory_mb;
    let tail = proc_.stderr_tail();
    let oom = proc_.cgroup.as_ref().is_some_and(|c| c.oom_kills() > 0) || tail.contains("heap out of memory");
    Outcome::DeveloperError(match exit {
        _ if oom => format!("The action exceeded its memory limit of {memory_mb} MB."),
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
