//! Differential tests against an independent ASL interpreter: `aws-local-stepfunctions` (npm, run by
//! `tests/asl/reference.mjs`). The same Node.js task functions run on both sides: as deployed functions in specfaas's
//! sandboxed process runtime, and as the reference's local task handlers. Every case runs on specfaas with
//! speculation off and on; the results must equal the reference's, and failures must carry the same error name.
//!
//! Compared around the reference's known deviations (tests/asl/README.md), so that no case depends on them:
//! - it does not fill in `$$.State`, nor `$$.Execution.Id`/`Name` and `$$.StateMachine` unless given: cases that read
//!   them pass the execution's id and the state machine's names as the reference's context;
//! - a Choice with no match fails with a catchable `States.NoChoiceMatched` there, `States.Runtime` (as AWS reports
//!   it) here: such a case has no Catch around it, and the names are compared as equal;
//! - a `ResultPath` into a non-object is `States.ResultPathMatchFailure` there, `States.Runtime` here (likewise);
//! - `States.MathRandom` and `States.UUID` give other values there (and its `MathRandom` includes the end): cases
//!   use them only where the value cannot show (`ArrayLength(Array(UUID()))` is 1);
//! - its `States.StringSplit` splits on the whole delimiter string, where AWS splits on any of its characters: cases
//!   split on one character;
//! - `Wait` paths are not evaluated there (its waits are overridden to 0 ms): cases give only valid ones;
//! - a function that returns `{"error": ...}` fails here (OpenWhisk's rule) and succeeds there (Lambda's): no case
//!   does that; the task functions throw instead.
//!
//! Randomized cases are generated from a seed, printed with any failure.

use std::path::Path;
use std::process::Command;

use model::{Application, Kind, Limits};
use platform::{InvokeOptions, Platform};
use serde_json::{Value, json};

use crate::{NS, fixture, source};

/// The task functions, the same file on both sides. Inputs that are not objects are wrapped as `{"value": x}`,
/// because an OpenWhisk action returns a dictionary.
const FUNCTIONS: &[(&str, &str)] = &[
    ("echo", "exports.main = (p) => (typeof p === 'object' && p !== null && !Array.isArray(p) ? p : { value: p });"),
    (
        "double",
        "exports.main = (p) => { const o = (typeof p === 'object' && p !== null) ? p : { value: p }; \
         return { ...o, value: (Number(o.value) || 0) * 2 }; };",
    ),
    (
        "inc",
        "exports.main = (p) => { const o = (typeof p === 'object' && p !== null) ? p : { value: p }; \
         return { ...o, value: (Number(o.value) || 0) + 1, steps: (o.steps || 0) + 1 }; };",
    ),
    ("keys", "exports.main = (p) => ({ keys: Object.keys(p || {}).sort(), n: Object.keys(p || {}).length });"),
    (
        "fail",
        "exports.main = (p) => { const e = new Error((p && p.message) || 'boom'); \
         e.name = (p && p.name) || 'CustomError'; throw e; };",
    ),
    (
        "failif",
        "exports.main = (p) => { if ((Number(p && p.value) || 0) > 3) { const e = new Error('too big: ' + p.value); \
         e.name = 'TooBig'; throw e; } return { ...p, ok: true }; };",
    ),
    (
        "slow",
        "exports.main = (p) => new Promise((r) => setTimeout(() => r({ slept: (p && p.ms) || 0 }), (p && p.ms) || 0));",
    ),
    ("typeerr", "exports.main = (p) => { return p.missing.field; };"),
];

fn arn(function: &str) -> String {
    format!("arn:aws:lambda:us-east-1:123456789012:function:{function}")
}

fn task(function: &str, extra: Value) -> Value {
    let mut t = json!({"Type": "Task", "Resource": arn(function)});
    t.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
    t
}

fn machine(states: Value, start: &str) -> Value {
    json!({"StartAt": start, "States": states})
}

struct Case {
    id: String,
    definition: Value,
    input: Value,
}

