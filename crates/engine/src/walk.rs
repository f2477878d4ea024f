//! Walking a workflow graph from one Task to the next, in two modes.
//!
//! - **Concrete**: on real data. This is the semantics of the application: it records the path, counts steps
//!   against `steps_max`, trains the branch predictor on each `Choice` it evaluates, and turns data errors into a
//!   failed completion (`States.Runtime`).
//! - **Speculative**: on partly predicted data. A value the engine does not know yet (the output of a function that
//!   has not finished and missed in the memo table) is the [`UNKNOWN`] marker. A `Choice` that reads an unknown
//!   value asks the branch predictor; a Task whose input still holds an unknown value, an error, or a branch the
//!   predictor is unsure of stops the walk ([`Stop::Blocked`]). Nothing a speculative walk does is observable:
//!   every speculative derivation is checked later by a concrete walk from real data. A walk that may **skip**
//!   (`Mode::Speculative { skip }`) goes on past a blocked `Parallel` branch or `Map` iteration with an unknown
//!   result for it, to the next branch: branches do not depend on each other's data.
//!
//! Time is never waited for here. A walk goes on past a `Wait` state and a retry's back-off and notes them in its
//! [`Trace`] as a [`Delay`] at the position of the state: the engine sets the timer, and nothing at or after that
//! position in the same branch (see [`Position::covers`]) commits or starts before it fires.
//!
//! **Positions.** Every state a walk enters has a [`Position`], the same however the walk got there: the step
//! count of each frame, with the branch (iteration) index between frames. Program order is position order.
//!
//! `Parallel` branches and `Map` iterations are walked in program order: branch 0 (iteration 0) to its end, then
//! branch 1, and so on; their outputs are collected in a fan-out frame and become the state's result, in order.
//! A failed task is handed to [`Walker::recover`], which applies the `Retry` and `Catch` of the failed state and
//! then of each enclosing `Parallel` or `Map`, innermost first.

use std::collections::VecDeque;

use model::asl::Limits;
use model::path::{Path, Scope, Template};
use model::workflow::{
    Concurrency, Graph, Integration, Io, Jitter, Next, PathField, Recovery, StateId, StateKind, Text, Timeout, WaitFor,
    place_result, select_field, select_path,
};
use serde_json::{Value, json};

use crate::oracle::BranchPredictor;
use crate::{ErrorName, Execution, Status};

/// Stands for a value that is not known yet, in speculative walks only. Concrete walks never interpret it.
pub(crate) const UNKNOWN: &str = "\u{0}specfaas:unknown\u{0}";

pub(crate) fn unknown() -> Value {
    Value::String(UNKNOWN.to_string())
}

fn is_unknown(v: &Value) -> bool {
    matches!(v, Value::String(s) if s == UNKNOWN)
}

pub(crate) fn contains_unknown(v: &Value) -> bool {
    match v {
        Value::String(s) => s == UNKNOWN,
        Value::Array(items) => items.iter().any(contains_unknown),
        Value::Object(map) => map.values().any(contains_unknown),
        _ => false,
    }
}

/// Whether following `path` into `v` meets an unknown value (so the path's result is unknown).
fn touches_unknown(path: &Path, v: &Value) -> bool {
    let mut node = v;
    for segment in &path.segments {
        if is_unknown(node) {
            return true;
        }
        node = match (segment, node) {
            (model::path::Segment::Field(f), Value::Object(map)) => match map.get(f) {
                Some(n) => n,
                None => return false,
            },
            (model::path::Segment::Index(i), Value::Array(items)) => match items.get(*i) {
                Some(n) => n,
                None => return false,
            },
            _ => return false,
        };
    }
    is_unknown(node)
}

/// Where a frame's graph sits: `(Parallel or Map state, branch or iteration index)` pairs from the top-level graph
/// down.
type GraphPath = Vec<(StateId, usize)>;

/// The retry bookkeeping of the state a Graph frame is at; reset when the frame moves on.
#[derive(Debug, Clone, PartialEq, Default)]
struct Attempts {
    /// Retries spent, per retrier of the state.
    per_retrier: Vec<u32>,
    /// Retries of the state so far: `$$.State.RetryCount`.
    count: u32,
    /// The walk stopped here for a delay (a retry's back-off, or a `Wait`) and resumes at this state: its entry
    /// was already counted, and a `Wait` is over.
    resumed: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Frame {
    /// Walking a graph; `input` is the raw input of `state`, the `step`-th state entered in this frame.
    Graph { path: GraphPath, state: StateId, input: Value, step: u32, attempts: Attempts },
    /// Collecting the outputs of the Parallel branches or Map iterations of the state the Graph frame below this one
    /// is at. `inputs` holds each branch's (iteration's) input; `history` is the path history at the fan-out, which
    /// every branch starts from and the state after it continues; `limit` is how many branches may run at once.
    FanOut { raw: Value, inputs: Vec<Value>, results: Vec<Value>, history: VecDeque<u64>, limit: u32 },
}

/// Where a state stands in program order: `[step, branch, step, branch, step, ...]`, the step count of each frame
/// (from the top level down) with the branch or iteration index of the frame below between them. Program order is
/// the lexicographic order; a fan-out state comes before its branches, which come before the states after it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) struct Position(pub Vec<u32>);

impl Position {
    /// Whether what happens at `later` can depend on what happens at `self` (and so must wait for it): `later` is
    /// not before `self`, and is not in a different branch of a fan-out both sit in. Branches of one `Parallel`
    /// (iterations of one `Map`) never depend on each other; everything after the fan-out depends on all of them.
    pub fn covers(&self, later: &Position) -> bool {
        if later < self {
            return false;
        }
        match self.0.iter().zip(&later.0).position(|(a, b)| a != b) {
            // Different steps of one frame: later depends. Different branches: independent.
            Some(i) => i % 2 == 0,
            // One is a prefix of the other: the same state, or a state inside a fan-out state's branches.
            None => true,
        }
    }

