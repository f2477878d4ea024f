//! The embedded, durable default [`Store`], on redb.
//!
//! Tables:
//! - `kv`: `(namespace, key)` → `[version: u64 LE][tag: 0 deleted | 1 value][JSON]`. The tuple key keeps the
//!   namespace a separate component, so no user key can reach into another namespace.
//! - `meta`: `"clock"` → the last commit version.
//! - `activations`: `(namespace, id)` → `[start_ms: u64 LE][record JSON]`.
//! - `activation_index`: `(namespace, start_ms, id)` → function or application name, for listing newest first.
//!
//! Every [`Store::apply`] is one redb write transaction with `Durability::Immediate`: it is atomic, and once it
//! returns it survives a crash (redb's commit flips a checksummed "god byte" after fsync).
//!
//! redb's API is blocking (file reads, fsync), so every transaction runs on tokio's blocking pool
//! ([`tokio::task::spawn_blocking`]), never on an async worker: callers `.await` a [`Store`] method and a slow
//! disk holds a blocking-pool thread, not a worker.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::{ActivationEntry, ActivationQuery, Batch, BoxFuture, Error, Op, Store, Version, Versioned};

const KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const ACTIVATIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("activations");
const ACTIVATION_INDEX: TableDefinition<(&str, u64, &str), &str> = TableDefinition::new("activation_index");

pub struct RedbStore {
    /// Shared with the blocking-pool task that runs each transaction.
    db: Arc<Database>,
}

fn backend(e: impl std::fmt::Display) -> Error {
    Error::Backend(e.to_string())
}

fn decode(bytes: &[u8]) -> Result<Versioned, Error> {
    if bytes.len() < 9 {
        return Err(Error::Backend("corrupt kv entry: shorter than its header".into()));
    }
    let version = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let value = match bytes[8] {
        0 => None,
        _ => Some(serde_json::from_slice(&bytes[9..]).map_err(backend)?),
    };
    Ok(Versioned { value, version })
}

impl RedbStore {
    /// Opens (or creates) the database file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let db = Database::create(path.as_ref())
            .map_err(|e| Error::Backend(format!("cannot open {}: {e}", path.as_ref().display())))?;
        let tx = db.begin_write().map_err(backend)?;
        {
            tx.open_table(KV).map_err(backend)?;
            tx.open_table(META).map_err(backend)?;
            tx.open_table(ACTIVATIONS).map_err(backend)?;
            tx.open_table(ACTIVATION_INDEX).map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        Ok(RedbStore { db: Arc::new(db) })
    }

    /// Runs `f` on tokio's blocking pool with the database.
    fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, Error> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, Error>> {
        let db = self.db.clone();
        Box::pin(async move {
            match tokio::task::spawn_blocking(move || f(&db)).await {
                Ok(result) => result,
                Err(e) => match e.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    Err(e) => Err(Error::Backend(format!("the storage task was cancelled: {e}"))),
                },
            }
        })
    }
}

impl Store for RedbStore {
    fn get<'a>(&'a self, namespace: &'a str, key: &'a str) -> BoxFuture<'a, Result<Versioned, Error>> {
        let (namespace, key) = (namespace.to_string(), key.to_string());
        self.blocking(move |db| get(db, &namespace, &key))
    }

    fn apply(&self, batch: Batch) -> BoxFuture<'_, Result<Version, Error>> {
        self.blocking(move |db| apply(db, &batch))
    }

    fn scan<'a>(
        &'a self,
        namespace: &'a str,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, serde_json::Value)>, Error>> {
        let (namespace, prefix) = (namespace.to_string(), prefix.to_string());
        self.blocking(move |db| scan(db, &namespace, &prefix))
    }

    fn put_activations(&self, entries: Vec<ActivationEntry>) -> BoxFuture<'_, Result<(), Error>> {
        self.blocking(move |db| put_activations(db, &entries))
    }

    fn get_activation<'a>(
        &'a self,
        namespace: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ActivationEntry>, Error>> {
        let (namespace, id) = (namespace.to_string(), id.to_string());
        self.blocking(move |db| get_activation(db, &namespace, &id))
    }

    fn list_activations<'a>(
        &'a self,
        namespace: &'a str,
        query: &'a ActivationQuery,
    ) -> BoxFuture<'a, Result<Vec<ActivationEntry>, Error>> {
        let (namespace, query) = (namespace.to_string(), query.clone());
        self.blocking(move |db| list_activations(db, &namespace, &query))
    }
}

// The transactions themselves, blocking; each runs on the blocking pool.

fn get(db: &Database, namespace: &str, key: &str) -> Result<Versioned, Error> {
    let tx = db.begin_read().map_err(backend)?;
    let table = tx.open_table(KV).map_err(backend)?;
    match table.get((namespace, key)).map_err(backend)? {
        Some(guard) => decode(guard.value()),
        None => Ok(Versioned { value: None, version: 0 }),
    }
}

fn apply(db: &Database, batch: &Batch) -> Result<Version, Error> {
    let tx = db.begin_write().map_err(backend)?;
    let version = {
        let mut kv = tx.open_table(KV).map_err(backend)?;
        let mut meta = tx.open_table(META).map_err(backend)?;
        for (key, expected) in &batch.expect {
            let found = match kv.get((batch.namespace.as_str(), key.as_str())).map_err(backend)? {
                Some(guard) => decode(guard.value())?.version,
                None => 0,
            };
            if found != *expected {
                return Err(Error::Conflict { key: key.clone(), expected: *expected, found });
            }
        }
        let clock = meta.get("clock").map_err(backend)?.map_or(0, |g| g.value());
        if batch.writes.is_empty() {
            return Ok(clock);
        }
        let version = clock + 1;
        meta.insert("clock", version).map_err(backend)?;
        for w in &batch.writes {
            let mut bytes = version.to_le_bytes().to_vec();
            match &w.op {
                Op::Put(v) => {
                    bytes.push(1);
                    serde_json::to_writer(&mut bytes, v).map_err(backend)?;
                }
                Op::Delete => bytes.push(0),
            }
            kv.insert((batch.namespace.as_str(), w.key.as_str()), bytes.as_slice()).map_err(backend)?;
        }
        version
    };
    tx.commit().map_err(backend)?;
    Ok(version)
}

