//! Engine tests in a deterministic, synchronous world: scripted functions, an in-memory store, no async.

mod differential;
mod sim;
mod states;

use model::asl;
use serde_json::{Value, json};
use sim::{Op, Sim};

use engine::{Config, ErrorName, Status};

/// These tests pin the sequential semantics: speculation off.
fn seq() -> Config {
    Config { speculation: false, ..Config::default() }
}

fn workflow(sim: &Sim, text: &str) -> model::Application {
    let g = asl::parse("wf.json", text, &|f| sim.has(f)).unwrap();
    model::Application::workflow("wf", g).unwrap()
}

#[test]
fn sequence_passes_each_output_to_the_next_function() {
    let mut sim = Sim::new();
    sim.func("inc", |input| vec![Op::Return(json!({"n": input["n"].as_i64().unwrap() + 1}))]);
    let app = model::Application::sequence("s", &["inc".into(), "inc".into(), "inc".into()], &|f| sim.has(f)).unwrap();
    let done = sim.run(app, json!({"n": 1}), seq());
    assert_eq!((done.status, done.result), (Status::Success, json!({"n": 4})));
    assert_eq!(sim.launches(), ["inc", "inc", "inc"]);
}

const BRANCHY: &str = r#"{"StartAt": "Login", "States": {
  "Login": {"Type": "Task", "Resource": "login", "ResultPath": "$.auth", "Next": "Ok?"},
  "Ok?": {"Type": "Choice", "Choices": [{"Variable": "$.auth.ok", "BooleanEquals": true, "Next": "Work"}],
          "Default": "Denied"},
  "Work": {"Type": "Parallel", "ResultPath": "$.parts", "Next": "Done", "Branches": [
      {"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "part", "Parameters": {"p": "a"}, "End": true}}},
      {"StartAt": "B", "States": {"B": {"Type": "Pass", "Result": {"p": "b"}, "Next": "C"},
                                   "C": {"Type": "Task", "Resource": "part", "End": true}}}]},
  "Done": {"Type": "Succeed", "OutputPath": "$.parts"},
  "Denied": {"Type": "Fail", "Error": "Denied", "Cause": "wrong password"}
}}"#;

fn branchy_sim() -> Sim {
    let mut sim = Sim::new();
    sim.func("login", |input| vec![Op::Return(json!({"ok": input["password"] == "pw"}))]);
    sim.func("part", |input| vec![Op::Return(json!({"got": input["p"]}))]);
    sim
}

#[test]
fn choice_parallel_and_data_flow() {
    let mut sim = branchy_sim();
    let app = workflow(&sim, BRANCHY);
    let done = sim.run(app, json!({"password": "pw"}), seq());
    assert_eq!(done.status, Status::Success);
    assert_eq!(done.result, json!([{"got": "a"}, {"got": "b"}]));
    assert_eq!(done.path, ["Login", "Ok?", "Work", "Work/0/A", "Work/1/B", "Work/1/C", "Done"]);
    // Parallel branches run one after another in program order.
    assert_eq!(sim.launches(), ["login", "part", "part"]);
}

#[test]
fn fail_state_ends_the_invocation_with_its_error() {
    let mut sim = branchy_sim();
    let app = workflow(&sim, BRANCHY);
    let done = sim.run(app, json!({"password": "nope"}), seq());
    assert_eq!(done.status, Status::ApplicationError);
    assert_eq!(done.result, json!({"error": "Denied", "cause": "wrong password"}));
    assert_eq!(done.error, Some(ErrorName::Custom("Denied".into())), "a Fail state's Error names the failure");
    assert_eq!(done.path, ["Login", "Ok?", "Denied"]);
}

#[test]
fn writes_commit_per_function_and_reads_see_them() {
    let mut sim = Sim::new();
    sim.func("writer", |_| vec![Op::Put("k", json!(1)), Op::Put("k", json!(2)), Op::Return(json!({}))]);
    sim.func("reader", |_| vec![Op::Get("k"), Op::ReturnReplies]);
    let app = model::Application::sequence("s", &["writer".into(), "reader".into()], &|f| sim.has(f)).unwrap();
    let done = sim.run(app, json!({}), seq());
    assert_eq!(done.result, json!({"replies": [2]}));
    assert_eq!(sim.store_value("k"), Some(json!(2)));
    assert_eq!(sim.commits(), 1, "one function, one atomic commit");
}

