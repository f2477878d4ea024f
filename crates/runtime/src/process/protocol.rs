//! The line-delimited JSON protocol between the platform and a handler process (`assets/python/runner.py`,
//! `assets/node/runner.js`), over the socket pair it inherits as fd 3. One JSON object per line; `op` says what it
//! is. The handler speaks first: `ready` once its code is loaded, or `init_error`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    /// The code loaded; `pid` is the handler's pid in its own PID namespace.
    Ready {
        #[allow(dead_code)]
        pid: Option<i64>,
    },
    InitError {
        error: String,
    },
    Log {
        stream: String,
        line: String,
    },
    Call(Call),
    Result {
        value: Value,
    },
    /// The function threw: `message` is what OpenWhisk shows; `name` (the exception's class, or `error.name`) and
    /// `cause` (its message) are what a workflow's `Retry` and `Catch` see.
    Error {
        message: String,
        name: Option<String>,
        cause: Option<String>,
    },
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
