//! Which derived slots may run now.
//!
//! A slot that no older unfinished slot can affect is **independent**: it sits in another branch of a `Parallel`
//! (another iteration of a `Map`) than every older slot still running or waiting, so its input is what the
//! branch gives it whatever they do. Independent slots run in both modes, up to the fan-out's limit
//! (`MaxConcurrency`, or the platform's bound) of branches in flight: this is how branches and iterations run at
//! once with speculation off, as in every ASL engine. They cost no budget and do not count against the speculation
//! depth. A slot outside every fan-out waits for the one before it to commit, unless it runs on a prediction.
//!
//! Any other younger slot was derived on a prediction (a memoized output, a predicted branch): it runs only with
//! speculation on, while fewer than `depth` such slots are in flight and the budget lasts.
//!
//! Every younger slot's run is speculative either way: its writes stay buffered and commit in program order, its
//! external effects wait until it is the oldest, and an older write to a key it read squashes it.

use super::Engine;
use super::slots::Progress;
use crate::{Action, FanOut};

/// Whether, and how, the slot at an index may launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Launch {
    /// Not now.
    No,
    /// Yes; the launch does not spend budget (the oldest slot, or an independent one).
    Free,
    /// Yes, on a prediction: the launch spends budget.
    Predicted,
    /// It would run on a prediction, but the budget is spent.
    NoBudget,
}

impl Engine {
    /// Whether a slot at `index` runs without a prediction: it sits in a fan-out's branch and no older unfinished
    /// slot (indexes in `unfinished`) can affect it. (A top-level successor of a finished slot waits for its
    /// commit: one that runs earlier runs on a prediction that the commit lands.)
    fn runs_free(&self, index: usize, unfinished: &[usize]) -> bool {
        let pos = &self.slots[index].pos;
        self.config.fan_out == FanOut::Concurrent
            && !self.slots[index].untimed_wait
            && pos.0.len() > 1
            && unfinished.iter().all(|&o| !self.slots[o].pos.covers(pos))
    }

    /// Whether the fan-outs the slot at `index` sits in have room for one more branch in flight.
    fn fan_outs_have_room(&self, index: usize) -> bool {
        let slot = &self.slots[index];
        let limits = slot.cursor.as_ref().map(|c| c.limits()).unwrap_or_default();
        for ((prefix, branch), limit) in slot.pos.branches().zip(limits) {
            // Branches of this fan-out with a run in flight, besides this slot's own (slots are in position
            // order, so one branch's slots are next to each other).
            let mut busy = 0u32;
            let mut last = None;
            for o in self.slots.iter() {
                if matches!(o.progress, Progress::Running(_))
                    && o.pos.0.len() > prefix.len()
                    && o.pos.0[..prefix.len()] == *prefix
                {
                    let b = o.pos.0[prefix.len()];
                    if b != branch && last != Some(b) {
                        busy += 1;
                        last = Some(b);
                    }
                }
            }
            if busy + 1 > limit {
                return false;
            }
        }
        true
    }

    /// The rule for the waiting slot at `index`, given whether it runs free and how many slots before it (the
    /// oldest excepted) run on a prediction.
    fn launch_rule(&self, index: usize, free: bool, predicted_ahead: usize) -> Launch {
        let slot = &self.slots[index];
        if self.gated(&slot.pos) {
            return Launch::No;
        }
        if index == 0 {
            return Launch::Free;
        }
        if !free && (!self.config.speculation || predicted_ahead >= self.depth as usize) {
            return Launch::No;
        }
        if self.catalog.functions.get(&slot.function).is_some_and(|i| i.annotations.non_speculative) {
            return Launch::No;
        }
        if !self.fan_outs_have_room(index) {
            return Launch::No;
        }
        if free {
            return Launch::Free;
        }
        if self.budget_left == 0 { Launch::NoBudget } else { Launch::Predicted }
    }

    /// Launches every waiting slot that may run now, oldest first, in one pass over the pipeline.
    pub(super) fn launch_ready(&mut self, out: &mut Vec<Action>) {
        if !self.slots.iter().any(|s| s.progress == Progress::Waiting) {
            return;
        }
        let mut unfinished: Vec<usize> = Vec::new();
        let mut predicted_ahead = 0;
        let mut index = 0;
        while index < self.slots.len() && !self.is_done() {
            let free = index > 0 && self.runs_free(index, &unfinished);
            if self.slots[index].progress == Progress::Waiting {
                match self.launch_rule(index, free, predicted_ahead) {
                    Launch::No => {}
                    Launch::NoBudget => self.stats.budget_exhausted = true,
                    Launch::Free => self.launch_slot(index, false, out),
                    Launch::Predicted => self.launch_slot(index, true, out),
                }
            }
            if index > 0 && !free {
                predicted_ahead += 1;
            }
            if self.slots.get(index).is_some_and(|s| !s.has_outcome()) {
                unfinished.push(index);
            }
            index += 1;
        }
    }

    /// Whether the slot at `index` would wait now, and derivation should not go on past it: a top-level slot that
    /// may not launch yet (past it, nothing runs before it does; inside a fan-out a later branch may still run).
    pub(super) fn holds_back_derivation(&self, index: usize) -> bool {
        let slot = &self.slots[index];
        slot.pos.0.len() <= 1 && slot.progress == Progress::Waiting
    }
}
