//! `specfaas bench ablation`: one piece of speculation on and off, in the same run, on the paper's applications
//! that use it.
//!
//! The pieces ([`Piece`]):
//! - callee path prediction (`[engine] callee_paths`, [`engine::paths`]), which predicts the implicit calls of
//!   inputs never seen: it matters for the TrainTicket and Alibaba applications, at the low and medium loads;
//! - idle CPU for speculative runs (`[engine] speculative_cpu`), which matters wherever speculation competes with
//!   non-speculative work for CPU: every application, at the medium and high loads;
//! - reusing the handlers of squashed runs (`[engine] squashed_handlers`), which saves the fresh handler each
//!   squash costs otherwise: every application, at the medium and high loads;
//! - field-by-field output guesses (`[engine] field_guesses`, [`engine::fields`]), which derive on inputs with no
//!   memo row, and build callee arguments from guessed results: every application, at the low and medium loads.
//!
//! Each suite is deployed twice, into two namespaces, so that each side has its own learned tables and neither
//! learns from the other's requests. Both sides then get the same inputs (drawn as `bench paper` draws them: the
//! same Zipf distributions and synthetic minority), warm-up first, then blocks of Poisson arrivals at the paper
//! harness's loads, in alternating order. Speculation off runs the same inputs once, as the reference.

use std::path::PathBuf;
use std::sync::Arc;

use platform::{InvokeOptions, Platform};
use serde_json::{Value, json};

use crate::paper::apps::{APPS, App, Inputs, Suite};
use crate::paper::measure::{self, Block};

/// What an ablation turns off on one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// `[engine] callee_paths`.
    Paths,
    /// `[engine] speculative_cpu = "idle"` (against `"shared"`).
    IdleCpu,
    /// `[engine] squashed_handlers = "reuse"` (against `"retire"`).
    Reuse,
    /// `[engine] field_guesses`.
    Fields,
}

impl Piece {
    fn name(self) -> &'static str {
        match self {
            Piece::Paths => "callee_paths",
            Piece::IdleCpu => "speculative_cpu",
            Piece::Reuse => "squashed_handlers",
            Piece::Fields => "field_guesses",
        }
    }

    /// What the sides are called in the report.
    fn sides(self) -> (&'static str, &'static str) {
        match self {
            Piece::Paths => ("without paths", "with paths"),
            Piece::IdleCpu => ("shared CPU", "idle CPU"),
            Piece::Reuse => ("retired", "reused"),
            Piece::Fields => ("memo rows only", "with guesses"),
        }
    }

    /// The loads it matters at, as in `bench paper`: shares of the CPU speculation-off requests would use.
    fn loads(self) -> &'static [(&'static str, f64)] {
        match self {
            Piece::Paths | Piece::Fields => &[("low", 0.1), ("medium", 0.25)],
            Piece::IdleCpu | Piece::Reuse => &[("medium", 0.25), ("high", 0.5)],
        }
    }

    /// The invocation options of the side with the piece (`true`) and without it.
    fn options(self, with: bool) -> InvokeOptions {
        let mut o = InvokeOptions { speculation: Some(true), ..Default::default() };
        match self {
            Piece::Paths => o.callee_paths = Some(with),
            Piece::IdleCpu => {
                o.speculative_cpu =
                    Some(if with { engine::SpeculativeCpu::Idle } else { engine::SpeculativeCpu::Shared })
            }
            Piece::Reuse => {
                o.squashed_handlers =
                    Some(if with { engine::SquashedHandlers::Reuse } else { engine::SquashedHandlers::Retire })
            }
            Piece::Fields => o.field_guesses = Some(with),
        }
        o
    }

    /// Whether the piece matters for an application of `suite`.
    fn applies(self, suite: Suite) -> bool {
        match self {
            Piece::Paths => suite != Suite::FaaSChain,
            // Workflows derive on guessed outputs; implicit chains make callee arguments from guessed results.
            Piece::Fields | Piece::IdleCpu | Piece::Reuse => true,
        }
    }

    /// The last column of the report: what the piece did on the side with it.
    fn detail(self) -> (&'static str, fn(&platform::metrics::Snapshot) -> String) {
        match self {
            Piece::Fields => ("guessed / memo misses", |c| format!("{} / {}", c.field_guesses, c.memo_misses)),
            _ => ("by path: used / predicted", |c| format!("{} / {}", c.callees_used_path, c.callees_predicted_path)),
        }
    }
}

