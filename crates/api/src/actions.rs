//! Actions in OpenWhisk's JSON shapes: parsing a `PUT` body into a definition and deploying it on the platform;
//! `restore` redeploys the stored definitions at start. Sequences (`exec.kind: "sequence"`) are applications of the
//! platform. Storing, listing and deleting are `resources`'.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use model::{Annotations, Application, Code, FunctionSpec, Kind, Limits};
use serde_json::{Map, Value, json};
use storage::Store;

use crate::{ApiError, error};

fn bad(message: impl Into<String>) -> ApiError {
    error(StatusCode::BAD_REQUEST, message)
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// OpenWhisk's `[{"key": .., "value": ..}]` as a map; `what` names the field in errors.
fn key_values(value: Option<&Value>, what: &str) -> Result<BTreeMap<String, Value>, ApiError> {
    let mut out = BTreeMap::new();
    let Some(value) = value else { return Ok(out) };
    let items = value.as_array().ok_or_else(|| bad(format!("'{what}' must be an array of {{key, value}}")))?;
    for item in items {
        let key = item["key"].as_str().ok_or_else(|| bad(format!("every entry of '{what}' needs a string 'key'")))?;
        out.insert(key.to_string(), item.get("value").cloned().unwrap_or(Value::Null));
    }
    Ok(out)
}

fn to_key_values(map: &BTreeMap<String, Value>) -> Value {
    Value::Array(map.iter().map(|(k, v)| json!({"key": k, "value": v})).collect())
}

/// A component of a sequence, `/ns/name`, `ns/name` or `name`, as a name in `ns`.
fn component(ns: &str, text: &str) -> Result<String, ApiError> {
    let parts: Vec<&str> = text.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        [name] => Ok(name.to_string()),
        [owner, name] if *owner == ns || *owner == "_" => Ok(name.to_string()),
        [owner, _] => {
            Err(error(StatusCode::FORBIDDEN, format!("component '{text}' is in namespace '{owner}', not '{ns}'")))
        }
        _ => Err(bad(format!("component '{text}' must be NAME or /NAMESPACE/NAME"))),
    }
}

/// Validates a `PUT` body and builds the stored definition (OpenWhisk's action shape).
fn definition(ns: &str, name: &str, body: &Value) -> Result<Value, ApiError> {
    let obj = body.as_object().ok_or_else(|| bad("the request content must be a JSON object"))?;
    for field in obj.keys() {
        if !["exec", "parameters", "limits", "annotations", "version", "publish", "name", "namespace"]
            .contains(&field.as_str())
        {
            return Err(bad(format!("unknown field '{field}'")));
        }
    }
    let exec = obj.get("exec").and_then(Value::as_object).ok_or_else(|| bad("'exec' is required: {kind, code}"))?;
    let kind = exec.get("kind").and_then(Value::as_str).ok_or_else(|| bad("'exec.kind' is required"))?;
    let exec = if kind == "sequence" {
        let components = exec
            .get("components")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("a sequence needs 'exec.components', an array of action names"))?;
        let names = components
            .iter()
            .map(|c| {
                c.as_str().ok_or_else(|| bad("sequence components must be strings")).and_then(|c| component(ns, c))
            })
            .collect::<Result<Vec<_>, _>>()?;
        json!({"kind": "sequence", "components": names.iter().map(|n| format!("/{ns}/{n}")).collect::<Vec<_>>()})
    } else {
        let parsed = Kind::parse(kind).map_err(bad)?;
        if parsed == Kind::Native {
            return Err(bad("kind 'native' cannot be deployed over the API"));
        }
        let binary = exec.get("binary") == Some(&Value::Bool(true));
        let code = exec.get("code").and_then(Value::as_str).ok_or_else(|| bad("'exec.code' is required"))?;
        let main = exec.get("main").and_then(Value::as_str).unwrap_or("main");
        if parsed == Kind::Wasm {
            wasm_bytes(code)?;
            json!({"kind": parsed.as_openwhisk(), "code": code, "main": main, "binary": true})
        } else if binary {
            return Err(bad("binary (zip) actions are not supported yet; send the code as text"));
        } else {
            json!({"kind": parsed.as_openwhisk(), "code": code, "main": main, "binary": false})
        }
    };
    let defaults = Limits::default();
    let limits = obj.get("limits").cloned().unwrap_or(json!({}));
    let limits_obj = limits.as_object().ok_or_else(|| bad("'limits' must be an object"))?;
    for field in limits_obj.keys() {
        if !["timeout", "memory", "logs", "concurrency"].contains(&field.as_str()) {
            return Err(bad(format!("unknown limit '{field}'")));
        }
    }
    let number = |k: &str, default: u64| -> Result<u64, ApiError> {
        match limits_obj.get(k) {
            None => Ok(default),
            Some(v) => v.as_u64().ok_or_else(|| bad(format!("limit '{k}' must be a positive integer"))),
        }
    };
    let limits = json!({
        "timeout": number("timeout", defaults.timeout_ms)?,
        "memory": number("memory", defaults.memory_mb)?,
        "logs": number("logs", defaults.logs_bytes_max / (1024 * 1024))?,
        "concurrency": 1,
    });
    let parameters = key_values(obj.get("parameters"), "parameters")?;
    let annotations = key_values(obj.get("annotations"), "annotations")?;
    let mut annotations_out = annotations.clone();
    annotations_out.insert("exec".into(), exec["kind"].clone());
    Ok(json!({
        "namespace": ns,
        "name": name,
        "version": "0.0.1",
        "publish": false,
        "exec": exec,
        "limits": limits,
        "parameters": to_key_values(&parameters),
        "annotations": to_key_values(&annotations_out),
        "updated": epoch_ms(),
    }))
}

