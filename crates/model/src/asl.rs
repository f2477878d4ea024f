//! The Amazon States Language, JSON or YAML, parsed and validated into a [`Graph`].
//!
//! Supported: every state type of the JSONPath query language (`Task`, `Choice`, `Parallel`, `Map` in inline mode,
//! `Pass`, `Wait`, `Succeed`, `Fail`) with `InputPath`, `Parameters`, `ResultSelector`, `ResultPath`,
//! `OutputPath`, `Retry`, `Catch`, `TimeoutSeconds(Path)`, intrinsic functions and the context object. A Task's
//! `Resource` is a function name, a Lambda ARN (`arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`, which
//! names `NAME`), or `arn:aws:states:::lambda:invoke` with a static `Parameters.FunctionName`. Refused with an error
//! that says so: `QueryLanguage: "JSONata"`, distributed `Map`, other service integrations and callback tasks.
//! Unknown fields are rejected by name.
//!
//! Validation (deploy time) rejects: unknown functions, missing `Next`/`Default`/`StartAt` targets, unreachable
//! states, cycles that do not pass through a `Choice` (they could never end), states from which no end is reachable,
//! malformed `Retry`/`Catch` (`States.ALL` not alone and last, a negative `MaxAttempts`, ...), a `Wait` with
//! more or fewer than one time field, values past the platform's [`Limits`], and documents over
//! [`DEFINITION_BYTES_MAX`] or [`STATES_MAX`]. Loops through `Choice` are allowed; the engine bounds them with a
//! per-invocation step limit. Every error names the file, the state and what is wrong.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Error;
use crate::choice::parse_rule;
use crate::path::{Path, Template, parse_dynamic};
use crate::workflow::{
    Catcher, Concurrency, ErrorEquals, Graph, Integration, Io, Jitter, MapSpec, Next, PathField, Recovery, Retrier,
    State, StateId, StateKind, Text, Timeout, WaitFor,
};

/// Largest accepted definition, as Step Functions (1 MB).
pub const DEFINITION_BYTES_MAX: usize = 1024 * 1024;
/// Most states in one graph, branches included.
pub const STATES_MAX: usize = 1000;
/// Deepest nesting of `Parallel` branches and `Map` processors.
pub const NESTING_MAX: usize = 8;
/// ASL's own bound on integer fields such as `IntervalSeconds`, `MaxAttempts` and `TimeoutSeconds`.
const ASL_INTEGER_MAX: u64 = 99_999_999;

/// The platform's bounds on what a workflow may ask for: configured as `[workflows]` in the server's config file.
/// Each has a default and a hard maximum ([`Limits::MAX`]); a definition past them is refused at deploy time, and a
/// value taken from data at run time (`SecondsPath`, `ItemsPath`, ...) fails the execution with `States.Runtime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Items one `Map` state may iterate over (default 1000, at most 10,000).
    pub map_items_max: u32,
    /// Iterations of one `Map` in flight at once; `MaxConcurrency: 0` means this (default 16, at most 256).
    pub map_concurrency_max: u32,
    /// A retrier's `MaxAttempts` (default 10, at most 1000).
    pub retry_attempts_max: u32,
    /// The longest `Wait`, and the longest retry interval, in seconds (default 3600, at most 86,400 × 7).
    pub wait_seconds_max: u64,
    /// Nesting of intrinsic function calls inside one another (default 10, at most 32).
    pub intrinsic_nesting_max: usize,
}

impl Limits {
    /// The largest value each limit may be configured to.
    pub const MAX: Limits = Limits {
        map_items_max: 10_000,
        map_concurrency_max: 256,
        retry_attempts_max: 1000,
        wait_seconds_max: 86_400 * 7,
        intrinsic_nesting_max: crate::intrinsics::NESTING_MAX,
    };

