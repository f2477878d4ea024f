//! Calls from running code, and implicit calls: callees bound to a call, callees launched early on a prediction,
//! and the end of a run.
//!
//! When a run launches, the callees the callee predictor names for its function and input start early, as
//! **predicted** runs. For an input it has no row for, the callees are predicted by **path** ([`crate::paths`]),
//! one after another: the next call is predicted once the results the template reads are known (a real result,
//! a predicted run's, or the memo table's), and prediction stops when the real calls leave the predicted path.
//! A predicted run reads only older slots and the store, and its effects wait. When the caller
//! really calls `invoke(g, args)`, a predicted run of `g` on canonically equal arguments is **bound** to the call,
//! unless it read something the caller (or a callee that returned to it) has written since, or crashed: then it is
//! squashed and `g` starts fresh. Predicted runs never called are squashed when their caller finishes
//! ([`Cause::UncalledCallee`]).

use serde_json::Value;

use super::runs::{Forecast, Role, RunState};
use super::slots::Progress;
use super::{Engine, PREDICTED_CALLEES_MAX};
use crate::oracle::{Called, Prediction};
use crate::{Action, Call, Cause, Fate, Outcome, Reply, RequestId, RunId, Status};

impl Engine {
    /// A call from running code: checked against the limits, then answered, buffered, launched or held.
    pub(super) fn call(&mut self, run: RunId, request: RequestId, call: Call, out: &mut Vec<Action>) {
        let refuse =
            |out: &mut Vec<Action>, m: String| out.push(Action::Reply { run, request, reply: Reply::Refused(m) });
        if !self.runs.is_running(run) {
            return refuse(out, format!("run {run} is not running"));
        }
        let key_bytes_max = self.config.key_bytes_max;
        let key_ok = |key: &str| -> Result<(), String> {
            if key.is_empty() || key.len() > key_bytes_max {
                return Err(format!("keys must be 1 to {key_bytes_max} bytes long (key_bytes_max)"));
            }
            Ok(())
        };
        match call {
            Call::Get { key } => match key_ok(&key) {
                Ok(()) => self.read(run, request, key, out),
                Err(m) => refuse(out, m),
            },
            Call::Put { key, value } => {
                if let Err(m) = key_ok(&key) {
                    return refuse(out, m);
                }
                let size = serde_json::to_vec(&value).map_or(usize::MAX, |v| v.len());
                if size > self.config.value_bytes_max {
                    let max = self.config.value_bytes_max;
                    return refuse(
                        out,
                        format!(
                            "value of {size} bytes for key \"{key}\" is over the limit of {max} bytes (value_bytes_max)"
                        ),
                    );
                }
                self.write(run, request, key, Some(value), out);
            }
            Call::Delete { key } => match key_ok(&key) {
                Ok(()) => self.write(run, request, key, None, out),
                Err(m) => refuse(out, m),
            },
            Call::Invoke { function, args } => {
                if !self.catalog.functions.contains_key(&function) {
                    return refuse(out, format!("function \"{function}\" does not exist"));
                }
                if self.runs[run].depth + 1 > self.config.call_depth_max {
                    let max = self.config.call_depth_max;
                    return refuse(out, format!("calls nest deeper than {max} (call_depth_max)"));
                }
                if self.runs.len() as u32 >= self.config.runs_max {
                    let max = self.config.runs_max;
                    return refuse(out, format!("the invocation reached its limit of {max} function runs (runs_max)"));
                }
                let index = self.runs[run].calls.len();
                let callee = match self.bind_predicted(run, request, &function, &args, out) {
                    Some(bound) => bound,
                    None => {
                        let (slot, speculative) = (self.runs[run].slot, self.runs[run].speculative);
                        let role = Role::Callee { caller: run, request };
                        let Some(id) = self.new_run(&function, slot, role, speculative, args.clone(), out) else {
                            return;
                        };
                        id
                    }
                };
                self.runs[run].calls.push((function.clone(), args.clone(), callee));
                self.follow_forecast(run, index, &function, &args, callee);
            }
            effect @ (Call::Http { .. } | Call::Syscall { .. }) => self.effect_call(run, request, effect, out),
        }
    }

    /// Launches the callees the oracle predicts `parent` will call: they run on a prediction and are used only if
    /// `parent` really calls them with the same arguments. Without a row for its exact input, by path.
    pub(super) fn prelaunch_callees(&mut self, parent: RunId, out: &mut Vec<Action>) {
        if self.depth == 0 || self.runs[parent].depth + 1 > self.config.call_depth_max {
            return;
        }
        let (function, input) = {
            let r = &self.runs[parent];
            (r.function.clone(), r.input.clone())
        };
        let Some(version) = self.catalog.functions.get(&function).map(|i| i.version.clone()) else { return };
        let Some(predicted) = self.oracle.callees.predict(&function, &version, &input) else {
            if self.config.callee_paths {
                self.runs[parent].forecast = Some(Forecast::default());
                self.extend_forecast(parent, out);
            }
            return;
        };
        for (callee, args) in predicted.into_iter().take(PREDICTED_CALLEES_MAX) {
            if !self.catalog.functions.contains_key(&callee) {
                continue;
            }
            if self.launch_predicted(parent, &callee, args, Prediction::Exact, out).is_none() {
                return;
            }
        }
    }

