//! Functions (OpenWhisk calls them actions): what code runs, in which runtime, under which limits.
//!
//! A function's **version** is the SHA-256 of its kind, entry point and code. Two deployments of the same code get
//! the same version; any change gives a new one, so tables keyed by version (memoization, later) never mix code.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::Error;

/// The runtime a function needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// CPython 3, OpenWhisk style: `def main(args): return {...}`.
    Python,
    /// Node.js, OpenWhisk style: `function main(params)`, async allowed, or `exports.main`.
    Node,
    /// A Rust closure registered in-process.
    Native,
    /// A WebAssembly module (WASI preview 1) run on wasmtime, sandboxed: it can only do what the host gives it.
    Wasm,
}

impl Kind {
    /// Parses the OpenWhisk-style kind names users write: `python:3`, `python`, `nodejs:20`, `nodejs:default`,
    /// `nodejs`, `native`, `wasm`, `wasm:wasip1`.
    pub fn parse(text: &str) -> Result<Kind, String> {
        match text {
            "python" | "python:3" | "python:3.11" | "python3" => Ok(Kind::Python),
            "nodejs" | "nodejs:20" | "nodejs:default" | "node" => Ok(Kind::Node),
            "native" => Ok(Kind::Native),
            "wasm" | "wasm:wasip1" => Ok(Kind::Wasm),
            other => Err(format!(
                "unknown kind \"{other}\"; expected one of python:3, nodejs:20, nodejs:default, native, wasm"
            )),
        }
    }

    /// The OpenWhisk name of the kind, as shown in records.
    pub fn as_openwhisk(self) -> &'static str {
        match self {
            Kind::Python => "python:3",
            Kind::Node => "nodejs:20",
            Kind::Native => "native",
            Kind::Wasm => "wasm:wasip1",
        }
    }
}

/// Per-function limits. Defaults are OpenWhisk's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock time one activation may run before it is killed.
    pub timeout_ms: u64,
    /// Address-space (Python) or heap (Node.js) limit of a process function.
    pub memory_mb: u64,
    /// Bytes of stdout+stderr kept per activation; the rest is dropped with a warning line.
    pub logs_bytes_max: u64,
    /// Largest accepted input and result, as JSON bytes.
    pub payload_bytes_max: u64,
    /// Size of a handler's private scratch directory (`/tmp`, memory-backed: it counts against `memory_mb`).
    pub tmp_mb: u64,
    /// Processes and threads a handler may have at once.
    pub processes: u64,
}

impl Limits {
    pub const TIMEOUT_MS_MIN: u64 = 1;
    /// OpenWhisk's maximum: five minutes.
    pub const TIMEOUT_MS_MAX: u64 = 5 * 60 * 1000;
    pub const MEMORY_MB_MIN: u64 = 128;
    pub const MEMORY_MB_MAX: u64 = 2048;
    /// OpenWhisk's maximum, and the default: every activation's logs are kept in its record, so a larger limit
    /// would let one activation grow the store and the server by as much.
    pub const LOGS_BYTES_MAX: u64 = 10 * 1024 * 1024;
    /// AWS Lambda's default `/tmp` size.
    pub const TMP_MB_DEFAULT: u64 = 512;
    pub const TMP_MB_MAX: u64 = 1024;
    pub const PROCESSES_DEFAULT: u64 = 64;
    pub const PROCESSES_MAX: u64 = 1024;

    pub fn validate(&self) -> Result<(), String> {
        if !(Self::TIMEOUT_MS_MIN..=Self::TIMEOUT_MS_MAX).contains(&self.timeout_ms) {
            return Err(format!(
                "timeout_ms must be {}..={}, got {}",
                Self::TIMEOUT_MS_MIN,
                Self::TIMEOUT_MS_MAX,
                self.timeout_ms
            ));
        }
        if self.logs_bytes_max > Self::LOGS_BYTES_MAX {
            return Err(format!(
                "logs_bytes_max must be at most {}, got {}",
                Self::LOGS_BYTES_MAX,
                self.logs_bytes_max
            ));
        }
        if !(Self::MEMORY_MB_MIN..=Self::MEMORY_MB_MAX).contains(&self.memory_mb) {
            return Err(format!(
                "memory_mb must be {}..={}, got {}",
                Self::MEMORY_MB_MIN,
                Self::MEMORY_MB_MAX,
                self.memory_mb
            ));
        }
        if !(1..=Self::TMP_MB_MAX).contains(&self.tmp_mb) {
            return Err(format!("tmp_mb must be 1..={}, got {}", Self::TMP_MB_MAX, self.tmp_mb));
        }
        // A Node.js process alone runs about a dozen threads.
        if !(16..=Self::PROCESSES_MAX).contains(&self.processes) {
            return Err(format!("processes must be 16..={}, got {}", Self::PROCESSES_MAX, self.processes));
        }
        if self.payload_bytes_max == 0 {
            return Err("payload_bytes_max must be positive".into());
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout_ms: 60_000,
            memory_mb: 256,
            logs_bytes_max: Self::LOGS_BYTES_MAX,
            payload_bytes_max: 1024 * 1024,
            tmp_mb: Self::TMP_MB_DEFAULT,
            processes: Self::PROCESSES_DEFAULT,
        }
    }
}

