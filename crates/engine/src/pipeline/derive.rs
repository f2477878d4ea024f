//! Deriving younger slots on predicted data, and validating the next slot against a finished slot's real output.
//!
//! Slots sit in program order, by [`crate::walk::Position`]. A walk from a slot goes forward to the next task; a
//! walk blocked inside a `Parallel` branch (`Map` iteration) skips to the next branch, leaving a **hole**: the
//! rest of the blocked branch is derived later, when the slot before the hole finishes, and is inserted in its
//! place. What is already derived beyond a hole stays: it does not depend on the hole.

use super::slots::{End, Progress, Slot, WalkMark};
use super::{Engine, SPECULATIVE_STEPS};
use crate::oracle::OutputPrediction;
use crate::walk::{
    Concrete, Cursor, Decision, Mode, Position, Stop, Trace, as_failure, contains_unknown, failure_marker, unknown,
};
use crate::{Action, BranchRecord, Cause, Outcome, Status};

/// A function's output as the oracle predicts it.
pub(super) enum Predicted {
    /// A memo row: the output it gave last on this input.
    Memo(serde_json::Value),
    /// Guessed field by field ([`crate::fields`]), the unknown parts marked unknown.
    Guess(serde_json::Value),
    Nothing,
}

impl Predicted {
    pub fn kind(&self) -> OutputPrediction {
        match self {
            Predicted::Memo(_) => OutputPrediction::Exact,
            Predicted::Guess(_) => OutputPrediction::Fields,
            Predicted::Nothing => OutputPrediction::None,
        }
    }

    pub fn value(self) -> Option<serde_json::Value> {
        match self {
            Predicted::Memo(v) | Predicted::Guess(v) => Some(v),
            Predicted::Nothing => None,
        }
    }
}

/// A task a walk reached, to place in the pipeline.
pub(super) struct Placed {
    pub cursor: Cursor,
    pub function: String,
    pub input: serde_json::Value,
    pub timeout_ms: Option<u64>,
    pub decisions: Vec<Decision>,
}

