//! The foundation's examples with speculation off and on, in one run: what a user of specfaas waits for.
//!
//! Each application is deployed once; a warm-up trains the branch predictor and memo tables; then invocations
//! alternate between speculation off and on (`InvokeOptions`), over a fixed rotation of inputs, so both sides
//! see the same inputs and the same machine noise. Reported per application: p50 and mean latency on each side,
//! the speedup of the p50s, and what speculation did (launches, memo hits, squashes).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use platform::{InvokeOptions, Platform};
use serde_json::{Value, json};

pub struct Row {
    pub app: &'static str,
    pub off_ms_p50: f64,
    pub on_ms_p50: f64,
    pub off_ms_mean: f64,
    pub on_ms_mean: f64,
    pub speedup: f64,
}

pub struct Report {
    pub iterations: usize,
    pub rows: Vec<Row>,
    pub speculation: Value,
    pub setup: Value,
}

fn apps() -> Vec<(&'static str, &'static str, Vec<Value>)> {
    vec![
        (
            "smarthome",
            "smarthome",
            vec![
                json!({"user": "alice", "password": "wonderland", "room": "living"}),
                json!({"user": "alice", "password": "wonderland", "room": "cellar"}),
                json!({"user": "bob", "password": "builder", "room": "living"}),
            ],
        ),
        (
            "travel",
            "travel",
            vec![
                json!({"from": "paris", "to": "lyon", "rider": "ada", "age": 22}),
                json!({"from": "paris", "to": "lyon", "rider": "bo"}),
            ],
        ),
    ]
}

pub async fn run(examples: &Path, iterations: usize) -> anyhow::Result<Report> {
    let data = tempfile::tempdir()?;
    let work = tempfile::Builder::new().prefix("sfe").tempdir_in("/tmp")?;
    let store = Arc::new(storage::RedbStore::open(data.path().join("store.redb"))?);
    let platform = Platform::new(store, work.path(), platform::Config::default())?;
    let ns = "bench";
    let mut rows = Vec::new();
    for (dir, app, inputs) in apps() {
        platform.deploy_project(ns, &examples.join(dir)).await?;
        let warmup = (iterations / 5).max(10);
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for i in 0..warmup + iterations {
            let input = &inputs[i % inputs.len()];
            for speculation in [false, true] {
                let started = Instant::now();
                let options = InvokeOptions { speculation: Some(speculation), ..Default::default() };
                let inv = platform.invoke_with(ns, app, input.clone(), options).await?;
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                anyhow::ensure!(inv.status != platform::Status::InternalError, "{app}: {}", inv.result);
                // Bookings sell seats; put them back, outside the timed region, so every invocation books.
                if app == "travel" {
                    let writes = [("seats:TGV-6601", 2), ("seats:TGV-6605", 40)]
                        .map(|(k, n)| storage::Write { key: k.into(), op: storage::Op::Put(json!(n)) });
                    let batch = storage::Batch { namespace: ns.into(), writes: writes.to_vec(), expect: vec![] };
                    platform.store().apply(batch).await?;
                }
                if i >= warmup {
                    if speculation { on.push(ms) } else { off.push(ms) }
                }
            }
        }
        let (off_mean, on_mean) = (crate::mean(&off), crate::mean(&on));
        let (off_p50, on_p50) = (crate::quantile(&mut off, 0.5), crate::quantile(&mut on, 0.5));
        rows.push(Row {
            app,
            off_ms_p50: off_p50,
            on_ms_p50: on_p50,
            off_ms_mean: off_mean,
            on_ms_mean: on_mean,
            speedup: off_p50 / on_p50,
        });
    }
    platform.flush_records().await;
    let speculation = serde_json::to_value(platform.metrics())?;
    Ok(Report { iterations, rows, speculation, setup: crate::setup() })
}

impl crate::Report for Report {
    fn markdown(&self) -> String {
        let mut s = format!(
            "## Examples, speculation off vs on ({} invocations each, interleaved)\n\n\
             | app | off p50 (ms) | on p50 (ms) | off mean (ms) | on mean (ms) | speedup (p50) |\n|---|---|---|---|---|---|\n",
            self.iterations
        );
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2}× |\n",
                r.app, r.off_ms_p50, r.on_ms_p50, r.off_ms_mean, r.on_ms_mean, r.speedup
            ));
        }
        s.push_str(&format!("\nspeculation counters: {}\n\nsetup: {}\n", self.speculation, self.setup));
        s
    }

    fn to_json(&self) -> Value {
        json!({
            "benchmark": "examples",
            "iterations": self.iterations,
            "setup": self.setup,
            "speculation": self.speculation,
            "rows": self.rows.iter().map(|r| json!({
                "app": r.app, "off_ms_p50": r.off_ms_p50, "on_ms_p50": r.on_ms_p50,
                "off_ms_mean": r.off_ms_mean, "on_ms_mean": r.on_ms_mean, "speedup": r.speedup,
            })).collect::<Vec<_>>(),
        })
    }
}