#[test]
fn a_failing_function_commits_nothing_and_stops_the_application() {
    let mut sim = Sim::new();
    sim.func("ok", |_| vec![Op::Put("a", json!(1)), Op::Return(json!({}))]);
    sim.func("bad", |_| vec![Op::Put("b", json!(1)), Op::Fail(Status::DeveloperError, json!("crashed"))]);
    sim.func("never", |_| vec![Op::Put("c", json!(1)), Op::Return(json!({}))]);
    let chain = ["ok".into(), "bad".into(), "never".into()];
    let app = model::Application::sequence("s", &chain, &|f| sim.has(f)).unwrap();
    let done = sim.run(app, json!({}), seq());
    assert_eq!((done.status, done.result), (Status::DeveloperError, json!({"error": "crashed"})));
    assert_eq!(done.error, Some(ErrorName::TaskFailed));
    assert_eq!(sim.store_value("a"), Some(json!(1)));
    assert_eq!(sim.store_value("b"), None, "the failing function's writes are discarded");
    assert_eq!(sim.launches(), ["ok", "bad"]);
}

#[test]
fn implicit_calls_merge_callee_writes_into_the_caller() {
    let mut sim = Sim::new();
    sim.func("front", |_| {
        vec![Op::Put("seen", json!("front")), Op::Invoke("back", json!({"x": 1})), Op::Get("seen"), Op::ReturnReplies]
    });
    sim.func("back", |input| {
        vec![Op::Get("seen"), Op::Put("seen", json!("back")), Op::Return(json!({"x": input["x"], "saw": "ok"}))]
    });
    let app = model::Application::function("app", "front", &|f| sim.has(f)).unwrap();
    let done = sim.run(app, json!({}), seq());
    // front's replies: put → null, invoke → back's result, get → back's write (merged on return).
    assert_eq!(done.result, json!({"replies": [null, {"x": 1, "saw": "ok"}, "back"]}));
    assert_eq!(sim.reads_seen_by("back"), vec![json!("front")], "a callee reads its caller's uncommitted write");
    assert_eq!(sim.store_value("seen"), Some(json!("back")));
    assert_eq!(sim.commits(), 1, "callee writes commit with the caller");
    assert_eq!(done.path, ["front", "back"]);
}

#[test]
fn a_failing_callee_is_an_error_the_caller_can_handle() {
    let mut sim = Sim::new();
    sim.func("front", |_| vec![Op::Invoke("back", json!({})), Op::Invoke("ghost", json!({})), Op::ReturnReplies]);
    sim.func("back", |_| vec![Op::Put("x", json!(1)), Op::Fail(Status::ApplicationError, json!("no seats"))]);
    let app = model::Application::function("app", "front", &|f| sim.has(f)).unwrap();
    let done = sim.run(app, json!({}), seq());
    assert_eq!(
        done.result,
        json!({"replies": [{"failed": "no seats"}, {"refused": "function \"ghost\" does not exist"}]})
    );
    assert_eq!(sim.store_value("x"), None);
}

#[test]
fn loops_through_choice_are_bounded_by_steps_max() {
    let mut sim = Sim::new();
    sim.func("spin", |input| vec![Op::Return(input.clone())]);
    let text = r#"{"StartAt": "S", "States": {
      "S": {"Type": "Task", "Resource": "spin", "Next": "Again?"},
      "Again?": {"Type": "Choice", "Choices": [{"Variable": "$.stop", "BooleanEquals": true, "Next": "End"}],
                 "Default": "S"},
      "End": {"Type": "Succeed"}}}"#;
    let app = workflow(&sim, text);
    let config = Config { steps_max: 10, ..seq() };
    let done = sim.run(app.clone(), json!({"stop": false}), config);
    assert_eq!(done.status, Status::ApplicationError);
    assert!(done.result["cause"].as_str().unwrap().contains("steps_max"), "{}", done.result);
    assert_eq!(sim.launches().len(), 5);
    let done = sim.run(app, json!({"stop": true}), config);
    assert_eq!(done.status, Status::Success);
}

