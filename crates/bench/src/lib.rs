//! Benchmarks of specfaas. They measure what a user waits for, run the sides they compare in one run, and report
//! the setup with the numbers.
//!
//! - [`handoff`]: transfer of control between functions on a chain of no-op functions, per runtime.
//! - [`held`]: how soon a speculative run's held system call goes on once the run is non-speculative.
//! - [`kill`]: how long stopping a running activation takes, per runtime (the cost of a squash).
//! - [`engine`]: the engine's own cost per function and per buffered access, in-process, no I/O.
//! - [`fanout`]: a `Map` of 16 and a `Parallel` of 4 branches of 20 ms functions, sequential, concurrent, and
//!   speculated, against their critical path.
//! - [`examples`]: the example applications with speculation off and on, interleaved.
//! - [`load`]: concurrent HTTP clients against `specfaas serve`, checking nothing is lost or duplicated.
//! - [`paper`]: the SpecFaaS paper's evaluation, its 16 applications with speculation off and on.
//! - [`ablation`]: one predictor piece on and off on the paper's applications, each side with its own tables.

pub mod ablation;
pub mod engine;
pub mod examples;
pub mod fanout;
pub mod handoff;
pub mod held;
pub mod kill;
pub mod load;
pub mod paper;

/// What every benchmark produces: a Markdown table for people and JSON for machines, both with the setup.
pub trait Report {
    fn markdown(&self) -> String;
    fn to_json(&self) -> serde_json::Value;
}

/// Describes the machine and build a benchmark ran on, for the record.
pub fn setup() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    serde_json::json!({ "cpu": cpu, "cores": cores, "commit": commit, "profile": profile, "os": std::env::consts::OS })
}

/// The `p`-quantile (0..=1) of `samples`, which it sorts.
pub fn quantile(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let i = ((samples.len() - 1) as f64 * p).round() as usize;
    samples[i]
}

pub fn mean(samples: &[f64]) -> f64 {
    samples.iter().sum::<f64>() / samples.len().max(1) as f64
}
