//! [`Engine`]: the function execution pipeline of one invocation.
//!
//! The pipeline is split by the data each part owns:
//!
//! - `slots`: the functions of the invocation in program order ([`slots::Slot`], [`slots::Progress`]) and the
//!   phase of the oldest ([`slots::Head`]).
//! - `runs`: every run, with its role and state ([`runs::RunTable`], [`runs::RunState`]).
//! - `derive`: deriving younger slots on predicted data, and validating them against real outputs.
//! - `commit`: committing the oldest slot, in program order, and failing the invocation.
//! - `calls`: implicit calls: bound callees, callees launched early on a prediction, and their results.
//! - `access`: the read and write rules of the data buffer, which return their decisions as values.
//! - `effects`: held external effects, the per-slot journal, and promoting runs that are no longer speculative.
//! - `invariants`: [`Engine::check_invariants`], run after every step in debug builds.
//!
//! **Deriving.** The engine walks the workflow on from the youngest slot (until it reaches a top-level slot that
//! must wait to launch): with its real output if it has finished, else its memoized output, else an unknown value
//! (a `Choice` on unknown data then asks the branch predictor). Whenever that walk reaches a Task whose input is
//! known, a new slot is derived; `schedule` decides when it launches (within `depth` on a prediction, at once in an
//! independent branch). A `pure` function whose output is memoized is not run at all.
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

mod access;
mod calls;
mod commit;
mod derive;
mod effects;
mod invariants;
mod runs;
mod schedule;
mod slots;
mod waits;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use model::{Application, Program};
use serde_json::{Value, json};

use crate::buffer::DataBuffer;
use crate::oracle::BranchPredictor;
use crate::walk::{self, Concrete, Cursor, Mode, Stop, Trace, Walker};
use crate::{
    Action, BranchRecord, Catalog, Cause, Completion, Config, ErrorName, Event, Execution, Failure, Fate, Oracle,
    RunId, RunSummary, Stats, Status, TimerId,
};
use access::PendingRead;
use runs::{Priority, Role, Run, RunState, RunTable};
use slots::{End, Head, Progress, Slot};

/// Identifies a slot for the life of the invocation; not its place in program order (that is its position).
/// Declared here, at the root of the pipeline, because slots, runs and effects all name slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct SlotId(u32);

/// What a walk needs from the engine besides the graph and the predictor.
struct WalkContext {
    history_len: usize,
    execution: Arc<Execution>,
    now_ms: i64,
    limits: model::asl::Limits,
}

/// Steps a speculative walk may take before it gives up (it is never observable, so this bounds only work).
const SPECULATIVE_STEPS: u32 = 64;
/// Predicted callees launched early per run, at most.
const PREDICTED_CALLEES_MAX: usize = 16;

/// The state machine of one invocation. See the module docs.
pub struct Engine {
    app: Arc<Application>,
    catalog: Arc<Catalog>,
    config: Config,
    oracle: Oracle,
    buffer: DataBuffer,
    runs: RunTable,
    slots: VecDeque<Slot>,
    next_slot: u32,
    head: Head,
    /// Reads waiting for an older slot to finish.
    stalled: Vec<PendingRead>,
    /// Store reads in flight: request → (run, key).
    store_reads: HashMap<crate::RequestId, (RunId, String)>,
    effects: effects::Effects,
    /// Predicted branches and their real outcomes, by the run launched on the prediction.
    branch_records: HashMap<RunId, Vec<BranchRecord>>,
    steps: u32,
    path: Vec<String>,
    depth: u32,
    budget_left: u32,
    stats: Stats,
    /// The execution, for the context object.
    execution: Arc<Execution>,
    /// The platform's clock, as last told.
    now_ms: i64,
    /// What each timer set is for.
    timers: HashMap<TimerId, waits::Timer>,
    next_timer: u32,
    /// Waits and retry back-offs the walks passed: what they cover neither starts nor commits before they fire.
    waits: Vec<waits::Wait>,
    /// How the invocation ends, once the waits on the way there fire.
    ending: Option<End>,
}

