//! The sandbox: every Python and Node.js handler process runs confined, on Linux.
//!
//! A confined handler has
//! - **its own identity**: a user namespace in which it is uid 1000, mapped to an unprivileged host uid of its
//!   own (`uid_base` + a handler number), with no capabilities;
//! - **its own view**: a PID namespace (it sees and signals only its own processes, and `/proc` shows only them),
//!   an IPC and UTS namespace, and a mount namespace whose root is a fresh tmpfs holding read-only binds of the
//!   language runtime (`/usr`, the interpreter's prefix), a few files of `/etc` (resolver, hosts, certificates;
//!   `passwd` and `group` are its own), its code (`/action`) and the SDK (`/opt/specfaas`), plus a private,
//!   size-limited `/tmp` and a minimal `/dev`. Nothing of the data directory, the store, the platform's config,
//!   other functions or the platform's sockets is there;
//! - **its own environment**: `PATH`, `HOME`, `LANG`, the module path, and per activation the `__OW_*` variables;
//! - **its own channel**: one end of a socket pair, inherited as fd 3; nothing else can reach the platform;
//! - **limits on its whole process tree**: a memory cgroup (native allocations and Node.js buffers alike) and a
//!   pids cgroup (a fork bomb stops at the limit); killing its first process ends the PID namespace, so no child
//!   outlives the handler;
//! - **a system-call filter** ([`filter`]) whose network calls go to a supervisor ([`supervisor`]) that applies
//!   the network [`net::Policy`] and holds a speculative run's external effects until the engine releases them.
//!
//! [`Mode::Off`] runs handlers as plain child processes (clean environment, rlimits, own process group): no
//! confinement, and no held system calls. [`Sandbox::new`] in enforce mode checks that the kernel offers all of
//! the above, by starting a confined probe, and fails naming what is missing.
//!
//! **Invariant:** a confined handler is never started with part of its confinement missing: any failing step of
//! [`spawn`] fails the start.

pub mod filter;
pub mod net;
pub mod spawn;
pub mod supervisor;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use net::{Policy, Rule};
pub use supervisor::{Gate, HeldCall, HeldFate, monotonic_ns};

/// The layers that confine a handler in enforce mode, as activation records list them.
pub const LAYERS: &[&str] = &[
    "user namespace",
    "pid namespace",
    "mount namespace (read-only view)",
    "ipc and uts namespaces",
    "memory cgroup",
    "pids cgroup",
    "seccomp filter",
    "network supervisor",
    "rlimits",
];

/// Whether handlers are confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every handler confined; the platform refuses to start without what that needs.
    #[default]
    Enforce,
    /// No confinement: functions run as the platform's user, see its files and reach its network.
    Off,
}

/// The sandbox's settings (`[sandbox]` in the platform's config).
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    /// Network rules beyond the defaults.
    pub allow: Vec<Rule>,
    pub deny: Vec<Rule>,
    /// Extra host paths bound read-only into every sandbox (an interpreter outside `/usr`, shared libraries).
    pub expose: Vec<PathBuf>,
    /// The first host uid handlers map to; each live handler gets its own.
    pub uid_base: u32,
}

impl Config {
    pub const UID_BASE_DEFAULT: u32 = 200_000;
    /// Host uids handlers may use, from `uid_base` on.
    pub const UID_RANGE: u32 = 65_536;
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Enforce,
            allow: Vec::new(),
            deny: Vec::new(),
            expose: Vec::new(),
            uid_base: Config::UID_BASE_DEFAULT,
        }
    }
}

/// Numbers handlers (their cgroups, roots and uids) and sandboxes apart, across the process.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// What a handler's limits need from the kernel, per handler.
pub struct Limits {
    pub memory_mb: u64,
    pub processes: u64,
    pub tmp_mb: u64,
}

/// How much CPU a handler may take while it starts (loads its interpreter and code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// As much as anything else: an activation waits for this handler.
    Foreground,
    /// Only CPU that nothing else wants (the cpu cgroup's `cpu.idle`), until it is made [`HandlerCgroup::foreground`]:
    /// a spare started ahead of need never delays a running invocation's hand-off or kill.
    Background,
}

