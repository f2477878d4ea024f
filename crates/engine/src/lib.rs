//! The execution core of one invocation: a deterministic state machine with no I/O.
//!
//! The platform feeds it [`Event`]s (the invocation started, a function asked for a key, the store answered, a
//! function finished, a commit landed, machine load changed) and executes the [`Action`]s it returns (launch a
//! function, read the store, reply to a function, commit writes, kill a run, report completion). The engine never
//! reads a clock, spawns a task or touches a socket; given the same events and the same [`Oracle`] answers it
//! returns the same actions, so it can be replayed and tested against a sequential reference.
//!
//! - [`Engine`] (`pipeline/`): the **function execution pipeline**. Functions of the invocation are kept as
//!   slots in program order; the oldest is non-speculative, younger ones are speculative. Younger slots are
//!   derived by walking the workflow ahead on predicted data: memoized outputs ([`oracle::Memo`]), outputs guessed
//!   field by field for inputs with no memo row ([`fields`]) and, where the data is unknown, a path-indexed branch
//!   predictor ([`oracle::BranchPredictor`]). When the oldest slot finishes, the next one is re-derived from its
//!   real output; a slot whose function, input or timeout differs is squashed. Slots commit in program order.
//! - `walk.rs`: walking the graph, concretely (the application's semantics) or speculatively.
//! - [`buffer::DataBuffer`]: uncommitted writes by run. A read is forwarded from the nearest older writer in
//!   program order once that writer has finished, waits while it runs, or else reads committed state; an older
//!   write to a key a younger slot already read squashes that slot (and whoever read from it).
//! - [`oracle`]: the four predictors the engine asks (branches, memoized outputs, callees, dependences), one small
//!   trait each, bundled as an [`Oracle`].
//! - [`tables`]: bounded, learning implementations of the four, which the platform uses.
//! - `harness` (feature `harness`): a deterministic driver for tests and benchmarks.
//!
//! With speculation off ([`Config::speculation`]) the pipeline holds one slot and the engine runs functions
//! strictly one after another, committing each before the next starts: the baseline every speedup is measured
//! against.
//!
//! The vocabulary of the boundary lives here: [`Event`] in, [`Action`] out, [`Call`] and [`Reply`] (shared with the
//! runtimes through `model::call`), [`Outcome`] and [`Failure`] with an [`ErrorName`], [`Completion`]. Time reaches
//! the engine only as events: it asks for a timer with [`Action::SetTimer`] and hears [`Event::TimerFired`].
//!
//! **Architecture invariant:** no I/O, no clocks, no threads, no randomness. Mispredictions, squashes and failed
//! functions are ordinary outcomes, not Rust errors.

pub mod buffer;
pub mod fields;
#[cfg(feature = "harness")]
pub mod harness;
pub mod oracle;
pub mod paths;
mod pipeline;
pub mod tables;
mod walk;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use model::{Annotations, Application};
use serde::Serialize;
use serde_json::Value;

pub use model::call::{Call, Reply};
pub use oracle::Oracle;
pub use pipeline::Engine;

/// Identifies one function run within an invocation. Runs are numbered from 0 in launch order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct RunId(pub u32);

impl RunId {
    /// The run's position in launch order.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Identifies one call a running function made; assigned by the platform, echoed back in the reply.
pub type RequestId = u64;

/// Identifies a timer the engine asked for ([`Action::SetTimer`]); echoed back in [`Event::TimerFired`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct TimerId(pub u32);

/// What the engine knows about deployed functions: enough to validate an `invoke` and to honour annotations.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub functions: HashMap<String, FunctionInfo>,
}

