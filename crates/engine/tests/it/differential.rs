//! Differential tests (RELIABILITY.md S1, S2, S5, S6): speculative execution against the sequential reference.
//!
//! A seeded generator builds random workflows (sequences, `Choice`, `Parallel`, `Map`, `Wait`, `Retry` and
//! `Catch`) of random functions that read, compute on and write a small set of keys, plus random inputs and
//! initial stores. Each case runs a few invocations three times: strictly sequentially (speculation off, branches
//! and iterations one after another: the reference), with speculation off but branches and iterations concurrent
//! (the baseline), and with speculation on, each under a random interleaving of the running functions; the
//! speculative run uses one of several oracles: a learning one, one whose branch predictions are always wrong, a
//! random one, and memo tables seeded with wrong outputs. Results, final stores and the sequence of committed
//! write sets must be identical: every mode commits in program order (branch 0 before branch 1, iteration 0
//! before iteration 1). Every failure prints its seed; rerun one case with
//! `SPECFAAS_SEED=<seed>`, or more cases with `SPECFAAS_CASES=<n>`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use engine::harness::{self, Function, Rng, Schedule, Step};
use engine::oracle::{BranchPredictor, Called, CalleePredictor, DependencePredictor, Guess, Memo};
use engine::tables::{self, BranchTable, CalleeTable, MemoTable, Sizes};
use engine::{Call, Catalog, Cause, Config, FanOut, FunctionInfo, Oracle, Outcome, Reply, Status};
use model::Annotations;
use serde_json::{Value, json};

const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];

/// A generated function: reads some keys, writes some, returns `{"x": .., "b": ..}` computed from its input's `x`
/// and what it read. Small moduli make outputs repeat, so memo tables hit.
#[derive(Clone, Debug)]
pub struct FnDef {
    pub name: String,
    pub reads: Vec<usize>,
    pub writes: Vec<usize>,
    pub modulus: i64,
    pub salt: i64,
    /// Fails (application error) when its output `x` equals this.
    pub fail_on: Option<i64>,
    pub pure: bool,
    /// Writes one value to every key it writes (so those keys always agree when it is done).
    pub uniform: bool,
    /// Performs an external effect (after its reads, before its writes), whose result it folds into its output.
    pub effect: bool,
    /// Functions it calls, by index, after its effect and before its writes, with arguments computed from its
    /// input and what it read; the results are folded in like reads.
    pub calls: Vec<usize>,
}

impl FnDef {
    /// A function that reads `reads` and writes `writes` (indices into the keys), with nothing else special.
    pub fn plain(name: &str, reads: Vec<usize>, writes: Vec<usize>, modulus: i64, salt: i64) -> FnDef {
        FnDef {
            name: name.into(),
            reads,
            writes,
            modulus,
            salt,
            fail_on: None,
            pure: false,
            uniform: false,
            effect: false,
            calls: vec![],
        }
    }
}

fn mix(a: i64, b: i64) -> i64 {
    (a.wrapping_mul(31).wrapping_add(b).wrapping_mul(0x5bd1e995)).rem_euclid(1_000_003)
}

impl FnDef {
    fn value_of(v: &Value) -> i64 {
        v.as_i64().or_else(|| v["n"].as_i64()).or_else(|| v["x"].as_i64()).unwrap_or(0)
    }

    /// The output for an input `x` and the values read; `None` means the function fails.
    fn output(&self, x: i64, read: &[Value]) -> Result<Value, Value> {
        let acc = read.iter().fold(mix(self.salt, x), |a, v| mix(a, Self::value_of(v)));
        let out = acc.rem_euclid(self.modulus);
        if self.fail_on == Some(out) {
            return Err(json!(format!("{} refused {out}", self.name)));
        }
        Ok(json!({"x": out, "b": acc % 2 == 0}))
    }

    fn written(&self, x: i64, read: &[Value], i: usize) -> Value {
        let acc = read.iter().fold(mix(self.salt + 7, x), |a, v| mix(a, Self::value_of(v)));
        let i = if self.uniform { 0 } else { i as i64 };
        json!(mix(acc, i).rem_euclid(5))
    }
}

pub struct Case {
    pub functions: Vec<FnDef>,
    /// The ASL workflow, or `null` for an implicit chain entered at `f0`.
    pub workflow: Value,
    pub store: BTreeMap<String, Value>,
    pub inputs: Vec<Value>,
}

fn gen_function(rng: &mut Rng, i: usize) -> FnDef {
    let pure = rng.chance(25);
    let pick =
        |rng: &mut Rng, n: u64| (0..rng.below(n)).map(|_| rng.below(KEYS.len() as u64) as usize).collect::<Vec<_>>();
    FnDef {
        name: format!("f{i}"),
        reads: if pure { vec![] } else { pick(rng, 3) },
        writes: if pure { vec![] } else { pick(rng, 3) },
        modulus: 2 + rng.below(3) as i64,
        salt: rng.below(1000) as i64,
        fail_on: (rng.chance(10)).then(|| rng.below(4) as i64),
        pure,
        uniform: false,
        effect: !pure && rng.chance(30),
        calls: vec![],
    }
}

