//! The supervisor of one confined handler: it answers the system calls the filter hands to the platform
//! (`connect`, `bind`, `sendto` with a destination, `sendmsg`, `sendmmsg`).
//!
//! For each call it copies the arguments out of the handler's memory once, judges the peer by the network
//! [`Policy`], and, for an external effect of a speculative run, holds the call: it asks the platform through
//! the activation's [`Host`] with [`Call::Syscall`], which the engine answers only once the run is
//! non-speculative, and never if the run is squashed (its handler is killed, and the call dropped). Then the
//! supervisor performs the call itself, on a duplicate of the handler's socket and the copied arguments, so the
//! handler cannot change what was checked. The [`Gate`] is what the supervisor knows about the activation the
//! handler is running.
//!
//! A held `connect` on a non-blocking socket (Node.js's sockets, Python's with a timeout) is not waited for on the
//! supervisor's thread: the supervisor leaves the notification unanswered, and the platform's answer to the
//! [`Call::Syscall`] performs the connect and answers the kernel itself, in the thread that released it. A
//! release then costs no thread wake-up. Calls that could block (a blocking socket's connect, sends) are
//! performed by the supervisor's thread, after it is woken.
//!
//! **Invariant:** no supervised call of a speculative run reaches the network before the engine released it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libseccomp::{ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags, ScmpSyscall};
use serde::Serialize;
use serde_json::Value;

use super::net::{Policy, Verdict, parse_sockaddr};
use crate::{Call, Host, HostRequest, Reply};

/// Largest datagram or message a supervised send carries (a larger stream send is sent in part, as the kernel may
/// do too; a larger datagram gets `EMSGSIZE`).
const SEND_BYTES_MAX: usize = 256 * 1024;
const IOV_MAX: usize = 1024;

/// A held call, as the activation record shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeldCall {
    /// What was held, e.g. `connect tcp 93.184.216.34:443`.
    pub call: String,
    /// How long it waited, in microseconds.
    pub waited_us: u64,
    pub fate: HeldFate,
    /// From the engine's release to the call going on, in microseconds (released calls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_us: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HeldFate {
    /// The run became non-speculative; the call was performed.
    Released,
    /// The run was squashed or ended first; the call was never performed.
    Dropped,
}

/// Where the handler is between activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between activations: an effect now is refused.
    Idle,
    Running,
    /// The activation was killed: held calls are dropped.
    Killed,
}

/// What the handler is doing, as its supervisor sees it.
struct Current {
    phase: Phase,
    host: Option<Host>,
    speculative: bool,
    /// Peers already released for this activation: sending to them again is no new effect.
    released: HashSet<SocketAddr>,
    /// Calls waiting now: what, and since when.
    pending: Vec<(u64, String, Instant)>,
    next_pending: u64,
    held: Vec<HeldCall>,
}

