//! The system-call filter every confined function runs under, compiled once to BPF with libseccomp.
//!
//! Three answers:
//! - **Refused with `EPERM`**: what no function needs and what would reach beyond its sandbox — namespaces and
//!   mounts, ptrace and other processes' memory, bpf, keyrings, perf, kernel modules, kexec, io_uring, `listen`,
//!   terminal injection, and sockets of any family but IPv4, IPv6 and routing netlink (Unix sockets only as
//!   `socketpair`). `clone3` answers `ENOSYS`, so the C library falls back to `clone`, whose flags are checked.
//! - **Supervised** (`SECCOMP_RET_USER_NOTIF`, see [`super::supervisor`]): `connect`, `bind`, `sendmsg`,
//!   `sendmmsg`, and `sendto` with a destination. The platform judges the peer, holds the call while the run is
//!   speculative, and performs it itself on a copy of the arguments, so the function cannot change them after they
//!   were checked.
//! - Everything else is allowed.

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};

/// Calls refused outright.
pub const REFUSED: &[&str] = &[
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "open_tree",
    "move_mount",
    "mount_setattr",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "pidfd_getfd",
    "kcmp",
    "bpf",
    "keyctl",
    "add_key",
    "request_key",
    "perf_event_open",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "iopl",
    "ioperm",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "open_by_handle_at",
    "name_to_handle_at",
    "quotactl",
    "syslog",
    "vhangup",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "listen",
    "fanotify_init",
    "lookup_dcookie",
    "uselib",
    "personality",
];

/// Calls the platform supervises (all of `sendto` with a destination).
pub const SUPERVISED: &[&str] = &["connect", "bind", "sendmsg", "sendmmsg"];

const NAMESPACE_FLAGS: [i32; 7] = [
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWNS,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWCGROUP,
];

/// The filter as a BPF program (an array of `sock_filter`), ready for `seccomp(2)`.
pub fn build() -> Result<Vec<libc::sock_filter>, String> {
    let fail = |what: &str, e: libseccomp::error::SeccompError| format!("seccomp filter: {what}: {e}");
    let eperm = ScmpAction::Errno(libc::EPERM);
    let mut ctx = ScmpFilterContext::new(ScmpAction::Allow).map_err(|e| fail("create", e))?;
    ctx.add_arch(ScmpArch::native()).map_err(|e| fail("arch", e))?;
    let sys = |name: &str| ScmpSyscall::from_name(name).map_err(|e| fail(name, e));
    for name in REFUSED {
        // A name this architecture lacks (iopl on arm64) has nothing to refuse.
        if let Ok(call) = ScmpSyscall::from_name(name) {
            ctx.add_rule(eperm, call).map_err(|e| fail(name, e))?;
        }
    }
    ctx.add_rule(ScmpAction::Errno(libc::ENOSYS), sys("clone3")?).map_err(|e| fail("clone3", e))?;
    for flag in NAMESPACE_FLAGS {
        let flag = flag as u64;
        let cmp = ScmpArgCompare::new(0, ScmpCompareOp::MaskedEqual(flag), flag);
        ctx.add_rule_conditional(eperm, sys("clone")?, &[cmp]).map_err(|e| fail("clone", e))?;
    }
    // TIOCSTI and TIOCLINUX push input into a terminal.
    for request in [libc::TIOCSTI, libc::TIOCLINUX] {
        let cmp = ScmpArgCompare::new(1, ScmpCompareOp::Equal, request);
        ctx.add_rule_conditional(eperm, sys("ioctl")?, &[cmp]).map_err(|e| fail("ioctl", e))?;
    }
    // Socket families: IPv4, IPv6 and routing netlink (the C library reads interface addresses with it).
    let socket = sys("socket")?;
    let allowed = [libc::AF_INET as u64, libc::AF_INET6 as u64, libc::AF_NETLINK as u64];
    for family in 0..libc::AF_NETLINK as u64 + 1 {
        if !allowed.contains(&family) {
            let cmp = ScmpArgCompare::new(0, ScmpCompareOp::Equal, family);
            ctx.add_rule_conditional(eperm, socket, &[cmp]).map_err(|e| fail("socket", e))?;
        }
    }
    let above = ScmpArgCompare::new(0, ScmpCompareOp::Greater, libc::AF_NETLINK as u64);
    ctx.add_rule_conditional(eperm, socket, &[above]).map_err(|e| fail("socket", e))?;
    let netlink = ScmpArgCompare::new(0, ScmpCompareOp::Equal, libc::AF_NETLINK as u64);
    let not_route = ScmpArgCompare::new(2, ScmpCompareOp::NotEqual, libc::NETLINK_ROUTE as u64);
    ctx.add_rule_conditional(eperm, socket, &[netlink, not_route]).map_err(|e| fail("socket", e))?;
    for name in SUPERVISED {
        ctx.add_rule(ScmpAction::Notify, sys(name)?).map_err(|e| fail(name, e))?;
    }
    let with_destination = ScmpArgCompare::new(4, ScmpCompareOp::NotEqual, 0);
    ctx.add_rule_conditional(ScmpAction::Notify, sys("sendto")?, &[with_destination]).map_err(|e| fail("sendto", e))?;
    export(&ctx)
}

/// The compiled program, through a memory file (libseccomp 2.5 exports to a file descriptor).
fn export(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>, String> {
    use std::io::{Read, Seek};
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create with a static name; the fd is owned by `file` from here on.
    let fd = unsafe { libc::memfd_create(c"specfaas-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("seccomp filter: memfd_create: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just created and is owned by nothing else.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    ctx.export_bpf(&file).map_err(|e| format!("seccomp filter: export: {e}"))?;
    let mut bytes = Vec::new();
    file.rewind().and_then(|_| file.read_to_end(&mut bytes)).map_err(|e| format!("seccomp filter: {e}"))?;
    let size = std::mem::size_of::<libc::sock_filter>();
    Ok(bytes
        .chunks_exact(size)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_filter_compiles() {
        let program = super::build().unwrap();
        assert!(program.len() > 40, "{} instructions", program.len());
    }
}
