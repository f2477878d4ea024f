//! Starting one handler process, confined or not, with `clone(2)` and `execve(2)`.
//!
//! Everything the child needs is prepared before the clone ([`Plan`]: C strings, the mount steps, the BPF
//! program), because the child of a multithreaded process may only make raw system calls: no allocation, no
//! locks. The parent writes the child's user-namespace maps and puts it in its cgroups while the child waits on a
//! pipe; the child then builds its view, drops to its unprivileged identity, installs the system-call filter,
//! hands the filter's notification descriptor to the parent, and executes the interpreter. A failing step is
//! reported on a status pipe with its name and `errno`, so a start that fails says exactly where.
//!
//! All clones happen on two long-lived threads ([`Spawner`]): a child's parent-death signal fires when the thread
//! that cloned it exits, and these live as long as the platform. One serves starts an activation waits for; the
//! other, at the lowest priority (nice 19), serves [`Priority::Background`] starts (spares): the kernel's share of
//! a start (copying the mount namespace in `clone`, building the view) then never delays a running invocation,
//! and the child inherits the priority until [`foreground`] gives it back.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc;

use super::Priority;

/// One mount of a confined child's view, under its new root (whose directories, mount points and own files the
/// parent made on the host before the clone: a child whose host uid is unmapped in its namespace cannot create
/// files).
pub enum Step {
    /// A read-only bind mount; `device` keeps device nodes usable (no `nodev`).
    Bind {
        src: CString,
        dst: CString,
        device: bool,
    },
    Tmpfs {
        dst: CString,
        options: CString,
    },
    Proc(CString),
}

/// What confines a child: its namespaces, identity, view and filter.
pub struct Confinement {
    /// `"<inside> <outside> 1"` for `uid_map` and `gid_map`.
    pub uid_map: String,
    pub gid_map: String,
    /// The unprivileged identity inside the user namespace.
    pub uid: u32,
    pub gid: u32,
    /// The host directory that becomes the new root (bound onto itself, then made read-only).
    pub root: CString,
    pub steps: Vec<Step>,
    pub filter: Vec<libc::sock_filter>,
    /// `cgroup.procs` files the child is put in before it goes on.
    pub cgroups: Vec<std::path::PathBuf>,
    /// What was exposed from below the host's `/tmp`, moved into the child's own `/tmp` once the child is in its
    /// new root (bound at its place before, it would be hidden under the scratch tmpfs).
    pub moves: Vec<Move>,
}

/// One exposed mount, moved from a staging mount point into the child's `/tmp`. The child makes the mount point
/// there itself, as the sandbox identity (the host cannot reach that tmpfs, and the child's own host uid is
/// unmapped in its namespace, so it cannot create files as itself).
pub struct Move {
    /// Directories to make, outermost first.
    pub dirs: Vec<CString>,
    /// An empty file to make, when what is moved is a file.
    pub file: Option<CString>,
    pub from: CString,
    pub to: CString,
}

/// Everything a child needs, prepared before the clone.
pub struct Plan {
    pub exe: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub cwd: CString,
    /// The child's end of its channel to the platform; it becomes fd 3.
    pub channel: OwnedFd,
    /// Where the child's stderr goes.
    pub stderr: OwnedFd,
    pub rlimits: Vec<(u32, u64)>,
    pub confine: Option<Confinement>,
    /// Which spawner thread clones it, and so the priority it starts at.
    pub priority: Priority,
}

/// A started child.
pub struct Child {
    pub pid: i32,
    pub pidfd: OwnedFd,
    /// The filter's notification descriptor, for the supervisor (confined children only).
    pub listener: Option<OwnedFd>,
}

/// Why a child could not start.
#[derive(Debug)]
pub struct SpawnError(pub String);

/// The steps a child reports failing at, by number.
const STAGES: &[&str] = &[
    "wait for the platform",
    "move descriptors",
    "make mounts private",
    "mount the new root",
    "build the view",
    "enter the new root",
    "make the root read-only",
    "set up standard streams",
    "drop to the sandbox identity",
    "set limits",
    "set no_new_privs",
    "install the system-call filter",
    "hand over the notification descriptor",
    "enter the working directory",
    "execute the interpreter",
    "expose a path from below /tmp",
];