fn case(id: &str, definition: Value, input: Value) -> Case {
    Case { id: id.into(), definition, input }
}

/// The hand-written cases: every state type, data-flow field, error name and intrinsic function.
fn hand_written() -> Vec<Case> {
    let mut cases = vec![
        case(
            "chain with data flow",
            machine(
                json!({
                    "A": task("double", json!({"InputPath": "$.in", "ResultPath": "$.a", "Next": "B"})),
                    "B": task("inc", json!({"Parameters": {"value.$": "$.a.value", "k": 1},
                        "ResultSelector": {"v.$": "$.value", "fixed": "x"}, "ResultPath": "$.b", "Next": "C"})),
                    "C": {"Type": "Pass", "Parameters": {"sum.$": "States.MathAdd($.a.value, $.b.v)"},
                          "OutputPath": "$", "Next": "D"},
                    "D": {"Type": "Succeed", "OutputPath": "$.sum"}
                }),
                "A",
            ),
            json!({"in": {"value": 5}}),
        ),
        case(
            "pass with result and null paths",
            machine(
                json!({
                    "P": {"Type": "Pass", "Result": {"r": [1, 2]}, "ResultPath": "$.res", "Next": "Q"},
                    "Q": {"Type": "Pass", "InputPath": null, "Next": "R"},
                    "R": task("keys", json!({"ResultPath": null, "End": true}))
                }),
                "P",
            ),
            json!({"x": 1}),
        ),
        case(
            "choice with every kind of rule",
            machine(
                json!({
                    "C": {"Type": "Choice", "Choices": [
                        {"And": [{"Variable": "$.n", "NumericGreaterThan": 10}, {"Variable": "$.s", "StringMatches": "a*"}],
                         "Next": "Big"},
                        {"Not": {"Variable": "$.flag", "BooleanEquals": true}, "Next": "Off"},
                        {"Variable": "$.n", "NumericLessThanPath": "$.limit", "Next": "Small"}
                    ], "Default": "Other"},
                    "Big": {"Type": "Pass", "Result": "big", "End": true},
                    "Off": {"Type": "Pass", "Result": "off", "End": true},
                    "Small": task("double", json!({"InputPath": "$.n", "End": true})),
                    "Other": {"Type": "Pass", "Result": "other", "End": true}
                }),
                "C",
            ),
            json!({"n": 3, "s": "b", "flag": true, "limit": 5}),
        ),
        case(
            "parallel branches keep their order",
            machine(
                json!({
                    "P": {"Type": "Parallel", "ResultSelector": {"first.$": "$[0].value", "second.$": "$[1]"},
                          "ResultPath": "$.par", "Next": "Done",
                          "Branches": [
                              machine(json!({"A": task("double", json!({"Next": "A2"})),
                                             "A2": task("inc", json!({"End": true}))}), "A"),
                              machine(json!({"B": task("keys", json!({"End": true}))}), "B"),
                              machine(json!({"C": {"Type": "Pass", "Result": 7, "End": true}}), "C")
                          ]},
                    "Done": {"Type": "Succeed"}
                }),
                "P",
            ),
            json!({"value": 4}),
        ),
        case(
            "map with item selector and the map context",
            machine(
                json!({
                    "M": {"Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 2,
                          "ItemSelector": {"value.$": "$$.Map.Item.Value", "index.$": "$$.Map.Item.Index", "k.$": "$.k"},
                          "ItemProcessor": machine(json!({"D": task("double", json!({"Next": "I"})),
                                                          "I": task("inc", json!({"End": true}))}), "D"),
                          "ResultPath": "$.out", "End": true}
                }),
                "M",
            ),
            json!({"items": [1, 2, 3, 4, 5], "k": "z"}),
        ),
        case(
            "map with the older iterator and parameters, over objects",
            machine(
                json!({
                    "M": {"Type": "Map", "ItemsPath": "$.list", "Parameters": {"v.$": "$$.Map.Item.Value.v"},
                          "Iterator": machine(json!({"K": task("keys", json!({"End": true}))}), "K"),
                          "End": true}
                }),
                "M",
            ),
            json!({"list": [{"v": 1}, {"v": 2}]}),
        ),
        case(
            "an empty map",
            machine(
                json!({"M": {"Type": "Map", "ItemProcessor": machine(json!({"E": task("echo", json!({"End": true}))}), "E"),
                                 "ResultPath": "$.r", "End": true}}),
                "M",
            ),
            json!({"r": 0, "x": []}),
        ),
        case(
            "a thrown error caught by name, with ResultPath",
            machine(
                json!({
                    "F": task("fail", json!({"Parameters": {"name": "MyError", "message": "bad thing"},
                        "Catch": [{"ErrorEquals": ["Other"], "Next": "No"},
                                  {"ErrorEquals": ["MyError"], "ResultPath": "$.err", "Next": "Yes"}],
                        "End": true})),
                    "No": {"Type": "Fail", "Error": "Wrong", "Cause": "wrong catcher"},
                    "Yes": {"Type": "Pass", "End": true}
                }),
                "F",
            ),
            json!({"keep": 1}),
        ),
        case(
            "States.TaskFailed catches an exception, and a runtime TypeError has its name",
            machine(
                json!({
                    "T": task("typeerr", json!({"Catch": [{"ErrorEquals": ["States.TaskFailed"], "Next": "Got"}], "End": true})),
                    "Got": {"Type": "Pass", "Parameters": {"error.$": "$.Error"}, "End": true}
                }),
                "T",
            ),
            json!({}),
        ),
        case(
            "an uncaught error fails the execution with its name and cause",
            machine(
                json!({"F": task("fail", json!({"Parameters": {"name": "Denied", "message": "no entry"}, "End": true}))}),
                "F",
            ),
            json!({}),
        ),
        case(
            "retries run out, then States.ALL catches",
            machine(
                json!({
                    "F": task("fail", json!({"Parameters": {"name": "Flaky"},
                        "Retry": [{"ErrorEquals": ["Flaky"], "IntervalSeconds": 1, "MaxAttempts": 1, "BackoffRate": 1.0}],
                        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.caught", "Next": "Done"}],
                        "End": true})),
                    "Done": {"Type": "Succeed"}
                }),
                "F",
            ),
            json!({"n": 1}),
        ),
        case(
            "a retrier that does not match is skipped; MaxAttempts 0 never retries",
            machine(
                json!({
                    "F": task("failif", json!({
                        "Retry": [{"ErrorEquals": ["Nope"], "MaxAttempts": 5}, {"ErrorEquals": ["TooBig"], "MaxAttempts": 0}],
                        "End": true}))
                }),
                "F",
            ),
            json!({"value": 9}),
        ),
        case(
            "a failing branch fails the parallel, whose catch takes it",
            machine(
                json!({
                    "P": {"Type": "Parallel", "Next": "Ok",
                          "Catch": [{"ErrorEquals": ["TooBig"], "ResultPath": "$.why", "Next": "Caught"}],
                          "Branches": [
                              machine(json!({"A": task("double", json!({"End": true}))}), "A"),
                              machine(json!({"B": task("failif", json!({"End": true}))}), "B")
                          ]},
                    "Ok": {"Type": "Pass", "Result": "no", "End": true},
                    "Caught": {"Type": "Pass", "End": true}
                }),
                "P",
            ),
            json!({"value": 8}),
        ),
        case(
            "a Fail state in a map iteration fails the map; the map's catch takes it",
            machine(
                json!({
                    "M": {"Type": "Map", "ItemsPath": "$.xs",
                          "Catch": [{"ErrorEquals": ["Odd"], "Next": "Caught"}],
                          "ItemProcessor": machine(json!({
                              "C": {"Type": "Choice", "Choices": [{"Variable": "$", "NumericEquals": 3, "Next": "Bad"}],
                                    "Default": "D"},
                              "Bad": {"Type": "Fail", "Error": "Odd", "Cause": "three"},
                              "D": task("double", json!({"End": true}))}), "C"),
                          "End": true},
                    "Caught": {"Type": "Pass", "End": true}
                }),
                "M",
            ),
            json!({"xs": [1, 2, 3]}),
        ),
        case(
            "a Fail state's ErrorPath and CausePath",
            machine(json!({"F": {"Type": "Fail", "ErrorPath": "$.e", "CausePath": "$.c"}}), "F"),
            json!({"e": "Picked", "c": "from the input"}),
        ),
        case(
            "a map over a non-array is States.Runtime",
            machine(
                json!({"M": {"Type": "Map", "ItemsPath": "$.n",
                                 "ItemProcessor": machine(json!({"E": task("echo", json!({"End": true}))}), "E"),
                                 "End": true}}),
                "M",
            ),
            json!({"n": 5}),
        ),
        case(
            "a path that selects nothing is States.Runtime",
            machine(json!({"T": task("echo", json!({"InputPath": "$.missing", "End": true}))}), "T"),
            json!({"x": 1}),
        ),
        case(
            "a Choice with no match fails",
            machine(
                json!({
                "C": {"Type": "Choice", "Choices": [{"Variable": "$.n", "NumericEquals": 1, "Next": "T"}]},
                "T": task("echo", json!({"End": true}))}),
                "C",
            ),
            json!({"n": 2}),
        ),
        case(
            "waits of every kind",
            machine(
                json!({
                    "W1": {"Type": "Wait", "Seconds": 0, "Next": "W2"},
                    "W2": {"Type": "Wait", "SecondsPath": "$.s", "Next": "W3"},
                    "W3": {"Type": "Wait", "Timestamp": "2020-01-01T00:00:00Z", "Next": "W4"},
                    "W4": {"Type": "Wait", "TimestampPath": "$.t", "InputPath": "$.inner", "Next": "T"},
                    "T": task("double", json!({"End": true}))
                }),
                "W1",
            ),
            json!({"s": 1, "t": "2021-06-01T12:00:00Z", "inner": {"value": 3}}),
        ),
        case(
            "a task past its TimeoutSeconds is States.Timeout, which TaskFailed does not catch",
            machine(
                json!({
                    "S": task("slow", json!({"TimeoutSeconds": 1,
                        "Catch": [{"ErrorEquals": ["States.TaskFailed"], "Next": "Wrong"},
                                  {"ErrorEquals": ["States.Timeout"], "ResultPath": "$.t", "Next": "Right"}],
                        "End": true})),
                    "Wrong": {"Type": "Fail", "Error": "Wrong", "Cause": "TaskFailed matched a timeout"},
                    "Right": {"Type": "Pass", "Parameters": {"error.$": "$.t.Error"}, "End": true}
                }),
                "S",
            ),
            json!({"ms": 3000}),
        ),
        case(
            "the execution's own TimeoutSeconds",
            json!({"TimeoutSeconds": 1, "StartAt": "S", "States": {"S": task("slow", json!({"End": true}))}}),
            json!({"ms": 2500}),
        ),
        case(
            "MaxDelaySeconds and JitterStrategy bound the back-off",
            machine(
                json!({
                    "F": task("fail", json!({"Parameters": {"name": "Flaky"},
                        "Retry": [{"ErrorEquals": ["Flaky"], "IntervalSeconds": 1, "MaxAttempts": 2, "BackoffRate": 5.0,
                                   "MaxDelaySeconds": 1, "JitterStrategy": "FULL"}],
                        "Catch": [{"ErrorEquals": ["Flaky"], "Next": "Done"}],
                        "End": true})),
                    "Done": {"Type": "Pass", "Parameters": {"error.$": "$.Error"}, "End": true}
                }),
                "F",
            ),
            json!({}),
        ),
        case(
            "TimeoutSecondsPath",
            machine(json!({"S": task("slow", json!({"TimeoutSecondsPath": "$.limit", "End": true}))}), "S"),
            json!({"ms": 2500, "limit": 1}),
        ),
        case(
            "lambda:invoke with Payload, and its result wrapper",
            machine(
                json!({
                    "I": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                          "Parameters": {"FunctionName": arn("double"), "Payload": {"value.$": "$.v"}},
                          "ResultSelector": {"value.$": "$.Payload.value", "code.$": "$.StatusCode"}, "Next": "J"},
                    "J": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                          "Parameters": {"FunctionName": "inc", "Payload.$": "$"},
                          "OutputPath": "$.Payload", "End": true}
                }),
                "I",
            ),
            json!({"v": 21}),
        ),
        case(
            "a Lambda ARN with a version or alias",
            machine(
                json!({"A": {"Type": "Task", "Resource": format!("{}:7", arn("double")), "Next": "B"},
                            "B": {"Type": "Task", "Resource": format!("{}:live", arn("inc")), "End": true}}),
                "A",
            ),
            json!({"value": 2}),
        ),
        case(
            "QueryLanguage JSONPath at the top and on a state",
            json!({"QueryLanguage": "JSONPath", "StartAt": "P", "States": {
                "P": {"Type": "Pass", "QueryLanguage": "JSONPath", "Result": 1, "End": true}}}),
            json!({}),
        ),
        case(
            "the context object, given to the reference",
            machine(
                json!({"P": {"Type": "Pass", "Parameters": {
                "id.$": "$$.Execution.Id", "name.$": "$$.Execution.Name", "input.$": "$$.Execution.Input",
                "machine.$": "$$.StateMachine.Name", "machine_id.$": "$$.StateMachine.Id"}, "End": true}}),
                "P",
            ),
            json!({"a": [1, 2]}),
        ),
    ];
    cases.extend(intrinsic_cases());
    cases
}