/// A random workflow over `functions`: a chain of steps, where a step is a Task (replacing the state, or keeping
/// its result beside it in `$.r`, or fed only `$.x`), a Choice on `$.x`, `$.b`, `$.r.x` or `$.r.b` that may skip
/// ahead, or a Parallel of short branches. Every state stays reachable and the graph is acyclic. Inputs carry `r`,
/// so every path a Choice reads exists.
fn gen_workflow(rng: &mut Rng, functions: &[FnDef]) -> Value {
    let n = 2 + rng.below(7) as usize;
    let name = |i: usize| format!("S{i}");
    let fname = |rng: &mut Rng| functions[rng.below(functions.len() as u64) as usize].name.clone();
    let task = |rng: &mut Rng| match rng.below(4) {
        0 => json!({"Type": "Task", "Resource": fname(rng)}),
        1 | 2 => json!({"Type": "Task", "Resource": fname(rng), "ResultPath": "$.r"}),
        _ => json!({"Type": "Task", "Resource": fname(rng), "Parameters": {"x.$": "$.x", "r": {"x": 0, "b": false}},
                    "ResultPath": "$.r"}),
    };
    let mut states = serde_json::Map::new();
    let mut uses_out = false;
    for i in 0..n {
        let next = if i + 1 == n { json!({"End": true}) } else { json!({"Next": name(i + 1)}) };
        let mut state = match rng.below(14) {
            0..=4 => task(rng),
            5 => {
                // A task that may fail, retried and then caught.
                let mut t = task(rng);
                if rng.chance(50) {
                    t["Retry"] = json!([{"ErrorEquals": ["States.TaskFailed"], "IntervalSeconds": 1,
                                         "MaxAttempts": 1 + rng.below(2)}]);
                }
                let to = if i + 1 < n { name(i + 1) } else { "Out".to_string() };
                uses_out |= to == "Out";
                t["Catch"] = json!([{"ErrorEquals": ["States.ALL"], "ResultPath": "$.err", "Next": to}]);
                t
            }
            10 => json!({"Type": "Wait", "Seconds": rng.below(2)}),
            11 | 12 => {
                let a = fname(rng);
                let processor = if rng.chance(30) {
                    // A wait inside each iteration, and a Fail on some data: the Map fails, and its Catch takes it.
                    json!({"StartAt": "W", "States": {
                        "W": {"Type": "Wait", "Seconds": 1, "Next": "C"},
                        "C": {"Type": "Choice", "Choices": [{"Variable": "$.x", "NumericEquals": 2, "Next": "F"}],
                              "Default": "A"},
                        "F": {"Type": "Fail", "Error": "Two", "Cause": "item 2"},
                        "A": {"Type": "Task", "Resource": a, "End": true}}})
                } else if rng.chance(50) {
                    json!({"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": a, "End": true}}})
                } else {
                    let b = fname(rng);
                    json!({"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": a, "Next": "B"},
                                                      "B": {"Type": "Task", "Resource": b, "End": true}}})
                };
                let mut map = json!({"Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": rng.below(3),
                       "ItemSelector": {"x.$": "$$.Map.Item.Value", "i.$": "$$.Map.Item.Index"},
                       "ItemProcessor": processor, "ResultPath": "$.map"});
                if rng.chance(40) {
                    let to = if i + 1 < n { name(i + 1) } else { "Out".to_string() };
                    uses_out |= to == "Out";
                    if rng.chance(50) {
                        map["Retry"] = json!([{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 1, "MaxAttempts": 1}]);
                    }
                    map["Catch"] = json!([{"ErrorEquals": ["States.ALL"], "ResultPath": "$.merr", "Next": to}]);
                }
                map
            }
            6 | 7 if i + 1 < n => {
                let target = if i + 2 < n && rng.chance(50) { name(i + 2) } else { "Out".to_string() };
                uses_out |= target == "Out";
                let variable = ["$.x", "$.r.x", "$.b", "$.r.b"][rng.below(4) as usize];
                let rule = if variable.ends_with('x') {
                    json!({"Variable": variable, "NumericEquals": rng.below(3), "Next": target})
                } else {
                    json!({"Variable": variable, "BooleanEquals": true, "Next": target})
                };
                states.insert(name(i), json!({"Type": "Choice", "Choices": [rule], "Default": name(i + 1)}));
                continue;
            }
            8 => {
                let branch = |rng: &mut Rng| {
                    let a = fname(rng);
                    if rng.chance(50) {
                        json!({"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": a, "End": true}}})
                    } else {
                        let b = fname(rng);
                        json!({"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": a, "Next": "B"},
                                                          "B": {"Type": "Task", "Resource": b, "End": true}}})
                    }
                };
                let branches = vec![branch(rng), branch(rng)];
                json!({"Type": "Parallel", "Branches": branches, "ResultPath": "$.par"})
            }
            _ => task(rng),
        };
        let obj = state.as_object_mut().unwrap();
        for (k, v) in next.as_object().unwrap() {
            obj.insert(k.clone(), v.clone());
        }
        states.insert(name(i), state);
    }
    if uses_out {
        states.insert("Out".into(), json!({"Type": "Task", "Resource": fname(rng), "End": true}));
    }
    json!({"StartAt": name(0), "States": states})
}

