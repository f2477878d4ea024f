//! [`Engine`]: the function execution pipeline of one invocation.
//!
//! **Slots.** Each function the invocation runs (or, speculatively, expects to run) is a slot, kept in program
//! order. The oldest slot is the only non-speculative one. A slot knows where in the workflow it stands (a walk
//! cursor), its function and input, its current run, and the output its successor was derived from.
//!
//! **Deriving.** While fewer than `depth` slots are in flight beyond the oldest, the engine walks the workflow on
//! from the youngest slot: with its real output if it has finished, else its memoized output, else an unknown value
//! (a `Choice` on unknown data then asks the branch predictor). Whenever that walk reaches a Task whose input is
//! known, a new slot is launched speculatively. A `pure` function whose output is memoized is not run at all.
//!
//! **Validating.** When the oldest slot finishes, the engine walks on from its real output, concretely: this is
//! the application's semantics. If the next slot has the function and input that walk reaches, it stays; otherwise
//! it and everything younger are squashed (control mispredict or memo mismatch) and the right function is launched.
//! The same check runs early, speculatively, when a younger slot finishes. Then the slot's writes commit, with its
//! store reads validated against other invocations' commits, and the next slot becomes the oldest.
//!
//! **Storage.** A read is answered from the run's own writes (and its callers'), else from the nearest older slot
//! that wrote the key (once that slot has finished: a reader waits while the writer runs, so no speculative
//! function sees another's partial writes), else from committed state. A write by an older slot to a key a younger
//! slot read from further back squashes that younger slot at once, and whoever read from it; the squashed slot is
//! run again on the same input. Writes after reads (WAR) and writes after writes (WAW) never squash.
//!
//! **Failures.** A run that crashes, throws or times out while speculative is never reported: when its slot becomes
//! the oldest it runs again non-speculatively, and only that run's failure is the invocation's. An error a run
//! *returned* is deterministic in its input and reads: once its slot is the oldest (so its input and in-invocation
//! reads are validated), the store versions it read are checked by a commit of nothing, and the error stands.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use model::{Application, Program};
use serde_json::{Value, json};

use crate::buffer::DataBuffer;
use crate::walk::{Concrete, Cursor, Decision, Mode, Stop, Walker, contains_unknown, unknown};
use crate::{
    Action, Call, Catalog, Cause, Completion, Config, Event, Fate, Oracle, Outcome, Reply, RequestId, RunId,
    RunSummary, Stats, Status,
};

type SlotId = u32;

/// Steps a speculative walk may take before it gives up (it is never observable, so this bounds only work).
const SPECULATIVE_STEPS: u32 = 64;
/// Predicted callees launched early per run, at most.
const PREDICTED_CALLEES_MAX: usize = 16;

struct Slot {
    id: SlotId,
    /// Where the walk stands: at this slot's Task. `None` for an implicit chain's entry function.
    cursor: Option<Cursor>,
    function: String,
    input: Value,
    run: Option<RunId>,
    outcome: Option<Outcome>,
    /// A pure function whose output came from the memo table; it has no run.
    skipped: bool,
    /// The current run was launched while this slot was speculative.
    spec_run: bool,
    /// The output (possibly unknown) the next slot was derived from; `None` while nothing was derived.
    derived: Option<Value>,
    /// Branch decisions on the way to this slot, with whether the predictor made them.
    decisions: Vec<Decision>,
    /// Path length and step count before the concrete walk from this slot, to undo it if the slot runs again.
    walked_from: Option<(usize, u32)>,
    /// Effects performed for this slot, in order, with their results: a re-run of the slot gets the same results
    /// for the same effects instead of performing them again.
    effects: Vec<(Value, Result<Value, String>)>,
    /// How many effect calls the current run has made (its position in `effects`).
    effects_used: usize,
    /// Keys for which an older write squashed this slot: its commit is no clean read of them.
    raw_keys: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Store,
    Slot(SlotId),
}

struct Run {
    function: String,
    /// What it was launched on: its input, or a callee's arguments.
    input: Value,
    slot: SlotId,
    caller: Option<(RunId, RequestId)>,
    /// A callee launched early on a prediction and not yet called: the run expected to call it.
    detached: Option<RunId>,
    /// A detached run's outcome, held until its caller calls it.
    held: Option<Outcome>,
    /// The calls it made, in order: what the callee predictor learns at commit.
    calls: Vec<(String, Value)>,
    depth: u32,
    running: bool,
    speculative: bool,
    fate: Option<Fate>,
    /// Keys read outside the run's own writes, and where from.
    reads: Vec<(String, Source)>,
    /// Versions of committed state this run (and its returned callees) read: validated at commit.
    versions: Vec<(String, u64)>,
    memo_hit: Option<bool>,
}

fn walker<'a>(app: &'a Application, oracle: &'a dyn Oracle, history_len: usize) -> Option<Walker<'a>> {
    match &app.program {
        Program::Workflow(root) => Some(Walker { root, app: &app.name, oracle, history_len }),
        Program::Function(_) => None,
    }
}

