//! `specfaas.toml`: the project manifest, which lists a directory's functions and applications.
//!
//! ```toml
//! [project]
//! seed = "data/seed.json"          # optional: store keys written at deploy time if absent
//!
//! [functions.login]
//! kind = "python:3"                # python:3 | nodejs:20 | nodejs:default | wasm (code: a .wasm file)
//! code = "functions/login.py"
//! main = "main"                    # optional entry point
//! limits = { timeout_ms = 5000 }   # optional; OpenWhisk defaults otherwise
//! annotations = { pure = true }    # optional: pure, non-speculative, effects = "strict", anything else
//! parameters = { threshold = 25 }  # optional bound parameters
//!
//! [apps.smarthome]
//! workflow = "smarthome.asl.yaml"  # or: sequence = ["a", "b"], or: function = "frontend"
//! speculation = false              # optional: run this application non-speculatively
//! ```
//!
//! This module only parses text; the platform reads the files it names.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::Error;
use crate::function::Limits;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(default)]
    pub project: Project,
    #[serde(default)]
    pub functions: BTreeMap<String, FunctionEntry>,
    #[serde(default)]
    pub apps: BTreeMap<String, AppEntry>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Project {
    pub name: Option<String>,
    /// A JSON object file of `key: value` pairs, written at deploy time to keys that do not exist yet.
    pub seed: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FunctionEntry {
    pub kind: String,
    pub code: String,
    #[serde(default = "default_main")]
    pub main: String,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub annotations: BTreeMap<String, Value>,
    #[serde(default)]
    pub parameters: serde_json::Map<String, Value>,
}

fn default_main() -> String {
    "main".into()
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AppEntry {
    pub workflow: Option<String>,
    pub sequence: Option<Vec<String>>,
    pub function: Option<String>,
    /// `false` runs the application non-speculatively; speculation is on by default.
    pub speculation: Option<bool>,
}

impl Manifest {
    pub fn parse(file: &str, text: &str) -> Result<Manifest, Error> {
        let manifest: Manifest =
            toml::from_str(text).map_err(|e| Error::Manifest { file: file.into(), message: e.to_string() })?;
        for (name, app) in &manifest.apps {
            let forms = [app.workflow.is_some(), app.sequence.is_some(), app.function.is_some()];
            if forms.iter().filter(|x| **x).count() != 1 {
                return Err(Error::Manifest {
                    file: file.into(),
                    message: format!("app \"{name}\" needs exactly one of workflow, sequence or function"),
                });
            }
        }
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_unknown_fields() {
        let m = Manifest::parse(
            "specfaas.toml",
            r#"
            [functions.a]
            kind = "python:3"
            code = "a.py"
            limits = { timeout_ms = 5 }
            [apps.x]
            sequence = ["a"]
            "#,
        )
        .unwrap();
        assert_eq!(m.functions["a"].limits.timeout_ms, 5);
        assert_eq!(m.functions["a"].limits.memory_mb, 256);
        let err = Manifest::parse("specfaas.toml", "[functions.a]\nkind='x'\ncode='y'\ncolor=1").unwrap_err();
        assert!(err.to_string().contains("unknown field `color`"), "{err}");
        let err = Manifest::parse("m.toml", "[apps.x]\nsequence=['a']\nfunction='b'").unwrap_err();
        assert!(err.to_string().contains("exactly one of"), "{err}");
    }
}
