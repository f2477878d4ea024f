//! A deterministic world that drives an engine (feature `harness`): the one driver the engine's tests, the
//! platform's tests and the benchmarks share.
//!
//! Functions are [`Function`]s: asked for their next [`Step`] with the reply to their previous call. The store is
//! a versioned map; a commit whose expected versions no longer hold is answered with a conflict. A [`Schedule`]
//! decides who moves next:
//!
//! - [`Schedule::Eager`]: every function steps as soon as it is launched or answered, and every commit lands at
//!   once: the order a sequential driver would give.
//! - [`Schedule::Seeded`]: runs advance one step at a time, and commits land, in an order drawn from a seed, so a
//!   failure replays from its seed.
//!
//! Effects are recorded and answered `{"status": 200, "n": <how many so far>}`. Timers fire, in order, whenever
//! nothing else can move. After every step the engine's invariants are checked ([`crate::Engine::check_invariants`]).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::{Action, Call, Catalog, Completion, Config, Event, Oracle, Outcome, Reply, RequestId, RunId, TimerId};

/// What a function does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Call(Call),
    Finish(Outcome),
}

/// One running function.
pub trait Function {
    /// The next step, given the reply to the previous call (`None` at the start).
    fn next(&mut self, reply: Option<Reply>) -> Step;
}

/// Makes a running function from a function name and its input.
pub type Functions<'a> = dyn Fn(&str, &Value) -> Box<dyn Function> + 'a;

/// xorshift64*: a tiny seeded generator, so every schedule is reproducible from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Who moves next.
#[derive(Debug, Clone)]
pub enum Schedule {
    Eager,
    Seeded(Rng),
}

/// One commit's writes: key → value, `None` for a delete.
pub type WriteSet = Vec<(String, Option<Value>)>;

/// A commit in flight: the run, its writes, and the versions it expects.
type PendingCommit = (RunId, WriteSet, Vec<(String, u64)>);

/// What one invocation did, as the world saw it.
#[derive(Debug, Clone)]
pub struct Observed {
    pub completion: Completion,
    /// Every commit that landed, in order, with the committing function (commits of nothing included).
    pub commits: Vec<(String, WriteSet)>,
    /// Effects performed, in order.
    pub effects: Vec<Call>,
    /// Functions launched, in order.
    pub launches: Vec<String>,
    /// For every run that ended (finished or killed), in that order: its function and the replies to its reads,
    /// calls and effects (not to its writes).
    pub answers: Vec<(String, Vec<Value>)>,
    /// The most runs in flight at once.
    pub max_active: usize,
    /// The virtual time (ms since the invocation started) at which each commit in `commits` landed, and at which
    /// each function in `launches` was launched.
    pub commit_ms: Vec<u64>,
    pub launch_ms: Vec<u64>,
    /// How many runs were promoted ([`Action::Promote`]), settled ([`Action::Settle`]) and discarded
    /// ([`Action::Discard`]).
    pub promoted: usize,
    pub settled: usize,
    pub discarded: usize,
}

struct Active {
    function: String,
    body: Box<dyn Function>,
    /// The reply to its last call, not yet handed to it; `None` with `waiting` false: it has not started.
    reply: Option<Reply>,
    waiting: bool,
    /// Its last call was a read, a call or an effect (whose reply is logged in `answers`).
    answering: bool,
    answers: Vec<Value>,
}

/// A reply as a value, for logs: `{"refused": m}` and `{"failed": e}` for the errors.
pub fn reply_value(reply: &Reply) -> Value {
    match reply {
        Reply::Ok(v) => v.clone(),
        Reply::Refused(m) => json!({ "refused": m }),
        Reply::FunctionFailed(e) => json!({ "failed": e }),
    }
}

/// The world: committed state and a schedule.
pub struct World {
    /// Committed state: key → (value, version).
    pub store: BTreeMap<String, (Value, u64)>,
    pub schedule: Schedule,
    /// Machine load reported to the engine before the invocation starts.
    pub load: Option<u8>,
    /// Print every event and action (also with `SPECFAAS_TRACE` set).
    pub trace: bool,
    clock: u64,
}

impl World {
    pub fn new(store: BTreeMap<String, (Value, u64)>, schedule: Schedule) -> World {
        let trace = std::env::var("SPECFAAS_TRACE").is_ok();
        World { store, schedule, load: None, trace, clock: 1 }
    }