/// The state machine of one invocation. See the module docs.
pub struct Engine {
    app: Arc<Application>,
    catalog: Arc<Catalog>,
    config: Config,
    oracle: Arc<dyn Oracle>,
    buffer: DataBuffer,
    runs: Vec<Run>,
    slots: VecDeque<Slot>,
    next_slot: SlotId,
    /// Reads waiting for an older slot to finish: (run, request, key).
    stalled: Vec<(RunId, RequestId, String)>,
    /// Store reads in flight: request → (run, key).
    store_reads: HashMap<RequestId, (RunId, String)>,
    /// Effect calls of speculative runs, waiting for the run's slot to become the oldest: (run, request, effect).
    suspended: Vec<(RunId, RequestId, Value)>,
    /// Predicted branches and their real outcomes, by the run launched on the prediction.
    branch_records: HashMap<RunId, Vec<crate::BranchRecord>>,
    /// Effects being performed: request → (run, slot, effect).
    effects_in_flight: HashMap<RequestId, (RunId, SlotId, Value)>,
    committing: bool,
    /// The invocation ends once the oldest slot's commit lands.
    then_complete: Option<(Status, Value)>,
    /// The oldest slot's run failed while speculative and its reads of committed state are being validated (a
    /// commit of nothing); when that lands, the invocation fails with it.
    head_failed: bool,
    steps: u32,
    path: Vec<String>,
    depth: u32,
    budget_left: u32,
    stats: Stats,
    done: bool,
}

impl Engine {
    pub fn new(app: Arc<Application>, catalog: Arc<Catalog>, config: Config, oracle: Arc<dyn Oracle>) -> Self {
        let depth = if config.speculation { config.depth_max } else { 0 };
        Engine {
            app,
            catalog,
            config,
            oracle,
            buffer: DataBuffer::default(),
            runs: Vec::new(),
            slots: VecDeque::new(),
            next_slot: 0,
            stalled: Vec::new(),
            store_reads: HashMap::new(),
            suspended: Vec::new(),
            effects_in_flight: HashMap::new(),
            branch_records: HashMap::new(),
            committing: false,
            then_complete: None,
            head_failed: false,
            steps: 0,
            path: Vec::new(),
            depth,
            budget_left: config.budget,
            stats: Stats::default(),
            done: false,
        }
    }

    /// Whether the invocation has completed.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Applies one event; returns what the platform must do, in order.
    pub fn step(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        if self.done {
            // Late events (a killed run's report, a call racing the end) change nothing.
            if let Event::Call { run, request, .. } = event {
                out.push(Action::Reply { run, request, reply: Reply::Refused("the invocation is over".into()) });
            }
            return out;
        }
        match event {
            Event::Start { input } => self.start(input, &mut out),
            Event::Load { cpu_percent } => {
                if self.config.speculation {
                    self.depth = self.config.depth_at(cpu_percent);
                }
            }
            Event::Call { run, request, call } => self.call(run, request, call, &mut out),
            Event::StoreRead { run, request, value, version } => {
                if let Some((r, key)) = self.store_reads.remove(&request)
                    && r == run
                    && self.is_running(run)
                {
                    self.runs[run as usize].versions.push((key, version));
                    out.push(Action::Reply { run, request, reply: Reply::Ok(value.unwrap_or(Value::Null)) });
                }
            }
            Event::Finished { run, outcome } => self.finished(run, outcome, &mut out),
            Event::EffectDone { run, request, result } => {
                if let Some((r, slot, effect)) = self.effects_in_flight.remove(&request) {
                    if let Some(index) = self.slot_index(slot) {
                        self.slots[index].effects.push((effect, result.clone()));
                    }
                    if r == run && self.is_running(run) {
                        let reply = match result {
                            Ok(v) => Reply::Ok(v),
                            Err(e) => Reply::Refused(e),
                        };
                        out.push(Action::Reply { run, request, reply });
                    }
                }
            }
            Event::Committed { run } => {
                debug_assert!(self.committing && self.slots.front().and_then(|s| s.run) == Some(run));
                self.committed(&mut out);
            }
            Event::CommitConflict { .. } => {
                // Another invocation changed what the oldest slot read: run it again on fresh state.
                self.committing = false;
                self.then_complete = None;
                self.head_failed = false;
                if let Some((path_len, steps)) = self.slots[0].walked_from.take() {
                    self.path.truncate(path_len);
                    self.steps = steps;
                }
                self.squash_slot(0, Cause::CrossInvocationConflict, true, &mut out);
            }
            Event::CommitFailed { run, error } => {
                let error = json!(format!("committing the writes of run {run} failed: {error}"));
                self.complete(Status::InternalError, json!({ "error": error }), &mut out);
            }
        }
        if !self.done {
            self.fill(&mut out);
        }
        out
    }

    /// What a walk needs, cloned out of `self` so the walk can borrow the path and step count mutably.
    fn walk_parts(&self) -> (Arc<Application>, Arc<dyn Oracle>) {
        (self.app.clone(), self.oracle.clone())
    }

    fn is_running(&self, run: RunId) -> bool {
        self.runs.get(run as usize).is_some_and(|r| r.running)
    }

    fn slot_index(&self, id: SlotId) -> Option<usize> {
        self.slots.iter().position(|s| s.id == id)
    }

    fn new_slot(&mut self, cursor: Option<Cursor>, function: String, input: Value) -> Slot {
        self.next_slot += 1;
        Slot {
            id: self.next_slot,
            cursor,
            function,
            input,
            run: None,
            outcome: None,
            skipped: false,
            spec_run: false,
            derived: None,
            decisions: Vec::new(),
            walked_from: None,
            effects: Vec::new(),
            effects_used: 0,
            raw_keys: Vec::new(),
        }
    }