#[derive(Debug, Clone)]
pub struct FunctionInfo {
    /// What memo rows and callee predictions are keyed on besides the input: it changes whenever what the function
    /// computes can change (its code, and the parameters bound to it).
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
    /// Predict the callees of a function on an input never seen from the path of calls it made so far, with
    /// arguments made as before from its input and earlier results ([`paths`]). Off: only callees seen on exactly
    /// this input are launched early.
    pub callee_paths: bool,
    /// Guess the output of a function on an input with no memo row, field by field, from what it returned on other
    /// inputs: fields passed through from the input and steady constants ([`fields`]); the rest stays unknown.
    /// Off: only memo rows (exact inputs) are derived on.
    pub field_guesses: bool,
    /// Probability a predicted branch target needs before the engine speculates down it (the paper's 60%; a
    /// two-way branch below 40% predicts the other target at over 60%, and in between nothing is speculated).
    pub branch_threshold: f64,
    /// States of path history that index the branch predictor.
    pub path_history: usize,
    /// Consecutive squashes of the same producer / consumer / key after which the consumer's read of that key
    /// waits for the producer.
    pub dependence_squashes: u32,
    /// What a workflow may ask for: Map items and concurrency, retry attempts, waits, intrinsic nesting
    /// (`[engine.workflows]`).
    pub workflows: model::asl::Limits,
    /// How the branches of a `Parallel` and the iterations of a `Map` run: `concurrent` (the default, as every ASL
    /// engine runs them) or `sequential`, one after another in program order even with speculation off: the
    /// strictly sequential reference the differential tests compare against.
    pub fan_out: FanOut,
    /// The CPU a speculative run gets: `idle` (the default), only CPU that non-speculative work leaves unused,
    /// until the run becomes non-speculative ([`Action::Promote`]); or `shared`, as much as any run.
    pub speculative_cpu: SpeculativeCpu,
    /// What becomes of the handler of a speculative run that finished and was then squashed: `reuse` (the default)
    /// if it held no effect and left its scratch space as it found it, as a committed run's handler is reused;
    /// `retire`, always (a fresh handler replaces it).
    pub squashed_handlers: SquashedHandlers,
}

/// See [`Config::squashed_handlers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SquashedHandlers {
    #[default]
    Reuse,
    Retire,
}

/// See [`Config::speculative_cpu`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SpeculativeCpu {
    /// Speculation is work-conserving: it never takes CPU from a non-speculative run.
    #[default]
    Idle,
    /// Speculative and non-speculative runs share the CPU as equals.
    Shared,
}

/// See [`Config::fan_out`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FanOut {
    #[default]
    Concurrent,
    Sequential,
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
            callee_paths: true,
            field_guesses: true,
            branch_threshold: 0.6,
            path_history: 8,
            dependence_squashes: 3,
            workflows: model::asl::Limits::default(),
            fan_out: FanOut::Concurrent,
            speculative_cpu: SpeculativeCpu::Idle,
            squashed_handlers: SquashedHandlers::Reuse,
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
    /// It ran past its Task's `TimeoutSeconds`: it failed with `States.Timeout` (its fate is `failed`, or it is
    /// run again if it was speculative).
    TimedOut,
    /// A callee launched early on a prediction that its caller finished without calling.
    UncalledCallee,
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
    /// What the next function was derived on while this run's output was not known: a memo row (`exact`), a
    /// field-by-field guess (`fields`) or nothing (`none`); absent when nothing was derived before its output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<oracle::OutputPrediction>,
    /// For a callee launched before it was called: why (`exact` or `path`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted: Option<oracle::Prediction>,
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
    /// Memo misses on which part of the output was guessed field by field ([`fields`]).
    pub field_guesses: u32,
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
    /// Of those, the ones predicted by path (for an input the callee table had no row for).
    pub callees_predicted_path: u32,
    pub callees_used_path: u32,
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

/// The name of an error, as the Amazon States Language names errors: what `Retry` and `Catch` match on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub enum ErrorName {
    /// `States.Timeout`: the function ran past its timeout, or the Task past its `TimeoutSeconds`. Kept apart
    /// from every other failure.
    Timeout,
    /// `States.TaskFailed`: the function failed with no name of its own: it returned an error, crashed or ran
    /// out of memory.
    TaskFailed,
    /// `States.Runtime`: the workflow could not go on (a path matched nothing, no Choice rule matched, an
    /// intrinsic function failed, a limit was reached). It is never retried or caught.
    Runtime,
    /// A name chosen by the application: an exception's class (Python) or `error.name` (Node.js), or a `Fail`
    /// state's `Error`.
    Custom(String),
}

impl ErrorName {
    pub fn as_str(&self) -> &str {
        match self {
            ErrorName::Timeout => "States.Timeout",
            ErrorName::TaskFailed => "States.TaskFailed",
            ErrorName::Runtime => "States.Runtime",
            ErrorName::Custom(name) => name,
        }
    }
}

impl From<&str> for ErrorName {
    fn from(name: &str) -> ErrorName {
        match name {
            "States.Timeout" => ErrorName::Timeout,
            "States.TaskFailed" => ErrorName::TaskFailed,
            "States.Runtime" => ErrorName::Runtime,
            other => ErrorName::Custom(other.to_string()),
        }
    }
}