pub fn gen_case(seed: u64) -> Case {
    if seed.is_multiple_of(3) {
        return gen_implicit_case(seed);
    }
    let mut rng = Rng::new(seed);
    let functions: Vec<FnDef> = (0..2 + rng.below(4) as usize).map(|i| gen_function(&mut rng, i)).collect();
    let workflow = gen_workflow(&mut rng, &functions);
    let mut store = BTreeMap::new();
    for k in KEYS {
        if rng.chance(70) {
            store.insert(k.to_string(), json!(rng.below(5)));
        }
    }
    // Few distinct inputs, so later invocations repeat earlier ones and the memo tables hit.
    let inputs = (0..3)
        .map(|_| {
            let items: Vec<u64> = (0..rng.below(5)).map(|_| rng.below(3)).collect();
            json!({"x": rng.below(2), "b": false, "r": {"x": 0, "b": false}, "items": items})
        })
        .collect();
    Case { functions, workflow, store, inputs }
}

/// An implicit chain: `f0` calls some higher-numbered functions, which call higher-numbered ones in turn (an
/// acyclic call graph), each call's arguments computed from what the caller read so far.
pub fn gen_implicit_case(seed: u64) -> Case {
    let mut rng = Rng::new(seed);
    let n = 2 + rng.below(4) as usize;
    let mut functions: Vec<FnDef> = (0..n).map(|i| gen_function(&mut rng, i)).collect();
    for (i, function) in functions.iter_mut().enumerate() {
        if function.pure {
            continue; // a pure function calls nothing (a call could reach storage)
        }
        let calls = (0..rng.below(3)).filter(|_| i + 1 < n).map(|_| i + 1 + rng.below((n - i - 1) as u64) as usize);
        function.calls = calls.collect();
    }
    let mut store = BTreeMap::new();
    for k in KEYS {
        if rng.chance(70) {
            store.insert(k.to_string(), json!(rng.below(5)));
        }
    }
    let inputs = (0..3).map(|_| json!({"x": rng.below(2)})).collect();
    Case { functions, workflow: Value::Null, store, inputs }
}

// ---------------------------------------------------------------------------------------------------------
// Oracles: each liar replaces one predictor (or more) and learns with the platform's tables for the rest.

/// A branch predictor that always names a wrong target, with certainty (it learns what is right to avoid it).
pub struct AlwaysWrong(pub BranchTable);

impl BranchPredictor for AlwaysWrong {
    fn predict(&self, choice: &str, history: u64, targets: &[usize]) -> Option<(usize, f64)> {
        let learned = self.0.predict(choice, history, targets).map(|(t, _)| t);
        targets.iter().find(|t| Some(**t) != learned).map(|t| (*t, 1.0))
    }
    fn train(&self, choice: &str, history: u64, target: usize) {
        self.0.train(choice, history, target)
    }
}

/// Answers at random: any target with any confidence, memo outputs that are random (often wrong), random callees
/// and random dependences.
pub struct Random(pub Mutex<Rng>);

impl BranchPredictor for Random {
    fn predict(&self, _: &str, _: u64, targets: &[usize]) -> Option<(usize, f64)> {
        let mut rng = self.0.lock().unwrap();
        let t = targets[rng.below(targets.len() as u64) as usize];
        Some((t, rng.below(100) as f64 / 100.0))
    }
    fn train(&self, _: &str, _: u64, _: usize) {}
}

impl Memo for Random {
    fn lookup(&self, _: &str, _: &str, _: &Value) -> Option<Value> {
        let mut rng = self.0.lock().unwrap();
        rng.chance(70).then(|| json!({"x": rng.below(4), "b": rng.chance(50)}))
    }
    /// Partly known outputs: each field a random value or unknown, sometimes another shape.
    fn guess(&self, _: &str, _: &str, _: &Value) -> Option<Guess> {
        let mut rng = self.0.lock().unwrap();
        let values = [json!(rng.below(4)), json!(rng.chance(50)), json!([rng.below(3)])];
        let [x, b, y] = values.map(|v| if rng.chance(50) { Guess::Value(v) } else { Guess::Unknown });
        Some(Guess::Object(vec![("x".into(), x), ("b".into(), b), ("y".into(), y)]))
    }
    fn train(&self, _: &str, _: &str, _: &Value, _: &Value) {}
}

impl CalleePredictor for Random {
    fn predict(&self, _: &str, _: &str, _: &Value) -> Option<Vec<(String, Value)>> {
        let mut rng = self.0.lock().unwrap();
        if rng.chance(50) {
            return None; // then by path, at random too
        }
        let n = rng.below(4);
        Some((0..n).map(|_| (format!("f{}", rng.below(5)), json!({"x": rng.below(3)}))).collect())
    }
    fn next(&self, _: &str, _: &str, _: &Value, earlier: &[Called]) -> Option<(String, Value)> {
        let mut rng = self.0.lock().unwrap();
        (earlier.len() < 4 && rng.chance(60)).then(|| (format!("f{}", rng.below(5)), json!({"x": rng.below(3)})))
    }
    fn train(&self, _: &str, _: &str, _: &Value, _: &[Called]) {}
}

impl DependencePredictor for Random {
    fn streak(&self, _: &str, _: &str, _: &str) -> u32 {
        let mut rng = self.0.lock().unwrap();
        rng.below(5) as u32
    }
    fn train_squash(&self, _: &str, _: &str, _: &str) {}
    fn train_clean_read(&self, _: &str, _: &str) {}
}