/// Every intrinsic function, in one Pass state each, on one input.
fn intrinsic_cases() -> Vec<Case> {
    let input = json!({"name": "Bob", "age": 41, "arr": [1, 2, 2, 3, 4, 5], "obj": {"a": [1, "x"]}, "s": "a,b;c",
                       "json": "{\"k\":[1,2]}", "b64": "aGVsbG8gd29ybGQ=", "o1": {"a": 1, "b": 2}, "o2": {"b": 3}});
    let expressions = [
        ("format", "States.Format('Hello {}, you are {}', $.name, $.age)"),
        ("string_to_json", "States.StringToJson($.json)"),
        ("json_to_string", "States.JsonToString($.obj)"),
        ("array", "States.Array('a', 1, $.name, $.obj)"),
        ("partition", "States.ArrayPartition($.arr, 4)"),
        ("contains", "States.ArrayContains($.arr, 3)"),
        ("range", "States.ArrayRange(1, 9, 2)"),
        ("get_item", "States.ArrayGetItem($.arr, 3)"),
        ("length", "States.ArrayLength($.arr)"),
        ("unique", "States.ArrayUnique($.arr)"),
        ("encode", "States.Base64Encode($.name)"),
        ("decode", "States.Base64Decode($.b64)"),
        ("hash", "States.Hash($.name, 'SHA-256')"),
        ("merge", "States.JsonMerge($.o1, $.o2, false)"),
        ("random", "States.ArrayLength(States.Array(States.MathRandom(1, 100)))"),
        ("add", "States.MathAdd($.age, -1)"),
        ("split", "States.StringSplit($.s, ',')"),
        ("uuid", "States.ArrayLength(States.Array(States.UUID()))"),
        ("nested", "States.Format('{} items', States.ArrayLength(States.ArrayUnique($.arr)))"),
    ];
    let parameters: serde_json::Map<String, Value> =
        expressions.iter().map(|(k, e)| (format!("{k}.$"), json!(e))).collect();
    let mut cases = vec![case(
        "all intrinsic functions",
        machine(json!({"P": {"Type": "Pass", "Parameters": parameters, "End": true}}), "P"),
        input.clone(),
    )];
    for (id, expression) in [
        ("an intrinsic failure is States.Runtime", "States.ArrayPartition($.arr, $.age.none)"),
        ("StringToJson on a number fails", "States.StringToJson($.age)"),
    ] {
        cases.push(case(
            id,
            machine(json!({"P": {"Type": "Pass", "Parameters": {"x.$": expression}, "End": true}}), "P"),
            input.clone(),
        ));
    }
    cases
}