    fn start(&mut self, input: Value, out: &mut Vec<Action>) {
        let app = self.app.clone();
        let slot = match &app.program {
            Program::Workflow(root) => {
                let mut cursor = Cursor::start(root, input);
                let mut decisions = Vec::new();
                let (app, oracle) = self.walk_parts();
                let stop = {
                    let walker = walker(&app, &*oracle, self.config.path_history).expect("a workflow");
                    let mut mode = Mode::Concrete(Concrete {
                        path: &mut self.path,
                        steps: &mut self.steps,
                        steps_max: self.config.steps_max,
                    });
                    walker.advance(&mut cursor, None, &mut mode, &mut decisions)
                };
                match stop {
                    Stop::Task { function, input } => self.new_slot(Some(cursor), function, input),
                    Stop::Complete { status, result } => return self.complete(status, result, out),
                    Stop::Blocked => unreachable!("concrete walks never block"),
                }
            }
            Program::Function(f) => self.new_slot(None, f.clone(), input),
        };
        self.slots.push_back(slot);
        self.launch_slot(0, out);
    }

    /// Launches the current run of the slot at `index`; a speculative launch spends budget.
    fn launch_slot(&mut self, index: usize, out: &mut Vec<Action>) {
        let speculative = index > 0;
        if speculative {
            if self.budget_left == 0 {
                self.stats.budget_exhausted = true;
                return;
            }
            self.budget_left -= 1;
            self.stats.speculative_launches += 1;
        }
        let (id, function, input) = {
            let s = &self.slots[index];
            (s.id, s.function.clone(), s.input.clone())
        };
        let Some(run) = self.new_run(&function, id, None, None, speculative, input, out) else { return };
        let slot = &mut self.slots[index];
        slot.run = Some(run);
        slot.spec_run = speculative;
        slot.outcome = None;
        slot.effects_used = 0;
    }

    /// Creates a run and emits its launch; `None` (and the invocation failed) when the run budget is spent.
    /// A run of a function whose calls the oracle predicts starts those callees early, detached.
    #[allow(clippy::too_many_arguments)]
    fn new_run(
        &mut self,
        function: &str,
        slot: SlotId,
        caller: Option<(RunId, RequestId)>,
        detached: Option<RunId>,
        speculative: bool,
        input: Value,
        out: &mut Vec<Action>,
    ) -> Option<RunId> {
        if self.runs.len() as u32 >= self.config.runs_max {
            let error =
                format!("the invocation exceeded its limit of {} function runs (runs_max)", self.config.runs_max);
            self.complete(Status::ApplicationError, json!({ "error": format!("States.Runtime: {error}") }), out);
            return None;
        }
        let run = self.runs.len() as RunId;
        let parent = caller.map(|c| c.0).or(detached);
        let depth = parent.map_or(0, |p| self.runs[p as usize].depth + 1);
        self.runs.push(Run {
            function: function.to_string(),
            input: input.clone(),
            slot,
            caller,
            detached,
            held: None,
            calls: Vec::new(),
            depth,
            running: true,
            speculative,
            fate: None,
            reads: Vec::new(),
            versions: Vec::new(),
            memo_hit: None,
        });
        out.push(Action::Launch { run, function: function.to_string(), input, caller: parent, speculative });
        self.prelaunch_callees(run, out);
        Some(run)
    }

    /// Launches the callees the oracle predicts `parent` will call, detached: they run on a prediction and are
    /// used only if `parent` really calls them with the same arguments.
    fn prelaunch_callees(&mut self, parent: RunId, out: &mut Vec<Action>) {
        if self.depth == 0 || self.runs[parent as usize].depth + 1 > self.config.call_depth_max {
            return;
        }
        let (function, input, slot) = {
            let r = &self.runs[parent as usize];
            (r.function.clone(), r.input.clone(), r.slot)
        };
        let Some(version) = self.catalog.functions.get(&function).map(|i| i.version.clone()) else { return };
        let Some(predicted) = self.oracle.callees(&function, &version, &input) else { return };
        for (callee, args) in predicted.into_iter().take(PREDICTED_CALLEES_MAX) {
            let runs_left = (self.runs.len() as u32) < self.config.runs_max;
            if self.budget_left == 0 || !runs_left || self.done {
                return;
            }
            if !self.catalog.functions.contains_key(&callee) {
                continue;
            }
            self.budget_left -= 1;
            self.stats.speculative_launches += 1;
            self.stats.callees_predicted += 1;
            self.new_run(&callee, slot, None, Some(parent), true, args, out);
        }
    }

    /// Whether `run` is, or was called by, a detached run: then it is speculative whatever its slot.
    fn in_detached_tree(&self, mut run: RunId) -> bool {
        loop {
            let r = &self.runs[run as usize];
            if r.detached.is_some() {
                return true;
            }
            match r.caller {
                Some((c, _)) => run = c,
                None => return false,
            }
        }
    }

    /// The runs under `root` (itself, its callees and their callees, detached or not).
    fn tree(&self, root: RunId) -> Vec<RunId> {
        let mut out = vec![root];
        let mut i = 0;
        while i < out.len() {
            let parent = out[i];
            for (r, info) in self.runs.iter().enumerate() {
                if info.caller.map(|c| c.0) == Some(parent) || info.detached == Some(parent) {
                    out.push(r as RunId);
                }
            }
            i += 1;
        }
        out
    }

