//! The line-delimited JSON protocol between the platform and the runner processes (`assets/python/runner.py`,
//! `assets/node/runner.js`). One JSON object per line; `op` says what it is. Handlers are identified by a
//! handler id (`hid`): the pid of a Python handler, the thread id of a Node.js worker.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Sent by the initializer on its control connection.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FromInit {
    Ready,
    InitError {
        error: String,
    },
    /// A handler ended; `reason` is set by Node.js (e.g. `ERR_WORKER_OUT_OF_MEMORY`).
    Exited {
        hid: i64,
        code: Option<i32>,
        signal: Option<i32>,
        reason: Option<String>,
    },
}

/// Sent by the platform on the control connection.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ToInit {
    /// Create one more handler.
    Spawn {},
    /// Stop this handler now (Node.js workers; Python handlers are killed by pid).
    Kill { hid: i64 },
}

/// The first line of every connection.
#[derive(Debug, Deserialize)]
pub struct Hello {
    pub op: String,
    pub role: String,
    pub hid: Option<i64>,
    pub pid: Option<i32>,
}

/// Sent by the platform to a handler.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ToHandler<'a> {
    Run { id: &'a str, args: &'a Value, env: &'a std::collections::BTreeMap<String, String> },
}

/// Sent by a handler on its connection.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FromHandler {
    Log { stream: String, line: String },
    Call(Call),
    Result { value: Value },
    Error { message: String },
}

#[derive(Debug, Deserialize)]
pub struct Call {
    pub rid: u64,
    pub call: String,
    pub key: Option<String>,
    pub value: Option<Value>,
    pub function: Option<String>,
    pub args: Option<Value>,
    /// `http`: the request.
    pub request: Option<Value>,
}

/// Sent by the platform to a handler, answering a [`Call`].
#[derive(Debug, Serialize)]
pub struct Reply {
    pub op: &'static str,
    pub rid: u64,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    /// `"function"` when an invoked function failed, so the SDK raises `InvokeError`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
}

pub fn line<T: Serialize>(msg: &T) -> String {
    let mut s = serde_json::to_string(msg).expect("protocol messages serialize");
    s.push('\n');
    s
}
