//! Loading a project directory: `specfaas.toml`, the code files it names, ASL files and seed data. Every error
//! names the file (and the function, application or state) and what is wrong.

use std::path::{Path, PathBuf};

use model::manifest::{AppEntry, Manifest};
use model::{Annotations, Application, Code, FunctionSpec, Kind, asl};
use serde_json::{Map, Value};

use crate::Error;

/// What [`crate::Platform::deploy_project`] deployed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    pub functions: Vec<String>,
    pub apps: Vec<String>,
    /// Seed keys written (seeds never overwrite existing keys).
    pub seeded: usize,
}

/// A project read from disk, functions validated; applications are validated against the deployed functions.
pub struct Project {
    pub functions: Vec<FunctionSpec>,
    pub apps: Apps,
    pub seed: Option<Map<String, Value>>,
}

/// Application definitions with their files read, waiting to be checked against the deployed functions.
pub struct Apps {
    entries: Vec<AppSource>,
}

/// One application: its name, its manifest entry, and for a workflow the ASL file's path and text.
struct AppSource {
    name: String,
    entry: AppEntry,
    workflow: Option<(String, String)>,
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::File { path: path.display().to_string(), message: format!("cannot read: {e}") })
}

impl Project {
    pub fn read(dir: &Path) -> Result<Project, Error> {
        let manifest_path = dir.join("specfaas.toml");
        let manifest = Manifest::parse(&manifest_path.display().to_string(), &read(&manifest_path)?)?;
        let resolve = |p: &str| -> PathBuf { dir.join(p) };
        let mut functions = Vec::new();
        for (name, f) in &manifest.functions {
            let fail = |message: String| Error::File { path: manifest_path.display().to_string(), message };
            let kind = Kind::parse(&f.kind).map_err(|m| fail(format!("function \"{name}\": {m}")))?;
            if kind == Kind::Native {
                return Err(fail(format!(
                    "function \"{name}\": native functions are registered in code, not in a manifest"
                )));
            }
            let annotations = Annotations::from_map(f.annotations.clone().into_iter().collect())
                .map_err(|m| fail(format!("function \"{name}\": {m}")))?;
            let code = if kind == Kind::Wasm {
                let path = resolve(&f.code);
                let bytes = std::fs::read(&path).map_err(|e| Error::File {
                    path: path.display().to_string(),
                    message: format!("cannot read the module: {e} (build it first: see the project's README)"),
                })?;
                Code::Wasm { bytes, main: f.main.clone() }
            } else {
                Code::Source { text: read(&resolve(&f.code))?, main: f.main.clone() }
            };
            let mut spec = FunctionSpec::new(name, kind, code, f.limits, annotations)?;
            spec.parameters = f.parameters.clone();
            functions.push(spec);
        }
        let mut entries = Vec::new();
        for (name, app) in &manifest.apps {
            let file = match &app.workflow {
                Some(path) => {
                    let full = resolve(path);
                    Some((full.display().to_string(), read(&full)?))
                }
                None => None,
            };
            entries.push(AppSource { name: name.clone(), entry: app.clone(), workflow: file });
        }
        let seed = match &manifest.project.seed {
            Some(path) => {
                let full = resolve(path);
                let text = read(&full)?;
                let value: Value = serde_json::from_str(&text).map_err(|e| Error::File {
                    path: full.display().to_string(),
                    message: format!("invalid JSON: {e}"),
                })?;
                match value {
                    Value::Object(map) => Some(map),
                    _ => {
                        return Err(Error::File {
                            path: full.display().to_string(),
                            message: "seed data must be a JSON object of key: value pairs".into(),
                        });
                    }
                }
            }
            None => None,
        };
        Ok(Project { functions, apps: Apps { entries }, seed })
    }
}

impl Apps {
    /// Builds and validates every application, workflows within `limits`; `is_function` says which functions are
    /// deployed.
    pub fn build(
        self,
        is_function: &dyn Fn(&str) -> bool,
        limits: &model::asl::Limits,
    ) -> Result<Vec<Application>, Error> {
        let mut out = Vec::new();
        for AppSource { name, entry, workflow } in self.entries {
            let app = if let Some((path, text)) = workflow {
                Application::workflow(&name, asl::parse_within(&path, &text, is_function, limits)?)?
            } else if let Some(seq) = &entry.sequence {
                Application::sequence(&name, seq, is_function)?
            } else if let Some(f) = &entry.function {
                Application::function(&name, f, is_function)?
            } else {
                unreachable!("the manifest parser checks that each app has exactly one form")
            };
            out.push(Application { speculation: entry.speculation.unwrap_or(true), ..app });
        }
        Ok(out)
    }
}