impl Engine {
    /// Derives younger slots from the youngest: on its real output if it finished, its memoized output, or an
    /// unknown value (with speculation off: only real outputs and unknown ones, and no predicted branches, so that
    /// only the branches of a fan-out are found ahead). Stops at the pipeline's length bound.
    pub(super) fn fill(&mut self, out: &mut Vec<Action>) {
        let speculating = self.config.speculation && self.depth > 0;
        let bound = self.depth as usize + self.config.workflows.map_concurrency_max as usize + 1;
        while !self.is_done() && !self.slots.is_empty() && self.slots.len() <= bound {
            let index = self.slots.len() - 1;
            let youngest = &self.slots[index];
            if youngest.derived.is_some() || youngest.cursor.is_none() {
                break; // the end of the program is derived, or an implicit chain (nothing to derive)
            }
            let finished = youngest.has_outcome();
            if youngest.derive_blocked && !finished {
                break; // it was blocked on what is still unknown
            }
            if index > 0 && self.holds_back_derivation(index) {
                break; // it waits to launch: nothing past it would run sooner
            }
            let assumed = match youngest.outcome() {
                Some(Outcome::Success(v)) => v,
                // A returned error is deterministic in the input and what was read: follow it to its Catch.
                Some(Outcome::Failure(f)) if speculating && f.status == Status::ApplicationError => {
                    failure_marker(&f.name, &f.cause)
                }
                Some(Outcome::Failure(_)) => break, // a crash or a timeout may not happen again
                None if !speculating => unknown(),
                None => {
                    let predicted = self.predicted_output(&youngest.function, &youngest.input);
                    let kind = predicted.kind();
                    if let Some(run) = youngest.run() {
                        self.runs[run].output = Some(kind);
                    }
                    match kind {
                        OutputPrediction::Exact => self.stats.memo_hits += 1,
                        OutputPrediction::Fields => {
                            self.stats.memo_misses += 1;
                            self.stats.field_guesses += 1;
                        }
                        OutputPrediction::None => self.stats.memo_misses += 1,
                    }
                    predicted.value().unwrap_or_else(unknown)
                }
            };
            let mut cursor = self.slots[index].cursor.clone().expect("checked above");
            let mut trace = Trace::default();
            let (app, branches, ctx) = (self.app.clone(), self.oracle.branches.clone(), self.walk_context());
            let stop = {
                let walker = Self::walker(&app, &*branches, &ctx).expect("slots with cursors belong to workflows");
                let high = if speculating { self.config.branch_threshold } else { f64::INFINITY };
                let mut mode = Mode::Speculative { high, steps_left: SPECULATIVE_STEPS, skip: true };
                match as_failure(&assumed) {
                    // The function is expected to fail (the memo saw it fail on this input): its Catch, if any.
                    Some((name, cause)) => {
                        let status = Status::ApplicationError;
                        match walker.recover(&mut cursor, status, name, cause, &mut mode, &mut trace) {
                            Stop::Complete { .. } => Stop::Blocked, // never speculate an uncaught failure
                            stop => stop,
                        }
                    }
                    None => walker.advance(&mut cursor, Some(assumed.clone()), &mut mode, &mut trace),
                }
            };
            match stop {
                Stop::Task { function, input, timeout_ms } => {
                    debug_assert!(!contains_unknown(&input));
                    self.stats.branch_predictions += trace.decisions.iter().filter(|d| d.predicted).count() as u32;
                    self.slots[index].derived = Some(assumed);
                    // A wait on the way begins now if nothing guessed leads to it: the walk went on from a finished
                    // slot's real output without a prediction, or the wait sits in another branch than the slot
                    // walked from (it began when the fan-out was entered, no later than now). Any other wait nobody
                    // times yet: a slot it covers may run only on a prediction until a real walk times it.
                    let unpredicted = !trace.decisions.iter().any(|d| d.predicted);
                    let from = self.slots[index].pos.clone();
                    let (timed, untimed): (Vec<_>, Vec<_>) = std::mem::take(&mut trace.delays)
                        .into_iter()
                        .partition(|d| unpredicted && (finished || !from.covers(&d.at)));
                    let (origin_slot, origin_run) = (self.slots[index].id, self.slots[index].run());
                    self.note_delays(&timed, Some(origin_slot), origin_run, false, out);
                    let mut slot = self.new_slot(Some(cursor), function, input);
                    slot.decisions = trace.decisions;
                    slot.timeout_ms = timeout_ms;
                    slot.untimed_wait = untimed.iter().any(|d| d.at.covers(&slot.pos));
                    debug_assert!(slot.pos > self.slots[index].pos, "a walk goes forward in program order");
                    self.slots.push_back(slot);
                    let new = self.slots.len() - 1;
                    self.maybe_skip(new);
                    self.launch_ready(out);
                    if self.holds_back_derivation(new) {
                        break;
                    }
                }
                Stop::Complete { .. } => {
                    self.slots[index].derived = Some(assumed);
                    break;
                }
                Stop::Blocked => {
                    if !finished {
                        self.slots[index].derive_blocked = true;
                    }
                    break;
                }
            }
        }
        self.launch_ready(out);
    }

    /// What `function` is predicted to return on `input`: its memo row, else (with `field_guesses`) its output
    /// guessed field by field, the unknown parts unknown. A guess is never trusted: what derives from it is
    /// validated like what derives from a memo row.
    pub(super) fn predicted_output(&self, function: &str, input: &serde_json::Value) -> Predicted {
        let Some(version) = self.catalog.functions.get(function).map(|i| &i.version) else {
            return Predicted::Nothing;
        };
        if let Some(output) = self.oracle.memo.lookup(function, version, input) {
            return Predicted::Memo(output);
        }
        match self.config.field_guesses.then(|| self.oracle.memo.guess(function, version, input)).flatten() {
            Some(guess) => Predicted::Guess(guess.fill(&unknown())),
            None => Predicted::Nothing,
        }
    }

    /// A freshly derived slot at `index`: with speculation, a pure function with a memoized output is not run.
    pub(super) fn maybe_skip(&mut self, index: usize) {
        let (function, input) = (&self.slots[index].function, &self.slots[index].input);
        let info = self.catalog.functions.get(function);
        if self.config.speculation
            && let Some(info) = info
            && info.annotations.pure
            && let Some(output) = self.oracle.memo.lookup(function, &info.version, input)
            && as_failure(&output).is_none()
        {
            self.slots[index].progress = Progress::Skipped(output);
            self.stats.skipped += 1;
        }
    }

