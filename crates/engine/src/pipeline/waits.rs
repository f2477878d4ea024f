//! Time: the timers the engine asks for, and the waits that hold work back until they fire.
//!
//! A walk passes a `Wait` state or a retry's back-off as a [`crate::walk::Delay`] at a position. A walk from a real
//! output (the concrete walk at the oldest slot, or the early check of a finished younger slot) starts its timer:
//! that is when the wait begins in a sequential run. Until it fires, nothing the wait covers
//! ([`Position::covers`]: later in its branch, or after its fan-out) starts, becomes non-speculative or commits,
//! and the invocation does not complete. Speculative walks from predicted outputs go on past waits without
//! timing them: what they derive may run, but its writes, effects and result wait for the real wait.
//!
//! A wait started by an early check (only one that took no prediction) belongs to the run it was derived from: if
//! that run is squashed, the wait goes with it, and the concrete walk from that run keeps only the waits it passes
//! too (marking them real). A slot derived past a wait nobody timed yet runs only on a prediction.

use serde_json::json;

use super::slots::End;
use super::{Engine, SlotId};
use crate::walk::{Delay, Position};
use crate::{Action, Cause, ErrorName, Failure, Outcome, RunId, Status, TimerId};

/// Why a timer was set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Timer {
    /// The run's Task has `TimeoutSeconds`: past it, the run fails with `States.Timeout`.
    TaskTimeout(RunId),
    /// A wait ends.
    Wait,
    /// The workflow's own `TimeoutSeconds`: past it, the execution fails with `States.Timeout`.
    Execution,
}

/// A wait a walk from a real output passed.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Wait {
    pub at: Position,
    pub ms: u64,
    /// The slot, and its run, whose output the walk went on from (`None`: the start, a recovered failure, or a
    /// slot not launched yet). A wait timed from a slot before it launched is the one its run's walks pass.
    pub slot: Option<SlotId>,
    pub origin: Option<RunId>,
    pub timer: TimerId,
    pub fired: bool,
    /// A concrete walk passed it: it is on the path the invocation really takes.
    pub real: bool,
}

impl Engine {
    pub(super) fn set_timer(&mut self, why: Timer, delay_ms: u64, out: &mut Vec<Action>) -> TimerId {
        self.next_timer += 1;
        let timer = TimerId(self.next_timer);
        self.timers.insert(timer, why);
        out.push(Action::SetTimer { timer, delay_ms });
        timer
    }

    /// Starts the timers of the waits a walk from `origin`'s real output passed, unless that wait already runs.
    pub(super) fn note_delays(
        &mut self,
        delays: &[Delay],
        slot: Option<SlotId>,
        origin: Option<RunId>,
        real: bool,
        out: &mut Vec<Action>,
    ) {
        for Delay { at, ms } in delays {
            let same =
                |w: &Wait| w.at == *at && w.ms == *ms && w.slot == slot && (w.origin == origin || w.origin.is_none());
            if let Some(w) = self.waits.iter_mut().find(|w| same(w)) {
                w.real |= real;
                continue;
            }
            let timer = self.set_timer(Timer::Wait, *ms, out);
            self.waits.push(Wait { at: at.clone(), ms: *ms, slot, origin, timer, fired: false, real });
        }
    }

    /// Whether a wait that has not fired covers `pos`.
    pub(super) fn gated(&self, pos: &Position) -> bool {
        !self.waits.is_empty() && self.waits.iter().any(|w| !w.fired && w.at.covers(pos))
    }

    /// The waits derived from `run` go with it.
    pub(super) fn forget_waits_of(&mut self, run: RunId) {
        self.waits.retain(|w| w.origin != Some(run));
    }

    /// The invocation ends with `end` once every wait on the real path has fired.
    pub(super) fn finish(&mut self, end: End, out: &mut Vec<Action>) {
        if self.waits.iter().any(|w| w.real && !w.fired) {
            self.ending = Some(end);
        } else {
            self.complete(end, out);
        }
    }

    pub(super) fn timer_fired(&mut self, timer: TimerId, out: &mut Vec<Action>) {
        match self.timers.remove(&timer) {
            None => {}
            Some(Timer::TaskTimeout(run)) => {
                if !self.runs.is_running(run) {
                    return;
                }
                let cause = "the Task ran past its TimeoutSeconds".to_string();
                out.push(Action::Kill { run, cause: Cause::TimedOut });
                let failure =
                    Failure { status: Status::DeveloperError, name: ErrorName::Timeout, error: json!(cause), cause };
                self.finished(run, Outcome::Failure(failure), out);
            }
            Some(Timer::Wait) => {
                if let Some(w) = self.waits.iter_mut().find(|w| w.timer == timer) {
                    w.fired = true;
                }
                if self.ending.is_some() && !self.waits.iter().any(|w| w.real && !w.fired) {
                    let end = self.ending.take().expect("checked");
                    return self.complete(end, out);
                }
                // What the wait held back may go on: the oldest slot may commit, held effects may be released.
                self.advance_head(out);
                self.speculation_narrowed(out);
            }
            Some(Timer::Execution) => {
                let cause = "the execution ran past its TimeoutSeconds".to_string();
                let result = json!({ "error": ErrorName::Timeout.as_str(), "cause": cause });
                self.complete(End { status: Status::DeveloperError, result, error: Some(ErrorName::Timeout) }, out);
            }
        }
    }
}
