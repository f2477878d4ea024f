//! The paper evaluation's report: derived figures, the paper's published numbers beside ours, a Markdown report
//! with SVG plots, and the machine-readable JSON.
//!
//! Definitions (the report states them too):
//! - speedup: p50 latency with speculation off over p50 with it on, at one load; an application's speedup is the
//!   mean over the standard loads (the paper's "averaged over loads"); a suite's is the mean of its applications'.
//! - oracle bound: per request with speculation off, the critical path if every prediction were right, from the
//!   measured function times ([`super::measure::oracle_ms`]); `oracle_fraction` is the oracle p50 over our p50.
//! - effective throughput: the highest offered rate whose mean latency stays within 2x the single-request mean.
//! - CPU ratio: CPU time of the whole platform (all function processes) with speculation on over off, same inputs.

use std::collections::BTreeMap;
use std::path::Path;

use engine::Cause;
use platform::metrics::Snapshot;
use plotters::prelude::*;
use serde_json::{Value, json};

use super::apps::Suite;
use super::{AppResult, Level, Run};

/// The paper's Fig. 11 speedups (low, medium, high load), per application.
const PAPER_SPEEDUP: [(&str, [f64; 3]); 11] = [
    ("Login", [2.3, 2.5, 2.7]),
    ("Banking", [3.9, 3.7, 3.6]),
    ("FlightBook", [6.7, 6.2, 5.9]),
    ("HotelBook", [5.2, 5.0, 4.9]),
    ("SmartH", [6.4, 6.1, 5.8]),
    ("OnlPurch", [6.8, 6.5, 6.2]),
    ("TcktApp", [3.6, 3.8, 3.6]),
    ("TripInfApp", [5.3, 5.5, 5.4]),
    ("QueryTrvl", [4.4, 4.7, 4.8]),
    ("GetLeftApp", [4.6, 4.8, 4.7]),
    ("CancelApp", [3.1, 3.2, 3.0]),
];
/// Fig. 11 per suite (low, medium, high).
const PAPER_SUITE_SPEEDUP: [(Suite, [f64; 3]); 3] =
    [(Suite::FaaSChain, [5.2, 5.0, 4.9]), (Suite::TrainTicket, [4.2, 4.4, 4.3]), (Suite::Alibaba, [4.4, 4.5, 4.6])];
/// Fig. 13: P99 normalized to the baseline (low, medium, high).
const PAPER_P99: [(&str, [f64; 3]); 6] = [
    ("Login", [0.40, 0.41, 0.44]),
    ("Banking", [0.33, 0.35, 0.38]),
    ("FlightBook", [0.25, 0.22, 0.27]),
    ("HotelBook", [0.41, 0.42, 0.48]),
    ("SmartH", [0.44, 0.40, 0.46]),
    ("OnlPurch", [0.39, 0.36, 0.44]),
];
const PAPER_SUITE_P99: [(Suite, [f64; 3]); 3] = [
    (Suite::FaaSChain, [0.37, 0.36, 0.41]),
    (Suite::TrainTicket, [0.41, 0.44, 0.46]),
    (Suite::Alibaba, [0.40, 0.42, 0.44]),
];
/// Fig. 14: speedup at 100, 90, 70 and 50% branch hit rate.
const PAPER_SWEEP: [(&str, [f64; 4]); 7] = [
    ("Login", [2.6, 2.5, 2.3, 2.0]),
    ("Banking", [4.4, 3.7, 3.55, 2.8]),
    ("FlightBook", [6.6, 6.2, 5.7, 4.9]),
    ("HotelBook", [5.2, 5.0, 4.7, 4.3]),
    ("SmartH", [6.3, 6.1, 5.7, 5.1]),
    ("OnlPurch", [6.7, 6.5, 5.6, 4.9]),
    ("Average", [5.3, 5.0, 4.6, 4.0]),
];
/// Table III: effective throughput (RPS) baseline, SpecFaaS, gain.
const PAPER_THROUGHPUT: [(Suite, [f64; 3]); 3] = [
    (Suite::FaaSChain, [118.3, 485.0, 4.1]),
    (Suite::TrainTicket, [90.3, 346.0, 3.8]),
    (Suite::Alibaba, [81.6, 304.2, 3.7]),
];
/// Table IV: SpecFaaS CPU normalized to the baseline at 100, 90, 70, 50% hit rate.
const PAPER_CPU: [f64; 4] = [1.00, 1.03, 1.08, 1.15];

/// The targets.
pub const TARGET_MEAN_SPEEDUP: f64 = 4.6;
pub const TARGET_SUITE_SPEEDUP: [(Suite, f64); 3] =
    [(Suite::FaaSChain, 5.0), (Suite::TrainTicket, 4.3), (Suite::Alibaba, 4.5)];
