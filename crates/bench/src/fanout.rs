//! Fan-out: a `Map` over 16 items and a `Parallel` of 4 branches, of Python functions that each take 20 ms
//! (sandbox on, as users run it), measured end to end against their critical path.
//!
//! Three sides, taking turns in one run so they share the machine's noise:
//! - **sequential**: branches and iterations one after another (`engine.fan_out = "sequential"`, speculation off),
//!   which is how specfaas ran them before they ran concurrently;
//! - **speculation off**: branches and iterations at once, as every ASL engine runs them: the baseline;
//! - **speculation on**: the default.
//!
//! The critical path is what the longest chain of functions takes: 20 ms for the Map (one function per iteration),
//! 40 ms for the Parallel (two functions per branch). Everything above it is the platform's.

use std::sync::Arc;
use std::time::Instant;

use model::{Annotations, Application, Code, FunctionSpec, Kind, Limits};
use platform::{InvokeOptions, Platform};
use serde_json::{Value, json};

const SLEEP_MS: u64 = 20;
const MAP_ITEMS: usize = 16;
const BRANCHES: usize = 4;
const PY_SLEEP: &str = "import time\n\ndef main(args):\n    time.sleep(0.02)\n    return {\"v\": args.get(\"v\", 0)}\n";

pub struct Row {
    pub workflow: &'static str,
    pub side: &'static str,
    pub critical_path_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
}

pub struct Report {
    pub iterations: usize,
    pub rows: Vec<Row>,
    pub setup: Value,
}

fn map_definition() -> Value {
    json!({"StartAt": "Each", "States": {"Each": {"Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 0,
        "ItemSelector": {"v.$": "$$.Map.Item.Value"},
        "ItemProcessor": {"StartAt": "Work", "States": {"Work": {"Type": "Task", "Resource": "sleep20", "End": true}}},
        "End": true}}})
}

fn parallel_definition() -> Value {
    let branch = |b: usize| {
        json!({"StartAt": format!("First{b}"), "States": {
            format!("First{b}"): {"Type": "Task", "Resource": "sleep20", "Parameters": {"v": b}, "Next": format!("Second{b}")},
            format!("Second{b}"): {"Type": "Task", "Resource": "sleep20b", "End": true}}})
    };
    json!({"StartAt": "All", "States": {"All": {"Type": "Parallel", "End": true,
        "Branches": (0..BRANCHES).map(branch).collect::<Vec<_>>()}}})
}

async fn deploy(platform: &Platform, ns: &str) -> anyhow::Result<()> {
    for name in ["sleep20", "sleep20b"] {
        let code = Code::Source { text: PY_SLEEP.into(), main: "main".into() };
        let spec = FunctionSpec::new(name, Kind::Python, code, Limits::default(), Annotations::default())?;
        platform.deploy_function(ns, spec).await?;
    }
    for (name, definition) in [("map16", map_definition()), ("parallel4", parallel_definition())] {
        let graph = model::asl::from_value(&format!("{name}.json"), &definition, &|f| platform.has_function(ns, f))?;
        platform.deploy_app(ns, Application::workflow(name, graph)?);
    }
    Ok(())
}

pub async fn run(iterations: usize) -> anyhow::Result<Report> {
    let data = tempfile::tempdir()?;
    let store: Arc<dyn storage::Store> = Arc::new(storage::RedbStore::open(data.path().join("store.redb"))?);
    let work = tempfile::Builder::new().prefix("sfb").tempdir_in("/tmp")?;
    let concurrent = Platform::new(store.clone(), work.path(), platform::Config::default())?;
    let seq_work = tempfile::Builder::new().prefix("sfb").tempdir_in("/tmp")?;
    let mut config = platform::Config::default();
    config.engine.fan_out = engine::FanOut::Sequential;
    let sequential = Platform::new(store, seq_work.path(), config)?;
    let ns = "bench";
    deploy(&concurrent, ns).await?;
    deploy(&sequential, ns).await?;
    // (workflow, input, critical path, expected result length)
    let items: Vec<usize> = (0..MAP_ITEMS).collect();
    let workflows = [
        ("map16", json!({"items": items}), SLEEP_MS as f64, MAP_ITEMS),
        ("parallel4", json!({}), 2.0 * SLEEP_MS as f64, BRANCHES),
    ];
    // (side, platform, speculation)
    let sides: [(&str, &Platform, bool); 3] = [
        ("sequential", &sequential, false),
        ("speculation off", &concurrent, false),
        ("speculation on", &concurrent, true),
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); workflows.len() * sides.len()];
    let warmup = (iterations / 5).max(5);
    for i in 0..warmup + iterations {
        for (w, (name, input, _, len)) in workflows.iter().enumerate() {
            for (s, (side, platform, speculation)) in sides.iter().enumerate() {
                let options = InvokeOptions { speculation: Some(*speculation), ..Default::default() };
                let started = Instant::now();
                let inv = platform.invoke_with(ns, name, input.clone(), options).await?;
                let ms = started.elapsed().as_secs_f64() * 1e3;
                anyhow::ensure!(inv.status == platform::Status::Success, "{name} ({side}) failed: {}", inv.result);
                anyhow::ensure!(
                    inv.result.as_array().map(Vec::len) == Some(*len),
                    "{name} ({side}) returned {}",
                    inv.result
                );
                if i >= warmup {
                    samples[w * sides.len() + s].push(ms);
                }
            }
        }
    }
    concurrent.flush_records().await;
    sequential.flush_records().await;
    let mut rows = Vec::new();
    for (w, (name, _, critical, _)) in workflows.iter().enumerate() {
        for (s, (side, _, _)) in sides.iter().enumerate() {
            let v = &mut samples[w * sides.len() + s];
            rows.push(Row {
                workflow: name,
                side,
                critical_path_ms: *critical,
                p50_ms: crate::quantile(v, 0.5),
                p99_ms: crate::quantile(v, 0.99),
                mean_ms: crate::mean(v),
            });
        }
    }
    Ok(Report { iterations, rows, setup: crate::setup() })
}

impl crate::Report for Report {
    fn markdown(&self) -> String {
        let mut s = format!(
            "## Fan-out: Map of {MAP_ITEMS} and Parallel of {BRANCHES} (2 functions each), Python functions of \
             {SLEEP_MS} ms, sandbox on, {} invocations per side\n\n\
             | workflow | side | critical path (ms) | p50 (ms) | p99 (ms) | mean (ms) | p50 over critical path |\n\
             |---|---|---|---|---|---|---|\n",
            self.iterations
        );
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.2}× |\n",
                r.workflow,
                r.side,
                r.critical_path_ms,
                r.p50_ms,
                r.p99_ms,
                r.mean_ms,
                r.p50_ms / r.critical_path_ms
            ));
        }
        s.push_str(&format!("\nsetup: {}\n", self.setup));
        s
    }

    fn to_json(&self) -> Value {
        json!({
            "benchmark": "fanout",
            "iterations": self.iterations,
            "setup": self.setup,
            "rows": self.rows.iter().map(|r| json!({
                "workflow": r.workflow,
                "side": r.side,
                "critical_path_ms": r.critical_path_ms,
                "p50_ms": r.p50_ms,
                "p99_ms": r.p99_ms,
                "mean_ms": r.mean_ms,
            })).collect::<Vec<_>>(),
        })
    }
}