const LISTENER: u32 = 0xffff;
/// Where the child keeps its status and sync pipes once its standard streams (0..=3) are set up.
const STATUS_FD: RawFd = 4;
const SYNC_FD: RawFd = 5;
/// `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` (Linux 5.19).
const SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: libc::c_ulong = 1 << 5;

/// A plan, and where its outcome goes.
type SpawnJob = (Plan, mpsc::Sender<Result<Child, SpawnError>>);

/// The nice value of background starts.
pub(super) const BACKGROUND_NICE: libc::c_int = 19;

/// Runs every clone on two threads that live as long as the process: one per [`Priority`].
pub struct Spawner {
    foreground: std::sync::Mutex<mpsc::Sender<SpawnJob>>,
    background: std::sync::Mutex<mpsc::Sender<SpawnJob>>,
}

impl Spawner {
    pub fn new() -> Spawner {
        let thread = |name: &str, nice: libc::c_int| {
            let (tx, rx) = mpsc::channel::<SpawnJob>();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    if nice != 0 {
                        // SAFETY: setpriority of this thread (who = 0); lowering one's own priority needs nothing.
                        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
                    }
                    while let Ok((plan, reply)) = rx.recv() {
                        let _ = reply.send(spawn(plan));
                    }
                })
                .expect("the spawner thread starts");
            std::sync::Mutex::new(tx)
        };
        Spawner { foreground: thread("specfaas-spawner", 0), background: thread("specfaas-spawn-bg", BACKGROUND_NICE) }
    }

    /// Starts a child (blocking until it has executed the interpreter or failed).
    pub fn spawn(&self, plan: Plan) -> Result<Child, SpawnError> {
        let (tx, rx) = mpsc::channel();
        let jobs = match plan.priority {
            Priority::Foreground => &self.foreground,
            Priority::Background => &self.background,
        };
        jobs.lock()
            .unwrap_or_else(|e| e.into_inner())
            .send((plan, tx))
            .map_err(|_| SpawnError("the spawner thread is gone".into()))?;
        rx.recv().map_err(|_| SpawnError("the spawner thread is gone".into()))?
    }
}

/// Gives every thread of process `pid` the default priority (nice 0) back, after a background start: what the
/// background spawner's nice value left on it. Needs `CAP_SYS_NICE` (see [`can_restore_priority`]).
pub fn foreground(pid: i32) {
    renice(pid, 0);
}

/// Gives every thread of process `pid` the nice value `nice`. Raising it back needs `CAP_SYS_NICE`.
pub fn renice(pid: i32, nice: libc::c_int) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return };
    for task in tasks.flatten() {
        if let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<libc::id_t>().ok()) {
            // SAFETY: setpriority of one thread of our own child.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
        }
    }
}

/// Whether this process may raise a thread's priority back to nice 0 (`CAP_SYS_NICE`): without it, starts stay
/// in the foreground, rather than leave handlers at nice 19.
pub fn can_restore_priority() -> bool {
    const CAP_SYS_NICE: u32 = 23;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim().to_string();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_NICE) != 0)
}

impl Default for Spawner {
    fn default() -> Self {
        Spawner::new()
    }
}

fn os_err(what: &str) -> SpawnError {
    os_error(what, std::io::Error::last_os_error())
}

/// `what` failed with `e`; running out of descriptors says which limit and how to raise it.
fn os_error(what: &str, e: std::io::Error) -> SpawnError {
    if e.raw_os_error() != Some(libc::EMFILE) {
        return SpawnError(format!("{what}: {e}"));
    }
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a plain system call on a local struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    SpawnError(format!(
        "{what}: {e}: the platform's open-file limit (RLIMIT_NOFILE, {}) is reached; each warm handler holds {} \
         descriptors: raise the hard limit (`ulimit -Hn`, or LimitNOFILE= under systemd) or keep fewer functions warm",
        lim.rlim_cur,
        crate::process::FDS_PER_HANDLER
    ))
}