fn scan(db: &Database, namespace: &str, prefix: &str) -> Result<Vec<(String, serde_json::Value)>, Error> {
    let tx = db.begin_read().map_err(backend)?;
    let table = tx.open_table(KV).map_err(backend)?;
    let mut out = Vec::new();
    for row in table.range((namespace, prefix)..).map_err(backend)? {
        let (key, value) = row.map_err(backend)?;
        let (ns, k) = key.value();
        if ns != namespace || !k.starts_with(prefix) {
            break;
        }
        if let Some(v) = decode(value.value())?.value {
            out.push((k.to_string(), v));
        }
    }
    Ok(out)
}

fn put_activations(db: &Database, entries: &[ActivationEntry]) -> Result<(), Error> {
    let tx = db.begin_write().map_err(backend)?;
    {
        let mut records = tx.open_table(ACTIVATIONS).map_err(backend)?;
        let mut index = tx.open_table(ACTIVATION_INDEX).map_err(backend)?;
        for e in entries {
            let mut bytes = e.start_ms.to_le_bytes().to_vec();
            serde_json::to_writer(&mut bytes, &e.record).map_err(backend)?;
            let old = records.insert((e.namespace.as_str(), e.id.as_str()), bytes.as_slice()).map_err(backend)?;
            if let Some(old) = old {
                let old_start = u64::from_le_bytes(old.value()[..8].try_into().expect("8 bytes"));
                drop(old);
                index.remove((e.namespace.as_str(), old_start, e.id.as_str())).map_err(backend)?;
            }
            index.insert((e.namespace.as_str(), e.start_ms, e.id.as_str()), e.name.as_str()).map_err(backend)?;
        }
    }
    tx.commit().map_err(backend)
}

fn get_activation(db: &Database, namespace: &str, id: &str) -> Result<Option<ActivationEntry>, Error> {
    let tx = db.begin_read().map_err(backend)?;
    let records = tx.open_table(ACTIVATIONS).map_err(backend)?;
    let Some(guard) = records.get((namespace, id)).map_err(backend)? else {
        return Ok(None);
    };
    let bytes = guard.value();
    let start_ms = u64::from_le_bytes(bytes[..8].try_into().map_err(backend)?);
    let record: serde_json::Value = serde_json::from_slice(&bytes[8..]).map_err(backend)?;
    let name = record.get("name").and_then(|n| n.as_str()).unwrap_or_default().to_string();
    Ok(Some(ActivationEntry { namespace: namespace.into(), id: id.into(), name, start_ms, record }))
}

fn list_activations(db: &Database, namespace: &str, query: &ActivationQuery) -> Result<Vec<ActivationEntry>, Error> {
    let tx = db.begin_read().map_err(backend)?;
    let index = tx.open_table(ACTIVATION_INDEX).map_err(backend)?;
    let lo = (namespace, query.since_ms.unwrap_or(0), "");
    let hi = (namespace, query.upto_ms.unwrap_or(u64::MAX), "\u{10FFFF}");
    let mut ids = Vec::new();
    let mut skipped = 0;
    for row in index.range(lo..=hi).map_err(backend)?.rev() {
        let (key, name) = row.map_err(backend)?;
        if query.name.as_deref().is_some_and(|n| n != name.value()) {
            continue;
        }
        if skipped < query.skip {
            skipped += 1;
            continue;
        }
        if ids.len() == query.limit {
            break;
        }
        ids.push(key.value().2.to_string());
    }
    drop(index);
    drop(tx);
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.extend(get_activation(db, namespace, &id)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> RedbStore {
        let dir = tempfile::tempdir().unwrap();
        // Keep the directory alive for the test's duration by leaking it: tests are short-lived processes.
        let path = dir.keep().join("store.redb");
        RedbStore::open(path).unwrap()
    }

    crate::conformance_tests!(fresh());

    #[test]
    fn committed_writes_survive_reopen() {
        crate::conformance::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("store.redb");
            let store = RedbStore::open(&path).unwrap();
            let batch = Batch {
                namespace: "guest".into(),
                writes: vec![crate::Write { key: "k".into(), op: Op::Put(serde_json::json!({"n": 1})) }],
                expect: vec![],
            };
            let version = store.apply(batch.clone()).await.unwrap();
            drop(store);
            let store = RedbStore::open(&path).unwrap();
            let got = store.get("guest", "k").await.unwrap();
            assert_eq!(got, Versioned { value: Some(serde_json::json!({"n": 1})), version });
            // The clock survives too: the next commit gets a larger version.
            assert!(store.apply(batch).await.unwrap() > version);
        });
    }

    /// A transaction runs on the blocking pool, not on the async worker that awaits it: with one worker, a task
    /// on that worker is still polled while a commit is under way (on the blocking pool).
    #[test]
    fn transactions_run_off_the_async_workers() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let store = fresh();
            let worker = std::thread::current().id();
            let on = store.blocking(move |_| Ok(std::thread::current().id())).await.unwrap();
            assert_ne!(on, worker, "a redb transaction ran on the async worker");
        });
    }
}
