//! The per-invocation data buffer: uncommitted writes, by run.
//!
//! A run's view of storage is, in order: its own writes, then its caller's (and the caller's caller's, ...), then
//! committed state. A callee's writes merge into its caller's when it returns, and a run's writes leave the buffer
//! when they commit. With functions running one at a time in program order, that is exactly the sequential
//! semantics; speculation generalizes the lookup to "nearest older writer in program order".

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::RunId;

/// `None` as a buffered value is a delete.
pub type Buffered = Option<Value>;

#[derive(Debug, Default)]
pub struct DataBuffer {
    /// Each run's writes, in key order, so commits are deterministic.
    writes: HashMap<RunId, BTreeMap<String, Buffered>>,
}

impl DataBuffer {
    /// The buffered value of `key` for `run`, looking through `chain` (the run, then its callers); `None` when no
    /// run in the chain wrote it (read committed state then).
    pub fn read(&self, chain: impl IntoIterator<Item = RunId>, key: &str) -> Option<&Buffered> {
        chain.into_iter().find_map(|r| self.writes.get(&r).and_then(|w| w.get(key)))
    }

    pub fn write(&mut self, run: RunId, key: String, value: Buffered) {
        self.writes.entry(run).or_default().insert(key, value);
    }

    /// Keys `run` has written so far.
    pub fn write_count(&self, run: RunId) -> usize {
        self.writes.get(&run).map_or(0, BTreeMap::len)
    }

    pub fn has_written(&self, run: RunId, key: &str) -> bool {
        self.writes.get(&run).is_some_and(|w| w.contains_key(key))
    }

    /// A callee returned: its writes become its caller's (they are later in program order, so they win).
    pub fn merge_into(&mut self, callee: RunId, caller: RunId) {
        if let Some(w) = self.writes.remove(&callee) {
            self.writes.entry(caller).or_default().extend(w);
        }
    }

    /// `run`'s writes, left in place (they stay visible to younger readers while the commit is in flight).
    pub fn writes_of(&self, run: RunId) -> Vec<(String, Buffered)> {
        self.writes.get(&run).map(|w| w.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default()
    }

    /// Removes and returns `run`'s writes (to commit them, or to discard them).
    pub fn take(&mut self, run: RunId) -> Vec<(String, Buffered)> {
        self.writes.remove(&run).map(|w| w.into_iter().collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_forward_through_the_caller_chain_and_merge_on_return() {
        let mut b = DataBuffer::default();
        b.write(RunId(1), "k".into(), Some(json!(1)));
        assert_eq!(b.read([RunId(2), RunId(1)], "k"), Some(&Some(json!(1))), "a callee sees its caller's write");
        assert_eq!(b.read([RunId(2), RunId(1)], "other"), None);
        b.write(RunId(2), "k".into(), None);
        assert_eq!(b.read([RunId(2), RunId(1)], "k"), Some(&None), "a buffered delete hides the older write");
        b.merge_into(RunId(2), RunId(1));
        assert_eq!(b.read([RunId(1)], "k"), Some(&None));
        assert_eq!(b.take(RunId(1)), vec![("k".to_string(), None)]);
        assert_eq!(b.read([RunId(1)], "k"), None);
    }
}