    /// The fan-outs `self` sits in, outermost first: for each, the prefix that names the fan-out instance and the
    /// branch (iteration) index.
    pub fn branches(&self) -> impl Iterator<Item = (&[u32], u32)> {
        (1..self.0.len()).step_by(2).map(|i| (&self.0[..i], self.0[i]))
    }
}

/// A wait a walk passed: nothing covered by `at` may commit or start before `ms` have passed since the walk.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Delay {
    pub at: Position,
    pub ms: u64,
}

/// What a walk went through, besides where it stopped.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Trace {
    /// The `Choice` states decided on the way.
    pub decisions: Vec<Decision>,
    /// The waits and retry back-offs passed on the way.
    pub delays: Vec<Delay>,
    /// Where a failure handed to [`Walker::recover`] was handled: the position of the state whose `Retry` or
    /// `Catch` took it, or the top level's if none did.
    pub handled_at: Option<Position>,
    /// The failure was handled by a retry (of the state at `handled_at`).
    pub retried: bool,
}

/// A position in the walk of one invocation, cheap enough to clone per speculative derivation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cursor {
    frames: Vec<Frame>,
    /// Hashes of the last states passed, newest last: the path history branch prediction is indexed by.
    history: VecDeque<u64>,
}

/// Why a walk stopped.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Stop {
    /// At a Task state: `function` must run on `input` (never holds an unknown value), within `timeout_ms` if the
    /// state sets `TimeoutSeconds(Path)`.
    Task { function: String, input: Value, timeout_ms: Option<u64> },
    /// The program ended; `error` names the failure, if it failed.
    Complete { status: Status, result: Value, error: Option<ErrorName> },
    /// Speculative walks only: the next function cannot be predicted yet.
    Blocked,
}

/// The concrete walk's bookkeeping, owned by the engine.
pub(crate) struct Concrete<'a> {
    pub path: &'a mut Vec<String>,
    pub steps: &'a mut u32,
    pub steps_max: u32,
}

pub(crate) enum Mode<'a> {
    Concrete(Concrete<'a>),
    /// `high`: the probability a predicted target needs before the walk follows it (above 1: never predict).
    /// `skip`: go on past a blocked branch to the next one.
    Speculative {
        high: f64,
        steps_left: u32,
        skip: bool,
    },
}

/// A `Choice` decided during a walk.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decision {
    /// The `Choice` (application and qualified state name).
    pub choice: String,
    /// The path history the branch predictor is indexed by.
    pub history: u64,
    pub target: StateId,
    /// The branch predictor made it: the data the rules read was not known.
    pub predicted: bool,
    /// The target state's name.
    pub target_name: String,
}

impl Decision {
    /// The same `Choice` after the same history.
    pub fn same_choice(&self, other: &Decision) -> bool {
        self.choice == other.choice && self.history == other.history
    }
}

pub(crate) struct Walker<'a> {
    pub root: &'a Graph,
    pub app: &'a str,
    pub branches: &'a dyn BranchPredictor,
    pub history_len: usize,
    pub execution: &'a Execution,
    /// The platform's clock, as last told ([`crate::Event::Clock`]), in ms since the Unix epoch.
    pub now_ms: i64,
    pub limits: &'a Limits,
    /// The delays this walk passed so far: a state after them is entered that much later.
    pub waited_ms: std::cell::Cell<u64>,
}

fn graph_at<'a>(root: &'a Graph, path: &[(StateId, usize)]) -> &'a Graph {
    path.iter().fold(root, |g, (state, branch)| match &g.states[*state].kind {
        StateKind::Parallel { branches, .. } => &branches[*branch],
        StateKind::Map { map, .. } => &map.processor,
        _ => unreachable!("graph paths only pass through Parallel and Map states"),
    })
}

fn qualified(root: &Graph, path: &[(StateId, usize)], state: StateId) -> String {
    let mut name = String::new();
    let mut g = root;
    for (s, b) in path {
        name.push_str(&format!("{}/{b}/", g.states[*s].name));
        g = graph_at(g, &[(*s, *b)]);
    }
    name.push_str(&g.states[state].name);
    name
}

fn fnv_u64(h: u64, x: u64) -> u64 {
    (h ^ x).wrapping_mul(0x100000001b3)
}

const FNV_START: u64 = 0xcbf29ce484222325;

/// How a memo row records that a function failed on an input: the walk on from it goes to the `Catch` that takes
/// the error. A value no function can return (its key holds a NUL).
const FAILED: &str = "\u{0}specfaas:failed";

pub(crate) fn failure_marker(name: &ErrorName, cause: &str) -> Value {
    json!({ FAILED: { "name": name.as_str(), "cause": cause } })
}

/// The failure a memo row records, if it records one.
pub(crate) fn as_failure(v: &Value) -> Option<(ErrorName, String)> {
    let f = v.as_object().filter(|m| m.len() == 1)?.get(FAILED)?;
    Some((ErrorName::from(f["name"].as_str()?), f["cause"].as_str()?.to_string()))
}