/// Memo tables seeded with wrong outputs: every lookup hits, with a value the function does not return.
pub struct WrongMemo(pub MemoTable);

impl Memo for WrongMemo {
    fn lookup(&self, f: &str, v: &str, input: &Value) -> Option<Value> {
        let right = self.0.lookup(f, v, input);
        let x = right.as_ref().and_then(|r| r["x"].as_i64()).unwrap_or(0);
        Some(json!({"x": x + 1, "b": right.is_none()}))
    }
    fn train(&self, f: &str, v: &str, input: &Value, output: &Value) {
        self.0.train(f, v, input, output)
    }
}

/// No memo rows, and every output guessed wrong: the learned guess with every known number off by one, or else a
/// wrong `x` and an unknown `b`.
pub struct WrongGuesses(pub MemoTable);

impl Memo for WrongGuesses {
    fn lookup(&self, _: &str, _: &str, _: &Value) -> Option<Value> {
        None
    }
    fn guess(&self, f: &str, v: &str, input: &Value) -> Option<Guess> {
        fn skew(g: Guess) -> Guess {
            match g {
                Guess::Value(Value::Number(n)) => Guess::Value(json!(n.as_i64().unwrap_or(0) + 1)),
                Guess::Object(fields) => Guess::Object(fields.into_iter().map(|(k, g)| (k, skew(g))).collect()),
                other => other,
            }
        }
        let wrong = || Guess::Object(vec![("x".into(), Guess::Value(json!(7))), ("b".into(), Guess::Unknown)]);
        Some(self.0.guess(f, v, input).map_or_else(wrong, skew))
    }
    fn train(&self, f: &str, v: &str, input: &Value, output: &Value) {
        self.0.train(f, v, input, output)
    }
}

/// The right callees with the wrong arguments: every predicted callee is a mismatch.
pub struct WrongCallees(pub CalleeTable);

impl CalleePredictor for WrongCallees {
    fn predict(&self, f: &str, v: &str, input: &Value) -> Option<Vec<(String, Value)>> {
        let right = self.0.predict(f, v, input)?;
        Some(right.into_iter().map(|(c, a)| (c, json!({"x": a["x"].as_i64().unwrap_or(0) + 1}))).collect())
    }
    fn train(&self, f: &str, v: &str, input: &Value, calls: &[Called]) {
        self.0.train(f, v, input, calls)
    }
}

/// The learned path predictor alone: no exact callee rows, so every early callee is predicted by path.
pub struct PathsOnly(pub CalleeTable);

impl CalleePredictor for PathsOnly {
    fn predict(&self, _: &str, _: &str, _: &Value) -> Option<Vec<(String, Value)>> {
        None
    }
    fn next(&self, f: &str, v: &str, input: &Value, earlier: &[Called]) -> Option<(String, Value)> {
        self.0.next(f, v, input, earlier)
    }
    fn train(&self, f: &str, v: &str, input: &Value, calls: &[Called]) {
        self.0.train(f, v, input, calls)
    }
}

/// Paths that lie: where the learned path predictor has a call, half the time its arguments have a field that lies,
/// half the time another callee is named (the wrong path); where it has none, a call the function never makes.
pub struct WrongPaths(pub CalleeTable);

impl CalleePredictor for WrongPaths {
    fn predict(&self, _: &str, _: &str, _: &Value) -> Option<Vec<(String, Value)>> {
        None
    }
    fn next(&self, f: &str, v: &str, input: &Value, earlier: &[Called]) -> Option<(String, Value)> {
        match self.0.next(f, v, input, earlier) {
            Some((callee, args)) if earlier.len().is_multiple_of(2) => {
                Some((callee, json!({"x": args["x"].as_i64().unwrap_or(0) + 1})))
            }
            Some((callee, args)) => {
                let n: u64 = callee.trim_start_matches('f').parse().unwrap_or(0);
                Some((format!("f{}", (n + 1) % 3), args))
            }
            None => (earlier.len() < 2).then(|| ("f0".to_string(), json!({"x": earlier.len()}))),
        }
    }
    fn train(&self, f: &str, v: &str, input: &Value, calls: &[Called]) {
        self.0.train(f, v, input, calls)
    }
}

// ---------------------------------------------------------------------------------------------------------
// The world: the engine's harness, running generated functions in an order the seed picks.

/// A running generated function: reads, its effect, its calls, its writes, then its result.
struct Running {
    def: FnDef,
    x: i64,
    /// Values read so far (replies to reads, calls and the effect).
    read: Vec<Value>,
    /// Next step.
    step: usize,
    /// The last call's reply is a value it reads.
    reading: bool,
}