/// Shared between a handler's activations and its supervisor.
pub struct Gate {
    current: Mutex<Current>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            current: Mutex::new(Current {
                phase: Phase::Idle,
                host: None,
                speculative: false,
                released: HashSet::new(),
                pending: Vec::new(),
                next_pending: 0,
                held: Vec::new(),
            }),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Gate {
    /// An activation starts on the handler.
    pub fn begin(&self, host: Host, speculative: bool) {
        let mut c = lock(&self.current);
        c.phase = Phase::Running;
        c.host = Some(host);
        c.speculative = speculative;
        c.released.clear();
        c.held.clear();
    }

    /// The activation ended: what it held (a call still waiting is dropped), and the handler is idle.
    pub fn end(&self) -> Vec<HeldCall> {
        let mut c = lock(&self.current);
        c.phase = Phase::Idle;
        c.host = None;
        drop_pending(&mut c);
        std::mem::take(&mut c.held)
    }

    /// The activation was killed: whatever it holds is dropped, and nothing more goes out. Returns what it held.
    pub fn kill(&self) -> Vec<HeldCall> {
        let mut c = lock(&self.current);
        c.phase = Phase::Killed;
        c.host = None;
        drop_pending(&mut c);
        std::mem::take(&mut c.held)
    }

    /// What to do with an effect on `peer` now: go on (not speculative, or to a peer already released), refuse (no
    /// activation), or hold it.
    fn decide(&self, peer: Option<SocketAddr>) -> Decision {
        let c = lock(&self.current);
        if c.phase != Phase::Running {
            Decision::Refuse
        } else if !c.speculative || peer.is_some_and(|p| c.released.contains(&p)) {
            Decision::Go
        } else {
            Decision::Hold
        }
    }

    /// Registers `what` as held and asks the platform to release it; `reply(ticket)` makes what gets the platform's
    /// answer. `None` if there is no activation to ask for.
    fn ask(&self, what: &str, reply: impl FnOnce(u64) -> Box<dyn FnOnce(Reply) + Send>) -> Option<u64> {
        let mut c = lock(&self.current);
        if c.phase != Phase::Running {
            return None;
        }
        let host = c.host.clone()?;
        c.next_pending += 1;
        let ticket = c.next_pending;
        c.pending.push((ticket, what.to_string(), Instant::now()));
        drop(c);
        host(HostRequest { call: Call::Syscall { call: what.to_string() }, reply: reply(ticket) });
        Some(ticket)
    }

    /// Holds an effect on `peer` without waiting: `perform` runs where the platform releases it (and answers the
    /// kernel), or never, if the run is squashed or ends first. Returns false if there is no activation to ask.
    fn hold(self: &Arc<Self>, what: String, peer: SocketAddr, perform: Box<dyn FnOnce(bool) + Send>) -> bool {
        let (gate, call) = (self.clone(), what.clone());
        let reply = move |ticket| -> Box<dyn FnOnce(Reply) + Send> {
            Box::new(move |r| perform(gate.settle(ticket, what, Some(peer), Some(r))))
        };
        self.ask(&call, reply).is_some()
    }

    /// Records the outcome of held call `ticket`; returns whether it goes on.
    fn settle(&self, ticket: u64, what: String, peer: Option<SocketAddr>, outcome: Option<Reply>) -> bool {
        let mut c = lock(&self.current);
        let Some(i) = c.pending.iter().position(|(t, _, _)| *t == ticket) else {
            return false; // recorded as dropped when the activation ended
        };
        let (_, _, since) = c.pending.remove(i);
        let waited_us = since.elapsed().as_micros() as u64;
        let released = matches!(outcome, Some(Reply::Ok(_))) && c.phase == Phase::Running;
        let release_us = match &outcome {
            Some(Reply::Ok(v)) => released_at(v),
            _ => None,
        };
        let fate = if released { HeldFate::Released } else { HeldFate::Dropped };
        c.held.push(HeldCall { call: what, waited_us, fate, release_us });
        if let (true, Some(p)) = (released, peer) {
            c.released.insert(p);
        }
        released
    }

    /// Whether an effect on `peer` (described by `what`) may go on now, waiting while the run is speculative.
    fn permit(&self, what: String, peer: Option<SocketAddr>) -> bool {
        match self.decide(peer) {
            Decision::Refuse => return false,
            Decision::Go => return true,
            Decision::Hold => {}
        }
        let (tx, answer) = std::sync::mpsc::channel::<Reply>();
        let reply = move |_| -> Box<dyn FnOnce(Reply) + Send> {
            Box::new(move |r| {
                let _ = tx.send(r);
            })
        };
        let Some(ticket) = self.ask(&what, reply) else {
            return false;
        };
        let outcome = loop {
            match answer.recv_timeout(Duration::from_millis(20)) {
                Ok(r) => break Some(r),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break None,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if lock(&self.current).phase != Phase::Running {
                        break None; // killed or over while held
                    }
                }
            }
        };
        self.settle(ticket, what, peer, outcome)
    }
}