/// A failed completion named `States.Runtime`: the workflow could not go on.
fn runtime_error(message: String) -> Stop {
    failed(Status::ApplicationError, ErrorName::Runtime, message)
}

/// A failed completion: the result is `{"error": NAME, "cause": TEXT}`, as Step Functions reports a failed
/// execution.
pub(crate) fn failed(status: Status, name: ErrorName, cause: String) -> Stop {
    Stop::Complete { status, result: json!({ "error": name.as_str(), "cause": cause }), error: Some(name) }
}

/// A retry's interval before attempt `attempt` (1 for the first retry), in ms, before jitter.
fn backoff_ms(interval_seconds: u64, rate: f64, attempt: u32, max_delay_seconds: Option<u64>) -> u64 {
    let seconds = interval_seconds as f64 * rate.powi(attempt.saturating_sub(1) as i32);
    let capped = match max_delay_seconds {
        Some(max) => seconds.min(max as f64),
        None => seconds,
    };
    (capped * 1000.0).min(u64::MAX as f64 / 2.0) as u64
}

impl Cursor {
    pub fn start(root: &Graph, input: Value) -> Cursor {
        let first = Frame::Graph { path: Vec::new(), state: root.start, input, step: 0, attempts: Attempts::default() };
        Cursor { frames: vec![first], history: VecDeque::new() }
    }

    fn history_hash(&self) -> u64 {
        self.history.iter().fold(FNV_START, |h, x| (h ^ x).wrapping_mul(0x100000001b3))
    }

    /// Where the walk stands, as a number that is the same however the walk got here: the seed of
    /// `States.MathRandom` and `States.UUID` in this state, mixed with the execution.
    fn position_hash(&self) -> u64 {
        let mut h = FNV_START;
        for frame in &self.frames {
            if let Frame::Graph { path, state, step, .. } = frame {
                h = fnv_u64(h, path.last().map_or(u64::MAX, |(_, b)| *b as u64));
                h = fnv_u64(fnv_u64(h, *state as u64), *step as u64);
            }
        }
        h
    }

    /// The position of the state the cursor is at.
    pub fn position(&self) -> Position {
        let mut at = Vec::new();
        for frame in &self.frames {
            if let Frame::Graph { path, step, .. } = frame {
                if let Some((_, branch)) = path.last() {
                    at.push(*branch as u32);
                }
                at.push(*step);
            }
        }
        Position(at)
    }

    /// For each fan-out the cursor is in, outermost first: how many of its branches (iterations) may run at once.
    pub fn limits(&self) -> Vec<u32> {
        let limit = |f: &Frame| if let Frame::FanOut { limit, .. } = f { Some(*limit) } else { None };
        self.frames.iter().filter_map(limit).collect()
    }

    fn top(&self) -> (&GraphPath, StateId, &Value, &Attempts) {
        match self.frames.last() {
            Some(Frame::Graph { path, state, input, attempts, .. }) => (path, *state, input, attempts),
            _ => unreachable!("a live cursor has a Graph frame on top"),
        }
    }
}

