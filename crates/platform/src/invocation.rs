//! Drives one invocation: feeds the engine events, executes its actions, and builds the activation records.
//!
//! Everything that happens to the invocation — a call from running code, a run finishing — arrives on one
//! channel and becomes an [`Event`]. Actions are executed in the order the engine returned them; store reads and
//! commits are answered before the next event is taken, so the engine always sees a consistent store.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use engine::{Action, Call, Completion, ErrorName, Event, Failure, Outcome, RequestId, RunId, Status};
use model::{Application, Kind};
use runtime::{Activation, AfterSquash, Cpu, Done, Host, HostRequest, Killer, Reply, ReplyTo, Report};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::record::{ActivationRecord, Response, epoch_ms, new_activation_id};
use crate::{Deployments, Inner, RecorderMsg};

/// When one function run started and ended, with monotonic precision (activation records keep milliseconds).
#[derive(Debug, Clone)]
pub struct RunTiming {
    pub function: String,
    /// The run that called it (an index into the same list), for implicit calls.
    pub caller: Option<usize>,
    pub launched: Instant,
    pub finished: Instant,
}

/// The outcome of one invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub status: Status,
    pub result: Value,
    /// The failure's ASL name (`States.Timeout`, `States.TaskFailed`, ...), when the invocation failed.
    pub error: Option<ErrorName>,
    /// The top record: the application's, or the function's when a function was invoked directly.
    pub record: ActivationRecord,
    /// Records of the function runs, in launch order (for a direct function invocation, the callees).
    pub runs: Vec<ActivationRecord>,
    pub timings: Vec<RunTiming>,
}

enum Incoming {
    Call { run: RunId, request: HostRequest },
    Finished { run: RunId, report: Report },
    EffectDone { run: RunId, request: RequestId, result: Result<Value, String> },
    TimerFired { timer: engine::TimerId },
}

/// What the driver keeps about one run the engine launched, indexed by its `RunId`: the activation record in the
/// making, the handle that kills it, and its report once it finishes. (Not the engine's pipeline slot, a position
/// in program order: this is the platform's bookkeeping of one run.)
struct TrackedRun {
    function: String,
    caller: Option<usize>,
    record: ActivationRecord,
    launched: Instant,
    started: SystemTime,
    killer: Option<Killer>,
    /// When the engine had it killed (squashed, abandoned, or past its Task's timeout), and why.
    killed: Option<Instant>,
    kill_cause: Option<engine::Cause>,
    /// The uuid of its ephemeral API key, removed when it ends.
    api_key: Option<String>,
    report: Option<(Report, Instant, SystemTime)>,
}

/// How a runtime's report reaches the engine: OpenWhisk's status, and the error's name, with a timeout kept apart.
fn to_outcome(report: &Report, payload_bytes_max: u64) -> Outcome {
    use runtime::Outcome as R;
    let failed = |status, name, error| Outcome::Failure(Failure::new(status, name, error));
    match &report.outcome {
        R::Success(v) => {
            let size = serde_json::to_vec(v).map_or(0, |b| b.len()) as u64;
            if size > payload_bytes_max {
                let error = format!(
                    "The action produced a response that exceeded the allowed length: {size} > {payload_bytes_max} bytes."
                );
                return failed(Status::DeveloperError, ErrorName::TaskFailed, json!(error));
            }
            Outcome::Success(v.clone())
        }
        R::ApplicationError(e) => failed(Status::ApplicationError, ErrorName::TaskFailed, e.clone()),
        R::Threw { name, cause, message } => Outcome::Failure(Failure {
            status: Status::DeveloperError,
            name: ErrorName::from(name.as_str()),
            error: json!(message),
            cause: cause.clone(),
        }),
        R::DeveloperError(m) => failed(Status::DeveloperError, ErrorName::TaskFailed, json!(m)),
        R::Timeout { timeout_ms } => failed(
            Status::DeveloperError,
            ErrorName::Timeout,
            json!(format!("The action exceeded its time limits of {timeout_ms} milliseconds.")),
        ),
        R::Killed => failed(Status::InternalError, ErrorName::TaskFailed, json!("The activation was killed.")),
    }
}

/// What one invocation runs, and how.
pub(crate) struct Request {
    pub app: Arc<Application>,
    pub input: Value,
    pub config: engine::Config,
    pub oracle: engine::Oracle,
    /// The invocation's activation id (the application's record, or a directly invoked function's).
    pub activation_id: String,
}