impl Engine {
    pub fn new(app: Arc<Application>, catalog: Arc<Catalog>, config: Config, oracle: Oracle) -> Self {
        let depth = if config.speculation { config.depth_max } else { 0 };
        Engine {
            app,
            catalog,
            config,
            oracle,
            buffer: DataBuffer::default(),
            runs: RunTable::default(),
            slots: VecDeque::new(),
            next_slot: 0,
            head: Head::Open,
            stalled: Vec::new(),
            store_reads: HashMap::new(),
            effects: effects::Effects::default(),
            branch_records: HashMap::new(),
            steps: 0,
            path: Vec::new(),
            depth,
            budget_left: config.budget,
            stats: Stats::default(),
            execution: Arc::new(Execution::default()),
            now_ms: 0,
            timers: HashMap::new(),
            next_timer: 0,
            waits: Vec::new(),
            ending: None,
        }
    }

    /// Whether the invocation has completed.
    pub fn is_done(&self) -> bool {
        matches!(self.head, Head::Done)
    }

    /// Applies one event; returns what the platform must do, in order.
    pub fn step(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        if let Event::Clock { unix_ms } = event {
            self.now_ms = unix_ms; // only read by later walks
            return out;
        }
        if self.is_done() {
            // Late events (a killed run's report, a call racing the end, a timer) change nothing.
            if let Event::Call { run, request, .. } = event {
                let reply = crate::Reply::Refused("the invocation is over".into());
                out.push(Action::Reply { run, request, reply });
            }
            return out;
        }
        match event {
            Event::Start { input, execution } => {
                self.execution = Arc::new(execution);
                self.start(input, &mut out)
            }
            Event::Clock { .. } => unreachable!("handled above"),
            Event::Load { cpu_percent } => {
                if self.config.speculation {
                    let depth = self.config.depth_at(cpu_percent);
                    if depth != self.depth {
                        // With another depth a blocked walk may go on (or a memo lookup count again).
                        self.slots.iter_mut().for_each(|s| s.derive_blocked = false);
                    }
                    self.depth = depth;
                }
            }
            Event::Call { run, request, call } => self.call(run, request, call, &mut out),
            Event::StoreRead { run, request, value, version } => {
                self.store_read(run, request, value, version, &mut out)
            }
            Event::Finished { run, outcome } => self.finished(run, outcome, &mut out),
            Event::EffectDone { run, request, result } => self.effect_done(run, request, result, &mut out),
            Event::Committed { run } => {
                debug_assert!(
                    matches!(self.head, Head::Committing { .. } | Head::ValidatingFailure { .. })
                        && self.slots.front().and_then(Slot::run) == Some(run),
                    "a commit landed for run {run}, which is not committing"
                );
                self.committed(&mut out);
            }
            Event::CommitConflict { .. } => self.commit_conflict(&mut out),
            Event::CommitFailed { run, error } => {
                let error = json!(format!("committing the writes of run {run} failed: {error}"));
                let end = End { status: Status::InternalError, result: json!({ "error": error }), error: None };
                self.complete(end, &mut out);
            }
            Event::TimerFired { timer } => self.timer_fired(timer, &mut out),
        }
        if !self.is_done() && self.ending.is_none() {
            self.fill(&mut out);
            self.launch_ready(&mut out);
        }
        #[cfg(debug_assertions)]
        if let Err(broken) = self.check_invariants() {
            panic!("engine invariant broken: {broken}");
        }
        out
    }

