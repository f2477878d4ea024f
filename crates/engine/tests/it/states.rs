//! The new states in the engine, on virtual time: branches and iterations at once without speculation (within
//! `MaxConcurrency`), `Retry` after its back-off, `Wait` holding back what follows it, `Catch` inside a branch
//! leaving the other branches alone, and speculation past a `Wait` that commits nothing early.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use engine::harness::{Rng, Schedule};
use engine::{Config, Oracle, Status, tables};
use model::asl;
use serde_json::{Value, json};

use crate::sim::{Op, Sim};

fn workflow(sim: &Sim, definition: Value) -> Arc<model::Application> {
    let graph = asl::from_value("wf.json", &definition, &|f| sim.has(f)).unwrap();
    Arc::new(model::Application::workflow("wf", graph).unwrap())
}

fn off() -> Config {
    Config { speculation: false, ..Config::default() }
}

fn seeded(seed: u64) -> Schedule {
    Schedule::Seeded(Rng::new(seed))
}

#[test]
fn branches_and_iterations_run_at_once_without_speculation() {
    let mut sim = Sim::new();
    sim.func("work", |input| vec![Op::Put("seen", input.clone()), Op::Return(json!({"v": input["v"]}))]);
    let par = json!({"StartAt": "P", "States": {"P": {"Type": "Parallel", "End": true, "Branches": [
        {"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "work", "Parameters": {"v": 0}, "End": true}}},
        {"StartAt": "B", "States": {"B": {"Type": "Task", "Resource": "work", "Parameters": {"v": 1}, "End": true}}},
        {"StartAt": "C", "States": {"C": {"Type": "Task", "Resource": "work", "Parameters": {"v": 2}, "End": true}}}
    ]}}});
    let app = workflow(&sim, par);
    let mut most = 0;
    for seed in 1..20 {
        let seen = sim.run_with(app.clone(), json!({}), off(), Oracle::nothing(), seeded(seed));
        assert_eq!(seen.completion.result, json!([{"v": 0}, {"v": 1}, {"v": 2}]), "results in branch order");
        // Writes commit in program order: branch 0 first, so branch 2's write is the one left.
        assert_eq!(sim.store_value("seen"), Some(json!({"v": 2})));
        let order: Vec<Option<Value>> =
            seen.commits.iter().flat_map(|(_, w)| w.iter().map(|(_, v)| v.clone())).collect();
        assert_eq!(order, vec![Some(json!({"v": 0})), Some(json!({"v": 1})), Some(json!({"v": 2}))]);
        most = most.max(seen.max_active);
    }
    assert_eq!(most, 3, "the three branches ran at once");

    let mut most = 0;
    let map = json!({"StartAt": "M", "States": {"M": {"Type": "Map", "MaxConcurrency": 2, "ItemsPath": "$.xs",
        "End": true, "ItemSelector": {"v.$": "$$.Map.Item.Value"},
        "ItemProcessor": {"StartAt": "W", "States": {"W": {"Type": "Task", "Resource": "work", "End": true}}}}}});
    let app = workflow(&sim, map);
    for seed in 1..20 {
        let seen =
            sim.run_with(app.clone(), json!({"xs": [10, 11, 12, 13, 14]}), off(), Oracle::nothing(), seeded(seed));
        assert_eq!(seen.completion.result, json!([{"v": 10}, {"v": 11}, {"v": 12}, {"v": 13}, {"v": 14}]));
        assert!(seen.max_active <= 2, "seed {seed}: {} iterations at once, over MaxConcurrency 2", seen.max_active);
        most = most.max(seen.max_active);
    }
    assert_eq!(most, 2, "two iterations ran at once");
}

#[test]
fn a_retry_runs_again_after_its_backoff_and_sees_its_retry_count() {
    let mut sim = Sim::new();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    sim.func("flaky", move |input| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        if n < 2 {
            vec![Op::Put("partial", json!(n)), Op::Fail(Status::ApplicationError, json!(format!("attempt {n}")))]
        } else {
            vec![Op::Return(json!({"retries": input["retries"], "at": input["at"]}))]
        }
    });
    let definition = json!({"StartAt": "F", "States": {"F": {"Type": "Task", "Resource": "flaky",
        "Parameters": {"retries.$": "$$.State.RetryCount", "at.$": "$$.State.EnteredTime"},
        "Retry": [{"ErrorEquals": ["States.TaskFailed"], "IntervalSeconds": 2, "MaxAttempts": 3, "BackoffRate": 3.0}],
        "End": true}}});
    let app = workflow(&sim, definition);
    for (config, speculation) in [(off(), false), (Config::default(), true)] {
        calls.store(0, Ordering::SeqCst);
        let seen = sim.run_with(app.clone(), json!({}), config, Oracle::nothing(), Schedule::Eager);
        assert_eq!(seen.completion.status, Status::Success, "speculation {speculation}: {:?}", seen.completion);
        // Two retries: after 2 s, then 2 × 3 = 6 s more; the third attempt enters the state at 8 s.
        assert_eq!(seen.completion.result, json!({"retries": 2, "at": "2026-01-01T00:00:08Z"}));
        assert_eq!(seen.launch_ms, vec![0, 2000, 8000], "speculation {speculation}");
        assert_eq!(sim.store_value("partial"), None, "a failed attempt's writes never commit");
    }
}

