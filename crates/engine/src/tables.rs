//! The platform's [`Oracle`]: a branch predictor and memo tables, bounded and evicting least-recently-used rows.
//!
//! - **Branch table**: `(choice, path-history hash)` → counts per target. The prediction is the most-taken target
//!   and its share of the counts. Counts are halved when they reach [`COUNT_MAX`], so old behaviour fades.
//! - **Memo table**: `(function, code version, canonical JSON of the input)` → output. A redeploy changes the
//!   version, so rows never outlive the code that produced them.
//!
//! - **Callee table**: `(function, code version, canonical JSON of the input)` → the calls it made (callee and
//!   arguments), in order: the implicit-call part of the sequence table, learned at run time.
//! - **Dependence table**: `(consumer, key)` → per producer, how many times in a row that producer's write squashed
//!   the consumer for reading the key too early. A commit of the consumer that read the key from committed state
//!   (no older function wrote it) ends the streaks.
//!
//! One `Tables` serves one namespace (tenant): rows are never shared between tenants. Both tables learn only what
//! the engine trains them with, which is non-speculative outcomes.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;
use serde_json::Value;

use crate::Oracle;

/// Per-target counts are halved once one reaches this, so the predictor follows a change of behaviour.
const COUNT_MAX: u32 = 64;

/// Table sizes; each has a documented default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sizes {
    /// Branch predictor entries (a choice after one path history).
    pub branch_entries: usize,
    /// Memo rows, all functions of the namespace together.
    pub memo_entries: usize,
}

impl Default for Sizes {
    fn default() -> Self {
        Sizes { branch_entries: 4096, memo_entries: 4096 }
    }
}

/// (choice, path-history hash) → how often each target was taken.
type BranchTable = LruCache<(String, u64), Vec<(usize, u32)>>;
/// (function, code version, canonical input) → output.
type MemoTable = LruCache<(String, String, String), Value>;

/// (consumer, key) → (producer, consecutive squashes).
type DependenceTable = LruCache<(String, String), Vec<(String, u32)>>;
/// (function, code version, canonical input) → the calls it made: (callee, arguments).
type CalleeTable = LruCache<(String, String, String), Vec<(String, Value)>>;

pub struct Tables {
    branches: Mutex<BranchTable>,
    memo: Mutex<MemoTable>,
    callees: Mutex<CalleeTable>,
    /// Functions that ever made a call: only they are looked up in the callee table (a lookup canonicalizes the
    /// input, which every launch would otherwise pay for).
    callers: Mutex<std::collections::HashSet<String>>,
    dependences: Mutex<DependenceTable>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Tables {
    pub fn new(sizes: Sizes) -> Self {
        let cap = |n: usize| NonZeroUsize::new(n.max(1)).expect("at least one entry");
        Tables {
            branches: Mutex::new(LruCache::new(cap(sizes.branch_entries))),
            memo: Mutex::new(LruCache::new(cap(sizes.memo_entries))),
            callees: Mutex::new(LruCache::new(cap(sizes.memo_entries))),
            callers: Mutex::new(Default::default()),
            dependences: Mutex::new(LruCache::new(cap(sizes.branch_entries))),
        }
    }

    pub fn memo_len(&self) -> usize {
        lock(&self.memo).len()
    }
}

impl Oracle for Tables {
    fn branch(&self, choice: &str, history: u64, _targets: &[usize]) -> Option<(usize, f64)> {
        let mut branches = lock(&self.branches);
        let counts = branches.get(&(choice.to_string(), history))?;
        let total: u32 = counts.iter().map(|(_, n)| n).sum();
        let (target, n) = counts.iter().max_by_key(|(_, n)| *n)?;
        Some((*target, *n as f64 / total.max(1) as f64))
    }

    fn train_branch(&self, choice: &str, history: u64, target: usize) {
        let mut branches = lock(&self.branches);
        let counts = branches.get_or_insert_mut((choice.to_string(), history), Vec::new);
        match counts.iter_mut().find(|(t, _)| *t == target) {
            Some((_, n)) => *n += 1,
            None => counts.push((target, 1)),
        }
        if counts.iter().any(|(_, n)| *n >= COUNT_MAX) {
            counts.iter_mut().for_each(|(_, n)| *n = (*n).div_ceil(2));
        }
    }

