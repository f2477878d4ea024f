//! Runtimes run one activation of a function at a time per call, and nothing else: they know nothing about the
//! engine, applications or storage. A running function reaches the platform only through its [`Host`] channel.
//!
//! - [`Runtime`] makes a function warm ([`Runtime::load`]); a [`Warm`] function starts activations
//!   ([`Warm::start`]) that can be killed at any time through the returned [`Killer`]. Calls and the final
//!   [`Report`] are delivered through callbacks, so no task sits between a runtime and the platform.
//! - [`native`]: Rust closures registered in-process; kill aborts the task.
//! - [`process`]: Python and Node.js, a pool of warm handler processes per function, each holding a channel to
//!   the platform and running one activation at a time.
//! - [`sandbox`]: how a handler process is confined (namespaces, cgroups, a system-call filter) and how its
//!   network calls are supervised, so that a speculative run's external effects wait until it is non-speculative.
//! - [`wasm`]: WebAssembly modules on wasmtime, sandboxed; a fresh instance per activation from a pre-linked,
//!   pooled module; kill by epoch interruption.
//! - [`conformance`]: the behaviour every runtime must show, run against each of them.
//!
//! **Architecture invariant:** every outcome of user code — success, error, crash, timeout, kill — arrives as a
//! [`Report`]; nothing a function does can fail the caller's task or the warm process of another activation.

pub mod conformance;
pub mod native;
pub mod process;
pub mod sandbox;
pub mod wasm;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use model::{FunctionSpec, Kind};
use serde_json::Value;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One activation to run.
#[derive(Debug, Clone)]
pub struct Activation {
    /// The activation id (32 hex characters, OpenWhisk style).
    pub id: String,
    pub input: Value,
    /// Extra environment variables for this activation only.
    pub env: BTreeMap<String, String>,
    /// Launched speculatively: it may be squashed, so the runtime measures its CPU time where it can (the read
    /// costs tens of microseconds, so other activations skip it).
    pub speculative: bool,
    /// The CPU it may take: speculative work asks for [`Cpu::Idle`] until it is promoted ([`Killer::promote`]).
    pub cpu: Cpu,
    /// What becomes of its handler if it finishes and is then killed (a speculative run squashed after it ran).
    pub after_squash: AfterSquash,
}

/// What becomes of the handler of a speculative activation that finished and was then killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AfterSquash {
    /// It is retired, whatever the activation did.
    #[default]
    Retire,
    /// It serves others if the activation held no effect and left the handler's scratch space (`/tmp`) as it found
    /// it, as the handler of a committed activation does; a runtime that cannot tell retires it. Such a handler
    /// may serve others as soon as the activation finishes, before it is settled or killed.
    Reuse,
}

/// The CPU an activation may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cpu {
    /// As much as any other activation.
    #[default]
    Full,
    /// Only CPU that nothing else wants (speculative work, which must never delay non-speculative work), until
    /// [`Killer::promote`]. A runtime that cannot order CPU runs it as [`Cpu::Full`].
    Idle,
}

pub use model::call::{Call, Reply};

/// A call from running code, with where its answer goes.
pub struct HostRequest {
    pub call: Call,
    /// Called once with the answer; must not block.
    pub reply: ReplyTo,
}

/// Delivers the platform's answer to a [`Call`].
pub type ReplyTo = Box<dyn FnOnce(Reply) + Send>;

/// How a running function reaches the platform: each call is handed to this callback, which must not block.
pub type Host = Arc<dyn Fn(HostRequest) + Send + Sync>;

/// Receives an activation's [`Report`], exactly once, from whatever task ends the activation.
pub type Done = Box<dyn FnOnce(Report) + Send>;

/// How an activation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The function returned a dictionary without an `error` field.
    Success(Value),
    /// The function returned `{"error": ...}` (or, in Node.js, rejected with a plain value): the error value.
    ApplicationError(Value),
    /// The function threw an exception: its class name (Python) or `error.name` (Node.js), its message, and what
    /// OpenWhisk shows for it (`An error has occurred: NAME: MESSAGE`).
    Threw { name: String, cause: String, message: String },
    /// The function crashed, exited, ran out of memory or returned something that is not a dictionary.
    DeveloperError(String),
    /// The function ran past its timeout and was killed.
    Timeout { timeout_ms: u64 },
    /// The platform killed the activation ([`Running::kill`]).
    Killed,
}

impl Outcome {
    /// Classifies a value a function returned, the OpenWhisk way.
    pub fn from_returned(value: Value) -> Outcome {
        match value {
            Value::Object(mut map) => match map.remove("error") {
                Some(error) => Outcome::ApplicationError(error),
                None => Outcome::Success(Value::Object(map)),
            },
            other => Outcome::DeveloperError(format!(
                "The action did not return a dictionary; it returned {}.",
                model::path::type_name(&other)
            )),
        }
    }
}

/// What a finished activation produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub outcome: Outcome,
    /// OpenWhisk-style log lines: `2024-05-01T10:00:00.123456Z stdout: text`.
    pub logs: Vec<String>,
    /// CPU time the activation used, in microseconds: measured for speculative activations of process functions
    /// (a process per handler); `None` where the runtime cannot tell (native functions are tasks).
    pub cpu_us: Option<u64>,
    /// System calls the sandbox held while the activation was speculative: what, how long, released or dropped.
    pub held: Vec<sandbox::HeldCall>,
}

