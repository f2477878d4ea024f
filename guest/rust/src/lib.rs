//! The specfaas guest SDK: write a function as a plain Rust function on JSON (or your own serde types), compile it
//! to `wasm32-wasip1`, and deploy the `.wasm` with `kind = "wasm"`.
//!
//! ```ignore
//! use serde_json::{Value, json};
//!
//! fn greet(input: Value) -> Result<Value, specfaas::Error> {
//!     let name = input["name"].as_str().unwrap_or("stranger");
//!     let visits = specfaas::kv::get(&format!("visits:{name}"))?.and_then(|v| v.as_u64()).unwrap_or(0) + 1;
//!     specfaas::kv::put(&format!("visits:{name}"), &visits)?;
//!     Ok(json!({"greeting": format!("Hello, {name}!"), "visits": visits}))
//! }
//!
//! specfaas::entry!(greet);
//! ```
//!
//! Storage, calls to other functions and outbound HTTP go to the platform, which routes them through its engine:
//! writes are buffered until the function commits, and HTTP waits until the function is no longer speculative.
//! The function sees no files, sockets or environment; its clock and random numbers are deterministic per input.
//! An `Err` becomes the OpenWhisk application error `{"error": "..."}`; a panic is a developer error.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// A platform call that failed: refused (bad key, limit), or the invoked function failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// The platform refused the call; the message says why.
    Refused(String),
    /// The invoked function failed with this error value.
    Failed(Value),
    /// The function's own error.
    Message(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Refused(m) | Error::Message(m) => f.write_str(m),
            Error::Failed(v) => write!(f, "the invoked function failed: {v}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(m: String) -> Self {
        Error::Message(m)
    }
}

impl From<&str> for Error {
    fn from(m: &str) -> Self {
        Error::Message(m.to_string())
    }
}

#[cfg(target_arch = "wasm32")]
mod host {
    #[link(wasm_import_module = "specfaas")]
    unsafe extern "C" {
        pub fn input_len() -> i32;
        pub fn input_read(ptr: *mut u8);
        pub fn output(ptr: *const u8, len: i32);
        pub fn call(ptr: *const u8, len: i32) -> i32;
        pub fn reply_read(ptr: *mut u8);
    }
}

#[cfg(target_arch = "wasm32")]
fn read_input() -> Vec<u8> {
    // SAFETY: the host writes exactly input_len() bytes at the pointer, into memory we own.
    unsafe {
        let mut buf = vec![0u8; host::input_len().max(0) as usize];
        host::input_read(buf.as_mut_ptr());
        buf
    }
}

#[cfg(target_arch = "wasm32")]
fn write_output(bytes: &[u8]) {
    // SAFETY: the host reads `len` bytes at the pointer.
    unsafe { host::output(bytes.as_ptr(), bytes.len() as i32) }
}

#[cfg(target_arch = "wasm32")]
fn raw_call(request: &[u8]) -> Vec<u8> {
    // SAFETY: the host reads the request, then writes exactly the reply length it returned into our buffer.
    unsafe {
        let n = host::call(request.as_ptr(), request.len() as i32);
        let mut reply = vec![0u8; n.max(0) as usize];
        host::reply_read(reply.as_mut_ptr());
        reply
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn read_input() -> Vec<u8> {
    panic!("specfaas functions run on the platform: build them with --target wasm32-wasip1")
}

#[cfg(not(target_arch = "wasm32"))]
fn write_output(_: &[u8]) {
    panic!("specfaas functions run on the platform: build them with --target wasm32-wasip1")
}

#[cfg(not(target_arch = "wasm32"))]
fn raw_call(_: &[u8]) -> Vec<u8> {
    panic!("specfaas functions run on the platform: build them with --target wasm32-wasip1")
}

/// One platform call: `{"call": ..., ...}` in, the reply's value out.
fn call(request: Value) -> Result<Value, Error> {
    let reply = raw_call(&serde_json::to_vec(&request).expect("JSON serializes"));
    let reply: Value = serde_json::from_slice(&reply)
        .map_err(|e| Error::Refused(format!("unreadable reply from the platform: {e}")))?;
    if reply["ok"] == Value::Bool(true) {
        return Ok(reply["value"].clone());
    }
    match reply["kind"].as_str() {
        Some("function") => Err(Error::Failed(reply["error"].clone())),
        _ => Err(Error::Refused(reply["error"].as_str().unwrap_or("the platform refused the call").to_string())),
    }
}

/// The platform's key-value store, as seen through the invocation's data buffer.
pub mod kv {
    use super::*;

    /// The value at `key`, or `None`.
    pub fn get(key: &str) -> Result<Option<Value>, Error> {
        call(json!({"call": "kv.get", "key": key})).map(|v| if v.is_null() { None } else { Some(v) })
    }

    /// Reads `key` as `T`; `None` when absent.
    pub fn get_as<T: DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
        match get(key)? {
            None => Ok(None),
            Some(v) => serde_json::from_value(v).map(Some).map_err(|e| Error::Message(format!("{key}: {e}"))),
        }
    }

    pub fn put(key: &str, value: &impl Serialize) -> Result<(), Error> {
        let value = serde_json::to_value(value).map_err(|e| Error::Message(e.to_string()))?;
        call(json!({"call": "kv.put", "key": key, "value": value})).map(|_| ())
    }

    pub fn delete(key: &str) -> Result<(), Error> {
        call(json!({"call": "kv.delete", "key": key})).map(|_| ())
    }
}

/// Invokes another function and waits for its result (an implicit call).
pub fn invoke(function: &str, args: &impl Serialize) -> Result<Value, Error> {
    let args = serde_json::to_value(args).map_err(|e| Error::Message(e.to_string()))?;
    call(json!({"call": "invoke", "function": function, "args": args}))
}

/// Outbound HTTP, an external effect: performed once the function is no longer speculative. Returns
/// `{"status", "headers", "body"}`.
pub fn http(method: &str, url: &str, body: Option<&str>) -> Result<Value, Error> {
    call(json!({"call": "http", "request": {"method": method, "url": url, "body": body}}))
}

/// Runs `handler` on the activation's input and sets its output; what [`entry!`] expands to.
pub fn run<I, O, E>(handler: fn(I) -> Result<O, E>)
where
    I: DeserializeOwned,
    O: Serialize,
    E: std::fmt::Display,
{
    let output = match serde_json::from_slice::<I>(&read_input()) {
        Err(e) => json!({"error": format!("the input does not fit this function: {e}")}),
        Ok(input) => match handler(input) {
            Ok(out) => serde_json::to_value(out).unwrap_or_else(|e| json!({"error": format!("bad output: {e}")})),
            Err(e) => json!({"error": e.to_string()}),
        },
    };
    write_output(&serde_json::to_vec(&output).expect("JSON serializes"));
}

/// Makes `handler` the function's entry point: `specfaas::entry!(handler);` in a binary crate built for
/// `wasm32-wasip1`. The handler takes the input and returns `Result<output, error>`, on `serde_json::Value` or
/// any serde types.
#[macro_export]
macro_rules! entry {
    ($handler:path) => {
        fn main() {
            $crate::run($handler)
        }
    };
}