pub const TARGET_ORACLE: f64 = 1.15;
pub const TARGET_LOSS_90: f64 = 0.057;
pub const TARGET_CPU_90: f64 = 1.03;
pub const TARGET_THROUGHPUT_GAIN: f64 = 3.9;
pub const TARGET_P99_REDUCTION: f64 = 0.587;

fn paper<const N: usize>(table: &[(&str, [f64; N])], label: &str) -> Option<[f64; N]> {
    table.iter().find(|(l, _)| *l == label).map(|(_, v)| *v)
}

fn suite_paper<const N: usize>(table: &[(Suite, [f64; N])], suite: Suite) -> [f64; N] {
    table.iter().find(|(s, _)| *s == suite).map(|(_, v)| *v).expect("every suite has paper numbers")
}

fn mean(xs: impl IntoIterator<Item = f64>) -> f64 {
    let v: Vec<f64> = xs.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }
}

impl Level {
    pub fn speedup(&self) -> f64 {
        self.off.p(0.5) / self.on.p(0.5)
    }

    pub fn p99_ratio(&self) -> f64 {
        self.on.p(0.99) / self.off.p(0.99)
    }

    pub fn cpu_ratio(&self) -> f64 {
        self.on.cpu_ms / self.off.cpu_ms
    }

    pub fn oracle_p50(&self) -> f64 {
        let mut v: Vec<f64> = self.off.samples.iter().filter_map(|s| s.oracle_ms).collect();
        crate::quantile(&mut v, 0.5)
    }
}

fn rate(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

impl AppResult {
    /// The standard load levels (low, medium, high; or the quick run's one).
    pub fn standard(&self) -> impl Iterator<Item = &Level> {
        self.levels.iter().filter(|l| super::LOADS.iter().any(|(n, _)| *n == l.name))
    }

    /// The headline level: medium load.
    pub fn medium(&self) -> &Level {
        self.levels.iter().find(|l| l.name == "medium").unwrap_or(&self.levels[0])
    }

    pub fn speedup(&self) -> f64 {
        mean(self.standard().map(Level::speedup))
    }

    pub fn p99_reduction(&self) -> f64 {
        1.0 - mean(self.standard().map(Level::p99_ratio))
    }

    pub fn cpu_ratio(&self) -> f64 {
        let on: f64 = self.standard().map(|l| l.on.cpu_ms).sum();
        let off: f64 = self.standard().map(|l| l.off.cpu_ms).sum();
        on / off
    }

    /// Speculation's counters over the standard levels' speculation-on blocks.
    pub fn counters(&self) -> Snapshot {
        let mut total = Snapshot::default();
        for l in self.standard() {
            total.add(&l.on.counters);
        }
        total
    }

    /// Effective throughput with speculation off and on: the highest offered rate whose mean latency is within
    /// 2x the single-request mean. `None` when even the lowest level violates it.
    pub fn effective_throughput(&self) -> (Option<f64>, Option<f64>) {
        let best = |on: bool| {
            let single = if on { self.single_on.mean() } else { self.single_off.mean() };
            self.levels
                .iter()
                .filter(|l| (if on { &l.on } else { &l.off }).mean() <= 2.0 * single)
                .map(|l| l.rate)
                .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))))
        };
        (best(false), best(true))
    }

    /// Speedup at 100% one way over the oracle: our p50 over the oracle p50 (FaaSChain, from the sweep), else at
    /// the medium load.
    pub fn oracle_ratio(&self) -> f64 {
        let level = self.sweep.first().map(|(_, l)| l).unwrap_or(self.medium());
        level.on.p(0.5) / level.oracle_p50()
    }
}

/// Figures of a whole run, shared by the Markdown and the JSON.
pub struct Summary {
    pub mean_speedup: f64,
    /// The ceiling: speculation-off p50 over the oracle p50 (medium load), mean over applications.
    pub oracle_speedup: f64,
    pub suites: Vec<(Suite, f64)>,
    pub oracle_ratio: f64,
    pub loss_90: Option<f64>,
    pub cpu_90: Option<f64>,
    pub throughput_gain: f64,
    pub p99_reduction: f64,
}

impl Run {
    fn suites(&self) -> Vec<Suite> {
        Suite::ALL.into_iter().filter(|s| self.results.iter().any(|r| r.app.suite == *s)).collect()
    }

    fn of(&self, suite: Suite) -> impl Iterator<Item = &AppResult> {
        self.results.iter().filter(move |r| r.app.suite == suite)
    }

    fn sweep_mean(&self, k: usize, f: impl Fn(&Level) -> f64) -> Option<f64> {
        let v: Vec<f64> = self.results.iter().filter_map(|r| r.sweep.get(k).map(|(_, l)| f(l))).collect();
        (!v.is_empty()).then(|| mean(v))
    }