/// A close-on-exec pipe, as descriptors.
fn pipe() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    let (r, w) = std::io::pipe().map_err(|e| os_error("pipe", e))?;
    Ok((r.into(), w.into()))
}

fn spawn(plan: Plan) -> Result<Child, SpawnError> {
    let (sync_r, sync_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let argv: Vec<*const libc::c_char> =
        plan.argv.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
    let envp: Vec<*const libc::c_char> =
        plan.envp.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
    let mut flags = libc::SIGCHLD as libc::c_ulong | libc::CLONE_PIDFD as libc::c_ulong;
    if plan.confine.is_some() {
        flags |= (libc::CLONE_NEWUSER
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWCGROUP) as libc::c_ulong;
    }
    let mut pidfd: libc::c_int = -1;
    // SAFETY: a fork-like clone (no CLONE_VM, no new stack); the child only makes raw system calls on data
    // prepared above and never returns from `child`.
    let pid =
        unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, &mut pidfd as *mut libc::c_int, 0usize, 0usize) as i32 };
    if pid < 0 {
        return Err(os_err("clone"));
    }
    if pid == 0 {
        // SAFETY: in the child; see `child`.
        unsafe {
            // The parent's ends: closed at once, so that a parent gone before waking the child is an end of file
            // here, not a wait forever.
            libc::close(sync_w.as_raw_fd());
            libc::close(status_r.as_raw_fd());
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            child(&plan, &argv, &envp, sync_r.as_raw_fd(), status_w.as_raw_fd())
        }
    }
    // SAFETY: CLONE_PIDFD stored a fresh descriptor owned by nothing else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop(status_w);
    drop(sync_r);
    let kill = |e: SpawnError| {
        // SAFETY: our own child; reaped here so it leaves no zombie.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        Err(e)
    };
    if let Some(c) = &plan.confine {
        let write = |file: String, text: &str| {
            std::fs::write(&file, text).map_err(|e| SpawnError(format!("cannot write {file}: {e}")))
        };
        let setup = write(format!("/proc/{pid}/uid_map"), &c.uid_map)
            .and_then(|_| write(format!("/proc/{pid}/setgroups"), "deny"))
            .and_then(|_| write(format!("/proc/{pid}/gid_map"), &c.gid_map))
            .and_then(|_| {
                c.cgroups.iter().try_for_each(|procs| {
                    std::fs::write(procs, pid.to_string())
                        .map_err(|e| SpawnError(format!("cannot put the handler in {}: {e}", procs.display())))
                })
            });
        if let Err(e) = setup {
            return kill(e);
        }
    }
    // SAFETY: writing one byte to our own pipe.
    if unsafe { libc::write(sync_w.as_raw_fd(), [1u8].as_ptr().cast(), 1) } != 1 {
        return kill(os_err("cannot wake the child"));
    }
    let mut listener = None;
    loop {
        let mut msg = [0u8; 8];
        // SAFETY: reading into a local buffer from our own pipe.
        let n = unsafe { libc::read(status_r.as_raw_fd(), msg.as_mut_ptr().cast(), 8) };
        if n == 0 {
            break; // the exec closed the pipe: the interpreter runs
        }
        if n != 8 {
            return kill(os_err("reading the child's status"));
        }
        let tag = u32::from_ne_bytes(msg[..4].try_into().expect("4 bytes"));
        let value = u32::from_ne_bytes(msg[4..].try_into().expect("4 bytes"));
        if tag == LISTENER {
            // SAFETY: pidfd_getfd copies the child's descriptor into this process.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), value as i32, 0) as i32 };
            if fd < 0 {
                return kill(os_err("cannot take the filter's notification descriptor"));
            }
            // SAFETY: a fresh descriptor, owned from here on.
            listener = Some(unsafe { OwnedFd::from_raw_fd(fd) });
            // SAFETY: one byte to our own pipe.
            if unsafe { libc::write(sync_w.as_raw_fd(), [1u8].as_ptr().cast(), 1) } != 1 {
                return kill(os_err("cannot wake the child"));
            }
            continue;
        }
        let stage = STAGES.get(tag as usize).copied().unwrap_or("an unknown step");
        let errno = std::io::Error::from_raw_os_error(value as i32);
        // SAFETY: reaping our own child, which exits right after reporting.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        return Err(os_error(&format!("the sandboxed process could not {stage}"), errno));
    }
    Ok(Child { pid, pidfd, listener })
}