pub struct Options {
    pub piece: Piece,
    pub seed: u64,
    pub examples: PathBuf,
    /// Only these applications (by name); by default every application the piece applies to.
    pub only: Vec<String>,
    pub sandbox: runtime::sandbox::Mode,
}

/// Requests per block, and of the warm-up.
const BLOCK: usize = 24;
const WARMUP: usize = 16;

pub struct Row {
    pub app: App,
    pub load: &'static str,
    pub rate: f64,
    pub off: Block,
    pub without: Block,
    pub with: Block,
}

pub struct Report {
    pub piece: Piece,
    pub rows: Vec<Row>,
    pub setup: Value,
}

/// The namespace of a suite's side without the piece.
fn without(suite: Suite) -> String {
    format!("{}-without", suite.dir())
}

pub async fn run(opts: Options) -> anyhow::Result<Report> {
    let data = tempfile::tempdir()?;
    let work = tempfile::Builder::new().prefix("sfa").tempdir_in("/tmp")?;
    let store = Arc::new(storage::RedbStore::open(data.path().join("store.redb"))?);
    let config = platform::Config::default();
    let sandbox = runtime::sandbox::Config { mode: opts.sandbox, ..Default::default() };
    let platform =
        Platform::builder(store).work_dir(work.path()).config(config).sandbox(sandbox).default_runtimes().build()?;
    let apps: Vec<App> = APPS
        .iter()
        .copied()
        .filter(|a| opts.piece.applies(a.suite))
        .filter(|a| opts.only.is_empty() || opts.only.iter().any(|o| o == a.name))
        .collect();
    anyhow::ensure!(!apps.is_empty(), "no application {} applies to matches {:?}", opts.piece.name(), opts.only);
    for suite in [Suite::FaaSChain, Suite::TrainTicket, Suite::Alibaba] {
        if !apps.iter().any(|a| a.suite == suite) {
            continue;
        }
        let dir = opts.examples.join("paper").join(suite.dir());
        for ns in [suite.dir().to_string(), without(suite)] {
            platform.deploy_manifest(&ns, platform::project::Project::read(&dir)?).await?;
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let (with_paths, without_paths) = (opts.piece.options(true), opts.piece.options(false));
    let (name_without, name_with) = opts.piece.sides();
    let mut rows = Vec::new();
    for app in apps {
        let seed_path = opts.examples.join("paper").join(app.suite.dir()).join("data/seed.json");
        let seed: serde_json::Map<String, Value> = serde_json::from_str(&std::fs::read_to_string(&seed_path)?)?;
        let mut inputs = Inputs::new(app, seed, crate::paper::mix(opts.seed, app.name, 1), crate::paper::MINORITY);
        let (ns, ns_without) = (app.suite.dir().to_string(), without(app.suite));
        let warm: Vec<Value> = (0..WARMUP).map(|_| inputs.draw()).collect();
        let off = measure::block(&platform, &ns, app.name, &warm, false, None, 0).await?;
        measure::block_with(&platform, &ns, app.name, &warm, with_paths.clone(), None, 0).await?;
        measure::block_with(&platform, &ns_without, app.name, &warm, without_paths.clone(), None, 0).await?;
        let cpu_per_request = (off.cpu_ms / warm.len() as f64).max(1.0);
        for (k, &(load, u)) in opts.piece.loads().iter().enumerate() {
            let rate = (u * cores * 1000.0 / cpu_per_request).clamp(0.5, 400.0);
            let batch: Vec<Value> = (0..BLOCK).map(|_| inputs.draw()).collect();
            let seed = crate::paper::mix(opts.seed, app.name, 500 + k as u64);
            let off = measure::block(&platform, &ns, app.name, &batch, false, Some(rate), seed).await?;
            // Futures are lazy: each block runs when awaited, in the order this level takes.
            let run_with = measure::block_with(&platform, &ns, app.name, &batch, with_paths.clone(), Some(rate), seed);
            let run_without =
                measure::block_with(&platform, &ns_without, app.name, &batch, without_paths.clone(), Some(rate), seed);
            let (with, without) = if k % 2 == 0 {
                let with = run_with.await?;
                (with, run_without.await?)
            } else {
                let without = run_without.await?;
                (run_with.await?, without)
            };
            eprintln!(
                "[ablation] {}/{} {load}: p50 off {:.1}, {name_without} {:.1}, {name_with} {:.1} ms",
                app.suite.name(),
                app.label,
                off.p(0.5),
                without.p(0.5),
                with.p(0.5)
            );
            rows.push(Row { app, load, rate, off, without, with });
        }
    }
    let mut setup = crate::setup();
    setup["seed"] = json!(opts.seed);
    setup["config"] = serde_json::to_value(config)?;
    setup["sandbox"] = serde_json::to_value(opts.sandbox)?;
    setup["store"] = json!("redb (temporary directory)");
    setup["block"] = json!(BLOCK);
    setup["warmup"] = json!(WARMUP);
    Ok(Report { piece: opts.piece, rows, setup })
}

impl crate::Report for Report {
    fn markdown(&self) -> String {
        let (without, with) = self.piece.sides();
        let (detail_name, detail) = self.piece.detail();
        let mut s = format!(
            "## Ablation: `{}`, I/O-bound profile\n\n\
             Each side has its own namespace and tables and gets the same inputs. Speedups are over speculation off \
             on the same inputs (p50). CPU is the machine's busy time over each block, normalized to speculation \
             off.\n\n\
             | app | load | rate (/s) | off p50 | {without} p50 | {with} p50 | speedup {without} | speedup {with} \
             | {with}/{without} mean | CPU {without} / {with} | {detail_name} |\n\
             |---|---|---|---|---|---|---|---|---|---|---|\n",
            self.piece.name()
        );
        for r in &self.rows {
            let c = &r.with.counters;
            let cpu = |b: &Block| b.cpu_ms / r.off.cpu_ms.max(1.0);
            s.push_str(&format!(
                "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}× | {:.2}× | {:.2}× | {:.2} / {:.2} | {} |\n",
                r.app.label,
                r.load,
                r.rate,
                r.off.p(0.5),
                r.without.p(0.5),
                r.with.p(0.5),
                r.off.p(0.5) / r.without.p(0.5),
                r.off.p(0.5) / r.with.p(0.5),
                r.without.mean() / r.with.mean(),
                cpu(&r.without),
                cpu(&r.with),
                detail(c)
            ));
        }
        let mean = |f: &dyn Fn(&Row) -> f64| self.rows.iter().map(f).sum::<f64>() / self.rows.len().max(1) as f64;
        s.push_str(&format!(
            "\nMean speedup over speculation off: {without} {:.2}×, {with} {:.2}×.\n\nsetup: {}\n",
            mean(&|r| r.off.p(0.5) / r.without.p(0.5)),
            mean(&|r| r.off.p(0.5) / r.with.p(0.5)),
            self.setup
        ));
        s
    }

    fn to_json(&self) -> Value {
        let side = |b: &Block| {
            json!({"p50_ms": b.p(0.5), "p99_ms": b.p(0.99), "mean_ms": b.mean(), "cpu_ms": b.cpu_ms,
                   "counters": b.counters})
        };
        json!({
            "benchmark": "ablation",
            "piece": self.piece.name(),
            "setup": self.setup,
            "rows": self.rows.iter().map(|r| json!({
                "suite": r.app.suite.name(), "app": r.app.label, "load": r.load, "rate": r.rate,
                "off": side(&r.off), "without": side(&r.without), "with": side(&r.with),
            })).collect::<Vec<_>>(),
        })
    }
}