    /// Mean effective throughput per suite with speculation off and on.
    fn suite_throughput(&self, suite: Suite) -> (f64, f64) {
        let t: Vec<(Option<f64>, Option<f64>)> = self.of(suite).map(AppResult::effective_throughput).collect();
        (mean(t.iter().map(|t| t.0.unwrap_or(0.0))), mean(t.iter().map(|t| t.1.unwrap_or(0.0))))
    }

    pub fn summary(&self) -> Summary {
        let suites: Vec<(Suite, f64)> =
            self.suites().into_iter().map(|s| (s, mean(self.of(s).map(AppResult::speedup)))).collect();
        let gains: Vec<f64> = self
            .suites()
            .into_iter()
            .map(|s| {
                let (off, on) = self.suite_throughput(s);
                on / off
            })
            .collect();
        Summary {
            mean_speedup: mean(self.results.iter().map(AppResult::speedup)),
            oracle_speedup: mean(self.results.iter().map(|r| r.medium().off.p(0.5) / r.medium().oracle_p50())),
            suites,
            oracle_ratio: mean(self.results.iter().map(AppResult::oracle_ratio)),
            loss_90: self
                .sweep_mean(0, Level::speedup)
                .zip(self.sweep_mean(1, Level::speedup))
                .map(|(s100, s90)| 1.0 - s90 / s100),
            cpu_90: self.sweep_mean(1, Level::cpu_ratio),
            throughput_gain: mean(gains),
            p99_reduction: mean(self.results.iter().map(AppResult::p99_reduction)),
        }
    }

    pub fn json(&self) -> Value {
        let s = self.summary();
        let apps: Vec<Value> = self
            .results
            .iter()
            .map(|r| {
                let c = r.counters();
                let m = r.medium();
                let (t_off, t_on) = r.effective_throughput();
                json!({
                    "suite": r.app.suite.name(),
                    "app": r.app.label,
                    "functions": r.functions,
                    "baseline_p50_ms": m.off.p(0.5),
                    "spec_p50_ms": m.on.p(0.5),
                    "baseline_mean_ms": m.off.mean(),
                    "spec_mean_ms": m.on.mean(),
                    "speedup": r.speedup(),
                    "oracle_p50_ms": m.oracle_p50(),
                    "oracle_fraction": m.oracle_p50() / m.on.p(0.5),
                    "memo_hit_rate": c.memo_hit_rate(),
                    "field_guess_rate": rate(c.field_guesses, c.memo_misses),
                    "branch_hit_rate": c.branch_hit_rate(),
                    "callee_hit_rate": rate(c.callees_used, c.callees_predicted),
                    "callees_by_path": {"predicted": c.callees_predicted_path, "used": c.callees_used_path},
                    "squashes": c.squashes,
                    "wasted_cpu_ms": c.squashed_cpu_us as f64 / 1000.0,
                    "cpu_ratio": r.cpu_ratio(),
                    "p99_reduction": r.p99_reduction(),
                    "single_request_ms": {"baseline": r.single_off.mean(), "spec": r.single_on.mean()},
                    "effective_throughput_rps": {"baseline": t_off, "spec": t_on},
                    "loads": r.levels.iter().map(level_json).collect::<Vec<_>>(),
                    "hit_rate_sweep": r.sweep.iter().map(|(m, l)| json!({
                        "one_way": 1.0 - m, "level": level_json(l),
                    })).collect::<Vec<_>>(),
                    "cpu_bound_medium_load": r.cpu_bound.as_ref().map(level_json),
                })
            })
            .collect();
        json!({
            "benchmark": "paper",
            "mode": if self.quick { "quick" } else { "full" },
            "seed": self.seed,
            "setup": self.setup,
            "wall_s": self.wall_s,
            "mean_speedup": s.mean_speedup,
            "oracle_speedup": s.oracle_speedup,
            "suites": s.suites.iter().map(|(suite, speedup)| {
                let (off, on) = self.suite_throughput(*suite);
                json!({"suite": suite.name(), "speedup": speedup,
                       "effective_throughput_rps": {"baseline": off, "spec": on}})
            }).collect::<Vec<_>>(),
            "oracle_ratio": s.oracle_ratio,
            "speedup_loss_100_to_90": s.loss_90,
            "cpu_ratio_at_90": s.cpu_90,
            "throughput_gain": s.throughput_gain,
            "p99_reduction": s.p99_reduction,
            "apps": apps,
        })
    }

