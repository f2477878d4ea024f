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
}

impl Call {
    /// Whether the call has an effect outside the platform, held while its run is speculative.
    pub fn is_effect(&self) -> bool {
        matches!(self, Call::Http { .. })
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
