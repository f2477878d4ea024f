//! Hand-off cost: how long control takes to pass from one function to the next, on a sequence of no-op
//! functions, for each runtime, in one run (the runtimes take turns, so they share the machine's noise).
//!
//! Three figures per runtime:
//! - **marginal per hop**: (p50 latency of the chain − p50 latency of a one-function sequence) / (chain − 1). It is
//!   what one more function adds to a user's latency, without the invocation's fixed costs (the caller's
//!   wake-up, building records); this is the figure held to the goal.
//! - **per hop, end to end**: invocation latency divided by the chain length. It includes everything the
//!   platform does per function (engine step, launch, dispatch to an idle handler, protocol, result), and the no-op
//!   itself, plus a share of the invocation's fixed costs.
//! - **gap**: from the platform receiving function *i*'s result to it launching function *i+1*: the platform's
//!   own transfer of control, without the runtime's start cost.
//!
//! Python and Node.js run twice, confined (the default) and with the sandbox off, so the sandbox's cost shows.
//!
//! Goals (DESIGN.md §5): native ≤ 20 µs per hop, wasm ≤ 20 µs per hop, Python ≤ 0.5 ms per hop. OpenWhisk: 8–25 ms transfer plus 20 ms
//! platform overhead per function (SpecFaaS paper, Fig. 3).

use std::sync::Arc;
use std::time::Instant;

use model::{Annotations, Application, Code, FunctionSpec, Kind, Limits};
use platform::Platform;
use serde_json::{Value, json};

pub struct Row {
    pub runtime: &'static str,
    /// (p50 latency of the chain − p50 latency of a one-function sequence) / (chain − 1): what one more function
    /// adds, without the invocation's fixed costs.
    pub marginal_us_p50: f64,
    pub per_hop_us_p50: f64,
    pub per_hop_us_mean: f64,
    pub gap_us_p50: f64,
    pub gap_us_p99: f64,
    pub invocation_ms_p50: f64,
}

pub struct Report {
    pub chain: usize,
    pub iterations: usize,
    pub rows: Vec<Row>,
    pub setup: Value,
}

/// (row, function-name prefix, kind, code, sandbox on): the process runtimes run confined and unconfined, each
/// side on its own platform, in the same rounds.
const RUNTIMES: [(&str, &str, Kind, &str, bool); 6] = [
    ("native", "native", Kind::Native, "", true),
    ("wasm", "wasm", Kind::Wasm, runtime::conformance::WASM_ECHO, true),
    ("python", "python", Kind::Python, PY_NOOP, true),
    ("nodejs", "nodejs", Kind::Node, JS_NOOP, true),
    ("python, sandbox off", "python-off", Kind::Python, PY_NOOP, false),
    ("nodejs, sandbox off", "nodejs-off", Kind::Node, JS_NOOP, false),
];
const PY_NOOP: &str = "def main(args):\n    return args\n";
const JS_NOOP: &str = "function main(params) { return params; }";

