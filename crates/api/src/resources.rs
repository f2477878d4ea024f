//! Actions and workflows are both named resources of a namespace. This module owns what they share:
//! - storage, as `action:NS/NAME` or `workflow:NS/NAME` in the store's system namespace;
//! - listing (without code or definition, as OpenWhisk's listings);
//! - create-or-update with OpenWhisk's `overwrite` rule, deletion;
//! - one name space per namespace: an action and a workflow never share a name.
//!
//! What differs, turning a request body into a deployed resource, lives in `actions` and `workflows`.

use axum::http::StatusCode;
use serde_json::Value;
use storage::{Batch, Op, Store, Write};

use crate::keys::SYSTEM;
use crate::{ApiError, error, internal};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resource {
    Action,
    Workflow,
}

impl Resource {
    fn prefix(self) -> &'static str {
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
        format!("{}:{ns}/{name}", self.prefix())
    }

    async fn write(self, store: &dyn Store, ns: &str, name: &str, op: Op) -> Result<(), ApiError> {
        let batch =
            Batch { namespace: SYSTEM.into(), writes: vec![Write { key: self.key(ns, name), op }], expect: vec![] };
        store.apply(batch).await.map(|_| ()).map_err(internal)
    }

    pub(crate) async fn get(self, store: &dyn Store, ns: &str, name: &str) -> Result<Option<Value>, ApiError> {
        Ok(store.get(SYSTEM, &self.key(ns, name)).await.map_err(internal)?.value)
    }

    /// Every stored record of this kind, all namespaces (to restore them at start).
    pub(crate) async fn all(self, store: &dyn Store) -> Vec<Value> {
        store
            .scan(SYSTEM, &format!("{}:", self.prefix()))
            .await
            .map(|v| v.into_iter().map(|(_, r)| r).collect())
            .unwrap_or_default()
    }

    pub(crate) async fn list(self, store: &dyn Store, ns: &str) -> Result<Vec<Value>, ApiError> {
        let all = store.scan(SYSTEM, &format!("{}:{ns}/", self.prefix())).await.map_err(internal)?;
        Ok(all
            .into_iter()
            .map(|(_, mut record)| {
                match self {
                    Resource::Action => {
                        record["exec"] = serde_json::json!({"kind": record["exec"]["kind"], "binary": false});
                    }
                    Resource::Workflow => {
                        if let Value::Object(m) = &mut record {
                            m.remove("definition");
                        }
                    }
                }
                record
            })
            .collect())
    }

    /// Creates (or, with `overwrite`, replaces) the resource from a request body: validated, deployed, stored.
    pub(crate) async fn put(
        self,
        platform: &platform::Platform,
        store: &dyn Store,
        ns: &str,
        name: &str,
        body: &Value,
        overwrite: bool,
    ) -> Result<Value, ApiError> {
        model::check_name(name).map_err(|e| error(StatusCode::BAD_REQUEST, format!("{} name: {e}", self.prefix())))?;
        if !overwrite && self.get(store, ns, name).await?.is_some() {
            return Err(error(StatusCode::CONFLICT, "resource already exists"));
        }
        if self.other().get(store, ns, name).await?.is_some() {
            let other = self.other().prefix();
            return Err(error(StatusCode::CONFLICT, format!("a {other} named '{name}' exists; names are shared")));
        }
        let record = match self {
            Resource::Action => crate::actions::build(platform, ns, name, body).await?,
            Resource::Workflow => crate::workflows::build(platform, ns, name, body)?,
        };
        self.write(store, ns, name, Op::Put(record.clone())).await?;
        Ok(record)
    }

    pub(crate) async fn delete(
        self,
        platform: &platform::Platform,
        store: &dyn Store,
        ns: &str,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        let Some(record) = self.get(store, ns, name).await? else { return Ok(None) };
        self.write(store, ns, name, Op::Delete).await?;
        platform.remove(ns, name);
        Ok(Some(record))
    }
}
