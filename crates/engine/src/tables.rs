//! The platform's predictors (see [`crate::oracle`]): four bounded tables, each evicting least-recently-used rows
//! and each sized by its own setting in [`Sizes`]; [`learning`] bundles them as an [`Oracle`].
//!
//! - **Branch table**: `(choice, path-history hash)` → counts per target. The prediction is the most-taken target
//!   and its share of the counts. Counts are halved when they reach [`COUNT_MAX`], so old behaviour fades.
//! - **Memo table**: `(function, code version, canonical JSON of the input)` → output. A redeploy changes the
//!   version, so rows never outlive the code that produced them. Beside the rows, per function and version, a
//!   [`Fields`] model guesses outputs for inputs with no row, field by field ([`crate::fields`]).
//!
//! - **Callee table**: `(function, code version, canonical JSON of the input)` → the calls it made (callee and
//!   arguments), in order: the implicit-call part of the sequence table, learned at run time. Beside it, **path
//!   rows**: `(function, code version, path of callees so far)` → the callees that came next, each with an argument
//!   template and counts, and how often the calls ended there (see [`crate::paths`]).
//! - **Dependence table**: `(consumer, key)` → per producer, how many times in a row that producer's write squashed
//!   the consumer for reading the key too early. A commit of the consumer that read the key from committed state
//!   (no older function wrote it) ends the streaks.
//!
//! One set of tables serves one namespace (tenant): rows are never shared between tenants. The tables learn only what
//! the engine trains them with, which is non-speculative outcomes.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use serde_json::Value;

use crate::Oracle;
use crate::fields::Fields;
use crate::oracle::{BranchPredictor, Called, CalleePredictor, DependencePredictor, Guess, Memo};
use crate::paths::{Template, path_hash};
use crate::walk::as_failure;

/// Per-target counts are halved once one reaches this, so the predictor follows a change of behaviour.
const COUNT_MAX: u32 = 64;
/// The most rows any one table may be configured with (each row holds JSON values, so this bounds memory).
pub const ENTRIES_MAX: usize = 1 << 20;

/// Table sizes, one per table; each has a documented default, and none may exceed [`ENTRIES_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sizes {
    /// Branch predictor entries (a choice after one path history). Default 4096.
    pub branch_entries: usize,
    /// Memo rows, all functions of the namespace together. Default 4096.
    pub memo_entries: usize,
    /// Callee rows (a function on one input). Default 4096.
    pub callee_entries: usize,
    /// Dependence rows (a consumer reading one key). Default 4096.
    pub dependence_entries: usize,
    /// Path rows (a function after one path of calls). Default 4096.
    pub path_entries: usize,
}

impl Default for Sizes {
    fn default() -> Self {
        Sizes {
            branch_entries: 4096,
            memo_entries: 4096,
            callee_entries: 4096,
            dependence_entries: 4096,
            path_entries: 4096,
        }
    }
}