    /// Launches a callee `parent` is predicted to call, if the budget and limits allow.
    fn launch_predicted(
        &mut self,
        parent: RunId,
        callee: &str,
        args: Value,
        why: Prediction,
        out: &mut Vec<Action>,
    ) -> Option<RunId> {
        let runs_left = (self.runs.len() as u32) < self.config.runs_max;
        if self.budget_left == 0 || !runs_left || self.is_done() {
            return None;
        }
        self.budget_left -= 1;
        self.stats.speculative_launches += 1;
        self.stats.callees_predicted += 1;
        if why == Prediction::Path {
            self.stats.callees_predicted_path += 1;
        }
        let slot = self.runs[parent].slot;
        let run = self.new_run(callee, slot, Role::Predicted { caller: parent }, true, args, out)?;
        self.runs[run].prediction = Some(why);
        Some(run)
    }

    /// Predicts and launches `parent`'s next calls on its path while the oracle can resolve them.
    pub(super) fn extend_forecast(&mut self, parent: RunId, out: &mut Vec<Action>) {
        if self.depth == 0 || self.runs[parent].depth + 1 > self.config.call_depth_max {
            return;
        }
        loop {
            let r = &self.runs[parent];
            let Some(forecast) = &r.forecast else { return };
            if forecast.diverged || forecast.calls.len() >= PREDICTED_CALLEES_MAX || !r.is_running() {
                return;
            }
            let Some(version) = self.catalog.functions.get(&r.function).map(|i| i.version.clone()) else { return };
            let earlier: Vec<Called> = forecast
                .calls
                .iter()
                .map(|(callee, args, run)| Called {
                    callee: callee.clone(),
                    args: args.clone(),
                    result: self.known_result(*run, callee, args),
                })
                .collect();
            let Some((callee, args)) = self.oracle.callees.next(&r.function, &version, &r.input, &earlier) else {
                return;
            };
            // Arguments made from the unknown part of a guessed result are not arguments anyone will call with.
            if !self.catalog.functions.contains_key(&callee) || crate::walk::contains_unknown(&args) {
                return;
            }
            let Some(run) = self.launch_predicted(parent, &callee, args.clone(), Prediction::Path, out) else {
                return;
            };
            if let Some(f) = self.runs[parent].forecast.as_mut() {
                f.calls.push((callee, args, run));
            }
        }
    }

    /// What the call on `run` returned or will return, as far as is known: its real result, its held result (a
    /// predicted run that finished), the memo table's, or a guess field by field (whose unknown parts no template
    /// resolves from).
    fn known_result(&self, run: RunId, callee: &str, args: &Value) -> Option<Value> {
        let r = &self.runs[run];
        match &r.state {
            RunState::Held(Outcome::Success(v)) => return Some(v.clone()),
            RunState::Returned => return r.result.clone(),
            RunState::Ended(Fate::Committed) if r.result.is_some() => return r.result.clone(),
            _ => {}
        }
        self.predicted_output(callee, args).value()
    }

    /// `caller`'s real call `index` went to `callee` (a run) on `args`: a forecast that predicted it goes on, one
    /// that predicted another call stops.
    fn follow_forecast(&mut self, caller: RunId, index: usize, function: &str, args: &Value, callee: RunId) {
        let Some(forecast) = self.runs[caller].forecast.as_mut() else { return };
        if forecast.calls.len() == index {
            forecast.calls.push((function.to_string(), args.clone(), callee));
            return;
        }
        match forecast.calls.get_mut(index) {
            Some((f, a, run)) if f == function && model::json::canonical(a) == model::json::canonical(args) => {
                *run = callee;
            }
            _ => forecast.diverged = true,
        }
    }

