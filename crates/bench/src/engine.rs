//! Engine cost, in-process and without I/O: the engine is driven by a loop that answers every action at once,
//! so what is timed is `Engine::step` and nothing else (DESIGN.md §5: ≤ 5 µs per function launch or commit,
//! ≤ 1 µs per buffered access).
//!
//! - **launch + commit**: a sequence of [`CHAIN`] functions, each writing one key; time per function, which
//!   covers deriving, launching, finishing, validating and committing it. Speculation off and on (on: memo
//!   tables warmed, so every successor is derived and launched early, then validated).
//! - **buffered access**: one function doing [`ACCESSES`] writes and reads of its own keys, plus a second
//!   function reading the first one's writes forwarded from the data buffer; time per access.
//!
//! The tests drive the engine through `engine::harness`; this timing loop does not, because the harness's
//! scheduling and invariant checks would cost more than the engine step it times.

use std::sync::Arc;
use std::time::Instant;

use engine::tables::{self, Sizes};
use engine::{Action, Call, Catalog, Config, Event, FunctionInfo, Oracle, Outcome};
use model::Application;
use serde_json::{Value, json};

/// Functions in the launch + commit chain.
pub const CHAIN: usize = 50;
/// Accesses in the buffered-access run.
pub const ACCESSES: usize = 2000;

pub struct Report {
    pub iterations: usize,
    pub launch_commit_ns_off: f64,
    pub launch_commit_ns_on: f64,
    pub access_ns: f64,
    pub forwarded_read_ns: f64,
    pub setup: Value,
}

fn catalog_of(names: &[String]) -> Arc<Catalog> {
    Arc::new(Catalog {
        functions: names
            .iter()
            .map(|n| (n.clone(), FunctionInfo { version: "v".into(), annotations: Default::default() }))
            .collect(),
    })
}

/// Runs one invocation of `app` where every function writes `k{run}` and returns its input plus one.
fn chain_once(app: &Arc<Application>, catalog: &Arc<Catalog>, config: Config, oracle: &Oracle) -> Value {
    let mut e = engine::engine(app.clone(), catalog.clone(), config, oracle.clone());
    let mut events = vec![Event::Start { input: json!({"n": 0}), execution: Default::default() }];
    let mut request = 0;
    while let Some(event) = events.pop() {
        for action in e.step(event) {
            match action {
                Action::Launch { run, input, .. } => {
                    request += 1;
                    let n = input["n"].as_i64().unwrap_or(0);
                    events.push(Event::Finished { run, outcome: Outcome::Success(json!({"n": n + 1})) });
                    events.push(Event::Call {
                        run,
                        request,
                        call: Call::Put { key: format!("k{n}"), value: json!(n) },
                    });
                }
                Action::Commit { run, .. } => events.push(Event::Committed { run }),
                Action::ReadStore { run, request, .. } => {
                    events.push(Event::StoreRead { run, request, value: None, version: 0 })
                }
                Action::Complete(c) => return c.result,
                Action::Reply { .. }
                | Action::Kill { .. }
                | Action::Promote { .. }
                | Action::Settle { .. }
                | Action::Discard { .. }
                | Action::Effect { .. }
                | Action::SetTimer { .. } => {}
            }
        }
    }
    Value::Null
}

