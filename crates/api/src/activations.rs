//! Activation routes: list a namespace's activations (newest first, filtered by [`ActivationsQuery`]), get one,
//! its response, its logs. Records are the platform's, in OpenWhisk's shape; each read waits for the records
//! produced so far to be persisted, so an activation a client was just told about is there.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::App;
use crate::auth::namespace;
use crate::documents::{ActivationSummary, ActivationsQuery};
use crate::error::{Error, Result};
use crate::extract::Query;

pub(crate) async fn list(
    State(app): State<App>,
    headers: HeaderMap,
    Path(ns): Path<String>,
    Query(query): Query<ActivationsQuery>,
) -> Result<Json<Value>> {
    let ns = namespace(&app, &headers, &ns).await?;
    app.platform.flush_records().await;
    let list = app.store.list_activations(&ns, &query.to_storage()).await?;
    let records = list.into_iter().map(|e| e.record);
    let listed: Vec<Value> = if query.docs {
        records.collect()
    } else {
        records.map(|r| serde_json::to_value(ActivationSummary::from_record(r)).unwrap_or(Value::Null)).collect()
    };
    Ok(Json(Value::Array(listed)))
}

async fn activation(app: &App, headers: &HeaderMap, ns: &str, id: &str) -> Result<Value> {
    let ns = namespace(app, headers, ns).await?;
    app.platform.flush_records().await;
    app.platform.activation(&ns, id).await?.ok_or(Error::NotFound)
}

pub(crate) async fn get(
    State(app): State<App>,
    headers: HeaderMap,
    Path((ns, id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    Ok(Json(activation(&app, &headers, &ns, &id).await?))
}

pub(crate) async fn result(
    State(app): State<App>,
    headers: HeaderMap,
    Path((ns, id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    Ok(Json(activation(&app, &headers, &ns, &id).await?["response"].clone()))
}

pub(crate) async fn logs(
    State(app): State<App>,
    headers: HeaderMap,
    Path((ns, id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let record = activation(&app, &headers, &ns, &id).await?;
    Ok(Json(json!({"logs": record["logs"]})))
}
