//! Load on `specfaas serve` (RELIABILITY.md L1): concurrent clients on loopback invoke, over HTTP, a no-op action
//! and a 5-function sequence whose last function appends the request's id to a log and increments a counter. Per
//! target: throughput and p50/p99 latency. Then the store must show every accepted request exactly once: counter ==
//! accepted, each id once in the log, and every refusal a 429 or 503.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine as _;
use serde_json::{Value, json};

pub struct Row {
    pub target: &'static str,
    pub requests: usize,
    pub accepted: usize,
    pub rejected: usize,
    pub throughput_rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

pub struct Report {
    pub clients: usize,
    pub rows: Vec<Row>,
    pub lost: usize,
    pub duplicated: usize,
    pub setup: Value,
}

const NOOP: &str = "def main(args):\n    return {}\n";
const PASS: &str = "def main(args):\n    return args\n";
const RECORD: &str = "import specfaas
def main(args):
    n = specfaas.kv.get('counter') or 0
    specfaas.kv.put('counter', n + 1)
    log = specfaas.kv.get('log') or []
    log.append(args['id'])
    specfaas.kv.put('log', log)
    return {'n': n + 1}
";

fn request(agent: &ureq::Agent, method: &str, url: &str, auth: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
    let header = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(auth));
    let req = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", header)
        .header("content-type", "application/json")
        .body(body.to_string().into_bytes())?;
    let mut response = agent.run(req)?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string()?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

pub async fn run(clients: usize, per_client: usize) -> anyhow::Result<Report> {
    let data = tempfile::tempdir()?;
    let mut config = platform::Config::default();
    config.engine.runs_max = 10_000;
    let limits = api::NamespaceLimits { concurrent_invocations_max: 1000, invocations_per_minute_max: 1_000_000 };
    let options =
        api::Options { config, limits, ..api::Options::new("127.0.0.1:0".parse()?, data.path().to_path_buf()) };
    let server = api::Server::start(options).await?;
    let base = format!("http://{}/api/v1/namespaces/_", server.addr);
    let auth = std::fs::read_to_string(data.path().join("auth"))?;
    tokio::spawn(server.serve(std::future::pending()));
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let setup = {
        let (agent, base, auth) = (agent.clone(), base.clone(), auth.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            for (name, code) in [("noop", NOOP), ("pass", PASS), ("record", RECORD)] {
                let (status, body) = request(
                    &agent,
                    "PUT",
                    &format!("{base}/actions/{name}?overwrite=true"),
                    &auth,
                    &json!({"exec": {"kind": "python:3", "code": code}}),
                )?;
                anyhow::ensure!(status == 200, "creating {name}: {body}");
            }
            let seq = json!({"exec": {"kind": "sequence", "components": ["pass", "pass", "pass", "pass", "record"]}});
            let (status, body) = request(&agent, "PUT", &format!("{base}/actions/five?overwrite=true"), &auth, &seq)?;
            anyhow::ensure!(status == 200, "creating the sequence: {body}");
            Ok(())
        })
    };
    setup.await??;
    let mut rows = Vec::new();
    let mut ids_accepted = Vec::new();
    for (target, action) in [("no-op action", "noop"), ("5-function sequence", "five")] {
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let outcomes = Arc::new(Mutex::new((Vec::new(), 0usize, 0usize))); // (accepted ids, rejected, other)
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (agent, base, auth, latencies, outcomes) =
                (agent.clone(), base.clone(), auth.clone(), latencies.clone(), outcomes.clone());
            tasks.push(tokio::task::spawn_blocking(move || {
                for i in 0..per_client {
                    let id = format!("{action}-{c}-{i}");
                    let t = Instant::now();
                    let url = format!("{base}/actions/{action}?blocking=true&result=true");
                    let outcome = request(&agent, "POST", &url, &auth, &json!({"id": id}));
                    latencies.lock().unwrap().push(t.elapsed().as_secs_f64() * 1000.0);
                    let mut o = outcomes.lock().unwrap();
                    match outcome {
                        Ok((200, _)) => o.0.push(id),
                        Ok((429 | 503, _)) => o.1 += 1,
                        _ => o.2 += 1,
                    }
                }
            }));
        }
        for t in tasks {
            t.await?;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let (accepted, rejected, other) = std::mem::take(&mut *outcomes.lock().unwrap());
        anyhow::ensure!(other == 0, "{target}: {other} requests failed with something other than 429/503");
        let mut lat = std::mem::take(&mut *latencies.lock().unwrap());
        let requests = clients * per_client;
        rows.push(Row {
            target,
            requests,
            accepted: accepted.len(),
            rejected,
            throughput_rps: accepted.len() as f64 / elapsed,
            p50_ms: crate::quantile(&mut lat, 0.5),
            p99_ms: crate::quantile(&mut lat, 0.99),
        });
        if action == "five" {
            ids_accepted = accepted;
        }
    }
    // Every accepted request of the sequence is in the store exactly once (read through an action: the server
    // owns the store).
    let (counter, log) = read_counter(&agent, &base, &auth).await?;
    let mut seen = std::collections::HashMap::new();
    for id in &log {
        *seen.entry(id.clone()).or_insert(0) += 1;
    }
    let duplicated = seen.values().filter(|n| **n > 1).count();
    let lost = ids_accepted.iter().filter(|id| !seen.contains_key(*id)).count();
    anyhow::ensure!(counter == ids_accepted.len(), "counter {counter} != accepted {}", ids_accepted.len());
    Ok(Report { clients, rows, lost, duplicated, setup: crate::setup() })
}