    /// Checks every limit against [`Limits::MAX`]; the error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        let over = |name: &str, value: u64, max: u64| {
            if value == 0 || value > max {
                Err(format!("workflows.{name} must be 1 to {max}, not {value}"))
            } else {
                Ok(())
            }
        };
        over("map_items_max", self.map_items_max.into(), Self::MAX.map_items_max.into())?;
        over("map_concurrency_max", self.map_concurrency_max.into(), Self::MAX.map_concurrency_max.into())?;
        over("retry_attempts_max", self.retry_attempts_max.into(), Self::MAX.retry_attempts_max.into())?;
        over("wait_seconds_max", self.wait_seconds_max, Self::MAX.wait_seconds_max)?;
        over("intrinsic_nesting_max", self.intrinsic_nesting_max as u64, Self::MAX.intrinsic_nesting_max as u64)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            map_items_max: 1000,
            map_concurrency_max: 16,
            retry_attempts_max: 10,
            wait_seconds_max: 3600,
            intrinsic_nesting_max: crate::intrinsics::NESTING_DEFAULT,
        }
    }
}

/// Parses and validates an ASL document within the default [`Limits`]. `file` is used in error messages; a
/// `.yaml`/`.yml` name, or text that does not start with `{`, is read as YAML. `is_function` says whether a Task's
/// `Resource` names a deployed function.
pub fn parse(file: &str, text: &str, is_function: &dyn Fn(&str) -> bool) -> Result<Graph, Error> {
    parse_within(file, text, is_function, &Limits::default())
}

/// [`parse`], within `limits`.
pub fn parse_within(
    file: &str,
    text: &str,
    is_function: &dyn Fn(&str) -> bool,
    limits: &Limits,
) -> Result<Graph, Error> {
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
    from_value_within(file, &doc, is_function, limits)
}

/// Validates an already-parsed ASL document within the default [`Limits`].
pub fn from_value(file: &str, doc: &Value, is_function: &dyn Fn(&str) -> bool) -> Result<Graph, Error> {
    from_value_within(file, doc, is_function, &Limits::default())
}

/// [`from_value`], within `limits`.
pub fn from_value_within(
    file: &str,
    doc: &Value,
    is_function: &dyn Fn(&str) -> bool,
    limits: &Limits,
) -> Result<Graph, Error> {
    let builder = Builder { file, is_function, limits, states_total: std::cell::Cell::new(0) };
    builder.machine(doc, "", 0, Level::Top)
}

/// The function a Lambda ARN or partial ARN names: `arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`,
/// `ACCOUNT:function:NAME[:QUALIFIER]`, `NAME:QUALIFIER` or `NAME`. The qualifier (a version or alias) is dropped:
/// specfaas runs the deployed version.
pub fn lambda_function_name(resource: &str) -> Option<&str> {
    let parts: Vec<&str> = resource.split(':').collect();
    let name = match parts.as_slice() {
        ["arn", partition, "lambda", _region, _account, "function", name]
        | ["arn", partition, "lambda", _region, _account, "function", name, _] => {
            partition.starts_with("aws").then_some(*name)?
        }
        [_account, "function", name] | [_account, "function", name, _] => name,
        [name] | [name, _] if !name.is_empty() && *name != "arn" => name,
        _ => return None,
    };
    (!name.is_empty()).then_some(name)
}

/// Where a state machine sits: the top level, a `Parallel` branch, or a `Map` processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Top,
    Branch,
    Processor,
}

struct Builder<'a> {
    file: &'a str,
    is_function: &'a dyn Fn(&str) -> bool,
    limits: &'a Limits,
    states_total: std::cell::Cell<usize>,
}

const COMMON: &[&str] = &["Type", "Comment", "QueryLanguage"];

/// Reads a non-negative integer field, at most `max`.
fn integer(obj: &Map<String, Value>, key: &str, max: u64) -> Result<Option<u64>, String> {
    match obj.get(key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n <= max => Ok(Some(n)),
            Some(n) => Err(format!("\"{key}\" is {n}, over the limit of {max}")),
            None if v.as_i64().is_some_and(|n| n < 0) => Err(format!("\"{key}\" must not be negative")),
            None => Err(format!("\"{key}\" must be a non-negative integer")),
        },
    }
}

