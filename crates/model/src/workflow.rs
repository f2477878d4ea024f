//! The validated workflow graph: what the engine walks. Built only by [`crate::asl`] (or by lowering a sequence in
//! [`crate::app`]), so every `StateId` in it is valid, every state is reachable, and every cycle passes through a
//! `Choice` state.
//!
//! **Architecture invariant:** a `Graph` is immutable once built. A redeploy builds a new one.

use serde_json::Value;

use crate::choice::Rule;
use crate::path::{Path, Template};

/// Index of a state in [`Graph::states`].
pub type StateId = usize;

#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    pub states: Vec<State>,
    pub start: StateId,
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
        io: Io,
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
    /// Runs every branch on the same input; the result is the array of branch outputs.
    Parallel {
        branches: Vec<Graph>,
        io: Io,
        next: Next,
    },
    Succeed {
        input_path: Option<Path>,
        output_path: Option<Path>,
    },
    Fail {
        error: String,
        cause: String,
    },
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

fn select(field: &PathField, value: &Value, what: &str) -> Result<Value, String> {
    match field {
        PathField::Default => Ok(value.clone()),
        PathField::Null => Ok(Value::Object(Default::default())),
        PathField::Path(p) => p.get(value).cloned().ok_or_else(|| format!("{what} {p} selects nothing in {value}")),
    }
}

impl Io {
    /// The effective input a task or branch receives, from the state's raw input.
    pub fn effective_input(&self, raw: &Value) -> Result<Value, String> {
        let selected = select(&self.input_path, raw, "InputPath")?;
        match &self.parameters {
            Some(t) => t.eval(&selected),
            None => Ok(selected),
        }
    }

    /// The state's output, from its raw input and the task's result.
    pub fn output(&self, raw: &Value, result: Value) -> Result<Value, String> {
        let result = match &self.result_selector {
            Some(t) => t.eval(&result)?,
            None => result,
        };
        let combined = match &self.result_path {
            PathField::Default => result,
            PathField::Null => raw.clone(),
            PathField::Path(p) if p.segments.is_empty() => result,
            PathField::Path(p) => {
                let mut doc = raw.clone();
                p.set(&mut doc, result)?;
                doc
            }
        };
        select(&self.output_path, &combined, "OutputPath")
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
                    io: Io::default(),
                    next: if i + 1 == functions.len() { Next::End } else { Next::State(i + 1) },
                },
            })
            .collect();
        Graph { states, start: 0 }
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
        assert_eq!(io.effective_input(&raw).unwrap(), json!({"id": 7, "k": 1}));
        assert_eq!(io.output(&raw, json!("ok")).unwrap(), json!({"order": {"id": 7}, "other": true, "result": "ok"}));
        let discard = Io { result_path: PathField::Null, ..Io::default() };
        assert_eq!(discard.output(&raw, json!(1)).unwrap(), raw);
        let nothing = Io { output_path: PathField::Null, ..Io::default() };
        assert_eq!(nothing.output(&raw, json!(1)).unwrap(), json!({}));
    }
}
