//! The API's documents, typed: what a request may carry and what a response or the store holds, in Apache
//! OpenWhisk's JSON shapes. Actions ([`ActionPut`] in, [`Action`] stored and returned), their limits
//! ([`ActionLimits`], defaults and maximums taken from [`model::Limits`]), workflows, activation listings, the query
//! strings of each route. (The error body is [`crate::error::ErrorBody`].)
//!
//! Requests are checked here for shape (serde) and range ([`ActionLimits::validate`]); whether code loads or a
//! workflow is valid is the platform's and the model's to say.

use std::collections::BTreeMap;

use model::Limits;
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

const MIB: u64 = 1024 * 1024;

/// An OpenWhisk `{"key": .., "value": ..}` entry of `parameters` and `annotations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    #[serde(default)]
    pub value: Value,
}

/// Entries as a map (a later key wins, as in OpenWhisk).
pub fn to_map(entries: &[KeyValue]) -> BTreeMap<String, Value> {
    entries.iter().map(|e| (e.key.clone(), e.value.clone())).collect()
}

pub fn from_map(map: &BTreeMap<String, Value>) -> Vec<KeyValue> {
    map.iter().map(|(key, value)| KeyValue { key: key.clone(), value: value.clone() }).collect()
}

/// Fields a document does not know, collected so the error can name the first.
type Unknown = BTreeMap<String, IgnoredAny>;

/// The body of `PUT actions/{name}`. `name`, `namespace`, `version` and `publish` are accepted (clients send them)
/// and ignored: the path names the action, and the platform versions it by its code.
#[derive(Debug, Deserialize)]
pub struct ActionPut {
    pub exec: Option<ExecPut>,
    pub parameters: Option<Vec<KeyValue>>,
    pub annotations: Option<Vec<KeyValue>>,
    pub limits: Option<LimitsPut>,
    #[serde(rename = "name")]
    _name: Option<IgnoredAny>,
    #[serde(rename = "namespace")]
    _namespace: Option<IgnoredAny>,
    #[serde(rename = "version")]
    _version: Option<IgnoredAny>,
    #[serde(rename = "publish")]
    _publish: Option<IgnoredAny>,
    #[serde(flatten)]
    unknown: Unknown,
}

impl ActionPut {
    /// Parses and shape-checks a body; errors name the offending field.
    pub fn parse(body: &[u8]) -> Result<ActionPut> {
        let de = &mut serde_json::Deserializer::from_slice(body);
        let put: ActionPut = serde_path_to_error::deserialize(de).map_err(Error::malformed)?;
        if let Some(field) = put.unknown.keys().next() {
            return Err(Error::Invalid(format!("unknown field '{field}'")));
        }
        if let Some(limit) = put.limits.as_ref().and_then(|l| l.unknown.keys().next()) {
            return Err(Error::Invalid(format!("unknown limit '{limit}'")));
        }
        Ok(put)
    }
}

/// `exec` of a `PUT`: code (`kind`, `code`, `main`, `binary`) or a sequence (`kind: "sequence"`, `components`).
/// Other fields OpenWhisk clients send (`image`, say) are ignored.
#[derive(Debug, Deserialize)]
pub struct ExecPut {
    pub kind: Option<String>,
    pub code: Option<String>,
    pub main: Option<String>,
    pub binary: Option<bool>,
    pub components: Option<Vec<String>>,
}

/// `limits` of a `PUT`: each one left out takes its default.
#[derive(Debug, Default, Deserialize)]
pub struct LimitsPut {
    pub timeout: Option<u64>,
    pub memory: Option<u64>,
    pub logs: Option<u64>,
    pub concurrency: Option<u64>,
    /// specfaas: megabytes of private scratch space (`/tmp`).
    pub tmp: Option<u64>,
    /// specfaas: processes and threads a handler may have at once.
    pub processes: Option<u64>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// What runs: code, or a sequence of other actions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Exec {
    Sequence {
        kind: SequenceKind,
        /// Fully qualified: `/NAMESPACE/NAME`.
        components: Vec<String>,
    },
    Code {
        /// The OpenWhisk name of the kind (`python:3`, `nodejs:20`, `wasm:wasip1`).
        kind: String,
        /// Source text, or a wasm module in base64.
        code: String,
        main: String,
        /// Whether `code` is base64 (wasm modules are).
        binary: bool,
    },
}

/// The `kind` of a sequence's `exec`, which is always `"sequence"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SequenceKind {
    #[serde(rename = "sequence")]
    Sequence,
}

/// `exec` as listings show it: the kind only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecSummary {
    pub kind: String,
    pub binary: bool,
}

impl Exec {
    pub fn kind(&self) -> &str {
        match self {
            Exec::Sequence { .. } => "sequence",
            Exec::Code { kind, .. } => kind,
        }
    }

