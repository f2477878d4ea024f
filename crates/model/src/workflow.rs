//! The validated workflow graph: what the engine walks. Built only by [`crate::asl`] (or by lowering a sequence in
//! [`crate::app`]), so every `StateId` in it is valid, every state is reachable, and every cycle passes through a
//! `Choice` state.
//!
//! **Architecture invariant:** a `Graph` is immutable once built. A redeploy builds a new one.

use serde_json::Value;

use crate::choice::Rule;
use crate::path::{Path, Scope, Template};

/// Index of a state in [`Graph::states`].
pub type StateId = usize;

#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    pub states: Vec<State>,
    pub start: StateId,
    /// The top level's `TimeoutSeconds`: the whole execution fails with `States.Timeout` past it.
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub name: String,
    pub kind: StateKind,
}

/// Where control goes after a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    State(StateId),
    End,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StateKind {
    /// Runs one function.
    Task {
        function: String,
        /// How the task's input and result relate to the function's (direct, or Step Functions' `lambda:invoke`).
        integration: Integration,
        io: Io,
        timeout: Timeout,
        recovery: Recovery,
        next: Next,
    },
    /// Picks the first rule that holds, else `default`; with no default and no match the workflow fails.
    Choice {
        input_path: Option<Path>,
        output_path: Option<Path>,
        rules: Vec<(Rule, StateId)>,
        default: Option<StateId>,
    },
    /// Passes its input (or `result`) through the data flow.
    Pass {
        io: Io,
        result: Option<Value>,
        next: Next,
    },
    /// Runs every branch on the same input; the result is the array of branch outputs, in branch order.
    Parallel {
        branches: Vec<Graph>,
        io: Io,
        recovery: Recovery,
        next: Next,
    },
    /// Runs `map.processor` once per item of an array; the result is the array of iteration outputs, in item order.
    Map {
        map: Box<MapSpec>,
        io: Io,
        recovery: Recovery,
        next: Next,
    },
    /// Passes its input on after a delay.
    Wait {
        until: WaitFor,
        input_path: Option<Path>,
        output_path: Option<Path>,
        next: Next,
    },
    Succeed {
        input_path: Option<Path>,
        output_path: Option<Path>,
    },
    /// Fails the workflow (or the branch) with an error name and cause, given or selected from the input.
    Fail {
        error: Text,
        cause: Text,
    },
}

/// A `Fail` state's `Error` or `Cause`: given (`Error`), or taken from the input (`ErrorPath`, a path or an
/// intrinsic function).
#[derive(Debug, Clone, PartialEq)]
pub enum Text {
    Given(String),
    Selected(Template),
}

/// How a Task's function is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integration {
    /// The function gets the effective input and its output is the task's result: a plain name or a Lambda ARN.
    Direct,
    /// `arn:aws:states:::lambda:invoke`: the function gets `Parameters.Payload`, and the task's result wraps its
    /// output as Step Functions does: `{"ExecutedVersion": "$LATEST", "Payload": OUTPUT, "StatusCode": 200}`.
    LambdaInvoke,
}

/// A Task's own time limit, besides the function's.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Timeout {
    #[default]
    None,
    Seconds(u64),
    /// `TimeoutSecondsPath`: a positive integer taken from the state's input.
    Path(Path),
}

/// How a `Wait` state's delay is given.
#[derive(Debug, Clone, PartialEq)]
pub enum WaitFor {
    Seconds(u64),
    SecondsPath(Path),
    /// Milliseconds since the Unix epoch (the timestamp is validated at deploy time).
    Timestamp(i64),
    TimestampPath(Path),
}

/// A `Map` state's item source and iteration.
#[derive(Debug, Clone, PartialEq)]
pub struct MapSpec {
    /// The graph each item runs (`ItemProcessor`, or the older `Iterator`).
    pub processor: Graph,
    /// Where the items are (`ItemsPath`, default `$`), applied to the effective input.
    pub items_path: Option<Path>,
    /// Each iteration's input (`ItemSelector`, or the older `Parameters`), evaluated with `$$.Map.Item`; by default
    /// the item itself.
    pub item_selector: Option<Template>,
    /// Most iterations in flight at once; 0 means the platform's bound.
    pub max_concurrency: Concurrency,
}

/// `MaxConcurrency` or `MaxConcurrencyPath`.
#[derive(Debug, Clone, PartialEq)]
pub enum Concurrency {
    Fixed(u32),
    Path(Path),
}

/// What a state does when its work fails: retry it, then catch the error.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Recovery {
    pub retry: Vec<Retrier>,
    pub catch: Vec<Catcher>,
}

/// One `Retry` entry, with ASL's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Retrier {
    pub errors: ErrorEquals,
    /// Seconds before the first retry (default 1).
    pub interval_seconds: u64,
    /// Retries at most (default 3; 0 never retries).
    pub max_attempts: u32,
    /// Multiplier of the interval per attempt (default 2.0, at least 1.0).
    pub backoff_rate: f64,
    /// Longest interval, in seconds.
    pub max_delay_seconds: Option<u64>,
    pub jitter: Jitter,
}

/// `JitterStrategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    None,
    /// Each interval is drawn uniformly from 0 to its computed value.
    Full,
}

/// One `Catch` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Catcher {
    pub errors: ErrorEquals,
    pub next: StateId,
    /// Where `{"Error", "Cause"}` goes in the state's input (default `$`: it replaces the input).
    pub result_path: PathField,
}