/// Where the cgroups of this platform's handlers live, and in which flavour.
#[derive(Debug)]
enum Cgroups {
    /// cgroup v1: a directory below the platform's own cgroup in the memory and the pids hierarchies; in the cpu
    /// hierarchy, where the machine has one with `cpu.idle` (optional: it only orders CPU, it confines nothing),
    /// handler cgroups are named with `cpu_prefix` and sit right beside the platform's threads, in its own cpu
    /// cgroup: nested in a common directory, they would compete with the platform as that directory, one
    /// ordinary entity whatever their own `cpu.idle`, and a spare starting or a killed handler dying would take
    /// CPU from the platform's threads as an equal.
    V1 { memory: PathBuf, pids: PathBuf, cpu: Option<PathBuf>, cpu_prefix: String },
    /// cgroup v2 with the memory and pids controllers (and, where it can be, cpu) delegated to this subtree.
    V2 { root: PathBuf, cpu: bool },
}

/// One handler's cgroups; removed when dropped, which must be after its processes are gone (the process runtime's
/// reaper holds it until then).
#[derive(Debug)]
pub struct HandlerCgroup {
    dirs: Vec<PathBuf>,
    memory_events: PathBuf,
    /// `pids.events` and `pids.current`, kept open: the checks after every activation are one `pread` each.
    pids_events: Option<std::fs::File>,
    pids_current: Option<std::fs::File>,
    procs: PathBuf,
    /// Its `cpu.idle`, where there is a cpu cgroup.
    cpu_idle: Option<PathBuf>,
}

impl HandlerCgroup {
    /// Gives a handler started in the [`Priority::Background`] its full CPU share: it is ready to serve.
    pub fn foreground(&self) {
        self.set_idle(false);
    }

    /// Lets the handler run only on CPU nothing else wants: before it is killed, so that tearing it down (freeing
    /// its memory, its namespaces) does not delay the report of the kill or other invocations. Returns whether
    /// it did (there is a cpu cgroup and the write took).
    pub fn background(&self) -> bool {
        self.set_idle(true)
    }

    /// Sets its `cpu.idle`; whether there is one and the write took.
    fn set_idle(&self, idle: bool) -> bool {
        self.cpu_idle.as_ref().is_some_and(|file| std::fs::write(file, if idle { "1" } else { "0" }).is_ok())
    }

    /// `oom_kill` from the memory events: how often the kernel killed a process here for memory.
    pub fn oom_kills(&self) -> u64 {
        event(&self.memory_events, "oom_kill")
    }

    /// `max` from the pids events: how often a fork failed at the limit.
    pub fn pids_refused(&self) -> u64 {
        let text = read_at_start(self.pids_events.as_ref());
        text.lines().find_map(|l| l.strip_prefix("max").and_then(|v| v.trim().parse().ok())).unwrap_or(0)
    }

    /// How many tasks (processes and threads) are in the cgroup now: one `pread`.
    pub fn tasks(&self) -> u64 {
        read_at_start(self.pids_current.as_ref()).trim().parse().unwrap_or(0)
    }

    /// How many processes are in the cgroup now.
    pub fn processes(&self) -> usize {
        std::fs::read_to_string(&self.procs).map(|t| t.lines().count()).unwrap_or(0)
    }
}