#[test]
fn retries_run_out_into_the_catch_and_a_caught_branch_leaves_the_others_alone() {
    let mut sim = Sim::new();
    sim.func("bad", |_| vec![Op::Fail(Status::ApplicationError, json!("no"))]);
    sim.func("ok", |input| vec![Op::Put("ok", json!(true)), Op::Return(json!({"ok": input["n"]}))]);
    sim.func("fallback", |input| vec![Op::Return(json!({"fell": input["err"]["Error"]}))]);
    let definition = json!({"StartAt": "P", "States": {"P": {"Type": "Parallel", "End": true, "Branches": [
        {"StartAt": "B", "States": {
            "B": {"Type": "Task", "Resource": "bad", "End": true,
                  "Retry": [{"ErrorEquals": ["States.ALL"], "MaxAttempts": 1}],
                  "Catch": [{"ErrorEquals": ["States.TaskFailed"], "ResultPath": "$.err", "Next": "F"}]},
            "F": {"Type": "Task", "Resource": "fallback", "End": true}}},
        {"StartAt": "O", "States": {"O": {"Type": "Task", "Resource": "ok", "Parameters": {"n": 1}, "End": true}}}
    ]}}});
    let app = workflow(&sim, definition);
    for seed in 1..10 {
        let seen = sim.run_with(app.clone(), json!({}), off(), Oracle::nothing(), seeded(seed));
        assert_eq!(seen.completion.result, json!([{"fell": "States.TaskFailed"}, {"ok": 1}]), "seed {seed}");
        let ok_runs = seen.launches.iter().filter(|f| *f == "ok").count();
        assert_eq!(ok_runs, 1, "seed {seed}: the other branch ran once: {:?}", seen.launches);
        assert_eq!(seen.launches.iter().filter(|f| *f == "bad").count(), 2, "one try and one retry");
    }
}

#[test]
fn a_wait_holds_back_what_follows_it_and_speculation_past_it_commits_nothing_early() {
    let mut sim = Sim::new();
    sim.func("first", |input| vec![Op::Return(json!({"n": input["n"]}))]);
    sim.func("after", |input| vec![Op::Put("after", input["n"].clone()), Op::Return(json!({"done": input["n"]}))]);
    let definition = json!({"StartAt": "A", "States": {
        "A": {"Type": "Task", "Resource": "first", "Next": "W"},
        "W": {"Type": "Wait", "Seconds": 5, "Next": "B"},
        "B": {"Type": "Task", "Resource": "after", "End": true}}});
    let app = workflow(&sim, definition);
    let seen = sim.run_with(app.clone(), json!({"n": 1}), off(), Oracle::nothing(), Schedule::Eager);
    assert_eq!(seen.completion.result, json!({"done": 1}));
    assert_eq!(seen.launch_ms, vec![0, 5000], "without speculation the function after the wait starts after it");
    // With speculation and a memo table that knows the first function's output, the function after the wait
    // starts at once, but its write commits only when the wait is over.
    let oracle = tables::learning(Default::default());
    sim.run_with(app.clone(), json!({"n": 2}), Config::default(), oracle.clone(), Schedule::Eager);
    let seen = sim.run_with(app, json!({"n": 2}), Config::default(), oracle, Schedule::Eager);
    assert_eq!(seen.completion.result, json!({"done": 2}));
    assert_eq!(seen.launch_ms, vec![0, 0], "the function after the wait ran speculatively at once");
    assert_eq!(seen.commit_ms.last(), Some(&5000), "its write committed when the wait ended: {:?}", seen.commit_ms);
}

#[test]
fn a_failure_the_memo_saw_is_followed_to_its_catch_speculatively() {
    let mut sim = Sim::new();
    sim.func("check", |input| {
        if input["n"].as_i64().unwrap_or(0) > 2 {
            vec![Op::Fail(Status::ApplicationError, json!("too many"))]
        } else {
            vec![Op::Return(json!({"ok": true}))]
        }
    });
    sim.func("refuse", |input| {
        vec![Op::Put("refused", input["why"]["Cause"].clone()), Op::Return(json!({"refused": true}))]
    });
    sim.func("accept", |_| vec![Op::Return(json!({"accepted": true}))]);
    let definition = json!({"StartAt": "Check", "States": {
        "Check": {"Type": "Task", "Resource": "check", "ResultPath": "$.check", "Next": "Accept",
                  "Catch": [{"ErrorEquals": ["States.TaskFailed"], "ResultPath": "$.why", "Next": "Refuse"}]},
        "Accept": {"Type": "Task", "Resource": "accept", "End": true},
        "Refuse": {"Type": "Task", "Resource": "refuse", "End": true}}});
    let app = workflow(&sim, definition);
    let oracle = tables::learning(Default::default());
    let first = sim.run_with(app.clone(), json!({"n": 5}), Config::default(), oracle.clone(), Schedule::Eager);
    assert_eq!(first.completion.result, json!({"refused": true}));
    let refuse_run = |seen: &engine::harness::Observed| {
        seen.completion.runs.iter().find(|r| r.function == "refuse").map(|r| (r.speculative, r.fate)).unwrap()
    };
    assert_eq!(
        refuse_run(&first),
        (false, engine::Fate::Committed),
        "the first time, the catch runs after the failure"
    );
    let again = sim.run_with(app, json!({"n": 5}), Config::default(), oracle, Schedule::Eager);
    assert_eq!(again.completion.result, json!({"refused": true}));
    assert_eq!(sim.store_value("refused"), Some(json!("too many")));
    assert_eq!(
        refuse_run(&again),
        (true, engine::Fate::Committed),
        "the second time, the catch's function started on the remembered failure, and was kept: {:?}",
        again.completion.runs
    );
    assert!(again.completion.runs.iter().all(|r| r.function != "accept"), "nothing ran on the success path");
}

