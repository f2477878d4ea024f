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
    /// Whether no older slot that has not finished can affect the slot at `index`.
    pub(super) fn independent(&self, index: usize) -> bool {
        let pos = &self.slots[index].pos;
        self.slots.iter().take(index).all(|o| o.outcome().is_some() || !o.pos.covers(pos))
    }

    /// Whether the slot at `index` runs without a prediction: it sits in a fan-out's branch and is independent. (A
    /// top-level successor of a finished slot waits for its commit: one that runs earlier runs on a prediction that
    /// the commit lands.)
    fn runs_free(&self, index: usize) -> bool {
        self.config.fan_out == FanOut::Concurrent && self.slots[index].pos.0.len() > 1 && self.independent(index)
    }

    fn launch_rule(&self, index: usize) -> Launch {
        let slot = &self.slots[index];
        if slot.progress != Progress::Waiting || self.gated(&slot.pos) {
            return Launch::No;
        }
        if index == 0 {
            return Launch::Free;
        }
        if self.catalog.functions.get(&slot.function).is_some_and(|i| i.annotations.non_speculative) {
            return Launch::No;
        }
        if self.runs_free(index) {
            let limits = slot.cursor.as_ref().map(|c| c.limits()).unwrap_or_default();
            for ((prefix, branch), limit) in slot.pos.branches().zip(limits) {
                // Branches of this fan-out with a run in flight, besides this slot's own.
                let mut busy: Vec<u32> = self
                    .slots
                    .iter()
                    .take(index)
                    .filter(|o| matches!(o.progress, Progress::Running(_)))
                    .filter(|o| o.pos.0.len() > prefix.len() && o.pos.0[..prefix.len()] == *prefix)
                    .map(|o| o.pos.0[prefix.len()])
                    .filter(|b| *b != branch)
                    .collect();
                busy.dedup();
                if busy.len() as u32 + 1 > limit {
                    return Launch::No;
                }
            }
            return Launch::Free;
        }
        if !self.config.speculation {
            return Launch::No;
        }
        let predicted_ahead = (1..index).filter(|&i| !self.runs_free(i)).count();
        if predicted_ahead >= self.depth as usize {
            Launch::No
        } else if self.budget_left == 0 {
            Launch::NoBudget
        } else {
            Launch::Predicted
        }
    }

    /// Launches every waiting slot that may run now, oldest first.
    pub(super) fn launch_ready(&mut self, out: &mut Vec<Action>) {
        let mut index = 0;
        while index < self.slots.len() && !self.is_done() {
            if self.slots[index].progress == Progress::Waiting {
                match self.launch_rule(index) {
                    Launch::No => {}
                    Launch::NoBudget => self.stats.budget_exhausted = true,
                    Launch::Free => self.launch_slot(index, false, out),
                    Launch::Predicted => self.launch_slot(index, true, out),
                }
            }
            index += 1;
        }
    }
}