impl Function for Running {
    fn next(&mut self, reply: Option<Reply>) -> Step {
        if let Some(reply) = reply {
            match reply {
                Reply::Ok(v) if self.reading => self.read.push(v),
                Reply::Ok(_) => {}
                // A failed callee is a value the caller goes on with, the same in every execution.
                Reply::FunctionFailed(_) if self.reading => self.read.push(json!(-1)),
                // A refused call (a limit) is a value too; sequential runs meet the same limits.
                Reply::Refused(_) if self.reading => self.read.push(json!(-2)),
                other => panic!("unexpected reply {other:?}"),
            }
        }
        let a = self;
        let (nr, nw) = (a.def.reads.len() + a.def.effect as usize + a.def.calls.len(), a.def.writes.len());
        let first_call = a.def.reads.len() + a.def.effect as usize;
        a.reading = a.step < nr;
        let call = if a.step >= first_call && a.step < nr {
            let callee = format!("f{}", a.def.calls[a.step - first_call]);
            // Arguments as real code makes them: the caller's own input, a field of what it read or a call returned
            // last (which the path predictor can learn), or a value computed from everything it read (which it
            // cannot).
            let x = match a.def.salt.rem_euclid(3) {
                0 => a.x,
                1 => a.read.last().map_or(a.x, FnDef::value_of),
                _ => a.read.iter().fold(mix(a.def.salt + 11, a.x), |h, v| mix(h, FnDef::value_of(v))).rem_euclid(3),
            };
            Call::Invoke { function: callee, args: json!({"x": x}) }
        } else if a.def.effect && a.step == first_call - 1 {
            // A POST: an unsafe method, held while speculative (a GET may run speculatively).
            Call::Http { request: json!({"method": "POST", "from": a.def.name, "x": a.x, "read": a.read}) }
        } else if a.step < a.def.reads.len() {
            Call::Get { key: KEYS[a.def.reads[a.step]].to_string() }
        } else if a.step < nr + nw {
            let i = a.step - nr;
            Call::Put { key: KEYS[a.def.writes[i]].to_string(), value: a.def.written(a.x, &a.read, i) }
        } else {
            return Step::Finish(match a.def.output(a.x, &a.read) {
                Ok(v) => Outcome::Success(v),
                Err(e) => {
                    // Half the functions return their error, half crash: speculation treats the two apart.
                    let status = if a.def.salt % 2 == 0 { Status::ApplicationError } else { Status::DeveloperError };
                    Outcome::failed(status, e)
                }
            });
        };
        a.step += 1;
        Step::Call(call)
    }
}

/// One commit's writes: key → value, `None` for a delete.
pub type WriteSet = harness::WriteSet;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Observed {
    pub status: Option<Status>,
    pub result: Value,
    pub store: BTreeMap<String, Value>,
    /// Non-empty committed write sets, in commit order, with the committing function.
    pub commits: Vec<(String, WriteSet)>,
    /// Effects performed, in order (S4: exactly those of the sequential execution, never from a squashed run).
    pub effects: Vec<Call>,
}

#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub squashes: BTreeMap<Cause, u32>,
    pub memo_hits: u32,
    pub field_guesses: u32,
    pub skipped: u32,
    pub speculative_launches: u32,
    pub branch_predictions: u32,
    pub effects_suspended: u32,
    pub callees_predicted: u32,
    pub callees_used: u32,
    pub callees_predicted_path: u32,
    pub callees_used_path: u32,
    /// Runs promoted while they ran, and runs settled at their commit (the harness checks when each may happen).
    pub promoted: usize,
    pub settled: usize,
    pub discarded: usize,
    /// The most runs in flight at once with speculation off (branches and iterations run concurrently).
    pub max_active_off: usize,
}

pub struct World {
    /// Every value every run read, squashed runs included: (function, values in read order).
    pub reads_log: Vec<(String, Vec<Value>)>,
    /// The most runs that were in flight at once.
    pub max_active: usize,
    pub defs: HashMap<String, FnDef>,
    /// Whether functions keep their `pure` annotation. A pure function's memoized output is trusted, not checked,
    /// so that is only sound with memo tables trained on committed outputs: off for the lying oracles.
    pub trust_pure: bool,
    pub world: harness::World,
}

impl World {
    /// A world with these functions and this committed store, scheduling from `seed`.
    pub fn new(defs: HashMap<String, FnDef>, store: BTreeMap<String, (Value, u64)>, seed: u64) -> World {
        World {
            reads_log: Vec::new(),
            max_active: 0,
            defs,
            trust_pure: true,
            world: harness::World::new(store, Schedule::Seeded(Rng::new(seed))),
        }
    }

    pub fn run(
        &mut self,
        app: &Arc<model::Application>,
        input: Value,
        config: Config,
        oracle: Oracle,
        observed: &mut Observed,
        counters: &mut Counters,
    ) {
        let catalog = Catalog {
            functions: self
                .defs
                .iter()
                .map(|(n, d)| {
                    let annotations = Annotations { pure: d.pure && self.trust_pure, ..Default::default() };
                    (n.clone(), FunctionInfo { version: "v1".into(), annotations })
                })
                .collect(),
        };
        let defs = &self.defs;
        let make = |name: &str, input: &Value| -> Box<dyn Function> {
            let x = input["x"].as_i64().unwrap_or(0);
            Box::new(Running { def: defs[name].clone(), x, read: Vec::new(), step: 0, reading: false })
        };
        let seen = self.world.run(app.clone(), Arc::new(catalog), config, oracle, &make, input);
        self.max_active = self.max_active.max(seen.max_active);
        self.reads_log.extend(seen.answers);
        counters.promoted += seen.promoted;
        counters.settled += seen.settled;
        counters.discarded += seen.discarded;
        let c = seen.completion;
        observed.status = Some(c.status);
        observed.result = c.result;
        observed.store = self.world.store.iter().map(|(k, (v, _))| (k.clone(), v.clone())).collect();
        observed.commits.extend(seen.commits.into_iter().filter(|(_, w)| !w.is_empty()));
        observed.effects.extend(seen.effects);
        for (cause, n) in c.stats.squashes {
            *counters.squashes.entry(cause).or_insert(0) += n;
        }
        counters.memo_hits += c.stats.memo_hits;
        counters.field_guesses += c.stats.field_guesses;
        counters.skipped += c.stats.skipped;
        counters.speculative_launches += c.stats.speculative_launches;
        counters.branch_predictions += c.stats.branch_predictions;
        counters.effects_suspended += c.stats.effects_suspended;
        counters.callees_predicted += c.stats.callees_predicted;
        counters.callees_used += c.stats.callees_used;
        counters.callees_predicted_path += c.stats.callees_predicted_path;
        counters.callees_used_path += c.stats.callees_used_path;
    }
}

