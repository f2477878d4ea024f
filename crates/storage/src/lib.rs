//! Storage for functions and records, behind one [`Store`] trait.
//!
//! - [`Store`]: versioned key/value reads, atomic batch apply with optional read-set validation, and the
//!   activation log, all asynchronous (each method returns a [`BoxFuture`]). Keys are always addressed as
//!   `(namespace, key)`: the namespace is a separate component, never concatenated with the user's key, so no
//!   user-chosen key can name another tenant's data.
//! - [`memory::MemoryStore`]: in-process, for tests and embedding.
//! - [`redb_store::RedbStore`]: the embedded, durable default.
//! - [`conformance`]: the suite every backend must pass; [`conformance_tests!`] instantiates it.
//!
//! **Architecture invariant:** storage knows nothing about the engine, functions or speculation. It stores
//! committed state only; speculative state lives in the engine's data buffer.

pub mod conformance;
pub mod memory;
pub mod redb_store;

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use memory::MemoryStore;
pub use redb_store::RedbStore;

/// Commit sequence number. Every [`Store::apply`] gets a new, larger one; a key's version is the sequence number of
/// the commit that last wrote (or deleted) it. `0` means "never written".
pub type Version = u64;

/// The committed state of one key.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    /// `None` when the key does not exist (never written, or deleted).
    pub value: Option<Value>,
    pub version: Version,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Put(Value),
    Delete,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub key: String,
    pub op: Op,
}

/// An atomic unit of commit: all writes land, or none do.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    pub namespace: String,
    pub writes: Vec<Write>,
    /// Read-set validation: each `(key, version)` must still be the key's current version, else the batch fails
    /// with [`Error::Conflict`] and nothing is written.
    pub expect: Vec<(String, Version)>,
}

/// One activation record as stored: the indexed fields plus the whole record as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivationEntry {
    pub namespace: String,
    pub id: String,
    pub name: String,
    pub start_ms: u64,
    pub record: Value,
}

/// Filters for [`Store::list_activations`]; results are newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationQuery {
    pub name: Option<String>,
    /// Only records with `start_ms >= since_ms`.
    pub since_ms: Option<u64>,
    /// Only records with `start_ms <= upto_ms`.
    pub upto_ms: Option<u64>,
    pub skip: usize,
    pub limit: usize,
}

impl Default for ActivationQuery {
    fn default() -> Self {
        ActivationQuery { name: None, since_ms: None, upto_ms: None, skip: 0, limit: 30 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A read-set validation failed: `key` changed since it was read.
    #[error("conflict on key \"{key}\": expected version {expected}, found {found}")]
    Conflict { key: String, expected: Version, found: Version },
    /// The backend failed (I/O, corruption). The batch was not applied.
    #[error("storage backend failed: {0}")]
    Backend(String),
}

/// A boxed, sendable future: what every [`Store`] method returns.
///
/// The trait is used as `Arc<dyn Store>` (the platform picks the backend at run time), so its methods cannot be
/// `async fn`s, which are not dyn-compatible. A boxed future is the simplest dyn-compatible shape, the one the
/// runtime crate's `Runtime::load` already uses, and it needs no macro crate. Its cost, one allocation per call, is
/// small beside a store access.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Committed state, shared by every invocation. Implementations are internally synchronized.
///
/// Every method is asynchronous, so a network backend waits without holding a worker thread. **Architecture
/// invariant:** a backend never blocks the async workers: one whose I/O is blocking (redb) runs it on tokio's
/// blocking pool itself, so callers just `.await` and never wrap a call in `spawn_blocking`. Methods must be
/// called inside a tokio runtime.
pub trait Store: Send + Sync + 'static {
    /// Reads the committed state of `key` in `namespace`.
    fn get<'a>(&'a self, namespace: &'a str, key: &'a str) -> BoxFuture<'a, Result<Versioned, Error>>;

    /// Applies `batch` atomically and durably (as durable as the backend is). Returns the commit's version. An
    /// empty batch with no expectations is a no-op that still returns the current version.
    fn apply(&self, batch: Batch) -> BoxFuture<'_, Result<Version, Error>>;

    /// Every existing key of `namespace` that starts with `prefix`, with its value, in key order.
    fn scan<'a>(&'a self, namespace: &'a str, prefix: &'a str) -> BoxFuture<'a, Result<Vec<(String, Value)>, Error>>;

    /// Stores (or replaces) activation records, all in one transaction.
    fn put_activations(&self, entries: Vec<ActivationEntry>) -> BoxFuture<'_, Result<(), Error>>;

    fn get_activation<'a>(
        &'a self,
        namespace: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ActivationEntry>, Error>>;

    fn list_activations<'a>(
        &'a self,
        namespace: &'a str,
        query: &'a ActivationQuery,
    ) -> BoxFuture<'a, Result<Vec<ActivationEntry>, Error>>;
}

impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    fn get<'a>(&'a self, namespace: &'a str, key: &'a str) -> BoxFuture<'a, Result<Versioned, Error>> {
        (**self).get(namespace, key)
    }
    fn apply(&self, batch: Batch) -> BoxFuture<'_, Result<Version, Error>> {
        (**self).apply(batch)
    }
    fn scan<'a>(&'a self, namespace: &'a str, prefix: &'a str) -> BoxFuture<'a, Result<Vec<(String, Value)>, Error>> {
        (**self).scan(namespace, prefix)
    }
    fn put_activations(&self, entries: Vec<ActivationEntry>) -> BoxFuture<'_, Result<(), Error>> {
        (**self).put_activations(entries)
    }
    fn get_activation<'a>(
        &'a self,
        namespace: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ActivationEntry>, Error>> {
        (**self).get_activation(namespace, id)
    }
    fn list_activations<'a>(
        &'a self,
        namespace: &'a str,
        query: &'a ActivationQuery,
    ) -> BoxFuture<'a, Result<Vec<ActivationEntry>, Error>> {
        (**self).list_activations(namespace, query)
    }
}

/// Applies `query`'s filters to entries already sorted newest first. Shared by the backends so they agree.
pub(crate) fn filter_page<'a>(
    entries: impl Iterator<Item = &'a ActivationEntry>,
    query: &ActivationQuery,
) -> Vec<ActivationEntry> {
    entries
        .filter(|e| query.name.as_ref().is_none_or(|n| *n == e.name))
        .filter(|e| query.since_ms.is_none_or(|s| e.start_ms >= s))
        .filter(|e| query.upto_ms.is_none_or(|u| e.start_ms <= u))
        .skip(query.skip)
        .take(query.limit)
        .cloned()
        .collect()
}