/// A small seeded generator (SplitMix64), so a failure's seed reproduces it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random machine: a chain of Task, Pass, Choice, Parallel, Map and caught failures, all on `{"value": n}`.
fn generated(seed: u64) -> Case {
    let mut rng = Rng(seed);
    let mut names = 0;
    let mut fresh = |prefix: &str| {
        names += 1;
        format!("{prefix}{names}")
    };
    fn chain(rng: &mut Rng, fresh: &mut dyn FnMut(&str) -> String, len: u64, depth: u32) -> (Value, String) {
        let ids: Vec<String> = (0..len).map(|_| fresh("S")).collect();
        // Where a catcher of the last state goes: state names are unique in the whole definition, as AWS wants.
        let end_name = fresh("End");
        let mut states = serde_json::Map::new();
        for (i, id) in ids.iter().enumerate() {
            let next = ids.get(i + 1);
            let flow = |v: &mut Value| match next {
                Some(n) => v["Next"] = json!(n),
                None => v["End"] = json!(true),
            };
            let kind = rng.below(if depth < 2 { 7 } else { 4 });
            let mut state = match kind {
                0 | 1 => task(["double", "inc", "echo"][rng.below(3) as usize], json!({})),
                2 => match rng.below(4) {
                    0 => json!({"Type": "Pass", "Parameters": {"value.$": "States.MathAdd($.value, 3)"}}),
                    1 => json!({"Type": "Pass", "ResultPath": "$.pass", "Parameters": {
                        "n.$": "States.MathAdd(States.ArrayLength(States.ArrayRange(1, 3, 1)), $.value)",
                        "label.$": "States.Format('v={}', $.value)"}}),
                    2 => json!({"Type": "Wait", "Seconds": 0}),
                    _ => json!({"Type": "Wait", "Timestamp": "2020-01-01T00:00:00Z"}),
                },
                3 => {
                    let to = ids.get(i + 1).cloned().unwrap_or_else(|| end_name.clone());
                    let mut t = task(
                        "failif",
                        json!({"Catch": [{"ErrorEquals": ["TooBig"], "ResultPath": "$.caught", "Next": to}]}),
                    );
                    if rng.below(3) == 0 {
                        t["Retry"] = json!([{"ErrorEquals": ["TooBig"], "IntervalSeconds": 1, "MaxAttempts": 1}]);
                    }
                    t
                }
                4 => {
                    let (n1, n2) = (1 + rng.below(2), 1 + rng.below(2));
                    let (b1, s1) = chain(rng, fresh, n1, depth + 1);
                    let (b2, s2) = chain(rng, fresh, n2, depth + 1);
                    json!({"Type": "Parallel", "Branches": [machine(b1, &s1), machine(b2, &s2)],
                           "ResultSelector": {"value.$": "States.MathAdd($[0].value, $[1].value)"}})
                }
                5 => {
                    let n = 1 + rng.below(2);
                    let (b, s) = chain(rng, fresh, n, depth + 1);
                    json!({"Type": "Map", "ItemsPath": "$.items",
                           "ItemSelector": {"value.$": "States.MathAdd($$.Map.Item.Value, $.value)"},
                           "ItemProcessor": machine(b, &s),
                           "ResultSelector": {"value.$": "States.ArrayLength($)", "first.$": "$[0].value"},
                           "ResultPath": "$.mapped", "OutputPath": "$"})
                }
                _ => {
                    let small = fresh("Small");
                    let big = fresh("Big");
                    let after = next.cloned();
                    let end = |v: &mut Value| match &after {
                        Some(n) => v["Next"] = json!(n),
                        None => v["End"] = json!(true),
                    };
                    let mut s = task("inc", json!({}));
                    end(&mut s);
                    let mut b = json!({"Type": "Pass", "Result": {"value": 1}, "ResultPath": "$.big"});
                    end(&mut b);
                    states.insert(small.clone(), s);
                    states.insert(big.clone(), b);
                    json!({"Type": "Choice", "Choices": [{"Variable": "$.value", "NumericLessThan": 6, "Next": small}],
                           "Default": big})
                }
            };
            if state["Type"] != "Choice" {
                flow(&mut state);
            }
            states.insert(id.clone(), state);
        }
        if states.values().any(|s| s.get("Catch").is_some_and(|c| c.to_string().contains(&format!("\"{end_name}\"")))) {
            states.insert(end_name, json!({"Type": "Succeed"}));
        }
        (Value::Object(states), ids[0].clone())
    }
    let len = 2 + rng.below(4);
    let (states, start) = chain(&mut rng, &mut fresh, len, 0);
    let input = json!({"value": rng.below(5), "items": (0..rng.below(4)).collect::<Vec<_>>()});
    case(&format!("generated seed {seed}"), machine(states, &start), input)
}