pub fn oracle_named(name: &str, seed: u64) -> Oracle {
    let sizes = Sizes::default();
    let mut oracle = tables::learning(sizes);
    match name {
        "learning" => {}
        "always-wrong" => oracle.branches = Arc::new(AlwaysWrong(BranchTable::new(sizes.branch_entries))),
        "random" => {
            let random = Arc::new(Random(Mutex::new(Rng::new(seed ^ 0xabcdef))));
            oracle =
                Oracle { branches: random.clone(), memo: random.clone(), callees: random.clone(), dependences: random };
        }
        "wrong-memo" => {
            oracle.memo = Arc::new(WrongMemo(MemoTable::new(sizes.memo_entries)));
            oracle.callees = Arc::new(WrongCallees(CalleeTable::new(sizes.callee_entries)));
        }
        "wrong-guesses" => oracle.memo = Arc::new(WrongGuesses(MemoTable::new(sizes.memo_entries))),
        "paths" => oracle.callees = Arc::new(PathsOnly(CalleeTable::new(sizes.callee_entries))),
        "wrong-paths" => oracle.callees = Arc::new(WrongPaths(CalleeTable::new(sizes.callee_entries))),
        other => panic!("no oracle {other}"),
    }
    oracle
}

pub const ORACLES: [&str; 7] =
    ["learning", "always-wrong", "random", "wrong-memo", "wrong-guesses", "paths", "wrong-paths"];

/// Runs one case: the sequential reference, then speculation under `oracle`, invocation by invocation.
pub fn check_case(seed: u64, oracle: &str, counters: &mut Counters) {
    let case = gen_case(seed);
    let defs: HashMap<String, FnDef> = case.functions.iter().map(|f| (f.name.clone(), f.clone())).collect();
    let app = if case.workflow.is_null() {
        Arc::new(model::Application::function("case", "f0", &|f| defs.contains_key(f)).unwrap())
    } else {
        let graph = model::asl::parse("case.json", &case.workflow.to_string(), &|f| defs.contains_key(f))
            .unwrap_or_else(|e| panic!("seed {seed}: generated workflow is invalid: {e}\n{}", case.workflow));
        Arc::new(model::Application::workflow("case", graph).unwrap())
    };
    let initial: BTreeMap<String, (Value, u64)> = case.store.iter().map(|(k, v)| (k.clone(), (v.clone(), 1))).collect();
    let mut rng = Rng::new(seed ^ 0x5eed);
    let trust_pure = matches!(oracle, "learning" | "always-wrong");
    let world = |defs, store, seed| World { trust_pure, ..World::new(defs, store, seed) };
    let mut reference = world(defs.clone(), initial.clone(), seed);
    let mut baseline = world(defs.clone(), initial.clone(), seed ^ 0xba5e);
    let mut speculative = world(defs, initial, seed ^ 0xfeed);
    let sequential = Config { speculation: false, fan_out: FanOut::Sequential, ..Config::default() };
    let off = Config { speculation: false, ..Config::default() };
    let on = Config { depth_max: 1 + rng.below(8) as u32, budget: 8 + rng.below(64) as u32, ..Config::default() };
    let oracle_off = oracle_named("learning", seed);
    let oracle_on = oracle_named(oracle, seed);
    for (i, input) in case.inputs.iter().enumerate() {
        let mut want = Observed::default();
        reference.run(&app, input.clone(), sequential, oracle_off.clone(), &mut want, &mut Counters::default());
        let mut concurrent = Observed::default();
        baseline.run(&app, input.clone(), off, oracle_off.clone(), &mut concurrent, &mut Counters::default());
        assert_eq!(
            concurrent, want,
            "seed {seed}, invocation {i}: concurrent branches without speculation differ from the sequential \
             reference\nworkflow: {}\nfunctions: {:#?}",
            case.workflow, case.functions
        );
        counters.max_active_off = counters.max_active_off.max(baseline.max_active);
        let mut got = Observed::default();
        speculative.run(&app, input.clone(), on, oracle_on.clone(), &mut got, counters);
        assert_eq!(
            got, want,
            "seed {seed}, oracle {oracle}, invocation {i}, depth {}: speculation differs from the sequential reference\n\
             workflow: {}\nfunctions: {:#?}",
            on.depth_max, case.workflow, case.functions
        );
    }
}