impl Sizes {
    /// Checks every size against [`ENTRIES_MAX`]; the error names the setting.
    pub fn check(&self) -> Result<(), String> {
        for (name, n) in [
            ("branch_entries", self.branch_entries),
            ("memo_entries", self.memo_entries),
            ("callee_entries", self.callee_entries),
            ("dependence_entries", self.dependence_entries),
            ("path_entries", self.path_entries),
        ] {
            if n > ENTRIES_MAX {
                return Err(format!("tables.{name} is {n}, over the maximum of {ENTRIES_MAX}"));
            }
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn cache<K: std::hash::Hash + Eq, V>(n: usize) -> Mutex<LruCache<K, V>> {
    Mutex::new(LruCache::new(NonZeroUsize::new(n.clamp(1, ENTRIES_MAX)).expect("at least one entry")))
}

/// (function, code version, canonical input): the key of memo and callee rows.
type FunctionKey = (String, String, String);

fn function_key(function: &str, version: &str, input: &Value) -> FunctionKey {
    (function.to_string(), version.to_string(), model::json::canonical(input))
}

/// Learning tables for every predictor, sized by `sizes`.
pub fn learning(sizes: Sizes) -> Oracle {
    Oracle {
        branches: Arc::new(BranchTable::new(sizes.branch_entries)),
        memo: Arc::new(MemoTable::new(sizes.memo_entries)),
        callees: Arc::new(CalleeTable::with_paths(sizes.callee_entries, sizes.path_entries)),
        dependences: Arc::new(DependenceTable::new(sizes.dependence_entries)),
    }
}

/// (choice, path-history hash) → how often each target was taken.
pub struct BranchTable(Mutex<LruCache<(String, u64), Counts>>);

/// How often each target was taken.
type Counts = Vec<(usize, u32)>;

impl BranchTable {
    pub fn new(entries: usize) -> Self {
        BranchTable(cache(entries))
    }
}

impl BranchPredictor for BranchTable {
    fn predict(&self, choice: &str, history: u64, _targets: &[usize]) -> Option<(usize, f64)> {
        let mut branches = lock(&self.0);
        let counts = branches.get(&(choice.to_string(), history))?;
        let total: u32 = counts.iter().map(|(_, n)| n).sum();
        let (target, n) = counts.iter().max_by_key(|(_, n)| *n)?;
        Some((*target, *n as f64 / total.max(1) as f64))
    }

    fn train(&self, choice: &str, history: u64, target: usize) {
        let mut branches = lock(&self.0);
        let counts = branches.get_or_insert_mut((choice.to_string(), history), Vec::new);
        match counts.iter_mut().find(|(t, _)| *t == target) {
            Some((_, n)) => *n += 1,
            None => counts.push((target, 1)),
        }
        if counts.iter().any(|(_, n)| *n >= COUNT_MAX) {
            counts.iter_mut().for_each(|(_, n)| *n = (*n).div_ceil(2));
        }
    }
}

/// (function, code version, canonical input) → output; and per (function, code version), the [`Fields`] model
/// that guesses outputs for inputs with no row. Both hold up to `memo_entries` rows.
pub struct MemoTable {
    rows: Mutex<LruCache<FunctionKey, Value>>,
    fields: Mutex<LruCache<(String, String), Fields>>,
}

impl MemoTable {
    pub fn new(entries: usize) -> Self {
        MemoTable { rows: cache(entries), fields: cache(entries) }
    }

    pub fn len(&self) -> usize {
        lock(&self.rows).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Memo for MemoTable {
    fn lookup(&self, function: &str, version: &str, input: &Value) -> Option<Value> {
        lock(&self.rows).get(&function_key(function, version, input)).cloned()
    }

    fn guess(&self, function: &str, version: &str, input: &Value) -> Option<Guess> {
        lock(&self.fields).get(&(function.to_string(), version.to_string()))?.guess(input)
    }

    fn train(&self, function: &str, version: &str, input: &Value, output: &Value) {
        let seen = lock(&self.rows).put(function_key(function, version, input), output.clone()).is_some();
        // The field model learns from inputs seen for the first time only: those are the ones it is asked about.
        // A returned error is the memo's to predict, never a guess's.
        if !seen && as_failure(output).is_none() {
            lock(&self.fields)
                .get_or_insert_mut((function.to_string(), version.to_string()), Fields::default)
                .train(input, output);
        }
    }
}

/// (function, code version, canonical input) → the calls it made: (callee, arguments); and path rows.
pub struct CalleeTable {
    rows: Mutex<LruCache<FunctionKey, Vec<(String, Value)>>>,
    /// Functions that ever made a call: only they are looked up (a lookup canonicalizes the input, which every
    /// launch would otherwise pay for).
    callers: Mutex<HashSet<String>>,
    paths: Mutex<LruCache<PathKey, PathRow>>,
}

/// (function, code version, hash of the callees called so far).
type PathKey = (String, String, u64);

/// Alternatives kept per path row.
const ALTERNATIVES_MAX: usize = 4;
/// Calls of one run the path rows learn from.
const PATH_CALLS_MAX: usize = 64;

/// What came after one path: each callee with its template, and the end of the calls.
#[derive(Default)]
struct PathRow {
    /// Times the calls ended here.
    ended: u32,
    next: Vec<Alternative>,
}

struct Alternative {
    callee: String,
    template: Template,
    /// Times it came next.
    seen: u32,
    /// Calls on other inputs than the one before that matched the template as it stood.
    confirmed: u32,
    /// A hash of the canonical input it last learned from.
    last_input: u64,
}

impl PathRow {
    fn fade(&mut self) {
        if self.ended >= COUNT_MAX || self.next.iter().any(|a| a.seen >= COUNT_MAX) {
            self.ended = self.ended.div_ceil(2);
            self.next.iter_mut().for_each(|a| a.seen = a.seen.div_ceil(2));
        }
    }
}

fn input_hash(input: &Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    model::json::canonical(input).hash(&mut h);
    h.finish()
}

impl CalleeTable {
    /// Exact rows and path rows of `entries` each.
    pub fn new(entries: usize) -> Self {
        Self::with_paths(entries, entries)
    }

    pub fn with_paths(entries: usize, path_entries: usize) -> Self {
        CalleeTable { rows: cache(entries), callers: Mutex::new(HashSet::new()), paths: cache(path_entries) }
    }

    fn train_paths(&self, function: &str, version: &str, input: &Value, calls: &[Called]) {
        let calls = &calls[..calls.len().min(PATH_CALLS_MAX)];
        let hash = input_hash(input);
        let mut paths = lock(&self.paths);
        for k in 0..=calls.len() {
            let earlier = &calls[..k];
            let row = paths
                .get_or_insert_mut((function.to_string(), version.to_string(), path_hash(earlier)), PathRow::default);
            let Some(call) = calls.get(k) else {
                row.ended += 1;
                row.fade();
                break;
            };
            match row.next.iter_mut().find(|a| a.callee == call.callee) {
                Some(a) => {
                    a.seen += 1;
                    if a.template.refine(&call.args, input, earlier) {
                        if a.last_input != hash {
                            a.confirmed += 1;
                        }
                    } else {
                        a.template = Template::learn(&call.args, input, earlier);
                        a.confirmed = 0;
                    }
                    a.last_input = hash;
                }
                None => {
                    if row.next.len() >= ALTERNATIVES_MAX
                        && let Some(least) = row.next.iter().enumerate().min_by_key(|(_, a)| a.seen).map(|(i, _)| i)
                    {
                        row.next.swap_remove(least);
                    }
                    row.next.push(Alternative {
                        callee: call.callee.clone(),
                        template: Template::learn(&call.args, input, earlier),
                        seen: 1,
                        confirmed: 0,
                        last_input: hash,
                    });
                }
            }
            row.fade();
        }
    }
}

impl CalleePredictor for CalleeTable {
    fn predict(&self, function: &str, version: &str, input: &Value) -> Option<Vec<(String, Value)>> {
        if !lock(&self.callers).contains(function) {
            return None;
        }
        lock(&self.rows).get(&function_key(function, version, input)).cloned()
    }

    fn next(&self, function: &str, version: &str, input: &Value, earlier: &[Called]) -> Option<(String, Value)> {
        if !lock(&self.callers).contains(function) {
            return None;
        }
        let mut paths = lock(&self.paths);
        let row = paths.get(&(function.to_string(), version.to_string(), path_hash(earlier)))?;
        // The most frequent confirmed callee, unless the calls more often ended here.
        let best = row.next.iter().filter(|a| a.confirmed > 0).max_by_key(|a| a.seen)?;
        if row.ended >= best.seen {
            return None;
        }
        Some((best.callee.clone(), best.template.resolve(input, earlier)?))
    }

    fn train(&self, function: &str, version: &str, input: &Value, calls: &[Called]) {
        if calls.is_empty() {
            if lock(&self.callers).contains(function) {
                lock(&self.rows).pop(&function_key(function, version, input));
                self.train_paths(function, version, input, calls);
            }
        } else {
            lock(&self.callers).insert(function.to_string());
            let row = calls.iter().map(|c| (c.callee.clone(), c.args.clone())).collect();
            lock(&self.rows).put(function_key(function, version, input), row);
            self.train_paths(function, version, input, calls);
        }
    }
}

/// (consumer, key) → (producer, consecutive squashes).
pub struct DependenceTable(Mutex<LruCache<(String, String), Streaks>>);

/// Per producer, consecutive squashes.
type Streaks = Vec<(String, u32)>;

impl DependenceTable {
    pub fn new(entries: usize) -> Self {
        DependenceTable(cache(entries))
    }
}

impl DependencePredictor for DependenceTable {
    fn streak(&self, producer: &str, consumer: &str, key: &str) -> u32 {
        let mut table = lock(&self.0);
        let entry = table.get(&(consumer.to_string(), key.to_string()));
        entry.and_then(|e| e.iter().find(|(p, _)| p == producer)).map_or(0, |(_, n)| *n)
    }

    fn train_squash(&self, producer: &str, consumer: &str, key: &str) {
        let mut table = lock(&self.0);
        let entry = table.get_or_insert_mut((consumer.to_string(), key.to_string()), Vec::new);
        match entry.iter_mut().find(|(p, _)| p == producer) {
            Some((_, n)) => *n += 1,
            None => entry.push((producer.to_string(), 1)),
        }
    }

    fn train_clean_read(&self, consumer: &str, key: &str) {
        let mut table = lock(&self.0);
        if let Some(entry) = table.get_mut(&(consumer.to_string(), key.to_string())) {
            entry.iter_mut().for_each(|(_, n)| *n = 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn called(callee: &str, args: Value, result: Option<Value>) -> Called {
        Called { callee: callee.into(), args, result }
    }

    #[test]
    fn path_rows_predict_calls_for_a_new_input_once_confirmed() {
        let t = CalleeTable::new(64);
        let run = |user: &str, id: &str| {
            vec![
                called("lookup", json!({"user": user}), Some(json!({"id": id}))),
                called("orders", json!({"id": id, "limit": 3}), Some(json!([]))),
            ]
        };
        let calls = run("ann", "1");
        t.train("f", "v", &json!({"user": "ann"}), &calls);
        assert_eq!(t.next("f", "v", &json!({"user": "bob"}), &[]), None, "not confirmed yet");
        t.train("f", "v", &json!({"user": "ann"}), &calls);
        assert_eq!(t.next("f", "v", &json!({"user": "bob"}), &[]), None, "the same input confirms nothing");
        t.train("f", "v", &json!({"user": "cy"}), &run("cy", "3"));
        let first = t.next("f", "v", &json!({"user": "bob"}), &[]);
        assert_eq!(first, Some(("lookup".into(), json!({"user": "bob"}))));
        assert_eq!(t.predict("f", "v", &json!({"user": "bob"})), None, "no exact row for bob");
        // The second call needs the first one's result.
        let mut earlier = vec![called("lookup", json!({"user": "bob"}), None)];
        assert_eq!(t.next("f", "v", &json!({"user": "bob"}), &earlier), None);
        earlier[0].result = Some(json!({"id": "2"}));
        assert_eq!(
            t.next("f", "v", &json!({"user": "bob"}), &earlier),
            Some(("orders".into(), json!({"id": "2", "limit": 3})))
        );
        earlier.push(called("orders", json!({"id": "2", "limit": 3}), None));
        assert_eq!(t.next("f", "v", &json!({"user": "bob"}), &earlier), None, "the calls end there");
        assert_eq!(t.next("g", "v", &json!({"user": "bob"}), &[]), None, "another function");
        assert_eq!(t.next("f", "v2", &json!({"user": "bob"}), &[]), None, "another version");
    }

    #[test]
    fn a_path_row_that_stops_explaining_its_calls_stops_predicting() {
        let t = CalleeTable::new(64);
        for (i, x) in [1, 2].into_iter().enumerate() {
            t.train("f", "v", &json!({"x": x, "i": i}), &[called("g", json!({"y": x}), None)]);
        }
        assert_eq!(t.next("f", "v", &json!({"x": 9}), &[]), Some(("g".into(), json!({"y": 9}))));
        t.train("f", "v", &json!({"x": 5}), &[called("g", json!({"y": 6}), None)]);
        assert_eq!(t.next("f", "v", &json!({"x": 9}), &[]), None, "learned again: unconfirmed");
    }

    #[test]
    fn branch_prediction_follows_counts_and_fades() {
        let t = BranchTable::new(4096);
        assert_eq!(t.predict("c", 1, &[3, 4]), None);
        for _ in 0..9 {
            t.train("c", 1, 3);
        }
        t.train("c", 1, 4);
        assert_eq!(t.predict("c", 1, &[3, 4]), Some((3, 0.9)));
        assert_eq!(t.predict("c", 2, &[3, 4]), None, "another path history is another entry");
        for _ in 0..200 {
            t.train("c", 1, 4);
        }
        assert_eq!(t.predict("c", 1, &[3, 4]).unwrap().0, 4, "old behaviour fades");
    }

    #[test]
    fn dependence_streaks_count_squashes_and_end_on_a_clean_read() {
        let t = DependenceTable::new(4096);
        for _ in 0..3 {
            t.train_squash("producer", "consumer", "k");
        }
        t.train_squash("other", "consumer", "k");
        assert_eq!(t.streak("producer", "consumer", "k"), 3);
        assert_eq!(t.streak("other", "consumer", "k"), 1);
        assert_eq!(t.streak("producer", "consumer", "j"), 0);
        t.train_clean_read("consumer", "k");
        assert_eq!(t.streak("producer", "consumer", "k"), 0);
    }

    #[test]
    fn memo_is_keyed_by_version_and_canonical_input_and_bounded() {
        let t = MemoTable::new(2);
        t.train("f", "v1", &json!({"a": 1, "b": 2}), &json!("out"));
        assert_eq!(t.lookup("f", "v1", &serde_json::from_str(r#"{"b":2,"a":1}"#).unwrap()), Some(json!("out")));
        assert_eq!(t.lookup("f", "v2", &json!({"a": 1, "b": 2})), None);
        t.train("f", "v1", &json!(2), &json!(2));
        t.train("f", "v1", &json!(3), &json!(3));
        assert_eq!(t.len(), 2);
        assert_eq!(t.lookup("f", "v1", &json!({"a": 1, "b": 2})), None, "the least recently used row was evicted");
    }

    #[test]
    fn field_models_learn_from_inputs_seen_for_the_first_time_and_never_from_failures() {
        let t = MemoTable::new(64);
        // The same input many times is one sample: no guess yet.
        for _ in 0..8 {
            t.train("f", "v", &json!({"a": 1}), &json!({"ok": true}));
        }
        assert_eq!(t.guess("f", "v", &json!({"a": 9})), None);
        // Returned errors are not samples either.
        let failure = crate::walk::failure_marker(&crate::ErrorName::from("Oops"), "no");
        for i in 10..20 {
            t.train("f", "v", &json!({"a": i}), &failure);
        }
        assert_eq!(t.guess("f", "v", &json!({"a": 9})), None);
        for i in 2..5 {
            t.train("f", "v", &json!({"a": i}), &json!({"ok": true}));
        }
        let g = t.guess("f", "v", &json!({"a": 9})).map(|g| g.fill(&json!("?")));
        assert_eq!(g, Some(json!({"ok": true})), "four first-seen inputs");
        assert_eq!(t.guess("f", "v2", &json!({"a": 9})), None, "another version");
    }

    #[test]
    fn each_table_has_its_own_size() {
        let t = CalleeTable::new(1);
        t.train("f", "v", &json!(1), &[called("g", json!(1), None)]);
        t.train("f", "v", &json!(2), &[called("g", json!(2), None)]);
        assert_eq!(t.predict("f", "v", &json!(1)), None, "one callee row: the older one was evicted");
        assert_eq!(t.predict("f", "v", &json!(2)), Some(vec![("g".into(), json!(2))]));
        let sizes = Sizes { dependence_entries: ENTRIES_MAX + 1, ..Sizes::default() };
        assert!(sizes.check().unwrap_err().contains("tables.dependence_entries"));
        assert!(Sizes::default().check().is_ok());
    }
}
