//! What waits for a run to become non-speculative: its external effects, held until then and journaled per slot,
//! and its CPU priority ([`Action::Promote`]).
//!
//! An effect call ([`Call::is_effect`]) of a run of the oldest slot becomes [`Action::Effect`] at once; from any
//! other run (a younger slot, or a predicted callee's tree) it is held, and dropped if the run is squashed. Each
//! slot's [`Journal`] keeps the results of the effects its runs performed, in order, so a re-run of the slot that
//! makes the same effect call gets the recorded result instead of performing it twice.

use std::collections::HashMap;

use serde_json::Value;

use super::Engine;
use super::SlotId;
use super::runs::Priority;
use crate::{Action, Call, Reply, RequestId, RunId};

/// The effects one slot performed, in order, and how far its current run has got through them.
#[derive(Debug, Default)]
pub(super) struct Journal {
    entries: Vec<(Call, Result<Value, String>)>,
    /// How many effect calls the current run has made (its position in `entries`).
    used: usize,
}

impl Journal {
    /// A new run of the slot starts from the beginning of the journal.
    pub fn restart(&mut self) {
        self.used = 0;
    }

    /// The current run's next effect call: its recorded result if an earlier run made this very call at this
    /// position, else `None` (perform it), forgetting what the earlier run did from here on.
    pub fn replay(&mut self, effect: &Call) -> Option<Result<Value, String>> {
        let i = self.used;
        self.used += 1;
        let (logged, result) = self.entries.get(i)?;
        if logged == effect {
            return Some(result.clone());
        }
        self.entries.truncate(i); // the re-run diverged: later entries no longer apply
        None
    }

    pub fn record(&mut self, effect: Call, result: Result<Value, String>) {
        self.entries.push((effect, result));
    }
}

/// An effect call waiting for its run to become non-speculative.
#[derive(Debug)]
pub(super) struct Held {
    pub run: RunId,
    pub request: RequestId,
    pub effect: Call,
}

/// Effects held and in flight.
#[derive(Debug, Default)]
pub(super) struct Effects {
    /// In the order they were called.
    pub held: Vec<Held>,
    /// Being performed: request → (run, its slot, the effect).
    pub in_flight: HashMap<RequestId, (RunId, SlotId, Call)>,
}

pub(super) fn reply_of(result: Result<Value, String>) -> Reply {
    match result {
        Ok(v) => Reply::Ok(v),
        Err(e) => Reply::Refused(e),
    }
}

impl Engine {
    /// An effect call: performed now if its run is non-speculative or it is a safe HTTP request of a function
    /// that does not ask for strict effects; held otherwise.
    pub(super) fn effect_call(&mut self, run: RunId, request: RequestId, effect: Call, out: &mut Vec<Action>) {
        let strict = self.catalog.functions.get(&self.runs[run].function).is_some_and(|i| i.annotations.strict_effects);
        if self.is_non_speculative(run) || (effect.is_safe_http() && !strict) {
            self.perform(run, request, effect, out);
        } else {
            self.stats.effects_suspended += 1;
            self.effects.held.push(Held { run, request, effect });
        }
    }

    /// Whether `run` belongs to the oldest slot, which no wait holds back, and to no predicted callee's tree.
    fn is_non_speculative(&self, run: RunId) -> bool {
        let slot = self.runs[run].slot;
        self.slots.front().is_some_and(|s| s.id == slot && !self.gated(&s.pos)) && !self.runs.in_predicted_tree(run)
    }

    /// Performs (or replays from its slot's journal) an effect of a run: of the oldest slot, or a safe request.
    fn perform(&mut self, run: RunId, request: RequestId, effect: Call, out: &mut Vec<Action>) {
        let Some(index) = self.slot_index(self.runs[run].slot) else { return };
        let head = &mut self.slots[index];
        if let Some(result) = head.journal.replay(&effect) {
            // This slot ran before and performed this very effect: answer from the journal, never twice.
            self.stats.effects_replayed += 1;
            out.push(Action::Reply { run, request, reply: reply_of(result) });
            return;
        }
        self.stats.effects += 1;
        self.effects.in_flight.insert(request, (run, head.id, effect.clone()));
        out.push(Action::Effect { run, request, effect });
    }

    /// An effect was performed: journal it, and answer its run if that still runs.
    pub(super) fn effect_done(
        &mut self,
        run: RunId,
        request: RequestId,
        result: Result<Value, String>,
        out: &mut Vec<Action>,
    ) {
        let Some((r, slot, effect)) = self.effects.in_flight.remove(&request) else { return };
        if let Some(index) = self.slot_index(slot) {
            self.slots[index].journal.record(effect, result.clone());
        }
        if r == run && self.runs.is_running(run) {
            out.push(Action::Reply { run, request, reply: reply_of(result) });
        }
    }

    /// Fewer runs are speculative than before (the oldest slot changed, a wait ended, a predicted callee was
    /// bound): those that are not any more get full priority, and their held effects are performed.
    pub(super) fn speculation_narrowed(&mut self, out: &mut Vec<Action>) {
        for run in self.runs.ids() {
            self.promote(run, out);
        }
        self.release_effects(out);
    }

    /// Gives `run` full priority if it runs, was launched speculatively, and is no longer speculative.
    pub(super) fn promote(&mut self, run: RunId, out: &mut Vec<Action>) {
        let r = &self.runs[run];
        if r.priority == Priority::Speculative && r.is_running() && self.is_non_speculative(run) {
            self.runs[run].priority = Priority::Full;
            out.push(Action::Promote { run });
        }
    }

    /// Effects that waited for their run to become non-speculative are performed now, in the order they came.
    fn release_effects(&mut self, out: &mut Vec<Action>) {
        if self.slots.is_empty() {
            return;
        }
        for held in std::mem::take(&mut self.effects.held) {
            if !self.runs.is_running(held.run) {
                continue; // squashed while it waited: the effect never happens
            }
            if self.is_non_speculative(held.run) {
                self.perform(held.run, held.request, held.effect, out);
            } else {
                self.effects.held.push(held);
            }
        }
    }
}
