//! Workflows: our extension, in OpenWhisk's style. An ASL document (JSON, or YAML as text) is validated against
//! the namespace's actions, deployed as an application, and persisted as `workflow:NAMESPACE/NAME` in the system
//! namespace; it is invoked like an action and its activations appear in the same activations API.

use axum::http::StatusCode;
use model::Application;
use serde_json::{Value, json};
use storage::{Batch, Op, Store, Write};

use crate::keys::SYSTEM;
use crate::{ApiError, error};

fn key(ns: &str, name: &str) -> String {
    format!("workflow:{ns}/{name}")
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// The ASL text of a request body: a JSON document, or `{"definition": "<JSON or YAML text>"}`.
fn asl_text(body: &Value) -> Result<String, ApiError> {
    match body.get("definition") {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(doc @ Value::Object(_)) => Ok(doc.to_string()),
        Some(_) => Err(error(StatusCode::BAD_REQUEST, "'definition' must be an ASL document or its text")),
        None if body.is_object() => Ok(body.to_string()),
        None => Err(error(StatusCode::BAD_REQUEST, "the request content must be an ASL document")),
    }
}

fn deploy(platform: &platform::Platform, ns: &str, name: &str, text: &str) -> Result<(), ApiError> {
    let file = format!("workflow {name}");
    let graph = model::asl::parse(&file, text, &|f| platform.has_function(ns, f))
        .map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
    let app = Application::workflow(name, graph).map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
    platform.deploy_app(ns, app);
    Ok(())
}

pub(crate) fn get(store: &dyn Store, ns: &str, name: &str) -> Result<Option<Value>, ApiError> {
    Ok(store.get(SYSTEM, &key(ns, name)).map_err(internal)?.value)
}

pub(crate) fn list(store: &dyn Store, ns: &str) -> Result<Vec<Value>, ApiError> {
    let all = store.scan(SYSTEM, &format!("workflow:{ns}/")).map_err(internal)?;
    Ok(all
        .into_iter()
        .map(|(_, mut w)| {
            if let Value::Object(m) = &mut w {
                m.remove("definition");
            }
            w
        })
        .collect())
}

pub(crate) fn put(
    platform: &platform::Platform,
    store: &dyn Store,
    ns: &str,
    name: &str,
    body: &Value,
    overwrite: bool,
) -> Result<Value, ApiError> {
    model::check_name(name).map_err(|e| error(StatusCode::BAD_REQUEST, format!("workflow name: {e}")))?;
    if !overwrite && get(store, ns, name)?.is_some() {
        return Err(error(StatusCode::CONFLICT, "resource already exists"));
    }
    if crate::actions::get(store, ns, name)?.is_some() {
        return Err(error(StatusCode::CONFLICT, format!("an action named '{name}' exists; names are shared")));
    }
    let text = asl_text(body)?;
    deploy(platform, ns, name, &text)?;
    let updated =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let record = json!({"namespace": ns, "name": name, "definition": text, "updated": updated});
    let batch = Batch {
        namespace: SYSTEM.into(),
        writes: vec![Write { key: key(ns, name), op: Op::Put(record.clone()) }],
        expect: vec![],
    };
    store.apply(&batch).map_err(internal)?;
    Ok(record)
}

pub(crate) fn delete(
    platform: &platform::Platform,
    store: &dyn Store,
    ns: &str,
    name: &str,
) -> Result<Option<Value>, ApiError> {
    let Some(record) = get(store, ns, name)? else { return Ok(None) };
    let batch =
        Batch { namespace: SYSTEM.into(), writes: vec![Write { key: key(ns, name), op: Op::Delete }], expect: vec![] };
    store.apply(&batch).map_err(internal)?;
    platform.remove(ns, name);
    Ok(Some(record))
}

/// Redeploys every stored workflow at start (after the actions they use).
pub(crate) fn restore(platform: &platform::Platform, store: &dyn Store) {
    let Ok(all) = store.scan(SYSTEM, "workflow:") else { return };
    for (_, w) in all {
        let (ns, name) = (w["namespace"].as_str().unwrap_or_default(), w["name"].as_str().unwrap_or_default());
        if let Err(ApiError(_, message)) = deploy(platform, ns, name, w["definition"].as_str().unwrap_or_default()) {
            eprintln!("specfaas: cannot restore workflow /{ns}/{name}: {message}");
        }
    }
}