impl From<ErrorName> for String {
    fn from(name: ErrorName) -> String {
        name.as_str().to_string()
    }
}

impl fmt::Display for ErrorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The execution an invocation is, as the context object (`$$.Execution`, `$$.StateMachine`) shows it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Execution {
    /// The invocation's id (its activation id).
    pub id: String,
    /// The execution's name: its id, unless the caller named it.
    pub name: String,
    /// The namespace the application is deployed in: `$$.StateMachine.Id` is `NAMESPACE:APPLICATION`.
    pub namespace: String,
    /// When the invocation started, in ms since the Unix epoch.
    pub start_ms: i64,
    /// The invocation's input, as given.
    pub input: Value,
}

impl Execution {
    /// `$$.Execution.StartTime`.
    pub fn start_time(&self) -> String {
        rfc3339(self.start_ms)
    }

    /// What `States.MathRandom`, `States.UUID` and jittered retries draw from, with the walk's position: the same
    /// per execution and state, so a walk derived again draws the same values.
    pub fn seed(&self) -> u64 {
        self.id.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3))
    }
}

/// An instant (ms since the Unix epoch) as RFC 3339 with milliseconds, as Step Functions writes times.
pub(crate) fn rfc3339(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// How a function run ended, as the platform reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success(Value),
    Failure(Failure),
}

impl Outcome {
    /// A failure named `States.TaskFailed`: the function returned an error, or crashed.
    pub fn failed(status: Status, error: Value) -> Outcome {
        Outcome::Failure(Failure::new(status, ErrorName::TaskFailed, error))
    }
}

/// A failed run: OpenWhisk's status, the error's name, the error value the function produced, and its cause.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub status: Status,
    pub name: ErrorName,
    /// What the activation record shows as `{"error": ...}`.
    pub error: Value,
    /// What a workflow shows as the `Cause`: the exception's message, or the error as text.
    pub cause: String,
}

impl Failure {
    /// A failure whose cause is `error` as text (a string as it is, anything else as JSON).
    pub fn new(status: Status, name: ErrorName, error: Value) -> Failure {
        let cause = match &error {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        Failure { status, name, error, cause }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The invocation begins with this input, as this execution.
    Start { input: Value, execution: Execution },
    /// The platform's clock, in ms since the Unix epoch: sent before events that may walk the workflow, for
    /// `$$.State.EnteredTime` and `Wait` timestamps. The engine never reads a clock itself.
    Clock { unix_ms: i64 },
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
    /// A timer set with [`Action::SetTimer`] went off. The engine's only notion of time.
    TimerFired { timer: TimerId },
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
    /// Perform an external effect (a [`Call`] for which [`Call::is_effect`] holds) for a non-speculative run;
    /// answer with [`Event::EffectDone`].
    Effect { run: RunId, request: RequestId, effect: Call },
    /// Answer with [`Event::TimerFired`] once `delay_ms` milliseconds have passed. The platform owns the clock;
    /// a timer that fires after the invocation is over changes nothing.
    SetTimer { timer: TimerId, delay_ms: u64 },
    /// A run launched speculatively is no longer speculative (it belongs to the oldest slot, no wait holds it back,
    /// and it is no predicted callee): it may take CPU as any run does. At most once per run, while it runs.
    Promote { run: RunId },
    /// A run launched speculatively has committed: it will never be squashed, so whatever its runtime held back in
    /// case it was (its handler, with its scratch space) may serve others now. At most once per run, after its
    /// [`Event::Finished`]; a settled run is never killed.
    Settle { run: RunId },
    /// A run launched speculatively finished and was then squashed or discarded: what its runtime held back in case
    /// of that (its handler) may serve others only if the run left nothing behind. At most once per run, after its
    /// [`Event::Finished`], and never for a settled run. (A run squashed while it runs gets [`Action::Kill`].)
    Discard { run: RunId },
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
    /// The failure's name, when the invocation failed.
    pub error: Option<ErrorName>,
    /// The states (workflows) or functions (implicit chains) taken, in program order.
    pub path: Vec<String>,
    /// Every run, in launch order, with its fate.
    pub runs: Vec<RunSummary>,
    pub stats: Stats,
}

/// Builds an engine for one invocation of `app`, predicting with `oracle`.
pub fn engine(app: Arc<Application>, catalog: Arc<Catalog>, config: Config, oracle: Oracle) -> Engine {
    Engine::new(app, catalog, config, oracle)
}
