//! Walking a workflow graph from one Task to the next, in two modes.
//!
//! - **Concrete**: on real data. This is the semantics of the application: it records the path, counts steps
//!   against `steps_max`, trains the branch predictor on each `Choice` it evaluates, and turns data errors into a
//!   failed completion.
//! - **Speculative**: on partly predicted data. A value the engine does not know yet (the output of a function that
//!   has not finished and missed in the memo table) is the [`UNKNOWN`] marker. A `Choice` that reads an unknown
//!   value asks the branch predictor; a Task whose input still holds an unknown value, an error, or a branch the
//!   predictor is unsure of stops the walk ([`Stop::Blocked`]). Nothing a speculative walk does is observable: every
//!   speculative derivation is checked later by a concrete walk from real data.

use std::collections::VecDeque;

use model::path::Path;
use model::workflow::{Graph, Io, Next, PathField, StateId, StateKind, select_path};
use serde_json::{Value, json};

use crate::oracle::BranchPredictor;
use crate::{ErrorName, Status};

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

/// Where a frame's graph sits: `(Parallel state, branch index)` pairs from the top-level graph down.
type GraphPath = Vec<(StateId, usize)>;

#[derive(Debug, Clone, PartialEq)]
enum Frame {
    /// Walking a graph; `input` is the raw input of `state`.
    Graph { path: GraphPath, state: StateId, input: Value },
    /// Collecting branch outputs of the Parallel state the Graph frame below this one is at.
    Parallel { raw: Value, effective: Value, results: Vec<Value> },
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
    /// At a Task state: `function` must run on `input` (never holds an unknown value).
    Task { function: String, input: Value },
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
    /// `high`: the probability a predicted target needs before the walk follows it.
    Speculative {
        high: f64,
        steps_left: u32,
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
}

fn graph_at<'a>(root: &'a Graph, path: &[(StateId, usize)]) -> &'a Graph {
    path.iter().fold(root, |g, (state, branch)| match &g.states[*state].kind {
        StateKind::Parallel { branches, .. } => &branches[*branch],
        _ => unreachable!("graph paths only pass through Parallel states"),
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

fn runtime_error(message: String) -> Stop {
    Stop::Complete {
        status: Status::ApplicationError,
        result: json!({ "error": format!("States.Runtime: {message}") }),
        error: Some(ErrorName::Runtime),
    }
}

impl Cursor {
    pub fn start(root: &Graph, input: Value) -> Cursor {
        Cursor { frames: vec![Frame::Graph { path: Vec::new(), state: root.start, input }], history: VecDeque::new() }
    }

    fn history_hash(&self) -> u64 {
        self.history.iter().fold(0xcbf29ce484222325u64, |h, x| (h ^ x).wrapping_mul(0x100000001b3))
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

    fn effective_input(&self, io: &Io, raw: &Value, mode: &Mode) -> Result<Value, Stop> {
        let r = io.effective_input(raw);
        match mode {
            Mode::Concrete(_) => r.map_err(runtime_error),
            Mode::Speculative { .. } => self.spec_value(r, raw).ok_or(Stop::Blocked),
        }
    }

    fn output(&self, io: &Io, raw: &Value, result: Value, mode: &Mode) -> Result<Value, Stop> {
        let speculative = matches!(mode, Mode::Speculative { .. });
        if speculative && is_unknown(&result) && io.result_path == PathField::Null {
            // The result is discarded: the output is the raw input, known or not.
            let discard = Io { result_selector: None, ..io.clone() };
            return discard.output(raw, Value::Null).map_err(|_| Stop::Blocked);
        }
        let both_known = !speculative || !(contains_unknown(raw) || contains_unknown(&result));
        let r = io.output(raw, result);
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
    /// Without a `result`, walks from where the cursor is (the start of the program).
    pub fn advance(
        &self,
        cursor: &mut Cursor,
        result: Option<Value>,
        mode: &mut Mode,
        decisions: &mut Vec<Decision>,
    ) -> Stop {
        if let Some(result) = result {
            let Some(Frame::Graph { path, state, input }) = cursor.frames.last() else {
                unreachable!("a cursor given a result is at a Task state")
            };
            let StateKind::Task { io, next, .. } = &graph_at(self.root, path).states[*state].kind else {
                unreachable!("a cursor given a result is at a Task state")
            };
            let next = *next;
            match self.output(io, &input.clone(), result, mode) {
                Ok(output) => {
                    if let Some(stop) = self.goto(cursor, next, output, mode) {
                        return stop;
                    }
                }
                Err(stop) => return stop,
            }
        }
        self.walk(cursor, mode, decisions)
    }

    /// Sets the top frame to `next`, or ends the frame; `Some` when that ends the program.
    fn goto(&self, cursor: &mut Cursor, next: Next, output: Value, mode: &mut Mode) -> Option<Stop> {
        match next {
            Next::State(s) => {
                if let Some(Frame::Graph { state, input, .. }) = cursor.frames.last_mut() {
                    *state = s;
                    *input = output;
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
            Some(Frame::Parallel { results, effective, .. }) => {
                results.push(output);
                let done = results.len();
                let effective = effective.clone();
                let Some(Frame::Graph { path, state, .. }) = cursor.frames.iter().rev().nth(1) else {
                    unreachable!("a Parallel frame sits on the Graph frame of its state")
                };
                let (path, state) = (path.clone(), *state);
                let StateKind::Parallel { branches, io, next } = &graph_at(self.root, &path).states[state].kind else {
                    unreachable!("the Graph frame under a Parallel frame is at that Parallel state")
                };
                if done < branches.len() {
                    let mut branch_path = path;
                    branch_path.push((state, done));
                    let start = branches[done].start;
                    cursor.frames.push(Frame::Graph { path: branch_path, state: start, input: effective });
                    return None;
                }
                let Some(Frame::Parallel { raw, results, .. }) = cursor.frames.pop() else { unreachable!() };
                match self.output(io, &raw, Value::Array(results), mode) {
                    Ok(output) => self.goto(cursor, *next, output, mode),
                    Err(stop) => Some(stop),
                }
            }
            Some(Frame::Graph { .. }) => unreachable!("Graph frames nest only under Parallel frames"),
        }
    }

    /// Walks states until a function must run, the program ends, or (speculatively) the walk is blocked.
    fn walk(&self, cursor: &mut Cursor, mode: &mut Mode, decisions: &mut Vec<Decision>) -> Stop {
        loop {
            let Some(Frame::Graph { path, state, input }) = cursor.frames.last() else {
                unreachable!("a live cursor has a Graph frame on top")
            };
            let (path, state, input) = (path.clone(), *state, input.clone());
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
            let graph = graph_at(self.root, &path);
            let st = &graph.states[state];
            let history = cursor.history_hash();
            // The history is hashed from state ids, which identify a state as its qualified name does, without
            // building the name on every step of every speculative walk.
            let id = path
                .iter()
                .fold(fnv_u64(0xcbf29ce484222325, state as u64), |h, (s, b)| fnv_u64(fnv_u64(h, *s as u64), *b as u64));
            cursor.history.push_back(id);
            if cursor.history.len() > self.history_len {
                cursor.history.pop_front();
            }
            if let Mode::Concrete(c) = mode {
                c.path.push(qualified(self.root, &path, state));
            }
            let in_state = |e: Stop| match e {
                Stop::Complete { status, result: Value::Object(mut m), error } => {
                    if let Some(Value::String(s)) = m.get_mut("error") {
                        s.push_str(&format!(" (state \"{}\")", st.name));
                    }
                    Stop::Complete { status, result: Value::Object(m), error }
                }
                other => other,
            };
            match &st.kind {
                StateKind::Task { function, io, .. } => {
                    return match self.effective_input(io, &input, mode) {
                        Ok(effective) if contains_unknown(&effective) && matches!(mode, Mode::Speculative { .. }) => {
                            Stop::Blocked
                        }
                        Ok(effective) => Stop::Task { function: function.clone(), input: effective },
                        Err(stop) => in_state(stop),
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
                            None => {
                                let error = format!(
                                    "States.NoChoiceMatched: no Choice rule matched and there is no Default (state \"{}\")",
                                    st.name
                                );
                                return Stop::Complete {
                                    status: Status::ApplicationError,
                                    result: json!({ "error": error }),
                                    error: Some(ErrorName::NoChoiceMatched),
                                };
                            }
                        }
                    };
                    if let Mode::Concrete(_) = mode {
                        self.branches.train(&key, history, target);
                    }
                    decisions.push(Decision {
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
                    let output = self
                        .effective_input(io, &input, mode)
                        .and_then(|effective| self.output(io, &input, result.clone().unwrap_or(effective), mode));
                    match output {
                        Ok(output) => {
                            if let Some(stop) = self.goto(cursor, *next, output, mode) {
                                return stop;
                            }
                        }
                        Err(stop) => return in_state(stop),
                    }
                }
                StateKind::Parallel { branches, io, .. } => {
                    let effective = match self.effective_input(io, &input, mode) {
                        Ok(v) => v,
                        Err(stop) => return in_state(stop),
                    };
                    let mut branch_path = path;
                    branch_path.push((state, 0));
                    let start = branches[0].start;
                    cursor.frames.push(Frame::Parallel {
                        raw: input,
                        effective: effective.clone(),
                        results: Vec::new(),
                    });
                    cursor.frames.push(Frame::Graph { path: branch_path, state: start, input: effective });
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
                    return Stop::Complete {
                        status: Status::ApplicationError,
                        result: json!({ "error": error, "cause": cause }),
                        error: Some(ErrorName::Custom(error.clone())),
                    };
                }
            }
        }
    }
}

fn successors_of(rules: &[(model::choice::Rule, StateId)], default: &Option<StateId>) -> Vec<StateId> {
    rules.iter().map(|(_, t)| *t).chain(*default).collect()
}