/// Annotations the platform understands, carried from deployment on. Other annotations are kept verbatim.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Annotations {
    /// No storage reads, writes or effects: the output depends on the input only.
    pub pure: bool,
    /// Start only when every predecessor has committed.
    pub non_speculative: bool,
    /// `effects = "strict"`: hold even safe HTTP requests (GET, HEAD, OPTIONS) while the run is speculative.
    pub strict_effects: bool,
    /// Anything else the user attached.
    pub other: BTreeMap<String, Value>,
}

impl Annotations {
    /// Builds annotations from an OpenWhisk-style key/value map (`pure`, `non-speculative` or `non_speculative`).
    pub fn from_map(map: BTreeMap<String, Value>) -> Result<Annotations, String> {
        let mut out = Annotations::default();
        for (key, value) in map {
            match key.as_str() {
                "pure" => out.pure = value.as_bool().ok_or("annotation \"pure\" must be true or false")?,
                "non-speculative" | "non_speculative" => {
                    out.non_speculative =
                        value.as_bool().ok_or("annotation \"non-speculative\" must be true or false")?
                }
                "effects" => {
                    out.strict_effects = match value.as_str() {
                        Some("strict") => true,
                        Some("default") => false,
                        _ => return Err("annotation \"effects\" must be \"strict\" or \"default\"".into()),
                    }
                }
                _ => {
                    out.other.insert(key, value);
                }
            }
        }
        Ok(out)
    }
}

/// What runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Code {
    /// Source text of a Python or Node.js function and the name of its entry point.
    Source { text: String, main: String },
    /// A native function, looked up by the function's name in the runtime's registry.
    Native,
    /// A WebAssembly module's bytes and the name of its entry export (`_start` serves when that is absent).
    Wasm { bytes: Vec<u8>, main: String },
}

/// A deployable function.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionSpec {
    pub name: String,
    pub kind: Kind,
    pub code: Code,
    /// Hex SHA-256 prefix of kind, entry point and code.
    pub version: String,
    pub limits: Limits,
    pub annotations: Annotations,
    /// Parameters bound at deploy time; invocation parameters override them (OpenWhisk semantics).
    pub parameters: serde_json::Map<String, Value>,
}

impl FunctionSpec {
    /// Builds and validates a function; computes its version from the code.
    pub fn new(name: &str, kind: Kind, code: Code, limits: Limits, annotations: Annotations) -> Result<Self, Error> {
        let fail = |message: String| Error::Function { function: name.to_string(), message };
        crate::check_name(name).map_err(fail)?;
        limits.validate().map_err(fail)?;
        match (&code, kind) {
            (Code::Native, Kind::Native) => {}
            (Code::Source { text, main }, Kind::Python | Kind::Node) => {
                if text.trim().is_empty() {
                    return Err(fail("code is empty".into()));
                }
                if main.is_empty() || !main.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(fail(format!("entry point \"{main}\" is not a valid identifier")));
                }
            }
            (Code::Wasm { bytes, main }, Kind::Wasm) => {
                if !bytes.starts_with(b"\0asm") {
                    return Err(fail("the code is not a WebAssembly module (no \\0asm header)".into()));
                }
                if main.is_empty() {
                    return Err(fail("the entry point is empty".into()));
                }
            }
            _ => return Err(fail(format!("kind {:?} does not match its code", kind))),
        }
        let mut hash = Sha256::new();
        hash.update(kind.as_openwhisk().as_bytes());
        hash.update([0]);
        match &code {
            Code::Source { text, main } => {
                hash.update(main.as_bytes());
                hash.update([0]);
                hash.update(text.as_bytes());
            }
            Code::Native => hash.update(name.as_bytes()),
            Code::Wasm { bytes, main } => {
                hash.update(main.as_bytes());
                hash.update([0]);
                hash.update(bytes);
            }
        }
        let version = hex::encode(&hash.finalize()[..8]);
        Ok(FunctionSpec {
            name: name.to_string(),
            kind,
            code,
            version,
            limits,
            annotations,
            parameters: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn py(text: &str) -> FunctionSpec {
        let code = Code::Source { text: text.into(), main: "main".into() };
        FunctionSpec::new("f", Kind::Python, code, Limits::default(), Annotations::default()).unwrap()
    }

    #[test]
    fn version_follows_code() {
        assert_eq!(py("def main(a): return a").version, py("def main(a): return a").version);
        assert_ne!(py("def main(a): return a").version, py("def main(a): return {}").version);
    }

    #[test]
    fn bad_names_and_limits_are_named() {
        let code = Code::Source { text: "x".into(), main: "main".into() };
        let err = FunctionSpec::new("a/b", Kind::Python, code.clone(), Limits::default(), Default::default());
        assert!(err.unwrap_err().to_string().contains("contains '/'"));
        let limits = Limits { timeout_ms: 0, ..Limits::default() };
        let err = FunctionSpec::new("a", Kind::Python, code, limits, Default::default()).unwrap_err();
        assert!(err.to_string().contains("timeout_ms"), "{err}");
        let code = Code::Source { text: "x".into(), main: "main".into() };
        let limits = Limits { logs_bytes_max: Limits::LOGS_BYTES_MAX + 1, ..Limits::default() };
        let err = FunctionSpec::new("a", Kind::Python, code, limits, Default::default()).unwrap_err();
        assert!(err.to_string().contains("logs_bytes_max"), "{err}");
    }

    #[test]
    fn kinds_parse_openwhisk_names() {
        assert_eq!(Kind::parse("python:3"), Ok(Kind::Python));
        assert_eq!(Kind::parse("nodejs:default"), Ok(Kind::Node));
        assert!(Kind::parse("java:8").unwrap_err().contains("java:8"));
    }
}
