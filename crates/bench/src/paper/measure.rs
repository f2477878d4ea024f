//! Measurement: running a block of requests (one after another, or as Poisson arrivals), the CPU time of the
//! whole platform, and the oracle bound of a request.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use platform::RunTiming;
use platform::metrics::Snapshot;
use platform::{InvokeOptions, Platform, Status};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Exp};
use serde_json::Value;

/// One request: what the client waited for, and the oracle bound when speculation was off.
#[derive(Debug, Clone)]
pub struct Sample {
    pub ms: f64,
    pub status: Status,
    /// The critical path with perfect prediction, from this request's measured function times (speculation off).
    pub oracle_ms: Option<f64>,
    /// Functions run (speculation off: the length of the sequential path).
    pub runs: usize,
}

/// A block of requests in one mode.
#[derive(Debug, Clone)]
pub struct Block {
    pub speculation: bool,
    /// Requests per second offered; `None` when requests ran one at a time.
    pub rate: Option<f64>,
    pub samples: Vec<Sample>,
    /// CPU time of the platform and every function process during the block, in milliseconds.
    pub cpu_ms: f64,
    pub wall_s: f64,
    /// What speculation did during the block.
    pub counters: Snapshot,
}

impl Block {
    pub fn latencies(&self) -> Vec<f64> {
        self.samples.iter().map(|s| s.ms).collect()
    }

    pub fn p(&self, q: f64) -> f64 {
        crate::quantile(&mut self.latencies(), q)
    }

    pub fn mean(&self) -> f64 {
        crate::mean(&self.latencies())
    }

    pub fn failed(&self) -> usize {
        self.samples.iter().filter(|s| s.status == Status::InternalError).count()
    }
}

/// Runs `inputs` against `app`: one at a time when `rate` is `None`, else as Poisson arrivals at `rate` per
/// second (seeded), each request on its own task, as independent clients would send them.
pub async fn block(
    platform: &Platform,
    namespace: &str,
    app: &str,
    inputs: &[Value],
    speculation: bool,
    rate: Option<f64>,
    seed: u64,
) -> anyhow::Result<Block> {
    let options = InvokeOptions { speculation: Some(speculation), ..Default::default() };
    block_with(platform, namespace, app, inputs, options, rate, seed).await
}

/// [`block`] with these invocation options (an ablation turns one predictor off).
pub async fn block_with(
    platform: &Platform,
    namespace: &str,
    app: &str,
    inputs: &[Value],
    options: InvokeOptions,
    rate: Option<f64>,
    seed: u64,
) -> anyhow::Result<Block> {
    let speculation = options.speculation.unwrap_or(true);
    settle().await;
    let before = platform.metrics();
    let cpu_before = machine_busy_ms();
    let started = Instant::now();
    let mut samples = Vec::with_capacity(inputs.len());
    match rate {
        None => {
            for input in inputs {
                samples.push(
                    request(platform.clone(), namespace.into(), app.into(), input.clone(), options.clone()).await?,
                );
            }
        }
        Some(rate) => {
            let gaps = Exp::new(rate).expect("a positive rate");
            let mut rng = StdRng::seed_from_u64(seed);
            let mut tasks = tokio::task::JoinSet::new();
            let mut at = tokio::time::Instant::now();
            for (i, input) in inputs.iter().enumerate() {
                tokio::time::sleep_until(at).await;
                let (p, ns, a, input) = (platform.clone(), namespace.to_string(), app.to_string(), input.clone());
                let options = options.clone();
                tasks.spawn(async move { (i, request(p, ns, a, input, options).await) });
                at += Duration::from_secs_f64(gaps.sample(&mut rng));
            }
            let mut done = Vec::with_capacity(inputs.len());
            while let Some(joined) = tasks.join_next().await {
                let (i, sample) = joined?;
                done.push((i, sample?));
            }
            done.sort_by_key(|(i, _)| *i);
            samples = done.into_iter().map(|(_, s)| s).collect();
        }
    }
    let wall_s = started.elapsed().as_secs_f64();
    platform.flush_records().await;
    // What the block left running (handlers being replaced or torn down after squashes) is its cost too.
    settle().await;
    Ok(Block {
        speculation,
        rate,
        samples,
        cpu_ms: machine_busy_ms() - cpu_before,
        wall_s,
        counters: platform.metrics().since(&before),
    })
}

async fn request(
    platform: Platform,
    namespace: String,
    app: String,
    input: Value,
    options: InvokeOptions,
) -> anyhow::Result<Sample> {
    let speculation = options.speculation.unwrap_or(true);
    let started = Instant::now();
    let invocation = platform.invoke_with(&namespace, &app, input.clone(), options).await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if invocation.status == Status::InternalError {
        anyhow::bail!("{namespace}/{app} failed on the platform with input {input}: {}", invocation.result);
    }
    let oracle_ms = (!speculation).then(|| oracle_ms(&invocation.timings));
    Ok(Sample { ms, status: invocation.status, oracle_ms, runs: invocation.timings.len() })
}