    /// The Markdown report; with `dir`, also writes the SVG plots it links to there.
    pub fn markdown(&self, dir: Option<&Path>) -> anyhow::Result<String> {
        let s = self.summary();
        let mut md = String::new();
        let push = |md: &mut String, line: String| {
            md.push_str(&line);
            md.push('\n');
        };
        push(
            &mut md,
            format!("# SpecFaaS evaluation on specfaas ({} run)\n", if self.quick { "quick" } else { "full" }),
        );
        push(
            &mut md,
            format!(
                "Seed {}, {:.0} s. Setup: `{}`.\n\nReproduce: `cargo run --release --bin specfaas -- bench paper{} \
                 --seed {} --out DIR`.\n",
                self.seed,
                self.wall_s,
                self.setup,
                if self.quick { " --quick" } else { "" },
                self.seed
            ),
        );
        push(&mut md, "## Targets\n".into());
        push(&mut md, "| measure | target | paper | ours | |\n|---|---|---|---|---|".into());
        let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
        push(
            &mut md,
            format!(
                "| mean speedup, all applications | ≥ {TARGET_MEAN_SPEEDUP}× | 4.6× | {:.2}× | {} |",
                s.mean_speedup,
                verdict(s.mean_speedup >= TARGET_MEAN_SPEEDUP)
            ),
        );
        push(
            &mut md,
            format!(
                "| *ceiling: speedup with perfect prediction (off p50 / oracle p50), mean* | — | — | {:.2}× | |",
                s.oracle_speedup
            ),
        );
        for (suite, sp) in &s.suites {
            let target = TARGET_SUITE_SPEEDUP.iter().find(|(t, _)| t == suite).map_or(0.0, |t| t.1);
            push(
                &mut md,
                format!(
                    "| speedup, {} | ≥ {target}× | {:.1}× | {sp:.2}× | {} |",
                    suite.name(),
                    mean(suite_paper(&PAPER_SUITE_SPEEDUP, *suite)),
                    verdict(*sp >= target)
                ),
            );
        }
        push(
            &mut md,
            format!(
                "| latency over the oracle bound (100% one way for FaaSChain) | ≤ {TARGET_ORACLE}× | — | {:.2}× | {} |",
                s.oracle_ratio,
                verdict(s.oracle_ratio <= TARGET_ORACLE)
            ),
        );
        if let (Some(loss), Some(cpu)) = (s.loss_90, s.cpu_90) {
            push(
                &mut md,
                format!(
                    "| speedup lost from 100% to 90% | ≤ {:.1}% | 5.7% | {:.1}% | {} |",
                    TARGET_LOSS_90 * 100.0,
                    loss * 100.0,
                    verdict(loss <= TARGET_LOSS_90)
                ),
            );
            push(
                &mut md,
                format!(
                    "| CPU at 90%, normalized to speculation off | ≤ {TARGET_CPU_90}× | 1.03× | {cpu:.2}× | {} |",
                    verdict(cpu <= TARGET_CPU_90)
                ),
            );
        }
        push(
            &mut md,
            format!(
                "| effective throughput gain | ≥ {TARGET_THROUGHPUT_GAIN}× | 3.9× | {:.2}× | {} |",
                s.throughput_gain,
                verdict(s.throughput_gain >= TARGET_THROUGHPUT_GAIN)
            ),
        );
        push(
            &mut md,
            format!(
                "| p99 reduction | ≥ {:.1}% | 58.7% | {:.1}% | {} |\n",
                TARGET_P99_REDUCTION * 100.0,
                s.p99_reduction * 100.0,
                verdict(s.p99_reduction >= TARGET_P99_REDUCTION)
            ),
        );

        // Fig. 11
        let names: Vec<String> = self.results[0].standard().map(|l| l.name.clone()).collect();
        push(
            &mut md,
            format!(
                "## Latency and speedup (Fig. 11), I/O-bound profile\n\nLoads: {}. Rates are set per application from its measured CPU cost per request, so that speculation-off requests would use 10%, 25% and 50% of this machine's {} cores (the paper's 100/250/500 RPS have the same ratio).\n",
                names.join(", "),
                self.setup["cores"]
            ),
        );
        push(
            &mut md,
            "| suite | app | functions | load | rate (/s) | off p50 | on p50 | off mean | on mean | oracle p50 | speedup | paper |\n|---|---|---|---|---|---|---|---|---|---|---|---|".into(),
        );
        for r in &self.results {
            for (k, l) in r.standard().enumerate() {
                let idx = super::LOADS.iter().position(|(n, _)| *n == l.name).unwrap_or(k);
                let p = paper(&PAPER_SPEEDUP, r.app.label).map_or("—".into(), |p| format!("{:.1}×", p[idx]));
                push(
                    &mut md,
                    format!(
                        "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}× | {} |",
                        r.app.suite.name(),
                        r.app.label,
                        r.functions,
                        l.name,
                        l.rate,
                        l.off.p(0.5),
                        l.on.p(0.5),
                        l.off.mean(),
                        l.on.mean(),
                        l.oracle_p50(),
                        l.speedup(),
                        p
                    ),
                );
            }
        }
        push(&mut md, "\n| suite | ours (mean over loads) | paper (low/medium/high) |\n|---|---|---|".into());
        for (suite, sp) in &s.suites {
            let p = suite_paper(&PAPER_SUITE_SPEEDUP, *suite);
            push(&mut md, format!("| {} | {sp:.2}× | {:.1} / {:.1} / {:.1}× |", suite.name(), p[0], p[1], p[2]));
        }
        push(&mut md, format!("| **all 16** | **{:.2}×** | **4.6×** |\n", s.mean_speedup));
        if let Some(dir) = dir {
            let labels: Vec<&str> = self.results.iter().map(|r| r.app.label).collect();
            let ours: Vec<Option<f64>> = self.results.iter().map(|r| Some(r.speedup())).collect();
            let theirs: Vec<Option<f64>> =
                self.results.iter().map(|r| paper(&PAPER_SPEEDUP, r.app.label).map(mean)).collect();
            let oracle: Vec<Option<f64>> =
                self.results.iter().map(|r| Some(r.medium().off.p(0.5) / r.medium().oracle_p50())).collect();
            bars(
                &dir.join("speedup.svg"),
                "Speedup over speculation off (p50, mean over loads)",
                "speedup (x)",
                &labels,
                &[("specfaas", BLUE, ours), ("oracle bound", GREEN, oracle), ("paper (Fig. 11)", RED, theirs)],
            )?;
            push(&mut md, "![speedup](speedup.svg)\n".into());
        }

        // Oracle
        push(&mut md, "## Oracle bound\n\nThe oracle bound is the latency with perfect prediction from the measured function times of each speculation-off request: every function starts when the request arrives, and a caller ends no earlier than its own execution and its callees. Below at the medium load; for FaaSChain also at 100% one way (no synthetic minority).\n".into());
        push(
            &mut md,
            "| app | oracle p50 (ms) | on p50 (ms) | on / oracle | at 100%: on / oracle |\n|---|---|---|---|---|"
                .into(),
        );
        for r in &self.results {
            let m = r.medium();
            let at100 = r.sweep.first().map_or("—".into(), |(_, l)| format!("{:.2}×", l.on.p(0.5) / l.oracle_p50()));
            push(
                &mut md,
                format!(
                    "| {} | {:.1} | {:.1} | {:.2}× | {at100} |",
                    r.app.label,
                    m.oracle_p50(),
                    m.on.p(0.5),
                    m.on.p(0.5) / m.oracle_p50()
                ),
            );
        }
        md.push('\n');

        // Table III
        push(&mut md, "## Effective throughput (Table III)\n\nThe highest offered rate (of the load levels run) whose mean latency stays within 2× the single-request mean of the same mode. The levels are coarse (10, 25, 50 and 75% of the CPU speculation-off requests would use), so this is a lower bound at that resolution.\n".into());
        push(&mut md, "| suite | app | single off (ms) | single on (ms) | off (rps) | on (rps) | gain | paper (off / on / gain) |\n|---|---|---|---|---|---|---|---|".into());
        let show = |x: Option<f64>| x.map_or("none".to_string(), |x| format!("{x:.1}"));
        for r in &self.results {
            let (off, on) = r.effective_throughput();
            let gain = match (off, on) {
                (Some(a), Some(b)) => format!("{:.2}×", b / a),
                _ => "—".into(),
            };
            push(
                &mut md,
                format!(
                    "| {} | {} | {:.1} | {:.1} | {} | {} | {gain} | |",
                    r.app.suite.name(),
                    r.app.label,
                    r.single_off.mean(),
                    r.single_on.mean(),
                    show(off),
                    show(on)
                ),
            );
        }
        for suite in self.suites() {
            let (off, on) = self.suite_throughput(suite);
            let p = suite_paper(&PAPER_THROUGHPUT, suite);
            push(
                &mut md,
                format!(
                    "| **{}** | mean | | | {off:.1} | {on:.1} | {:.2}× | {:.1} / {:.1} / {:.1}× |",
                    suite.name(),
                    on / off,
                    p[0],
                    p[1],
                    p[2]
                ),
            );
        }
        md.push('\n');

        // Fig. 13
        push(&mut md, "## Tail latency (Fig. 13)\n\np99 with speculation on, normalized to off, per load.\n".into());
        push(&mut md, "| app | ours | paper | p99 reduction (mean) |\n|---|---|---|---|".into());
        for r in &self.results {
            let ours: Vec<String> = r.standard().map(|l| format!("{:.2}", l.p99_ratio())).collect();
            let p = paper(&PAPER_P99, r.app.label)
                .map_or("—".into(), |p| format!("{:.2} / {:.2} / {:.2}", p[0], p[1], p[2]));
            push(
                &mut md,
                format!("| {} | {} | {p} | {:.1}% |", r.app.label, ours.join(" / "), r.p99_reduction() * 100.0),
            );
        }
        for suite in self.suites() {
            let p = suite_paper(&PAPER_SUITE_P99, suite);
            let ours = mean(self.of(suite).map(|r| 1.0 - r.p99_reduction()));
            push(
                &mut md,
                format!(
                    "| **{} mean** | {ours:.2} | {:.2} / {:.2} / {:.2} | {:.1}% |",
                    suite.name(),
                    p[0],
                    p[1],
                    p[2],
                    (1.0 - ours) * 100.0
                ),
            );
        }
        md.push('\n');
        if let Some(dir) = dir {
            let labels: Vec<&str> = self.results.iter().map(|r| r.app.label).collect();
            let ours: Vec<Option<f64>> = self.results.iter().map(|r| Some(1.0 - r.p99_reduction())).collect();
            let theirs: Vec<Option<f64>> =
                self.results.iter().map(|r| paper(&PAPER_P99, r.app.label).map(mean)).collect();
            bars(
                &dir.join("p99.svg"),
                "p99 latency, speculation on / off (mean over loads)",
                "normalized p99",
                &labels,
                &[("specfaas", BLUE, ours), ("paper (Fig. 13)", RED, theirs)],
            )?;
            push(&mut md, "![p99](p99.svg)\n".into());
        }

        // Fig. 14 and Table IV
        if self.results.iter().any(|r| !r.sweep.is_empty()) {
            push(&mut md, "## Branch hit rate sweep (Fig. 14) and CPU cost (Table IV)\n\nFaaSChain at the low load. The knob is the share of requests on the synthetic minority path (100, 90, 70, 50% one way), whose values are fresh so no table can predict them; the branch hit rate actually measured is shown beside it (memo hits decide most branches on data, so predictions are made only on memo misses).\n".into());
            push(&mut md, "| app | one way | measured branch hit rate | speedup | paper | CPU on/off | paper CPU |\n|---|---|---|---|---|---|---|".into());
            for r in self.results.iter().filter(|r| !r.sweep.is_empty()) {
                for (k, (minority, l)) in r.sweep.iter().enumerate() {
                    let p = paper(&PAPER_SWEEP, r.app.label).map_or("—".into(), |p| format!("{:.2}×", p[k]));
                    let hit = l.on.counters.branch_hit_rate().map_or("—".into(), |h| format!("{:.0}%", h * 100.0));
                    push(
                        &mut md,
                        format!(
                            "| {} | {:.0}% | {hit} | {:.2}× | {p} | {:.2} | {:.2} |",
                            r.app.label,
                            (1.0 - minority) * 100.0,
                            l.speedup(),
                            l.cpu_ratio(),
                            PAPER_CPU[k]
                        ),
                    );
                }
            }
            let avg: Vec<String> = (0..super::SWEEP.len())
                .map(|k| self.sweep_mean(k, Level::speedup).map_or("—".into(), |v| format!("{v:.2}×")))
                .collect();
            let cpu: Vec<String> = (0..super::SWEEP.len())
                .map(|k| self.sweep_mean(k, Level::cpu_ratio).map_or("—".into(), |v| format!("{v:.2}")))
                .collect();
            push(
                &mut md,
                format!(
                    "\nFaaSChain mean speedup at 100/90/70/50%: {} (paper 5.3/5.0/4.6/4.0×); CPU on/off: {} (paper 1.00/1.03/1.08/1.15).\n",
                    avg.join(" / "),
                    cpu.join(" / ")
                ),
            );
            if let Some(dir) = dir {
                let mut series = Vec::new();
                for r in self.results.iter().filter(|r| !r.sweep.is_empty()) {
                    series
                        .push((r.app.label.to_string(), r.sweep.iter().map(|(_, l)| l.speedup()).collect::<Vec<_>>()));
                }
                series.push(("paper, average".to_string(), PAPER_SWEEP[6].1.to_vec()));
                lines(&dir.join("sweep.svg"), "Speedup by share of requests one way (FaaSChain)", &series)?;
                push(&mut md, "![sweep](sweep.svg)\n".into());
            }
        }

        // Speculation counters
        push(&mut md, "## What speculation did (standard loads, speculation on)\n".into());
        push(&mut md, "| app | memo hit rate | misses guessed | branch hit rate | callees used / predicted | of them by path | squashes by cause | wasted CPU (ms) | CPU on/off |\n|---|---|---|---|---|---|---|---|---|".into());
        let pct = |x: Option<f64>| x.map_or("—".to_string(), |x| format!("{:.0}%", x * 100.0));
        for r in &self.results {
            let c = r.counters();
            let squashes: Vec<String> = c.squashes.iter().map(|(k, v)| format!("{}: {v}", cause(*k))).collect();
            push(
                &mut md,
                format!(
                    "| {} | {} | {} | {} | {} / {} | {} / {} | {} | {:.0} | {:.2} |",
                    r.app.label,
                    pct(c.memo_hit_rate()),
                    pct(rate(c.field_guesses, c.memo_misses)),
                    pct(c.branch_hit_rate()),
                    c.callees_used,
                    c.callees_predicted,
                    c.callees_used_path,
                    c.callees_predicted_path,
                    if squashes.is_empty() { "none".into() } else { squashes.join(", ") },
                    c.squashed_cpu_us as f64 / 1000.0,
                    r.cpu_ratio()
                ),
            );
        }
        md.push('\n');

        // Handler processes
        push(&mut md, "## Handler processes (measured blocks of every load level)\n\nWhat running the functions cost the process runtime beside the runs: handlers started (at full priority for a waiting activation, or as background spares), handlers retired by reason, and the activations that found no idle handler, with their mean wait. Speculation off / on.\n".into());
        push(&mut md, "| app | load | started for a waiter | spares started | retired: pool full | killed (squash) | left processes | failed or exited | waits | mean wait (ms) |\n|---|---|---|---|---|---|---|---|---|---|".into());
        for (r, l) in self.results.iter().flat_map(|r| r.levels.iter().map(move |l| (r, l))) {
            let (off, on) = (&l.off.counters, &l.on.counters);
            let both = |f: fn(&Snapshot) -> u64| format!("{} / {}", f(off), f(on));
            let wait = |c: &Snapshot| {
                if c.handler_waits == 0 {
                    "—".to_string()
                } else {
                    format!("{:.1}", c.handler_wait_us as f64 / c.handler_waits as f64 / 1000.0)
                }
            };
            push(
                &mut md,
                format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
                    r.app.label,
                    l.name,
                    both(|c| c.handlers_started_for_waiter),
                    both(|c| c.handlers_started_spare),
                    both(|c| c.handlers_retired_idle_max),
                    both(|c| c.handlers_retired_killed),
                    both(|c| c.handlers_retired_left_processes),
                    both(|c| c.handlers_retired_failed + c.handlers_exited),
                    both(|c| c.handler_waits),
                    wait(off),
                    wait(on)
                ),
            );
        }
        md.push('\n');