/// What an execution ended with, on either side.
#[derive(Debug, Clone, PartialEq)]
enum Ended {
    Succeeded(Value),
    Failed { error: String, cause: String },
}

fn reference_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/asl")
}

/// Runs every case on the reference interpreter, in one process.
fn reference(functions: &Path, cases: &[Case], contexts: &[Value]) -> Vec<Ended> {
    let dir = reference_dir();
    if !dir.join("node_modules/aws-local-stepfunctions").exists() {
        let install =
            Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir).output().expect("npm runs");
        assert!(install.status.success(), "npm ci failed: {}", String::from_utf8_lossy(&install.stderr));
    }
    let doc = json!({
        "functions_dir": functions,
        "causes": "message",
        "cases": cases.iter().zip(contexts).map(|(c, context)| json!({
            "id": c.id, "definition": c.definition, "input": c.input, "context": context
        })).collect::<Vec<_>>(),
    });
    let mut child = Command::new("node")
        .arg(dir.join("reference.mjs"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node runs");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(doc.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the reference failed: {}", String::from_utf8_lossy(&out.stderr));
    let results: Value = serde_json::from_slice(&out.stdout).unwrap();
    results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| match r["status"].as_str().unwrap() {
            "SUCCEEDED" => Ended::Succeeded(r["output"].clone()),
            "FAILED" | "TIMED_OUT" => Ended::Failed {
                error: r["error"].as_str().unwrap_or_default().into(),
                cause: r["cause"].as_str().unwrap_or_default().into(),
            },
            other => panic!("the reference could not run case {}: {other}: {}", r["id"], r["message"]),
        })
        .collect()
}