/// An `ErrorEquals` list, validated: `States.ALL`, if present, stands alone and last.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorEquals(pub Vec<String>);

impl ErrorEquals {
    /// Whether an error named `name` matches, by ASL's rules: `States.ALL` matches everything but
    /// `States.Runtime`; `States.TaskFailed` matches every task failure but a timeout.
    pub fn matches(&self, name: &str) -> bool {
        if name == "States.Runtime" {
            return false;
        }
        self.0.iter().any(|e| {
            e == name
                || e == "States.ALL"
                || (e == "States.TaskFailed" && name != "States.Timeout" && !name.starts_with("States."))
        })
    }
}

/// How a path field was given: absent (use the default `$`), `null` (discard), or a path.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum PathField {
    #[default]
    Default,
    Null,
    Path(Path),
}

/// The data flow of one state: `InputPath` → `Parameters` → (task) → `ResultSelector` → `ResultPath` →
/// `OutputPath`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Io {
    pub input_path: PathField,
    pub parameters: Option<Template>,
    pub result_selector: Option<Template>,
    pub result_path: PathField,
    pub output_path: PathField,
}

/// `InputPath`/`OutputPath` selection: `$` by default, `null` gives `{}`.
pub fn select_field(field: &PathField, value: &Value, what: &str) -> Result<Value, String> {
    match field {
        PathField::Default => Ok(value.clone()),
        PathField::Null => Ok(Value::Object(Default::default())),
        PathField::Path(p) => p.get(value).cloned().ok_or_else(|| format!("{what} {p} selects nothing")),
    }
}

/// `ResultPath` (of a state, or of a catcher): where `result` goes in the state's raw input.
pub fn place_result(field: &PathField, raw: &Value, result: Value) -> Result<Value, String> {
    match field {
        PathField::Default => Ok(result),
        PathField::Null => Ok(raw.clone()),
        PathField::Path(p) if p.segments.is_empty() => Ok(result),
        PathField::Path(p) => {
            let mut doc = raw.clone();
            p.set(&mut doc, result)?;
            Ok(doc)
        }
    }
}

impl Io {
    /// The effective input a task or branch receives, from the state's raw input.
    pub fn effective_input(&self, raw: &Value, scope: Scope) -> Result<Value, String> {
        let selected = select_field(&self.input_path, raw, "InputPath")?;
        match &self.parameters {
            Some(t) => t.eval(&selected, scope),
            None => Ok(selected),
        }
    }

    /// The state's output, from its raw input and the task's result.
    pub fn output(&self, raw: &Value, result: Value, scope: Scope) -> Result<Value, String> {
        let result = match &self.result_selector {
            Some(t) => t.eval(&result, scope)?,
            None => result,
        };
        let combined = place_result(&self.result_path, raw, result)?;
        select_field(&self.output_path, &combined, "OutputPath")
    }
}

/// InputPath/OutputPath selection for Choice and Succeed, which have no other data flow.
pub fn select_path(path: &Option<Path>, value: &Value, what: &str) -> Result<Value, String> {
    match path {
        None => Ok(value.clone()),
        Some(p) => p.get(value).cloned().ok_or_else(|| format!("{what} {p} selects nothing")),
    }
}

impl Graph {
    /// Every function name a Task of this graph (or of its branches) runs, in state order.
    pub fn functions(&self) -> Vec<&str> {
        let mut out = Vec::new();
        for state in &self.states {
            match &state.kind {
                StateKind::Task { function, .. } => out.push(function.as_str()),
                StateKind::Parallel { branches, .. } => branches.iter().for_each(|b| out.extend(b.functions())),
                StateKind::Map { map, .. } => out.extend(map.processor.functions()),
                _ => {}
            }
        }
        out
    }

    /// Builds a straight chain of tasks: an OpenWhisk sequence.
    pub fn sequence(functions: &[String]) -> Graph {
        let states = functions
            .iter()
            .enumerate()
            .map(|(i, f)| State {
                name: format!("{i}:{f}"),
                kind: StateKind::Task {
                    function: f.clone(),
                    integration: Integration::Direct,
                    io: Io::default(),
                    timeout: Timeout::None,
                    recovery: Recovery::default(),
                    next: if i + 1 == functions.len() { Next::End } else { Next::State(i + 1) },
                },
            })
            .collect();
        Graph { states, start: 0, timeout_seconds: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn data_flow_like_step_functions() {
        let io = Io {
            input_path: PathField::Path(Path::parse("$.order").unwrap()),
            parameters: Some(Template::parse(&json!({"id.$": "$.id", "k": 1})).unwrap()),
            result_selector: None,
            result_path: PathField::Path(Path::parse("$.result").unwrap()),
            output_path: PathField::Default,
        };
        let raw = json!({"order": {"id": 7}, "other": true});
        let scope = Scope::EMPTY;
        assert_eq!(io.effective_input(&raw, scope).unwrap(), json!({"id": 7, "k": 1}));
        assert_eq!(
            io.output(&raw, json!("ok"), scope).unwrap(),
            json!({"order": {"id": 7}, "other": true, "result": "ok"})
        );
        let discard = Io { result_path: PathField::Null, ..Io::default() };
        assert_eq!(discard.output(&raw, json!(1), scope).unwrap(), raw);
        let nothing = Io { output_path: PathField::Null, ..Io::default() };
        assert_eq!(nothing.output(&raw, json!(1), scope).unwrap(), json!({}));
    }
}
