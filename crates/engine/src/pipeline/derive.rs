//! Deriving younger slots on predicted data, and validating the next slot against a finished slot's real output.

use super::slots::{End, Progress, Slot, Then, WalkMark};
use super::{Engine, SPECULATIVE_STEPS};
use crate::walk::{Concrete, Decision, Mode, Stop, contains_unknown, unknown};
use crate::{Action, BranchRecord, Cause, Outcome};

impl Engine {
    /// Keeps up to `depth` slots in flight beyond the oldest, deriving new ones from the youngest.
    pub(super) fn fill(&mut self, out: &mut Vec<Action>) {
        if self.depth == 0 || self.slots.is_empty() {
            return;
        }
        // Slots derived earlier but not launched (depth or budget was short then).
        for index in 1..self.slots.len().min(self.depth as usize + 1) {
            let slot = &self.slots[index];
            if slot.progress == Progress::Waiting && !self.is_done() {
                let non_speculative =
                    self.catalog.functions.get(&slot.function).is_some_and(|i| i.annotations.non_speculative);
                if !non_speculative && self.budget_left > 0 {
                    self.launch_slot(index, out);
                }
            }
        }
        while !self.is_done() && self.slots.len() <= self.depth as usize && self.budget_left > 0 {
            let index = self.slots.len() - 1;
            let youngest = &self.slots[index];
            if youngest.derived.is_some() || youngest.cursor.is_none() {
                return; // the end of the program is predicted, or an implicit chain (nothing to derive)
            }
            let assumed = match youngest.outcome() {
                Some(Outcome::Success(v)) => v,
                Some(Outcome::Failure(_)) => return, // never speculate past a failure
                None => {
                    let version = self.catalog.functions.get(&youngest.function).map(|i| i.version.clone());
                    let memo = version.and_then(|v| self.oracle.memo.lookup(&youngest.function, &v, &youngest.input));
                    let hit = memo.is_some();
                    if let Some(run) = youngest.run() {
                        self.runs[run].memo_hit = Some(hit);
                    }
                    if hit {
                        self.stats.memo_hits += 1;
                    } else {
                        self.stats.memo_misses += 1;
                    }
                    memo.unwrap_or_else(unknown)
                }
            };
            let mut cursor = self.slots[index].cursor.clone().expect("checked above");
            let mut decisions = Vec::new();
            let (app, branches, ctx) = (self.app.clone(), self.oracle.branches.clone(), self.walk_context());
            let stop = {
                let walker = Self::walker(&app, &*branches, &ctx).expect("slots with cursors belong to workflows");
                let mut mode = Mode::Speculative { high: self.config.branch_threshold, steps_left: SPECULATIVE_STEPS };
                walker.advance(&mut cursor, Some(assumed.clone()), &mut mode, &mut decisions)
            };
            match stop {
                Stop::Task { function, input, timeout_ms } => {
                    debug_assert!(!contains_unknown(&input));
                    self.stats.branch_predictions += decisions.iter().filter(|d| d.predicted).count() as u32;
                    self.slots[index].derived = Some(assumed);
                    let mut slot = self.new_slot(Some(cursor), function, input);
                    slot.decisions = decisions;
                    slot.timeout_ms = timeout_ms;
                    self.slots.push_back(slot);
                    let new = self.slots.len() - 1;
                    self.maybe_skip_or_launch(new, out);
                }
                Stop::Complete { .. } => {
                    self.slots[index].derived = Some(assumed);
                    return;
                }
                Stop::Blocked | Stop::Delay { .. } => return,
            }
        }
    }

    /// A freshly derived slot at `index`: a pure function with a memoized output is not run; a `non-speculative`
    /// one waits to be the oldest; anything else launches if the depth and budget allow.
    pub(super) fn maybe_skip_or_launch(&mut self, index: usize, out: &mut Vec<Action>) {
        let (function, input) = (self.slots[index].function.clone(), self.slots[index].input.clone());
        let info = self.catalog.functions.get(&function).cloned();
        if self.config.speculation
            && let Some(info) = &info
            && info.annotations.pure
            && let Some(output) = self.oracle.memo.lookup(&function, &info.version, &input)
        {
            self.slots[index].progress = Progress::Skipped(output);
            self.stats.skipped += 1;
            return;
        }
        let non_speculative = info.is_some_and(|i| i.annotations.non_speculative);
        if index == 0 || (index <= self.depth as usize && !non_speculative) {
            self.launch_slot(index, out);
        }
    }

    /// Walks on from the finished slot at `index` with its real output, and keeps, replaces or drops the next
    /// slot accordingly. Concrete for the oldest slot (this is the application's semantics); speculative for a
    /// younger one (an early check). Returns how the program ends if the walk reaches the end, or the delay the
    /// walk stopped at.
    pub(super) fn check_next(&mut self, index: usize, out: &mut Vec<Action>) -> Option<Then> {
        let output = self.slots[index].output()?.clone();
        let mut cursor = self.slots[index].cursor.clone()?;
        let concrete = index == 0;
        let mut decisions = Vec::new();
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
                Mode::Speculative { high: self.config.branch_threshold, steps_left: SPECULATIVE_STEPS }
            };
            walker.advance(&mut cursor, Some(output.clone()), &mut mode, &mut decisions)
        };
        let taken = decisions;
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
                let keep = self.slots.get(index + 1).is_some_and(|n| n.function == function && n.input == input);
                if keep {
                    let next = &mut self.slots[index + 1];
                    if concrete {
                        let predicted = next.decisions.iter().filter(|d| d.predicted).count() as u32;
                        self.stats.branch_hits += predicted;
                        next.decisions.clear();
                    }
                    next.cursor = Some(cursor);
                } else {
                    // A run of the same function redone on its real input replays the safe requests (GET) the
                    // squashed run made speculatively: the only effects a squashed slot can have journaled.
                    let mut journal = None;
                    if let Some(next) = self.slots.get_mut(index + 1) {
                        if next.function == function {
                            journal = Some(std::mem::take(&mut next.journal));
                        }
                        let cause = cause_against(&self.slots[index + 1]);
                        self.squash_from(index + 1, cause, out);
                    }
                    let mut slot = self.new_slot(Some(cursor), function, input);
                    if let Some(journal) = journal {
                        slot.journal = journal;
                    }
                    slot.decisions = taken;
                    slot.timeout_ms = timeout_ms;
                    self.slots.push_back(slot);
                    let new = self.slots.len() - 1;
                    self.maybe_skip_or_launch(new, out);
                }
                self.slots[index].derived = Some(output);
                None
            }
            Stop::Complete { status, result, error } => {
                if let Some(next) = self.slots.get(index + 1) {
                    let cause = cause_against(next);
                    self.squash_from(index + 1, cause, out);
                }
                self.slots[index].derived = Some(output);
                Some(Then::End(End { status, result, error }))
            }
            Stop::Delay { ms } => {
                // Time must pass before the next state: nothing younger was derived past it (speculative walks stop
                // at a Wait), but drop whatever was derived on a path the real output did not take.
                if let Some(next) = self.slots.get(index + 1) {
                    let cause = cause_against(next);
                    self.squash_from(index + 1, cause, out);
                }
                self.slots[index].derived = Some(output);
                Some(Then::Delay(ms, cursor))
            }
            Stop::Blocked => None,
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
