//! Actions and workflows are both named resources of a namespace. This module owns what they share:
//! - storage, as `action:NS/NAME` or `workflow:NS/NAME` in the store's system namespace;
//! - the routes to list (without code or definition, as OpenWhisk's listings), get, create or update (with
//!   OpenWhisk's `overwrite` rule) and delete them;
//! - one name space per namespace: an action and a workflow never share a name;
//! - one change at a time per name ([`Locks`]): a `PUT`, a `DELETE` or the restore of one name never interleave,
//!   so what is deployed is what is stored.
//!
//! What differs, turning a request body into a deployed resource, lives in `actions` and `workflows`.

use std::hash::{DefaultHasher, Hash, Hasher};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::HeaderMap;
use serde_json::Value;
use storage::{Batch, Op, Store, Write};

use crate::App;
use crate::auth::namespace;
use crate::documents::{Action, PutQuery, Workflow};
use crate::error::{Error, Result};
use crate::extract::Query;
use crate::keys::SYSTEM;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resource {
    Action,
    Workflow,
}

/// A stored resource, typed.
#[derive(Debug, Clone)]
pub(crate) enum Record {
    Action(Action),
    Workflow(Workflow),
}

impl Record {
    pub(crate) fn namespace(&self) -> &str {
        match self {
            Record::Action(a) => &a.namespace,
            Record::Workflow(w) => &w.namespace,
        }
    }

    pub(crate) fn name(&self) -> &str {
        match self {
            Record::Action(a) => &a.name,
            Record::Workflow(w) => &w.name,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Record::Action(a) => serde_json::to_value(a),
            Record::Workflow(w) => serde_json::to_value(w),
        }
        .unwrap_or(Value::Null)
    }

    fn summary(self) -> Value {
        match self {
            Record::Action(a) => serde_json::to_value(a.summary()),
            Record::Workflow(w) => serde_json::to_value(w.summary()),
        }
        .unwrap_or(Value::Null)
    }
}

impl Resource {
    pub(crate) fn noun(self) -> &'static str {
        match self {
            Resource::Action => "action",
            Resource::Workflow => "workflow",
        }
    }

    fn other(self) -> Resource {
        match self {
            Resource::Action => Resource::Workflow,
            Resource::Workflow => Resource::Action,
        }
    }

    fn key(self, ns: &str, name: &str) -> String {
        format!("{}:{ns}/{name}", self.noun())
    }

    fn parse(self, value: Value) -> Result<Record> {
        let record = match self {
            Resource::Action => serde_json::from_value(value).map(Record::Action),
            Resource::Workflow => serde_json::from_value(value).map(Record::Workflow),
        };
        record.map_err(|e| Error::Internal(format!("a stored {} does not parse: {e}", self.noun())))
    }

    async fn write(self, store: &dyn Store, ns: &str, name: &str, op: Op) -> Result<()> {
        let batch =
            Batch { namespace: SYSTEM.into(), writes: vec![Write { key: self.key(ns, name), op }], expect: vec![] };
        store.apply(batch).await?;
        Ok(())
    }

    pub(crate) async fn get(self, store: &dyn Store, ns: &str, name: &str) -> Result<Option<Record>> {
        store.get(SYSTEM, &self.key(ns, name)).await?.value.map(|v| self.parse(v)).transpose()
    }

    /// Every stored record of this kind, all namespaces (to restore them at start). One that does not parse is
    /// reported and skipped.
    pub(crate) async fn all(self, store: &dyn Store) -> Result<Vec<Record>> {
        let all = store.scan(SYSTEM, &format!("{}:", self.noun())).await?;
        Ok(all
            .into_iter()
            .filter_map(|(key, value)| self.parse(value).map_err(|e| eprintln!("specfaas: skipping {key}: {e}")).ok())
            .collect())
    }

    async fn list(self, store: &dyn Store, ns: &str) -> Result<Vec<Value>> {
        let all = store.scan(SYSTEM, &format!("{}:{ns}/", self.noun())).await?;
        all.into_iter().map(|(_, v)| self.parse(v).map(Record::summary)).collect()
    }

    /// Creates (or, with `overwrite`, replaces) the resource from a request body: checked, deployed, stored.
    async fn put(self, app: &App, ns: &str, name: &str, body: &[u8], overwrite: bool) -> Result<Record> {
        let store = &*app.store;
        model::check_name(name).map_err(|e| Error::Invalid(format!("{} name: {e}", self.noun())))?;
        let record = match self {
            Resource::Action => Record::Action(crate::actions::definition(ns, name, body)?),
            Resource::Workflow => Record::Workflow(crate::workflows::definition(ns, name, body)?),
        };
        let _change = app.locks.lock(ns, name).await;
        if !overwrite && self.get(store, ns, name).await?.is_some() {
            return Err(Error::Conflict("resource already exists".into()));
        }
        if self.other().get(store, ns, name).await?.is_some() {
            let other = self.other().noun();
            return Err(Error::Conflict(format!("a {other} named '{name}' exists; names are shared")));
        }
        let restoring = |f: &str| app.restore.is_pending(ns, f);
        match &record {
            Record::Action(a) => crate::actions::deploy(&app.platform, ns, a, &restoring).await?,
            Record::Workflow(w) => crate::workflows::deploy(&app.platform, w, &restoring)?,
        }
        self.write(store, ns, name, Op::Put(record.to_json())).await?;
        // What was stored before the server started is superseded: the restore must not deploy it over this.
        app.restore.done(ns, name);
        Ok(record)
    }

    async fn delete(self, app: &App, ns: &str, name: &str) -> Result<Option<Record>> {
        let _change = app.locks.lock(ns, name).await;
        let Some(record) = self.get(&*app.store, ns, name).await? else { return Ok(None) };
        self.write(&*app.store, ns, name, Op::Delete).await?;
        app.platform.remove(ns, name);
        app.restore.done(ns, name);
        Ok(Some(record))
    }
}

