//! Workflows: our extension, in OpenWhisk's style. An ASL document (JSON, or YAML as text) is validated against
//! the namespace's actions and deployed as an application; it is invoked like an action and its activations appear
//! in the same activations API. Storing, listing and deleting are `resources`'.

use axum::http::StatusCode;
use model::Application;
use serde_json::{Value, json};
use storage::Store;

use crate::{ApiError, error};

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

/// Validates an ASL document and deploys it: the record to store.
pub(crate) fn build(platform: &platform::Platform, ns: &str, name: &str, body: &Value) -> Result<Value, ApiError> {
    let text = asl_text(body)?;
    deploy(platform, ns, name, &text)?;
    let updated =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    Ok(json!({"namespace": ns, "name": name, "definition": text, "updated": updated}))
}

/// Redeploys every stored workflow at start (after the actions they use).
pub(crate) async fn restore(platform: &platform::Platform, store: &dyn Store) {
    for w in crate::resources::Resource::Workflow.all(store).await {
        let (ns, name) = (w["namespace"].as_str().unwrap_or_default(), w["name"].as_str().unwrap_or_default());
        if let Err(ApiError(_, message)) = deploy(platform, ns, name, w["definition"].as_str().unwrap_or_default()) {
            eprintln!("specfaas: cannot restore workflow /{ns}/{name}: {message}");
        }
    }
}