    /// Walks on from the finished slot at `index` with its real output, and keeps, inserts, replaces or drops the
    /// next slot accordingly. Concrete for the oldest slot (this is the application's semantics); speculative for a
    /// younger one (an early check). Returns how the program ends if the walk reaches the end.
    pub(super) fn check_next(&mut self, index: usize, out: &mut Vec<Action>) -> Option<End> {
        let output = self.slots[index].output()?.clone();
        let mut cursor = self.slots[index].cursor.clone()?;
        let concrete = index == 0;
        let mut trace = Trace::default();
        if concrete {
            self.slots[0].walked_from = Some(WalkMark { path_len: self.path.len(), steps: self.steps });
        }
        let (app, branches, ctx) = (self.app.clone(), self.oracle.branches.clone(), self.walk_context());
        let stop = {
            let walker = Self::walker(&app, &*branches, &ctx).expect("slots with cursors belong to workflows");
            let mut mode = if concrete {
                Mode::Concrete(Concrete {
                    path: &mut self.path,
                    steps: &mut self.steps,
                    steps_max: self.config.steps_max,
                })
            } else {
                let high = if self.config.speculation { self.config.branch_threshold } else { f64::INFINITY };
                Mode::Speculative { high, steps_left: SPECULATIVE_STEPS, skip: false }
            };
            walker.advance(&mut cursor, Some(output.clone()), &mut mode, &mut trace)
        };
        // The waits on the way begin now, when the function before them finished: on the real path (concrete), or
        // on one that took no prediction to a task or the end (an early check on real data).
        let (origin_slot, origin) = (self.slots[index].id, self.slots[index].run());
        let unpredicted =
            matches!(stop, Stop::Task { .. } | Stop::Complete { .. }) && !trace.decisions.iter().any(|d| d.predicted);
        if concrete || unpredicted {
            self.note_delays(&trace.delays, Some(origin_slot), origin, concrete, out);
        }
        if concrete {
            // Waits noted from this slot that the real walk did not pass are not on the path.
            self.waits.retain(|w| w.slot != Some(origin_slot) || w.real || w.fired);
        }
        if let Some(handled) = trace.handled_at.clone() {
            // A `Fail` state in a branch failed its fan-out, and the walk recovered at `handled`: what depends on
            // that state was derived on its success.
            for t in (index + 1..self.slots.len()).rev() {
                if handled.covers(&self.slots[t].pos) {
                    self.squash_slot(t, Cause::ControlMispredict, false, out);
                    self.remove_slot(t);
                }
            }
        }
        let taken = trace.decisions;
        if concrete {
            self.record_branches(index + 1, &taken);
        }
        // Why the next slot is wrong: a branch it was predicted down went the other way, or else its input.
        let cause_against = |next: &Slot| {
            let wrong_branch = next
                .decisions
                .iter()
                .any(|d| d.predicted && taken.iter().any(|t| t.same_choice(d) && t.target != d.target));
            if wrong_branch { Cause::ControlMispredict } else { Cause::MemoMismatch }
        };
        match stop {
            Stop::Task { function, input, timeout_ms } => {
                let at = cursor.position();
                let next = self.slots.get(index + 1);
                let keep = next.is_some_and(|n| {
                    n.pos == at && n.function == function && n.input == input && n.timeout_ms == timeout_ms
                });
                if !keep && next.is_some_and(|n| n.pos <= at) {
                    // What depends on this slot's output was derived from a guess the real output contradicts.
                    let cause = cause_against(&self.slots[index + 1]);
                    self.squash_dependents_keeping(index, &at, &function, cause, out);
                }
                let task = Placed { cursor, function, input, timeout_ms, decisions: taken };
                self.place_task(index + 1, task, concrete, out);
                self.slots[index].derived = Some(output);
                None
            }
            Stop::Complete { status, result, error } => {
                if let Some(next) = self.slots.get(index + 1) {
                    let cause = cause_against(next);
                    if concrete {
                        // The program ends here: nothing after this slot is on its path, in any branch.
                        for t in (index + 1..self.slots.len()).rev() {
                            self.squash_slot(t, cause, false, out);
                            self.remove_slot(t);
                        }
                    } else {
                        self.squash_dependents(index, cause, out);
                    }
                }
                self.slots[index].derived = Some(output);
                Some(End { status, result, error })
            }
            Stop::Blocked => None,
        }
    }