fn cases() -> Vec<u64> {
    if let Ok(seed) = std::env::var("SPECFAAS_SEED") {
        return vec![seed.parse().expect("SPECFAAS_SEED is a number")];
    }
    let n: u64 = std::env::var("SPECFAAS_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(1000);
    (1..=n).collect()
}

#[test]
fn speculation_equals_the_sequential_reference_under_every_oracle() {
    let mut counters = Counters::default();
    for seed in cases() {
        for oracle in ORACLES {
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check_case(seed, oracle, &mut counters)));
            if let Err(e) = result {
                let msg =
                    e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
                panic!(
                    "seed {seed}, oracle {oracle} failed (rerun with SPECFAAS_SEED={seed}): {}",
                    msg.unwrap_or_default()
                );
            }
        }
    }
    eprintln!("differential counters: {counters:?}");
    // Speculation must actually have happened, and been wrong sometimes, or this test proves nothing.
    if std::env::var("SPECFAAS_SEED").is_err() {
        assert!(counters.speculative_launches > 1000, "{counters:?}");
        assert!(counters.max_active_off > 1, "branches never ran concurrently without speculation: {counters:?}");
        assert!(counters.memo_hits > 100, "{counters:?}");
        assert!(counters.field_guesses > 100, "outputs were never guessed field by field: {counters:?}");
        assert!(counters.skipped > 0, "{counters:?}");
        assert!(counters.branch_predictions > 0, "{counters:?}");
        assert!(counters.callees_used_path > 0, "no callee predicted by path was ever used: {counters:?}");
        assert!(counters.promoted > 0, "no speculative run was ever promoted while it ran: {counters:?}");
        assert!(counters.settled > 0, "no speculative run was ever settled: {counters:?}");
        assert!(counters.discarded > 0, "no finished speculative run was ever discarded: {counters:?}");
        assert!(
            counters.callees_predicted_path > counters.callees_used_path,
            "no callee predicted by path was ever wrong: {counters:?}"
        );
        assert!(
            counters.effects_suspended > 0,
            "no effect ever waited for its run to be non-speculative: {counters:?}"
        );
        for cause in
            [Cause::ControlMispredict, Cause::MemoMismatch, Cause::RawViolation, Cause::Opacity, Cause::UncalledCallee]
        {
            assert!(counters.squashes.get(&cause).copied().unwrap_or(0) > 0, "no {cause:?} squash: {counters:?}");
        }
    }
}

/// S3: `a` writes `k0` and then `k1`, always the same value to both; `b`, launched speculatively while `a` runs,
/// reads `k0` and `k1`. In a sequential execution `b` always sees them equal. Under speculation no run of `b`, not
/// even one that is later squashed, may see them differ: a speculative function never observes a state no
/// sequential execution produces. (A `b` that saw them differ would, in a real function, trap or loop.)
#[test]
fn opacity_a_speculative_function_never_sees_half_of_an_older_functions_writes() {
    let a = FnDef { uniform: true, ..FnDef::plain("a", vec![2], vec![0, 1], 3, 1) };
    let b = FnDef::plain("b", vec![0, 1], vec![], 3, 2);
    let workflow = json!({"StartAt": "A", "States": {
        "A": {"Type": "Task", "Resource": "a", "ResultPath": null, "Next": "B"},
        "B": {"Type": "Task", "Resource": "b", "End": true}}});
    let defs: HashMap<String, FnDef> = [a, b].into_iter().map(|f| (f.name.clone(), f)).collect();
    let graph = model::asl::parse("s3.json", &workflow.to_string(), &|f| defs.contains_key(f)).unwrap();
    let app = Arc::new(model::Application::workflow("s3", graph).unwrap());
    let mut counters = Counters::default();
    let mut b_runs = 0;
    for seed in 1..=500u64 {
        let store: BTreeMap<String, (Value, u64)> =
            [("k0", 0), ("k1", 0), ("k2", seed % 5)].iter().map(|(k, v)| (k.to_string(), (json!(v), 1))).collect();
        let mut world = World::new(defs.clone(), store.clone(), seed);
        let mut got = Observed::default();
        let oracle = oracle_named("learning", seed);
        world.run(&app, json!({"x": seed % 2}), Config::default(), oracle, &mut got, &mut counters);
        assert_eq!(got.status, Some(Status::Success), "seed {seed}");
        for (function, read) in &world.reads_log {
            if function == "b" && read.len() == 2 {
                b_runs += 1;
                assert_eq!(read[0], read[1], "seed {seed}: a run of b saw k0 and k1 differ");
            }
        }
    }
    assert!(counters.speculative_launches >= 500, "b must have run speculatively: {counters:?}");
    assert!(b_runs >= 500, "{b_runs}");
}

