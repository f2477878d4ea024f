//! The specfaas data model: everything a user deploys, as validated values. No I/O happens here.
//!
//! - [`function`]: a function (OpenWhisk: action) — kind, code, version hash, limits and annotations.
//! - [`path`]: ASL reference paths (`$.a.b[0]`) and `Parameters` templates, the data-flow primitives.
//! - [`choice`]: `Choice` rules (all comparison operators, `And`/`Or`/`Not`) and their evaluation.
//! - [`workflow`]: the validated workflow graph that the engine walks, and the data flow of one state.
//! - [`call`]: the calls running code makes to the platform, and their replies: one vocabulary for runtimes,
//!   the engine and the platform.
//! - [`asl`]: the Amazon States Language parser and validator (JSON or YAML) that produces a [`workflow::Graph`].
//! - [`app`]: applications — OpenWhisk sequences, ASL workflows and implicit chains — lowered to one [`app::Program`].
//! - [`manifest`]: the `specfaas.toml` project manifest.
//! - [`json`]: canonical JSON encoding, used for code versions and, later, memo keys.
//!
//! **Architecture invariant:** this crate does no I/O. Callers read files and pass text in.

pub mod app;
pub mod asl;
pub mod call;
pub mod choice;
pub mod function;
pub mod intrinsics;
pub mod json;
pub mod manifest;
pub mod path;
pub mod workflow;

pub use app::{Application, Program};
pub use function::{Annotations, Code, FunctionSpec, Kind, Limits};
pub use workflow::Graph;

/// One error type for the whole model crate. Every variant names *where* the problem is.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    /// An ASL document is malformed or fails validation.
    #[error("{file}: {}{message}", state.as_ref().map(|s| format!("state \"{s}\": ")).unwrap_or_default())]
    Asl { file: String, state: Option<String>, message: String },
    /// A manifest is malformed.
    #[error("{file}: {message}")]
    Manifest { file: String, message: String },
    /// A function definition is invalid.
    #[error("function \"{function}\": {message}")]
    Function { function: String, message: String },
    /// An application definition is invalid.
    #[error("application \"{app}\": {message}")]
    App { app: String, message: String },
    /// A reference path or template is invalid.
    #[error("invalid path \"{path}\": {message}")]
    Path { path: String, message: String },
}

/// A name of a function or application: OpenWhisk's rules, 1..=256 characters of `[A-Za-z0-9_@.-]`, not
/// starting with `@`, `.` or `-`. Names never contain `/`, so they cannot address another namespace.
pub fn check_name(name: &str) -> Result<(), String> {
    const NAME_LEN_MAX: usize = 256;
    if name.is_empty() || name.len() > NAME_LEN_MAX {
        return Err(format!("name must be 1 to {NAME_LEN_MAX} characters long"));
    }
    let first = name.chars().next().unwrap_or(' ');
    if !(first.is_ascii_alphanumeric() || first == '_') {
        return Err(format!("name \"{name}\" must start with a letter, a digit or '_'"));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "_@.-".contains(*c))) {
        return Err(format!("name \"{name}\" contains '{bad}'; allowed are letters, digits and _ @ . -"));
    }
    Ok(())
}
