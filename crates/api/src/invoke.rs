//! Invocation routes: `POST actions/{name}` and `POST workflows/{name}`, blocking (up to the blocking wait) or
//! not, answering the whole activation record or only the result. A request made with a running activation's
//! ephemeral key is an implicit call of that activation instead, through the engine.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use runtime::Reply;
use serde_json::{Value, json};

use crate::App;
use crate::auth::{credential, namespace};
use crate::documents::InvokeQuery;
use crate::error::{Error, Result};
use crate::extract::Query;
use crate::resources::Resource;

/// The parameters of an invocation: its body, a JSON object (none is `{}`).
fn input(body: &[u8]) -> Result<Value> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| Error::Malformed { at: None, message: e.to_string() })
}

pub(crate) async fn invoke_resource(
    State(app): State<App>,
    Extension(kind): Extension<Resource>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    Query(query): Query<InvokeQuery>,
    body: Bytes,
) -> Result<Response> {
    let ns = namespace(&app, &headers, &ns).await?;
    if kind.get(&*app.store, &ns, &name).await?.is_none() {
        return Err(Error::NotFound);
    }
    app.restore.check(kind, &ns, &name)?;
    // Made by a running activation with its ephemeral key: an implicit call of that activation.
    let (uuid, key) = credential(&headers)?;
    if app.platform.activation_key_namespace(&uuid, &key).is_some() {
        return invoke_as_activation(&app, &uuid, &key, &name, &query, &body).await;
    }
    invoke(app, ns, name, query, body).await
}

/// An invocation by a running function through the API: it goes through the engine as an implicit call, so it is
/// speculated and committed with its caller like `specfaas.invoke`. It always waits for the callee.
async fn invoke_as_activation(
    app: &App,
    uuid: &str,
    key: &str,
    name: &str,
    query: &InvokeQuery,
    body: &Bytes,
) -> Result<Response> {
    let input = input(body)?;
    let reply = app.platform.invoke_as_activation(uuid, key, name, input).await.ok_or(Error::Unauthenticated)?;
    let (status, state, result) = match reply {
        Reply::Ok(v) => (StatusCode::OK, "success", v),
        Reply::FunctionFailed(e) => (StatusCode::BAD_GATEWAY, "application error", json!({"error": e})),
        Reply::Refused(m) => return Err(Error::Invalid(m)),
    };
    let body = if query.result {
        result
    } else {
        json!({"activationId": uuid::Uuid::new_v4().simple().to_string(), "name": name,
               "response": {"status": state, "success": status == StatusCode::OK, "result": result}})
    };
    Ok((status, Json(body)).into_response())
}

/// Invokes an action or workflow: blocking (up to the blocking wait) or not, the whole record or the result.
async fn invoke(app: App, ns: String, name: String, query: InvokeQuery, body: Bytes) -> Result<Response> {
    let limit = app.platform.config().payload_bytes_max;
    if body.len() > limit {
        return Err(Error::PayloadTooLarge { size: body.len(), limit });
    }
    let input = input(&body)?;
    if !input.is_object() {
        return Err(Error::Invalid("The request content must be a JSON object of parameters.".into()));
    }
    let in_flight = app.admission.admit(&ns)?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let options = platform::InvokeOptions { activation_id: Some(id.clone()), ..Default::default() };
    let platform = app.platform.clone();
    let invocation = tokio::spawn(async move {
        let _in_flight = in_flight; // counted in flight until the invocation ends, blocking or not
        platform.invoke_with(&ns, &name, input, options).await
    });
    let accepted = || (StatusCode::ACCEPTED, Json(json!({"activationId": id}))).into_response();
    if !query.blocking {
        return Ok(accepted());
    }
    let inv = match tokio::time::timeout(app.blocking_wait, invocation).await {
        Err(_) => return Ok(accepted()),
        Ok(Err(e)) => return Err(Error::Internal(format!("the invocation failed: {e}"))),
        Ok(Ok(result)) => result?,
    };
    // OpenWhisk answers a blocking invocation that ended in an error with 502, the record (or result) included.
    let status = match inv.status {
        platform::Status::Success => StatusCode::OK,
        platform::Status::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_GATEWAY,
    };
    let body = if query.result { inv.result.clone() } else { inv.record.to_json() };
    Ok((status, Json(body)).into_response())
}
