//! The Amazon States Language, JSON or YAML, parsed and validated into a [`Graph`].
//!
//! Supported states: `Task`, `Choice`, `Parallel`, `Pass`, `Succeed`, `Fail`, with `InputPath`, `Parameters`,
//! `ResultSelector`, `ResultPath` and `OutputPath`. `Map`, `Wait`, `Retry` and `Catch` are rejected with an error
//! that says they are not supported yet; unknown fields are rejected by name.
//!
//! Validation (deploy time) rejects: unknown functions, missing `Next`/`Default`/`StartAt` targets, unreachable
//! states, cycles that do not pass through a `Choice` (they could never end), states from which no end is reachable,
//! and documents over [`DEFINITION_BYTES_MAX`] or [`STATES_MAX`]. Loops through `Choice` are allowed; the engine
//! bounds them with a per-invocation step limit. Every error names the file, the state and what is wrong.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::Error;
use crate::choice::parse_rule;
use crate::path::{Path, Template};
use crate::workflow::{Graph, Io, Next, PathField, State, StateId, StateKind};

/// Largest accepted definition, as Step Functions (1 MB).
pub const DEFINITION_BYTES_MAX: usize = 1024 * 1024;
/// Most states in one graph, branches included.
pub const STATES_MAX: usize = 1000;
/// Deepest nesting of `Parallel` branches.
pub const NESTING_MAX: usize = 8;

/// Parses and validates an ASL document. `file` is used in error messages; a `.yaml`/`.yml` name, or text that
/// does not start with `{`, is read as YAML. `is_function` says whether a Task's `Resource` names a deployed
/// function.
pub fn parse(file: &str, text: &str, is_function: &dyn Fn(&str) -> bool) -> Result<Graph, Error> {
    let top = |message: String| Error::Asl { file: file.to_string(), state: None, message };
    if text.len() > DEFINITION_BYTES_MAX {
        return Err(top(format!("definition is {} bytes, over the limit of {DEFINITION_BYTES_MAX}", text.len())));
    }
    let yaml = file.ends_with(".yaml") || file.ends_with(".yml") || !text.trim_start().starts_with('{');
    let doc: Value = if yaml {
        serde_yaml_ng::from_str(text).map_err(|e| top(format!("invalid YAML: {e}")))?
    } else {
        serde_json::from_str(text).map_err(|e| top(format!("invalid JSON: {e}")))?
    };
    from_value(file, &doc, is_function)
}

/// Validates an already-parsed ASL document.
pub fn from_value(file: &str, doc: &Value, is_function: &dyn Fn(&str) -> bool) -> Result<Graph, Error> {
    let builder = Builder { file, is_function, states_total: std::cell::Cell::new(0) };
    builder.machine(doc, "", 0)
}

struct Builder<'a> {
    file: &'a str,
    is_function: &'a dyn Fn(&str) -> bool,
    states_total: std::cell::Cell<usize>,
}

const COMMON: &[&str] = &["Type", "Comment"];