pub(crate) async fn run(
    inner: Arc<Inner>,
    namespace: String,
    deployments: Arc<Deployments>,
    request: Request,
) -> Invocation {
    let Request { app, input, config, oracle, activation_id: app_id } = request;
    // Speculative work runs on idle CPU only, until the engine promotes it.
    let speculative_cpu = match config.speculative_cpu {
        engine::SpeculativeCpu::Idle => Cpu::Idle,
        engine::SpeculativeCpu::Shared => Cpu::Full,
    };
    let after_squash = match config.squashed_handlers {
        engine::SquashedHandlers::Reuse => AfterSquash::Reuse,
        engine::SquashedHandlers::Retire => AfterSquash::Retire,
    };
    let started = SystemTime::now();
    let direct = matches!(app.form, model::app::Form::Function) && !deployments.apps.contains_key(&app.name);
    let mut engine = engine::engine(app.clone(), deployments.catalog.clone(), config, oracle);
    let (tx, mut rx) = mpsc::unbounded_channel::<Incoming>();
    let mut tracked: Vec<TrackedRun> = Vec::new();
    let mut replies: HashMap<RequestId, ReplyTo> = HashMap::new();
    let mut next_request: RequestId = 0;
    let mut load = inner.load.load(Ordering::Relaxed);
    let execution = engine::Execution {
        id: app_id.clone(),
        name: app_id.clone(),
        namespace: namespace.clone(),
        start_ms: epoch_ms(started) as i64,
        input: input.clone(),
    };
    let mut events = VecDeque::from([
        Event::Load { cpu_percent: load },
        Event::Clock { unix_ms: epoch_ms(started) as i64 },
        Event::Start { input, execution },
    ]);
    let mut completion: Option<Completion> = None;

    loop {
        while let Some(event) = events.pop_front() {
            for action in engine.step(event) {
                match action {
                    Action::Launch { run, function, input, caller, speculative } => {
                        debug_assert_eq!(run.index(), tracked.len());
                        let id = if direct && caller.is_none() && run == RunId(0) {
                            app_id.clone()
                        } else {
                            new_activation_id()
                        };
                        let parent = caller.map(|c| tracked[c.index()].record.activation_id.clone());
                        let ctx = LaunchCtx {
                            inner: &inner,
                            namespace: &namespace,
                            deployments: &deployments,
                            tx: &tx,
                            app_id: &app_id,
                            direct,
                            cpu: if speculative { speculative_cpu } else { Cpu::Full },
                            after_squash,
                        };
                        let track = launch(&ctx, run, &function, input, id, parent, speculative);
                        if let Err(outcome) = &track.1 {
                            events.push_back(Event::Finished { run, outcome: outcome.clone() });
                        }
                        let mut track = track.0;
                        track.caller = caller.map(RunId::index);
                        tracked.push(track);
                    }
                    Action::Reply { request, reply, .. } => {
                        if let Some(reply_to) = replies.remove(&request) {
                            reply_to(reply);
                        }
                    }
                    Action::ReadStore { run, request, key } => {
                        let event = match inner.store.get(&namespace, &key).await {
                            Ok(v) => Event::StoreRead { run, request, value: v.value, version: v.version },
                            // A broken store is the platform's failure, not the function's: the read is refused.
                            Err(e) => {
                                if let Some(reply_to) = replies.remove(&request) {
                                    reply_to(Reply::Refused(format!("storage is unavailable: {e}")));
                                }
                                continue;
                            }
                        };
                        events.push_back(event);
                    }
                    Action::Commit { run, writes, expect } => {
                        let batch = storage::Batch {
                            namespace: namespace.clone(),
                            writes: writes
                                .into_iter()
                                .map(|(key, v)| storage::Write {
                                    key,
                                    op: v.map_or(storage::Op::Delete, storage::Op::Put),
                                })
                                .collect(),
                            expect,
                        };
                        events.push_back(match inner.store.apply(batch).await {
                            Ok(_) => Event::Committed { run },
                            Err(storage::Error::Conflict { key, .. }) => Event::CommitConflict { run, key },
                            Err(e) => Event::CommitFailed { run, error: e.to_string() },
                        });
                    }
                    Action::Promote { run } => {
                        if let Some(k) = tracked.get(run.index()).and_then(|t| t.killer.as_ref()) {
                            k.promote();
                        }
                    }
                    Action::Settle { run } => {
                        // Its result stands: a handler held back for it may serve others now, not only once the
                        // whole invocation is over.
                        if let Some(k) = tracked.get(run.index()).and_then(|t| t.killer.as_ref()) {
                            k.settle();
                        }
                    }
                    Action::Discard { run } => {
                        // Squashed after it finished: its handler serves again only if the runtime finds it left
                        // nothing behind. Not a kill: the run's time ended with its report.
                        if let Some(k) = tracked.get(run.index()).and_then(|t| t.killer.as_ref()) {
                            k.kill();
                        }
                    }
                    Action::Kill { run, cause } => {
                        if let Some(track) = tracked.get_mut(run.index()) {
                            if let Some(k) = track.killer.as_ref() {
                                k.kill();
                            }
                            track.killed = Some(Instant::now());
                            track.kill_cause = Some(cause);
                        }
                    }
                    Action::Effect { run, request, effect: Call::Syscall { .. } } => {
                        // A held system call goes on now: the sandbox's supervisor performs it.
                        let released = json!({"released_ns": runtime::sandbox::monotonic_ns()});
                        events.push_back(Event::EffectDone { run, request, result: Ok(released) });
                    }
                    Action::Effect { run, request, effect } => {
                        let done = tx.clone();
                        let policy = inner.policy.clone();
                        let body_max = inner.config.payload_bytes_max as u64;
                        tokio::spawn(async move {
                            let result = match effect {
                                Call::Http { request } => tokio::task::spawn_blocking(move || {
                                    crate::effects::http(&request, body_max, policy.as_deref())
                                })
                                .await
                                .unwrap_or_else(|e| Err(format!("http: {e}"))),
                                other => Err(format!("{other:?} is no external effect")),
                            };
                            let _ = done.send(Incoming::EffectDone { run, request, result });
                        });
                    }
                    Action::SetTimer { timer, delay_ms } => {
                        // The platform owns the clock: the engine hears that the time passed as an event.
                        let done = tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
                            let _ = done.send(Incoming::TimerFired { timer });
                        });
                    }
                    Action::Complete(c) => completion = Some(c),
                }
            }
        }
        let outstanding = tracked.iter().any(|s| s.report.is_none() && s.killer.is_some());
        if completion.is_some() && !outstanding {
            break;
        }
        let Some(msg) = rx.recv().await else { break };
        // The engine reads no clock: it is told the time before the events that may walk the workflow.
        if matches!(app.program, model::Program::Workflow(_)) {
            events.push_back(Event::Clock { unix_ms: epoch_ms(SystemTime::now()) as i64 });
        }
        let now = inner.load.load(Ordering::Relaxed);
        if now != load {
            load = now;
            events.push_back(Event::Load { cpu_percent: load });
        }
        match msg {
            Incoming::Call { run, request } => {
                next_request += 1;
                replies.insert(next_request, request.reply);
                events.push_back(Event::Call { run, request: next_request, call: request.call });
            }
            Incoming::EffectDone { run, request, result } => {
                events.push_back(Event::EffectDone { run, request, result });
            }
            Incoming::TimerFired { timer } => events.push_back(Event::TimerFired { timer }),
            Incoming::Finished { run, report } => {
                if let Some(uuid) = tracked[run.index()].api_key.take() {
                    inner.activation_keys.lock().unwrap_or_else(|e| e.into_inner()).remove(&uuid);
                }
                let track = &mut tracked[run.index()];
                let payload_max = inner.config.payload_bytes_max as u64;
                events.push_back(Event::Finished { run, outcome: to_outcome(&report, payload_max) });
                track.report = Some((report, Instant::now(), SystemTime::now()));
            }
        }
    }

    let completion = completion.unwrap_or_else(|| Completion {
        status: Status::InternalError,
        result: json!({"error": "the invocation stopped without completing"}),
        error: None,
        path: Vec::new(),
        runs: Vec::new(),
        stats: Default::default(),
    });
    finish(&inner, namespace, app, app_id, direct, started, tracked, completion)
}