    /// A run's result reaches its caller: its writes, reads and read versions become the caller's.
    fn deliver(&mut self, run: RunId, outcome: Outcome, out: &mut Vec<Action>) {
        let (caller, request) = self.runs[run as usize].caller.expect("a delivered run has a caller");
        match outcome {
            Outcome::Success(result) => {
                self.buffer.merge_into(run, caller);
                let (reads, versions) = {
                    let r = &mut self.runs[run as usize];
                    (std::mem::take(&mut r.reads), std::mem::take(&mut r.versions))
                };
                self.runs[caller as usize].reads.extend(reads);
                self.runs[caller as usize].versions.extend(versions);
                self.runs[run as usize].fate = Some(Fate::Committed); // provisional: its writes ride on the caller
                out.push(Action::Reply { run: caller, request, reply: Reply::Ok(result) });
            }
            Outcome::Failure { error, .. } => {
                self.buffer.take(run);
                self.runs[run as usize].fate = Some(Fate::Discarded);
                out.push(Action::Reply { run: caller, request, reply: Reply::FunctionFailed(error) });
            }
        }
        self.retry_stalled(out);
    }

    /// Squashes a run and everything under it.
    fn squash_tree(&mut self, root: RunId, cause: Cause, out: &mut Vec<Action>) {
        for r in self.tree(root) {
            let info = &mut self.runs[r as usize];
            if info.fate.is_some() {
                continue;
            }
            if std::mem::replace(&mut info.running, false) {
                out.push(Action::Kill { run: r, cause });
            }
            info.fate = Some(Fate::Squashed(cause));
            self.buffer.take(r);
        }
        *self.stats.squashes.entry(cause).or_insert(0) += 1;
        self.stalled.retain(|(r, _, _)| self.runs[*r as usize].running);
        self.suspended.retain(|(r, _, _)| self.runs[*r as usize].running);
    }

    fn complete(&mut self, status: Status, result: Value, out: &mut Vec<Action>) {
        for (i, r) in self.runs.iter_mut().enumerate() {
            if std::mem::replace(&mut r.running, false) {
                r.fate = Some(Fate::Squashed(Cause::Abandoned));
                out.push(Action::Kill { run: i as RunId, cause: Cause::Abandoned });
            }
        }
        let runs = self
            .runs
            .iter()
            .enumerate()
            .map(|(i, r)| RunSummary {
                run: i as RunId,
                function: r.function.clone(),
                speculative: r.speculative,
                fate: r.fate.unwrap_or(Fate::Squashed(Cause::Abandoned)),
                memo_hit: r.memo_hit,
                branches: self.branch_records.remove(&(i as RunId)).unwrap_or_default(),
            })
            .collect::<Vec<_>>();
        let path = match &self.app.program {
            Program::Workflow(_) => std::mem::take(&mut self.path),
            // An implicit chain's path: the functions whose results counted, in launch order.
            Program::Function(_) => {
                runs.iter().filter(|r| !matches!(r.fate, Fate::Squashed(_))).map(|r| r.function.clone()).collect()
            }
        };
        self.done = true;
        out.push(Action::Complete(Completion { status, result, path, runs, stats: std::mem::take(&mut self.stats) }));
    }

    /// The run and its callers, innermost first: the order in which its reads look through its own writes.
    fn chain(&self, run: RunId) -> Vec<RunId> {
        let mut chain = vec![run];
        let mut cur = run;
        while let Some((caller, _)) = self.runs[cur as usize].caller {
            chain.push(caller);
            cur = caller;
        }
        chain
    }

    fn call(&mut self, run: RunId, request: RequestId, call: Call, out: &mut Vec<Action>) {
        let refuse =
            |out: &mut Vec<Action>, m: String| out.push(Action::Reply { run, request, reply: Reply::Refused(m) });
        if !self.is_running(run) {
            return refuse(out, format!("run {run} is not running"));
        }
        let key_ok = |key: &str| -> Result<(), String> {
            if key.is_empty() || key.len() > self.config.key_bytes_max {
                return Err(format!("keys must be 1 to {} bytes long (key_bytes_max)", self.config.key_bytes_max));
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
                if self.runs[run as usize].depth + 1 > self.config.call_depth_max {
                    let max = self.config.call_depth_max;
                    return refuse(out, format!("calls nest deeper than {max} (call_depth_max)"));
                }
                if self.runs.len() as u32 >= self.config.runs_max {
                    let max = self.config.runs_max;
                    return refuse(out, format!("the invocation reached its limit of {max} function runs (runs_max)"));
                }
                self.runs[run as usize].calls.push((function.clone(), args.clone()));
                if self.bind_predicted(run, request, &function, &args, out) {
                    return;
                }
                let (slot, speculative) = (self.runs[run as usize].slot, self.runs[run as usize].speculative);
                self.new_run(&function, slot, Some((run, request)), None, speculative, args, out);
            }
            Call::Effect { effect } => {
                let slot = self.runs[run as usize].slot;
                if self.slots.front().is_some_and(|s| s.id == slot) && !self.in_detached_tree(run) {
                    self.effect(run, request, effect, out);
                } else {
                    self.stats.effects_suspended += 1;
                    self.suspended.push((run, request, effect));
                }
            }
        }
    }