/// S5: a long sequence under memo tables that always lie, so every speculative slot is mispredicted. Every
/// mispredicted slot is squashed, the result is still the reference's, and the work stays bounded: runs launched
/// are at most one per function plus the speculation budget, after which the invocation goes on
/// non-speculatively.
#[test]
fn squash_cascades_are_bounded_by_the_budget() {
    let f = FnDef::plain("f", vec![0], vec![0], 4, 3);
    let defs: HashMap<String, FnDef> = [(f.name.clone(), f)].into_iter().collect();
    let chain: Vec<String> = (0..12).map(|_| "f".to_string()).collect();
    let app = Arc::new(model::Application::sequence("long", &chain, &|n| defs.contains_key(n)).unwrap());
    for budget in [0, 3, 10] {
        let store: BTreeMap<String, (Value, u64)> = [("k0".to_string(), (json!(1), 1))].into_iter().collect();
        let world = |seed| World { trust_pure: false, ..World::new(defs.clone(), store.clone(), seed) };
        let mut want = Observed::default();
        let off = Config { speculation: false, ..Config::default() };
        world(1).run(&app, json!({"x": 0}), off, oracle_named("learning", 1), &mut want, &mut Counters::default());
        let mut got = Observed::default();
        let mut counters = Counters::default();
        let on = Config { budget, ..Config::default() };
        let mut w = world(2);
        w.run(&app, json!({"x": 0}), on, oracle_named("wrong-memo", 2), &mut got, &mut counters);
        assert_eq!(got, want, "budget {budget}");
        let launched = w.reads_log.len() as u32;
        assert!(launched <= 12 + budget, "budget {budget}: {launched} runs for 12 functions");
        assert!(counters.speculative_launches <= budget, "budget {budget}: {counters:?}");
        if budget > 0 {
            assert!(
                counters.squashes.get(&Cause::MemoMismatch).copied().unwrap_or(0) > 0,
                "budget {budget}: {counters:?}"
            );
        }
    }
}

/// The dependence predictor: `b` (speculative, independent of `a`'s output) reads `k0`, which `a` writes only at
/// the end. Early invocations squash `b` for reading too early; once the same producer/consumer/key has squashed
/// it `dependence_squashes` times in a row, `b`'s read waits for `a`, and the squashes stop.
#[test]
fn repeated_raw_squashes_make_the_read_wait() {
    let a = FnDef::plain("a", vec![1, 2, 3, 1, 2, 3], vec![0], 3, 5);
    let b = FnDef::plain("b", vec![0], vec![], 3, 6);
    let workflow = json!({"StartAt": "A", "States": {
        "A": {"Type": "Task", "Resource": "a", "ResultPath": null, "Next": "B"},
        "B": {"Type": "Task", "Resource": "b", "End": true}}});
    let defs: HashMap<String, FnDef> = [a, b].into_iter().map(|f| (f.name.clone(), f)).collect();
    let graph = model::asl::parse("dep.json", &workflow.to_string(), &|f| defs.contains_key(f)).unwrap();
    let app = Arc::new(model::Application::workflow("dep", graph).unwrap());
    let oracle = oracle_named("learning", 1);
    let store: BTreeMap<String, (Value, u64)> = KEYS.iter().map(|k| (k.to_string(), (json!(1), 1))).collect();
    let mut per_invocation = Vec::new();
    for seed in 1..=20u64 {
        let mut world = World::new(defs.clone(), store.clone(), seed);
        let mut counters = Counters::default();
        world.run(&app, json!({"x": 0}), Config::default(), oracle.clone(), &mut Observed::default(), &mut counters);
        per_invocation.push(counters.squashes.get(&Cause::RawViolation).copied().unwrap_or(0));
    }
    let total: u32 = per_invocation.iter().sum();
    assert!(total >= 3, "b must have been squashed for reading too early: {per_invocation:?}");
    assert!(
        per_invocation[10..].iter().all(|n| *n == 0),
        "the predicted dependence must stop the squashes: {per_invocation:?}"
    );
}

/// The speculation depth follows machine load (SpecFaaS §VI): with memo tables warm, a long sequence runs up to
/// `depth_max` functions ahead when the machine is idle, and at most 4 ahead above 80% CPU.
#[test]
fn speculation_depth_follows_machine_load() {
    let f = FnDef::plain("f", vec![], vec![], 1_000_000, 9);
    let defs: HashMap<String, FnDef> = [(f.name.clone(), f)].into_iter().collect();
    let chain: Vec<String> = (0..16).map(|_| "f".to_string()).collect();
    let app = Arc::new(model::Application::sequence("long", &chain, &|n| defs.contains_key(n)).unwrap());
    let oracle = oracle_named("learning", 1);
    let widest = |load: Option<u8>| {
        let mut world = World::new(defs.clone(), BTreeMap::new(), 7);
        world.world.load = load;
        world.run(
            &app,
            json!({"x": 1}),
            Config::default(),
            oracle.clone(),
            &mut Observed::default(),
            &mut Counters::default(),
        );
        world.max_active
    };
    widest(None); // warm the memo table: every output is then predicted
    let idle = widest(Some(10));
    let busy = widest(Some(85));
    let saturated = widest(Some(95));
    assert!(idle > 5, "an idle machine speculates up to depth_max (8) ahead: {idle} runs in flight");
    assert!(busy <= 5, "above 80% CPU at most 4 speculative runs besides the oldest: {busy} in flight");
    assert_eq!(saturated, 1, "a saturated machine (90% CPU and over) does not speculate at all");
    let never = Config { pause_percent: 101, ..Config::default() };
    assert_eq!(never.depth_at(100), 4, "pause_percent over 100 never pauses");
}