pub async fn run(chain: usize, iterations: usize) -> anyhow::Result<Report> {
    anyhow::ensure!(chain >= 2, "--chain must be at least 2");
    let data = tempfile::tempdir()?;
    let work = tempfile::Builder::new().prefix("sfb").tempdir_in("/tmp")?;
    let store: Arc<dyn storage::Store> = Arc::new(storage::RedbStore::open(data.path().join("store.redb"))?);
    let enforce = Platform::new(store.clone(), work.path(), platform::Config::default())?;
    let off_work = tempfile::Builder::new().prefix("sfb").tempdir_in("/tmp")?;
    let off = Platform::builder(store)
        .work_dir(off_work.path())
        .sandbox(runtime::sandbox::Config { mode: runtime::sandbox::Mode::Off, ..Default::default() })
        .default_runtimes()
        .build()?;
    let ns = "bench";
    for (_, runtime, kind, code, confined) in RUNTIMES {
        let platform = if confined { &enforce } else { &off };
        let mut names = Vec::new();
        for i in 0..chain {
            let name = format!("{runtime}-noop-{i}");
            let code = match kind {
                Kind::Native => {
                    platform.native().register(&name, |_, input| async move { Ok(input) });
                    Code::Native
                }
                Kind::Wasm => Code::Wasm { bytes: wat::parse_str(code)?, main: "main".into() },
                _ => Code::Source { text: code.into(), main: "main".into() },
            };
            platform
                .deploy_function(ns, FunctionSpec::new(&name, kind, code, Limits::default(), Annotations::default())?)
                .await?;
            names.push(name);
        }
        let app = Application::sequence(&format!("{runtime}-chain"), &names, &|f| platform.has_function(ns, f))?;
        platform.deploy_app(ns, app);
        let single =
            Application::sequence(&format!("{runtime}-single"), &names[..1], &|f| platform.has_function(ns, f))?;
        platform.deploy_app(ns, single);
    }
    let warmup = (iterations / 10).max(5);
    // Per runtime: end-to-end µs of the chain, platform gaps µs, end-to-end µs of a one-function sequence.
    let mut samples: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> = vec![Default::default(); RUNTIMES.len()];
    for i in 0..warmup + iterations {
        for (r, (_, runtime, _, _, confined)) in RUNTIMES.iter().enumerate() {
            let platform = if *confined { &enforce } else { &off };
            let started = Instant::now();
            let inv = platform.invoke(ns, &format!("{runtime}-chain"), json!({"i": i})).await?;
            let elapsed = started.elapsed();
            anyhow::ensure!(inv.status == platform::Status::Success, "{runtime} chain failed: {}", inv.result);
            anyhow::ensure!(inv.result == json!({"i": i}), "{runtime} chain returned {}", inv.result);
            if i < warmup {
                continue;
            }
            samples[r].0.push(elapsed.as_secs_f64() * 1e6);
            for pair in inv.timings.windows(2) {
                samples[r].1.push(pair[1].launched.duration_since(pair[0].finished).as_secs_f64() * 1e6);
            }
            let started = Instant::now();
            let one = platform.invoke(ns, &format!("{runtime}-single"), json!({"i": i})).await?;
            anyhow::ensure!(one.status == platform::Status::Success, "{runtime} single failed: {}", one.result);
            samples[r].2.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    enforce.flush_records().await;
    off.flush_records().await;
    let rows = RUNTIMES
        .iter()
        .zip(samples)
        .map(|((runtime, _, _, _, _), (mut e2e, mut gaps, mut single))| {
            let per_hop: Vec<f64> = e2e.iter().map(|us| us / chain as f64).collect();
            let marginal = (crate::quantile(&mut e2e, 0.5) - crate::quantile(&mut single, 0.5)) / (chain - 1) as f64;
            Row {
                runtime,
                marginal_us_p50: marginal,
                per_hop_us_p50: crate::quantile(&mut per_hop.clone(), 0.5),
                per_hop_us_mean: crate::mean(&per_hop),
                gap_us_p50: crate::quantile(&mut gaps, 0.5),
                gap_us_p99: crate::quantile(&mut gaps, 0.99),
                invocation_ms_p50: crate::quantile(&mut e2e, 0.5) / 1000.0,
            }
        })
        .collect();
    Ok(Report { chain, iterations, rows, setup: crate::setup() })
}

impl crate::Report for Report {
    fn markdown(&self) -> String {
        let mut s = format!(
            "## Hand-off between functions: sequence of {} no-op functions, {} invocations per runtime\n\n\
             | runtime | marginal per hop p50 (µs) | per hop, end to end p50 (µs) | per hop mean (µs) | platform gap p50 (µs) | gap p99 (µs) | invocation p50 (ms) |\n\
             |---|---|---|---|---|---|---|\n",
            self.chain, self.iterations
        );
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |\n",
                r.runtime,
                r.marginal_us_p50,
                r.per_hop_us_p50,
                r.per_hop_us_mean,
                r.gap_us_p50,
                r.gap_us_p99,
                r.invocation_ms_p50
            ));
        }
        s.push_str(&format!("\nsetup: {}\n", self.setup));
        s
    }

    fn to_json(&self) -> Value {
        json!({
            "benchmark": "handoff",
            "chain": self.chain,
            "iterations": self.iterations,
            "setup": self.setup,
            "rows": self.rows.iter().map(|r| json!({
                "runtime": r.runtime,
                "marginal_us_p50": r.marginal_us_p50,
                "per_hop_us_p50": r.per_hop_us_p50,
                "per_hop_us_mean": r.per_hop_us_mean,
                "gap_us_p50": r.gap_us_p50,
                "gap_us_p99": r.gap_us_p99,
                "invocation_ms_p50": r.invocation_ms_p50,
            })).collect::<Vec<_>>(),
        })
    }
}