/// The start of an open control file, read again (`pread` at offset 0 renders it afresh).
fn read_at_start(file: Option<&std::fs::File>) -> String {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 256];
    let n = file.and_then(|f| f.read_at(&mut buf, 0).ok()).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn event(file: &Path, name: &str) -> u64 {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

impl Drop for HandlerCgroup {
    fn drop(&mut self) {
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The sandbox of one platform: the prepared filter, the view every handler shares, the cgroups.
pub struct Sandbox {
    pub mode: Mode,
    pub policy: Arc<Policy>,
    spawner: spawn::Spawner,
    filter: Vec<libc::sock_filter>,
    cgroups: Option<Cgroups>,
    expose: Vec<PathBuf>,
    uid_base: u32,
    /// Names this sandbox's cgroup directory and handler roots apart from other sandboxes of the process.
    id: u64,
    /// Where handler roots are made.
    roots: PathBuf,
    /// Whether spares may start in the [`Priority::Background`] (this process may give their priority back).
    can_background: bool,
}

/// What the sandbox needs and this machine lacks; the message says how to switch the sandbox off.
#[derive(Debug, thiserror::Error)]
#[error(
    "the sandbox cannot confine functions on this machine: {0}. Switch it off with `[sandbox] mode = \"off\"` in the \
     config (or `--sandbox off`) to run functions unconfined, as the platform's own user"
)]
pub struct Missing(pub String);

impl Sandbox {
    /// Prepares the sandbox under `work` (handler roots are made there). In enforce mode, checks everything a
    /// confined handler needs by starting one.
    pub fn new(config: &Config, work: &Path) -> Result<Sandbox, Missing> {
        let roots = work.join("roots");
        std::fs::create_dir_all(&roots).map_err(|e| Missing(format!("cannot create {}: {e}", roots.display())))?;
        let policy = Arc::new(Policy::for_this_host(config.allow.clone(), config.deny.clone()));
        let mut sandbox = Sandbox {
            mode: config.mode,
            policy,
            spawner: spawn::Spawner::new(),
            filter: Vec::new(),
            cgroups: None,
            expose: config.expose.clone(),
            uid_base: config.uid_base,
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            roots,
            can_background: spawn::can_restore_priority(),
        };
        if config.mode == Mode::Off {
            return Ok(sandbox);
        }
        if !cfg!(target_os = "linux") {
            return Err(Missing("it needs Linux".into()));
        }
        if config.uid_base.checked_add(Config::UID_RANGE).is_none() || config.uid_base == 0 {
            return Err(Missing(format!("uid_base {} leaves no room for {} uids", config.uid_base, Config::UID_RANGE)));
        }
        // The supervisor duplicates a calling thread's socket through a thread pidfd (Linux 6.9).
        // SAFETY: pidfd_open of this thread; the descriptor is closed at once.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::gettid(), libc::O_EXCL) };
        if pidfd < 0 {
            return Err(Missing(format!("pidfds of threads (Linux 6.9): {}", std::io::Error::last_os_error())));
        }
        // SAFETY: closing the descriptor just opened.
        unsafe { libc::close(pidfd as i32) };
        sandbox.filter = filter::build().map_err(Missing)?;
        sandbox.cgroups = Some(find_cgroups(sandbox.id)?);
        sandbox.probe()?;
        Ok(sandbox)
    }

    /// Whether handlers are confined.
    pub fn confined(&self) -> bool {
        self.mode == Mode::Enforce
    }

    /// The priority a start asked for, as this process can give it: a background start needs the right to give
    /// the handler its priority back once it is ready.
    fn priority(&self, asked: Priority) -> Priority {
        if self.can_background { asked } else { Priority::Foreground }
    }

    /// A handler started in the background is ready to serve: it gets its full share of CPU back, its threads their
    /// default priority, its cgroup (if any) out of `cpu.idle`.
    pub fn to_foreground(&self, runner: i32, cgroup: Option<&HandlerCgroup>) {
        if !self.can_background {
            return;
        }
        spawn::foreground(runner);
        if let Some(c) = cgroup {
            c.foreground();
        }
    }

    /// Lets a ready handler take only CPU that nothing else wants (`idle`, for a speculative activation), or its
    /// full share again: through its cgroup's `cpu.idle` where it has one, else through the nice value of the
    /// runner's threads where this process may raise it back; otherwise nothing changes.
    pub fn share(&self, runner: i32, cgroup: Option<&HandlerCgroup>, idle: bool) {
        if cgroup.is_some_and(|c| c.set_idle(idle)) {
            return;
        }
        if self.can_background {
            spawn::renice(runner, if idle { spawn::BACKGROUND_NICE } else { 0 });
        }
    }

    /// Starts `true` confined as a handler would be; the error names the step that failed.
    fn probe(&self) -> Result<(), Missing> {
        let exe = ["/usr/bin/true", "/bin/true"].into_iter().find(|p| Path::new(p).exists()).unwrap_or("/bin/true");
        let limits = Limits { memory_mb: 64, processes: 16, tmp_mb: 1 };
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(|e| Missing(format!("socketpair: {e}")))?;
        let job = Job {
            exe: PathBuf::from(exe),
            shell_first: false,
            args: vec![exe.to_string()],
            env: Vec::new(),
            binds: Vec::new(),
            limits,
            priority: Priority::Foreground,
            rlimits: Vec::new(),
            channel: theirs.into(),
            stderr: None,
        };
        let started = self.start(job).map_err(|e| Missing(e.0))?;
        drop(ours);
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(started.child.pid, &mut status, 0) };
        if let Some(root) = &started.root {
            let _ = std::fs::remove_dir_all(root);
        }
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            return Err(Missing(format!("a confined probe process failed (wait status {status})")));
        }
        Ok(())
    }

    /// Starts a handler process: confined in enforce mode.
    pub fn start(&self, job: Job) -> Result<Started, spawn::SpawnError> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let cstr = |s: &[u8]| CString::new(s).map_err(|_| spawn::SpawnError("a path holds a NUL byte".into()));
        let stderr = match job.stderr {
            Some(fd) => fd,
            None => std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/null")
                .map_err(|e| spawn::SpawnError(format!("/dev/null: {e}")))?
                .into(),
        };
        let mut env = vec![
            "PATH=/usr/local/bin:/usr/bin:/bin".to_string(),
            "HOME=/tmp".into(),
            "TMPDIR=/tmp".into(),
            "LANG=C.UTF-8".into(),
        ];
        env.extend(job.env.iter().map(|(k, v)| format!("{k}={v}")));
        let mut rlimits = vec![(libc::RLIMIT_CORE, 0)];
        rlimits.extend(job.rlimits);
        // Confined, the interpreter is not its PID namespace's first process: that one ignores the signals it sends
        // itself (a function's `os.kill(os.getpid(), ...)`). `/bin/sh` is, reaping orphans, and exits with the
        // handler's status (128 + the signal for a signal).
        let (exe, args) = if self.confined() && job.shell_first {
            let mut args: Vec<String> =
                vec!["/bin/sh".into(), "-c".into(), "\"$@\" & wait $!".into(), "specfaas-init".into()];
            args.push(job.exe.display().to_string());
            args.extend(job.args.iter().skip(1).cloned());
            (PathBuf::from("/bin/sh"), args)
        } else {
            (job.exe.clone(), job.args.clone())
        };
        let mut plan = spawn::Plan {
            exe: cstr(exe.as_os_str().as_bytes())?,
            argv: args.iter().map(|a| cstr(a.as_bytes())).collect::<Result<_, _>>()?,
            envp: env.iter().map(|e| cstr(e.as_bytes())).collect::<Result<_, _>>()?,
            cwd: cstr(b"/tmp")?,
            channel: job.channel,
            stderr,
            rlimits,
            confine: None,
            priority: self.priority(job.priority),
        };
        if !self.confined() {
            plan.cwd = cstr(b"/")?;
            let child = self.spawner.spawn(plan)?;
            return Ok(Started { child, cgroup: None, root: None });
        }
        let root = self.roots.join(format!("h{}-{n}", std::process::id()));
        // Not create_dir_all: a handler started while the platform shuts down must not make its work dir again.
        std::fs::create_dir(&root).map_err(|e| spawn::SpawnError(format!("{}: {e}", root.display())))?;
        let cgroup = self.make_cgroup(n, &job.limits, self.priority(job.priority))?;
        let uid = self.uid_base + (n % Config::UID_RANGE as u64) as u32;
        let (steps, moves) = self.view(&root, &job.binds, job.limits.tmp_mb)?;
        plan.confine = Some(spawn::Confinement {
            uid_map: format!("1000 {uid} 1\n"),
            gid_map: format!("1000 {uid} 1\n"),
            uid: 1000,
            gid: 1000,
            root: cstr(root.as_os_str().as_bytes())?,
            steps,
            filter: self.filter.clone(),
            cgroups: cgroup.dirs.iter().map(|d| d.join("cgroup.procs")).collect(),
            moves,
        });
        let child = match self.spawner.spawn(plan) {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&root);
                return Err(e);
            }
        };
        Ok(Started { child, cgroup: Some(cgroup), root: Some(root) })
    }

    fn make_cgroup(&self, n: u64, limits: &Limits, priority: Priority) -> Result<HandlerCgroup, spawn::SpawnError> {
        let name = format!("h{n}");
        let err = |what: &Path, e: std::io::Error| spawn::SpawnError(format!("cgroup {}: {e}", what.display()));
        let write = |file: PathBuf, value: String| std::fs::write(&file, value).map_err(|e| err(&file, e));
        let memory = limits.memory_mb * 1024 * 1024;
        let idle = if priority == Priority::Background { "1" } else { "0" };
        match self.cgroups.as_ref().expect("enforce mode has cgroups") {
            Cgroups::V1 { memory: mem_root, pids: pids_root, cpu: cpu_root, cpu_prefix } => {
                let (mem, pids) = (mem_root.join(&name), pids_root.join(&name));
                let cpu = cpu_root.as_ref().map(|c| c.join(format!("{cpu_prefix}-{name}")));
                let mut dirs = vec![mem.clone(), pids.clone()];
                dirs.extend(cpu.clone());
                for d in &dirs {
                    std::fs::create_dir_all(d).map_err(|e| err(d, e))?;
                }
                let group = HandlerCgroup {
                    dirs,
                    memory_events: mem.join("memory.oom_control"),
                    pids_events: std::fs::File::open(pids.join("pids.events")).ok(),
                    pids_current: std::fs::File::open(pids.join("pids.current")).ok(),
                    procs: pids.join("cgroup.procs"),
                    cpu_idle: cpu.map(|c| c.join("cpu.idle")),
                };
                if let Some(f) = &group.cpu_idle {
                    write(f.clone(), idle.into())?;
                }
                write(mem.join("memory.limit_in_bytes"), memory.to_string())?;
                if mem.join("memory.memsw.limit_in_bytes").exists() {
                    write(mem.join("memory.memsw.limit_in_bytes"), memory.to_string())?;
                }
                write(pids.join("pids.max"), limits.processes.to_string())?;
                Ok(group)
            }
            Cgroups::V2 { root, cpu } => {
                let dir = root.join(&name);
                std::fs::create_dir_all(&dir).map_err(|e| err(&dir, e))?;
                let group = HandlerCgroup {
                    dirs: vec![dir.clone()],
                    memory_events: dir.join("memory.events"),
                    pids_events: std::fs::File::open(dir.join("pids.events")).ok(),
                    pids_current: std::fs::File::open(dir.join("pids.current")).ok(),
                    procs: dir.join("cgroup.procs"),
                    cpu_idle: cpu.then(|| dir.join("cpu.idle")),
                };
                if let Some(f) = &group.cpu_idle {
                    write(f.clone(), idle.into())?;
                }
                write(dir.join("memory.max"), memory.to_string())?;
                let _ = write(dir.join("memory.swap.max"), "0".into());
                write(dir.join("pids.max"), limits.processes.to_string())?;
                Ok(group)
            }
        }
    }

    /// Makes the skeleton of a handler's view under `root` on the host (directories, mount points, its own
    /// `/etc/passwd`), and returns the mounts that fill it: the runtime, `/etc` essentials, its binds, `/tmp`,
    /// `/dev`, `/proc`; and the moves that put what is exposed from below the host's `/tmp` into the child's own
    /// `/tmp`, over the scratch space.
    fn view(
        &self,
        root: &Path,
        binds: &[Bind],
        tmp_mb: u64,
    ) -> Result<(Vec<spawn::Step>, Vec<spawn::Move>), spawn::SpawnError> {
        use spawn::Step;
        let err = |p: &Path, e: std::io::Error| spawn::SpawnError(format!("cannot prepare {}: {e}", p.display()));
        let cstr = |p: &Path| {
            CString::new(p.as_os_str().as_bytes()).map_err(|_| spawn::SpawnError("a path holds a NUL byte".into()))
        };
        let inside = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
        let mkdir = |p: &Path| std::fs::create_dir_all(inside(p)).map_err(|e| err(p, e));
        let file = |p: &Path, bytes: &[u8]| {
            if let Some(parent) = p.parent() {
                mkdir(parent)?;
            }
            std::fs::write(inside(p), bytes).map_err(|e| err(p, e))
        };
        let symlink =
            |target: &Path, link: &Path| std::os::unix::fs::symlink(target, inside(link)).map_err(|e| err(link, e));
        let mut steps = Vec::new();
        let tmp = Path::new("/tmp");
        let moves = std::cell::RefCell::new(Vec::new());
        let bind = |steps: &mut Vec<Step>, src: &Path, dst: &Path, device: bool| -> Result<(), spawn::SpawnError> {
            // Below /tmp, the scratch tmpfs would hide it: bound at a staging point, moved in later.
            let at = match dst.strip_prefix(tmp) {
                Ok(below) if !below.as_os_str().is_empty() => {
                    let mut moves = moves.borrow_mut();
                    let staging = PathBuf::from(format!("/.specfaas-expose/{}", moves.len()));
                    let mut dirs = Vec::new();
                    let mut dir = tmp.to_path_buf();
                    let parts: Vec<_> = below.components().collect();
                    let keep = if src.is_dir() { parts.len() } else { parts.len() - 1 };
                    for part in &parts[..keep] {
                        dir.push(part);
                        dirs.push(cstr(&dir)?);
                    }
                    let file = (!src.is_dir()).then(|| cstr(dst)).transpose()?;
                    moves.push(spawn::Move { dirs, file, from: cstr(&staging)?, to: cstr(dst)? });
                    staging
                }
                _ => dst.to_path_buf(),
            };
            if src.is_dir() {
                mkdir(&at)?;
            } else {
                file(&at, b"")?;
            }
            steps.push(Step::Bind { src: cstr(src)?, dst: cstr(&inside(&at))?, device });
            Ok(())
        };
        bind(&mut steps, Path::new("/usr"), Path::new("/usr"), false)?;
        for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
            let host = Path::new("/").join(top);
            match std::fs::read_link(&host) {
                Ok(target) => symlink(&target, &host)?,
                Err(_) if host.is_dir() => bind(&mut steps, &host, &host, false)?,
                Err(_) => {}
            }
        }
        for etc in [
            "/etc/resolv.conf",
            "/etc/hosts",
            "/etc/nsswitch.conf",
            "/etc/host.conf",
            "/etc/gai.conf",
            "/etc/localtime",
            "/etc/ld.so.cache",
            "/etc/ssl",
            "/etc/ca-certificates",
            "/etc/pki",
            "/etc/alternatives",
            "/etc/mime.types",
        ] {
            let p = Path::new(etc);
            if p.exists() {
                bind(&mut steps, &p.canonicalize().unwrap_or(p.to_path_buf()), p, false)?;
            }
        }
        for path in &self.expose {
            if path.exists() && !path.starts_with("/usr") {
                bind(&mut steps, path, path, false)?;
            }
        }
        for b in binds {
            bind(&mut steps, &b.src, &b.dst, false)?;
        }
        file(Path::new("/etc/passwd"), b"sandbox:x:1000:1000:specfaas:/tmp:/bin/sh\n")?;
        file(Path::new("/etc/group"), b"sandbox:x:1000:\n")?;
        mkdir(tmp)?;
        let options = format!("size={tmp_mb}m,mode=1777,nr_inodes=65536");
        steps.push(Step::Tmpfs { dst: cstr(&inside(tmp))?, options: CString::new(options).expect("no NUL") });
        let dev = Path::new("/dev");
        mkdir(dev)?;
        for node in ["null", "zero", "full", "random", "urandom"] {
            bind(&mut steps, &dev.join(node), &dev.join(node), true)?;
        }
        for (target, link) in [
            ("/proc/self/fd", "fd"),
            ("/proc/self/fd/0", "stdin"),
            ("/proc/self/fd/1", "stdout"),
            ("/proc/self/fd/2", "stderr"),
            ("/tmp", "shm"),
        ] {
            symlink(Path::new(target), &dev.join(link))?;
        }
        let proc = Path::new("/proc");
        mkdir(proc)?;
        steps.push(Step::Proc(cstr(&inside(proc))?));
        Ok((steps, moves.into_inner()))
    }
}