    fn memo(&self, function: &str, version: &str, input: &Value) -> Option<Value> {
        let key = (function.to_string(), version.to_string(), model::json::canonical(input));
        lock(&self.memo).get(&key).cloned()
    }

    fn train_memo(&self, function: &str, version: &str, input: &Value, output: &Value) {
        let key = (function.to_string(), version.to_string(), model::json::canonical(input));
        lock(&self.memo).put(key, output.clone());
    }

    fn callees(&self, function: &str, version: &str, input: &Value) -> Option<Vec<(String, Value)>> {
        if !lock(&self.callers).contains(function) {
            return None;
        }
        let key = (function.to_string(), version.to_string(), model::json::canonical(input));
        lock(&self.callees).get(&key).cloned()
    }

    fn train_callees(&self, function: &str, version: &str, input: &Value, callees: &[(String, Value)]) {
        let key = (function.to_string(), version.to_string(), model::json::canonical(input));
        if callees.is_empty() {
            if lock(&self.callers).contains(function) {
                lock(&self.callees).pop(&key);
            }
        } else {
            lock(&self.callers).insert(function.to_string());
            lock(&self.callees).put(key, callees.to_vec());
        }
    }

    fn dependence(&self, producer: &str, consumer: &str, key: &str) -> u32 {
        let mut table = lock(&self.dependences);
        let entry = table.get(&(consumer.to_string(), key.to_string()));
        entry.and_then(|e| e.iter().find(|(p, _)| p == producer)).map_or(0, |(_, n)| *n)
    }

    fn train_squash(&self, producer: &str, consumer: &str, key: &str) {
        let mut table = lock(&self.dependences);
        let entry = table.get_or_insert_mut((consumer.to_string(), key.to_string()), Vec::new);
        match entry.iter_mut().find(|(p, _)| p == producer) {
            Some((_, n)) => *n += 1,
            None => entry.push((producer.to_string(), 1)),
        }
    }

    fn train_clean_read(&self, consumer: &str, key: &str) {
        let mut table = lock(&self.dependences);
        if let Some(entry) = table.get_mut(&(consumer.to_string(), key.to_string())) {
            entry.iter_mut().for_each(|(_, n)| *n = 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn branch_prediction_follows_counts_and_fades() {
        let t = Tables::new(Sizes::default());
        assert_eq!(t.branch("c", 1, &[3, 4]), None);
        for _ in 0..9 {
            t.train_branch("c", 1, 3);
        }
        t.train_branch("c", 1, 4);
        assert_eq!(t.branch("c", 1, &[3, 4]), Some((3, 0.9)));
        assert_eq!(t.branch("c", 2, &[3, 4]), None, "another path history is another entry");
        for _ in 0..200 {
            t.train_branch("c", 1, 4);
        }
        assert_eq!(t.branch("c", 1, &[3, 4]).unwrap().0, 4, "old behaviour fades");
    }

    #[test]
    fn dependence_streaks_count_squashes_and_end_on_a_clean_read() {
        let t = Tables::new(Sizes::default());
        for _ in 0..3 {
            t.train_squash("producer", "consumer", "k");
        }
        t.train_squash("other", "consumer", "k");
        assert_eq!(t.dependence("producer", "consumer", "k"), 3);
        assert_eq!(t.dependence("other", "consumer", "k"), 1);
        assert_eq!(t.dependence("producer", "consumer", "j"), 0);
        t.train_clean_read("consumer", "k");
        assert_eq!(t.dependence("producer", "consumer", "k"), 0);
    }

    #[test]
    fn memo_is_keyed_by_version_and_canonical_input_and_bounded() {
        let t = Tables::new(Sizes { branch_entries: 1, memo_entries: 2 });
        t.train_memo("f", "v1", &json!({"a": 1, "b": 2}), &json!("out"));
        assert_eq!(t.memo("f", "v1", &serde_json::from_str(r#"{"b":2,"a":1}"#).unwrap()), Some(json!("out")));
        assert_eq!(t.memo("f", "v2", &json!({"a": 1, "b": 2})), None);
        t.train_memo("f", "v1", &json!(2), &json!(2));
        t.train_memo("f", "v1", &json!(3), &json!(3));
        assert_eq!(t.memo_len(), 2);
        assert_eq!(t.memo("f", "v1", &json!({"a": 1, "b": 2})), None, "the least recently used row was evicted");
    }
}