        // CPU-bound profile
        if self.results.iter().any(|r| r.cpu_bound.is_some()) {
            push(&mut md, "## CPU-bound profile (80% of each function's time is CPU work), medium load\n\nOn this machine's cores, at most that many functions truly run at once, whatever speculation launches; the paper's testbed had 240 hardware threads.\n".into());
            push(&mut md, "| app | off p50 | on p50 | speedup | CPU on/off |\n|---|---|---|---|---|".into());
            for r in &self.results {
                if let Some(l) = &r.cpu_bound {
                    push(
                        &mut md,
                        format!(
                            "| {} | {:.1} | {:.1} | {:.2}× | {:.2} |",
                            r.app.label,
                            l.off.p(0.5),
                            l.on.p(0.5),
                            l.speedup(),
                            l.cpu_ratio()
                        ),
                    );
                }
            }
            let sp = mean(self.results.iter().filter_map(|r| r.cpu_bound.as_ref()).map(Level::speedup));
            push(&mut md, format!("\nMean speedup, CPU-bound: {sp:.2}×.\n"));
        }
        let failed: usize =
            self.results.iter().flat_map(|r| r.levels.iter()).map(|l| l.off.failed() + l.on.failed()).sum();
        push(&mut md, format!("Requests that failed on the platform: {failed}.\n"));
        Ok(md)
    }
}