    pub fn summary(&self) -> ExecSummary {
        ExecSummary { kind: self.kind().to_string(), binary: false }
    }
}

/// An action's limits in OpenWhisk's units: milliseconds, megabytes, megabytes, activations per instance; and
/// specfaas's own: megabytes of scratch space, processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ActionLimits {
    pub timeout: u64,
    pub memory: u64,
    pub logs: u64,
    pub concurrency: u64,
    pub tmp: u64,
    pub processes: u64,
}

impl ActionLimits {
    /// Activations one warm instance runs at once: one, as OpenWhisk's default.
    pub const CONCURRENCY_MAX: u64 = 1;

    /// The limits of a `PUT`, each left out taking the platform's default, range-checked.
    pub fn from_put(put: Option<&LimitsPut>) -> Result<ActionLimits> {
        let defaults = ActionLimits::default();
        let Some(put) = put else { return Ok(defaults) };
        let limits = ActionLimits {
            timeout: put.timeout.unwrap_or(defaults.timeout),
            memory: put.memory.unwrap_or(defaults.memory),
            logs: put.logs.unwrap_or(defaults.logs),
            concurrency: put.concurrency.unwrap_or(defaults.concurrency),
            tmp: put.tmp.unwrap_or(defaults.tmp),
            processes: put.processes.unwrap_or(defaults.processes),
        };
        limits.validate()?;
        Ok(limits)
    }

    /// Checks each limit against the range [`model::Limits`] allows (concurrency: exactly 1).
    pub fn validate(&self) -> Result<()> {
        let check = |limit, got, min, max, unit| {
            if (min..=max).contains(&got) { Ok(()) } else { Err(Error::Limit { limit, min, max, unit, got }) }
        };
        check("timeout", self.timeout, Limits::TIMEOUT_MS_MIN, Limits::TIMEOUT_MS_MAX, " ms")?;
        check("memory", self.memory, Limits::MEMORY_MB_MIN, Limits::MEMORY_MB_MAX, " MB")?;
        check("logs", self.logs, 0, Limits::LOGS_BYTES_MAX / MIB, " MB")?;
        check("tmp", self.tmp, 1, Limits::TMP_MB_MAX, " MB")?;
        check("processes", self.processes, 16, Limits::PROCESSES_MAX, "")?;
        check("concurrency", self.concurrency, 1, Self::CONCURRENCY_MAX, "")
    }

    /// The platform's limits; what OpenWhisk's API cannot set (the payload size) keeps its default.
    pub fn to_model(self) -> Limits {
        Limits {
            timeout_ms: self.timeout,
            memory_mb: self.memory,
            logs_bytes_max: self.logs.saturating_mul(MIB),
            tmp_mb: self.tmp,
            processes: self.processes,
            ..Limits::default()
        }
    }
}

impl Default for ActionLimits {
    fn default() -> Self {
        let limits = Limits::default();
        ActionLimits {
            timeout: limits.timeout_ms,
            memory: limits.memory_mb,
            logs: limits.logs_bytes_max / MIB,
            concurrency: 1,
            tmp: limits.tmp_mb,
            processes: limits.processes,
        }
    }
}

/// An action as stored and returned by `GET` (and, with [`ExecSummary`], as listed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action<E = Exec> {
    pub namespace: String,
    pub name: String,
    pub version: String,
    pub publish: bool,
    pub exec: E,
    #[serde(default)]
    pub limits: ActionLimits,
    #[serde(default)]
    pub parameters: Vec<KeyValue>,
    #[serde(default)]
    pub annotations: Vec<KeyValue>,
    /// Epoch milliseconds of the last `PUT`.
    #[serde(default)]
    pub updated: u64,
}

impl Action {
    /// As listings show it: without the code.
    pub fn summary(self) -> Action<ExecSummary> {
        Action {
            exec: self.exec.summary(),
            namespace: self.namespace,
            name: self.name,
            version: self.version,
            publish: self.publish,
            limits: self.limits,
            parameters: self.parameters,
            annotations: self.annotations,
            updated: self.updated,
        }
    }
}

/// A workflow as stored and returned by `GET`: the ASL text as it was sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    pub namespace: String,
    pub name: String,
    pub definition: String,
    #[serde(default)]
    pub updated: u64,
}

/// A workflow as listed: without its definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowSummary {
    pub namespace: String,
    pub name: String,
    pub updated: u64,
}

impl Workflow {
    pub fn summary(self) -> WorkflowSummary {
        WorkflowSummary { namespace: self.namespace, name: self.name, updated: self.updated }
    }
}

/// A boolean query flag as OpenWhisk clients send it: `true` turns it on; anything else, or nothing, leaves it off.
fn flag<'de, D: Deserializer<'de>>(de: D) -> std::result::Result<bool, D::Error> {
    Ok(String::deserialize(de)? == "true")
}

