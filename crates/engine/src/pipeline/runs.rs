//! The run table: every function run of one invocation, in launch order, with its role and state.
//!
//! A run is a **top** run (the current execution of a pipeline slot), a **callee** (bound to a call its caller
//! made), or **predicted** (a callee launched early on a prediction, not yet called). Its [`RunState`] says where
//! it is in its life; the [`Fate`] it ends with is what records and metrics show.
//!
//! **Invariant:** a run's caller (or expected caller) was launched before it, so walking callers always ends at a
//! top run.

use std::ops::{Index, IndexMut};

use serde_json::Value;

use super::SlotId;
use crate::oracle::{OutputPrediction, Prediction};
use crate::{Fate, Outcome, RequestId, RunId};

/// The calls a run is expected to make, predicted one after another on its path ([`crate::paths`]): index `k`
/// is its call `k`, with the run launched (or bound) for it.
#[derive(Debug, Default)]
pub(super) struct Forecast {
    pub calls: Vec<(String, Value, RunId)>,
    /// Its real calls left the predicted path: nothing more is predicted.
    pub diverged: bool,
}

/// Where a storage read was answered from, outside the run's own writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Store,
    Slot(SlotId),
}

/// How a run relates to the rest of its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// The slot's own function.
    Top,
    /// Bound to the call `request` that `caller` made: its result goes there.
    Callee { caller: RunId, request: RequestId },
    /// Launched early on a prediction that `caller` will call it; used only if it does.
    Predicted { caller: RunId },
}

impl Role {
    /// The caller of a callee, bound or predicted.
    pub fn caller(self) -> Option<RunId> {
        match self {
            Role::Top => None,
            Role::Callee { caller, .. } | Role::Predicted { caller } => Some(caller),
        }
    }
}

/// The CPU priority the platform was told a run has: speculative work runs only on idle CPU until it is
/// promoted ([`crate::Action::Promote`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Priority {
    /// Launched speculatively and not promoted yet.
    Speculative,
    /// Launched non-speculatively, or promoted since.
    Full,
}

/// Where a run is in its life.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum RunState {
    Running,
    /// A top run finished; its outcome is its slot's, and its fate is decided at commit or squash.
    Finished,
    /// A predicted callee finished before its caller called it: the outcome (and its writes) wait for the call.
    Held(Outcome),
    /// A callee returned a result to its caller: its writes and reads are the caller's now, and it commits with
    /// the caller's slot (reported as committed).
    Returned,
    Ended(Fate),
}

pub(super) struct Run {
    pub function: String,
    /// What it was launched on: its input, or a callee's arguments.
    pub input: Value,
    pub slot: SlotId,
    pub role: Role,
    pub state: RunState,
    /// The calls it made, in order, with the run each was bound to: what the callee predictor learns at commit.
    pub calls: Vec<(String, Value, RunId)>,
    /// What it returned to its caller (a callee that returned a result).
    pub result: Option<Value>,
    /// Why it was launched before its caller called it (a predicted callee).
    pub prediction: Option<Prediction>,
    /// The calls predicted on its path so far, when its callees are predicted by path.
    pub forecast: Option<Forecast>,
    /// Nesting of implicit calls: 0 for a top run.
    pub depth: u32,
    /// Launched while speculative.
    pub speculative: bool,
    pub priority: Priority,
    /// Keys read outside the run's own writes, and where from.
    pub reads: Vec<(String, Source)>,
    /// Versions of committed state this run (and its returned callees) read: validated at commit.
    pub versions: Vec<(String, u64)>,
    /// What the next slot was derived on before this run's output was known.
    pub output: Option<OutputPrediction>,
}

impl Run {
    pub fn is_running(&self) -> bool {
        self.state == RunState::Running
    }

    /// The fate it has, if it has one yet: a returned callee counts as committed (its writes ride on its caller).
    pub fn fate(&self) -> Option<Fate> {
        match self.state {
            RunState::Ended(fate) => Some(fate),
            RunState::Returned => Some(Fate::Committed),
            RunState::Running | RunState::Finished | RunState::Held(_) => None,
        }
    }

    /// The run it returns to, or is expected to return to.
    pub fn parent(&self) -> Option<RunId> {
        self.role.caller()
    }
}

/// Every run of the invocation, indexed by [`RunId`].
#[derive(Default)]
pub(super) struct RunTable {
    runs: Vec<Run>,
}

impl RunTable {
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    /// Adds a run; its id is the next in launch order.
    pub fn push(&mut self, run: Run) -> RunId {
        let id = RunId(self.runs.len() as u32);
        self.runs.push(run);
        id
    }

    pub fn get(&self, run: RunId) -> Option<&Run> {
        self.runs.get(run.index())
    }

    pub fn is_running(&self, run: RunId) -> bool {
        self.get(run).is_some_and(Run::is_running)
    }

    pub fn iter(&self) -> impl Iterator<Item = (RunId, &Run)> {
        self.runs.iter().enumerate().map(|(i, r)| (RunId(i as u32), r))
    }

    pub fn ids(&self) -> impl Iterator<Item = RunId> + use<> {
        (0..self.runs.len() as u32).map(RunId)
    }

    /// Whether `run` is, or was called by, a predicted callee: then it is speculative whatever its slot.
    pub fn in_predicted_tree(&self, mut run: RunId) -> bool {
        loop {
            match self[run].role {
                Role::Predicted { .. } => return true,
                Role::Callee { caller, .. } => run = caller,
                Role::Top => return false,
            }
        }
    }

    /// The runs under `root`: itself, its callees and their callees, predicted or bound.
    pub fn tree(&self, root: RunId) -> Vec<RunId> {
        let mut out = vec![root];
        let mut i = 0;
        while i < out.len() {
            let parent = out[i];
            out.extend(self.iter().filter(|(_, r)| r.parent() == Some(parent)).map(|(id, _)| id));
            i += 1;
        }
        out
    }

    /// The run and its callers, innermost first: the order in which its reads look through buffered writes.
    pub fn chain(&self, run: RunId) -> Vec<RunId> {
        let mut chain = vec![run];
        let mut cur = run;
        while let Role::Callee { caller, .. } = self[cur].role {
            chain.push(caller);
            cur = caller;
        }
        chain
    }

    /// Runs of slot `slot` that may hold writes: its top run and its callees, none of them ended yet.
    pub fn of_slot(&self, slot: SlotId) -> impl Iterator<Item = RunId> + '_ {
        self.iter().filter(move |(_, r)| r.slot == slot && r.fate().is_none()).map(|(id, _)| id)
    }
}

impl Index<RunId> for RunTable {
    type Output = Run;
    fn index(&self, run: RunId) -> &Run {
        &self.runs[run.index()]
    }
}

impl IndexMut<RunId> for RunTable {
    fn index_mut(&mut self, run: RunId) -> &mut Run {
        &mut self.runs[run.index()]
    }
}