#[test]
fn runtime_data_errors_name_the_state() {
    let mut sim = Sim::new();
    sim.func("f", |_| vec![Op::Return(json!({}))]);
    let text = r#"{"StartAt": "C", "States": {
      "C": {"Type": "Choice", "Choices": [{"Variable": "$.missing", "NumericEquals": 1, "Next": "T"}]},
      "T": {"Type": "Task", "Resource": "f", "End": true}}}"#;
    let done = sim.run(workflow(&sim, text), json!({}), seq());
    assert_eq!(done.result["error"], "States.Runtime", "{}", done.result);
    let cause = done.result["cause"].as_str().unwrap().to_string();
    assert!(cause.contains("$.missing") && cause.contains("state \"C\""), "{cause}");
    assert_eq!(done.error, Some(ErrorName::Runtime));
    let text = r#"{"StartAt": "C", "States": {
      "C": {"Type": "Choice", "Choices": [{"Variable": "$.n", "NumericEquals": 1, "Next": "T"}]},
      "T": {"Type": "Task", "Resource": "f", "End": true}}}"#;
    let done = sim.run(workflow(&sim, text), json!({"n": 2}), seq());
    // As Step Functions reports it: States.Runtime, which no Catch can take.
    assert_eq!(done.result["error"], "States.Runtime", "{}", done.result);
    assert!(done.result["cause"].as_str().unwrap().contains("no Choice rule matched"), "{}", done.result);
    assert_eq!(done.error, Some(ErrorName::Runtime));
}

#[test]
fn storage_limits_are_refused_to_the_function() {
    let mut sim = Sim::new();
    sim.func("f", |_| {
        vec![
            Op::Put("", json!(1)),
            Op::Put("big", json!("x".repeat(100))),
            Op::Put("a", json!(1)),
            Op::Put("b", json!(1)),
            Op::Put("a", json!(2)),
            Op::ReturnReplies,
        ]
    });
    let app = model::Application::function("app", "f", &|f| sim.has(f)).unwrap();
    let config = Config { value_bytes_max: 50, writes_max: 1, ..seq() };
    let done = sim.run(app, json!({}), config);
    let replies = done.result["replies"].as_array().unwrap();
    assert!(replies[0]["refused"].as_str().unwrap().contains("key_bytes_max"));
    assert!(replies[1]["refused"].as_str().unwrap().contains("value_bytes_max"));
    assert_eq!(replies[2], Value::Null);
    assert!(replies[3]["refused"].as_str().unwrap().contains("writes_max"));
    assert_eq!(replies[4], Value::Null, "rewriting a key already written does not count again");
    assert_eq!(sim.store_value("a"), Some(json!(2)));
    assert_eq!(sim.store_value("b"), None);
}

#[test]
fn recursion_is_bounded_by_call_depth() {
    let mut sim = Sim::new();
    sim.func("rec", |_| vec![Op::Invoke("rec", json!({})), Op::ReturnReplies]);
    let app = model::Application::function("app", "rec", &|f| sim.has(f)).unwrap();
    let done = sim.run(app, json!({}), Config { call_depth_max: 3, ..seq() });
    assert_eq!(done.status, Status::Success);
    assert_eq!(sim.launches().len(), 4);
    let innermost = &done.result["replies"][0]["replies"][0]["replies"][0]["replies"][0];
    assert!(innermost["refused"].as_str().unwrap().contains("call_depth_max"), "{}", done.result);
}

#[test]
fn a_timeout_keeps_its_name_up_to_the_completion() {
    let mut sim = Sim::new();
    sim.func("ok", |_| vec![Op::Return(json!({}))]);
    sim.func("slow", |_| vec![Op::TimeOut]);
    let app = model::Application::sequence("s", &["ok".into(), "slow".into()], &|f| sim.has(f)).unwrap();
    let done = sim.run(app.clone(), json!({}), seq());
    assert_eq!(done.status, Status::DeveloperError);
    assert_eq!(done.error, Some(ErrorName::Timeout), "a timeout is told apart from other failures");
    assert_eq!(ErrorName::Timeout.to_string(), "States.Timeout");
    // With speculation on, the name reaches the completion the same way.
    let done = sim.run(app, json!({}), Config::default());
    assert_eq!(done.error, Some(ErrorName::Timeout));
}