fn cause(c: Cause) -> String {
    serde_json::to_value(c).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn level_json(l: &Level) -> Value {
    let block = |b: &super::measure::Block| {
        json!({
            "requests": b.samples.len(), "p50_ms": b.p(0.5), "mean_ms": b.mean(), "p99_ms": b.p(0.99),
            "cpu_ms": b.cpu_ms, "wall_s": b.wall_s, "counters": b.counters,
        })
    };
    json!({
        "load": l.name, "utilization": l.utilization, "rate_rps": l.rate, "speedup": l.speedup(),
        "oracle_p50_ms": l.oracle_p50(), "p99_ratio": l.p99_ratio(), "cpu_ratio": l.cpu_ratio(),
        "baseline": block(&l.off), "spec": block(&l.on),
    })
}

/// A grouped bar chart, one group per label.
fn bars(
    path: &Path,
    title: &str,
    y_desc: &str,
    labels: &[&str],
    series: &[(&str, RGBColor, Vec<Option<f64>>)],
) -> anyhow::Result<()> {
    let plot = |e: String| anyhow::anyhow!("plotting {}: {e}", path.display());
    let top =
        series.iter().flat_map(|s| s.2.iter().flatten()).copied().filter(|v| v.is_finite()).fold(1.0, f64::max) * 1.15;
    let root = SVGBackend::new(path, (1100, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot(e.to_string()))?;
    let n = labels.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .y_label_area_size(50)
        .x_label_area_size(10)
        .build_cartesian_2d(-0.6..n - 0.4, -top * 0.12..top)
        .map_err(|e| plot(e.to_string()))?;
    chart.configure_mesh().disable_x_mesh().x_labels(0).y_desc(y_desc).draw().map_err(|e| plot(e.to_string()))?;
    let width = 0.8 / series.len() as f64;
    for (k, (name, color, values)) in series.iter().enumerate() {
        let color = *color;
        let rects = values.iter().enumerate().filter_map(|(i, v)| {
            let v = (*v)?.max(0.0);
            let x0 = i as f64 - 0.4 + k as f64 * width;
            Some(Rectangle::new([(x0, 0.0), (x0 + width * 0.9, v)], color.filled()))
        });
        chart
            .draw_series(rects)
            .map_err(|e| plot(e.to_string()))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    let font: TextStyle = ("sans-serif", 11).into_font().into();
    let font = font.pos(plotters::style::text_anchor::Pos::new(
        plotters::style::text_anchor::HPos::Center,
        plotters::style::text_anchor::VPos::Top,
    ));
    chart
        .draw_series(
            labels.iter().enumerate().map(|(i, l)| Text::new(l.to_string(), (i as f64, -top * 0.04), font.clone())),
        )
        .map_err(|e| plot(e.to_string()))?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| plot(e.to_string()))?;
    root.present().map_err(|e| plot(e.to_string()))?;
    Ok(())
}

/// Speedup against the share one way (100, 90, 70, 50%), one line per series.
fn lines(path: &Path, title: &str, series: &[(String, Vec<f64>)]) -> anyhow::Result<()> {
    let plot = |e: String| anyhow::anyhow!("plotting {}: {e}", path.display());
    let top = series.iter().flat_map(|s| s.1.iter()).copied().filter(|v| v.is_finite()).fold(1.0, f64::max) * 1.15;
    let root = SVGBackend::new(path, (700, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(45.0..105.0, 0.0..top)
        .map_err(|e| plot(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("requests one way (%)")
        .y_desc("speedup (x)")
        .draw()
        .map_err(|e| plot(e.to_string()))?;
    let xs = [100.0, 90.0, 70.0, 50.0];
    for (k, (name, ys)) in series.iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        let dashed = name.starts_with("paper");
        let points: Vec<(f64, f64)> = xs.iter().copied().zip(ys.iter().copied()).collect();
        let style = if dashed { BLACK.stroke_width(3) } else { color.stroke_width(2) };
        chart
            .draw_series(LineSeries::new(points, style))
            .map_err(|e| plot(e.to_string()))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerLeft)
        .draw()
        .map_err(|e| plot(e.to_string()))?;
    root.present().map_err(|e| plot(e.to_string()))?;
    Ok(())
}

/// Checks a report's JSON is complete and well formed: every application, every field, finite numbers where
/// numbers must be. Returns what is wrong.
pub fn check_json(report: &Value, expected_apps: usize) -> Vec<String> {
    let mut wrong = Vec::new();
    let finite = |v: &Value| v.as_f64().is_some_and(f64::is_finite);
    if !finite(&report["mean_speedup"]) {
        wrong.push("mean_speedup is not a number".into());
    }
    match report["suites"].as_array() {
        Some(s) if !s.is_empty() => {
            for suite in s {
                if !suite["suite"].is_string() || !finite(&suite["speedup"]) {
                    wrong.push(format!("suite entry {suite} lacks suite or speedup"));
                }
            }
        }
        _ => wrong.push("suites is missing or empty".into()),
    }
    let apps = report["apps"].as_array().cloned().unwrap_or_default();
    if apps.len() != expected_apps {
        wrong.push(format!("{} apps, expected {expected_apps}", apps.len()));
    }
    let mut seen = BTreeMap::new();
    for app in &apps {
        let name = app["app"].as_str().unwrap_or("?").to_string();
        *seen.entry(name.clone()).or_insert(0) += 1;
        for field in ["baseline_p50_ms", "spec_p50_ms", "speedup", "oracle_p50_ms", "oracle_fraction", "cpu_ratio"] {
            if !finite(&app[field]) {
                wrong.push(format!("{name}: {field} is not a finite number: {}", app[field]));
            }
        }
        if app["functions"].as_u64().is_none_or(|n| n == 0) {
            wrong.push(format!("{name}: functions is missing"));
        }
        if !app["suite"].is_string() {
            wrong.push(format!("{name}: suite is missing"));
        }
        for field in ["memo_hit_rate", "branch_hit_rate"] {
            if !(app[field].is_null() || finite(&app[field])) {
                wrong.push(format!("{name}: {field} is neither a rate nor null"));
            }
        }
        if !app["squashes"].is_object() {
            wrong.push(format!("{name}: squashes is not an object"));
        }
    }
    wrong.extend(seen.into_iter().filter(|(_, n)| *n > 1).map(|(a, _)| format!("{a} appears twice")));
    wrong
}
