//! The one vocabulary of calls that running code makes to the platform, and of their replies.
//!
//! A function's runtime hands each call to the platform as a [`Call`]; the platform feeds it to the engine
//! unchanged, and the engine's [`Reply`] goes back to the function unchanged. Runtimes, the engine and the
//! platform all use these two types, so nothing maps one vocabulary onto another by hand.

use serde_json::Value;

/// A storage access, an implicit call or an external effect, made by running code.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// Reads a key; the reply is its value, `null` when absent.
    Get { key: String },
    /// Writes a key; the value is any JSON value.
    Put { key: String, value: Value },
    /// Deletes a key.
    Delete { key: String },
    /// Calls another function and waits for its result (an implicit call).
    Invoke { function: String, args: Value },
    /// Outbound HTTP: `{"method", "url", "headers", "body"}`. An external effect: performed only once the calling
    /// run is non-speculative; the reply is `{"status", "headers", "body"}`.
    Http { request: Value },
    /// A system call of confined code that starts an external effect (`connect tcp 93.184.216.34:443`), held by
    /// the sandbox until the engine answers it, which it does once the run is non-speculative.
    Syscall { call: String },
}

impl Call {
    /// Whether the call has an effect outside the platform, held while its run is speculative.
    pub fn is_effect(&self) -> bool {
        matches!(self, Call::Http { .. } | Call::Syscall { .. })
    }

    /// Whether the call is an HTTP request with a safe method (GET, HEAD or OPTIONS, RFC 9110 §9.2.1): it reads,
    /// so it may run while its run is speculative, unless the function asks for `effects = "strict"`.
    pub fn is_safe_http(&self) -> bool {
        let Call::Http { request } = self else { return false };
        let method = request.get("method").and_then(Value::as_str).unwrap_or("GET");
        ["GET", "HEAD", "OPTIONS"].iter().any(|m| m.eq_ignore_ascii_case(method))
    }
}

/// The platform's answer to a [`Call`].
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The call succeeded: the value read (`null` when absent), the callee's result, or `null`.
    Ok(Value),
    /// The call was refused (bad key, limit exceeded, unknown function, ...), with why.
    Refused(String),
    /// The invoked function failed; this is its error value.
    FunctionFailed(Value),
}