#[test]
fn waits_inside_iterations_run_at_once() {
    let mut sim = Sim::new();
    sim.func("t", |input| vec![Op::Return(json!({"v": input["v"]}))]);
    let definition = json!({"StartAt": "M", "States": {"M": {"Type": "Map", "ItemsPath": "$.xs", "End": true,
        "ItemSelector": {"v.$": "$$.Map.Item.Value"},
        "ItemProcessor": {"StartAt": "W", "States": {
            "W": {"Type": "Wait", "Seconds": 10, "Next": "T"},
            "T": {"Type": "Task", "Resource": "t", "End": true}}}}}});
    let app = workflow(&sim, definition);
    for config in [off(), Config::default()] {
        let seen = sim.run_with(app.clone(), json!({"xs": [1, 2, 3]}), config, Oracle::nothing(), Schedule::Eager);
        assert_eq!(seen.completion.result, json!([{"v": 1}, {"v": 2}, {"v": 3}]));
        // Each iteration waits 10 s, all at once: not 10 s after the one before.
        assert_eq!(seen.launch_ms, vec![10_000, 10_000, 10_000], "speculation {}", config.speculation);
    }
}

/// Guesses the output of `profile` for any input: its `user` passed through, its `score` unknown.
struct UserKnownScoreNot;

impl engine::oracle::Memo for UserKnownScoreNot {
    fn lookup(&self, _: &str, _: &str, _: &Value) -> Option<Value> {
        None
    }
    fn guess(&self, function: &str, _: &str, input: &Value) -> Option<engine::oracle::Guess> {
        use engine::oracle::Guess;
        (function == "profile").then(|| {
            Guess::Object(vec![("user".into(), Guess::Value(input["user"].clone())), ("score".into(), Guess::Unknown)])
        })
    }
    fn train(&self, _: &str, _: &str, _: &Value, _: &Value) {}
}

/// A function whose input needs only the guessed part of an output starts on the guess; one whose input an
/// intrinsic makes from the unknown part waits for the real output, rather than starting on a string that only
/// looks known (and being squashed).
#[test]
fn a_guess_derives_only_what_its_known_fields_determine() {
    let mut sim = Sim::new();
    sim.func("profile", |input| vec![Op::Return(json!({"user": input["user"], "score": 7}))]);
    sim.func("greet", |input| vec![Op::Return(json!({"said": input["msg"]}))]);
    let step = |parameters: Value| {
        json!({"StartAt": "Profile", "States": {
            "Profile": {"Type": "Task", "Resource": "profile", "ResultPath": "$.p", "Next": "Greet"},
            "Greet": {"Type": "Task", "Resource": "greet", "Parameters": parameters, "End": true}}})
    };
    let oracle = Oracle { memo: Arc::new(UserKnownScoreNot), ..Oracle::nothing() };
    let greet = |seen: &engine::harness::Observed| -> Vec<(bool, engine::Fate)> {
        seen.completion.runs.iter().filter(|r| r.function == "greet").map(|r| (r.speculative, r.fate)).collect()
    };
    let known = workflow(&sim, step(json!({"msg.$": "States.Format('hi {}', $.p.user)"})));
    let seen = sim.run_with(known, json!({"user": "gus"}), Config::default(), oracle.clone(), Schedule::Eager);
    assert_eq!(seen.completion.result, json!({"said": "hi gus"}));
    assert_eq!(greet(&seen), [(true, engine::Fate::Committed)], "greet started on the guessed user");
    assert!(seen.completion.stats.field_guesses > 0);
    let unknown = workflow(&sim, step(json!({"msg.$": "States.Format('hi {} {}', $.p.user, $.p.score)"})));
    let seen = sim.run_with(unknown, json!({"user": "gus"}), Config::default(), oracle, Schedule::Eager);
    assert_eq!(seen.completion.result, json!({"said": "hi gus 7"}));
    let fates: Vec<engine::Fate> = greet(&seen).into_iter().map(|(_, fate)| fate).collect();
    assert_eq!(fates, [engine::Fate::Committed], "greet waited for the real score: no run of it was squashed");
    assert!(seen.completion.stats.squashes.is_empty(), "{:?}", seen.completion.stats);
}
