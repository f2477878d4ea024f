//! The oldest slot: committing its writes in program order, failing the invocation with it, or running it again.

use super::Engine;
use super::runs::{Role, RunState, Source};
use super::slots::{End, Head};
use crate::oracle::Called;
use crate::{Action, Cause, Fate, Outcome, RunId, Status};

impl Engine {
    /// Commits finished slots from the oldest on, in program order.
    pub(super) fn advance_head(&mut self, out: &mut Vec<Action>) {
        while matches!(self.head, Head::Open) {
            let Some(head) = self.slots.front() else { return };
            if self.gated(&head.pos) {
                return; // a wait before it has not ended: it neither starts nor commits yet
            }
            let Some(outcome) = head.outcome() else {
                if head.run().is_none() {
                    // Not launched yet (non-speculative function, a wait, or depth or budget ran short): its turn.
                    self.launch_ready(out);
                }
                return;
            };
            let run = head.run();
            let speculative_run = run.is_some_and(|r| self.runs[r].speculative);
            match outcome {
                Outcome::Failure(failure) => {
                    if speculative_run && failure.status != Status::ApplicationError {
                        // It crashed, threw or timed out while speculative, perhaps on a state that is gone, or
                        // slowed by waiting on older writers: run it again, for real.
                        self.squash_slot(0, Cause::Opacity, true, out);
                        return;
                    }
                    if let (true, Some(run)) = (speculative_run && self.config.speculation, run) {
                        // It returned an error while speculative and was never squashed: its input is the real one
                        // (a mismatch at the older slot's commit would have re-run it) and what it read inside the
                        // invocation is what program order gives (a RAW violation would have re-run it). So its
                        // error is the one a run now would return, if what it read from committed state is still
                        // current: validate that as a commit of nothing; a conflict re-runs it for real.
                        let expect = std::mem::take(&mut self.runs[run].versions);
                        if !expect.is_empty() {
                            self.head = Head::ValidatingFailure { failure };
                            out.push(Action::Commit { run, writes: Vec::new(), expect });
                            return;
                        }
                    }
                    return self.fail_head(failure, out);
                }
                Outcome::Success(output) => {
                    let then = if head.cursor.is_some() {
                        self.check_next(0, out)
                    } else {
                        Some(End { status: Status::Success, result: output.clone(), error: None })
                    };
                    self.head = Head::Committing { then };
                    let Some(run) = run else {
                        self.committed(out); // a skipped pure function: nothing to commit
                        continue;
                    };
                    // The writes stay in the buffer until the commit lands, so younger readers keep seeing them.
                    let writes = self.buffer.writes_of(run);
                    let expect =
                        if self.config.speculation { std::mem::take(&mut self.runs[run].versions) } else { Vec::new() };
                    if writes.is_empty() && expect.is_empty() {
                        self.committed(out);
                        continue;
                    }
                    out.push(Action::Commit { run, writes, expect });
                    return;
                }
            }
        }
    }

    /// The oldest slot's commit landed: it leaves the pipeline and the next slot becomes the oldest, or the
    /// invocation ends.
    pub(super) fn committed(&mut self, out: &mut Vec<Action>) {
        let then = match std::mem::replace(&mut self.head, Head::Open) {
            Head::ValidatingFailure { failure } => {
                // The failed run's reads held: it failed as it would have without speculation.
                return self.fail_head(failure, out);
            }
            Head::Committing { then } => then,
            other => unreachable!("a commit landed while the oldest slot was {other:?}"),
        };
        let head = self.slots.pop_front().expect("a slot was committing");
        // The memo table learns an output once it is committed (a commit that conflicted re-runs the slot).
        if self.config.speculation
            && !head.is_skipped()
            && let Some(output) = head.output()
            && let Some(info) = self.catalog.functions.get(&head.function)
        {
            self.oracle.memo.train(&head.function, &info.version, &head.input, output);
        }
        if let Some(run) = head.run() {
            self.buffer.take(run);
            if self.config.speculation {
                // Keys it read from committed state, with no older function writing them and no squash for them:
                // the predicted dependences on them did not materialize, so their streaks end. (A read forwarded
                // from an older writer confirms the dependence, even when waiting for it avoided the squash.)
                for (key, source) in &self.runs[run].reads {
                    if *source == Source::Store && !head.raw_keys.contains(key) {
                        self.oracle.dependences.train_clean_read(&head.function, key);
                    }
                }
            }
        }
        for r in self.runs.ids() {
            let info = &mut self.runs[r];
            let bound = !matches!(info.role, Role::Predicted { .. });
            if info.slot == head.id && matches!(info.fate(), None | Some(Fate::Committed)) && bound {
                info.state = RunState::Ended(Fate::Committed);
                if info.speculative {
                    out.push(Action::Settle { run: r });
                }
                if self.config.speculation {
                    self.train_calls(r);
                }
            }
        }
        if let Some(end) = then {
            return self.finish(end, out);
        }
        // Reads that waited on the committed slot can now be answered from the store.
        self.retry_stalled(out);
        self.speculation_narrowed(out);
        self.advance_head(out);
    }

    /// What a committed run called, with what, and what each call returned, is committed knowledge now: the callee
    /// predictor learns it, and the memo table learns what the run returned if it was a callee.
    fn train_calls(&self, run: RunId) {
        let info = &self.runs[run];
        let Some(i) = self.catalog.functions.get(&info.function) else { return };
        let calls: Vec<Called> = info
            .calls
            .iter()
            .map(|(callee, args, r)| Called {
                callee: callee.clone(),
                args: args.clone(),
                result: self.runs[*r].result.clone(),
            })
            .collect();
        self.oracle.callees.train(&info.function, &i.version, &info.input, &calls);
        if let (Role::Callee { .. }, Some(result)) = (info.role, &info.result) {
            self.oracle.memo.train(&info.function, &i.version, &info.input, result);
        }
    }

    /// Another invocation changed what the oldest slot read: run it again on fresh state.
    pub(super) fn commit_conflict(&mut self, out: &mut Vec<Action>) {
        self.head = Head::Open;
        if let Some(mark) = self.slots[0].walked_from.take() {
            self.path.truncate(mark.path_len);
            self.steps = mark.steps;
        }
        self.squash_slot(0, Cause::CrossInvocationConflict, true, out);
    }
}