    /// Runs one invocation of `app` on `input` to its end.
    pub fn run(
        &mut self,
        app: Arc<model::Application>,
        catalog: Arc<Catalog>,
        config: Config,
        oracle: Oracle,
        functions: &Functions<'_>,
        input: Value,
    ) -> Observed {
        let mut engine = crate::engine(app, catalog, config, oracle);
        let execution = crate::Execution {
            id: "harness-execution".into(),
            name: "harness-execution".into(),
            namespace: "harness".into(),
            start_ms: HARNESS_EPOCH_MS,
            input: input.clone(),
        };
        let mut queue: VecDeque<Event> =
            VecDeque::from([Event::Clock { unix_ms: HARNESS_EPOCH_MS }, Event::Start { input, execution }]);
        if let Some(cpu_percent) = self.load {
            queue.push_front(Event::Load { cpu_percent });
        }
        let mut active: BTreeMap<RunId, Active> = BTreeMap::new();
        let mut commits: VecDeque<PendingCommit> = VecDeque::new();
        let mut timers: Vec<(u64, TimerId)> = Vec::new();
        let mut now_ms = 0u64;
        let mut request: RequestId = 0;
        let mut names: HashMap<RunId, String> = HashMap::new();
        // Runs launched speculatively, and of them those promoted and those settled.
        let mut speculative: HashSet<RunId> = HashSet::new();
        let mut promoted: HashSet<RunId> = HashSet::new();
        let mut settled: HashSet<RunId> = HashSet::new();
        let mut killed: HashSet<RunId> = HashSet::new();
        let mut discarded: HashSet<RunId> = HashSet::new();
        let mut observed = Observed {
            completion: Completion {
                status: crate::Status::InternalError,
                result: Value::Null,
                error: None,
                path: Vec::new(),
                runs: Vec::new(),
                stats: Default::default(),
            },
            commits: Vec::new(),
            effects: Vec::new(),
            launches: Vec::new(),
            answers: Vec::new(),
            max_active: 0,
            commit_ms: Vec::new(),
            launch_ms: Vec::new(),
            promoted: 0,
            settled: 0,
            discarded: 0,
        };
        let eager = matches!(self.schedule, Schedule::Eager);
        loop {
            while let Some(event) = queue.pop_front() {
                if self.trace {
                    eprintln!("event  {event:?}");
                }
                let actions = engine.step(event);
                // Debug builds check them inside `step` already.
                if !cfg!(debug_assertions)
                    && let Err(broken) = engine.check_invariants()
                {
                    panic!("engine invariant broken: {broken}");
                }
                for action in actions {
                    if self.trace {
                        eprintln!("action {action:?}");
                    }
                    match action {
                        Action::Launch { run, function, input, speculative: launched_speculative, .. } => {
                            if launched_speculative {
                                speculative.insert(run);
                            }
                            observed.launches.push(function.clone());
                            observed.launch_ms.push(now_ms);
                            names.insert(run, function.clone());
                            let body = functions(&function, &input);
                            let a = Active {
                                function,
                                body,
                                reply: None,
                                waiting: false,
                                answering: false,
                                answers: Vec::new(),
                            };
                            active.insert(run, a);
                            if eager {
                                queue.push_back(Self::advance(run, &mut active, &mut request, &mut observed));
                            }
                        }
                        Action::Reply { run, reply, .. } => {
                            let Some(a) = active.get_mut(&run) else { continue };
                            if a.answering {
                                a.answers.push(reply_value(&reply));
                            }
                            a.reply = Some(reply);
                            a.waiting = false;
                            if eager {
                                queue.push_back(Self::advance(run, &mut active, &mut request, &mut observed));
                            }
                        }
                        Action::ReadStore { run, request, key } => {
                            let (value, version) =
                                self.store.get(&key).map_or((None, 0), |(v, n)| (Some(v.clone()), *n));
                            queue.push_back(Event::StoreRead { run, request, value, version });
                        }
                        Action::Commit { run, writes, expect } => {
                            commits.push_back((run, writes, expect));
                            if eager {
                                queue.push_back(self.land(commits.pop_front().expect("pushed"), &names, &mut observed));
                                observed.commit_ms.push(now_ms);
                            }
                        }
                        Action::Effect { run, request, effect } => {
                            // Effects go out under the condition that promotes a run: a run launched speculatively
                            // performs one only once promoted, unless it is a safe request (made speculatively).
                            assert!(
                                !speculative.contains(&run) || promoted.contains(&run) || effect.is_safe_http(),
                                "{run:?} performed {effect:?} while speculative, without being promoted"
                            );
                            observed.effects.push(effect);
                            let result = json!({"status": 200, "n": observed.effects.len()});
                            queue.push_back(Event::EffectDone { run, request, result: Ok(result) });
                        }
                        Action::SetTimer { timer, delay_ms } => timers.push((now_ms + delay_ms, timer)),
                        Action::Promote { run } => {
                            assert!(speculative.contains(&run), "{run:?} was promoted but launched non-speculatively");
                            // It may have finished with its report still on the way: the runtime ignores that one.
                            assert!(!killed.contains(&run), "{run:?} was promoted after it was killed");
                            assert!(!discarded.contains(&run), "{run:?} was promoted after it was discarded");
                            assert!(promoted.insert(run), "{run:?} was promoted twice");
                            observed.promoted += 1;
                        }
                        Action::Settle { run } => {
                            assert!(speculative.contains(&run), "{run:?} was settled but launched non-speculatively");
                            assert!(!active.contains_key(&run), "{run:?} was settled while it runs");
                            assert!(!discarded.contains(&run), "{run:?} was settled after it was discarded");
                            assert!(settled.insert(run), "{run:?} was settled twice");
                            observed.settled += 1;
                        }
                        Action::Discard { run } => {
                            assert!(speculative.contains(&run), "{run:?} was discarded but launched non-speculatively");
                            assert!(!active.contains_key(&run), "{run:?} was discarded while it runs");
                            assert!(!settled.contains(&run), "{run:?} was discarded after it was settled");
                            assert!(discarded.insert(run), "{run:?} was discarded twice");
                            observed.discarded += 1;
                        }
                        Action::Kill { run, .. } => {
                            assert!(!settled.contains(&run), "{run:?} was killed after it was settled");
                            assert!(!discarded.contains(&run), "{run:?} was killed after it was discarded");
                            killed.insert(run);
                            if let Some(a) = active.remove(&run) {
                                observed.answers.push((a.function, a.answers));
                            }
                        }
                        Action::Complete(c) => {
                            assert!(engine.is_done(), "the engine completed but says it is not done");
                            // A successful invocation committed every slot it kept (a failed one may end with the
                            // callees of the failing slot reported as committed: their result stood).
                            for r in c.runs.iter().filter(|_| c.status == crate::Status::Success) {
                                let committed = r.fate == crate::Fate::Committed;
                                assert!(
                                    !(committed && r.speculative) || settled.contains(&r.run),
                                    "{:?} ({}) was launched speculatively and committed, but never settled",
                                    r.run,
                                    r.function
                                );
                            }
                            observed.completion = c;
                            return observed;
                        }
                    }
                }
            }
            observed.max_active = observed.max_active.max(active.len());
            let ready: Vec<RunId> = active.iter().filter(|(_, a)| !a.waiting).map(|(r, _)| *r).collect();
            if ready.is_empty() && commits.is_empty() {
                // Nothing can move but time.
                timers.sort();
                assert!(!timers.is_empty(), "the engine waits while nothing can move: a deadlock");
                let (at, timer) = timers.remove(0);
                now_ms = now_ms.max(at);
                queue.push_back(Event::Clock { unix_ms: HARNESS_EPOCH_MS + now_ms as i64 });
                queue.push_back(Event::TimerFired { timer });
                continue;
            }
            let land = match &mut self.schedule {
                Schedule::Eager => !commits.is_empty(),
                Schedule::Seeded(rng) => !commits.is_empty() && (ready.is_empty() || rng.chance(30)),
            };
            if land {
                let commit = commits.pop_front().expect("checked");
                queue.push_back(self.land(commit, &names, &mut observed));
                observed.commit_ms.push(now_ms);
                continue;
            }
            let run = match &mut self.schedule {
                Schedule::Eager => ready[0],
                Schedule::Seeded(rng) => ready[rng.below(ready.len() as u64) as usize],
            };
            queue.push_back(Self::advance(run, &mut active, &mut request, &mut observed));
        }
    }

