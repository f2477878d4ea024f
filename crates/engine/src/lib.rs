//! The execution core of one invocation: a deterministic state machine with no I/O.
//!
//! The platform feeds it [`Event`]s (the invocation started, a function asked for a key, the store answered, a
//! function finished, a commit landed) and executes the [`Action`]s it returns (launch a function, read the store,
//! reply to a function, commit writes, report completion). The engine never reads a clock, spawns a task or
//! touches a socket; given the same events it returns the same actions, so it can be replayed from a log and
//! tested against a sequential reference.
//!
//! - [`Engine`]: walks the application's [`Program`](model::Program) — the workflow graph (Task, Choice, Pass,
//!   Parallel, Succeed, Fail, with ASL data flow) or an entry function — and runs implicit calls (`invoke`).
//! - [`buffer::DataBuffer`]: the per-invocation data buffer. Uncommitted writes live here; a read is forwarded
//!   from the nearest older writer in program order, or else goes to committed state.
//!
//! In this version every function runs non-speculatively, strictly one after another in program order; a
//! function's writes commit when it finishes (a callee's writes merge into its caller's on return and commit with
//! the caller). Speculation extends this same engine; with speculation off it must behave exactly like this.
//!
//! **Architecture invariant:** no I/O, no clocks, no threads, no randomness. Mispredictions, squashes and failed
//! functions are ordinary outcomes, not Rust errors.

pub mod buffer;
mod walk;

use std::collections::HashMap;
use std::sync::Arc;

use model::{Annotations, Application};
use serde::Serialize;
use serde_json::Value;

pub use walk::Engine;

/// Identifies one function run within an invocation. Runs are numbered in launch order.
pub type RunId = u32;
/// Identifies one call a running function made; assigned by the platform, echoed back in the reply.
pub type RequestId = u64;

/// What the engine knows about deployed functions: enough to validate an `invoke` and to honour annotations.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub functions: HashMap<String, FunctionInfo>,
}

#[derive(Debug, Clone)]
pub struct FunctionInfo {
    pub version: String,
    pub annotations: Annotations,
}

/// Per-invocation limits. Every one has a documented default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// State transitions per invocation; bounds loops through `Choice`.
    pub steps_max: u32,
    /// Function runs per invocation, implicit calls included.
    pub runs_max: u32,
    /// Nesting of implicit calls (a calls b calls c ... ).
    pub call_depth_max: u32,
    /// Bytes of a storage key.
    pub key_bytes_max: usize,
    /// Bytes of one stored value, as JSON.
    pub value_bytes_max: usize,
    /// Distinct keys one function run (with its callees) may write before it commits.
    pub writes_max: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            steps_max: 1000,
            runs_max: 500,
            call_depth_max: 16,
            key_bytes_max: 1024,
            value_bytes_max: 1024 * 1024,
            writes_max: 1000,
        }
    }
}

/// A storage access or call made by running code.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Get { key: String },
    Put { key: String, value: Value },
    Delete { key: String },
    Invoke { function: String, args: Value },
}

/// The engine's answer to a [`Call`].
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Ok(Value),
    Refused(String),
    FunctionFailed(Value),
}

/// OpenWhisk's activation statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    #[serde(rename = "success")]
    Success,
    #[serde(rename = "application error")]
    ApplicationError,
    #[serde(rename = "action developer error")]
    DeveloperError,
    #[serde(rename = "whisk internal error")]
    InternalError,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::ApplicationError => "application error",
            Status::DeveloperError => "action developer error",
            Status::InternalError => "whisk internal error",
        }
    }
    /// OpenWhisk's numeric `statusCode`.
    pub fn code(self) -> u8 {
        match self {
            Status::Success => 0,
            Status::ApplicationError => 1,
            Status::DeveloperError => 2,
            Status::InternalError => 3,
        }
    }
}

/// How a function run ended, as the platform reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success(Value),
    Failure { status: Status, error: Value },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The invocation begins with this input.
    Start { input: Value },
    /// Running code made a call.
    Call { run: RunId, request: RequestId, call: Call },
    /// The store answered an [`Action::ReadStore`].
    StoreRead { run: RunId, request: RequestId, value: Option<Value>, version: u64 },
    /// A launched run ended.
    Finished { run: RunId, outcome: Outcome },
    /// An [`Action::Commit`] landed.
    Committed { run: RunId },
    /// An [`Action::Commit`] failed; nothing of it was applied.
    CommitFailed { run: RunId, error: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start `function` on `input` as run `run`. `caller` is set for implicit calls.
    Launch { run: RunId, function: String, input: Value, caller: Option<RunId> },
    /// Answer a call.
    Reply { run: RunId, request: RequestId, reply: Reply },
    /// Read committed state for a call; answer with [`Event::StoreRead`].
    ReadStore { run: RunId, request: RequestId, key: String },
    /// Apply these writes atomically (`None` deletes); answer with [`Event::Committed`] or [`Event::CommitFailed`].
    Commit { run: RunId, writes: Vec<(String, Option<Value>)> },
    /// Stop a run now; no [`Event::Finished`] is expected for it any more.
    Kill { run: RunId },
    /// The invocation is over.
    Complete(Completion),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Completion {
    pub status: Status,
    /// The application's result: its output, or `{"error": ...}`.
    pub result: Value,
    /// The states (workflows) or functions (implicit chains) taken, in program order.
    pub path: Vec<String>,
}

/// Builds an engine for one invocation of `app`.
pub fn engine(app: Arc<Application>, catalog: Arc<Catalog>, config: Config) -> Engine {
    Engine::new(app, catalog, config)
}
