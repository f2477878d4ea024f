//! `specfaas bench paper`: the SpecFaaS paper's evaluation (HPCA 2023, §VII-VIII) rebuilt on specfaas.
//!
//! The 16 applications of `examples/paper` run with speculation off and on, block by block in the same run, at
//! loads scaled to this machine. Per application and suite it reports what the paper reports: p50 and mean
//! latency and their speedup (Fig. 11), the oracle bound, p99 reduction (Fig. 13), effective throughput under the
//! paper's QoS rule (Table III), speedup across branch hit rates (Fig. 14), CPU time normalized to speculation off
//! (Table IV), and what speculation did (memo and branch hit rates, squashes by cause, wasted CPU).
//!
//! - [`apps`]: the applications and how their inputs are drawn.
//! - [`measure`]: blocks of requests, CPU time, the oracle bound.
//! - [`report`]: results, the paper's numbers beside ours, Markdown, SVG and JSON.
//!
//! How a run goes, per application: a warm-up (both modes, training the tables and warming the pools); requests
//! one at a time in each mode (the single-request latency of the QoS rule, and the CPU cost of a request that
//! scales the loads); then, per load level, a block of Poisson arrivals with speculation off and a block with the
//! same inputs with speculation on (in alternating order, so drift favours neither). Each level starts with an
//! unmeasured warm-up block per mode at the level's rate, so that the handler pools have grown to what the level
//! needs: the paper measured warm functions, and a block that starts handlers measures cold starts instead.

pub mod apps;
pub mod measure;
pub mod report;

use std::path::PathBuf;
use std::sync::Arc;

use platform::Platform;
use serde_json::{Map, Value};

use apps::{APPS, App, Inputs, Suite};
use measure::Block;

/// Which applications, how long, where.
#[derive(Debug, Clone)]
pub struct Options {
    /// All 16 applications at one load with short runs (under two minutes), instead of the full evaluation.
    pub quick: bool,
    /// Seeds inputs and arrivals.
    pub seed: u64,
    /// The `examples` directory (holding `paper/`).
    pub examples: PathBuf,
    /// Only these applications (by name), when set.
    pub only: Vec<String>,
    /// Whether functions run confined (the default) or not.
    pub sandbox: runtime::sandbox::Mode,
}

/// How function time splits between CPU work and waiting on remote services.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    pub name: &'static str,
    pub cpu_share: f64,
}

/// The headline: 10% of each function's time is CPU work, 90% is waiting on remote services, as for functions
/// that call databases and APIs. On 2 cores this lets functions overlap as they would on the paper's 240 threads.
pub const IO_BOUND: Profile = Profile { name: "I/O-bound", cpu_share: 0.1 };
/// 80% CPU work: on 2 cores, at most two functions truly run at once, whatever speculation launches.
pub const CPU_BOUND: Profile = Profile { name: "CPU-bound", cpu_share: 0.8 };

/// Load levels, as shares of this machine's CPU that speculation-off requests would use (the paper's low, medium
/// and high loads are 100, 250 and 500 requests per second: the same 1 : 2.5 : 5 ratio).
pub const LOADS: [(&str, f64); 3] = [("low", 0.1), ("medium", 0.25), ("high", 0.5)];
/// Further levels, run only to find the effective throughput.
pub const LADDER: [(&str, f64); 1] = [("0.75", 0.75)];
/// Synthetic minority shares of the branch hit rate sweep (Fig. 14): 100, 90, 70 and 50% one way.
pub const SWEEP: [f64; 4] = [0.0, 0.1, 0.3, 0.5];
/// The minority share of the main runs: the paper's 90%.
pub const MINORITY: f64 = 0.1;

struct Sizes {
    warmup: usize,
    single: usize,
    /// Seconds of arrivals per block, and bounds on its requests.
    block_s: f64,
    block_min: usize,
    block_max: usize,
    /// Requests of a level's warm-up block per mode, as a share of its measured block (at least `block_min / 2`).
    level_warmup: f64,
}

