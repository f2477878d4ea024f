//! Kill latency: from `Killer::kill()` on a running activation to its report (`Killed`) reaching the platform,
//! per runtime, in one run. A squash is exactly this, so it bounds how fast mispredicted work can be discarded
//! (DESIGN.md §5: process ≤ 1 ms, as the paper's kill of a handler; wasm ≤ 50 µs).
//!
//! Each activation sleeps in the function (Python `time.sleep`, a Node.js timer, a tokio sleep) or spins (a wasm
//! loop, stopped by epoch interruption) and is killed 20 ms after it started. A Python or Node.js handler gets
//! SIGKILL (confined, its whole PID namespace goes; both sides are measured, sandbox on and off); a native
//! function's task is aborted. A confined handler's report comes before its signal: the kill shuts its gate, puts
//! it in the background and reports, and a background thread signals it (`runtime::process`); so this measures
//! what the platform waits for, not the kernel's teardown, which follows. After each kill the warm function must still serve: the next activation is the check.

use std::sync::Arc;
use std::time::{Duration, Instant};

use model::{Annotations, Code, FunctionSpec, Kind, Limits};
use runtime::native::NativeRuntime;
use runtime::process::ProcessRuntime;
use runtime::{Activation, Outcome, Runtime};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub struct Row {
    pub runtime: &'static str,
    /// From `start()` of a no-op activation to its report: a fresh instance (wasm), a pooled handler (Python,
    /// Node.js) or a task (native), plus the run and the report.
    pub noop_us_p50: f64,
    pub kill_us_p50: f64,
    pub kill_us_p99: f64,
    pub kill_us_max: f64,
}

pub struct Report {
    pub iterations: usize,
    pub rows: Vec<Row>,
    pub setup: Value,
}

pub async fn run(iterations: usize) -> anyhow::Result<Report> {
    let work = tempfile::Builder::new().prefix("sfk").tempdir_in("/tmp")?;
    let process = Arc::new(ProcessRuntime::new(work.path())?);
    let off_work = tempfile::Builder::new().prefix("sfk").tempdir_in("/tmp")?;
    let off = runtime::sandbox::Config { mode: runtime::sandbox::Mode::Off, ..Default::default() };
    let unconfined = Arc::new(ProcessRuntime::with_sandbox(off_work.path(), &off)?);
    let native = Arc::new(NativeRuntime::new());
    native.register("sleep", |_, _| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(json!({}))
    });
    let wasm = Arc::new(runtime::wasm::WasmRuntime::new(Default::default())?);
    let spin = r#"(module (memory (export "memory") 1) (func (export "main") (loop $l (br $l))))"#;
    let spin = Code::Wasm { bytes: wat::parse_str(spin)?, main: "main".into() };
    let py_sleep = "import time\ndef main(a):\n    time.sleep(60)\n    return {}\n";
    let js_sleep = "function main() { return new Promise(() => {}); }";
    let specs: [(&'static str, Arc<dyn Runtime>, FunctionSpec); 6] = [
        (
            "native",
            native.clone(),
            FunctionSpec::new("sleep", Kind::Native, Code::Native, Limits::default(), Annotations::default())?,
        ),
        ("wasm", wasm, FunctionSpec::new("spin", Kind::Wasm, spin, Limits::default(), Annotations::default())?),
        ("python", process.clone(), source(Kind::Python, py_sleep)?),
        ("nodejs", process.clone(), source(Kind::Node, js_sleep)?),
        ("python, sandbox off", unconfined.clone(), source(Kind::Python, py_sleep)?),
        ("nodejs, sandbox off", unconfined.clone(), source(Kind::Node, js_sleep)?),
    ];
    let mut warm = Vec::new();
    let mut noop = Vec::new();
    for (name, rt, spec) in &specs {
        warm.push((*name, rt.load(Arc::new(spec.clone())).await?));
        noop.push(rt.load(Arc::new(noop_spec(spec.kind, &native)?)).await?);
    }
    let mut noop_us: Vec<Vec<f64>> = vec![Vec::new(); warm.len()];
    for i in 0..iterations.max(20) {
        for (r, w) in noop.iter().enumerate() {
            let (tx, rx) = oneshot::channel();
            let activation = Activation {
                id: format!("{i:032x}"),
                input: json!({"i": i}),
                env: Default::default(),
                speculative: false,
                cpu: Default::default(),
                after_squash: Default::default(),
            };
            let started = Instant::now();
            let _killer = w.start(
                activation,
                Arc::new(|_| {}),
                Box::new(move |report| {
                    let _ = tx.send((report, Instant::now()));
                }),
            );
            let (report, at) = tokio::time::timeout(Duration::from_secs(5), rx).await??;
            anyhow::ensure!(matches!(report.outcome, Outcome::Success(_)), "no-op failed: {:?}", report.outcome);
            if i >= 5 {
                noop_us[r].push(at.duration_since(started).as_secs_f64() * 1e6);
            }
        }
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); warm.len()];
    for i in 0..iterations {
        for (r, (name, w)) in warm.iter().enumerate() {
            let (tx, rx) = oneshot::channel();
            // Squashes kill speculative runs, whose CPU time is read just before the kill: measure that path.
            let activation = Activation {
                id: format!("{i:032x}"),
                input: json!({}),
                env: Default::default(),
                speculative: true,
                cpu: Default::default(),
                after_squash: Default::default(),
            };
            let host: runtime::Host = Arc::new(|_| {});
            let killer = w.start(
                activation,
                host,
                Box::new(move |report| {
                    let _ = tx.send((report, Instant::now()));
                }),
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            let killed_at = Instant::now();
            killer.kill();
            let (report, reported_at) = tokio::time::timeout(Duration::from_secs(5), rx).await??;
            anyhow::ensure!(report.outcome == Outcome::Killed, "{name}: expected Killed, got {:?}", report.outcome);
            samples[r].push(reported_at.duration_since(killed_at).as_secs_f64() * 1e6);
        }
    }
    let rows = warm
        .iter()
        .zip(samples)
        .zip(noop_us)
        .map(|(((name, _), mut s), mut n)| Row {
            runtime: name,
            noop_us_p50: crate::quantile(&mut n, 0.5),
            kill_us_p50: crate::quantile(&mut s, 0.5),
            kill_us_p99: crate::quantile(&mut s, 0.99),
            kill_us_max: crate::quantile(&mut s, 1.0),
        })
        .collect();
    Ok(Report { iterations, rows, setup: crate::setup() })
}