    /// Binds a call to a callee launched early for it, if one matches: the same function on canonically equal
    /// arguments, which read nothing the caller (or a callee that returned to it) has written since. Returns whether
    /// the call was bound.
    fn bind_predicted(
        &mut self,
        caller: RunId,
        request: RequestId,
        function: &str,
        args: &Value,
        out: &mut Vec<Action>,
    ) -> bool {
        let wanted = model::json::canonical(args);
        let candidate = self.runs.iter().position(|r| {
            r.detached == Some(caller)
                && r.fate.is_none()
                && r.function == function
                && model::json::canonical(&r.input) == wanted
        });
        let Some(d) = candidate.map(|d| d as RunId) else { return false };
        let chain = self.chain(caller);
        let stale = self
            .tree(d)
            .iter()
            .any(|r| self.runs[*r as usize].reads.iter().any(|(k, _)| self.buffer.read(chain.clone(), k).is_some()));
        let crashed = matches!(self.runs[d as usize].held,
            Some(Outcome::Failure { status, .. }) if status != Status::ApplicationError);
        if stale || crashed {
            // It ran on a state the caller has since changed, or crashed while speculative: run it again, for real.
            let cause = if stale { Cause::RawViolation } else { Cause::Opacity };
            self.squash_tree(d, cause, out);
            return false;
        }
        // A returned error is used like a result: the call's arguments are the real ones, it saw the caller's state,
        // and what it read from committed state joins the caller's reads, validated when the caller commits.
        self.stats.callees_used += 1;
        let r = &mut self.runs[d as usize];
        r.detached = None;
        r.caller = Some((caller, request));
        if let Some(outcome) = r.held.take() {
            self.deliver(d, outcome, out);
        }
        self.release_effects(out);
        true
    }

    /// Performs (or replays from the slot's journal) an effect of a run of the oldest slot.
    fn effect(&mut self, run: RunId, request: RequestId, effect: Value, out: &mut Vec<Action>) {
        let head = &mut self.slots[0];
        let i = head.effects_used;
        head.effects_used += 1;
        if let Some((logged, result)) = head.effects.get(i) {
            if *logged == effect {
                // This slot ran before and performed this very effect: answer from the journal, never twice.
                let reply = match result.clone() {
                    Ok(v) => Reply::Ok(v),
                    Err(e) => Reply::Refused(e),
                };
                self.stats.effects_replayed += 1;
                out.push(Action::Reply { run, request, reply });
                return;
            }
            head.effects.truncate(i); // the re-run diverged: later journal entries no longer apply
        }
        self.stats.effects += 1;
        self.effects_in_flight.insert(request, (run, head.id, effect.clone()));
        out.push(Action::Effect { run, request, effect });
    }