    /// Places the task a walk reached at its position, from `first` on: keeps the slot already there if it runs the
    /// same function on the same input within the same timeout (a concrete walk confirms its branches), else
    /// squashes whatever sits from `first` up to that position (and what depends on it) and inserts the task. A task with nothing at or before
    /// its position fills a hole: what is derived beyond it does not depend on it. Returns the task's index.
    pub(super) fn place_task(&mut self, first: usize, task: Placed, concrete: bool, out: &mut Vec<Action>) -> usize {
        let Placed { cursor, function, input, timeout_ms, decisions } = task;
        let at = cursor.position();
        if let Some(next) = self.slots.get_mut(first)
            && next.pos == at
            && next.function == function
            && next.input == input
            && next.timeout_ms == timeout_ms
        {
            if concrete {
                self.stats.branch_hits += next.decisions.iter().filter(|d| d.predicted).count() as u32;
                next.decisions.clear();
                next.untimed_wait = false;
            }
            next.cursor = Some(cursor);
            return first;
        }
        // A run of the same function redone on its real input replays the safe requests (GET) the squashed run
        // made speculatively: the only effects a squashed slot can have journaled.
        let mut journal = None;
        while let Some(next) = self.slots.get(first)
            && next.pos <= at
        {
            let same = next.pos == at && next.function == function;
            let wrong_branch = next
                .decisions
                .iter()
                .any(|d| d.predicted && decisions.iter().any(|t| t.same_choice(d) && t.target != d.target));
            if same {
                journal = Some(std::mem::take(&mut self.slots[first].journal));
            }
            let cause = if wrong_branch { Cause::ControlMispredict } else { Cause::MemoMismatch };
            self.squash_dependents(first, cause, out);
            self.squash_slot(first, cause, false, out);
            self.remove_slot(first);
        }
        let mut slot = self.new_slot(Some(cursor), function, input);
        if let Some(journal) = journal {
            slot.journal = journal;
        }
        slot.decisions = decisions;
        slot.timeout_ms = timeout_ms;
        let index = self.insert_slot(slot);
        self.maybe_skip(index);
        index
    }

    /// [`Engine::squash_dependents`], but a slot at `at` running `function` is left for [`Engine::place_task`],
    /// which may keep its journal.
    fn squash_dependents_keeping(
        &mut self,
        index: usize,
        at: &Position,
        function: &str,
        cause: Cause,
        out: &mut Vec<Action>,
    ) {
        let pos = self.slots[index].pos.clone();
        for t in (index + 1..self.slots.len()).rev() {
            let spared = self.slots[t].pos == *at && self.slots[t].function == function;
            if !spared && pos.covers(&self.slots[t].pos) {
                self.squash_slot(t, cause, false, out);
                self.remove_slot(t);
            }
        }
    }

    /// Squashes and removes every slot younger than the one at `index` that depends on it.
    pub(super) fn squash_dependents(&mut self, index: usize, cause: Cause, out: &mut Vec<Action>) {
        let pos = self.slots[index].pos.clone();
        for t in (index + 1..self.slots.len()).rev() {
            if pos.covers(&self.slots[t].pos) {
                self.squash_slot(t, cause, false, out);
                self.remove_slot(t);
            }
        }
    }

    /// Records, on the current run of the slot at `index`, each branch the predictor chose on the way to it and the
    /// target the concrete walk (`taken`) chose.
    fn record_branches(&mut self, index: usize, taken: &[Decision]) {
        let Some(slot) = self.slots.get(index) else { return };
        let Some(run) = slot.run() else { return };
        for d in slot.decisions.iter().filter(|d| d.predicted) {
            let actual = taken.iter().find(|t| t.same_choice(d)).map(|t| t.target_name.clone());
            let record = BranchRecord { choice: d.choice.clone(), predicted: d.target_name.clone(), actual };
            self.branch_records.entry(run).or_default().push(record);
        }
    }
}