const FULL: Sizes = Sizes { warmup: 16, single: 8, block_s: 4.0, block_min: 16, block_max: 60, level_warmup: 0.5 };
const QUICK: Sizes = Sizes { warmup: 2, single: 2, block_s: 1.0, block_min: 4, block_max: 6, level_warmup: 0.5 };

impl Sizes {
    /// Requests of a level's block at `rate`, and of its warm-up block.
    fn block(&self, rate: f64) -> (usize, usize) {
        let n = ((rate * self.block_s) as usize).clamp(self.block_min, self.block_max);
        (n, ((n as f64 * self.level_warmup) as usize).max(self.block_min / 2))
    }
}

/// One load level of one application: the two blocks.
#[derive(Debug, Clone)]
pub struct Level {
    pub name: String,
    pub utilization: f64,
    pub rate: f64,
    pub off: Block,
    pub on: Block,
}

/// Everything measured for one application.
#[derive(Debug, Clone)]
pub struct AppResult {
    pub app: App,
    pub functions: usize,
    pub single_off: Block,
    pub single_on: Block,
    /// The standard loads (one in a quick run), then the ladder.
    pub levels: Vec<Level>,
    /// The branch hit rate sweep: (minority share, level at the low load).
    pub sweep: Vec<(f64, Level)>,
    /// The CPU-bound profile at the medium load, when run.
    pub cpu_bound: Option<Level>,
}

pub struct Run {
    pub quick: bool,
    pub seed: u64,
    pub results: Vec<AppResult>,
    pub setup: Value,
    pub wall_s: f64,
}

fn progress(line: &str) {
    eprintln!("[paper] {line}");
}

/// Deploys a suite's project, with every function's CPU share set to the profile's.
async fn deploy(platform: &Platform, opts: &Options, suite: Suite, profile: Profile) -> anyhow::Result<usize> {
    let dir = opts.examples.join("paper").join(suite.dir());
    let mut project = platform::project::Project::read(&dir)?;
    for f in &mut project.functions {
        f.parameters.insert("cpu_share".into(), serde_json::json!(profile.cpu_share));
    }
    let n = project.functions.len();
    platform.deploy_manifest(suite.dir(), project).await?;
    Ok(n)
}