/// A wasm action's module, from the base64 of `exec.code`.
fn wasm_bytes(code: &str) -> Result<Vec<u8>, ApiError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(code.trim())
        .map_err(|e| bad(format!("a wasm action's 'exec.code' must be the module in base64: {e}")))
}

/// Deploys a stored definition on the platform.
async fn deploy(platform: &platform::Platform, ns: &str, def: &Value) -> Result<(), ApiError> {
    let name = def["name"].as_str().unwrap_or_default();
    let exec = &def["exec"];
    if exec["kind"] == "sequence" {
        let components: Vec<String> = exec["components"]
            .as_array()
            .map(|c| {
                c.iter().filter_map(Value::as_str).map(|s| s.rsplit('/').next().unwrap_or(s).to_string()).collect()
            })
            .unwrap_or_default();
        let app = Application::sequence(name, &components, &|f| {
            platform.has_function(ns, f) || platform.app(ns, f).is_some()
        })
        .map_err(|e| bad(e.to_string()))?;
        if components.iter().any(|c| platform.app(ns, c).is_some()) {
            return Err(bad("a sequence of sequences is not supported yet"));
        }
        platform.remove(ns, name);
        platform.deploy_app(ns, app);
        return Ok(());
    }
    let kind = Kind::parse(exec["kind"].as_str().unwrap_or_default()).map_err(bad)?;
    let (code, main) = (exec["code"].as_str().unwrap_or_default(), exec["main"].as_str().unwrap_or("main").to_string());
    let code = match kind {
        Kind::Wasm => Code::Wasm { bytes: wasm_bytes(code)?, main },
        _ => Code::Source { text: code.to_string(), main },
    };
    let limits = Limits {
        timeout_ms: def["limits"]["timeout"].as_u64().unwrap_or(60_000),
        memory_mb: def["limits"]["memory"].as_u64().unwrap_or(256),
        logs_bytes_max: def["limits"]["logs"].as_u64().unwrap_or(10) * 1024 * 1024,
        ..Limits::default()
    };
    let annotations = key_values(def.get("annotations"), "annotations")?;
    let annotations =
        Annotations::from_map(annotations.into_iter().filter(|(k, _)| k != "exec").collect()).map_err(bad)?;
    let mut spec = FunctionSpec::new(name, kind, code, limits, annotations).map_err(|e| bad(e.to_string()))?;
    let parameters: Map<String, Value> = key_values(def.get("parameters"), "parameters")?.into_iter().collect();
    spec.parameters = parameters;
    platform.remove(ns, name);
    platform.deploy_function(ns, spec).await.map_err(|e| bad(e.to_string()))
}

/// Validates a `PUT` body and deploys it: the definition to store.
pub(crate) async fn build(
    platform: &platform::Platform,
    ns: &str,
    name: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    let def = definition(ns, name, body)?;
    deploy(platform, ns, &def).await?;
    Ok(def)
}

/// Redeploys every stored action at start: functions first, then sequences (which need them).
pub(crate) async fn restore(platform: &platform::Platform, store: &dyn Store) {
    let all = crate::resources::Resource::Action.all(store).await;
    let (sequences, functions): (Vec<_>, Vec<_>) = all.into_iter().partition(|d| d["exec"]["kind"] == "sequence");
    for def in functions.into_iter().chain(sequences) {
        let ns = def["namespace"].as_str().unwrap_or_default().to_string();
        if let Err(ApiError(_, message)) = deploy(platform, &ns, &def).await {
            eprintln!("specfaas: cannot restore action /{ns}/{}: {message}", def["name"].as_str().unwrap_or("?"));
        }
    }
}