/// What the gate says about an effect.
enum Decision {
    Go,
    Refuse,
    Hold,
}

/// How the supervisor answers a call: now, or later (a held call the platform will perform and answer).
enum Answer {
    Now(i64),
    Later,
}

fn drop_pending(c: &mut Current) {
    for (_, call, since) in std::mem::take(&mut c.pending) {
        let waited_us = since.elapsed().as_micros() as u64;
        c.held.push(HeldCall { call, waited_us, fate: HeldFate::Dropped, release_us: None });
    }
}

/// Microseconds since the platform released the call, from the `released_ns` it sends (`CLOCK_MONOTONIC`).
fn released_at(v: &Value) -> Option<u64> {
    let then = v.get("released_ns")?.as_u64()?;
    Some(monotonic_ns().saturating_sub(then) / 1000)
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock the platform and the supervisor share.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// System-call numbers the supervisor answers.
struct Numbers {
    connect: ScmpSyscall,
    bind: ScmpSyscall,
    sendto: ScmpSyscall,
    sendmsg: ScmpSyscall,
    sendmmsg: ScmpSyscall,
}

/// Answers the handler's supervised calls until its processes are gone. Runs on its own thread.
pub fn supervise(listener: OwnedFd, gate: Arc<Gate>, policy: Arc<Policy>) {
    // Shared with held calls performed where the platform releases them.
    let listener = Arc::new(listener);
    let n = |name| ScmpSyscall::from_name(name).expect("known system call");
    let numbers = Numbers {
        connect: n("connect"),
        bind: n("bind"),
        sendto: n("sendto"),
        sendmsg: n("sendmsg"),
        sendmmsg: n("sendmmsg"),
    };
    let fd = listener.as_raw_fd();
    loop {
        let mut poll = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: poll on one local pollfd.
        let r = unsafe { libc::poll(&mut poll, 1, -1) };
        if r < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if poll.revents & libc::POLLIN == 0 {
            return; // POLLHUP: every process of the handler is gone
        }
        let Ok(req) = ScmpNotifReq::receive(fd) else { continue };
        match answer(&req, &numbers, &gate, &policy, &listener) {
            Ok(Answer::Later) => {}
            Ok(Answer::Now(val)) => respond(fd, req.id, Ok(val)),
            Err(errno) => respond(fd, req.id, Err(errno)),
        }
    }
}

/// Answers notification `id`: the call's result, or an errno.
fn respond(listener: RawFd, id: u64, result: Result<i64, i32>) {
    let resp = match result {
        Ok(val) => ScmpNotifResp::new_val(id, val, ScmpNotifRespFlags::empty()),
        Err(errno) => ScmpNotifResp::new_error(id, -errno, ScmpNotifRespFlags::empty()),
    };
    let _ = resp.respond(listener); // the caller may be gone
}

/// Whether `sock` is non-blocking: a connect on it returns at once, so it may run in whatever thread releases it.
fn nonblocking(sock: &OwnedFd) -> bool {
    // SAFETY: F_GETFL on our own duplicate.
    let flags = unsafe { libc::fcntl(sock.as_raw_fd(), libc::F_GETFL) };
    flags >= 0 && flags & libc::O_NONBLOCK != 0
}

/// The call's result (now, or later for a held call the platform performs), or an errno.
fn answer(
    req: &ScmpNotifReq,
    n: &Numbers,
    gate: &Arc<Gate>,
    policy: &Policy,
    shared: &Arc<OwnedFd>,
) -> Result<Answer, i32> {
    let listener = shared.as_raw_fd();
    let tid = req.pid as i32;
    let args = req.data.args;
    let call = req.data.syscall;
    let mem = Memory { tid, listener, id: req.id };
    let sock = take_fd(tid, args[0] as i32)?;
    let domain = sockopt(&sock, libc::SO_DOMAIN)?;
    let inet = domain == libc::AF_INET || domain == libc::AF_INET6;
    let netlink = domain == libc::AF_NETLINK;
    let proto = || if sockopt(&sock, libc::SO_TYPE).ok() == Some(libc::SOCK_DGRAM) { "udp" } else { "tcp" };
    if call == n.connect || call == n.bind {
        let addr = mem.read(args[1], (args[2] as usize).min(128))?;
        if !(inet || netlink) {
            return Err(libc::EPERM);
        }
        if call == n.bind {
            if inet && parse_sockaddr(&addr).is_none_or(|a| a.port() != 0) {
                return Err(libc::EPERM); // a function is no server: ephemeral ports only
            }
            // SAFETY: bind on our duplicate with the copied address.
            return now(unsafe { libc::bind(sock.as_raw_fd(), addr.as_ptr().cast(), addr.len() as u32) } as i64);
        }
        // AF_UNSPEC disconnects a socket; any other address must be one the rules can judge.
        let unspec = addr.len() >= 2 && u16::from_ne_bytes([addr[0], addr[1]]) == libc::AF_UNSPEC as u16;
        if inet && !unspec {
            let peer = parse_sockaddr(&addr).ok_or(libc::EPERM)?;
            let effect = matches!(policy.judge(peer), Verdict::Effect);
            if effect && nonblocking(&sock) && matches!(gate.decide(Some(peer)), Decision::Hold) {
                let what = format!("connect {} {peer}", proto());
                let (shared, id) = (shared.clone(), req.id);
                let perform = Box::new(move |released: bool| {
                    let mem = Memory { tid, listener: shared.as_raw_fd(), id };
                    let result = if !released {
                        Err(libc::EPERM)
                    } else if let Err(e) = mem.live() {
                        Err(e) // the caller gave up (a fatal signal) while the call was held
                    } else {
                        connect(&sock, &addr)
                    };
                    respond(shared.as_raw_fd(), id, result);
                });
                return if gate.hold(what, peer, perform) { Ok(Answer::Later) } else { Err(libc::EPERM) };
            }
            if !allowed(policy, gate, peer, || format!("connect {} {peer}", proto()))? {
                return Err(libc::EPERM);
            }
            mem.live()?; // the caller may have given up (a fatal signal) while the call was held
        }
        return connect(&sock, &addr).map(Answer::Now);
    }
    if call == n.sendto {
        let addr = mem.read(args[4], (args[5] as usize).min(128))?;
        let len = args[2] as usize;
        if !(inet || netlink) {
            return Err(libc::EPERM);
        }
        if len > SEND_BYTES_MAX {
            return Err(libc::EMSGSIZE);
        }
        let data = mem.read(args[1], len)?;
        if inet && let Some(peer) = destination(&addr)? {
            if !allowed(policy, gate, peer, || format!("sendto {} {peer}", proto()))? {
                return Err(libc::EPERM);
            }
            mem.live()?;
        }
        let flags = args[3] as i32 | libc::MSG_NOSIGNAL;
        // SAFETY: sendto on our duplicate with copied buffers.
        return now(unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                flags,
                addr.as_ptr().cast(),
                addr.len() as u32,
            )
        } as i64);
    }
    if call == n.sendmsg {
        return send_message(&mem, &sock, args[1], args[2] as i32, domain, policy, gate, proto()).map(Answer::Now);
    }
    if call == n.sendmmsg {
        let count = (args[2] as usize).min(IOV_MAX);
        let size = std::mem::size_of::<libc::mmsghdr>() as u64;
        let mut sent = 0i64;
        for i in 0..count as u64 {
            let entry = args[1] + i * size;
            match send_message(&mem, &sock, entry, args[3] as i32, domain, policy, gate, proto()) {
                Ok(bytes) => {
                    // msg_len follows the msghdr.
                    let len_at = entry + std::mem::size_of::<libc::msghdr>() as u64;
                    mem.write(len_at, &(bytes as u32).to_ne_bytes())?;
                    sent += 1;
                }
                Err(e) if sent == 0 => return Err(e),
                Err(_) => break,
            }
        }
        return Ok(Answer::Now(sent));
    }
    Err(libc::ENOSYS)
}

