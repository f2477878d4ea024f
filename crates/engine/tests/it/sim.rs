//! A deterministic world for the engine: functions are scripts of storage accesses and calls, executed one
//! step per event; the store is a map; every action is executed at once.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use engine::{Action, Call, Catalog, Completion, Config, Event, FunctionInfo, NoOracle, Outcome, Reply, RunId, Status};
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
}

type Script = Arc<dyn Fn(&Value) -> Vec<Op>>;

struct Active {
    function: String,
    ops: VecDeque<Op>,
    replies: Vec<Value>,
}

#[derive(Default)]
pub struct Sim {
    functions: HashMap<String, Script>,
    store: BTreeMap<String, Value>,
    launches: Vec<String>,
    commits: usize,
    reads: Vec<(String, Value)>,
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

    pub fn launches(&self) -> Vec<String> {
        self.launches.clone()
    }

    pub fn commits(&self) -> usize {
        self.commits
    }

    pub fn store_value(&self, key: &str) -> Option<Value> {
        self.store.get(key).cloned()
    }

    /// Values the function's `Get`s returned, in order.
    pub fn reads_seen_by(&self, function: &str) -> Vec<Value> {
        self.reads.iter().filter(|(f, _)| f == function).map(|(_, v)| v.clone()).collect()
    }

    pub fn run(&mut self, app: model::Application, input: Value, config: Config) -> Completion {
        self.launches.clear();
        self.commits = 0;
        self.reads.clear();
        let catalog = Catalog {
            functions: self
                .functions
                .keys()
                .map(|f| (f.clone(), FunctionInfo { version: "v".into(), annotations: Default::default() }))
                .collect(),
        };
        let mut engine = engine::engine(Arc::new(app), Arc::new(catalog), config, Arc::new(NoOracle));
        let mut active: HashMap<RunId, Active> = HashMap::new();
        let mut pending: HashMap<u64, String> = HashMap::new();
        let mut events = VecDeque::from([Event::Start { input }]);
        let mut next_request = 0u64;
        while let Some(event) = events.pop_front() {
            for action in engine.step(event) {
                match action {
                    Action::Launch { run, function, input, .. } => {
                        self.launches.push(function.clone());
                        let ops = (self.functions[&function])(&input).into();
                        active.insert(run, Active { function, ops, replies: Vec::new() });
                        events.push_back(self.next_op(run, &mut active, &mut next_request, &mut pending));
                    }
                    Action::Reply { run, request, reply } => {
                        let Some(a) = active.get_mut(&run) else {
                            continue;
                        };
                        let value = match reply {
                            Reply::Ok(v) => v,
                            Reply::Refused(m) => json!({ "refused": m }),
                            Reply::FunctionFailed(e) => json!({ "failed": e }),
                        };
                        if pending.remove(&request).is_some() {
                            self.reads.push((a.function.clone(), value.clone()));
                        }
                        a.replies.push(value);
                        events.push_back(self.next_op(run, &mut active, &mut next_request, &mut pending));
                    }
                    Action::ReadStore { run, request, key } => {
                        let value = self.store.get(&key).cloned();
                        events.push_back(Event::StoreRead { run, request, value, version: 0 });
                    }
                    Action::Commit { run, writes, .. } => {
                        self.commits += 1;
                        for (k, v) in writes {
                            match v {
                                Some(v) => self.store.insert(k, v),
                                None => self.store.remove(&k),
                            };
                        }
                        events.push_back(Event::Committed { run });
                    }
                    Action::Effect { .. } => panic!("scripted functions perform no effects"),
                    Action::Kill { run, .. } => {
                        active.remove(&run);
                    }
                    Action::Complete(c) => {
                        assert!(engine.is_done());
                        return c;
                    }
                }
            }
        }
        panic!("the engine stopped without completing");
    }

    fn next_op(
        &self,
        run: RunId,
        active: &mut HashMap<RunId, Active>,
        next_request: &mut u64,
        pending: &mut HashMap<u64, String>,
    ) -> Event {
        let a = active.get_mut(&run).expect("active run");
        *next_request += 1;
        let request = *next_request;
        let call = |call| Event::Call { run, request, call };
        match a.ops.pop_front().expect("scripts end with Return or Fail") {
            Op::Get(key) => {
                pending.insert(request, key.into());
                call(Call::Get { key: key.into() })
            }
            Op::Put(key, value) => call(Call::Put { key: key.into(), value }),
            Op::Invoke(function, args) => call(Call::Invoke { function: function.into(), args }),
            Op::Return(v) => Event::Finished { run, outcome: Outcome::Success(v) },
            Op::ReturnReplies => Event::Finished { run, outcome: Outcome::Success(json!({ "replies": a.replies })) },
            Op::Fail(status, error) => Event::Finished { run, outcome: Outcome::Failure { status, error } },
        }
    }
}