pub fn run(iterations: usize) -> anyhow::Result<Report> {
    let names: Vec<String> = (0..CHAIN).map(|i| format!("f{i}")).collect();
    let app = Arc::new(Application::sequence("chain", &names, &|_| true)?);
    let catalog = catalog_of(&names);
    let oracle = tables::learning(Sizes::default());
    let off = Config { speculation: false, ..Config::default() };
    let on = Config { budget: 10 * CHAIN as u32, runs_max: 10 * CHAIN as u32, ..Config::default() };
    // Warm the memo table, and check both modes agree.
    let want = chain_once(&app, &catalog, on, &oracle);
    anyhow::ensure!(want == json!({"n": CHAIN}), "chain returned {want}");
    anyhow::ensure!(chain_once(&app, &catalog, off, &oracle) == want, "speculation changed the result");
    let per_function = |config: Config| {
        let started = Instant::now();
        for _ in 0..iterations {
            std::hint::black_box(chain_once(&app, &catalog, config, &oracle));
        }
        started.elapsed().as_nanos() as f64 / (iterations * CHAIN) as f64
    };
    let launch_commit_ns_off = per_function(off);
    let launch_commit_ns_on = per_function(on);

    // Buffered access: a writes and reads its own keys; b reads a's writes, forwarded from the data buffer.
    let names = vec!["a".to_string(), "b".to_string()];
    let app = Arc::new(Application::sequence("pair", &names, &|_| true)?);
    let catalog = catalog_of(&names);
    let oracle = tables::learning(Sizes::default());
    let config = Config { writes_max: ACCESSES, ..Config::default() };
    let mut access_ns = 0.0;
    let mut forwarded_ns = 0.0;
    for _ in 0..iterations.max(1) {
        let mut e = engine::engine(app.clone(), catalog.clone(), config, oracle.clone());
        let launched = |actions: &[Action]| -> Vec<engine::RunId> {
            actions.iter().filter_map(|x| if let Action::Launch { run, .. } = x { Some(*run) } else { None }).collect()
        };
        let mut runs = launched(&e.step(Event::Start { input: json!({}), execution: Default::default() }));
        let a = runs[0];
        let started = Instant::now();
        for i in 0..ACCESSES as u64 {
            let key = format!("k{}", i % 64);
            std::hint::black_box(e.step(Event::Call {
                run: a,
                request: 2 * i,
                call: Call::Put { key: key.clone(), value: json!(i) },
            }));
            std::hint::black_box(e.step(Event::Call { run: a, request: 2 * i + 1, call: Call::Get { key } }));
        }
        access_ns += started.elapsed().as_nanos() as f64 / (2 * ACCESSES) as f64;
        // b runs speculatively: launched at the start on a memoized output of a, or when a finishes. Its reads
        // are answered from a's writes in the data buffer while a's commit is in flight.
        runs.extend(launched(&e.step(Event::Finished { run: a, outcome: Outcome::Success(json!({})) })));
        let Some(&b) = runs.get(1) else { anyhow::bail!("b did not launch while a commits") };
        let started = Instant::now();
        for i in 0..ACCESSES as u64 {
            let key = format!("k{}", i % 64);
            std::hint::black_box(e.step(Event::Call {
                run: b,
                request: 10 * ACCESSES as u64 + i,
                call: Call::Get { key },
            }));
        }
        forwarded_ns += started.elapsed().as_nanos() as f64 / ACCESSES as f64;
    }
    let n = iterations.max(1) as f64;
    Ok(Report {
        iterations,
        launch_commit_ns_off,
        launch_commit_ns_on,
        access_ns: access_ns / n,
        forwarded_read_ns: forwarded_ns / n,
        setup: crate::setup(),
    })
}

impl crate::Report for Report {
    fn markdown(&self) -> String {
        format!(
            "## Engine cost, in-process, no I/O ({} iterations)\n\n\
             | what | cost | goal |\n|---|---|---|\n\
             | one function: launch + commit, speculation off | {:.2} µs | ≤ 5 µs |\n\
             | one function: derive + launch + validate + commit, speculation on | {:.2} µs | ≤ 5 µs |\n\
             | one buffered access (write or read of own keys) | {:.3} µs | ≤ 1 µs |\n\
             | one read forwarded from an older function's writes | {:.3} µs | ≤ 1 µs |\n\
             \nsetup: {}\n",
            self.iterations,
            self.launch_commit_ns_off / 1000.0,
            self.launch_commit_ns_on / 1000.0,
            self.access_ns / 1000.0,
            self.forwarded_read_ns / 1000.0,
            self.setup
        )
    }

    fn to_json(&self) -> Value {
        json!({
            "benchmark": "engine",
            "iterations": self.iterations,
            "setup": self.setup,
            "launch_commit_us_off": self.launch_commit_ns_off / 1000.0,
            "launch_commit_us_on": self.launch_commit_ns_on / 1000.0,
            "access_us": self.access_ns / 1000.0,
            "forwarded_read_us": self.forwarded_read_ns / 1000.0,
        })
    }
}