/// What every launch of one invocation shares.
struct LaunchCtx<'a> {
    inner: &'a Arc<Inner>,
    namespace: &'a str,
    deployments: &'a Deployments,
    tx: &'a mpsc::UnboundedSender<Incoming>,
    app_id: &'a str,
    /// A function invoked directly (its first run's record is the invocation's).
    direct: bool,
    /// The CPU share the run gets.
    cpu: Cpu,
    after_squash: AfterSquash,
}

fn launch(
    ctx: &LaunchCtx,
    run: RunId,
    function: &str,
    input: Value,
    id: String,
    parent: Option<String>,
    speculative: bool,
) -> (TrackedRun, Result<(), Outcome>) {
    let LaunchCtx { namespace, deployments, tx, app_id, direct, cpu, after_squash, .. } = *ctx;
    let started = SystemTime::now();
    let launched = Instant::now();
    let mut record = ActivationRecord {
        activation_id: id.clone(),
        namespace: namespace.to_string(),
        name: function.to_string(),
        version: String::new(),
        subject: namespace.to_string(),
        start: epoch_ms(started),
        end: 0,
        duration: 0,
        response: Response::new(Status::Success, Value::Null),
        logs: Vec::new(),
        annotations: Vec::new(),
        publish: false,
    };
    let mut track = TrackedRun {
        function: function.to_string(),
        caller: None,
        record: record.clone(),
        launched,
        started,
        killer: None,
        killed: None,
        kill_cause: None,
        api_key: None,
        report: None,
    };
    let Some(deployed) = deployments.functions.get(function) else {
        let error = json!(format!("function \"{function}\" does not exist in namespace \"{namespace}\""));
        return (track, Err(Outcome::failed(Status::InternalError, error)));
    };
    let spec = &deployed.spec;
    record.version = spec.version.clone();
    record.annotate("kind", json!(spec.kind.as_openwhisk()));
    record.annotate("path", json!(format!("{namespace}/{function}")));
    record.annotate(
        "limits",
        json!({"timeout": spec.limits.timeout_ms, "memory": spec.limits.memory_mb,
        "logs": spec.limits.logs_bytes_max / (1024 * 1024)}),
    );
    if let (Some(mode), Kind::Python | Kind::Node) = (ctx.inner.sandbox, spec.kind) {
        // Which layers confined it (RELIABILITY.md X8), so a missing one shows rather than being assumed.
        record.annotate(
            "sandbox",
            match mode {
                runtime::sandbox::Mode::Enforce => json!({"mode": "enforce", "layers": runtime::sandbox::LAYERS}),
                runtime::sandbox::Mode::Off => json!({"mode": "off", "layers": ["rlimits"]}),
            },
        );
    }
    if let Some(parent) = &parent {
        record.annotate("causedBy", json!(parent));
    } else if !direct {
        record.annotate("causedBy", json!(app_id));
    }
    track.record = record;
    // Bound parameters are defaults; invocation parameters override them (OpenWhisk semantics).
    let input = match input {
        Value::Object(map) if !spec.parameters.is_empty() => {
            let mut merged = spec.parameters.clone();
            merged.extend(map);
            Value::Object(merged)
        }
        other => other,
    };
    let size = serde_json::to_vec(&input).map_or(0, |b| b.len()) as u64;
    if size > spec.limits.payload_bytes_max {
        let error =
            json!(format!("The input of {size} bytes exceeds the limit of {} bytes.", spec.limits.payload_bytes_max));
        return (track, Err(Outcome::failed(Status::ApplicationError, error)));
    }
    let env = BTreeMap::from([
        ("__OW_ACTIVATION_ID".to_string(), id.clone()),
        ("__OW_NAMESPACE".to_string(), namespace.to_string()),
        ("__OW_ACTION_NAME".to_string(), format!("/{namespace}/{function}")),
        ("__OW_DEADLINE".to_string(), (epoch_ms(started) + spec.limits.timeout_ms).to_string()),
    ]);
    let mut env = env;
    let calls = tx.clone();
    let host: Host = Arc::new(move |request| {
        let _ = calls.send(Incoming::Call { run, request });
    });
    if let Some(api_host) = ctx.inner.api_host.read().expect("poisoned").clone() {
        // An ephemeral key for this activation: OpenWhisk-style code calling the API with it makes implicit calls.
        let uuid = uuid::Uuid::new_v4().to_string();
        let key = uuid::Uuid::new_v4().simple().to_string();
        env.insert("__OW_API_HOST".into(), api_host);
        env.insert("__OW_API_KEY".into(), format!("{uuid}:{key}"));
        let entry = crate::ActivationKey { key, namespace: namespace.to_string(), host: host.clone() };
        ctx.inner.activation_keys.lock().unwrap_or_else(|e| e.into_inner()).insert(uuid.clone(), entry);
        track.api_key = Some(uuid);
    }
    let finished = tx.clone();
    let done: Done = Box::new(move |report| {
        let _ = finished.send(Incoming::Finished { run, report });
    });
    track.killer = Some(deployed.warm.start(Activation { id, input, env, speculative, cpu, after_squash }, host, done));
    (track, Ok(()))
}

