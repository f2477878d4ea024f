//! The execution core of one invocation: a deterministic state machine with no I/O.
//!
//! The platform feeds it [`Event`]s (the invocation started, a function asked for a key, the store answered, a
//! function finished, a commit landed, machine load changed) and executes the [`Action`]s it returns (launch a
//! function, read the store, reply to a function, commit writes, kill a run, report completion). The engine never
//! reads a clock, spawns a task or touches a socket; given the same events and the same [`Oracle`] answers it
//! returns the same actions, so it can be replayed and tested against a sequential reference.
//!
//! - [`Engine`] (`pipeline.rs`): the **function execution pipeline**. Functions of the invocation are kept as
//!   slots in program order; the oldest is non-speculative, younger ones are speculative. Younger slots are
//!   derived by walking the workflow ahead on predicted data: memoized outputs ([`Oracle::memo`]) and, where the
//!   data is unknown, a path-indexed branch predictor ([`Oracle::branch`]). When the oldest slot finishes, the
//!   next one is re-derived from its real output; a slot whose function or input differs is squashed. Slots
//!   commit in program order.
//! - `walk.rs`: walking the graph, concretely (the application's semantics) or speculatively.
//! - [`buffer::DataBuffer`]: uncommitted writes by run. A read is forwarded from the nearest older writer in
//!   program order once that writer has finished, waits while it runs, or else reads committed state; an older
//!   write to a key a younger slot already read squashes that slot (and whoever read from it).
//! - [`tables`]: bounded memo and branch tables, the [`Oracle`] the platform uses.
//!
//! With speculation off ([`Config::speculation`]) the pipeline holds one slot and the engine runs functions
//! strictly one after another, committing each before the next starts: the baseline every speedup is measured
//! against.
//!
//! **Architecture invariant:** no I/O, no clocks, no threads, no randomness. Mispredictions, squashes and failed
//! functions are ordinary outcomes, not Rust errors.

pub mod buffer;
mod pipeline;
pub mod tables;
mod walk;

use std::collections::HashMap;
use std::sync::Arc;

use model::{Annotations, Application};
use serde::Serialize;
use serde_json::Value;

pub use pipeline::Engine;

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

/// Per-invocation limits and speculation settings. Every one has a documented default.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// State transitions per invocation; bounds loops through `Choice`.
    pub steps_max: u32,
    /// Function runs per invocation, implicit calls and re-executions included.
    pub runs_max: u32,
    /// Nesting of implicit calls (a calls b calls c ... ).
    pub call_depth_max: u32,
    /// Bytes of a storage key.
    pub key_bytes_max: usize,
    /// Bytes of one stored value, as JSON.
    pub value_bytes_max: usize,
    /// Distinct keys one function run (with its callees) may write before it commits.
    pub writes_max: usize,
    /// Run functions speculatively. Off: strictly one after another, each committed before the next starts.
    pub speculation: bool,
    /// Speculative functions in flight beyond the non-speculative one, below 60% machine load. Load events lower
    /// it to 6 / 5 / 4 at 60-70% / 70-80% / 80% CPU and over, as in the SpecFaaS paper, never above this value.
    pub depth_max: u32,
    /// Machine CPU load (percent) at which speculation pauses (depth 0): a saturated machine has no idle CPU to run
    /// ahead on, and speculative work only delays real work (measured: `bench paper` at 75% load collapsed without
    /// this). Over 100 never pauses.
    pub pause_percent: u8,
    /// Speculative launches plus squashes one invocation may spend; then it goes on non-speculatively.
    pub budget: u32,
    /// Probability a predicted branch target needs before the engine speculates down it (the paper's 60%; a
    /// two-way branch below 40% predicts the other target at over 60%, and in between nothing is speculated).
    pub branch_threshold: f64,
    /// States of path history that index the branch predictor.
    pub path_history: usize,
    /// Consecutive squashes of the same producer / consumer / key after which the consumer's read of that key
    /// waits for the producer.
    pub dependence_squashes: u32,
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
            speculation: true,
            depth_max: 8,
            pause_percent: 90,
            budget: 64,
            branch_threshold: 0.6,
            path_history: 8,
            dependence_squashes: 3,
        }
    }
}