/// The error names that mean the same failure here and on the reference (see the module docs).
fn same_error(ours: &str, theirs: &str) -> bool {
    let normal = |e: &str| match e {
        "States.NoChoiceMatched" | "States.ResultPathMatchFailure" => "States.Runtime".to_string(),
        other => other.to_string(),
    };
    normal(ours) == normal(theirs)
}

fn compare(ours: &Ended, theirs: &Ended) -> Result<(), String> {
    match (ours, theirs) {
        (Ended::Succeeded(a), Ended::Succeeded(b)) if a == b => Ok(()),
        (Ended::Failed { error: a, cause: ca }, Ended::Failed { error: b, cause: cb }) if same_error(a, b) => {
            // Causes are compared where both sides write them the same way: a function's message, a Fail state's.
            if a != "States.Runtime" && a != "States.Timeout" && ca != cb {
                return Err(format!("same error {a}, but cause {ca:?} here and {cb:?} on the reference"));
            }
            Ok(())
        }
        _ => Err(format!("specfaas: {ours:?}\nreference: {theirs:?}")),
    }
}

async fn deploy_functions(p: &Platform, dir: &Path) {
    for (name, code) in FUNCTIONS {
        std::fs::write(dir.join(format!("{name}.js")), code).unwrap();
        p.deploy_function(NS, source(name, Kind::Node, code, Limits::default())).await.unwrap();
    }
}

