//! Counters across invocations: what an operator graphs. Updated once per invocation from the engine's
//! [`engine::Stats`]; read as a [`Snapshot`].

use std::collections::BTreeMap;
use std::sync::Mutex;

use engine::{Cause, Stats, Status};
use serde::Serialize;

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Snapshot>,
}

/// Totals since the platform started.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Snapshot {
    /// Invocations by final status.
    pub invocations: BTreeMap<String, u64>,
    pub speculative_launches: u64,
    /// Pure functions not run because their output was memoized.
    pub skipped: u64,
    pub memo_hits: u64,
    pub memo_misses: u64,
    pub branch_predictions: u64,
    pub branch_hits: u64,
    pub squashes: BTreeMap<Cause, u64>,
    /// Wall-clock time squashed runs had been running when they were killed, in microseconds.
    pub squashed_us: u64,
    /// CPU time squashed runs used, in microseconds, where the runtime measures it (Python functions).
    pub squashed_cpu_us: u64,
    /// Invocations that spent their speculation budget and went on non-speculatively.
    pub budget_exhausted: u64,
    /// External effects performed; effects that first waited for their function to become non-speculative.
    pub effects: u64,
    pub effects_suspended: u64,
    /// Callees launched early on a prediction, and how many of them a real call used.
    pub callees_predicted: u64,
    pub callees_used: u64,
}

impl Snapshot {
    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        fn diff<K: Ord + Clone>(now: &BTreeMap<K, u64>, then: &BTreeMap<K, u64>) -> BTreeMap<K, u64> {
            now.iter()
                .map(|(k, v)| (k.clone(), v - then.get(k).copied().unwrap_or(0)))
                .filter(|(_, v)| *v > 0)
                .collect()
        }
        Snapshot {
            invocations: diff(&self.invocations, &earlier.invocations),
            speculative_launches: self.speculative_launches - earlier.speculative_launches,
            skipped: self.skipped - earlier.skipped,
            memo_hits: self.memo_hits - earlier.memo_hits,
            memo_misses: self.memo_misses - earlier.memo_misses,
            branch_predictions: self.branch_predictions - earlier.branch_predictions,
            branch_hits: self.branch_hits - earlier.branch_hits,
            squashes: diff(&self.squashes, &earlier.squashes),
            squashed_us: self.squashed_us - earlier.squashed_us,
            squashed_cpu_us: self.squashed_cpu_us - earlier.squashed_cpu_us,
            budget_exhausted: self.budget_exhausted - earlier.budget_exhausted,
            effects: self.effects - earlier.effects,
            effects_suspended: self.effects_suspended - earlier.effects_suspended,
            callees_predicted: self.callees_predicted - earlier.callees_predicted,
            callees_used: self.callees_used - earlier.callees_used,
        }
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Snapshot) {
        for (k, v) in &other.invocations {
            *self.invocations.entry(k.clone()).or_insert(0) += v;
        }
        for (k, v) in &other.squashes {
            *self.squashes.entry(*k).or_insert(0) += v;
        }
        self.speculative_launches += other.speculative_launches;
        self.skipped += other.skipped;
        self.memo_hits += other.memo_hits;
        self.memo_misses += other.memo_misses;
        self.branch_predictions += other.branch_predictions;
        self.branch_hits += other.branch_hits;
        self.squashed_us += other.squashed_us;
        self.squashed_cpu_us += other.squashed_cpu_us;
        self.budget_exhausted += other.budget_exhausted;
        self.effects += other.effects;
        self.effects_suspended += other.effects_suspended;
        self.callees_predicted += other.callees_predicted;
        self.callees_used += other.callees_used;
    }

    /// Memo hits over memo lookups; `None` before any lookup.
    pub fn memo_hit_rate(&self) -> Option<f64> {
        let n = self.memo_hits + self.memo_misses;
        (n > 0).then(|| self.memo_hits as f64 / n as f64)
    }

    /// Confirmed branch predictions over predictions; `None` before any prediction.
    pub fn branch_hit_rate(&self) -> Option<f64> {
        (self.branch_predictions > 0).then(|| self.branch_hits as f64 / self.branch_predictions as f64)
    }
}

impl Metrics {
    pub(crate) fn record(&self, status: Status, stats: &Stats, squashed_us: u64, squashed_cpu_us: u64) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *m.invocations.entry(status.as_str().to_string()).or_insert(0) += 1;
        m.speculative_launches += stats.speculative_launches as u64;
        m.skipped += stats.skipped as u64;
        m.memo_hits += stats.memo_hits as u64;
        m.memo_misses += stats.memo_misses as u64;
        m.branch_predictions += stats.branch_predictions as u64;
        m.branch_hits += stats.branch_hits as u64;
        for (cause, n) in &stats.squashes {
            *m.squashes.entry(*cause).or_insert(0) += *n as u64;
        }
        m.squashed_us += squashed_us;
        m.squashed_cpu_us += squashed_cpu_us;
        m.budget_exhausted += stats.budget_exhausted as u64;
        m.effects += stats.effects as u64;
        m.effects_suspended += stats.effects_suspended as u64;
        m.callees_predicted += stats.callees_predicted as u64;
        m.callees_used += stats.callees_used as u64;
    }

    pub fn snapshot(&self) -> Snapshot {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