#[allow(clippy::too_many_arguments)]
fn finish(
    inner: &Arc<Inner>,
    namespace: String,
    app: Arc<Application>,
    app_id: String,
    direct: bool,
    started: SystemTime,
    tracked: Vec<TrackedRun>,
    completion: Completion,
) -> Invocation {
    let payload_max = inner.config.payload_bytes_max as u64;
    let mut timings = Vec::new();
    let mut runs = Vec::with_capacity(tracked.len());
    let mut squashed_us = 0u64;
    let mut squashed_cpu_us = 0u64;
    let mut squashed_ids = Vec::new();
    for (i, track) in tracked.into_iter().enumerate() {
        let summary = completion.runs.get(i);
        if let (Some(killer), None) = (&track.killer, track.killed) {
            // Its result stands (a discarded run's handler was dealt with already): a handler held back for it may
            // serve others now.
            killer.settle();
        }
        let mut record = track.record;
        let squashed = matches!(summary.map(|s| s.fate), Some(engine::Fate::Squashed(_)));
        if let Some((report, _, _)) = &track.report
            && !report.held.is_empty()
        {
            // What the sandbox held while the run was speculative, how long, and whether it was released.
            record.annotate("held", json!(report.held));
        }
        let (end, finished) = match (&track.report, track.killed) {
            (_, Some(at)) if squashed => (epoch_ms(SystemTime::now()), at),
            (Some((_, at, wall)), _) => (epoch_ms(*wall), *at),
            (None, _) => (epoch_ms(SystemTime::now()), Instant::now()),
        };
        record.end = end;
        record.duration = end.saturating_sub(epoch_ms(track.started));
        if squashed {
            // Nothing a squashed run produced is shown: no result, no logs, no error.
            squashed_us += finished.saturating_duration_since(track.launched).as_micros() as u64;
            if let Some(cpu) = track.report.as_ref().and_then(|(r, _, _)| r.cpu_us) {
                squashed_cpu_us += cpu;
                record.annotate("cpu_us", json!(cpu));
            }
            record.response = Response::new(Status::Success, json!({}));
            squashed_ids.push(record.activation_id.clone());
        } else {
            match track.report {
                Some((report, _, _)) => {
                    let (status, result) = match to_outcome(&report, payload_max) {
                        // Killed past its Task's TimeoutSeconds: it timed out, as the workflow saw it.
                        Outcome::Failure(_) if track.kill_cause == Some(engine::Cause::TimedOut) => (
                            Status::DeveloperError,
                            json!({ "error": "The activation ran past its Task's TimeoutSeconds." }),
                        ),
                        Outcome::Success(v) => (Status::Success, v),
                        Outcome::Failure(f) => (f.status, json!({ "error": f.error })),
                    };
                    record.response = Response::new(status, result);
                    record.logs = report.logs;
                }
                None if summary.is_some_and(|s| matches!(s.fate, engine::Fate::Committed)) => {}
                None => {
                    record.response =
                        Response::new(Status::InternalError, json!({"error": "the function did not start"}))
                }
            }
        }
        if let Some(s) = summary {
            record.annotate(
                "speculation",
                json!({"speculative": s.speculative, "fate": s.fate, "output": s.output, "predicted": s.predicted, "branches": s.branches}),
            );
        }
        timings.push(RunTiming { function: track.function, caller: track.caller, launched: track.launched, finished });
        runs.push(record);
    }
    inner.metrics.record(completion.status, &completion.stats, squashed_us, squashed_cpu_us);
    let end = SystemTime::now();
    let (record, runs) = if direct && !runs.is_empty() {
        let mut top = runs.remove(0);
        top.response = Response::new(completion.status, completion.result.clone());
        top.annotate("topmost", json!(true));
        if !runs.is_empty() {
            top.annotate("path", json!(completion.path));
        }
        (top, runs)
    } else {
        let mut top = ActivationRecord {
            activation_id: app_id,
            namespace: namespace.clone(),
            name: app.name.clone(),
            version: "0.0.1".into(),
            subject: namespace.clone(),
            start: epoch_ms(started),
            end: epoch_ms(end),
            duration: epoch_ms(end).saturating_sub(epoch_ms(started)),
            response: Response::new(completion.status, completion.result.clone()),
            logs: runs.iter().map(|r| r.activation_id.clone()).filter(|id| !squashed_ids.contains(id)).collect(),
            annotations: Vec::new(),
            publish: false,
        };
        top.annotate("topmost", json!(true));
        top.annotate("kind", json!(app.form.as_str()));
        top.annotate("path", json!(completion.path));
        top.annotate(
            "speculation",
            json!({"stats": completion.stats, "squashed": squashed_ids, "squashed_us": squashed_us}),
        );
        (top, runs)
    };
    // Serializing the records costs more than the rest of a short function's hand-off: the writer does it.
    let records = std::iter::once(&record).chain(runs.iter()).cloned().collect();
    let _ = inner.recorder.send(RecorderMsg::Records(namespace, records));
    Invocation { status: completion.status, result: completion.result, error: completion.error, record, runs, timings }
}