/// Serializes changes to one name: a fixed set of async locks, a name taking the one its hash picks. Two names
/// may share a lock and wait for each other; the set stays bounded however many names there are.
pub(crate) struct Locks([tokio::sync::Mutex<()>; Locks::COUNT]);

impl Locks {
    const COUNT: usize = 64;

    pub(crate) async fn lock(&self, ns: &str, name: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let mut hash = DefaultHasher::new();
        (ns, name).hash(&mut hash);
        self.0[(hash.finish() % Self::COUNT as u64) as usize].lock().await
    }
}

impl Default for Locks {
    fn default() -> Self {
        Locks(std::array::from_fn(|_| tokio::sync::Mutex::new(())))
    }
}

pub(crate) async fn list(
    State(app): State<App>,
    Extension(kind): Extension<Resource>,
    headers: HeaderMap,
    Path(ns): Path<String>,
) -> Result<Json<Value>> {
    let ns = namespace(&app, &headers, &ns).await?;
    Ok(Json(Value::Array(kind.list(&*app.store, &ns).await?)))
}

pub(crate) async fn get(
    State(app): State<App>,
    Extension(kind): Extension<Resource>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let ns = namespace(&app, &headers, &ns).await?;
    kind.get(&*app.store, &ns, &name).await?.map(|r| Json(r.to_json())).ok_or(Error::NotFound)
}

pub(crate) async fn put(
    State(app): State<App>,
    Extension(kind): Extension<Resource>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    Query(query): Query<PutQuery>,
    body: Bytes,
) -> Result<Json<Value>> {
    let ns = namespace(&app, &headers, &ns).await?;
    Ok(Json(kind.put(&app, &ns, &name, &body, query.overwrite).await?.to_json()))
}

pub(crate) async fn delete(
    State(app): State<App>,
    Extension(kind): Extension<Resource>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let ns = namespace(&app, &headers, &ns).await?;
    kind.delete(&app, &ns, &name).await?.map(|r| Json(r.to_json())).ok_or(Error::NotFound)
}