/// Reports `stage` and `errno` to the parent and exits.
unsafe fn fail(status: RawFd, stage: usize) -> ! {
    // SAFETY: raw system calls only.
    unsafe {
        let errno = *libc::__errno_location() as u32;
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&(stage as u32).to_ne_bytes());
        msg[4..].copy_from_slice(&errno.to_ne_bytes());
        libc::write(status, msg.as_ptr().cast(), 8);
        libc::_exit(127);
    }
}

/// The child: builds its confinement and executes the interpreter. Raw system calls only.
unsafe fn child(
    plan: &Plan,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    sync: RawFd,
    status: RawFd,
) -> ! {
    // SAFETY: every call below is a raw system call on data prepared before the clone.
    unsafe {
        let mut byte = 0u8;
        if libc::read(sync, (&mut byte as *mut u8).cast(), 1) != 1 {
            fail(status, 0);
        }
        // Descriptors the child keeps move above the ones it sets up (0..=3).
        let high = |fd: RawFd| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
        let (channel, stderr, status_high, sync) =
            (high(plan.channel.as_raw_fd()), high(plan.stderr.as_raw_fd()), high(status), high(sync));
        if channel < 0 || stderr < 0 || status_high < 0 || sync < 0 {
            fail(status, 1);
        }
        let status = status_high;
        let check = |stage: usize, r: libc::c_long| {
            if r < 0 {
                fail(status, stage)
            }
        };
        let null = std::ptr::null::<libc::c_char>();
        if let Some(c) = &plan.confine {
            check(2, libc::mount(null, c"/".as_ptr(), null, libc::MS_REC | libc::MS_PRIVATE, null.cast()) as _);
            check(3, libc::mount(c.root.as_ptr(), c.root.as_ptr(), null, libc::MS_BIND, null.cast()) as _);
            for step in &c.steps {
                check(4, run_step(step) as _);
            }
            check(5, libc::chdir(c.root.as_ptr()) as _);
            check(5, libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()));
            check(5, libc::umount2(c".".as_ptr(), libc::MNT_DETACH) as _);
            check(5, libc::chdir(c"/".as_ptr()) as _);
            if !c.moves.is_empty() {
                // From here on, files are made as the sandbox identity (mapped; the user namespace's first process
                // may set it); nothing after this needs to reach beyond the view.
                libc::syscall(libc::SYS_setfsuid, c.uid);
                libc::syscall(libc::SYS_setfsgid, c.gid);
            }
            for m in &c.moves {
                for dir in &m.dirs {
                    if libc::mkdir(dir.as_ptr(), 0o755) < 0 && *libc::__errno_location() != libc::EEXIST {
                        fail(status, 15);
                    }
                }
                if let Some(file) = &m.file {
                    let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC, 0o644);
                    check(15, fd as _);
                    libc::close(fd);
                }
                check(15, libc::mount(m.from.as_ptr(), m.to.as_ptr(), null, libc::MS_MOVE, null.cast()) as _);
            }
            let ro = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
            check(6, libc::mount(null, c"/".as_ptr(), null, ro, null.cast()) as _);
            libc::sethostname(c"specfaas".as_ptr(), 8);
        }
        let devnull = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        check(7, devnull as _);
        for (from, to) in [(devnull, 0), (devnull, 1), (stderr, 2), (channel, 3)] {
            check(7, libc::dup2(from, to) as _);
        }
        // The status and sync pipes stay open until the exec closes them.
        for (from, to) in [(status, STATUS_FD), (sync, SYNC_FD)] {
            check(7, libc::dup3(from, to, libc::O_CLOEXEC) as _);
        }
        let (status, sync) = (STATUS_FD, SYNC_FD);
        let check = |stage: usize, r: libc::c_long| {
            if r < 0 {
                fail(status, stage)
            }
        };
        // Nothing else reaches the interpreter. The rest of the platform's descriptors are closed here, not only
        // marked close-on-exec: the open-file limit set below counts from the lowest free number, and a platform
        // with more descriptors than that limit would leave the filter's notification descriptor no room.
        check(7, libc::syscall(libc::SYS_close_range, SYNC_FD as u32 + 1, u32::MAX, 0u32));
        if let Some(c) = &plan.confine {
            // Raw system calls: the C library's wrappers would try to change every thread of the parent, which
            // this child does not have, and wait for them forever.
            check(8, libc::syscall(libc::SYS_setresgid, c.gid, c.gid, c.gid));
            check(8, libc::syscall(libc::SYS_setresuid, c.uid, c.uid, c.uid));
        } else {
            // Its own process group, so a kill reaches its children too.
            libc::setsid();
        }
        // After the identity change, which clears it: die with the platform.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        for &(resource, value) in &plan.rlimits {
            let lim = libc::rlimit { rlim_cur: value as libc::rlim_t, rlim_max: value as libc::rlim_t };
            check(9, libc::setrlimit(resource as _, &lim) as _);
        }
        if let Some(c) = &plan.confine {
            check(10, libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) as _);
            let prog = libc::sock_fprog { len: c.filter.len() as u16, filter: c.filter.as_ptr() as *mut _ };
            // WAIT_KILLABLE_RECV: once the supervisor holds a call, only a fatal signal ends the wait, so a
            // restarted call can never be performed twice.
            let listener = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
                &prog as *const libc::sock_fprog,
            );
            check(11, listener);
            let mut msg = [0u8; 8];
            msg[..4].copy_from_slice(&LISTENER.to_ne_bytes());
            msg[4..].copy_from_slice(&(listener as u32).to_ne_bytes());
            if libc::write(status, msg.as_ptr().cast(), 8) != 8
                || libc::read(sync, (&mut byte as *mut u8).cast(), 1) != 1
            {
                fail(status, 12);
            }
            libc::close(listener as RawFd);
        }
        check(13, libc::chdir(plan.cwd.as_ptr()) as _);
        libc::execve(plan.exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
        fail(status, 14)
    }
}

