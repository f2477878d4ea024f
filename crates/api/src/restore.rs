//! Restore: redeploying every stored action and workflow when the server starts, in the background, so the port
//! opens at once (a Python or Node.js action takes tens of milliseconds to load).
//!
//! Until a stored resource is redeployed it is **pending**: invoking it (or deploying a sequence or workflow that
//! uses it) answers `503 Service Unavailable` with `Retry-After` ([`crate::error::Error::Restoring`]), a status
//! clients retry. Reading and listing it work from the store as usual. A `PUT` or `DELETE` of a pending name
//! supersedes what was stored, so the restore skips it.
//!
//! Order: functions first, then sequences (which need them), then workflows (which need both).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::App;
use crate::resources::{Record, Resource};

/// The names (namespace, name) stored but not redeployed yet.
#[derive(Default)]
pub(crate) struct Pending(Mutex<HashSet<(String, String)>>);

impl Pending {
    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<(String, String)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn is_pending(&self, ns: &str, name: &str) -> bool {
        self.set().contains(&(ns.to_string(), name.to_string()))
    }

    /// `ns/name` needs no restore any more: redeployed, or superseded by a `PUT` or `DELETE`.
    pub(crate) fn done(&self, ns: &str, name: &str) {
        self.set().remove(&(ns.to_string(), name.to_string()));
    }

    /// How many are still pending.
    pub(crate) fn len(&self) -> usize {
        self.set().len()
    }

    /// A 503 naming `name` if it is pending.
    pub(crate) fn check(&self, kind: Resource, ns: &str, name: &str) -> crate::error::Result<()> {
        if self.is_pending(ns, name) {
            return Err(crate::error::Error::Restoring { what: kind.noun(), name: name.to_string() });
        }
        Ok(())
    }
}

/// What to restore, in order; every name is pending from here on.
pub(crate) async fn plan(app: &App) -> crate::error::Result<Vec<Record>> {
    let actions = Resource::Action.all(&*app.store).await?;
    let (sequences, functions): (Vec<_>, Vec<_>) = actions
        .into_iter()
        .partition(|r| matches!(r, Record::Action(a) if matches!(a.exec, crate::documents::Exec::Sequence { .. })));
    let workflows = Resource::Workflow.all(&*app.store).await?;
    let order: Vec<Record> = functions.into_iter().chain(sequences).chain(workflows).collect();
    let mut pending = app.restore.set();
    for r in &order {
        pending.insert((r.namespace().to_string(), r.name().to_string()));
    }
    Ok(order)
}

/// Redeploys `order` one by one, then sends `true` on `finished`. With a `gate` (a test hook), each takes a permit
/// from it first.
pub(crate) async fn run(
    app: App,
    order: Vec<Record>,
    gate: Option<Arc<tokio::sync::Semaphore>>,
    finished: tokio::sync::watch::Sender<bool>,
) {
    for record in order {
        if let Some(gate) = &gate {
            match gate.acquire().await {
                Ok(permit) => permit.forget(),
                Err(_) => return, // the gate closed: the server is stopping
            }
        }
        let (ns, name) = (record.namespace(), record.name());
        let _change = app.locks.lock(ns, name).await;
        if !app.restore.is_pending(ns, name) {
            continue; // superseded since the server started
        }
        let restoring = |f: &str| f != name && app.restore.is_pending(ns, f);
        let deployed = match &record {
            Record::Action(a) => crate::actions::deploy(&app.platform, ns, a, &restoring).await,
            Record::Workflow(w) => crate::workflows::deploy(&app.platform, w, &restoring),
        };
        if let Err(e) = deployed {
            let noun = if matches!(record, Record::Action(_)) { "action" } else { "workflow" };
            eprintln!("specfaas: cannot restore {noun} /{ns}/{name}: {e}");
        }
        app.restore.done(ns, name);
    }
    let _ = finished.send(true);
}