/// `connect` on our duplicate of the handler's socket, with the copied address.
fn connect(sock: &OwnedFd, addr: &[u8]) -> Result<i64, i32> {
    // SAFETY: connect on our duplicate with a copied address of its length.
    sys(unsafe { libc::connect(sock.as_raw_fd(), addr.as_ptr().cast(), addr.len() as u32) } as i64)
}

/// A system call's result, answered now.
fn now(r: i64) -> Result<Answer, i32> {
    sys(r).map(Answer::Now)
}

/// The destination of an addressed send on an IPv4 or IPv6 socket: none, or one the rules can judge. The kernel
/// takes an `AF_UNSPEC` address on an IPv4 socket as IPv4, so it is judged as one; anything else unreadable is
/// refused, never passed on unjudged.
fn destination(addr: &[u8]) -> Result<Option<SocketAddr>, i32> {
    if addr.is_empty() {
        return Ok(None);
    }
    if let Some(peer) = parse_sockaddr(addr) {
        return Ok(Some(peer));
    }
    if addr.len() >= 8 && u16::from_ne_bytes([addr[0], addr[1]]) == libc::AF_UNSPEC as u16 {
        let mut v4 = addr.to_vec();
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        return parse_sockaddr(&v4).map(Some).ok_or(libc::EPERM);
    }
    Err(libc::EPERM)
}