impl Builder<'_> {
    fn err(&self, state: Option<&str>, message: impl Into<String>) -> Error {
        Error::Asl { file: self.file.to_string(), state: state.map(str::to_string), message: message.into() }
    }

    /// Parses a state machine (the top level or a Parallel branch). `prefix` qualifies state names in errors.
    fn machine(&self, doc: &Value, prefix: &str, depth: usize) -> Result<Graph, Error> {
        let where_ = if prefix.is_empty() { None } else { Some(prefix.trim_end_matches('/')) };
        let obj = doc.as_object().ok_or_else(|| self.err(where_, "a state machine must be an object"))?;
        for key in obj.keys() {
            match key.as_str() {
                "StartAt" | "States" | "Comment" | "Version" => {}
                "TimeoutSeconds" => {
                    return Err(self.err(where_, "TimeoutSeconds is not supported yet"));
                }
                "QueryLanguage" if obj[key] == "JSONPath" => {}
                "QueryLanguage" => {
                    return Err(self.err(where_, "only QueryLanguage \"JSONPath\" is supported"));
                }
                other => return Err(self.err(where_, format!("unknown field \"{other}\""))),
            }
        }
        let start = obj
            .get("StartAt")
            .ok_or_else(|| self.err(where_, "missing \"StartAt\""))?
            .as_str()
            .ok_or_else(|| self.err(where_, "\"StartAt\" must be a string"))?;
        let states = obj
            .get("States")
            .ok_or_else(|| self.err(where_, "missing \"States\""))?
            .as_object()
            .ok_or_else(|| self.err(where_, "\"States\" must be an object"))?;
        if states.is_empty() {
            return Err(self.err(where_, "\"States\" is empty"));
        }
        self.states_total.set(self.states_total.get() + states.len());
        if self.states_total.get() > STATES_MAX {
            return Err(self.err(where_, format!("more than {STATES_MAX} states")));
        }
        let ids: HashMap<&str, StateId> = states.keys().enumerate().map(|(i, k)| (k.as_str(), i)).collect();
        let start = *ids
            .get(start)
            .ok_or_else(|| self.err(where_, format!("StartAt names \"{start}\", which is not a state")))?;
        let mut out = Vec::with_capacity(states.len());
        for (name, def) in states {
            let qualified = format!("{prefix}{name}");
            if name.is_empty() || name.len() > 80 {
                return Err(self.err(Some(&qualified), "state names must be 1 to 80 characters"));
            }
            let kind = self.state(&qualified, def, &ids, depth)?;
            out.push(State { name: name.clone(), kind });
        }
        let graph = Graph { states: out, start };
        self.check_shape(&graph, prefix)?;
        Ok(graph)
    }

    fn state(&self, name: &str, def: &Value, ids: &HashMap<&str, StateId>, depth: usize) -> Result<StateKind, Error> {
        let at = Some(name);
        let obj = def.as_object().ok_or_else(|| self.err(at, "a state must be an object"))?;
        let ty = obj
            .get("Type")
            .ok_or_else(|| self.err(at, "missing \"Type\""))?
            .as_str()
            .ok_or_else(|| self.err(at, "\"Type\" must be a string"))?;
        for unsupported in ["Retry", "Catch"] {
            if obj.contains_key(unsupported) {
                return Err(self.err(at, format!("{unsupported} is not supported yet")));
            }
        }
        let allowed: &[&str] = match ty {
            "Task" => {
                &["Resource", "Next", "End", "InputPath", "Parameters", "ResultSelector", "ResultPath", "OutputPath"]
            }
            "Pass" => &["Next", "End", "InputPath", "Parameters", "Result", "ResultPath", "OutputPath"],
            "Parallel" => {
                &["Branches", "Next", "End", "InputPath", "Parameters", "ResultSelector", "ResultPath", "OutputPath"]
            }
            "Choice" => &["Choices", "Default", "InputPath", "OutputPath"],
            "Succeed" => &["InputPath", "OutputPath"],
            "Fail" => &["Error", "Cause"],
            "Map" | "Wait" => {
                return Err(self.err(at, format!("state type {ty} is not supported yet")));
            }
            other => {
                return Err(self.err(
                    at,
                    format!("unknown state type \"{other}\"; expected Task, Choice, Parallel, Pass, Succeed or Fail"),
                ));
            }
        };
        for key in obj.keys() {
            if !COMMON.contains(&key.as_str()) && !allowed.contains(&key.as_str()) {
                let hint = match key.as_str() {
                    "TimeoutSeconds" | "HeartbeatSeconds" => " (not supported yet)",
                    _ => "",
                };
                return Err(self.err(at, format!("field \"{key}\" is not allowed in a {ty} state{hint}")));
            }
        }
        let target = |field: &str, value: &Value| -> Result<StateId, Error> {
            let t = value.as_str().ok_or_else(|| self.err(at, format!("\"{field}\" must be a state name")))?;
            ids.get(t).copied().ok_or_else(|| self.err(at, format!("{field} names \"{t}\", which is not a state")))
        };
        let next = |obj: &Map<String, Value>| -> Result<Next, Error> {
            match (obj.get("Next"), obj.get("End")) {
                (Some(_), Some(_)) => Err(self.err(at, "has both \"Next\" and \"End\"")),
                (Some(n), None) => Ok(Next::State(target("Next", n)?)),
                (None, Some(Value::Bool(true))) => Ok(Next::End),
                (None, Some(_)) => Err(self.err(at, "\"End\" must be true")),
                (None, None) => Err(self.err(at, "needs \"Next\" or \"End\": true")),
            }
        };
        Ok(match ty {
            "Task" => {
                let function = obj
                    .get("Resource")
                    .ok_or_else(|| self.err(at, "missing \"Resource\" (the function to run)"))?
                    .as_str()
                    .ok_or_else(|| self.err(at, "\"Resource\" must be a function name"))?;
                if !(self.is_function)(function) {
                    return Err(self.err(at, format!("Resource names unknown function \"{function}\"")));
                }
                StateKind::Task { function: function.to_string(), io: self.io(name, obj)?, next: next(obj)? }
            }
            "Pass" => StateKind::Pass { io: self.io(name, obj)?, result: obj.get("Result").cloned(), next: next(obj)? },
            "Parallel" => {
                if depth + 1 > NESTING_MAX {
                    return Err(self.err(at, format!("Parallel states nest deeper than {NESTING_MAX}")));
                }
                let branches = obj
                    .get("Branches")
                    .ok_or_else(|| self.err(at, "missing \"Branches\""))?
                    .as_array()
                    .ok_or_else(|| self.err(at, "\"Branches\" must be an array"))?;
                if branches.is_empty() {
                    return Err(self.err(at, "\"Branches\" is empty"));
                }
                let mut graphs = Vec::with_capacity(branches.len());
                for (i, b) in branches.iter().enumerate() {
                    graphs.push(self.machine(b, &format!("{name}/branch {i}/"), depth + 1)?);
                }
                StateKind::Parallel { branches: graphs, io: self.io(name, obj)?, next: next(obj)? }
            }
            "Choice" => {
                let choices = obj
                    .get("Choices")
                    .ok_or_else(|| self.err(at, "missing \"Choices\""))?
                    .as_array()
                    .ok_or_else(|| self.err(at, "\"Choices\" must be an array"))?;
                if choices.is_empty() {
                    return Err(self.err(at, "\"Choices\" is empty"));
                }
                let mut rules = Vec::with_capacity(choices.len());
                for (i, c) in choices.iter().enumerate() {
                    let c = c.as_object().ok_or_else(|| self.err(at, format!("Choices[{i}] must be an object")))?;
                    let rule = parse_rule(c, true).map_err(|m| self.err(at, format!("Choices[{i}]: {m}")))?;
                    let n = c.get("Next").ok_or_else(|| self.err(at, format!("Choices[{i}] has no \"Next\"")))?;
                    rules.push((rule, target(&format!("Choices[{i}].Next"), n)?));
                }
                let default = obj.get("Default").map(|d| target("Default", d)).transpose()?;
                StateKind::Choice {
                    input_path: self.plain_path(name, obj, "InputPath")?,
                    output_path: self.plain_path(name, obj, "OutputPath")?,
                    rules,
                    default,
                }
            }
            "Succeed" => StateKind::Succeed {
                input_path: self.plain_path(name, obj, "InputPath")?,
                output_path: self.plain_path(name, obj, "OutputPath")?,
            },
            "Fail" => {
                let text = |k: &str| -> Result<String, Error> {
                    match obj.get(k) {
                        None => Ok(String::new()),
                        Some(Value::String(s)) => Ok(s.clone()),
                        Some(_) => Err(self.err(at, format!("\"{k}\" must be a string"))),
                    }
                };
                StateKind::Fail { error: text("Error")?, cause: text("Cause")? }
            }
            _ => unreachable!("state types were matched above"),
        })
    }

    fn path_field(&self, state: &str, obj: &Map<String, Value>, key: &str) -> Result<PathField, Error> {
        match obj.get(key) {
            None => Ok(PathField::Default),
            Some(Value::Null) => Ok(PathField::Null),
            Some(Value::String(s)) => {
                Path::parse(s).map(PathField::Path).map_err(|e| self.err(Some(state), format!("{key}: {e}")))
            }
            Some(_) => Err(self.err(Some(state), format!("\"{key}\" must be a path string or null"))),
        }
    }

    fn plain_path(&self, state: &str, obj: &Map<String, Value>, key: &str) -> Result<Option<Path>, Error> {
        match self.path_field(state, obj, key)? {
            PathField::Default => Ok(None),
            PathField::Path(p) => Ok(Some(p)),
            PathField::Null => Err(self.err(Some(state), format!("\"{key}\" may not be null here"))),
        }
    }

    fn io(&self, state: &str, obj: &Map<String, Value>) -> Result<Io, Error> {
        let template = |key: &str| -> Result<Option<Template>, Error> {
            obj.get(key)
                .map(|v| Template::parse(v).map_err(|e| self.err(Some(state), format!("{key}: {e}"))))
                .transpose()
        };
        Ok(Io {
            input_path: self.path_field(state, obj, "InputPath")?,
            parameters: template("Parameters")?,
            result_selector: template("ResultSelector")?,
            result_path: self.path_field(state, obj, "ResultPath")?,
            output_path: self.path_field(state, obj, "OutputPath")?,
        })
    }

    /// Reachability, cycles without a Choice, and states that can never finish.
    fn check_shape(&self, graph: &Graph, prefix: &str) -> Result<(), Error> {
        let n = graph.states.len();
        let successors: Vec<Vec<StateId>> = graph.states.iter().map(|s| successors(&s.kind)).collect();
        let name = |i: StateId| format!("{prefix}{}", graph.states[i].name);
        // Reachable from StartAt.
        let mut seen = vec![false; n];
        let mut stack = vec![graph.start];
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut seen[i], true) {
                stack.extend(&successors[i]);
            }
        }
        if let Some(i) = (0..n).find(|i| !seen[*i]) {
            return Err(self.err(Some(&name(i)), "is unreachable from StartAt"));
        }
        // A cycle that avoids every Choice state can never be left.
        let is_choice = |i: StateId| matches!(graph.states[i].kind, StateKind::Choice { .. });
        let mut color = vec![0u8; n]; // 0 new, 1 on stack, 2 done
        for root in 0..n {
            if is_choice(root) || color[root] != 0 {
                continue;
            }
            let mut stack: Vec<(StateId, usize)> = vec![(root, 0)];
            color[root] = 1;
            while let Some((i, edge)) = stack.pop() {
                match successors[i].get(edge) {
                    None => color[i] = 2,
                    Some(&j) => {
                        stack.push((i, edge + 1));
                        if is_choice(j) {
                            continue;
                        }
                        if color[j] == 1 {
                            return Err(self.err(
                                Some(&name(j)),
                                "is on a loop with no Choice state, so the workflow could never finish",
                            ));
                        }
                        if color[j] == 0 {
                            color[j] = 1;
                            stack.push((j, 0));
                        }
                    }
                }
            }
        }
        // Some end must be reachable from every state.
        let mut can_end: Vec<bool> = graph.states.iter().map(|s| is_terminal(&s.kind)).collect();
        loop {
            let mut changed = false;
            for i in 0..n {
                if !can_end[i] && successors[i].iter().any(|j| can_end[*j]) {
                    can_end[i] = true;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        if let Some(i) = (0..n).find(|i| !can_end[*i]) {
            return Err(self.err(Some(&name(i)), "can never reach an end state (End, Succeed or Fail)"));
        }
        Ok(())
    }
}

fn successors(kind: &StateKind) -> Vec<StateId> {
    let next = |n: &Next| match n {
        Next::State(s) => vec![*s],
        Next::End => vec![],
    };
    match kind {
        StateKind::Task { next: n, .. } | StateKind::Pass { next: n, .. } | StateKind::Parallel { next: n, .. } => {
            next(n)
        }
        StateKind::Choice { rules, default, .. } => rules.iter().map(|(_, t)| *t).chain(*default).collect(),
        StateKind::Succeed { .. } | StateKind::Fail { .. } => vec![],
    }
}

fn is_terminal(kind: &StateKind) -> bool {
    match kind {
        StateKind::Task { next, .. } | StateKind::Pass { next, .. } | StateKind::Parallel { next, .. } => {
            *next == Next::End
        }
        StateKind::Succeed { .. } | StateKind::Fail { .. } => true,
        StateKind::Choice { .. } => false,
    }
}
