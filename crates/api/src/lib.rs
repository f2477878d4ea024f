//! `specfaas serve`: the platform behind an HTTP API compatible with Apache OpenWhisk's REST API v1, so the
//! official `openwhisk` clients and existing tooling work unchanged.
//!
//! Layout, each module owning one concern:
//! - `server`: [`Options`] → [`Server::start`] → [`Running::serve`] until shutdown; the router; the work
//!   directory.
//! - `restore`: redeploying stored actions and workflows in the background after a start; `503` for those not
//!   redeployed yet.
//! - `resources`: what actions and workflows share: storage, the list/get/put/delete routes, one change at a time
//!   per name. `actions` and `workflows` turn a request body into a stored and deployed resource.
//! - `invoke`: the invocation routes; `activations`: the activation routes.
//! - `admission`: per-namespace invocation limits ([`NamespaceLimits`]), `429` past them.
//! - `auth`: the request's `uuid:key` credential and namespace; [`keys`]: the keys, stored hashed.
//! - `documents`: the OpenWhisk documents and query strings, typed; `extract`: the typed query extractor.
//! - [`Error`]: every error, mapped to a status and OpenWhisk's error shape.
//! - `metrics`: `/metrics`, Prometheus text.
//!
//! Routes under `/api/v1`: namespaces (list); actions and workflows (`PUT`, `GET`, list, `DELETE`, `POST` to
//! invoke, blocking or not); activations (list, one, its result, its logs). `/health` and `/metrics` answer without
//! a key.
//!
//! Imports run one way: `server` → routes (`resources`, `invoke`, `activations`) and `restore` → `actions`,
//! `workflows` → `documents`, `error`.
//!
//! **API boundary:** this crate reaches storage only for its own records (keys, action and workflow definitions)
//! in the system namespace; everything a function does goes through [`platform::Platform`]. Errors have
//! OpenWhisk's shape, `{"error": "...", "code": "..."}`, with the matching status.

mod actions;
mod activations;
mod admission;
mod auth;
pub mod documents;
mod error;
mod extract;
mod invoke;
pub mod keys;
mod metrics;
mod resources;
mod restore;
mod server;
mod workflows;

use std::sync::Arc;
use std::time::Duration;

use storage::Store;

pub use admission::NamespaceLimits;
pub use error::{Error, RESTORE_RETRY_AFTER, Result};
pub use server::{BLOCKING_WAIT, Options, Running, Server, work_dir};

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
struct App {
    platform: platform::Platform,
    store: Arc<dyn Store>,
    blocking_wait: Duration,
    /// What `/metrics` exports: request metrics and the platform's counters.
    metrics: Arc<metrics::Exporter>,
    admission: admission::Admission,
    /// One change at a time per resource name.
    locks: Arc<resources::Locks>,
    /// Stored resources not redeployed yet since the start.
    restore: Arc<restore::Pending>,
}
