//! `specfaas bench ablation`: each predictor piece on and off, in the same run, on the paper's applications that
//! use it.
//!
//! The piece measured is callee path prediction (`[engine] callee_paths`, [`engine::paths`]), which predicts the
//! implicit calls of inputs never seen: it matters for the TrainTicket and Alibaba applications. Each suite is
//! deployed twice, into two namespaces, so that each side has its own learned tables and neither learns from the
//! other's requests. Both sides then get the same inputs (drawn as `bench paper` draws them: the same Zipf
//! distributions and synthetic minority), warm-up first, then blocks of Poisson arrivals at the paper harness's low
//! and medium loads, in alternating order. Speculation off runs the same inputs once, as the reference.

use std::path::PathBuf;
use std::sync::Arc;

use platform::{InvokeOptions, Platform};
use serde_json::{Value, json};

use crate::paper::apps::{APPS, App, Inputs, Suite};
use crate::paper::measure::{self, Block};

pub struct Options {
    pub seed: u64,
    pub examples: PathBuf,
    /// Only these applications (by name); by default every implicit-call application.
    pub only: Vec<String>,
    pub sandbox: runtime::sandbox::Mode,
}

/// Requests per block, and of the warm-up.
const BLOCK: usize = 24;
const WARMUP: usize = 16;
/// Loads, as in `bench paper`: shares of the CPU speculation-off requests would use.
const LOADS: [(&str, f64); 2] = [("low", 0.1), ("medium", 0.25)];

pub struct Row {
    pub app: App,
    pub load: &'static str,
    pub rate: f64,
    pub off: Block,
    pub without: Block,
    pub with: Block,
}

pub struct Report {
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
        .filter(|a| a.suite != Suite::FaaSChain)
        .filter(|a| opts.only.is_empty() || opts.only.iter().any(|o| o == a.name))
        .collect();
    anyhow::ensure!(!apps.is_empty(), "no implicit-call application matches {:?}", opts.only);
    for suite in [Suite::TrainTicket, Suite::Alibaba] {
        if !apps.iter().any(|a| a.suite == suite) {
            continue;
        }
        let dir = opts.examples.join("paper").join(suite.dir());
        for ns in [suite.dir().to_string(), without(suite)] {
            platform.deploy_manifest(&ns, platform::project::Project::read(&dir)?).await?;
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let (with_paths, without_paths) = (
        InvokeOptions { speculation: Some(true), callee_paths: Some(true), ..Default::default() },
        InvokeOptions { speculation: Some(true), callee_paths: Some(false), ..Default::default() },
    );
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
        for (k, (load, u)) in LOADS.into_iter().enumerate() {
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
                "[ablation] {}/{} {load}: p50 off {:.1}, without paths {:.1}, with paths {:.1} ms",
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
    Ok(Report { rows, setup })
}

impl crate::Report for Report {
    fn markdown(&self) -> String {
        let mut s = String::from(
            "## Ablation: callee path prediction (`callee_paths`), I/O-bound profile\n\n\
             Each side has its own namespace and tables and gets the same inputs. Speedups are over speculation off \
             on the same inputs (p50).\n\n\
             | app | load | rate (/s) | off p50 | without paths p50 | with paths p50 | speedup without | speedup with \
             | with/without mean | by path: used / predicted |\n|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            let c = &r.with.counters;
            s.push_str(&format!(
                "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}× | {:.2}× | {:.2}× | {} / {} |\n",
                r.app.label,
                r.load,
                r.rate,
                r.off.p(0.5),
                r.without.p(0.5),
                r.with.p(0.5),
                r.off.p(0.5) / r.without.p(0.5),
                r.off.p(0.5) / r.with.p(0.5),
                r.without.mean() / r.with.mean(),
                c.callees_used_path,
                c.callees_predicted_path
            ));
        }
        let mean = |f: &dyn Fn(&Row) -> f64| self.rows.iter().map(f).sum::<f64>() / self.rows.len().max(1) as f64;
        s.push_str(&format!(
            "\nMean speedup over speculation off: without paths {:.2}×, with paths {:.2}×.\n\nsetup: {}\n",
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
            "piece": "callee_paths",
            "setup": self.setup,
            "rows": self.rows.iter().map(|r| json!({
                "suite": r.app.suite.name(), "app": r.app.label, "load": r.load, "rate": r.rate,
                "off": side(&r.off), "without": side(&r.without), "with": side(&r.with),
            })).collect::<Vec<_>>(),
        })
    }
}