    /// Binds a call to a callee launched early for it, if one matches: the same function on canonically equal
    /// arguments, which read nothing the caller (or a callee that returned to it) has written since. Returns the run
    /// the call was bound to.
    fn bind_predicted(
        &mut self,
        caller: RunId,
        request: RequestId,
        function: &str,
        args: &Value,
        out: &mut Vec<Action>,
    ) -> Option<RunId> {
        let wanted = model::json::canonical(args);
        let candidate = self.runs.iter().find(|(_, r)| {
            r.role == Role::Predicted { caller }
                && r.fate().is_none()
                && r.function == function
                && model::json::canonical(&r.input) == wanted
        });
        let (d, _) = candidate?;
        let chain = self.runs.chain(caller);
        let stale = self
            .runs
            .tree(d)
            .iter()
            .any(|r| self.runs[*r].reads.iter().any(|(k, _)| self.buffer.read(chain.iter().copied(), k).is_some()));
        let crashed = matches!(&self.runs[d].state,
            RunState::Held(Outcome::Failure(f)) if f.status != Status::ApplicationError);
        if stale || crashed {
            // It ran on a state the caller has since changed, or crashed while speculative: run it again, for real.
            let cause = if stale { Cause::RawViolation } else { Cause::Opacity };
            self.squash_tree(d, cause, out);
            return None;
        }
        // A returned error is used like a result: the call's arguments are the real ones, it saw the caller's state,
        // and what it read from committed state joins the caller's reads, validated when the caller commits.
        self.stats.callees_used += 1;
        if self.runs[d].prediction == Some(Prediction::Path) {
            self.stats.callees_used_path += 1;
        }
        let r = &mut self.runs[d];
        r.role = Role::Callee { caller, request };
        if let RunState::Held(outcome) = std::mem::replace(&mut r.state, RunState::Finished) {
            self.deliver(d, outcome, out);
        } else {
            r.state = RunState::Running;
        }
        self.speculation_narrowed(out);
        Some(d)
    }

    /// A callee's result reaches its caller: its writes, reads and read versions become the caller's.
    fn deliver(&mut self, run: RunId, outcome: Outcome, out: &mut Vec<Action>) {
        let Role::Callee { caller, request } = self.runs[run].role else {
            unreachable!("only a bound callee delivers its result")
        };
        match outcome {
            Outcome::Success(result) => {
                self.buffer.merge_into(run, caller);
                let r = &mut self.runs[run];
                let (reads, versions) = (std::mem::take(&mut r.reads), std::mem::take(&mut r.versions));
                r.state = RunState::Returned;
                r.result = Some(result.clone());
                self.runs[caller].reads.extend(reads);
                self.runs[caller].versions.extend(versions);
                out.push(Action::Reply { run: caller, request, reply: Reply::Ok(result) });
            }
            Outcome::Failure(failure) => {
                self.buffer.take(run);
                self.runs[run].state = RunState::Ended(Fate::Discarded);
                out.push(Action::Reply { run: caller, request, reply: Reply::FunctionFailed(failure.error) });
            }
        }
        self.retry_stalled(out);
        self.extend_forecast(caller, out);
    }

    /// Squashes a run and everything under it.
    fn squash_tree(&mut self, root: RunId, cause: Cause, out: &mut Vec<Action>) {
        for r in self.runs.tree(root) {
            if self.runs[r].fate().is_none() {
                self.end_run(r, Fate::Squashed(cause), out);
            }
        }
        *self.stats.squashes.entry(cause).or_insert(0) += 1;
        self.forget_ended();
    }

    /// A launched run ended.
    pub(super) fn finished(&mut self, run: RunId, outcome: Outcome, out: &mut Vec<Action>) {
        if !self.runs.is_running(run) {
            return; // squashed earlier; its late report changes nothing
        }
        self.runs[run].state = RunState::Finished;
        // Predicted callees it never called were mispredicted; callees still running can return nowhere.
        for r in self.runs.ids() {
            if self.runs[r].role == (Role::Predicted { caller: run }) && self.runs[r].fate().is_none() {
                self.squash_tree(r, Cause::UncalledCallee, out);
            }
        }
        self.kill_callees_of(run, Cause::Abandoned, out);
        match self.runs[run].role {
            // Launched on a prediction and not called yet: hold the outcome (and its writes) for the call.
            Role::Predicted { caller } => {
                self.runs[run].state = RunState::Held(outcome);
                self.extend_forecast(caller, out);
            }
            Role::Callee { .. } => self.deliver(run, outcome, out),
            Role::Top => {
                let own = self.runs[run].slot;
                let Some(index) = self.slot_index(own) else { return };
                if self.slots[index].run() != Some(run) {
                    return;
                }
                let success = matches!(outcome, Outcome::Success(_));
                self.slots[index].progress = Progress::Finished(run, outcome);
                self.retry_stalled(out);
                if index == 0 {
                    self.advance_head(out);
                } else if success {
                    self.check_next(index, out);
                }
            }
        }
    }

    /// Kills the running callees of `run`, and theirs.
    fn kill_callees_of(&mut self, run: RunId, cause: Cause, out: &mut Vec<Action>) {
        let mut doomed = vec![run];
        while let Some(parent) = doomed.pop() {
            for r in self.runs.ids() {
                let callee = matches!(self.runs[r].role, Role::Callee { caller, .. } if caller == parent);
                if callee && self.runs[r].is_running() {
                    self.end_run(r, Fate::Squashed(cause), out);
                    doomed.push(r);
                }
            }
        }
    }
}