/// Judges a peer and, for an effect, waits for the gate. `Err` is an errno for the caller.
fn allowed(policy: &Policy, gate: &Gate, peer: SocketAddr, what: impl FnOnce() -> String) -> Result<bool, i32> {
    match policy.judge(peer) {
        Verdict::Denied(_) => Err(libc::EPERM),
        Verdict::Lookup => Ok(true),
        Verdict::Effect => Ok(gate.permit(what(), Some(peer))),
    }
}

/// One `msghdr` at `at` in the handler's memory, sent from here; returns the bytes sent.
#[allow(clippy::too_many_arguments)]
fn send_message(
    mem: &Memory,
    sock: &OwnedFd,
    at: u64,
    flags: i32,
    domain: i32,
    policy: &Policy,
    gate: &Gate,
    proto: &str,
) -> Result<i64, i32> {
    let raw = mem.read(at, std::mem::size_of::<libc::msghdr>())?;
    // SAFETY: a msghdr-sized copy; read unaligned, its pointers are the handler's and only passed to `mem`.
    let hdr: libc::msghdr = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
    if hdr.msg_controllen > 0 {
        return Err(libc::EPERM); // ancillary data (descriptors, credentials) is not forwarded
    }
    let name = if hdr.msg_name.is_null() {
        Vec::new()
    } else {
        mem.read(hdr.msg_name as u64, (hdr.msg_namelen as usize).min(128))?
    };
    let inet = domain == libc::AF_INET || domain == libc::AF_INET6;
    if !(name.is_empty() || inet || domain == libc::AF_NETLINK) {
        return Err(libc::EPERM);
    }
    if inet && let Some(peer) = destination(&name)? {
        if !allowed(policy, gate, peer, || format!("sendmsg {proto} {peer}"))? {
            return Err(libc::EPERM);
        }
        mem.live()?;
    }
    let iovs = mem.read(hdr.msg_iov as u64, (hdr.msg_iovlen).min(IOV_MAX) * std::mem::size_of::<libc::iovec>())?;
    let mut data = Vec::new();
    for chunk in iovs.chunks_exact(std::mem::size_of::<libc::iovec>()) {
        // SAFETY: an iovec-sized copy, read unaligned.
        let iov: libc::iovec = unsafe { std::ptr::read_unaligned(chunk.as_ptr().cast()) };
        let take = iov.iov_len.min(SEND_BYTES_MAX - data.len());
        data.extend(mem.read(iov.iov_base as u64, take)?);
        if data.len() == SEND_BYTES_MAX {
            if proto == "udp" {
                return Err(libc::EMSGSIZE);
            }
            break;
        }
    }
    let mut iov = libc::iovec { iov_base: data.as_mut_ptr().cast(), iov_len: data.len() };
    // SAFETY: a zeroed msghdr pointing at local buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !name.is_empty() {
        msg.msg_name = name.as_ptr() as *mut _;
        msg.msg_namelen = name.len() as u32;
    }
    // SAFETY: sendmsg on our duplicate with local buffers.
    sys(unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, flags | libc::MSG_NOSIGNAL) } as i64)
}

