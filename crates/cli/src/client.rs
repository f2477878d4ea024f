//! The `specfaas` client commands against a server, in the style of `wsk`: `action`, `activation`, `workflow`
//! and `property`. The API host and key come from `--apihost` / `--auth`, else `SPECFAAS_APIHOST` /
//! `SPECFAAS_AUTH`, else `~/.specfaas/client.toml` (written by `specfaas property set`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine as _;
use serde_json::{Value, json};

/// Where the server is and which key to use.
pub struct Target {
    pub apihost: String,
    pub auth: String,
}

fn properties_file() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".specfaas/client.toml")
}

fn stored() -> toml::Table {
    std::fs::read_to_string(properties_file()).ok().and_then(|t| t.parse().ok()).unwrap_or_default()
}

impl Target {
    pub fn resolve(apihost: Option<String>, auth: Option<String>) -> anyhow::Result<Target> {
        let props = stored();
        let pick = |flag: Option<String>, var: &str, key: &str| {
            flag.or_else(|| std::env::var(var).ok())
                .or_else(|| props.get(key).and_then(|v| v.as_str()).map(str::to_string))
        };
        let apihost = pick(apihost, "SPECFAAS_APIHOST", "apihost").context(
            "no API host: pass --apihost, set SPECFAAS_APIHOST, or run `specfaas property set --apihost URL`",
        )?;
        let auth = pick(auth, "SPECFAAS_AUTH", "auth")
            .context("no key: pass --auth, set SPECFAAS_AUTH, or run `specfaas property set --auth UUID:KEY`")?;
        let apihost = if apihost.starts_with("http") { apihost } else { format!("http://{apihost}") };
        Ok(Target { apihost: apihost.trim_end_matches('/').to_string(), auth })
    }

    /// One request; an HTTP error becomes an error with the server's message. Returns (status, body).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<(u16, Value)> {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(&self.auth));
        let url = format!("{}/api/v1/namespaces/_{path}", self.apihost);
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", auth)
            .header("content-type", "application/json")
            .body(body.map(|b| b.to_string()).unwrap_or_default().into_bytes())?;
        let mut response = agent.run(request).with_context(|| format!("cannot reach {}", self.apihost))?;
        let status = response.status().as_u16();
        let text = response.body_mut().with_config().limit(64 << 20).read_to_string()?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status >= 400 && status != 502 {
            bail!("{} ({status})", body["error"].as_str().unwrap_or("request failed"));
        }
        Ok((status, body))
    }
}

pub fn property_set(apihost: Option<String>, auth: Option<String>) -> anyhow::Result<()> {
    let mut props = stored();
    if let Some(a) = apihost {
        props.insert("apihost".into(), toml::Value::String(a));
    }
    if let Some(a) = auth {
        props.insert("auth".into(), toml::Value::String(a));
    }
    let path = properties_file();
    std::fs::create_dir_all(path.parent().expect("a file in a folder"))?;
    std::fs::write(&path, toml::to_string(&props)?).with_context(|| format!("cannot write {}", path.display()))?;
    println!("ok: saved to {}", path.display());
    Ok(())
}

/// `k=v` parameters; a value that parses as JSON is JSON, otherwise a string.
pub fn params(pairs: &[String]) -> anyhow::Result<Value> {
    let mut out = serde_json::Map::new();
    for pair in pairs {
        let (k, v) = pair.split_once('=').with_context(|| format!("parameter '{pair}' must be KEY=VALUE"))?;
        out.insert(k.to_string(), serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string())));
    }
    Ok(Value::Object(out))
}

/// The `PUT` body of an action: code from `file` (kind from `--kind` or the extension), or a sequence.
pub fn action_body(
    file: Option<&Path>,
    kind: Option<String>,
    main: Option<String>,
    sequence: Option<String>,
    parameters: &Value,
) -> anyhow::Result<Value> {
    let parameters: Vec<Value> = parameters
        .as_object()
        .map(|m| m.iter().map(|(k, v)| json!({"key": k, "value": v})).collect())
        .unwrap_or_default();
    let exec = match (sequence, file) {
        (Some(components), _) => {
            json!({"kind": "sequence", "components": components.split(',').map(str::trim).collect::<Vec<_>>()})
        }
        (None, Some(file)) => {
            let kind = match kind {
                Some(k) => k,
                None => match file.extension().and_then(|e| e.to_str()) {
                    Some("py") => "python:3".into(),
                    Some("js") | Some("mjs") => "nodejs:20".into(),
                    Some("wasm") => "wasm".into(),
                    _ => bail!("cannot tell the kind of {}: pass --kind", file.display()),
                },
            };
            let mut exec = if kind.starts_with("wasm") {
                // A module is binary: it travels in base64, as OpenWhisk sends binary actions.
                use base64::Engine as _;
                let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
                json!({"kind": kind, "code": base64::engine::general_purpose::STANDARD.encode(bytes), "binary": true})
            } else {
                let code = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
                json!({"kind": kind, "code": code})
            };
            if let Some(main) = main {
                exec["main"] = json!(main);
            }
            exec
        }
        (None, None) => bail!("give the action's code file, or --sequence a,b,c"),
    };
    Ok(json!({"exec": exec, "parameters": parameters}))
}

/// The `PUT` body of a workflow: the ASL file's text (JSON or YAML).
pub fn workflow_body(file: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    Ok(json!({ "definition": text }))
}

pub fn print(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).expect("JSON prints"));
}