impl Walker<'_> {
    /// Speculative data flow: an error whose cause is an unknown value gives an unknown value; any other error
    /// blocks the walk (`None`).
    fn spec_value(&self, result: Result<Value, String>, source: &Value) -> Option<Value> {
        match result {
            Ok(v) => Some(v),
            Err(_) if contains_unknown(source) => Some(unknown()),
            Err(_) => None,
        }
    }

    /// The context object (`$$`) at the state the cursor is at; `item` is the Map item for `ItemSelector`.
    fn context(&self, cursor: &Cursor, item: Option<(usize, &Value)>) -> Value {
        let (path, state, _, attempts) = cursor.top();
        let mut context = json!({
            "Execution": {
                "Id": self.execution.id,
                "Input": self.execution.input,
                "Name": self.execution.name,
                "StartTime": self.execution.start_time(),
            },
            "State": {
                "Name": graph_at(self.root, path).states[state].name,
                "EnteredTime": crate::rfc3339(self.now_ms.saturating_add(self.waited_ms.get() as i64)),
                "RetryCount": attempts.count,
            },
            "StateMachine": { "Id": format!("{}:{}", self.execution.namespace, self.app), "Name": self.app },
        });
        if let Some((index, value)) = item {
            context["Map"] = json!({ "Item": { "Index": index, "Value": value } });
        }
        context
    }

    /// Evaluates a template of the state the cursor is at; the context object is built only if it is read.
    fn template(
        &self,
        t: &Template,
        input: &Value,
        cursor: &Cursor,
        item: Option<(usize, &Value)>,
    ) -> Result<Value, String> {
        let seed = fnv_u64(cursor.position_hash(), self.execution.seed());
        // Only a speculative walk has unknown data; an intrinsic on it fails, and the failure gives an unknown value.
        let opaque = Some(contains_unknown as fn(&Value) -> bool);
        if t.uses_context() {
            let context = self.context(cursor, item);
            t.eval(input, Scope { context: &context, seed, opaque })
        } else {
            t.eval(input, Scope { context: &Value::Null, seed, opaque })
        }
    }

    fn effective_input(&self, io: &Io, raw: &Value, cursor: &Cursor, mode: &Mode) -> Result<Value, Stop> {
        let r = select_field(&io.input_path, raw, "InputPath").and_then(|selected| match &io.parameters {
            Some(t) => self.template(t, &selected, cursor, None).map_err(|e| format!("Parameters: {e}")),
            None => Ok(selected),
        });
        match mode {
            Mode::Concrete(_) => r.map_err(runtime_error),
            Mode::Speculative { .. } => self.spec_value(r, raw).ok_or(Stop::Blocked),
        }
    }

    /// The state's output from its raw input and its work's `result`: `ResultSelector`, `ResultPath`, `OutputPath`.
    fn output(&self, io: &Io, raw: &Value, result: Value, cursor: &Cursor, mode: &Mode) -> Result<Value, Stop> {
        let speculative = matches!(mode, Mode::Speculative { .. });
        if speculative && is_unknown(&result) && io.result_path == PathField::Null {
            // The result is discarded: the output is the raw input, known or not.
            return select_field(&io.output_path, raw, "OutputPath").map_err(|_| Stop::Blocked);
        }
        let both_known = !speculative || !(contains_unknown(raw) || contains_unknown(&result));
        let r = (|| {
            let result = match &io.result_selector {
                Some(t) => self.template(t, &result, cursor, None).map_err(|e| format!("ResultSelector: {e}"))?,
                None => result,
            };
            let combined = place_result(&io.result_path, raw, result)?;
            select_field(&io.output_path, &combined, "OutputPath")
        })();
        match (mode, r) {
            (Mode::Concrete(_), r) => r.map_err(runtime_error),
            (Mode::Speculative { .. }, Ok(v)) => Ok(v),
            (Mode::Speculative { .. }, Err(_)) if !both_known => Ok(unknown()),
            (Mode::Speculative { .. }, Err(_)) => Err(Stop::Blocked),
        }
    }

    fn select(&self, path: &Option<Path>, v: &Value, what: &str, mode: &Mode) -> Result<Value, Stop> {
        let r = select_path(path, v, what);
        match mode {
            Mode::Concrete(_) => r.map_err(runtime_error),
            Mode::Speculative { .. } => self.spec_value(r, v).ok_or(Stop::Blocked),
        }
    }

    /// Moves past the Task at the top of `cursor` with its `result`, then walks to the next Task or the end.
    /// Without a `result`, walks from where the cursor is (the start of the program, or after a delay).
    pub fn advance(&self, cursor: &mut Cursor, result: Option<Value>, mode: &mut Mode, trace: &mut Trace) -> Stop {
        if let Some(result) = result {
            let (path, state, input, _) = cursor.top();
            let StateKind::Task { io, next, integration, .. } = &graph_at(self.root, path).states[state].kind else {
                unreachable!("a cursor given a result is at a Task state")
            };
            let result = match integration {
                Integration::Direct => result,
                Integration::LambdaInvoke if is_unknown(&result) => result,
                Integration::LambdaInvoke => {
                    json!({ "ExecutedVersion": "$LATEST", "Payload": result, "StatusCode": 200 })
                }
            };
            let next = *next;
            let stop = match self.output(io, &input.clone(), result, cursor, mode) {
                Ok(output) => self.goto(cursor, next, output, mode),
                Err(stop) => Some(stop),
            };
            if let Some(stop) = stop {
                return self.skip_if_blocked(stop, cursor, mode, trace);
            }
        }
        let stop = self.walk(cursor, mode, trace);
        self.skip_if_blocked(stop, cursor, mode, trace)
    }

    /// A walk that may skip and is blocked inside a fan-out goes on at the next branch (iteration), with an unknown
    /// result for the blocked one: what the next branch runs does not depend on it.
    fn skip_if_blocked(&self, mut stop: Stop, cursor: &mut Cursor, mode: &mut Mode, trace: &mut Trace) -> Stop {
        while stop == Stop::Blocked && matches!(mode, Mode::Speculative { skip: true, .. }) {
            let Some(fan_out) = cursor.frames.iter().rposition(|f| matches!(f, Frame::FanOut { .. })) else {
                return stop;
            };
            cursor.frames.truncate(fan_out + 2); // the fan-out and the blocked branch's frame
            stop = match self.finish_frame(cursor, unknown(), mode) {
                Some(stop) => stop,
                None => self.walk(cursor, mode, trace),
            };
        }
        stop
    }

    /// The Task at the top of `cursor` failed with `name` and `cause`: applies `Retry` and `Catch`, of the Task and
    /// then of each enclosing `Parallel` or `Map`. A retry walks again from the retried state, after a [`Delay`] at
    /// its position; a catch walks on from the catcher's target; else the execution fails. `trace.handled_at` says
    /// where the failure was handled.
    pub fn recover(
        &self,
        cursor: &mut Cursor,
        status: Status,
        name: ErrorName,
        cause: String,
        mode: &mut Mode,
        trace: &mut Trace,
    ) -> Stop {
        loop {
            trace.handled_at = Some(cursor.position());
            let (path, state, raw, _) = cursor.top();
            let recovery: Option<&Recovery> = match &graph_at(self.root, path).states[state].kind {
                StateKind::Task { recovery, .. }
                | StateKind::Parallel { recovery, .. }
                | StateKind::Map { recovery, .. } => Some(recovery),
                _ => None,
            };
            let raw = raw.clone();
            if let Some(recovery) = recovery {
                // A predicted failure is followed to a catcher; a retry waits for the real one.
                let retries = recovery.retry.iter().any(|r| r.errors.matches(name.as_str()));
                if retries && matches!(mode, Mode::Speculative { .. }) {
                    return Stop::Blocked;
                }
                if let Some(ms) = self.retry(cursor, recovery, &name) {
                    trace.retried = true;
                    self.delay(trace, cursor, ms);
                    return self.walk(cursor, mode, trace);
                }
                if let Some(catcher) = recovery.catch.iter().find(|c| c.errors.matches(name.as_str())) {
                    let error = json!({ "Error": name.as_str(), "Cause": cause });
                    let output = match place_result(&catcher.result_path, &raw, error) {
                        Ok(v) => v,
                        Err(e) => return runtime_error(format!("Catch ResultPath: {e}")),
                    };
                    if let Some(stop) = self.goto(cursor, Next::State(catcher.next), output, mode) {
                        return stop;
                    }
                    return self.walk(cursor, mode, trace);
                }
            }
            // Not handled here: the enclosing Parallel or Map fails with the same error, or the execution does.
            cursor.frames.pop();
            match cursor.frames.pop() {
                Some(Frame::FanOut { history, .. }) => cursor.history = history,
                None => {
                    trace.handled_at = Some(Position::default());
                    return failed(status, name, cause);
                }
                Some(Frame::Graph { .. }) => unreachable!("Graph frames nest only under fan-out frames"),
            }
        }
    }

    /// A retrier of the state at the top of `cursor` that matches `name` and has attempts left: counts the attempt
    /// and returns the delay in ms (the cursor stays at the state, marked to resume there).
    fn retry(&self, cursor: &mut Cursor, recovery: &Recovery, name: &ErrorName) -> Option<u64> {
        // The first retrier that matches decides, with attempts left or not.
        let (index, retrier) = recovery.retry.iter().enumerate().find(|(_, r)| r.errors.matches(name.as_str()))?;
        let seed = fnv_u64(cursor.position_hash(), self.execution.seed());
        let (path, state, _, _) = cursor.top();
        let fan_out =
            matches!(graph_at(self.root, path).states[state].kind, StateKind::Parallel { .. } | StateKind::Map { .. });
        let Some(Frame::Graph { attempts, step, .. }) = cursor.frames.last_mut() else {
            unreachable!("a Graph frame on top")
        };
        if attempts.per_retrier.len() < recovery.retry.len() {
            attempts.per_retrier.resize(recovery.retry.len(), 0);
        }
        let spent = attempts.per_retrier[index];
        if spent >= retrier.max_attempts {
            return None;
        }
        attempts.per_retrier[index] = spent + 1;
        attempts.count += 1;
        attempts.resumed = true;
        if fan_out {
            // A new attempt of a fan-out runs its branches again: at later positions than the attempt that failed,
            // whose slots may still be in the pipeline.
            *step += 1;
        }
        let mut ms = backoff_ms(retrier.interval_seconds, retrier.backoff_rate, spent + 1, retrier.max_delay_seconds);
        if retrier.jitter == Jitter::Full {
            // Drawn from the execution and position, so a walk derived again draws the same delay.
            let draw = fnv_u64(seed, u64::from(attempts.count)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11;
            ms = (draw as f64 / (1u64 << 53) as f64 * ms as f64) as u64;
        }
        Some(ms)
    }

    /// Notes a delay at the cursor's state; the states after it are entered that much later.
    fn delay(&self, trace: &mut Trace, cursor: &Cursor, ms: u64) {
        // Waits on one walk follow one another: each ends this long after the walk.
        self.waited_ms.set(self.waited_ms.get().saturating_add(ms));
        trace.delays.push(Delay { at: cursor.position(), ms: self.waited_ms.get() });
    }

    /// Sets the top frame to `next`, or ends the frame; `Some` when that ends the program.
    fn goto(&self, cursor: &mut Cursor, next: Next, output: Value, mode: &mut Mode) -> Option<Stop> {
        match next {
            Next::State(s) => {
                if let Some(Frame::Graph { state, input, step, attempts, .. }) = cursor.frames.last_mut() {
                    *state = s;
                    *input = output;
                    *step += 1;
                    *attempts = Attempts::default();
                }
                None
            }
            Next::End => self.finish_frame(cursor, output, mode),
        }
    }

    /// The top Graph frame ended with `output`.
    fn finish_frame(&self, cursor: &mut Cursor, output: Value, mode: &mut Mode) -> Option<Stop> {
        cursor.frames.pop();
        match cursor.frames.last_mut() {
            None => Some(Stop::Complete { status: Status::Success, result: output, error: None }),
            Some(Frame::FanOut { results, inputs, history, .. }) => {
                results.push(output);
                let done = results.len();
                let next_input = inputs.get(done).cloned();
                let fork_history = history.clone();
                let Some(Frame::Graph { path, state, .. }) = cursor.frames.iter().rev().nth(1) else {
                    unreachable!("a fan-out frame sits on the Graph frame of its state")
                };
                let (path, state) = (path.clone(), *state);
                if let Some(input) = next_input {
                    let mut branch_path = path;
                    branch_path.push((state, done));
                    let start = graph_at(self.root, &branch_path).start;
                    let frame =
                        Frame::Graph { path: branch_path, state: start, input, step: 0, attempts: Attempts::default() };
                    cursor.frames.push(frame);
                    cursor.history = self.branch_history(fork_history, &path_of(cursor), done);
                    return None;
                }
                let Some(Frame::FanOut { raw, results, history, .. }) = cursor.frames.pop() else { unreachable!() };
                cursor.history = history;
                let (io, next) = match &graph_at(self.root, &path).states[state].kind {
                    StateKind::Parallel { io, next, .. } | StateKind::Map { io, next, .. } => (io, *next),
                    _ => unreachable!("the Graph frame under a fan-out frame is at a Parallel or Map state"),
                };
                match self.output(io, &raw, Value::Array(results), cursor, mode) {
                    Ok(output) => self.goto(cursor, next, output, mode),
                    Err(stop) => Some(stop),
                }
            }
            Some(Frame::Graph { .. }) => unreachable!("Graph frames nest only under fan-out frames"),
        }
    }

    /// Starts the fan-out of the state at the top of `cursor`: one branch (iteration) per input, or, with none, the
    /// state's output at once.
    fn fan_out(
        &self,
        cursor: &mut Cursor,
        raw: Value,
        (inputs, limit): (Vec<Value>, u32),
        io: &Io,
        next: Next,
        mode: &mut Mode,
    ) -> Option<Stop> {
        if inputs.is_empty() {
            return match self.output(io, &raw, json!([]), cursor, mode) {
                Ok(output) => self.goto(cursor, next, output, mode),
                Err(stop) => Some(stop),
            };
        }
        let (path, state, _, _) = cursor.top();
        let mut branch_path = path.clone();
        branch_path.push((state, 0));
        let start = graph_at(self.root, &branch_path).start;
        let first = inputs[0].clone();
        let history = cursor.history.clone();
        cursor.frames.push(Frame::FanOut { raw, inputs, results: Vec::new(), history: history.clone(), limit });
        cursor.frames.push(Frame::Graph {
            path: branch_path.clone(),
            state: start,
            input: first,
            step: 0,
            attempts: Attempts::default(),
        });
        cursor.history = self.branch_history(history, &branch_path, 0);
        None
    }

    /// The path history a branch (iteration) starts with: the fan-out's, and the branch. All iterations of a Map
    /// share one, so what the predictor learns in one applies to the others.
    fn branch_history(&self, mut history: VecDeque<u64>, branch_path: &GraphPath, branch: usize) -> VecDeque<u64> {
        let Some((state, _)) = branch_path.last() else { return history };
        let parent = graph_at(self.root, &branch_path[..branch_path.len() - 1]);
        let which = match parent.states[*state].kind {
            StateKind::Map { .. } => u64::MAX,
            _ => branch as u64,
        };
        history.push_back(fnv_u64(fnv_u64(FNV_START ^ 0x5a5a, *state as u64), which));
        if history.len() > self.history_len {
            history.pop_front();
        }
        history
    }

    /// The inputs of a Map state's iterations, from its raw input.
    fn map_inputs(
        &self,
        spec: &model::workflow::MapSpec,
        io: &Io,
        raw: &Value,
        cursor: &Cursor,
        mode: &Mode,
    ) -> Result<(Vec<Value>, u32), Stop> {
        let speculative = matches!(mode, Mode::Speculative { .. });
        let fail = |m: String| if speculative { Stop::Blocked } else { runtime_error(m) };
        let effective = select_field(&io.input_path, raw, "InputPath").map_err(fail)?;
        let items = select_path(&spec.items_path, &effective, "ItemsPath").map_err(fail)?;
        if speculative && contains_unknown(&items) && !matches!(&items, Value::Array(_)) {
            return Err(Stop::Blocked);
        }
        let Value::Array(items) = items else {
            let what = spec.items_path.as_ref().map_or("$".to_string(), |p| p.to_string());
            return Err(fail(format!("ItemsPath {what} selects a {}, not an array", model::path::type_name(&items))));
        };
        let max = self.limits.map_items_max as usize;
        if items.len() > max {
            return Err(fail(format!(
                "the Map has {} items, over the platform's limit of {max} (engine.workflows.map_items_max)",
                items.len()
            )));
        }
        let bound = self.limits.map_concurrency_max;
        let mut limit = match spec.max_concurrency {
            Concurrency::Fixed(n) => n,
            Concurrency::Path(_) => 0,
        };
        if let Concurrency::Path(p) = &spec.max_concurrency {
            match p.get(&effective) {
                Some(v) if v.as_u64().is_some_and(|n| n <= bound.into()) => limit = v.as_u64().unwrap_or(0) as u32,
                Some(v) if speculative && contains_unknown(v) => return Err(Stop::Blocked),
                other => {
                    return Err(fail(format!(
                        "MaxConcurrencyPath {p} must select an integer from 0 to {bound} (engine.workflows.map_concurrency_max), not {}",
                        other.map_or("nothing".to_string(), |v| v.to_string())
                    )));
                }
            }
        }
        let mut inputs = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            inputs.push(match &spec.item_selector {
                None => item.clone(),
                Some(t) => match self.template(t, &effective, cursor, Some((index, item))) {
                    Ok(v) => v,
                    Err(_) if speculative && (contains_unknown(item) || contains_unknown(&effective)) => unknown(),
                    Err(e) => return Err(fail(format!("ItemSelector: {e}"))),
                },
            });
        }
        Ok((inputs, if limit == 0 { bound } else { limit.min(bound) }))
    }

    /// How long a `Wait` state waits, in ms, from its raw input.
    fn wait_ms(&self, until: &WaitFor, input: &Value) -> Result<u64, String> {
        let max = self.limits.wait_seconds_max;
        let over = |what: String| {
            format!("{what}, over the platform's longest wait of {max} s (engine.workflows.wait_seconds_max)")
        };
        let seconds = |n: u64| if n > max { Err(over(format!("the Wait is {n} s"))) } else { Ok(n * 1000) };
        let until_ms = |at: i64| {
            let now = self.now_ms.saturating_add(self.waited_ms.get() as i64);
            let ms = (at - now).max(0) as u64;
            if ms > max * 1000 { Err(over(format!("the Wait's timestamp is {} s away", ms / 1000))) } else { Ok(ms) }
        };
        match until {
            WaitFor::Seconds(n) => seconds(*n),
            WaitFor::Timestamp(at) => until_ms(*at),
            WaitFor::SecondsPath(p) => match p.get(input) {
                Some(v) if v.as_u64().is_some() => seconds(v.as_u64().unwrap_or_default()),
                other => Err(format!(
                    "SecondsPath {p} must select a non-negative integer, not {}",
                    other.map_or("nothing".to_string(), |v| v.to_string())
                )),
            },
            WaitFor::TimestampPath(p) => match p.get(input) {
                Some(Value::String(s)) => until_ms(model::asl::parse_timestamp(s)?),
                other => Err(format!(
                    "TimestampPath {p} must select an RFC 3339 timestamp string, not {}",
                    other.map_or("nothing".to_string(), |v| v.to_string())
                )),
            },
        }
    }

    /// A `Task`'s own time limit, from its raw input.
    fn timeout_ms(&self, timeout: &Timeout, raw: &Value) -> Result<Option<u64>, String> {
        match timeout {
            Timeout::None => Ok(None),
            Timeout::Seconds(n) => Ok(Some(n.saturating_mul(1000))),
            Timeout::Path(p) => match p.get(raw).and_then(Value::as_u64) {
                Some(n) if n > 0 => Ok(Some(n.saturating_mul(1000))),
                _ => Err(format!("TimeoutSecondsPath {p} must select a positive integer")),
            },
        }
    }

    /// A `Fail` state's `Error` or `Cause`.
    fn text(&self, text: &Text, input: &Value, cursor: &Cursor, what: &str) -> Result<String, String> {
        match text {
            Text::Given(s) => Ok(s.clone()),
            Text::Selected(t) => match self.template(t, input, cursor, None)? {
                v if contains_unknown(&v) => Err(format!("{what} selects a value not known yet")),
                Value::String(s) => Ok(s),
                other => Err(format!("{what} must give a string, not {}", model::path::type_name(&other))),
            },
        }
    }

    /// Walks states until a function must run, the program ends, time must pass, or (speculatively) the walk is
    /// blocked.
    fn walk(&self, cursor: &mut Cursor, mode: &mut Mode, trace: &mut Trace) -> Stop {
        loop {
            let (path, state, input, attempts) = cursor.top();
            let (path, state, input, resumed) = (path.clone(), state, input.clone(), attempts.resumed);
            if !resumed {
                match mode {
                    Mode::Concrete(c) => {
                        *c.steps += 1;
                        if *c.steps > c.steps_max {
                            let m = format!(
                                "the invocation exceeded its limit of {} state transitions (steps_max)",
                                c.steps_max
                            );
                            return runtime_error(m);
                        }
                    }
                    Mode::Speculative { steps_left, .. } => {
                        if *steps_left == 0 {
                            return Stop::Blocked;
                        }
                        *steps_left -= 1;
                    }
                }
            }
            let graph = graph_at(self.root, &path);
            let st = &graph.states[state];
            let history = cursor.history_hash();
            if !resumed {
                // The history is hashed from state ids, which identify a state as its qualified name does, without
                // building the name on every step of every speculative walk.
                let id = path
                    .iter()
                    .fold(fnv_u64(FNV_START, state as u64), |h, (s, b)| fnv_u64(fnv_u64(h, *s as u64), *b as u64));
                cursor.history.push_back(id);
                if cursor.history.len() > self.history_len {
                    cursor.history.pop_front();
                }
                if let Mode::Concrete(c) = mode {
                    c.path.push(qualified(self.root, &path, state));
                }
            }
            if let Some(Frame::Graph { attempts, .. }) = cursor.frames.last_mut() {
                attempts.resumed = false;
            }
            let in_state = |e: Stop| match e {
                Stop::Complete { status, result: Value::Object(mut m), error } => {
                    if let Some(Value::String(s)) = m.get_mut("cause") {
                        s.push_str(&format!(" (state \"{}\")", st.name));
                    }
                    Stop::Complete { status, result: Value::Object(m), error }
                }
                other => other,
            };
            match &st.kind {
                StateKind::Task { function, io, timeout, .. } => {
                    let effective = match self.effective_input(io, &input, cursor, mode) {
                        Ok(effective) => effective,
                        Err(stop) => return in_state(stop),
                    };
                    if contains_unknown(&effective) && matches!(mode, Mode::Speculative { .. }) {
                        return Stop::Blocked;
                    }
                    return match self.timeout_ms(timeout, &input) {
                        Ok(timeout_ms) => Stop::Task { function: function.clone(), input: effective, timeout_ms },
                        Err(_) if matches!(mode, Mode::Speculative { .. }) => Stop::Blocked,
                        Err(e) => in_state(runtime_error(e)),
                    };
                }
                StateKind::Choice { input_path, output_path, rules, default } => {
                    let effective = match self.select(input_path, &input, "InputPath", mode) {
                        Ok(v) => v,
                        Err(stop) => return in_state(stop),
                    };
                    let key = format!("{}:{}", self.app, qualified(self.root, &path, state));
                    let unknown_data = matches!(mode, Mode::Speculative { .. })
                        && rules.iter().any(|(r, _)| r.paths().iter().any(|p| touches_unknown(p, &effective)));
                    let target = if unknown_data {
                        let Mode::Speculative { high, .. } = mode else { unreachable!() };
                        let targets = successors_of(rules, default);
                        match self.branches.predict(&key, history, &targets) {
                            Some((target, p)) if p >= *high && targets.contains(&target) => target,
                            _ => return Stop::Blocked,
                        }
                    } else {
                        let mut target = None;
                        for (rule, t) in rules {
                            match rule.eval(&effective) {
                                Ok(true) => {
                                    target = Some(*t);
                                    break;
                                }
                                Ok(false) => {}
                                Err(e) => {
                                    return match mode {
                                        Mode::Concrete(_) => in_state(runtime_error(e)),
                                        Mode::Speculative { .. } => Stop::Blocked,
                                    };
                                }
                            }
                        }
                        match target.or(*default) {
                            Some(t) => t,
                            // Step Functions reports this as States.Runtime too; it cannot be caught.
                            None => {
                                return in_state(runtime_error(
                                    "no Choice rule matched the input and the state has no Default".into(),
                                ));
                            }
                        }
                    };
                    if let Mode::Concrete(_) = mode {
                        self.branches.train(&key, history, target);
                    }
                    trace.decisions.push(Decision {
                        choice: key,
                        history,
                        target,
                        predicted: unknown_data,
                        target_name: graph.states[target].name.clone(),
                    });
                    match self.select(output_path, &effective, "OutputPath", mode) {
                        Ok(output) => {
                            if let Some(stop) = self.goto(cursor, Next::State(target), output, mode) {
                                return stop;
                            }
                        }
                        Err(stop) => return in_state(stop),
                    }
                }
                StateKind::Pass { io, result, next } => {
                    let output = self.effective_input(io, &input, cursor, mode).and_then(|effective| {
                        self.output(io, &input, result.clone().unwrap_or(effective), cursor, mode)
                    });
                    match output {
                        Ok(output) => {
                            if let Some(stop) = self.goto(cursor, *next, output, mode) {
                                return stop;
                            }
                        }
                        Err(stop) => return in_state(stop),
                    }
                }
                StateKind::Parallel { branches, io, next, .. } => {
                    let effective = match self.effective_input(io, &input, cursor, mode) {
                        Ok(v) => v,
                        Err(stop) => return in_state(stop),
                    };
                    let limit = (branches.len() as u32).min(self.limits.map_concurrency_max);
                    let inputs = vec![effective; branches.len()];
                    if let Some(stop) = self.fan_out(cursor, input, (inputs, limit), io, *next, mode) {
                        return in_state(stop);
                    }
                }
                StateKind::Map { map, io, next, .. } => {
                    let fan = match self.map_inputs(map, io, &input, cursor, mode) {
                        Ok(fan) => fan,
                        Err(stop) => return in_state(stop),
                    };
                    if let Some(stop) = self.fan_out(cursor, input, fan, io, *next, mode) {
                        return in_state(stop);
                    }
                }
                StateKind::Wait { until, input_path, output_path, next } => {
                    let output = self
                        .select(input_path, &input, "InputPath", mode)
                        .and_then(|v| self.select(output_path, &v, "OutputPath", mode));
                    let output = match output {
                        Ok(output) => output,
                        Err(stop) => return in_state(stop),
                    };
                    // Speculative walks go on past a wait on data they do not know; the real walk times it.
                    match (self.wait_ms(until, &input), &mode) {
                        (Ok(0), _) => {}
                        (Ok(ms), _) => self.delay(trace, cursor, ms),
                        (Err(e), Mode::Concrete(_)) => return in_state(runtime_error(e)),
                        (Err(_), Mode::Speculative { .. }) => {}
                    }
                    if let Some(stop) = self.goto(cursor, *next, output, mode) {
                        return stop;
                    }
                }
                StateKind::Succeed { input_path, output_path } => {
                    let output = self
                        .select(input_path, &input, "InputPath", mode)
                        .and_then(|v| self.select(output_path, &v, "OutputPath", mode));
                    match output {
                        Ok(output) => {
                            if let Some(stop) = self.finish_frame(cursor, output, mode) {
                                return stop;
                            }
                        }
                        Err(stop) => return in_state(stop),
                    }
                }
                StateKind::Fail { error, cause } => {
                    let texts = self
                        .text(error, &input, cursor, "ErrorPath")
                        .and_then(|e| Ok((e, self.text(cause, &input, cursor, "CausePath")?)));
                    return match texts {
                        Ok((error, cause)) => {
                            // A Fail state inside a branch fails the branch: its Parallel or Map may catch it.
                            if cursor.frames.len() > 1 {
                                let name = ErrorName::from(error.as_str());
                                cursor.frames.pop();
                                cursor.frames.pop();
                                return self.recover(cursor, Status::ApplicationError, name, cause, mode, trace);
                            }
                            failed(Status::ApplicationError, ErrorName::from(error.as_str()), cause)
                        }
                        Err(_) if matches!(mode, Mode::Speculative { .. }) => Stop::Blocked,
                        Err(e) => in_state(runtime_error(e)),
                    };
                }
            }
        }
    }
}

/// The graph path of the cursor's top frame.
fn path_of(cursor: &Cursor) -> GraphPath {
    cursor.top().0.clone()
}

fn successors_of(rules: &[(model::choice::Rule, StateId)], default: &Option<StateId>) -> Vec<StateId> {
    rules.iter().map(|(_, t)| *t).chain(*default).collect()
}