/// A number in a query string.
fn number<'de, D: Deserializer<'de>>(de: D) -> std::result::Result<Option<u64>, D::Error> {
    let text = String::deserialize(de)?;
    text.parse().map(Some).map_err(|_| serde::de::Error::custom("must be a number"))
}

/// The query of `POST actions/{name}` and `POST workflows/{name}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct InvokeQuery {
    /// Wait for the activation (up to the blocking wait).
    #[serde(deserialize_with = "flag")]
    pub blocking: bool,
    /// Answer with the result only, not the whole record.
    #[serde(deserialize_with = "flag")]
    pub result: bool,
}

/// The query of `PUT actions/{name}` and `PUT workflows/{name}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PutQuery {
    /// Replace an existing resource (without it, `PUT` over one is a conflict).
    #[serde(deserialize_with = "flag")]
    pub overwrite: bool,
}

/// The query of `GET activations`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ActivationsQuery {
    /// Only activations of this action or workflow.
    pub name: Option<String>,
    /// Only activations that started at or after this epoch millisecond.
    #[serde(deserialize_with = "number")]
    pub since: Option<u64>,
    /// Only activations that started at or before this epoch millisecond.
    #[serde(deserialize_with = "number")]
    pub upto: Option<u64>,
    /// Skip this many, newest first.
    #[serde(deserialize_with = "number")]
    pub skip: Option<u64>,
    /// At most this many (default 30, at most [`ActivationsQuery::LIMIT_MAX`]).
    #[serde(deserialize_with = "number")]
    pub limit: Option<u64>,
    /// Whole records, logs and response included.
    #[serde(deserialize_with = "flag")]
    pub docs: bool,
}

impl ActivationsQuery {
    pub const LIMIT_DEFAULT: u64 = 30;
    /// OpenWhisk's maximum page.
    pub const LIMIT_MAX: u64 = 200;

    pub fn to_storage(&self) -> storage::ActivationQuery {
        storage::ActivationQuery {
            name: self.name.clone(),
            since_ms: self.since,
            upto_ms: self.upto,
            skip: self.skip.unwrap_or(0) as usize,
            limit: self.limit.unwrap_or(Self::LIMIT_DEFAULT).min(Self::LIMIT_MAX) as usize,
        }
    }
}

/// An activation as `GET activations` lists it without `docs`: the record without logs, and the response reduced
/// to its status code. Fields this type does not name are passed through as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivationSummary {
    pub activation_id: String,
    pub status_code: Value,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, Value>,
}

impl ActivationSummary {
    /// Reduces a stored record.
    pub fn from_record(record: Value) -> ActivationSummary {
        let mut rest = match record {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        rest.remove("logs");
        let status_code = rest.remove("response").and_then(|r| r.get("statusCode").cloned()).unwrap_or(Value::Null);
        let activation_id = match rest.remove("activationId") {
            Some(Value::String(id)) => id,
            _ => String::new(),
        };
        ActivationSummary { activation_id, status_code, rest }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_defaults_are_the_platforms() {
        let model = Limits::default();
        let limits = ActionLimits::default();
        assert_eq!(limits.to_model(), model);
        assert_eq!(ActionLimits::from_put(None).unwrap(), limits);
        limits.validate().unwrap();
    }

    #[test]
    fn bodies_name_what_is_wrong() {
        let check = |body: &str, needle: &str| {
            let err = ActionPut::parse(body.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(needle), "{body}: {err}");
        };
        check("{not json", "malformed");
        check(r#"{"exec": {"kind": "python:3", "code": "x"}, "colour": 1}"#, "unknown field 'colour'");
        check(r#"{"limits": {"cpu": 1}}"#, "unknown limit 'cpu'");
        check(r#"{"limits": {"logs": "lots"}}"#, "'limits.logs'");
        check(r#"{"parameters": [{"value": 1}]}"#, "'parameters[0]'");
    }

    #[test]
    fn stored_actions_round_trip_and_list_without_code() {
        let code = serde_json::json!({"namespace": "guest", "name": "a", "version": "0.0.1", "publish": false,
            "exec": {"kind": "python:3", "code": "x", "main": "main", "binary": false},
            "limits": {"timeout": 1, "memory": 128, "logs": 0, "concurrency": 1, "tmp": 512, "processes": 64},
            "parameters": [], "annotations": [{"key": "exec", "value": "python:3"}], "updated": 5});
        let action: Action = serde_json::from_value(code.clone()).unwrap();
        assert_eq!(serde_json::to_value(&action).unwrap(), code);
        assert_eq!(
            serde_json::to_value(action.summary()).unwrap()["exec"],
            serde_json::json!({"kind": "python:3", "binary": false})
        );
        let seq = serde_json::json!({"kind": "sequence", "components": ["/guest/a"]});
        assert!(matches!(serde_json::from_value(seq).unwrap(), Exec::Sequence { .. }));
    }
}