/// One step of the view; returns a negative value on failure.
unsafe fn run_step(step: &Step) -> i32 {
    let null = std::ptr::null::<libc::c_char>();
    // SAFETY: raw system calls on prepared strings.
    unsafe {
        match step {
            Step::Bind { src, dst, device } => {
                if libc::mount(src.as_ptr(), dst.as_ptr(), null, libc::MS_BIND | libc::MS_REC, null.cast()) < 0 {
                    return -1;
                }
                // A remount must keep the flags the source's mount has locked (nosuid, nodev, noexec, atime).
                let mut st: libc::statvfs = std::mem::zeroed();
                if libc::statvfs(dst.as_ptr(), &mut st) < 0 {
                    return -1;
                }
                let f = st.f_flag as libc::c_ulong;
                let mut flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID;
                for (st_flag, ms_flag) in [
                    (libc::ST_NODEV, libc::MS_NODEV),
                    (libc::ST_NOEXEC, libc::MS_NOEXEC),
                    (libc::ST_NOATIME, libc::MS_NOATIME),
                    (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
                    (libc::ST_RELATIME, libc::MS_RELATIME),
                ] {
                    if f & st_flag != 0 {
                        flags |= ms_flag;
                    }
                }
                if !device {
                    flags |= libc::MS_NODEV;
                }
                libc::mount(null, dst.as_ptr(), null, flags, null.cast())
            }
            Step::Tmpfs { dst, options } => libc::mount(
                c"tmpfs".as_ptr(),
                dst.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                options.as_ptr().cast(),
            ),
            Step::Proc(dst) => libc::mount(
                c"proc".as_ptr(),
                dst.as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                null.cast(),
            ),
        }
    }
}