    /// Lands a commit, or answers that it conflicts.
    fn land(
        &mut self,
        (run, writes, expect): PendingCommit,
        names: &HashMap<RunId, String>,
        observed: &mut Observed,
    ) -> Event {
        let conflict = expect.iter().find(|(k, v)| self.store.get(k).map_or(0, |(_, n)| *n) != *v);
        if let Some((key, _)) = conflict {
            return Event::CommitConflict { run, key: key.clone() };
        }
        if !writes.is_empty() {
            self.clock += 1;
        }
        for (k, v) in &writes {
            match v {
                Some(v) => self.store.insert(k.clone(), (v.clone(), self.clock)),
                None => self.store.remove(k),
            };
        }
        observed.commits.push((names.get(&run).cloned().unwrap_or_default(), writes));
        Event::Committed { run }
    }

    /// Hands `run` its reply and takes its next step.
    fn advance(
        run: RunId,
        active: &mut BTreeMap<RunId, Active>,
        request: &mut RequestId,
        observed: &mut Observed,
    ) -> Event {
        let a = active.get_mut(&run).expect("an active run");
        let reply = a.reply.take();
        match a.body.next(reply) {
            Step::Call(call) => {
                *request += 1;
                a.waiting = true;
                a.answering = !matches!(call, Call::Put { .. } | Call::Delete { .. });
                Event::Call { run, request: *request, call }
            }
            Step::Finish(outcome) => {
                let a = active.remove(&run).expect("an active run");
                observed.answers.push((a.function, a.answers));
                Event::Finished { run, outcome }
            }
        }
    }
}

/// The virtual clock's start: 2026-01-01T00:00:00Z, in ms since the Unix epoch.
pub const HARNESS_EPOCH_MS: i64 = 1_767_225_600_000;

/// A catalog of `functions`, all at version `version`, with default annotations.
pub fn catalog<'a>(functions: impl IntoIterator<Item = &'a str>, version: &str) -> Arc<Catalog> {
    let functions = functions
        .into_iter()
        .map(|f| (f.to_string(), crate::FunctionInfo { version: version.into(), annotations: Default::default() }))
        .collect();
    Arc::new(Catalog { functions })
}