/// Accumulates log lines up to a byte limit, then records one warning line (OpenWhisk's wording).
#[derive(Debug)]
pub struct LogSink {
    lines: Vec<String>,
    bytes: u64,
    limit: u64,
    truncated: bool,
}

impl LogSink {
    pub fn new(limit: u64) -> Self {
        LogSink { lines: Vec::new(), bytes: 0, limit, truncated: false }
    }

    pub fn push(&mut self, stream: &str, line: &str) {
        if self.truncated {
            return;
        }
        let size = line.len() as u64 + 1; // the newline the function wrote
        if self.bytes + size > self.limit {
            self.truncated = true;
            self.lines.push(format!(
                "{} stderr: Logs were truncated because the total bytes size exceeds the limit of {} bytes.",
                now_rfc3339(),
                self.limit
            ));
            return;
        }
        self.bytes += size;
        self.lines.push(format!("{} {stream}: {line}", now_rfc3339()));
    }

    pub fn into_lines(self) -> Vec<String> {
        self.lines
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// Stops a running activation at once, or settles a finished one. Killing a finished activation discards what
/// it left (a parked handler); settling says its result stands. Promoting gives a speculative activation's
/// [`Cpu::Idle`] share up for a full one.
#[derive(Clone)]
pub struct Killer {
    kill: Arc<dyn Fn() + Send + Sync>,
    settle: Option<Arc<dyn Fn() + Send + Sync>>,
    promote: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl Killer {
    pub fn new(f: impl Fn() + Send + Sync + 'static) -> Self {
        Killer { kill: Arc::new(f), settle: None, promote: None }
    }

    /// What [`Killer::settle`] does.
    pub fn with_settle(self, f: impl Fn() + Send + Sync + 'static) -> Self {
        Killer { settle: Some(Arc::new(f)), ..self }
    }

    /// What [`Killer::promote`] does.
    pub fn with_promote(self, f: impl Fn() + Send + Sync + 'static) -> Self {
        Killer { promote: Some(Arc::new(f)), ..self }
    }

    /// The activation is no longer speculative: from now on it takes CPU as any activation does ([`Cpu::Full`]).
    pub fn promote(&self) {
        if let Some(promote) = &self.promote {
            promote()
        }
    }

    pub fn kill(&self) {
        (self.kill)()
    }

    /// The activation will not be squashed: a runtime that held back what a speculative activation left (its
    /// handler, with its scratch space) may let others use it now. A killer dropped unsettled retires it.
    pub fn settle(&self) {
        if let Some(settle) = &self.settle {
            settle()
        }
    }
}

/// A function made warm by a [`Runtime`]: its code is loaded once and serves many activations.
pub trait Warm: Send + Sync {
    fn spec(&self) -> &FunctionSpec;
    /// Starts one activation and returns at once; the report goes to `done`. Enforces the function's timeout.
    fn start(&self, activation: Activation, host: Host, done: Done) -> Killer;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The function's code failed to load (syntax error, missing entry point, ...).
    #[error("function \"{function}\" failed to initialize: {message}")]
    Init { function: String, message: String },
    /// This runtime cannot run that kind of function.
    #[error("runtime for {runtime} cannot run function \"{function}\" of kind {kind}")]
    WrongKind { runtime: &'static str, function: String, kind: &'static str },
    /// The runtime could not start (missing interpreter, I/O).
    #[error("runtime failure: {0}")]
    Io(String),
}

/// Makes functions of some kinds warm.
pub trait Runtime: Send + Sync {
    fn kinds(&self) -> &'static [Kind];
    fn load(&self, spec: Arc<FunctionSpec>) -> BoxFuture<'_, Result<Arc<dyn Warm>, Error>>;
    /// The handler processes it has started and retired so far, and the waits for one; a runtime that keeps no
    /// processes reports none.
    fn handlers(&self) -> HandlerCounts {
        HandlerCounts::default()
    }
}

/// A runtime's handler processes since it was made: how many it started and why, how many it retired and why,
/// and how long activations waited for one. What running a function costs beside the runs themselves; speculation
/// that needs more handlers than sequential execution pays it here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandlerCounts {
    /// Started at full CPU priority: the first at load, and those for waiting activations that the handlers
    /// already starting did not cover.
    pub started_for_waiter: u64,
    /// Started as spares, at idle CPU priority until ready. A spare still starting is handed to the first
    /// activation that waits.
    pub started_spare: u64,
    /// Activations that found no idle handler and waited for one.
    pub waits: u64,
    /// The time they waited, in microseconds.
    pub wait_us: u64,
    /// Retired after a clean activation because as many handlers as the pool keeps were idle already.
    pub retired_idle_max: u64,
    /// Retired after a clean activation because it left processes behind.
    pub retired_left_processes: u64,
    /// Retired because its activation was killed: squashed, or a speculative run that dirtied its scratch space
    /// or held an effect and was squashed after it finished.
    pub retired_killed: u64,
    /// Retired because its activation timed out or broke the protocol, or it failed to load the code.
    pub retired_failed: u64,
    /// Exited by itself before anything retired it: it crashed or was killed by the kernel (its OOM killer), in
    /// an activation or while idle.
    pub exited: u64,
    /// Let go with its function: redeployed, undeployed, or the runtime shut down.
    pub released: u64,
}

impl HandlerCounts {
    /// Handlers retired or gone, whatever the reason.
    pub fn ended(&self) -> u64 {
        self.retired_idle_max
            + self.retired_left_processes
            + self.retired_killed
            + self.retired_failed
            + self.exited
            + self.released
    }
}