fn sys(r: i64) -> Result<i64, i32> {
    if r < 0 { Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)) } else { Ok(r) }
}

/// A duplicate of the handler thread's descriptor `fd`.
fn take_fd(tid: i32, fd: i32) -> Result<OwnedFd, i32> {
    // SAFETY: pidfd_open of the calling thread (PIDFD_THREAD), then pidfd_getfd; both return fresh descriptors.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, tid, libc::O_EXCL) as i32; // O_EXCL is PIDFD_THREAD
        if pidfd < 0 {
            return Err(libc::ESRCH);
        }
        let pidfd = OwnedFd::from_raw_fd(pidfd);
        let dup = libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) as i32;
        if dup < 0 {
            return Err(libc::EBADF);
        }
        Ok(OwnedFd::from_raw_fd(dup))
    }
}

fn sockopt(sock: &OwnedFd, option: i32) -> Result<i32, i32> {
    let mut value: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as u32;
    // SAFETY: getsockopt into a local int.
    let r = unsafe {
        libc::getsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, option, (&mut value as *mut i32).cast(), &mut len)
    };
    if r < 0 { Err(libc::ENOTSOCK) } else { Ok(value) }
}

/// The memory of the thread that made the call; every read is checked against the notification still being
/// live, so a recycled thread id is never read.
struct Memory {
    tid: i32,
    listener: RawFd,
    id: u64,
}

impl Memory {
    fn read(&self, at: u64, len: usize) -> Result<Vec<u8>, i32> {
        if len == 0 || at == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; len];
        let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: len };
        let remote = libc::iovec { iov_base: at as *mut _, iov_len: len };
        // SAFETY: reads into our buffer from the handler's memory.
        let n = unsafe { libc::process_vm_readv(self.tid, &local, 1, &remote, 1, 0) };
        if n != len as isize {
            return Err(libc::EFAULT);
        }
        self.live()?;
        Ok(buf)
    }

    fn write(&self, at: u64, bytes: &[u8]) -> Result<(), i32> {
        self.live()?;
        let local = libc::iovec { iov_base: bytes.as_ptr() as *mut _, iov_len: bytes.len() };
        let remote = libc::iovec { iov_base: at as *mut _, iov_len: bytes.len() };
        // SAFETY: writes our bytes into the handler's memory, where the call asked for a result.
        let n = unsafe { libc::process_vm_writev(self.tid, &local, 1, &remote, 1, 0) };
        if n != bytes.len() as isize { Err(libc::EFAULT) } else { Ok(()) }
    }

    fn live(&self) -> Result<(), i32> {
        libseccomp::notify_id_valid(self.listener, self.id).map_err(|_| libc::ESRCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_family_is_judged_as_ipv4_and_anything_unreadable_is_refused() {
        let mut addr = vec![0u8; 16];
        addr[2..4].copy_from_slice(&6379u16.to_be_bytes());
        addr[4..8].copy_from_slice(&[127, 0, 0, 1]);
        // AF_UNSPEC (0): the kernel sends it to 127.0.0.1 on an IPv4 socket, so it is judged as that.
        assert_eq!(destination(&addr), Ok(Some("127.0.0.1:6379".parse().unwrap())));
        addr[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        assert_eq!(destination(&addr), Err(libc::EPERM));
        assert_eq!(destination(&[]), Ok(None));
    }
}
