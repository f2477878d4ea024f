//! Samples the machine's CPU load from `/proc/stat` every [`PERIOD`], for the engine's speculation depth (the
//! SpecFaaS paper lowers it as load rises). Where `/proc/stat` cannot be read, the load stays 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

/// How often the load is sampled.
const PERIOD: Duration = Duration::from_millis(250);

/// (busy, total) jiffies of all CPUs.
fn read_stat() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Starts the sampler; the returned value holds the latest CPU load in percent.
pub(crate) fn sampler() -> Arc<AtomicU8> {
    let load = Arc::new(AtomicU8::new(0));
    let weak = Arc::downgrade(&load);
    tokio::spawn(async move {
        let mut last = read_stat();
        loop {
            tokio::time::sleep(PERIOD).await;
            let Some(load) = weak.upgrade() else { return };
            let now = read_stat();
            if let (Some((b0, t0)), Some((b1, t1))) = (last, now)
                && t1 > t0
            {
                load.store(((b1 - b0) * 100 / (t1 - t0)).min(100) as u8, Ordering::Relaxed);
            }
            last = now;
        }
    });
    load
}
