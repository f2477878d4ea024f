//! ASL parsing and validation on valid and invalid documents.

use model::asl;
use model::workflow::{Next, StateKind};

fn known(f: &str) -> bool {
    ["login", "read", "act"].contains(&f)
}

/// Parses `text` as `file`; `expect` is `Ok(n_states)` or `Err(fragments every one of which the error contains)`.
fn check(file: &str, text: &str, expect: Result<usize, &[&str]>) {
    match (asl::parse(file, text, &known), expect) {
        (Ok(g), Ok(n)) => assert_eq!(g.states.len(), n, "{file}"),
        (Err(e), Err(needles)) => {
            let msg = e.to_string();
            for needle in needles {
                assert!(msg.contains(needle), "error for {file} lacks {needle:?}: {msg}");
            }
        }
        (got, want) => panic!("{file}: got {got:?}, want {want:?}"),
    }
}

const SMARTHOME: &str = r#"{
  "Comment": "the paper's Listing 1",
  "StartAt": "Login",
  "States": {
    "Login": {"Type": "Task", "Resource": "login", "ResultPath": "$.auth", "Next": "LoggedIn"},
    "LoggedIn": {"Type": "Choice", "Choices": [
        {"Variable": "$.auth.ok", "BooleanEquals": true, "Next": "Read"}], "Default": "Denied"},
    "Read": {"Type": "Task", "Resource": "read", "Parameters": {"user.$": "$.user"}, "Next": "Both"},
    "Both": {"Type": "Parallel", "End": true, "Branches": [
        {"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "act", "End": true}}},
        {"StartAt": "P", "States": {"P": {"Type": "Pass", "Result": 1, "End": true}}}]},
    "Denied": {"Type": "Fail", "Error": "Denied", "Cause": "bad password"}
  }
}"#;

#[test]
fn valid_documents() {
    check("home.json", SMARTHOME, Ok(5));
    let yaml = r#"
StartAt: Loop
States:
  Loop:
    Type: Task
    Resource: read
    Next: Again
  Again:
    Type: Choice
    Choices:
      - Variable: $.more
        BooleanEquals: true
        Next: Loop
    Default: Done
  Done:
    Type: Succeed
"#;
    check("loop.yaml", yaml, Ok(3));
}

#[test]
fn graph_is_resolved() {
    let g = asl::parse("home.json", SMARTHOME, &known).unwrap();
    assert_eq!(g.states[g.start].name, "Login");
    let StateKind::Task { function, next: Next::State(n), .. } = &g.states[g.start].kind else { panic!() };
    assert_eq!(function, "login");
    assert_eq!(g.states[*n].name, "LoggedIn");
    let both = g.states.iter().find(|s| s.name == "Both").unwrap();
    let StateKind::Parallel { branches, .. } = &both.kind else { panic!("{both:?}") };
    assert_eq!(branches.len(), 2);
}

