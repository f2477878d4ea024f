//! Activation records in Apache OpenWhisk's shape, so OpenWhisk tooling can read them.
//!
//! One record per function run and one per application invocation. The application's record lists its
//! functions' activation ids in `logs` (as an OpenWhisk sequence does) and the path taken in the `path`
//! annotation.

use serde::Serialize;
use serde_json::{Value, json};

use engine::Status;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivationRecord {
    pub activation_id: String,
    pub namespace: String,
    pub name: String,
    /// The function's code version (a hash prefix); `0.0.1` for applications.
    pub version: String,
    pub subject: String,
    /// Epoch milliseconds.
    pub start: u64,
    pub end: u64,
    pub duration: u64,
    pub response: Response,
    pub logs: Vec<String>,
    pub annotations: Vec<Annotation>,
    pub publish: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub status: String,
    pub status_code: u8,
    pub success: bool,
    pub result: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Annotation {
    pub key: String,
    pub value: Value,
}

impl Response {
    pub fn new(status: Status, result: Value) -> Self {
        Response {
            status: status.as_str().to_string(),
            status_code: status.code(),
            success: status == Status::Success,
            result,
        }
    }
}

impl ActivationRecord {
    pub fn annotate(&mut self, key: &str, value: Value) {
        self.annotations.push(Annotation { key: key.into(), value });
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|e| json!({ "error": e.to_string() }))
    }
}

/// A fresh activation id: 32 lowercase hex characters, as OpenWhisk's.
pub fn new_activation_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

pub fn epoch_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