    /// A walker over the application's workflow, or `None` for an implicit chain.
    /// A walk needs only the branch predictor and the execution: they alone are cloned out of `self`, so the walk
    /// can borrow the path and step count mutably.
    fn walker<'a>(app: &'a Application, branches: &'a dyn BranchPredictor, ctx: &'a WalkContext) -> Option<Walker<'a>> {
        match &app.program {
            Program::Workflow(root) => Some(Walker {
                root,
                app: &app.name,
                branches,
                history_len: ctx.history_len,
                execution: &ctx.execution,
                now_ms: ctx.now_ms,
                limits: &ctx.limits,
                waited_ms: std::cell::Cell::new(0),
            }),
            Program::Function(_) => None,
        }
    }

    /// What a walk needs from `self` besides the graph and the predictor, cloned out so the walk can borrow the
    /// path and step count mutably.
    fn walk_context(&self) -> WalkContext {
        WalkContext {
            history_len: self.config.path_history,
            execution: self.execution.clone(),
            now_ms: self.now_ms,
            limits: self.config.workflows,
        }
    }

    /// Walks concretely from `cursor`: with the task's `result`, or (without) from where the cursor stands.
    fn walk_concrete(&mut self, cursor: &mut Cursor, result: Option<Value>, trace: &mut Trace) -> Stop {
        let (app, branches, ctx) = (self.app.clone(), self.oracle.branches.clone(), self.walk_context());
        let walker = Self::walker(&app, &*branches, &ctx).expect("slots with cursors belong to workflows");
        let mut mode =
            Mode::Concrete(Concrete { path: &mut self.path, steps: &mut self.steps, steps_max: self.config.steps_max });
        walker.advance(cursor, result, &mut mode, trace)
    }

    /// Places what a concrete walk reached from the start, or from a recovered failure: the task it reached, at its
    /// position, or the end.
    fn place_concrete(
        &mut self,
        stop: Stop,
        cursor: Cursor,
        trace: Trace,
        origin: Option<RunId>,
        out: &mut Vec<Action>,
    ) {
        self.note_delays(&trace.delays, None, origin, true, out);
        match stop {
            Stop::Task { function, input, timeout_ms } => {
                let task = derive::Placed { cursor, function, input, timeout_ms, decisions: trace.decisions };
                self.place_task(0, task, true, out);
                self.advance_head(out);
            }
            Stop::Complete { status, result, error } => self.finish(End { status, result, error }, out),
            Stop::Blocked => unreachable!("concrete walks never block"),
        }
    }

    /// The oldest slot failed, and its failure stands: a workflow applies `Retry` and `Catch`; otherwise the
    /// invocation fails.
    fn fail_head(&mut self, failure: Failure, out: &mut Vec<Action>) {
        let failed_run = self.slots[0].run();
        // The failed run's writes (and its callees') never commit.
        for r in self.runs.of_slot(self.slots[0].id).collect::<Vec<_>>() {
            if self.runs[r].fate().is_none() {
                let fate = match (Some(r) == failed_run, self.runs.is_running(r)) {
                    (true, _) => Fate::Failed,
                    (false, true) => Fate::Squashed(Cause::Abandoned),
                    (false, false) => Fate::Discarded,
                };
                self.end_run(r, fate, out);
            }
        }
        let cursor = self.slots[0].cursor.clone();
        let (Some(mut cursor), model::app::Form::Workflow) = (cursor, self.app.form) else {
            // A sequence or an implicit chain fails the OpenWhisk way: with the function's error.
            let end =
                End { status: failure.status, result: json!({ "error": failure.error }), error: Some(failure.name) };
            return self.complete(end, out);
        };
        // A returned error (or an exception) is deterministic in the input and the reads: the memo learns it, so the
        // next invocation's walk can follow it to its Catch. Crashes and timeouts are not learned.
        let deterministic = matches!(failure.status, Status::ApplicationError)
            || matches!(failure.name, ErrorName::Custom(_)) && failure.status == Status::DeveloperError;
        if self.config.speculation
            && deterministic
            && let Some(info) = self.catalog.functions.get(&self.slots[0].function)
        {
            let marker = walk::failure_marker(&failure.name, &failure.cause);
            self.oracle.memo.train(&self.slots[0].function, &info.version, &self.slots[0].input, &marker);
        }
        let mut trace = Trace::default();
        let stop = {
            let (app, branches, ctx) = (self.app.clone(), self.oracle.branches.clone(), self.walk_context());
            let walker = Self::walker(&app, &*branches, &ctx).expect("a workflow");
            let mut mode = Mode::Concrete(Concrete {
                path: &mut self.path,
                steps: &mut self.steps,
                steps_max: self.config.steps_max,
            });
            walker.recover(&mut cursor, failure.status, failure.name, failure.cause, &mut mode, &mut trace)
        };
        if let Stop::Complete { status, result, error } = stop {
            return self.complete(End { status, result, error }, out);
        }
        // Recovered where the trace says. A task retried in place keeps what was derived after it: that assumed the
        // output it will have once it succeeds, and is checked against it then (nothing read the failed run's
        // writes: reads wait for a running or failed writer). Otherwise whatever depends on the state that handled
        // the failure assumed it succeeded; branches of a fan-out around it that do not depend on it stay.
        // A catch the walk predicted (it followed a remembered failure) keeps what it derived, which `place_task`
        // then checks.
        let handled = trace.handled_at.clone().unwrap_or_default();
        let retried_in_place = trace.retried && handled == self.slots[0].pos;
        let predicted = match &stop {
            Stop::Task { function, input, .. } => self
                .slots
                .iter()
                .skip(1)
                .any(|s| s.pos == cursor.position() && s.function == *function && s.input == *input),
            _ => false,
        };
        for t in (1..self.slots.len()).rev() {
            if !retried_in_place && !predicted && handled.covers(&self.slots[t].pos) {
                self.squash_slot(t, Cause::ControlMispredict, false, out);
                self.remove_slot(t);
            }
        }
        self.slots.pop_front();
        self.head = Head::Open;
        self.place_concrete(stop, cursor, trace, failed_run, out);
        // Whatever is the oldest now may have effects waiting for that.
        if !self.is_done() {
            self.retry_stalled(out);
            self.speculation_narrowed(out);
        }
    }

    /// Inserts `slot` at its place in program order; returns its index.
    fn insert_slot(&mut self, slot: Slot) -> usize {
        let index = self.slots.partition_point(|s| s.pos < slot.pos);
        debug_assert!(
            self.slots.get(index).is_none_or(|s| s.pos != slot.pos),
            "two slots at {:?}: {} and {} (pipeline {:?})",
            slot.pos,
            slot.function,
            self.slots[index].function,
            self.slots.iter().map(|s| (s.pos.0.clone(), s.function.clone(), s.progress.clone())).collect::<Vec<_>>()
        );
        self.slots.insert(index, slot);
        index
    }

    /// Removes the (squashed) slot at `index`; the slot before it derives again what came next.
    fn remove_slot(&mut self, index: usize) {
        if let Some(removed) = self.slots.remove(index) {
            // Waits timed on a walk from it that no real walk confirmed go with it.
            self.waits.retain(|w| w.real || w.slot != Some(removed.id));
        }
        if index > 0
            && let Some(before) = self.slots.get_mut(index - 1)
        {
            before.derived = None;
        }
    }

    /// Whether slot `a` comes before slot `b` in program order (a slot that left the pipeline committed, and comes
    /// before every slot in it).
    fn older(&self, a: SlotId, b: SlotId) -> bool {
        match (self.slot_index(a), self.slot_index(b)) {
            (Some(i), Some(j)) => i < j,
            (None, Some(_)) => true,
            _ => false,
        }
    }

    fn slot_index(&self, id: SlotId) -> Option<usize> {
        self.slots.iter().position(|s| s.id == id)
    }

    fn new_slot(&mut self, cursor: Option<Cursor>, function: String, input: Value) -> Slot {
        self.next_slot += 1;
        Slot::new(SlotId(self.next_slot), cursor, function, input)
    }

    fn start(&mut self, input: Value, out: &mut Vec<Action>) {
        let app = self.app.clone();
        match &app.program {
            Program::Workflow(root) => {
                if let Some(seconds) = root.timeout_seconds {
                    self.set_timer(waits::Timer::Execution, seconds.saturating_mul(1000), out);
                }
                let mut cursor = Cursor::start(root, input);
                let mut trace = Trace::default();
                let stop = self.walk_concrete(&mut cursor, None, &mut trace);
                self.place_concrete(stop, cursor, trace, None, out);
            }
            Program::Function(f) => {
                let slot = self.new_slot(None, f.clone(), input);
                self.slots.push_back(slot);
                self.launch_ready(out);
            }
        }
    }

    /// Launches the current run of the slot at `index`; a launch on a prediction spends budget.
    fn launch_slot(&mut self, index: usize, spends: bool, out: &mut Vec<Action>) {
        let speculative = index > 0;
        if spends {
            self.budget_left -= 1;
        }
        if speculative {
            self.stats.speculative_launches += 1;
        }
        let (id, function, input) = {
            let s = &self.slots[index];
            (s.id, s.function.clone(), s.input.clone())
        };
        let Some(run) = self.new_run(&function, id, Role::Top, speculative, input, out) else { return };
        let slot = &mut self.slots[index];
        slot.progress = Progress::Running(run);
        slot.journal.restart();
        if let Some(ms) = slot.timeout_ms {
            self.set_timer(waits::Timer::TaskTimeout(run), ms, out);
        }
    }

    /// Creates a run and emits its launch; `None` (and the invocation failed) when the run budget is spent.
    /// A run of a function whose calls the oracle predicts starts those callees early.
    fn new_run(
        &mut self,
        function: &str,
        slot: SlotId,
        role: Role,
        speculative: bool,
        input: Value,
        out: &mut Vec<Action>,
    ) -> Option<RunId> {
        if self.runs.len() as u32 >= self.config.runs_max {
            let error =
                format!("the invocation exceeded its limit of {} function runs (runs_max)", self.config.runs_max);
            let result = json!({ "error": ErrorName::Runtime.as_str(), "cause": error });
            self.complete(End { status: Status::ApplicationError, result, error: Some(ErrorName::Runtime) }, out);
            return None;
        }
        let parent = role.caller();
        let depth = parent.map_or(0, |p| self.runs[p].depth + 1);
        let run = self.runs.push(Run {
            function: function.to_string(),
            input: input.clone(),
            slot,
            role,
            state: RunState::Running,
            calls: Vec::new(),
            depth,
            speculative,
            priority: if speculative { Priority::Speculative } else { Priority::Full },
            reads: Vec::new(),
            versions: Vec::new(),
            output: None,
            result: None,
            prediction: None,
            forecast: None,
        });
        out.push(Action::Launch { run, function: function.to_string(), input, caller: parent, speculative });
        // A callee of a run that was launched speculatively and is no longer speculative: full priority at once.
        self.promote(run, out);
        self.prelaunch_callees(run, out);
        Some(run)
    }

    /// Ends `run` with `fate`, killing it if it still runs (or discarding what it left, if it finished
    /// speculatively and its result is thrown away), and drops its buffered writes.
    fn end_run(&mut self, run: RunId, fate: Fate, out: &mut Vec<Action>) {
        let r = &mut self.runs[run];
        match (fate, &r.state) {
            (Fate::Squashed(cause), RunState::Running) => out.push(Action::Kill { run, cause }),
            (Fate::Squashed(_) | Fate::Discarded, RunState::Finished | RunState::Held(_)) if r.speculative => {
                out.push(Action::Discard { run })
            }
            _ => {}
        }
        r.state = RunState::Ended(fate);
        self.buffer.take(run);
        if matches!(fate, Fate::Squashed(_)) {
            self.forget_waits_of(run);
        }
    }

    /// Drops stalled reads and held effects of runs that no longer run.
    fn forget_ended(&mut self) {
        let runs = &self.runs;
        self.stalled.retain(|p| runs.is_running(p.run));
        self.effects.held.retain(|h| runs.is_running(h.run));
    }

    /// Squashes the current run of the slot at `index` (and its callees), discarding all it produced, and every
    /// younger slot that read from it. With `relaunch`, the slot runs again on the same input.
    fn squash_slot(&mut self, index: usize, cause: Cause, relaunch: bool, out: &mut Vec<Action>) {
        let id = self.slots[index].id;
        if let Some(run) = self.slots[index].run() {
            for r in self.runs.of_slot(id).collect::<Vec<_>>() {
                self.end_run(r, Fate::Squashed(cause), out);
            }
            debug_assert!(self.runs[run].fate().is_some(), "run {run} of a squashed slot has no fate");
            *self.stats.squashes.entry(cause).or_insert(0) += 1;
            self.budget_left = self.budget_left.saturating_sub(1);
            self.slots[index].progress = Progress::Waiting;
        }
        self.forget_ended();
        // Whoever read this slot's writes read something that no longer exists.
        let mut t = index + 1;
        while t < self.slots.len() {
            if self.reads_from_slot(t, id) {
                self.squash_slot(t, cause, true, out);
            }
            t += 1;
        }
        // With `relaunch` it runs again on the same input once `launch_ready` finds it may (at the latest at the end
        // of this step); without, the caller removes it.
        let _ = relaunch;
    }

    fn complete(&mut self, end: End, out: &mut Vec<Action>) {
        for run in self.runs.ids() {
            if self.runs[run].is_running() {
                self.end_run(run, Fate::Squashed(Cause::Abandoned), out);
            }
        }
        let runs = self
            .runs
            .iter()
            .map(|(id, r)| RunSummary {
                run: id,
                function: r.function.clone(),
                speculative: r.speculative,
                fate: r.fate().unwrap_or(Fate::Squashed(Cause::Abandoned)),
                output: r.output,
                predicted: r.prediction,
                branches: self.branch_records.remove(&id).unwrap_or_default(),
            })
            .collect::<Vec<_>>();
        let path = match &self.app.program {
            Program::Workflow(_) => std::mem::take(&mut self.path),
            // An implicit chain's path: the functions whose results counted, in launch order.
            Program::Function(_) => {
                runs.iter().filter(|r| !matches!(r.fate, Fate::Squashed(_))).map(|r| r.function.clone()).collect()
            }
        };
        self.head = Head::Done;
        let stats = std::mem::take(&mut self.stats);
        out.push(Action::Complete(Completion {
            status: end.status,
            result: end.result,
            error: end.error,
            path,
            runs,
            stats,
        }));
    }
}
