//! Held system calls: how soon a speculative run's held `connect` goes on once the run becomes non-speculative.
//!
//! A workflow `gate` (a native function that takes 20 ms) → `dialer` (Python, connects to a loopback listener the
//! sandbox allows). After warm-up the memo table predicts `gate`'s output, so `dialer` starts while `gate` still
//! runs; its `connect` is held by the sandbox's supervisor until `gate` commits. Each held call's record gives
//! **release**: from the platform answering the engine's release (`Action::Effect` of the `Call::Syscall`) to the
//! supervisor letting the call go on, on one `CLOCK_MONOTONIC`; and **waited**: how long the call was held.
//!
//! Goal (issue 12): a held call released ≤ 100 µs after its run becomes non-speculative.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use model::{Annotations, Application, Code, FunctionSpec, Kind, Limits};
use platform::Platform;
use serde_json::{Value, json};

pub struct Report {
    pub iterations: usize,
    pub held: usize,
    pub release_us_p50: f64,
    pub release_us_p99: f64,
    pub release_us_max: f64,
    pub waited_ms_p50: f64,
    pub connections: usize,
    pub setup: Value,
}

const DIALER: &str = "import socket
def main(args):
    s = socket.create_connection(('127.0.0.1', args['port']), timeout=5)
    s.close()
    return {'dialed': args['k']}
";

pub async fn run(iterations: usize) -> anyhow::Result<Report> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if conn.is_ok() {
                count.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let work = tempfile::Builder::new().prefix("sfh").tempdir_in("/tmp")?;
    let mut config = platform::Config::default();
    config.engine.pause_percent = 101; // speculate whatever the machine's load
    let sandbox = runtime::sandbox::Config {
        allow: vec![addr.to_string().parse().map_err(anyhow::Error::msg)?],
        ..Default::default()
    };
    let p = Platform::builder(Arc::new(storage::MemoryStore::new()))
        .work_dir(work.path())
        .config(config)
        .sandbox(sandbox)
        .default_runtimes()
        .build()?;
    let ns = "bench";
    p.native().register("gate", |_, input| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(input)
    });
    p.deploy_function(
        ns,
        FunctionSpec::new("gate", Kind::Native, Code::Native, Limits::default(), Annotations::default())?,
    )
    .await?;
    let code = Code::Source { text: DIALER.into(), main: "main".into() };
    let mut dialer = FunctionSpec::new("dialer", Kind::Python, code, Limits::default(), Annotations::default())?;
    dialer.parameters.insert("port".into(), json!(addr.port()));
    p.deploy_function(ns, dialer).await?;
    p.deploy_app(ns, Application::sequence("dial", &["gate".into(), "dialer".into()], &|f| p.has_function(ns, f))?);
    let (mut release, mut waited, mut committed) = (Vec::new(), Vec::new(), 0);
    for i in 0..iterations + 5 {
        let inv = p.invoke(ns, "dial", json!({"k": i % 4})).await?;
        anyhow::ensure!(inv.status == platform::Status::Success, "dial failed: {}", inv.result);
        for run in inv.runs.iter().filter(|r| r.name == "dialer") {
            let committed_run =
                run.annotations.iter().any(|a| a.key == "speculation" && a.value["fate"] == json!("committed"));
            committed += committed_run as usize;
            let Some(held) = run.annotations.iter().find(|a| a.key == "held") else { continue };
            for h in held.value.as_array().into_iter().flatten() {
                if i >= 5 && h["fate"] == "released" {
                    release.push(h["release_us"].as_f64().unwrap_or(f64::NAN));
                    waited.push(h["waited_us"].as_f64().unwrap_or(0.0) / 1000.0);
                }
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let connections = accepted.load(Ordering::SeqCst);
    anyhow::ensure!(connections == committed, "{connections} connections for {committed} committed dialer runs");
    anyhow::ensure!(!release.is_empty(), "no connect was held: the dialer never ran speculatively");
    Ok(Report {
        iterations,
        held: release.len(),
        release_us_p50: crate::quantile(&mut release.clone(), 0.5),
        release_us_p99: crate::quantile(&mut release.clone(), 0.99),
        release_us_max: crate::quantile(&mut release, 1.0),
        waited_ms_p50: crate::quantile(&mut waited, 0.5),
        connections,
        setup: crate::setup(),
    })
}

impl crate::Report for Report {
    fn markdown(&self) -> String {
        format!(
            "## Held system calls: a speculative Python run's `connect`, {} invocations\n\n\
             | held calls | release p50 (µs) | release p99 (µs) | release max (µs) | waited p50 (ms) | connections |\n\
             |---|---|---|---|---|---|\n\
             | {} | {:.1} | {:.1} | {:.1} | {:.2} | {} |\n\nsetup: {}\n",
            self.iterations,
            self.held,
            self.release_us_p50,
            self.release_us_p99,
            self.release_us_max,
            self.waited_ms_p50,
            self.connections,
            self.setup
        )
    }

    fn to_json(&self) -> Value {
        json!({
            "benchmark": "held",
            "iterations": self.iterations,
            "held": self.held,
            "release_us_p50": self.release_us_p50,
            "release_us_p99": self.release_us_p99,
            "release_us_max": self.release_us_max,
            "waited_ms_p50": self.waited_ms_p50,
            "connections": self.connections,
            "setup": self.setup,
        })
    }
}