impl Config {
    /// The speculation depth at `cpu_percent` machine load (SpecFaaS §VI).
    pub fn depth_at(&self, cpu_percent: u8) -> u32 {
        let by_load = match cpu_percent {
            c if c >= self.pause_percent => 0,
            0..60 => self.depth_max,
            60..70 => 6,
            70..80 => 5,
            _ => 4,
        };
        by_load.min(self.depth_max)
    }
}

/// Predictions, learned across invocations. The engine asks; it trains only with non-speculative outcomes: branch
/// targets from concrete walks, memo rows at commit.
pub trait Oracle: Send + Sync {
    /// The most likely of `targets` for the `Choice` named `choice` after a path whose history hashes to
    /// `history`, with its probability.
    fn branch(&self, choice: &str, history: u64, targets: &[usize]) -> Option<(usize, f64)>;
    fn train_branch(&self, choice: &str, history: u64, target: usize);
    /// The output `function` (at code `version`) gave last for this input. For most functions this is a
    /// prediction, checked when the function finishes; for a `pure` function it is trusted and the function is not
    /// run, which is sound because the engine trains the table with committed outputs only.
    fn memo(&self, function: &str, version: &str, input: &Value) -> Option<Value>;
    fn train_memo(&self, function: &str, version: &str, input: &Value, output: &Value);
    /// The functions (with arguments) `function` (at code `version`) called, in order, the last time it ran on
    /// this input: the callees to launch early.
    fn callees(&self, function: &str, version: &str, input: &Value) -> Option<Vec<(String, Value)>>;
    fn train_callees(&self, function: &str, version: &str, input: &Value, callees: &[(String, Value)]);
    /// Consecutive times a write by `producer` to `key` squashed `consumer` for reading it too early.
    fn dependence(&self, producer: &str, consumer: &str, key: &str) -> u32;
    /// `producer`'s write to `key` squashed `consumer` once more.
    fn train_squash(&self, producer: &str, consumer: &str, key: &str);
    /// `consumer` committed having read `key` from committed state, with no older function writing it: the
    /// dependences predicted on it did not materialize, and their streaks end.
    fn train_clean_read(&self, consumer: &str, key: &str);
}

/// Predicts nothing and learns nothing.
pub struct NoOracle;

impl Oracle for NoOracle {
    fn branch(&self, _: &str, _: u64, _: &[usize]) -> Option<(usize, f64)> {
        None
    }
    fn train_branch(&self, _: &str, _: u64, _: usize) {}
    fn memo(&self, _: &str, _: &str, _: &Value) -> Option<Value> {
        None
    }
    fn train_memo(&self, _: &str, _: &str, _: &Value, _: &Value) {}
    fn callees(&self, _: &str, _: &str, _: &Value) -> Option<Vec<(String, Value)>> {
        None
    }
    fn train_callees(&self, _: &str, _: &str, _: &Value, _: &[(String, Value)]) {}
    fn dependence(&self, _: &str, _: &str, _: &str) -> u32 {
        0
    }
    fn train_squash(&self, _: &str, _: &str, _: &str) {}
    fn train_clean_read(&self, _: &str, _: &str) {}
}

/// Why a run was squashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// It was on a path a branch prediction chose wrongly.
    ControlMispredict,
    /// Its input came from a memoized output that the real output contradicted.
    MemoMismatch,
    /// An older function wrote a key it had already read.
    RawViolation,
    /// It crashed, threw or timed out while speculative; it is run again, never reported.
    Opacity,
    /// Another invocation changed a key it read before it could commit.
    CrossInvocationConflict,
    /// It was past the end of the invocation (which ended, or failed, first).
    Abandoned,
}