fn seed_data(opts: &Options, suite: Suite) -> anyhow::Result<Map<String, Value>> {
    let path = opts.examples.join("paper").join(suite.dir()).join("data/seed.json");
    let text = std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// A seed for one purpose of one application, so that adding an application changes no other's inputs.
pub(crate) fn mix(seed: u64, app: &str, purpose: u64) -> u64 {
    app.bytes().fold(seed ^ purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15), |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

pub async fn run(opts: Options) -> anyhow::Result<Run> {
    let started = std::time::Instant::now();
    let sizes = if opts.quick { QUICK } else { FULL };
    let data = tempfile::tempdir()?;
    let work = tempfile::Builder::new().prefix("sfp").tempdir_in("/tmp")?;
    let store = Arc::new(storage::RedbStore::open(data.path().join("store.redb"))?);
    let config = platform::Config::default();
    let sandbox = runtime::sandbox::Config { mode: opts.sandbox, ..Default::default() };
    let platform =
        Platform::builder(store).work_dir(work.path()).config(config).sandbox(sandbox).default_runtimes().build()?;
    let apps: Vec<App> =
        APPS.iter().copied().filter(|a| opts.only.is_empty() || opts.only.iter().any(|o| o == a.name)).collect();
    anyhow::ensure!(!apps.is_empty(), "no application matches {:?}; they are {:?}", opts.only, APPS.map(|a| a.name));
    let suites: Vec<Suite> = Suite::ALL.into_iter().filter(|s| apps.iter().any(|a| a.suite == *s)).collect();
    let mut counts = std::collections::HashMap::new();
    for &suite in &suites {
        let t = std::time::Instant::now();
        let n = deploy(&platform, &opts, suite, IO_BOUND).await?;
        progress(&format!("deployed {} ({n} functions) in {:.1} s", suite.name(), t.elapsed().as_secs_f64()));
        let project = platform::project::Project::read(&opts.examples.join("paper").join(suite.dir()))?;
        for app in apps.iter().filter(|a| a.suite == suite) {
            counts.insert(app.name, project.functions.iter().filter(|f| f.name.starts_with(app.prefix)).count());
        }
    }
    // Whatever deploying leaves running in the background (spare handlers starting) would land on the first
    // application's blocks and on the CPU per request that scales its loads. On this machine it was idle within a
    // second; the wait guards a slower one, and the progress line says how long it took.
    let t = std::time::Instant::now();
    let idle = measure::settle_within(std::time::Duration::from_secs(180)).await;
    progress(&format!(
        "spares started: machine {} after {:.1} s",
        if idle { "idle" } else { "still busy" },
        t.elapsed().as_secs_f64()
    ));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mut results = Vec::new();
    for (i, &app) in apps.iter().enumerate() {
        let seed = seed_data(&opts, app.suite)?;
        let ns = app.suite.dir();
        let tag = format!("{}/{} [{}/{}]", app.suite.name(), app.label, i + 1, apps.len());
        let mut inputs = Inputs::new(app, seed.clone(), mix(opts.seed, app.name, 1), MINORITY);
        // Warm-up: both modes, so both have warm handlers and the tables have seen the popular inputs.
        let warm: Vec<Value> = (0..sizes.warmup).map(|_| inputs.draw()).collect();
        for speculation in [false, true] {
            measure::block(&platform, ns, app.name, &warm, speculation, None, 0).await?;
        }
        let single: Vec<Value> = (0..sizes.single).map(|_| inputs.draw()).collect();
        let single_off = measure::block(&platform, ns, app.name, &single, false, None, 0).await?;
        let single_on = measure::block(&platform, ns, app.name, &single, true, None, 0).await?;
        let cpu_per_request = (single_off.cpu_ms / single.len() as f64).max(1.0);
        progress(&format!(
            "{tag}: one at a time: off {:.1} ms, on {:.1} ms (mean); {cpu_per_request:.1} ms CPU per request",
            single_off.mean(),
            single_on.mean()
        ));
        let rate_at = |u: f64| (u * cores * 1000.0 / cpu_per_request).clamp(0.5, 400.0);
        let mut levels = Vec::new();
        let standard: Vec<(&str, f64)> = if opts.quick { vec![LOADS[1]] } else { LOADS.to_vec() };
        let ladder: Vec<(&str, f64)> = if opts.quick { vec![] } else { LADDER.to_vec() };
        for (k, (name, u)) in standard.iter().chain(ladder.iter()).enumerate() {
            let rate = rate_at(*u);
            let (n, w) = sizes.block(rate);
            let warm: Vec<Value> = (0..w).map(|_| inputs.draw()).collect();
            let batch: Vec<Value> = (0..n).map(|_| inputs.draw()).collect();
            let seed = mix(opts.seed, app.name, 10 + k as u64);
            let level = level(&platform, &app, &warm, &batch, name, *u, rate, k % 2 == 1, seed).await?;
            progress(&format!(
                "{tag}: {name} load ({rate:.1}/s, {n} requests): p50 off {:.1} ms, on {:.1} ms: {:.2}x",
                level.off.p(0.5),
                level.on.p(0.5),
                level.off.p(0.5) / level.on.p(0.5)
            ));
            levels.push(level);
        }
        let mut sweep = Vec::new();
        if app.synthetic() && !opts.quick {
            let (name, u) = LOADS[0];
            let rate = rate_at(u);
            let (n, w) = sizes.block(rate);
            for (k, &minority) in SWEEP.iter().enumerate() {
                let mut inputs = Inputs::new(app, seed.clone(), mix(opts.seed, app.name, 100 + k as u64), minority);
                let warm: Vec<Value> = (0..w).map(|_| inputs.draw()).collect();
                let batch: Vec<Value> = (0..n).map(|_| inputs.draw()).collect();
                let seed = mix(opts.seed, app.name, 200 + k as u64);
                let level = level(&platform, &app, &warm, &batch, name, u, rate, k % 2 == 1, seed).await?;
                progress(&format!(
                    "{tag}: {:.0}% one way: {:.2}x",
                    (1.0 - minority) * 100.0,
                    level.off.p(0.5) / level.on.p(0.5)
                ));
                sweep.push((minority, level));
            }
        }
        results.push(AppResult {
            app,
            functions: counts[app.name],
            single_off,
            single_on,
            levels,
            sweep,
            cpu_bound: None,
        });
    }
    if !opts.quick {
        // The CPU-bound profile: the same applications with 80% of each function's time as CPU work.
        for &suite in &suites {
            deploy(&platform, &opts, suite, CPU_BOUND).await?;
        }
        for r in &mut results {
            let app = r.app;
            let mut inputs = Inputs::new(app, seed_data(&opts, app.suite)?, mix(opts.seed, app.name, 300), MINORITY);
            let warm: Vec<Value> = (0..4).map(|_| inputs.draw()).collect();
            let warmed = measure::block(&platform, app.suite.dir(), app.name, &warm, false, None, 0).await?;
            measure::block(&platform, app.suite.dir(), app.name, &warm, true, None, 0).await?;
            let cpu_per_request = (warmed.cpu_ms / warm.len() as f64).max(1.0);
            let (name, u) = LOADS[1];
            let rate = (u * cores * 1000.0 / cpu_per_request).clamp(0.5, 400.0);
            let n = ((rate * sizes.block_s) as usize).clamp(8, 30);
            let w = ((n as f64 * sizes.level_warmup) as usize).max(4);
            let level_warm: Vec<Value> = (0..w).map(|_| inputs.draw()).collect();
            let batch: Vec<Value> = (0..n).map(|_| inputs.draw()).collect();
            let seed = mix(opts.seed, app.name, 301);
            let level = level(&platform, &app, &level_warm, &batch, name, u, rate, false, seed).await?;
            progress(&format!(
                "{}/{} CPU-bound, medium load: {:.2}x",
                app.suite.name(),
                app.label,
                level.off.p(0.5) / level.on.p(0.5)
            ));
            r.cpu_bound = Some(level);
        }
    }
    let mut setup = crate::setup();
    setup["seed"] = serde_json::json!(opts.seed);
    setup["mode"] = serde_json::json!(if opts.quick { "quick" } else { "full" });
    setup["config"] = serde_json::to_value(config)?;
    setup["store"] = serde_json::json!("redb (temporary directory)");
    setup["sandbox"] = serde_json::to_value(opts.sandbox)?;
    setup["zipf_s"] = serde_json::json!(apps::ZIPF_S);
    setup["minority"] = serde_json::json!(MINORITY);
    Ok(Run { quick: opts.quick, seed: opts.seed, results, setup, wall_s: started.elapsed().as_secs_f64() })
}

/// Runs the same inputs with speculation off and on, as Poisson arrivals at `rate`, each mode after an unmeasured
/// warm-up block of `warm` at the same rate (its handler pools grow there, not in the measured block).
#[allow(clippy::too_many_arguments)]
async fn level(
    platform: &Platform,
    app: &App,
    warm: &[Value],
    inputs: &[Value],
    name: &str,
    utilization: f64,
    rate: f64,
    on_first: bool,
    seed: u64,
) -> anyhow::Result<Level> {
    let ns = app.suite.dir();
    let warm_seed = seed ^ 0x77a7_3e3d;
    for speculation in if on_first { [true, false] } else { [false, true] } {
        measure::block(platform, ns, app.name, warm, speculation, Some(rate), warm_seed).await?;
    }
    let (off, on) = if on_first {
        let on = measure::block(platform, ns, app.name, inputs, true, Some(rate), seed).await?;
        let off = measure::block(platform, ns, app.name, inputs, false, Some(rate), seed).await?;
        (off, on)
    } else {
        let off = measure::block(platform, ns, app.name, inputs, false, Some(rate), seed).await?;
        let on = measure::block(platform, ns, app.name, inputs, true, Some(rate), seed).await?;
        (off, on)
    };
    Ok(Level { name: name.to_string(), utilization, rate, off, on })
}