    /// Runs of slot `id` that may hold writes: the current top run and its callees.
    fn slot_runs(&self, id: SlotId) -> impl Iterator<Item = RunId> + '_ {
        self.runs.iter().enumerate().filter(move |(_, r)| r.slot == id && r.fate.is_none()).map(|(i, _)| i as RunId)
    }

    /// Answers a read, stalls it, or sends it to the store.
    fn read(&mut self, run: RunId, request: RequestId, key: String, out: &mut Vec<Action>) {
        if let Some(v) = self.buffer.read(self.chain(run), &key) {
            out.push(Action::Reply { run, request, reply: Reply::Ok(v.clone().unwrap_or(Value::Null)) });
            return;
        }
        let own = self.runs[run as usize].slot;
        let me = self.slot_index(own).expect("a running run's slot is in the pipeline");
        // The nearest older slot that wrote the key.
        for q in (0..me).rev() {
            let writers: Vec<RunId> =
                self.slot_runs(self.slots[q].id).filter(|r| self.buffer.has_written(*r, &key)).collect();
            if writers.is_empty() {
                continue;
            }
            let slot = &self.slots[q];
            let finished = matches!(slot.outcome, Some(Outcome::Success(_)));
            let top = slot.run;
            if finished && writers.iter().all(|w| Some(*w) == top) {
                let value = self.buffer.read([top.expect("a finished slot has a run")], &key).cloned().flatten();
                let source = Source::Slot(slot.id);
                self.runs[run as usize].reads.push((key, source));
                out.push(Action::Reply { run, request, reply: Reply::Ok(value.unwrap_or(Value::Null)) });
            } else {
                self.stalled.push((run, request, key));
            }
            return;
        }
        // A predicted dependence: an older slot still running a function whose writes to this key kept squashing
        // this function: wait for it rather than be squashed again.
        let consumer = &self.runs[run as usize].function;
        for q in 0..me {
            let slot = &self.slots[q];
            if slot.outcome.is_none()
                && self.oracle.dependence(&slot.function, consumer, &key) >= self.config.dependence_squashes
            {
                self.stalled.push((run, request, key));
                return;
            }
        }
        self.runs[run as usize].reads.push((key.clone(), Source::Store));
        self.store_reads.insert(request, (run, key.clone()));
        out.push(Action::ReadStore { run, request, key });
    }

    fn write(&mut self, run: RunId, request: RequestId, key: String, value: Option<Value>, out: &mut Vec<Action>) {
        if !self.buffer.has_written(run, &key) && self.buffer.write_count(run) >= self.config.writes_max {
            let m =
                format!("a function may write at most {} keys before it commits (writes_max)", self.config.writes_max);
            out.push(Action::Reply { run, request, reply: Reply::Refused(m) });
            return;
        }
        self.buffer.write(run, key.clone(), value);
        out.push(Action::Reply { run, request, reply: Reply::Ok(Value::Null) });
        // Younger slots that read this key from further back read too early: squash them now.
        let own = self.runs[run as usize].slot;
        let me = self.slot_index(own).expect("a running run's slot is in the pipeline");
        let producer = self.runs[run as usize].function.clone();
        let mut t = me + 1;
        while t < self.slots.len() {
            let id = self.slots[t].id;
            let stale = self.slot_runs(id).any(|r| {
                self.runs[r as usize].reads.iter().any(|(k, src)| {
                    *k == key
                        && match src {
                            Source::Store => true,
                            Source::Slot(q) => *q < own,
                        }
                })
            });
            if stale {
                self.oracle.train_squash(&producer, &self.slots[t].function, &key);
                self.slots[t].raw_keys.push(key.clone());
                self.squash_slot(t, Cause::RawViolation, true, out);
            }
            t += 1;
        }
        self.retry_stalled(out);
    }

    fn retry_stalled(&mut self, out: &mut Vec<Action>) {
        for (run, request, key) in std::mem::take(&mut self.stalled) {
            if self.is_running(run) {
                self.read(run, request, key, out);
            }
        }
    }

    fn finished(&mut self, run: RunId, outcome: Outcome, out: &mut Vec<Action>) {
        if !self.is_running(run) {
            return; // squashed earlier; its late report changes nothing
        }
        self.runs[run as usize].running = false;
        // Predicted callees it never called were mispredicted; callees still running can return nowhere.
        for r in 0..self.runs.len() as RunId {
            if self.runs[r as usize].detached == Some(run) && self.runs[r as usize].fate.is_none() {
                self.squash_tree(r, Cause::MemoMismatch, out);
            }
        }
        self.kill_callees_of(run, Cause::Abandoned, out);
        if self.runs[run as usize].detached.is_some() {
            // Launched on a prediction and not called yet: hold the outcome (and its writes) for the call.
            self.runs[run as usize].held = Some(outcome);
            return;
        }
        if self.runs[run as usize].caller.is_some() {
            return self.deliver(run, outcome, out);
        }
        let own = self.runs[run as usize].slot;
        let Some(index) = self.slot_index(own) else { return };
        if self.slots[index].run != Some(run) {
            return;
        }
        let success = matches!(outcome, Outcome::Success(_));
        self.slots[index].outcome = Some(outcome);
        self.retry_stalled(out);
        if index == 0 {
            self.advance_head(out);
        } else if success {
            self.check_next(index, out);
        }
    }

    fn kill_callees_of(&mut self, run: RunId, cause: Cause, out: &mut Vec<Action>) {
        let mut doomed = vec![run];
        while let Some(parent) = doomed.pop() {
            for i in 0..self.runs.len() {
                let r = &mut self.runs[i];
                if r.running && r.caller.is_some_and(|(c, _)| c == parent) {
                    r.running = false;
                    r.fate = Some(Fate::Squashed(cause));
                    self.buffer.take(i as RunId);
                    out.push(Action::Kill { run: i as RunId, cause });
                    doomed.push(i as RunId);
                }
            }
        }
    }

    /// Squashes the current run of the slot at `index` (and its callees), discarding all it produced, and every
    /// younger slot that read from it. With `relaunch`, the slot runs again on the same input.
    fn squash_slot(&mut self, index: usize, cause: Cause, relaunch: bool, out: &mut Vec<Action>) {
        let id = self.slots[index].id;
        if let Some(run) = self.slots[index].run.take() {
            for r in self.slot_runs(id).collect::<Vec<_>>() {
                let info = &mut self.runs[r as usize];
                if std::mem::replace(&mut info.running, false) {
                    out.push(Action::Kill { run: r, cause });
                }
                info.fate = Some(Fate::Squashed(cause));
                self.buffer.take(r);
            }
            debug_assert!(self.runs[run as usize].fate.is_some());
            *self.stats.squashes.entry(cause).or_insert(0) += 1;
            self.budget_left = self.budget_left.saturating_sub(1);
        }
        let slot = &mut self.slots[index];
        if !slot.skipped {
            slot.outcome = None;
        }
        self.stalled.retain(|(r, _, _)| self.runs[*r as usize].running);
        self.suspended.retain(|(r, _, _)| self.runs[*r as usize].running);
        // Whoever read this slot's writes read something that no longer exists.
        let mut t = index + 1;
        while t < self.slots.len() {
            let tid = self.slots[t].id;
            let tainted = self
                .slot_runs(tid)
                .any(|r| self.runs[r as usize].reads.iter().any(|(_, src)| *src == Source::Slot(id)));
            if tainted {
                self.squash_slot(t, cause, true, out);
            }
            t += 1;
        }
        if relaunch && !self.slots[index].skipped && (index == 0 || self.config.speculation) {
            self.launch_slot(index, out);
        }
    }

    /// Squashes and removes every slot from `index` on.
    fn squash_from(&mut self, index: usize, cause: Cause, out: &mut Vec<Action>) {
        for t in (index..self.slots.len()).rev() {
            self.squash_slot(t, cause, false, out);
        }
        self.slots.truncate(index);
        if let Some(last) = self.slots.back_mut() {
            last.derived = None;
        }
    }

    /// Walks on from the finished slot at `index` with its real output, and keeps, replaces or drops the next
    /// slot accordingly. Concrete for the oldest slot (this is the application's semantics); speculative for a
    /// younger one (an early check). Returns how the program ends if the walk reaches the end.
    fn check_next(&mut self, index: usize, out: &mut Vec<Action>) -> Option<(Status, Value)> {
        let Some(Outcome::Success(output)) = self.slots[index].outcome.clone() else { return None };
        let mut cursor = self.slots[index].cursor.clone()?;
        let concrete = index == 0;
        let mut decisions = Vec::new();
        if concrete {
            self.slots[0].walked_from = Some((self.path.len(), self.steps));
        }
        let (app, oracle) = self.walk_parts();
        let stop = {
            let walker =
                walker(&app, &*oracle, self.config.path_history).expect("slots with cursors belong to workflows");
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
        let cause_against = |next: &Slot| {
            let wrong_branch = next.decisions.iter().any(|((k, h, t), predicted, _)| {
                *predicted && taken.iter().any(|((k2, h2, t2), _, _)| k == k2 && h == h2 && t != t2)
            });
            if wrong_branch { Cause::ControlMispredict } else { Cause::MemoMismatch }
        };
        match stop {
            Stop::Task { function, input } => {
                let keep = self.slots.get(index + 1).is_some_and(|n| n.function == function && n.input == input);
                if keep {
                    let next = &mut self.slots[index + 1];
                    if concrete {
                        let predicted = next.decisions.iter().filter(|(_, p, _)| *p).count() as u32;
                        self.stats.branch_hits += predicted;
                        next.decisions.clear();
                    }
                    next.cursor = Some(cursor);
                } else {
                    if let Some(next) = self.slots.get(index + 1) {
                        let cause = cause_against(next);
                        self.squash_from(index + 1, cause, out);
                    }
                    let mut slot = self.new_slot(Some(cursor), function, input);
                    slot.decisions = taken;
                    self.slots.push_back(slot);
                    let new = self.slots.len() - 1;
                    self.maybe_skip_or_launch(new, out);
                }
                self.slots[index].derived = Some(output);
                None
            }
            Stop::Complete { status, result } => {
                if let Some(next) = self.slots.get(index + 1) {
                    let cause = cause_against(next);
                    self.squash_from(index + 1, cause, out);
                }
                self.slots[index].derived = Some(output);
                Some((status, result))
            }
            Stop::Blocked => None,
        }
    }

    /// Records, on the current run of the slot at `index`, each branch the predictor chose on the way to it and the
    /// target the concrete walk (`taken`) chose.
    fn record_branches(&mut self, index: usize, taken: &[Decision]) {
        let Some(slot) = self.slots.get(index) else { return };
        let Some(run) = slot.run else { return };
        for ((key, history, _), predicted, name) in &slot.decisions {
            if !*predicted {
                continue;
            }
            let actual = taken.iter().find(|((k, h, _), _, _)| k == key && h == history).map(|(_, _, n)| n.clone());
            let record = crate::BranchRecord { choice: key.clone(), predicted: name.clone(), actual };
            self.branch_records.entry(run).or_default().push(record);
        }
    }

    /// A freshly derived slot at `index`: a pure function with a memoized output is not run; a `non-speculative`
    /// one waits to be the oldest; anything else launches if the depth and budget allow.
    fn maybe_skip_or_launch(&mut self, index: usize, out: &mut Vec<Action>) {
        let (function, input) = (self.slots[index].function.clone(), self.slots[index].input.clone());
        let info = self.catalog.functions.get(&function).cloned();
        if self.config.speculation
            && let Some(info) = &info
            && info.annotations.pure
            && let Some(output) = self.oracle.memo(&function, &info.version, &input)
        {
            let slot = &mut self.slots[index];
            slot.skipped = true;
            slot.outcome = Some(Outcome::Success(output));
            self.stats.skipped += 1;
            return;
        }
        let non_speculative = info.is_some_and(|i| i.annotations.non_speculative);
        if index == 0 || (index <= self.depth as usize && !non_speculative) {
            self.launch_slot(index, out);
        }
    }

    /// Keeps up to `depth` slots in flight beyond the oldest, deriving new ones from the youngest.
    fn fill(&mut self, out: &mut Vec<Action>) {
        if self.depth == 0 || self.slots.is_empty() {
            return;
        }
        // Slots derived earlier but not launched (depth or budget was short then).
        for index in 1..self.slots.len().min(self.depth as usize + 1) {
            let slot = &self.slots[index];
            if slot.run.is_none() && slot.outcome.is_none() && !self.done {
                let non_speculative =
                    self.catalog.functions.get(&slot.function).is_some_and(|i| i.annotations.non_speculative);
                if !non_speculative && self.budget_left > 0 {
                    self.launch_slot(index, out);
                }
            }
        }
        while !self.done && self.slots.len() <= self.depth as usize && self.budget_left > 0 {
            let index = self.slots.len() - 1;
            let youngest = &self.slots[index];
            if youngest.derived.is_some() || youngest.cursor.is_none() {
                return; // the end of the program is predicted, or an implicit chain (nothing to derive)
            }
            let assumed = match &youngest.outcome {
                Some(Outcome::Success(v)) => v.clone(),
                Some(Outcome::Failure { .. }) => return, // never speculate past a failure
                None => {
                    let version = self.catalog.functions.get(&youngest.function).map(|i| i.version.clone());
                    let memo = version.and_then(|v| self.oracle.memo(&youngest.function, &v, &youngest.input));
                    let hit = memo.is_some();
                    if let Some(run) = youngest.run {
                        self.runs[run as usize].memo_hit = Some(hit);
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
            let (app, oracle) = self.walk_parts();
            let stop = {
                let walker =
                    walker(&app, &*oracle, self.config.path_history).expect("slots with cursors belong to workflows");
                let mut mode = Mode::Speculative { high: self.config.branch_threshold, steps_left: SPECULATIVE_STEPS };
                walker.advance(&mut cursor, Some(assumed.clone()), &mut mode, &mut decisions)
            };
            match stop {
                Stop::Task { function, input } => {
                    debug_assert!(!contains_unknown(&input));
                    self.stats.branch_predictions += decisions.iter().filter(|(_, p, _)| *p).count() as u32;
                    self.slots[index].derived = Some(assumed);
                    let mut slot = self.new_slot(Some(cursor), function, input);
                    slot.decisions = decisions;
                    self.slots.push_back(slot);
                    let new = self.slots.len() - 1;
                    self.maybe_skip_or_launch(new, out);
                }
                Stop::Complete { .. } => {
                    self.slots[index].derived = Some(assumed);
                    return;
                }
                Stop::Blocked => return,
            }
        }
    }

    /// Commits finished slots from the oldest on, in program order.
    fn advance_head(&mut self, out: &mut Vec<Action>) {
        while !self.done && !self.committing {
            let Some(head) = self.slots.front() else { return };
            match (&head.outcome, head.run) {
                (None, None) => {
                    // Not launched yet (non-speculative function, or depth or budget ran short): it is its turn.
                    self.launch_slot(0, out);
                    return;
                }
                (None, Some(_)) => return,
                (Some(Outcome::Failure { status, error }), run) => {
                    let (status, error) = (*status, error.clone());
                    let result = json!({ "error": error });
                    if head.spec_run && status != Status::ApplicationError {
                        // It crashed, threw or timed out while speculative, perhaps on a state that is gone, or
                        // slowed by waiting on older writers: run it again, for real.
                        self.squash_slot(0, Cause::Opacity, true, out);
                        return;
                    }
                    if let (true, Some(run)) = (head.spec_run && self.config.speculation, run) {
                        // It returned an error while speculative and was never squashed: its input is the real one
                        // (a mismatch at the older slot's commit would have re-run it) and what it read inside the
                        // invocation is what program order gives (a RAW violation would have re-run it). So its
                        // error is the one a run now would return, if what it read from committed state is still
                        // current: validate that as a commit of nothing; a conflict re-runs it for real.
                        let expect = std::mem::take(&mut self.runs[run as usize].versions);
                        if !expect.is_empty() {
                            self.committing = true;
                            self.head_failed = true;
                            self.then_complete = Some((status, result));
                            out.push(Action::Commit { run, writes: Vec::new(), expect });
                            return;
                        }
                    }
                    if let Some(run) = run {
                        self.runs[run as usize].fate = Some(Fate::Failed);
                    }
                    return self.complete(status, result, out);
                }
                (Some(Outcome::Success(output)), run) => {
                    let (output, skipped) = (output.clone(), head.skipped);
                    let end = if head.cursor.is_some() {
                        self.check_next(0, out)
                    } else {
                        Some((Status::Success, output.clone()))
                    };
                    let head = &self.slots[0];
                    if self.config.speculation
                        && !skipped
                        && let Some(info) = self.catalog.functions.get(&head.function)
                    {
                        self.oracle.train_memo(&head.function, &info.version, &head.input, &output);
                    }
                    self.then_complete = end;
                    let Some(run) = run else {
                        self.committed(out); // a skipped pure function: nothing to commit
                        continue;
                    };
                    // The writes stay in the buffer until the commit lands, so younger readers keep seeing them.
                    let writes = self.buffer.writes_of(run);
                    let expect = if self.config.speculation {
                        std::mem::take(&mut self.runs[run as usize].versions)
                    } else {
                        Vec::new()
                    };
                    if writes.is_empty() && expect.is_empty() {
                        self.committed(out);
                        continue;
                    }
                    self.committing = true;
                    out.push(Action::Commit { run, writes, expect });
                    return;
                }
            }
        }
    }

    /// The oldest slot's writes landed: it leaves the pipeline and the next slot becomes the oldest.
    fn committed(&mut self, out: &mut Vec<Action>) {
        self.committing = false;
        if std::mem::take(&mut self.head_failed) {
            // The failed run's reads held: the invocation fails as it would have without speculation.
            if let Some(run) = self.slots[0].run {
                self.runs[run as usize].fate = Some(Fate::Failed);
            }
            let (status, result) = self.then_complete.take().expect("a failing head completes the invocation");
            return self.complete(status, result, out);
        }
        let head = self.slots.pop_front().expect("a slot was committing");
        if let Some(run) = head.run {
            self.buffer.take(run);
            if self.config.speculation {
                // Keys it read from committed state, with no older function writing them and no squash for them:
                // the predicted dependences on them did not materialize, so their streaks end. (A read forwarded
                // from an older writer confirms the dependence, even when waiting for it avoided the squash.)
                for (key, source) in &self.runs[run as usize].reads {
                    if *source == Source::Store && !head.raw_keys.contains(key) {
                        self.oracle.train_clean_read(&head.function, key);
                    }
                }
            }
        }
        for r in 0..self.runs.len() {
            let info = &mut self.runs[r];
            if info.slot == head.id && matches!(info.fate, None | Some(Fate::Committed)) && info.detached.is_none() {
                info.fate = Some(Fate::Committed);
                if self.config.speculation {
                    // What it called, and with what, is committed knowledge now: the callee predictor learns it.
                    if let Some(i) = self.catalog.functions.get(&info.function) {
                        self.oracle.train_callees(&info.function, &i.version, &info.input, &info.calls);
                    }
                }
            }
        }
        if let Some((status, result)) = self.then_complete.take() {
            return self.complete(status, result, out);
        }
        // Reads that waited on the committed slot can now be answered from the store.
        self.retry_stalled(out);
        self.release_effects(out);
        self.advance_head(out);
    }

    /// Effects that waited for their run's slot to become the oldest are performed now, in the order they came.
    fn release_effects(&mut self, out: &mut Vec<Action>) {
        let Some(head) = self.slots.front().map(|s| s.id) else { return };
        let waiting = std::mem::take(&mut self.suspended);
        for (run, request, effect) in waiting {
            if !self.is_running(run) {
                continue; // squashed while it waited: the effect never happens
            }
            if self.runs[run as usize].slot == head && !self.in_detached_tree(run) {
                self.effect(run, request, effect, out);
            } else {
                self.suspended.push((run, request, effect));
            }
        }
    }
}
