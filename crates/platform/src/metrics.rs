//! Counters across invocations: what an operator graphs. Updated once per invocation from the engine's
//! [`engine::Stats`]; read as a [`Snapshot`].
//!
//! **Each counter is declared once**, in the [`counters!`] table at the bottom of this file: its field, its
//! exported name and its help text. The [`Snapshot`] struct, [`Snapshot::since`], [`Snapshot::add`],
//! [`Snapshot::counters`] (what `/metrics` exports) and the update from [`engine::Stats`] are all generated from
//! it. The update destructures `Stats` with no `..`, so an engine counter missing from the table does not compile.
//! Two counters are families with a label, declared in the struct by hand: invocations by status and squashes by
//! cause.

use std::collections::BTreeMap;
use std::sync::Mutex;

use engine::{Cause, Stats, Status};
use runtime::HandlerCounts;
use serde::Serialize;

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Snapshot>,
}

/// One plain counter of a [`Snapshot`], as exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    /// The [`Snapshot`] field.
    pub field: &'static str,
    /// The exported name, without the `specfaas_` prefix and the `_total` suffix.
    pub name: &'static str,
    pub help: &'static str,
}

/// Declares the snapshot's plain counters: `engine` ones are summed from the [`engine::Stats`] of each invocation
/// (the field of the same name), `platform` ones are measured by the driver, and `runtime` ones are the runtimes'
/// [`HandlerCounts`] (`field` of the snapshot `from` the field of the counts), summed over the runtimes when read.
macro_rules! counters {
    (
        engine { $($e:ident => $e_name:literal, $e_help:literal;)* }
        platform { $($p:ident => $p_name:literal, $p_help:literal;)* }
        runtime { $($r:ident from $rc:ident => $r_name:literal, $r_help:literal;)* }
    ) => {
        /// Totals since the platform started.
        #[derive(Debug, Clone, Default, PartialEq, Serialize)]
        pub struct Snapshot {
            /// Invocations by final status.
            pub invocations: BTreeMap<String, u64>,
            /// Squashed runs by cause.
            pub squashes: BTreeMap<Cause, u64>,
            $(#[doc = $e_help] pub $e: u64,)*
            $(#[doc = $p_help] pub $p: u64,)*
            $(#[doc = $r_help] pub $r: u64,)*
        }

        impl Snapshot {
            /// Every plain counter, in declaration order.
            pub const COUNTERS: &[Counter] = &[
                $(Counter { field: stringify!($e), name: $e_name, help: $e_help },)*
                $(Counter { field: stringify!($p), name: $p_name, help: $p_help },)*
                $(Counter { field: stringify!($r), name: $r_name, help: $r_help },)*
            ];

            /// Every plain counter with its value, in declaration order.
            pub fn counters(&self) -> Vec<(Counter, u64)> {
                Snapshot::COUNTERS.iter().copied().zip([$(self.$e,)* $(self.$p,)* $(self.$r,)*]).collect()
            }

            /// What happened between `earlier` and this snapshot.
            pub fn since(&self, earlier: &Snapshot) -> Snapshot {
                Snapshot {
                    invocations: diff(&self.invocations, &earlier.invocations),
                    squashes: diff(&self.squashes, &earlier.squashes),
                    $($e: self.$e - earlier.$e,)*
                    $($p: self.$p - earlier.$p,)*
                    $($r: self.$r - earlier.$r,)*
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
                $(self.$e += other.$e;)*
                $(self.$p += other.$p;)*
                $(self.$r += other.$r;)*
            }

            /// Adds one invocation's engine counters. No `..`: every field of `Stats` must be in the table.
            fn add_stats(&mut self, stats: &Stats) {
                let Stats { squashes, $($e,)* } = stats;
                for (cause, n) in squashes {
                    *self.squashes.entry(*cause).or_insert(0) += u64::from(*n);
                }
                $(self.$e += u64::from(*$e);)*
            }

            /// Adds one runtime's handler counts. No `..`: every field of `HandlerCounts` must be in the table.
            pub(crate) fn add_handlers(&mut self, counts: &HandlerCounts) {
                let HandlerCounts { $($rc,)* } = counts;
                $(self.$r += *$rc;)*
            }
        }
    };
}

fn diff<K: Ord + Clone>(now: &BTreeMap<K, u64>, then: &BTreeMap<K, u64>) -> BTreeMap<K, u64> {
    now.iter().map(|(k, v)| (k.clone(), v - then.get(k).copied().unwrap_or(0))).filter(|(_, v)| *v > 0).collect()
}

impl Snapshot {
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
        m.add_stats(stats);
        m.squashed_us += squashed_us;
        m.squashed_cpu_us += squashed_cpu_us;
    }

    pub fn snapshot(&self) -> Snapshot {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

counters! {
    engine {
        speculative_launches => "speculative_launches", "Functions launched speculatively.";
        skipped => "pure_skipped", "Pure functions not run because their output was memoized.";
        memo_hits => "memo_hits", "Memo table hits.";
        memo_misses => "memo_misses", "Memo table misses.";
        field_guesses => "field_guesses", "Memo misses on which part of the output was guessed field by field.";
        branch_predictions => "branch_predictions", "Branch targets followed on a prediction.";
        branch_hits => "branch_hits", "Branch predictions the real data confirmed.";
        budget_exhausted => "budget_exhausted",
            "Invocations that spent their speculation budget and went on non-speculatively.";
        effects => "effects", "External effects performed.";
        effects_replayed => "effects_replayed",
            "Effects answered from the journal of an earlier run of the same slot, not performed again.";
        effects_suspended => "effects_suspended", "Effect calls that waited for their run to become non-speculative.";
        callees_predicted => "callees_predicted", "Callees launched early on a prediction.";
        callees_used => "callees_used", "Predicted callees a real call used.";
        callees_predicted_path => "callees_predicted_path",
            "Callees launched early on a prediction by path (no row for the caller's exact input).";
        callees_used_path => "callees_used_path", "Callees predicted by path that a real call used.";
    }
    platform {
        squashed_us => "squashed_wall_microseconds", "Wall-clock time squashed runs had been running, in microseconds.";
        squashed_cpu_us => "squashed_cpu_microseconds",
            "CPU time squashed runs used, in microseconds, where the runtime measures it (Python functions).";
    }
    runtime {
        handlers_started_for_waiter from started_for_waiter => "handlers_started_for_waiter",
            "Handler processes started for an activation that found none idle.";
        handlers_started_spare from started_spare => "handlers_started_spare",
            "Handler processes started as spares, ahead of need.";
        handler_waits from waits => "handler_waits", "Activations that found no idle handler and waited for one.";
        handler_wait_us from wait_us => "handler_wait_microseconds",
            "Time activations waited for a handler, in microseconds.";
        handlers_retired_idle_max from retired_idle_max => "handlers_retired_idle_max",
            "Handlers retired after a clean activation because the pool had as many idle as it keeps.";
        handlers_retired_left_processes from retired_left_processes => "handlers_retired_left_processes",
            "Handlers retired because their activation left processes behind.";
        handlers_retired_killed from retired_killed => "handlers_retired_killed",
            "Handlers retired because their activation was killed (squashed).";
        handlers_retired_failed from retired_failed => "handlers_retired_failed",
            "Handlers retired because their activation timed out or broke the protocol, or they failed to load.";
        handlers_exited from exited => "handlers_exited",
            "Handlers that exited by themselves: crashed, or killed by the kernel (out of memory).";
        handlers_released from released => "handlers_released",
            "Handlers let go with their function: redeployed, undeployed, or shut down.";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_counter_is_recorded_and_exported() {
        // Each counter of one invocation's stats at a distinct value: each must land in its own field.
        let mut stats = Stats::default();
        let Stats {
            speculative_launches,
            skipped,
            memo_hits,
            memo_misses,
            field_guesses,
            branch_predictions,
            branch_hits,
            squashes,
            budget_exhausted,
            effects,
            effects_replayed,
            effects_suspended,
            callees_predicted,
            callees_used,
            callees_predicted_path,
            callees_used_path,
        } = &mut stats;
        for (i, n) in [
            speculative_launches,
            skipped,
            memo_hits,
            memo_misses,
            field_guesses,
            branch_predictions,
            branch_hits,
            effects,
            effects_replayed,
            effects_suspended,
            callees_predicted,
            callees_used,
            callees_predicted_path,
            callees_used_path,
        ]
        .into_iter()
        .enumerate()
        {
            *n = 2 + i as u32;
        }
        *budget_exhausted = true;
        squashes.insert(Cause::ControlMispredict, 3);
        let metrics = Metrics::default();
        metrics.record(Status::Success, &stats, 7, 5);
        let mut snapshot = metrics.snapshot();
        let handlers = HandlerCounts {
            started_for_waiter: 20,
            started_spare: 21,
            waits: 22,
            wait_us: 23,
            retired_idle_max: 24,
            retired_left_processes: 25,
            retired_killed: 26,
            retired_failed: 27,
            exited: 28,
            released: 29,
        };
        snapshot.add_handlers(&handlers);
        let values: Vec<u64> = snapshot.counters().into_iter().map(|(_, v)| v).collect();
        let from_runtime: Vec<u64> = (20..30).collect();
        assert_eq!(
            values,
            [[2, 3, 4, 5, 6, 7, 8, 1, 9, 10, 11, 12, 13, 14, 15, 7, 5].as_slice(), &from_runtime].concat()
        );
        assert_eq!(snapshot.squashes, BTreeMap::from([(Cause::ControlMispredict, 3)]));
        assert_eq!(snapshot.since(&Snapshot::default()), snapshot);
        let mut twice = snapshot.clone();
        twice.add(&snapshot);
        assert_eq!(twice.since(&snapshot), snapshot);
        // Fields and exported names are unique, and the serialized snapshot has every field.
        let json = serde_json::to_value(&snapshot).unwrap();
        for (i, c) in Snapshot::COUNTERS.iter().enumerate() {
            assert!(json.get(c.field).is_some(), "{} is not serialized", c.field);
            assert!(Snapshot::COUNTERS[..i].iter().all(|o| o.field != c.field && o.name != c.name), "{c:?}");
        }
    }
}
