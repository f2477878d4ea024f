//! [`Engine::check_invariants`]: what must hold between the pipeline, the run table, the data buffer and the
//! effects after every step. Debug builds check it at the end of every [`Engine::step`]; the test harness checks
//! it after every step in any build.

use super::Engine;
use super::runs::{Role, RunState};
use super::slots::{Head, Progress};
use crate::{Fate, Outcome};

impl Engine {
    /// Checks the engine's invariants; the error says which one broke, and where.
    pub fn check_invariants(&self) -> Result<(), String> {
        let fail = |what: String| Err(what);
        if self.is_done() {
            if let Some((run, _)) = self.runs.iter().find(|(_, r)| r.is_running()) {
                return fail(format!("run {run} still runs after the invocation completed"));
            }
            return Ok(());
        }
        if self.budget_left > self.config.budget {
            return fail(format!("budget left {} is over the budget {}", self.budget_left, self.config.budget));
        }
        if self.runs.len() as u32 > self.config.runs_max {
            return fail(format!("{} runs, over runs_max {}", self.runs.len(), self.config.runs_max));
        }
        // Slots: program order is position order; each slot's current run is its own top run.
        for (i, slot) in self.slots.iter().enumerate() {
            if i > 0 && self.slots[i - 1].pos >= slot.pos {
                return fail(format!(
                    "slot {} at {:?} follows slot {} at {:?} in program order",
                    slot.id.0,
                    slot.pos,
                    self.slots[i - 1].id.0,
                    self.slots[i - 1].pos
                ));
            }
            if let Some(run) = slot.run() {
                let Some(r) = self.runs.get(run) else { return fail(format!("slot {} has no run {run}", slot.id.0)) };
                if r.slot != slot.id || r.role != Role::Top {
                    return fail(format!("run {run} of slot {} is not that slot's top run", slot.id.0));
                }
                if i > 0 && !r.speculative {
                    return fail(format!("run {run} of younger slot {} was launched non-speculatively", slot.id.0));
                }
                let expected = match slot.progress {
                    Progress::Running(_) => RunState::Running,
                    _ => RunState::Finished,
                };
                if r.state != expected {
                    return fail(format!(
                        "run {run} of slot {} is {:?}, its slot says {expected:?}",
                        slot.id.0, r.state
                    ));
                }
            }
        }
        if let Some(w) = self.waits.iter().find(|w| !w.fired && !self.timers.contains_key(&w.timer)) {
            return fail(format!("the wait at {:?} has no timer", w.at));
        }
        // The head's phase agrees with the oldest slot.
        match &self.head {
            Head::Open => {}
            Head::Committing { .. } => {
                if self.slots.front().and_then(|s| s.output()).is_none() {
                    return fail("the oldest slot is committing without a successful output".into());
                }
            }
            Head::ValidatingFailure { .. } => {
                let failed = matches!(self.slots.front().and_then(|s| s.outcome()), Some(Outcome::Failure(_)));
                if !failed {
                    return fail("the oldest slot is validating a failure it does not have".into());
                }
            }
            Head::Done => unreachable!("handled above"),
        }
        // Runs: callers come first; live runs belong to slots in the pipeline; only live runs hold writes.
        for (id, r) in self.runs.iter() {
            if let Some(parent) = r.parent()
                && parent >= id
            {
                return fail(format!("run {id} was launched before its caller {parent}"));
            }
            let live = r.fate().is_none();
            if r.is_running() && self.slot_index(r.slot).is_none() {
                return fail(format!("run {id} runs for slot {}, which left the pipeline", r.slot.0));
            }
            if !live && self.buffer.write_count(id) > 0 {
                return fail(format!("run {id} ended ({:?}) but still holds buffered writes", r.fate()));
            }
            if let RunState::Held(_) = r.state
                && !matches!(r.role, Role::Predicted { .. })
            {
                return fail(format!("run {id} holds an outcome but is no predicted callee"));
            }
            if matches!(r.state, RunState::Returned | RunState::Ended(Fate::Discarded))
                && !matches!(r.role, Role::Callee { .. })
            {
                return fail(format!("run {id} returned to a caller it does not have"));
            }
        }
        for p in &self.stalled {
            if !self.runs.is_running(p.run) {
                return fail(format!("a read of \"{}\" waits for run {}, which does not run", p.key, p.run));
            }
        }
        for h in &self.effects.held {
            if !self.runs.is_running(h.run) {
                return fail(format!("an effect is held for run {}, which does not run", h.run));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::super::access::PendingRead;
    use super::super::slots::Progress;
    use crate::{Action, Config, Event, Oracle, RunId};

    /// An engine one step into a sequence of `a` then `b`: `a` runs.
    fn started() -> (crate::Engine, RunId) {
        let app = model::Application::sequence("s", &["a".into(), "b".into()], &|_| true).unwrap();
        let catalog = crate::harness::catalog(["a", "b"], "v");
        let mut engine = crate::engine(Arc::new(app), catalog, Config::default(), Oracle::nothing());
        let actions = engine.step(Event::Start { input: json!({}), execution: Default::default() });
        let Some(Action::Launch { run, .. }) = actions.first() else { panic!("{actions:?}") };
        (engine, *run)
    }

    #[test]
    fn a_consistent_engine_passes() {
        let (engine, _) = started();
        assert_eq!(engine.check_invariants(), Ok(()));
    }

    #[test]
    fn a_read_waiting_for_a_run_that_does_not_run_is_caught() {
        let (mut engine, _) = started();
        engine.stalled.push(PendingRead { run: RunId(7), request: 1, key: "k".into() });
        assert!(engine.check_invariants().unwrap_err().contains("run 7, which does not run"));
    }

    #[test]
    fn a_slot_whose_run_disagrees_with_it_is_caught() {
        let (mut engine, run) = started();
        engine.slots[0].progress = Progress::Finished(run, crate::Outcome::Success(json!({})));
        let broken = engine.check_invariants().unwrap_err();
        assert!(broken.contains("its slot says Finished"), "{broken}");
    }

    #[test]
    fn buffered_writes_of_an_ended_run_are_caught() {
        let (mut engine, run) = started();
        engine.buffer.write(run, "k".into(), Some(json!(1)));
        engine.runs[run].state = super::RunState::Ended(crate::Fate::Squashed(crate::Cause::Opacity));
        engine.slots[0].progress = Progress::Waiting;
        assert!(engine.check_invariants().unwrap_err().contains("still holds buffered writes"));
    }
}