/// What happened to a run in the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    Committed,
    Squashed(Cause),
    /// It failed non-speculatively: its failure is the invocation's.
    Failed,
    /// A callee whose caller was squashed or failed, or that failed and was reported to its caller.
    Discarded,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    pub run: RunId,
    pub function: String,
    /// Launched while speculative.
    pub speculative: bool,
    pub fate: Fate,
    /// Whether the memo table held an output for its input when the next function was derived.
    pub memo_hit: Option<bool>,
    /// Branches the predictor chose on the way to this run, with the target the real data then took.
    pub branches: Vec<BranchRecord>,
}

/// A branch the predictor chose, and what the real data chose.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BranchRecord {
    /// The `Choice` state (application and qualified state name).
    pub choice: String,
    pub predicted: String,
    /// `None` when the real path never reached this `Choice`.
    pub actual: Option<String>,
}

/// Counters of one invocation, for records and metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub speculative_launches: u32,
    /// Pure functions not executed because the memo table had their output.
    pub skipped: u32,
    pub memo_hits: u32,
    pub memo_misses: u32,
    /// Branch targets followed on a prediction, and how many of them the real data confirmed.
    pub branch_predictions: u32,
    pub branch_hits: u32,
    pub squashes: std::collections::BTreeMap<Cause, u32>,
    /// Whether the budget ran out and the invocation went on non-speculatively.
    pub budget_exhausted: bool,
    /// Effects performed, and effects answered from the journal of an earlier run of the same slot.
    pub effects: u32,
    pub effects_replayed: u32,
    /// Effect calls that waited for their run to become non-speculative.
    pub effects_suspended: u32,
    /// Callees launched early on a prediction, and how many of them a real call then used.
    pub callees_predicted: u32,
    pub callees_used: u32,
}

/// A storage access or call made by running code.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Get {
        key: String,
    },
    Put {
        key: String,
        value: Value,
    },
    Delete {
        key: String,
    },
    Invoke {
        function: String,
        args: Value,
    },
    /// An external effect (outbound HTTP, described as JSON): performed only once the run is non-speculative.
    Effect {
        effect: Value,
    },
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
    /// The machine's CPU load changed; the speculation depth follows it.
    Load { cpu_percent: u8 },
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
    /// An [`Action::Commit`] found that `key` changed since the run read it; nothing was applied.
    CommitConflict { run: RunId, key: String },
    /// An [`Action::Effect`] was performed: its result, or why it failed.
    EffectDone { run: RunId, request: RequestId, result: Result<Value, String> },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start `function` on `input` as run `run`. `caller` is set for implicit calls.
    Launch { run: RunId, function: String, input: Value, caller: Option<RunId>, speculative: bool },
    /// Answer a call.
    Reply { run: RunId, request: RequestId, reply: Reply },
    /// Read committed state for a call; answer with [`Event::StoreRead`].
    ReadStore { run: RunId, request: RequestId, key: String },
    /// Apply these writes atomically (`None` deletes), provided every `expect`ed key still has the version the
    /// run read; answer with [`Event::Committed`], [`Event::CommitConflict`] or [`Event::CommitFailed`].
    Commit { run: RunId, writes: Vec<(String, Option<Value>)>, expect: Vec<(String, u64)> },
    /// Perform an external effect for a non-speculative run; answer with [`Event::EffectDone`].
    Effect { run: RunId, request: RequestId, effect: Value },
    /// Stop a run now and discard everything it produced; no [`Event::Finished`] is expected for it any more.
    Kill { run: RunId, cause: Cause },
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
    /// Every run, in launch order, with its fate.
    pub runs: Vec<RunSummary>,
    pub stats: Stats,
}

/// Builds an engine for one invocation of `app`, predicting with `oracle`.
pub fn engine(app: Arc<Application>, catalog: Arc<Catalog>, config: Config, oracle: Arc<dyn Oracle>) -> Engine {
    Engine::new(app, catalog, config, oracle)
}