impl Builder<'_> {
    fn err(&self, state: Option<&str>, message: impl Into<String>) -> Error {
        Error::Asl { file: self.file.to_string(), state: state.map(str::to_string), message: message.into() }
    }

    fn query_language(&self, at: Option<&str>, obj: &Map<String, Value>) -> Result<(), Error> {
        match obj.get("QueryLanguage") {
            None => Ok(()),
            Some(v) if v == "JSONPath" => Ok(()),
            Some(v) if v == "JSONata" => Err(self.err(
                at,
                "QueryLanguage \"JSONata\" is not supported: specfaas runs the JSONPath query language (no complete \
                 JSONata implementation for Rust exists to build on); use QueryLanguage \"JSONPath\"",
            )),
            Some(other) => Err(self.err(at, format!("QueryLanguage must be \"JSONPath\", not {other}"))),
        }
    }

    /// Parses a state machine (the top level, a Parallel branch or a Map processor). `prefix` qualifies state
    /// names in errors.
    fn machine(&self, doc: &Value, prefix: &str, depth: usize, level: Level) -> Result<Graph, Error> {
        let where_ = if prefix.is_empty() { None } else { Some(prefix.trim_end_matches('/')) };
        let obj = doc.as_object().ok_or_else(|| self.err(where_, "a state machine must be an object"))?;
        for key in obj.keys() {
            match (key.as_str(), level) {
                ("StartAt" | "States" | "Comment", _) => {}
                ("Version" | "TimeoutSeconds" | "QueryLanguage", Level::Top) => {}
                ("ProcessorConfig", Level::Processor) => {}
                (other, _) => return Err(self.err(where_, format!("unknown field \"{other}\""))),
            }
        }
        self.query_language(where_, obj)?;
        if let Some(config) = obj.get("ProcessorConfig") {
            let config = config.as_object().ok_or_else(|| self.err(where_, "\"ProcessorConfig\" must be an object"))?;
            for (key, value) in config {
                match key.as_str() {
                    "Mode" if value == "INLINE" => {}
                    "Mode" if value == "DISTRIBUTED" => {
                        return Err(self.err(
                            where_,
                            "distributed Map (ProcessorConfig.Mode DISTRIBUTED) is not supported; use INLINE",
                        ));
                    }
                    "Mode" => return Err(self.err(where_, format!("ProcessorConfig.Mode must be INLINE, not {value}"))),
                    "ExecutionType" => {}
                    other => return Err(self.err(where_, format!("unknown field \"ProcessorConfig.{other}\""))),
                }
            }
        }
        let timeout_seconds = integer(obj, "TimeoutSeconds", ASL_INTEGER_MAX).map_err(|m| self.err(where_, m))?;
        if timeout_seconds == Some(0) {
            return Err(self.err(where_, "\"TimeoutSeconds\" must be positive"));
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
        let graph = Graph { states: out, start, timeout_seconds };
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
        self.query_language(at, obj)?;
        const FLOW: &[&str] = &["Next", "End", "InputPath", "OutputPath"];
        const RECOVERY: &[&str] = &["Retry", "Catch"];
        let allowed: Vec<&str> = match ty {
            "Task" => [FLOW, RECOVERY, &["Resource", "Parameters", "ResultSelector", "ResultPath"]]
                .concat()
                .into_iter()
                .chain(["TimeoutSeconds", "TimeoutSecondsPath", "HeartbeatSeconds", "HeartbeatSecondsPath"])
                .collect(),
            "Pass" => [FLOW, &["Parameters", "Result", "ResultPath"]].concat(),
            "Parallel" => [FLOW, RECOVERY, &["Branches", "Parameters", "ResultSelector", "ResultPath"]].concat(),
            "Map" => [
                FLOW,
                RECOVERY,
                &[
                    "ItemProcessor",
                    "Iterator",
                    "ItemsPath",
                    "ItemSelector",
                    "Parameters",
                    "MaxConcurrency",
                    "MaxConcurrencyPath",
                    "ResultSelector",
                    "ResultPath",
                ],
            ]
            .concat(),
            "Wait" => [FLOW, &["Seconds", "SecondsPath", "Timestamp", "TimestampPath"]].concat(),
            "Choice" => vec!["Choices", "Default", "InputPath", "OutputPath"],
            "Succeed" => vec!["InputPath", "OutputPath"],
            "Fail" => vec!["Error", "ErrorPath", "Cause", "CausePath"],
            other => {
                return Err(self.err(
                    at,
                    format!(
                        "unknown state type \"{other}\"; expected Task, Choice, Parallel, Map, Pass, Wait, Succeed or Fail"
                    ),
                ));
            }
        };
        for key in obj.keys() {
            if !COMMON.contains(&key.as_str()) && !allowed.contains(&key.as_str()) {
                let hint = match key.as_str() {
                    "ItemReader"
                    | "ItemBatcher"
                    | "ResultWriter"
                    | "ToleratedFailurePercentage"
                    | "ToleratedFailureCount"
                    | "ToleratedFailurePercentagePath"
                    | "ToleratedFailureCountPath"
                    | "Label" => " (it belongs to distributed Map, which is not supported)",
                    "Credentials" => " (cross-account credentials are not supported)",
                    "Arguments" | "Output" | "Assign" => " (it belongs to the JSONata query language)",
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
        let recovery = || self.recovery(name, obj, &target);
        Ok(match ty {
            "Task" => self.task(name, obj, next(obj)?, recovery()?)?,
            "Pass" => StateKind::Pass { io: self.io(name, obj)?, result: obj.get("Result").cloned(), next: next(obj)? },
            "Parallel" => {
                if depth + 1 > NESTING_MAX {
                    return Err(self.err(at, format!("Parallel and Map states nest deeper than {NESTING_MAX}")));
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
                    graphs.push(self.machine(b, &format!("{name}/branch {i}/"), depth + 1, Level::Branch)?);
                }
                StateKind::Parallel {
                    branches: graphs,
                    io: self.io(name, obj)?,
                    recovery: recovery()?,
                    next: next(obj)?,
                }
            }
            "Map" => self.map(name, obj, depth, next(obj)?, recovery()?)?,
            "Wait" => self.wait(name, obj, next(obj)?)?,
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
                let text = |given: &str, path: &str| -> Result<Text, Error> {
                    match (obj.get(given), obj.get(path)) {
                        (Some(_), Some(_)) => Err(self.err(at, format!("has both \"{given}\" and \"{path}\""))),
                        (None, None) => Ok(Text::Given(String::new())),
                        (Some(Value::String(s)), None) => Ok(Text::Given(s.clone())),
                        (Some(_), None) => Err(self.err(at, format!("\"{given}\" must be a string"))),
                        (None, Some(Value::String(p))) => parse_dynamic(p, self.limits.intrinsic_nesting_max)
                            .map(Text::Selected)
                            .map_err(|e| self.err(at, format!("{path}: {e}"))),
                        (None, Some(_)) => Err(self.err(at, format!("\"{path}\" must be a path string"))),
                    }
                };
                StateKind::Fail { error: text("Error", "ErrorPath")?, cause: text("Cause", "CausePath")? }
            }
            _ => unreachable!("state types were matched above"),
        })
    }

    fn task(&self, name: &str, obj: &Map<String, Value>, next: Next, recovery: Recovery) -> Result<StateKind, Error> {
        let at = Some(name);
        let resource = obj
            .get("Resource")
            .ok_or_else(|| self.err(at, "missing \"Resource\" (the function to run)"))?
            .as_str()
            .ok_or_else(|| self.err(at, "\"Resource\" must be a function name or a Lambda ARN"))?;
        let mut io = self.io(name, obj)?;
        let (function, integration) = if let Some(rest) = resource.strip_prefix("arn:aws:states:::") {
            if rest != "lambda:invoke" {
                let what = if rest.contains(".waitForTaskToken") || rest.ends_with(".sync") {
                    "callback and .sync integrations are not supported"
                } else {
                    "of the service integrations only arn:aws:states:::lambda:invoke is supported"
                };
                return Err(self.err(at, format!("Resource \"{resource}\": {what}")));
            }
            let params = obj.get("Parameters").and_then(Value::as_object).ok_or_else(|| {
                self.err(at, "arn:aws:states:::lambda:invoke needs \"Parameters\" with \"FunctionName\"")
            })?;
            let mut payload = None;
            let mut function = None;
            for (key, value) in params {
                match key.as_str() {
                    "FunctionName" => {
                        let text =
                            value.as_str().ok_or_else(|| self.err(at, "Parameters.FunctionName must be a string"))?;
                        function = Some(lambda_function_name(text).ok_or_else(|| {
                            self.err(
                                at,
                                format!("Parameters.FunctionName \"{text}\" is not a function name or Lambda ARN"),
                            )
                        })?);
                    }
                    "FunctionName.$" => {
                        return Err(self.err(at, "Parameters.FunctionName.$ is not supported: the function must be named in the definition, so that it is checked at deploy time"));
                    }
                    "Payload" | "Payload.$" => {
                        let mut one = Map::new();
                        one.insert(key.replace("Payload", "p"), value.clone());
                        let t = Template::parse_within(&Value::Object(one), self.limits.intrinsic_nesting_max)
                            .map_err(|e| self.err(at, format!("Parameters.Payload: {e}")))?;
                        let Template::Object(mut entries) = t else { unreachable!("an object parses to an object") };
                        payload = entries.pop().map(|(_, t)| t);
                    }
                    "InvocationType" if value == "RequestResponse" => {}
                    "Qualifier" | "LogType" | "ClientContext" => {}
                    other => {
                        return Err(self.err(at, format!("Parameters.{other} is not supported with lambda:invoke")));
                    }
                }
            }
            let function = function.ok_or_else(|| self.err(at, "lambda:invoke needs Parameters.FunctionName"))?;
            // The function's input is the payload; with none, the function gets the state's effective input.
            io.parameters = payload;
            (function, Integration::LambdaInvoke)
        } else {
            let function = lambda_function_name(resource)
                .filter(|_| !resource.starts_with("arn:") || resource.contains(":lambda:"));
            match function {
                Some(f) => (f, Integration::Direct),
                None => {
                    return Err(self
                        .err(at, format!("Resource \"{resource}\" is not a function name or a Lambda function ARN")));
                }
            }
        };
        if !(self.is_function)(function) {
            return Err(self.err(at, format!("Resource names unknown function \"{function}\"")));
        }
        let timeout = match (obj.get("TimeoutSeconds"), obj.get("TimeoutSecondsPath")) {
            (Some(_), Some(_)) => return Err(self.err(at, "has both \"TimeoutSeconds\" and \"TimeoutSecondsPath\"")),
            (Some(_), None) => match integer(obj, "TimeoutSeconds", ASL_INTEGER_MAX).map_err(|m| self.err(at, m))? {
                Some(0) => return Err(self.err(at, "\"TimeoutSeconds\" must be positive")),
                Some(n) => Timeout::Seconds(n),
                None => unreachable!("present"),
            },
            (None, Some(_)) => Timeout::Path(self.required_path(name, obj, "TimeoutSecondsPath")?),
            (None, None) => Timeout::None,
        };
        Ok(StateKind::Task { function: function.to_string(), integration, io, timeout, recovery, next })
    }

    fn map(
        &self,
        name: &str,
        obj: &Map<String, Value>,
        depth: usize,
        next: Next,
        recovery: Recovery,
    ) -> Result<StateKind, Error> {
        let at = Some(name);
        if depth + 1 > NESTING_MAX {
            return Err(self.err(at, format!("Parallel and Map states nest deeper than {NESTING_MAX}")));
        }
        let processor = match (obj.get("ItemProcessor"), obj.get("Iterator")) {
            (Some(_), Some(_)) => return Err(self.err(at, "has both \"ItemProcessor\" and \"Iterator\"")),
            (Some(p), None) | (None, Some(p)) => self.machine(p, &format!("{name}/"), depth + 1, Level::Processor)?,
            (None, None) => return Err(self.err(at, "a Map state needs \"ItemProcessor\" (or the older \"Iterator\")")),
        };
        let template = |key: &str| -> Result<Option<Template>, Error> {
            obj.get(key)
                .map(|v| {
                    Template::parse_within(v, self.limits.intrinsic_nesting_max)
                        .map_err(|e| self.err(at, format!("{key}: {e}")))
                })
                .transpose()
        };
        let item_selector = match (template("ItemSelector")?, template("Parameters")?) {
            (Some(_), Some(_)) => return Err(self.err(at, "has both \"ItemSelector\" and \"Parameters\"")),
            (a, b) => a.or(b),
        };
        let max_concurrency = match (obj.get("MaxConcurrency"), obj.get("MaxConcurrencyPath")) {
            (Some(_), Some(_)) => return Err(self.err(at, "has both \"MaxConcurrency\" and \"MaxConcurrencyPath\"")),
            (Some(_), None) => {
                let n = integer(obj, "MaxConcurrency", u32::MAX.into()).map_err(|m| self.err(at, m))?.unwrap_or(0);
                let max = self.limits.map_concurrency_max;
                if n > max.into() {
                    return Err(self.err(at, format!("MaxConcurrency {n} is over the platform's limit of {max} (workflows.map_concurrency_max); use 0 for the platform's bound")));
                }
                Concurrency::Fixed(n as u32)
            }
            (None, Some(_)) => Concurrency::Path(self.required_path(name, obj, "MaxConcurrencyPath")?),
            (None, None) => Concurrency::Fixed(0),
        };
        let mut io = self.io(name, obj)?;
        io.parameters = None; // `Parameters` of a Map is the item selector
        let items_path = self.plain_path(name, obj, "ItemsPath")?;
        let map = MapSpec { processor, items_path, item_selector, max_concurrency };
        Ok(StateKind::Map { map: Box::new(map), io, recovery, next })
    }

    fn wait(&self, name: &str, obj: &Map<String, Value>, next: Next) -> Result<StateKind, Error> {
        let at = Some(name);
        let fields: Vec<&str> = ["Seconds", "SecondsPath", "Timestamp", "TimestampPath"]
            .into_iter()
            .filter(|k| obj.contains_key(*k))
            .collect();
        if fields.len() != 1 {
            return Err(self.err(
                at,
                format!(
                    "a Wait state needs exactly one of Seconds, SecondsPath, Timestamp and TimestampPath; it has {}",
                    if fields.is_empty() { "none".to_string() } else { fields.join(" and ") }
                ),
            ));
        }
        let max = self.limits.wait_seconds_max;
        let until = match fields[0] {
            "Seconds" => match integer(obj, "Seconds", u64::MAX).map_err(|m| self.err(at, m))? {
                Some(n) if n > max => {
                    return Err(self.err(
                        at,
                        format!(
                            "Seconds {n} is over the platform's longest wait of {max} (workflows.wait_seconds_max)"
                        ),
                    ));
                }
                Some(n) => WaitFor::Seconds(n),
                None => unreachable!("present"),
            },
            "Timestamp" => {
                let text = obj["Timestamp"].as_str().ok_or_else(|| self.err(at, "\"Timestamp\" must be a string"))?;
                WaitFor::Timestamp(parse_timestamp(text).map_err(|m| self.err(at, format!("Timestamp: {m}")))?)
            }
            "SecondsPath" => WaitFor::SecondsPath(self.required_path(name, obj, "SecondsPath")?),
            _ => WaitFor::TimestampPath(self.required_path(name, obj, "TimestampPath")?),
        };
        Ok(StateKind::Wait {
            until,
            input_path: self.plain_path(name, obj, "InputPath")?,
            output_path: self.plain_path(name, obj, "OutputPath")?,
            next,
        })
    }

    fn recovery(
        &self,
        name: &str,
        obj: &Map<String, Value>,
        target: &dyn Fn(&str, &Value) -> Result<StateId, Error>,
    ) -> Result<Recovery, Error> {
        let at = Some(name);
        let list = |key: &str| -> Result<Vec<Map<String, Value>>, Error> {
            match obj.get(key) {
                None => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v.as_object().cloned().ok_or_else(|| self.err(at, format!("{key}[{i}] must be an object")))
                    })
                    .collect(),
                Some(_) => Err(self.err(at, format!("\"{key}\" must be an array"))),
            }
        };
        let retry = list("Retry")?;
        let catch = list("Catch")?;
        let mut recovery = Recovery::default();
        for (i, r) in retry.iter().enumerate() {
            let here = |m: String| self.err(at, format!("Retry[{i}]: {m}"));
            for key in r.keys() {
                if ![
                    "ErrorEquals",
                    "IntervalSeconds",
                    "MaxAttempts",
                    "BackoffRate",
                    "MaxDelaySeconds",
                    "JitterStrategy",
                    "Comment",
                ]
                .contains(&key.as_str())
                {
                    return Err(here(format!("unknown field \"{key}\"")));
                }
            }
            let errors = error_equals(r, i + 1 == retry.len()).map_err(here)?;
            let interval_seconds = integer(r, "IntervalSeconds", ASL_INTEGER_MAX).map_err(here)?.unwrap_or(1);
            if interval_seconds == 0 {
                return Err(here("\"IntervalSeconds\" must be a positive integer".into()));
            }
            let max_attempts = integer(r, "MaxAttempts", ASL_INTEGER_MAX).map_err(here)?.unwrap_or(3);
            let attempts_max = self.limits.retry_attempts_max;
            if max_attempts > attempts_max.into() {
                return Err(here(format!(
                    "MaxAttempts {max_attempts} is over the platform's limit of {attempts_max} (workflows.retry_attempts_max)"
                )));
            }
            let backoff_rate = match r.get("BackoffRate") {
                None => 2.0,
                Some(v) => match v.as_f64() {
                    Some(b) if b >= 1.0 && b.is_finite() => b,
                    _ => return Err(here("\"BackoffRate\" must be a number of at least 1.0".into())),
                },
            };
            let max_delay_seconds = integer(r, "MaxDelaySeconds", 31_622_400).map_err(here)?;
            if max_delay_seconds == Some(0) {
                return Err(here("\"MaxDelaySeconds\" must be a positive integer".into()));
            }
            let jitter = match r.get("JitterStrategy") {
                None => Jitter::None,
                Some(v) if v == "NONE" => Jitter::None,
                Some(v) if v == "FULL" => Jitter::Full,
                Some(v) => return Err(here(format!("\"JitterStrategy\" must be \"FULL\" or \"NONE\", not {v}"))),
            };
            recovery.retry.push(Retrier {
                errors,
                interval_seconds,
                max_attempts: max_attempts as u32,
                backoff_rate,
                max_delay_seconds,
                jitter,
            });
        }
        for (i, c) in catch.iter().enumerate() {
            let here = |m: String| self.err(at, format!("Catch[{i}]: {m}"));
            for key in c.keys() {
                if !["ErrorEquals", "Next", "ResultPath", "Comment"].contains(&key.as_str()) {
                    return Err(here(format!("unknown field \"{key}\"")));
                }
            }
            let errors = error_equals(c, i + 1 == catch.len()).map_err(here)?;
            let next = c.get("Next").ok_or_else(|| here("needs \"Next\"".into()))?;
            let next = target(&format!("Catch[{i}].Next"), next)?;
            let result_path = self.path_field(name, c, "ResultPath")?;
            recovery.catch.push(Catcher { errors, next, result_path });
        }
        Ok(recovery)
    }

    fn required_path(&self, state: &str, obj: &Map<String, Value>, key: &str) -> Result<Path, Error> {
        match self.path_field(state, obj, key)? {
            PathField::Path(p) => Ok(p),
            _ => Err(self.err(Some(state), format!("\"{key}\" must be a path string"))),
        }
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
                .map(|v| {
                    Template::parse_within(v, self.limits.intrinsic_nesting_max)
                        .map_err(|e| self.err(Some(state), format!("{key}: {e}")))
                })
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
        // A cycle that avoids every Choice state and every Catch can never be left. (A loop through a Catch ends
        // when the task stops failing, as a loop through a Choice ends when its data changes.)
        let loop_successors: Vec<Vec<StateId>> = graph.states.iter().map(|s| uncaught_successors(&s.kind)).collect();
        let is_choice = |i: StateId| matches!(graph.states[i].kind, StateKind::Choice { .. });
        let mut color = vec![0u8; n]; // 0 new, 1 on stack, 2 done
        for root in 0..n {
            if is_choice(root) || color[root] != 0 {
                continue;
            }
            let mut stack: Vec<(StateId, usize)> = vec![(root, 0)];
            color[root] = 1;
            while let Some((i, edge)) = stack.pop() {
                match loop_successors[i].get(edge) {
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
    let caught = |r: &Recovery| r.catch.iter().map(|c| c.next).collect::<Vec<_>>();
    match kind {
        StateKind::Task { next: n, recovery, .. }
        | StateKind::Parallel { next: n, recovery, .. }
        | StateKind::Map { next: n, recovery, .. } => [next(n), caught(recovery)].concat(),
        StateKind::Pass { next: n, .. } | StateKind::Wait { next: n, .. } => next(n),
        StateKind::Choice { rules, default, .. } => rules.iter().map(|(_, t)| *t).chain(*default).collect(),
        StateKind::Succeed { .. } | StateKind::Fail { .. } => vec![],
    }
}

/// The successors of a state other than its catchers' targets.
fn uncaught_successors(kind: &StateKind) -> Vec<StateId> {
    match kind {
        StateKind::Task { next, .. } | StateKind::Parallel { next, .. } | StateKind::Map { next, .. } => match next {
            Next::State(s) => vec![*s],
            Next::End => vec![],
        },
        other => successors(other),
    }
}

fn is_terminal(kind: &StateKind) -> bool {
    match kind {
        StateKind::Task { next, .. }
        | StateKind::Pass { next, .. }
        | StateKind::Parallel { next, .. }
        | StateKind::Map { next, .. }
        | StateKind::Wait { next, .. } => *next == Next::End,
        StateKind::Succeed { .. } | StateKind::Fail { .. } => true,
        StateKind::Choice { .. } => false,
    }
}

/// An `ErrorEquals` list: non-empty strings; `States.ALL` alone, and only in the last retrier or catcher.
fn error_equals(obj: &Map<String, Value>, last: bool) -> Result<ErrorEquals, String> {
    let list = obj
        .get("ErrorEquals")
        .ok_or("needs \"ErrorEquals\"")?
        .as_array()
        .ok_or("\"ErrorEquals\" must be an array of error names")?;
    if list.is_empty() {
        return Err("\"ErrorEquals\" is empty".into());
    }
    let names: Vec<String> = list
        .iter()
        .map(|v| v.as_str().filter(|s| !s.is_empty()).map(str::to_string))
        .collect::<Option<_>>()
        .ok_or("\"ErrorEquals\" must hold non-empty strings")?;
    if names.iter().any(|n| n == "States.ALL") {
        if names.len() > 1 {
            return Err("\"States.ALL\" must appear alone in its ErrorEquals".into());
        }
        if !last {
            return Err("the entry with \"States.ALL\" must be the last one".into());
        }
    }
    Ok(ErrorEquals(names))
}

/// An RFC 3339 timestamp (as ASL's `Timestamp`), in milliseconds since the Unix epoch.
pub fn parse_timestamp(text: &str) -> Result<i64, String> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("\"{text}\" is not an RFC 3339 timestamp such as 2026-03-14T01:59:00Z ({e})"))?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}
