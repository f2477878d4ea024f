//! The line-delimited JSON protocol between the platform and the runner processes (`assets/python/runner.py`,
//! `assets/node/runner.js`). One JSON object per line; `op` says what it is.

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
    /// Python: a handler process was forked for activation `id`.
    Forked {
        id: String,
        pid: i32,
    },
    /// A handler (process or worker) ended; `reason` is set by Node.js (e.g. `ERR_WORKER_OUT_OF_MEMORY`).
    Exited {
        id: String,
        code: Option<i32>,
        signal: Option<i32>,
        reason: Option<String>,
    },
}

/// Sent by the platform on the control connection.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ToInit<'a> {
    Run {
        id: &'a str,
        args: &'a Value,
        env: &'a std::collections::BTreeMap<String, String>,
    },
    Kill {
        id: &'a str,
    },
}

/// The first line of every connection.
#[derive(Debug, Deserialize)]
pub struct Hello {
    pub op: String,
    pub role: String,
    pub id: Option<String>,
}

/// Sent by a handler on its activation's connection.
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