/// Reads `counter` and `log` through an action (the server owns the store).
async fn read_counter(agent: &ureq::Agent, base: &str, auth: &str) -> anyhow::Result<(usize, Vec<String>)> {
    let (agent, base, auth) = (agent.clone(), base.to_string(), auth.to_string());
    tokio::task::spawn_blocking(move || {
        let code = "import specfaas\ndef main(a):\n    return {'counter': specfaas.kv.get('counter') or 0, 'log': specfaas.kv.get('log') or []}\n";
        let (status, body) =
            request(&agent, "PUT", &format!("{base}/actions/peek?overwrite=true"), &auth, &json!({"exec": {"kind": "python:3", "code": code}}))?;
        anyhow::ensure!(status == 200, "{body}");
        let (status, body) = request(&agent, "POST", &format!("{base}/actions/peek?blocking=true&result=true"), &auth, &json!({}))?;
        anyhow::ensure!(status == 200, "{body}");
        let log = body["log"].as_array().map(|l| l.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()).unwrap_or_default();
        Ok((body["counter"].as_u64().unwrap_or(0) as usize, log))
    })
    .await?
}

impl crate::Report for Report {
    fn markdown(&self) -> String {
        let mut s = format!(
            "## Load on specfaas serve: {} concurrent HTTP clients on loopback, blocking invocations\n\n\
             | target | requests | accepted | 429/503 | throughput (req/s) | p50 (ms) | p99 (ms) |\n|---|---|---|---|---|---|---|\n",
            self.clients
        );
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:.1} | {:.2} | {:.2} |\n",
                r.target, r.requests, r.accepted, r.rejected, r.throughput_rps, r.p50_ms, r.p99_ms
            ));
        }
        s.push_str(&format!(
            "\nlost: {}, duplicated: {} (must both be 0)\n\nsetup: {}\n",
            self.lost, self.duplicated, self.setup
        ));
        s
    }

    fn to_json(&self) -> Value {
        json!({
            "benchmark": "load", "clients": self.clients, "lost": self.lost, "duplicated": self.duplicated, "setup": self.setup,
            "rows": self.rows.iter().map(|r| json!({"target": r.target, "requests": r.requests, "accepted": r.accepted,
                "rejected": r.rejected, "throughput_rps": r.throughput_rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms})).collect::<Vec<_>>(),
        })
    }
}
