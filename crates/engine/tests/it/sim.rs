//! Scripted functions for the engine's harness: each function is a script of storage accesses and calls, run in
//! the harness's eager schedule (one step per event, commits landing at once), like a sequential driver.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use engine::harness::{Function, Observed, Schedule, Step, World, reply_value};
use engine::{Call, Completion, Config, ErrorName, Failure, Oracle, Outcome, Reply, Status};
use serde_json::{Value, json};

#[derive(Clone)]
pub enum Op {
    Get(&'static str),
    Put(&'static str, Value),
    Invoke(&'static str, Value),
    Return(Value),
    /// Returns `{"replies": [...]}`: every reply so far (`{"refused": m}` / `{"failed": e}` for errors).
    ReturnReplies,
    Fail(Status, Value),
    /// Ends as the platform reports a function that ran past its timeout.
    TimeOut,
}

type Script = Arc<dyn Fn(&Value) -> Vec<Op>>;

struct Scripted {
    ops: VecDeque<Op>,
    replies: Vec<Value>,
}

impl Function for Scripted {
    fn next(&mut self, reply: Option<Reply>) -> Step {
        if let Some(reply) = reply {
            self.replies.push(reply_value(&reply));
        }
        match self.ops.pop_front().expect("scripts end with Return or Fail") {
            Op::Get(key) => Step::Call(Call::Get { key: key.into() }),
            Op::Put(key, value) => Step::Call(Call::Put { key: key.into(), value }),
            Op::Invoke(function, args) => Step::Call(Call::Invoke { function: function.into(), args }),
            Op::Return(v) => Step::Finish(Outcome::Success(v)),
            Op::ReturnReplies => Step::Finish(Outcome::Success(json!({ "replies": self.replies }))),
            Op::Fail(status, error) => Step::Finish(Outcome::failed(status, error)),
            Op::TimeOut => Step::Finish(Outcome::Failure(Failure::new(
                Status::DeveloperError,
                ErrorName::Timeout,
                json!("The action exceeded its time limits of 10 milliseconds."),
            ))),
        }
    }
}

#[derive(Default)]
pub struct Sim {
    functions: HashMap<String, Script>,
    store: BTreeMap<String, (Value, u64)>,
    last: Option<Observed>,
}

impl Sim {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn func(&mut self, name: &str, script: impl Fn(&Value) -> Vec<Op> + 'static) {
        self.functions.insert(name.into(), Arc::new(script));
    }

    pub fn has(&self, name: &str) -> bool {
        self.functions.contains_key(name)
    }

    fn last(&self) -> &Observed {
        self.last.as_ref().expect("an invocation ran")
    }

    pub fn launches(&self) -> Vec<String> {
        self.last().launches.clone()
    }

    pub fn commits(&self) -> usize {
        self.last().commits.len()
    }

    pub fn store_value(&self, key: &str) -> Option<Value> {
        self.store.get(key).map(|(v, _)| v.clone())
    }

    /// Values the function's reads and calls returned, in order.
    pub fn reads_seen_by(&self, function: &str) -> Vec<Value> {
        self.last().answers.iter().filter(|(f, _)| f == function).flat_map(|(_, v)| v.clone()).collect()
    }

    pub fn run(&mut self, app: model::Application, input: Value, config: Config) -> Completion {
        self.run_with(Arc::new(app), input, config, Oracle::nothing(), Schedule::Eager).completion
    }

    /// Runs with a given oracle and schedule; returns everything observed.
    pub fn run_with(
        &mut self,
        app: Arc<model::Application>,
        input: Value,
        config: Config,
        oracle: Oracle,
        schedule: Schedule,
    ) -> Observed {
        let catalog = engine::harness::catalog(self.functions.keys().map(String::as_str), "v");
        let mut world = World::new(std::mem::take(&mut self.store), schedule);
        let functions = &self.functions;
        let make = |name: &str, input: &Value| -> Box<dyn Function> {
            Box::new(Scripted { ops: (functions[name])(input).into(), replies: Vec::new() })
        };
        let observed = world.run(app, catalog, config, oracle, &make, input);
        self.store = world.store;
        self.last = Some(observed.clone());
        observed
    }
}