async fn ours(p: &Platform, app: &str, input: &Value, speculation: bool, id: &str) -> Ended {
    let options =
        InvokeOptions { speculation: Some(speculation), activation_id: Some(id.to_string()), ..Default::default() };
    let inv = p.invoke_with(NS, app, input.clone(), options).await.unwrap();
    match inv.error {
        None => Ended::Succeeded(inv.result),
        Some(name) => Ended::Failed {
            error: name.to_string(),
            cause: inv.result["cause"].as_str().unwrap_or_default().to_string(),
        },
    }
}

/// Runs `cases` on both sides and returns the mismatches, each named, and what the reference ended with.
async fn differ(cases: Vec<Case>) -> (Vec<String>, Vec<Ended>) {
    let f = fixture();
    let p = &f.platform;
    let dir = tempfile::tempdir().unwrap();
    deploy_functions(p, dir.path()).await;
    let mut contexts = Vec::new();
    let mut ids = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let app = format!("case{i}");
        let graph = model::asl::from_value(&format!("{}.json", c.id), &c.definition, &|f| p.has_function(NS, f))
            .unwrap_or_else(|e| panic!("case {:?} does not deploy: {e}", c.id));
        p.deploy_app(NS, Application::workflow(&app, graph).unwrap());
        let id = format!("exec{i:04}");
        contexts.push(json!({
            "Execution": {"Id": id, "Name": id},
            "StateMachine": {"Id": format!("{NS}:{app}"), "Name": app},
        }));
        ids.push(id);
    }
    let expected = reference(dir.path(), &cases, &contexts);
    let mut mismatches = Vec::new();
    // Both modes of every case, a few invocations at a time.
    let mut pending = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        if std::env::var("SPECFAAS_ASL_TRACE").is_ok() {
            eprintln!("case {i}: {} {}", c.id, c.definition);
        }
        for speculation in [false, true] {
            let (app, input, id) = (format!("case{i}"), c.input.clone(), ids[i].clone());
            let p = p.clone();
            pending.push((i, speculation, tokio::spawn(async move { ours(&p, &app, &input, speculation, &id).await })));
            if pending.len() >= 6 {
                let (i, speculation, handle) = pending.remove(0);
                let got = handle.await.unwrap();
                if let Err(e) = compare(&got, &expected[i]) {
                    mismatches.push(format!("{} (speculation {speculation}): {e}", cases[i].id));
                }
            }
        }
    }
    for (i, speculation, handle) in pending {
        let got = handle.await.unwrap();
        if let Err(e) = compare(&got, &expected[i]) {
            mismatches.push(format!("{} (speculation {speculation}): {e}", cases[i].id));
        }
    }
    (mismatches, expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_written_machines_match_the_reference_interpreter() {
    let (mismatches, _) = differ(hand_written()).await;
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_machines_match_the_reference_interpreter() {
    let base: u64 = std::env::var("SPECFAAS_ASL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let cases: Vec<Case> = (0..24).map(|i| generated(base * 1000 + i)).collect();
    // The generator reaches every construct it knows, and both endings.
    for needle in [
        "\"Parallel\"",
        "\"Map\"",
        "\"Choice\"",
        "\"Catch\"",
        "\"Retry\"",
        "\"Wait\"",
        "States.Format",
        "$$.Map.Item.Value",
    ] {
        let n = cases.iter().filter(|c| c.definition.to_string().contains(needle)).count();
        assert!(n >= 2, "only {n} generated cases have {needle} (base seed {base})");
    }
    let (mismatches, expected) = differ(cases).await;
    let failed = expected.iter().filter(|e| matches!(e, Ended::Failed { .. })).count();
    assert!(failed > 0 && failed < expected.len(), "{failed} of {} generated cases failed", expected.len());
    assert!(
        mismatches.is_empty(),
        "{} mismatches (base seed {base}; SPECFAAS_ASL_SEED={base} reproduces):\n{}",
        mismatches.len(),
        mismatches.join("\n\n")
    );
}