#[test]
fn invalid_documents_name_file_state_and_problem() {
    let task = |extra: &str| {
        format!(r#"{{"StartAt":"T","States":{{"T":{{"Type":"Task","Resource":"login",{extra}"End":true}}}}}}"#)
    };
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("a.json", "{".into(), &["a.json", "invalid JSON"]),
        ("a.yaml", "StartAt: [".into(), &["a.yaml", "invalid YAML"]),
        ("b.json", r#"{"States":{}}"#.into(), &["b.json", "missing \"StartAt\""]),
        ("c.json", r#"{"StartAt":"X","States":{}}"#.into(), &["\"States\" is empty"]),
        ("d.json", r#"{"StartAt":"X","States":{"Y":{"Type":"Succeed"}}}"#.into(), &["StartAt names \"X\""]),
        (
            "e.json",
            r#"{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"nope","End":true}}}"#.into(),
            &["e.json", "state \"T\"", "unknown function \"nope\""],
        ),
        (
            "f.json",
            r#"{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"login","Next":"Gone"}}}"#.into(),
            &["state \"T\"", "Next names \"Gone\""],
        ),
        (
            "g.json",
            r#"{"StartAt":"T","States":{"T":{"Type":"Succeed"},"Orphan":{"Type":"Succeed"}}}"#.into(),
            &["state \"Orphan\"", "unreachable"],
        ),
        (
            "h.json",
            r#"{"StartAt":"A","States":{"A":{"Type":"Task","Resource":"login","Next":"B"},
                 "B":{"Type":"Pass","Next":"A"}}}"#
                .into(),
            &["loop with no Choice"],
        ),
        (
            "i.json",
            r#"{"StartAt":"C","States":{"C":{"Type":"Choice","Choices":[{"Variable":"$.x","IsNull":true,"Next":"C"}],
                 "Default":"C"}}}"#
                .into(),
            &["state \"C\"", "never reach an end"],
        ),
        (
            "j.json",
            task(r#""Retry":[{"ErrorEquals":["States.ALL"]},{"ErrorEquals":["X"]}],"#),
            &["j.json", "state \"T\"", "Retry[0]", "States.ALL", "last"],
        ),
        (
            "k.json",
            task(r#""Catch":[{"ErrorEquals":["States.ALL","X"],"Next":"T"}],"#),
            &["state \"T\"", "Catch[0]", "States.ALL", "alone"],
        ),
        (
            "l.json",
            r#"{"StartAt":"M","States":{"M":{"Type":"Map","End":true}}}"#.into(),
            &["l.json", "state \"M\"", "needs \"ItemProcessor\""],
        ),
        (
            "m.json",
            r#"{"StartAt":"W","States":{"W":{"Type":"Wait","Seconds":1,"Timestamp":"2026-01-01T00:00:00Z","End":true}}}"#
                .into(),
            &["m.json", "state \"W\"", "exactly one of", "Seconds and Timestamp"],
        ),
        ("m2.json", task(r#""Retry":[{"ErrorEquals":["X"],"MaxAttempts":-1}],"#), &["Retry[0]", "MaxAttempts", "negative"]),
        ("m3.json", task(r#""Retry":[{"ErrorEquals":["X"],"MaxAttempts":5000}],"#), &["MaxAttempts 5000", "retry_attempts_max"]),
        ("m4.json", task(r#""Retry":[{"ErrorEquals":["X"],"BackoffRate":0.5}],"#), &["BackoffRate", "at least 1.0"]),
        ("m5.json", task(r#""Catch":[{"ErrorEquals":["X"]}],"#), &["Catch[0]", "needs \"Next\""]),
        ("m6.json", task(r#""Parameters":{"x.$":"States.Nope($.a)"},"#), &["state \"T\"", "States.Nope"]),
        ("m7.json", task(r#""Parameters":{"x.$":"States.ArrayGetItem($.a)"},"#), &["state \"T\"", "States.ArrayGetItem", "2"]),
        ("m8.json", task(r#""QueryLanguage":"JSONata","#), &["state \"T\"", "JSONata", "not supported"]),
        (
            "m9.json",
            r#"{"QueryLanguage":"JSONata","StartAt":"S","States":{"S":{"Type":"Succeed"}}}"#.into(),
            &["m9.json", "JSONata"],
        ),
        (
            "m10.json",
            r#"{"StartAt":"M","States":{"M":{"Type":"Map","End":true,"ItemProcessor":{
                 "ProcessorConfig":{"Mode":"DISTRIBUTED"},"StartAt":"S","States":{"S":{"Type":"Succeed"}}}}}}"#
                .into(),
            &["distributed Map"],
        ),
        (
            "m11.json",
            r#"{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"arn:aws:states:::dynamodb:putItem","End":true}}}"#.into(),
            &["state \"T\"", "lambda:invoke is supported"],
        ),
        (
            "m12.json",
            r#"{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"arn:aws:states:::lambda:invoke","End":true}}}"#.into(),
            &["FunctionName"],
        ),
        ("m13.json", task(r#""TimeoutSeconds":0,"#), &["TimeoutSeconds", "positive"]),
        (
            "m14.json",
            r#"{"StartAt":"W","States":{"W":{"Type":"Wait","Seconds":999999,"End":true}}}"#.into(),
            &["Seconds 999999", "wait_seconds_max"],
        ),
        ("n.json", task(r#""Colour":1,"#), &["field \"Colour\" is not allowed in a Task state"]),
        ("o.json", task(r#""InputPath":"a.b","#), &["InputPath", "must start with '$'"]),
        ("p.json", task(r#""InputPath":"States.Format('{}', $.a)","#), &["InputPath", "intrinsic function"]),
        (
            "q.json",
            r#"{"StartAt":"C","States":{"C":{"Type":"Choice","Choices":[{"Variable":"$.x","Next":"D"}]},
                 "D":{"Type":"Succeed"}}}"#
                .into(),
            &["state \"C\"", "Choices[0]", "exactly one operator"],
        ),
        (
            "r.json",
            r#"{"StartAt":"P","States":{"P":{"Type":"Parallel","End":true,"Branches":[
                 {"StartAt":"X","States":{"X":{"Type":"Task","Resource":"ghost","End":true}}}]}}}"#
                .into(),
            &["state \"P/branch 0/X\"", "unknown function \"ghost\""],
        ),
        ("s.json", task(r#""Next":"T","#), &["both \"Next\" and \"End\""]),
        ("t.json", r#"{"StartAt":"T","States":{"T":{"Type":"Lambda"}}}"#.into(), &["unknown state type \"Lambda\""]),
        ("u.json", r#"{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"login"}}}"#.into(), &["needs \"Next\""]),
    ];
    for (file, text, needles) in cases {
        check(file, &text, Err(needles));
    }
}

/// A definition as Step Functions exports it: Lambda ARNs, `lambda:invoke`, `QueryLanguage`, `Map`, `Retry`,
/// `Catch`, `Wait`, timeouts, intrinsic functions and the context object all deploy unchanged.
#[test]
fn definitions_exported_from_aws_deploy_unchanged() {
    let text = r#"{
      "QueryLanguage": "JSONPath", "TimeoutSeconds": 300,
      "StartAt": "Login",
      "States": {
        "Login": {"Type": "Task", "QueryLanguage": "JSONPath",
          "Resource": "arn:aws:lambda:eu-west-1:123456789012:function:login:prod",
          "TimeoutSeconds": 10, "ResultPath": "$.auth", "Next": "Read",
          "Retry": [{"ErrorEquals": ["States.Timeout", "Throttled"], "IntervalSeconds": 2, "MaxAttempts": 4,
                     "BackoffRate": 1.5, "MaxDelaySeconds": 30, "JitterStrategy": "FULL"},
                    {"ErrorEquals": ["States.ALL"]}],
          "Catch": [{"ErrorEquals": ["States.TaskFailed"], "ResultPath": "$.error", "Next": "Denied"}]},
        "Read": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
          "Parameters": {"FunctionName": "arn:aws:lambda:eu-west-1:123456789012:function:read",
                         "Payload": {"user.$": "$.user", "id.$": "$$.Execution.Id",
                                     "greeting.$": "States.Format('hi {}', $.user)"}},
          "ResultSelector": {"value.$": "$.Payload"}, "OutputPath": "$.value", "Next": "Pause"},
        "Pause": {"Type": "Wait", "SecondsPath": "$.delay", "Next": "Each"},
        "Each": {"Type": "Map", "ItemsPath": "$.rooms", "MaxConcurrency": 4,
          "ItemSelector": {"room.$": "$$.Map.Item.Value", "index.$": "$$.Map.Item.Index"},
          "ItemProcessor": {"ProcessorConfig": {"Mode": "INLINE"}, "StartAt": "Act",
            "States": {"Act": {"Type": "Task", "Resource": "act", "End": true}}},
          "ResultPath": "$.acted", "End": true},
        "Denied": {"Type": "Fail", "ErrorPath": "$.error.Error", "CausePath": "States.Format('no: {}', $.user)"}
      }
    }"#;
    let g = asl::parse("exported.json", text, &known).unwrap();
    assert_eq!(g.timeout_seconds, Some(300));
    let StateKind::Task { function, integration, recovery, .. } = &g.states[g.start].kind else { panic!() };
    assert_eq!(function, "login", "a Lambda ARN with an alias names the function");
    assert_eq!(*integration, model::workflow::Integration::Direct);
    assert_eq!(recovery.retry.len(), 2);
    assert_eq!(recovery.retry[1].max_attempts, 3, "ASL's defaults");
    assert_eq!(recovery.retry[1].interval_seconds, 1);
    assert_eq!(recovery.retry[1].backoff_rate, 2.0);
    let read = g.states.iter().find(|s| s.name == "Read").unwrap();
    let StateKind::Task { function, integration, .. } = &read.kind else { panic!() };
    assert_eq!((function.as_str(), *integration), ("read", model::workflow::Integration::LambdaInvoke));
    assert!(matches!(g.states.iter().find(|s| s.name == "Each").unwrap().kind, StateKind::Map { .. }));
    for (resource, name) in [
        ("arn:aws:lambda:us-east-1:1:function:act", Some("act")),
        ("arn:aws:lambda:us-east-1:1:function:act:7", Some("act")),
        ("1:function:act", Some("act")),
        ("act:live", Some("act")),
        ("arn:aws:states:::lambda:invoke", None),
        ("arn:aws:s3:::bucket", None),
    ] {
        assert_eq!(asl::lambda_function_name(resource), name, "{resource}");
    }
}

#[test]
fn oversized_definitions_are_rejected() {
    let big = format!(r#"{{"Comment":"{}","StartAt":"S","States":{{"S":{{"Type":"Succeed"}}}}}}"#, "x".repeat(1 << 20));
    check("big.json", &big, Err(&["over the limit"]));
}

/// A loop through a `Catch` can end (when the task stops failing), as on AWS; a loop through neither a Choice
/// nor a Catch cannot.
#[test]
fn a_loop_through_a_catch_deploys() {
    let text = r#"{"StartAt": "T", "States": {
      "T": {"Type": "Task", "Resource": "login", "End": true,
            "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Pause"}]},
      "Pause": {"Type": "Wait", "Seconds": 1, "Next": "T"}}}"#;
    check("catch-loop.json", text, Ok(2));
    let text = r#"{"StartAt": "T", "States": {
      "T": {"Type": "Task", "Resource": "login", "Next": "Pause"},
      "Pause": {"Type": "Wait", "Seconds": 1, "Next": "T"}}}"#;
    check("plain-loop.json", text, Err(&["loop with no Choice"]));
}