/// A function of `kind` that returns its input.
fn noop_spec(kind: Kind, native: &NativeRuntime) -> anyhow::Result<FunctionSpec> {
    let code = match kind {
        Kind::Native => {
            native.register("noop", |_, input| async move { Ok(input) });
            Code::Native
        }
        Kind::Wasm => Code::Wasm { bytes: wat::parse_str(runtime::conformance::WASM_ECHO)?, main: "main".into() },
        Kind::Python => Code::Source { text: "def main(a):\n    return a\n".into(), main: "main".into() },
        Kind::Node => Code::Source { text: "function main(p) { return p; }".into(), main: "main".into() },
    };
    Ok(FunctionSpec::new("noop", kind, code, Limits::default(), Annotations::default())?)
}

fn source(kind: Kind, text: &str) -> anyhow::Result<FunctionSpec> {
    let code = Code::Source { text: text.into(), main: "main".into() };
    Ok(FunctionSpec::new("sleep", kind, code, Limits::default(), Annotations::default())?)
}

impl crate::Report for Report {
    fn markdown(&self) -> String {
        let mut s = format!(
            "## Kill of a running activation, {} kills per runtime\n\n\
             | runtime | kill → report p50 (µs) | p99 (µs) | max (µs) | no-op start → report p50 (µs) |\n|---|---|---|---|---|\n",
            self.iterations
        );
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
                r.runtime, r.kill_us_p50, r.kill_us_p99, r.kill_us_max, r.noop_us_p50
            ));
        }
        s.push_str(&format!("\nsetup: {}\n", self.setup));
        s
    }

    fn to_json(&self) -> Value {
        json!({
            "benchmark": "kill",
            "iterations": self.iterations,
            "setup": self.setup,
            "rows": self.rows.iter().map(|r| json!({
                "runtime": r.runtime, "noop_us_p50": r.noop_us_p50, "kill_us_p50": r.kill_us_p50, "kill_us_p99": r.kill_us_p99, "kill_us_max": r.kill_us_max,
            })).collect::<Vec<_>>(),
        })
    }
}
