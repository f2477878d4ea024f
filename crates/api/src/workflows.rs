//! Workflows: our extension, in OpenWhisk's style. An ASL document (JSON, or YAML as text) is validated against
//! the namespace's actions and deployed as an application; it is invoked like an action and its activations appear
//! in the same activations API. Storing, listing and deleting are `resources`'; redeploying at start is
//! `restore`'s.

use model::Application;
use serde_json::Value;

use crate::documents::Workflow;
use crate::error::{Error, Result};

/// The ASL text of a request body: a JSON document, or `{"definition": "<JSON or YAML text>"}`.
fn asl_text(body: &[u8]) -> Result<String> {
    let body: Value =
        serde_json::from_slice(body).map_err(|e| Error::Malformed { at: None, message: e.to_string() })?;
    match body.get("definition") {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(doc @ Value::Object(_)) => Ok(doc.to_string()),
        Some(_) => Err(Error::Invalid("'definition' must be an ASL document or its text".into())),
        None if body.is_object() => Ok(body.to_string()),
        None => Err(Error::Invalid("the request content must be an ASL document".into())),
    }
}

/// Validates a stored workflow against the namespace's actions and deploys it, in place of any deployed version.
/// `restoring` tells which names of `ns` are stored but not redeployed yet since the server started.
pub(crate) fn deploy(
    platform: &platform::Platform,
    workflow: &Workflow,
    restoring: &(dyn Fn(&str) -> bool + Sync),
) -> Result<()> {
    let (ns, name) = (workflow.namespace.as_str(), workflow.name.as_str());
    let file = format!("workflow {name}");
    let waiting = std::cell::RefCell::new(None);
    let known = |f: &str| {
        if restoring(f) {
            waiting.borrow_mut().get_or_insert_with(|| f.to_string());
            return true;
        }
        crate::actions::is_function(platform, ns, f)
    };
    let limits = platform.config().engine.workflows;
    let graph = model::asl::parse_within(&file, &workflow.definition, &known, &limits);
    if let Some(f) = waiting.into_inner() {
        return Err(Error::Restoring { what: "action", name: f });
    }
    let graph = graph.map_err(|e| Error::Invalid(e.to_string()))?;
    let app = Application::workflow(name, graph).map_err(|e| Error::Invalid(e.to_string()))?;
    platform.deploy_app(ns, app);
    Ok(())
}

/// Checks a `PUT` body and builds the workflow to store.
pub(crate) fn definition(ns: &str, name: &str, body: &[u8]) -> Result<Workflow> {
    Ok(Workflow {
        namespace: ns.to_string(),
        name: name.to_string(),
        definition: asl_text(body)?,
        updated: crate::actions::epoch_ms(),
    })
}