/// The latency of a request under perfect prediction, from the measured times of its function runs: every run
/// starts when the request arrives, and a run ends no earlier than its own execution (its time minus the time it
/// spent waiting for its callees) and no earlier than its callees end.
pub fn oracle_ms(timings: &[RunTiming]) -> f64 {
    let ms = |t: &RunTiming| t.finished.saturating_duration_since(t.launched).as_secs_f64() * 1000.0;
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, t) in timings.iter().enumerate() {
        if let Some(c) = t.caller {
            children.entry(c).or_default().push(i);
        }
    }
    // Callees are launched after their callers, so a reverse pass sees every callee before its caller.
    let mut end = vec![0.0f64; timings.len()];
    for i in (0..timings.len()).rev() {
        let kids = children.get(&i).map(Vec::as_slice).unwrap_or(&[]);
        let own = ms(&timings[i]) - kids.iter().map(|&k| ms(&timings[k])).sum::<f64>();
        end[i] = kids.iter().map(|&k| end[k]).fold(own.max(0.0), f64::max);
    }
    timings.iter().enumerate().filter(|(_, t)| t.caller.is_none()).map(|(i, _)| end[i]).fold(0.0, f64::max)
}

/// CPU time used so far by this process and its descendants (function initializers and handlers, and the
/// children they have reaped), in milliseconds, from `/proc`.
/// Machine-wide busy and total CPU time so far (from `/proc/stat`, in ticks).
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let total: u64 = cpu.iter().sum();
    let idle = cpu.get(3).copied().unwrap_or(0) + cpu.get(4).copied().unwrap_or(0); // idle + iowait
    Some((total - idle, total))
}

/// Waits (up to 5 s) until the machine is idle: no more than 10% busy over 200 ms. What the block before left
/// behind (replacement handlers started after squashes, records being written) then does not land on this block.
/// Without it, whichever side ran first in a level paid for the other side's leftovers of the level before.
pub async fn settle() {
    settle_within(Duration::from_secs(5)).await;
}

/// [`settle`], waiting up to `limit`; returns whether the machine is idle.
pub async fn settle_within(limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let Some((busy0, total0)) = machine_ticks() else { return false };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some((busy1, total1)) = machine_ticks() else { return false };
        if (busy1 - busy0) as f64 <= 0.1 * (total1 - total0).max(1) as f64 {
            return true;
        }
    }
    false
}

/// CPU time the whole machine has spent busy (user, system, interrupts, steal), in ms. A block runs alone on an
/// idle machine (see [`settle`]), so the difference over a block is what the block cost: the platform, every
/// handler (also those killed on the way, whose time no process tree still shows) and the kernel's work for them.
pub fn machine_busy_ms() -> f64 {
    const TICKS_PER_S: f64 = 100.0; // USER_HZ, which /proc/stat reports in on Linux
    machine_ticks().map_or(0.0, |(busy, _)| busy as f64 * 1000.0 / TICKS_PER_S)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(caller: Option<usize>, start_ms: u64, end_ms: u64, t0: Instant) -> RunTiming {
        RunTiming {
            function: "f".into(),
            caller,
            launched: t0 + Duration::from_millis(start_ms),
            finished: t0 + Duration::from_millis(end_ms),
        }
    }

    #[test]
    fn the_oracle_of_a_chain_is_its_longest_function() {
        let t0 = Instant::now();
        let chain = [run(None, 0, 20, t0), run(None, 20, 50, t0), run(None, 50, 60, t0)];
        assert!((oracle_ms(&chain) - 30.0).abs() < 0.01);
    }

    #[test]
    fn the_oracle_of_calls_overlaps_callees_with_their_caller() {
        let t0 = Instant::now();
        // The root runs 0..100: 20 ms of its own work, then calls a (30 ms, which calls c for 25 ms) and b (50 ms).
        let calls =
            [run(None, 0, 100, t0), run(Some(0), 10, 40, t0), run(Some(1), 12, 37, t0), run(Some(0), 45, 95, t0)];
        // Own work: root 100-30-50 = 20, a 30-25 = 5, c 25, b 50. With everything started at once: max = 50.
        assert!((oracle_ms(&calls) - 50.0).abs() < 0.01, "{}", oracle_ms(&calls));
    }

    #[test]
    fn busy_time_of_the_machine_grows_with_work() {
        let before = machine_busy_ms();
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(60) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(machine_busy_ms() - before >= 20.0, "60 ms of spinning shows up as CPU time");
    }
}