/// A host path bound read-only into one handler's view.
#[derive(Debug, Clone)]
pub struct Bind {
    pub src: PathBuf,
    pub dst: PathBuf,
}

/// One handler to start.
pub struct Job {
    pub exe: PathBuf,
    /// `args[0]` is the program's name; confined, `/bin/sh` runs it as the namespace's first process.
    pub shell_first: bool,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Its code and the SDK (host path → path inside); unconfined handlers use the host paths.
    pub binds: Vec<Bind>,
    pub limits: Limits,
    /// Its CPU share while it starts (confined, with a cpu cgroup; unconfined handlers start in the foreground).
    pub priority: Priority,
    pub rlimits: Vec<(u32, u64)>,
    pub channel: std::os::fd::OwnedFd,
    pub stderr: Option<std::os::fd::OwnedFd>,
}

/// A started handler process.
pub struct Started {
    pub child: spawn::Child,
    pub cgroup: Option<HandlerCgroup>,
    /// Its root directory on the host (the skeleton of its view), removed after it exits.
    pub root: Option<PathBuf>,
}

/// Removes the cgroups left under `parent` by platforms that are gone (`specfaas-<pid>-<n>` of a pid that no
/// longer runs): a platform killed outright, or stopped while handlers were still dying, cannot remove its own.
/// Their processes are gone, so the directories are empty.
fn sweep_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("specfaas-")).and_then(|r| r.split('-').next())
        else {
            continue;
        };
        if pid.parse::<u32>().is_err() || Path::new("/proc").join(pid).exists() {
            continue; // not ours, or its platform still runs
        }
        let dir = entry.path();
        if let Ok(handlers) = std::fs::read_dir(&dir) {
            for h in handlers.flatten().filter(|h| h.file_type().is_ok_and(|t| t.is_dir())) {
                let _ = std::fs::remove_dir(h.path());
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
}

/// The cgroups this platform's handlers go in: below the platform's own cgroup, in a directory of its own.
fn find_cgroups(id: u64) -> Result<Cgroups, Missing> {
    let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| Missing(format!("/proc/self/cgroup: {e}")))?;
    let path_of = |controller: &str| {
        own.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers.split(',').any(|c| c == controller).then(|| path.trim_start_matches('/').to_string())
        })
    };
    let base = Path::new("/sys/fs/cgroup");
    let ours = format!("specfaas-{}-{id}", std::process::id());
    let make = |dir: PathBuf| -> Result<PathBuf, Missing> {
        if let Some(parent) = dir.parent() {
            sweep_stale(parent);
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| Missing(format!("cannot create the cgroup {}: {e}", dir.display())))?;
        Ok(dir)
    };
    if base.join("memory").is_dir() && base.join("pids").is_dir() {
        let memory = make(base.join("memory").join(path_of("memory").unwrap_or_default()).join(&ours))?;
        let pids = make(base.join("pids").join(path_of("pids").unwrap_or_default()).join(&ours))?;
        let cpu =
            Some(base.join("cpu").join(path_of("cpu").unwrap_or_default())).filter(|c| c.join("cpu.idle").is_file());
        if let Some(c) = &cpu {
            sweep_stale(c);
        }
        return Ok(Cgroups::V1 { memory, pids, cpu, cpu_prefix: ours });
    }
    if base.join("cgroup.controllers").is_file() {
        let controllers = std::fs::read_to_string(base.join("cgroup.controllers")).unwrap_or_default();
        if !(controllers.contains("memory") && controllers.contains("pids")) {
            return Err(Missing("cgroup v2 offers no memory and pids controllers".into()));
        }
        let mine = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or("/").trim_start_matches('/');
        let parent = base.join(mine);
        let root = make(parent.join(&ours))?;
        let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+memory +pids");
        std::fs::write(root.join("cgroup.subtree_control"), "+memory +pids")
            .map_err(|e| Missing(format!("cannot delegate memory and pids to {}: {e}", root.display())))?;
        // The cpu controller only orders CPU between handlers starting and serving: used where it can be had.
        let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+cpu");
        let cpu = std::fs::write(root.join("cgroup.subtree_control"), "+cpu").is_ok();
        return Ok(Cgroups::V2 { root, cpu });
    }
    Err(Missing("no cgroup memory and pids controllers under /sys/fs/cgroup".into()))
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        match &self.cgroups {
            Some(Cgroups::V1 { memory, pids, .. }) => {
                for dir in [memory, pids] {
                    let _ = std::fs::remove_dir(dir);
                }
            }
            Some(Cgroups::V2 { root, .. }) => {
                let _ = std::fs::remove_dir(root);
            }
            None => {}
        }
    }
}
