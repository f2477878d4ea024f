//! In-memory [`Store`]: a map behind a mutex. Not durable; for tests and embedding.
//!
//! Each call does its work at once, under the mutex (never held across an await), and returns a ready future.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use std::future::ready;

use crate::{ActivationEntry, ActivationQuery, Batch, BoxFuture, Error, Op, Store, Version, Versioned, filter_page};

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// (namespace, key) → (value or tombstone, version).
    kv: HashMap<(String, String), (Option<serde_json::Value>, Version)>,
    clock: Version,
    /// (namespace, start_ms, id) → entry; iterated in reverse for newest first.
    activations: BTreeMap<(String, u64, String), ActivationEntry>,
    by_id: HashMap<(String, String), u64>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl MemoryStore {
    fn get_now(&self, namespace: &str, key: &str) -> Result<Versioned, Error> {
        let inner = self.inner.lock().expect("memory store poisoned");
        Ok(match inner.kv.get(&(namespace.to_string(), key.to_string())) {
            Some((value, version)) => Versioned { value: value.clone(), version: *version },
            None => Versioned { value: None, version: 0 },
        })
    }

    fn apply_now(&self, batch: &Batch) -> Result<Version, Error> {
        let mut inner = self.inner.lock().expect("memory store poisoned");
        for (key, expected) in &batch.expect {
            let found = inner.kv.get(&(batch.namespace.clone(), key.clone())).map_or(0, |(_, v)| *v);
            if found != *expected {
                return Err(Error::Conflict { key: key.clone(), expected: *expected, found });
            }
        }
        if batch.writes.is_empty() {
            return Ok(inner.clock);
        }
        inner.clock += 1;
        let version = inner.clock;
        for w in &batch.writes {
            let value = match &w.op {
                Op::Put(v) => Some(v.clone()),
                Op::Delete => None,
            };
            inner.kv.insert((batch.namespace.clone(), w.key.clone()), (value, version));
        }
        Ok(version)
    }

    fn scan_now(&self, namespace: &str, prefix: &str) -> Result<Vec<(String, serde_json::Value)>, Error> {
        let inner = self.inner.lock().expect("memory store poisoned");
        let mut out: Vec<(String, serde_json::Value)> = inner
            .kv
            .iter()
            .filter(|((ns, k), _)| ns == namespace && k.starts_with(prefix))
            .filter_map(|((_, k), (v, _))| v.clone().map(|v| (k.clone(), v)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn put_activations_now(&self, entries: &[ActivationEntry]) -> Result<(), Error> {
        let mut inner = self.inner.lock().expect("memory store poisoned");
        for e in entries {
            let id = (e.namespace.clone(), e.id.clone());
            if let Some(old_start) = inner.by_id.insert(id, e.start_ms) {
                inner.activations.remove(&(e.namespace.clone(), old_start, e.id.clone()));
            }
            inner.activations.insert((e.namespace.clone(), e.start_ms, e.id.clone()), e.clone());
        }
        Ok(())
    }

    fn get_activation_now(&self, namespace: &str, id: &str) -> Result<Option<ActivationEntry>, Error> {
        let inner = self.inner.lock().expect("memory store poisoned");
        let Some(start) = inner.by_id.get(&(namespace.to_string(), id.to_string())) else {
            return Ok(None);
        };
        Ok(inner.activations.get(&(namespace.to_string(), *start, id.to_string())).cloned())
    }

    fn list_activations_now(&self, namespace: &str, query: &ActivationQuery) -> Result<Vec<ActivationEntry>, Error> {
        let inner = self.inner.lock().expect("memory store poisoned");
        let lo = (namespace.to_string(), 0, String::new());
        let hi = (namespace.to_string(), u64::MAX, String::from(char::MAX));
        Ok(filter_page(inner.activations.range(lo..=hi).rev().map(|(_, e)| e), query))
    }
}

impl Store for MemoryStore {
    fn get<'a>(&'a self, namespace: &'a str, key: &'a str) -> BoxFuture<'a, Result<Versioned, Error>> {
        Box::pin(ready(self.get_now(namespace, key)))
    }
    fn apply(&self, batch: Batch) -> BoxFuture<'_, Result<Version, Error>> {
        Box::pin(ready(self.apply_now(&batch)))
    }
    fn scan<'a>(
        &'a self,
        namespace: &'a str,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, serde_json::Value)>, Error>> {
        Box::pin(ready(self.scan_now(namespace, prefix)))
    }
    fn put_activations(&self, entries: Vec<ActivationEntry>) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(ready(self.put_activations_now(&entries)))
    }
    fn get_activation<'a>(
        &'a self,
        namespace: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ActivationEntry>, Error>> {
        Box::pin(ready(self.get_activation_now(namespace, id)))
    }
    fn list_activations<'a>(
        &'a self,
        namespace: &'a str,
        query: &'a ActivationQuery,
    ) -> BoxFuture<'a, Result<Vec<ActivationEntry>, Error>> {
        Box::pin(ready(self.list_activations_now(namespace, query)))
    }
}

#[cfg(test)]
mod tests {
    crate::conformance_tests!(crate::MemoryStore::new());
}
