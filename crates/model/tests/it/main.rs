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
        ("j.json", task(r#""Retry":[],"#), &["state \"T\"", "Retry is not supported yet"]),
        ("k.json", task(r#""Catch":[],"#), &["Catch is not supported yet"]),
        ("l.json", r#"{"StartAt":"M","States":{"M":{"Type":"Map","End":true}}}"#.into(), &["Map is not supported yet"]),
        ("m.json", r#"{"StartAt":"W","States":{"W":{"Type":"Wait","Seconds":1,"End":true}}}"#.into(), &["Wait"]),
        ("n.json", task(r#""Colour":1,"#), &["field \"Colour\" is not allowed in a Task state"]),
        ("o.json", task(r#""InputPath":"a.b","#), &["InputPath", "must start with '$'"]),
        ("p.json", task(r#""Parameters":{"x.$":"States.Format('{}', $.a)"},"#), &["intrinsic functions"]),
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

#[test]
fn oversized_definitions_are_rejected() {
    let big = format!(r#"{{"Comment":"{}","StartAt":"S","States":{{"S":{{"Type":"Succeed"}}}}}}"#, "x".repeat(1 << 20));
    check("big.json", &big, Err(&["over the limit"]));
}
