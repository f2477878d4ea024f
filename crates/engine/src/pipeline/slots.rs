//! Pipeline slots: the functions of one invocation in program order, and the phase of the oldest one.
//!
//! Each slot is one function the invocation runs, or speculatively expects to run. It knows where in the workflow
//! it stands (a walk cursor, and its position in program order), its function and input, its [`Progress`], and the
//! output its successor was derived from. The oldest slot is the only non-speculative one (once no wait holds it
//! back); [`Head`] is its phase.

use serde_json::Value;

use super::SlotId;
use super::effects::Journal;
use crate::walk::{Cursor, Decision, Position};
use crate::{ErrorName, Failure, Outcome, RunId, Status};

/// Where a slot's function stands.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Progress {
    /// Not launched: depth, budget or a `non-speculative` annotation held it back, or it was squashed.
    Waiting,
    Running(RunId),
    Finished(RunId, Outcome),
    /// A pure function whose output came from the memo table: it never runs.
    Skipped(Value),
}

/// How the invocation ends: the result, and the failure's name if it failed.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct End {
    pub status: Status,
    pub result: Value,
    pub error: Option<ErrorName>,
}

/// The phase of the oldest slot, and so of the invocation.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Head {
    /// Launching, running or finishing; nothing is in flight for it.
    Open,
    /// Its writes are committing. When they land it leaves the pipeline, and the invocation ends if `then` says so.
    Committing { then: Option<End> },
    /// Its run returned an error while speculative; the committed state it read is being validated by a commit of
    /// nothing. When that lands, the failure stands (and goes to `Retry`, `Catch` or the invocation's result).
    ValidatingFailure { failure: Failure },
    /// The invocation is over.
    Done,
}

/// Path length and step count before the concrete walk from a slot, to undo it if the slot runs again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct WalkMark {
    pub path_len: usize,
    pub steps: u32,
}

pub(super) struct Slot {
    pub id: SlotId,
    /// Where it stands in program order: its cursor's position (an implicit chain's entry is at the start).
    pub pos: Position,
    /// Where the walk stands: at this slot's Task. `None` for an implicit chain's entry function.
    pub cursor: Option<Cursor>,
    pub function: String,
    pub input: Value,
    pub progress: Progress,
    /// The output (possibly unknown) the next slot was derived from; `None` while nothing was derived.
    pub derived: Option<Value>,
    /// Branch decisions on the way to this slot.
    pub decisions: Vec<Decision>,
    pub walked_from: Option<WalkMark>,
    /// Effects performed for this slot, so that a re-run gets their results instead of performing them again.
    pub journal: Journal,
    /// Keys for which an older write squashed this slot: its commit is no clean read of them.
    pub raw_keys: Vec<String>,
    /// The Task's `TimeoutSeconds`, in ms: each run of the slot fails with `States.Timeout` past it.
    pub timeout_ms: Option<u64>,
    /// A walk on from it, before it finished, was blocked: it is not tried again until the slot finishes (or the
    /// speculation depth changes), because nothing it would walk on has changed.
    pub derive_blocked: bool,
    /// It was derived past a wait that no timer covers yet (the walk went on from a guess): it may run only on a
    /// prediction until a real walk places it.
    pub untimed_wait: bool,
}

impl Slot {
    pub fn new(id: SlotId, cursor: Option<Cursor>, function: String, input: Value) -> Slot {
        Slot {
            id,
            pos: cursor.as_ref().map(Cursor::position).unwrap_or_default(),
            cursor,
            function,
            input,
            progress: Progress::Waiting,
            derived: None,
            decisions: Vec::new(),
            walked_from: None,
            journal: Journal::default(),
            raw_keys: Vec::new(),
            timeout_ms: None,
            derive_blocked: false,
            untimed_wait: false,
        }
    }

    /// Its current run, running or finished.
    pub fn run(&self) -> Option<RunId> {
        match self.progress {
            Progress::Running(run) | Progress::Finished(run, _) => Some(run),
            Progress::Waiting | Progress::Skipped(_) => None,
        }
    }

    /// Its output, or its failure, once it has one.
    pub fn outcome(&self) -> Option<Outcome> {
        match &self.progress {
            Progress::Finished(_, outcome) => Some(outcome.clone()),
            Progress::Skipped(output) => Some(Outcome::Success(output.clone())),
            Progress::Waiting | Progress::Running(_) => None,
        }
    }

    /// Whether it has an outcome (finished or skipped), without copying it.
    pub fn has_outcome(&self) -> bool {
        matches!(self.progress, Progress::Finished(..) | Progress::Skipped(_))
    }

    /// Its successful output, once it has one.
    pub fn output(&self) -> Option<&Value> {
        match &self.progress {
            Progress::Finished(_, Outcome::Success(output)) | Progress::Skipped(output) => Some(output),
            _ => None,
        }
    }

    pub fn is_skipped(&self) -> bool {
        matches!(self.progress, Progress::Skipped(_))
    }
}
