//! Native Rust functions, registered in-process by name: for embedding specfaas as a library, and for tests.
//!
//! A native function is an async closure `Fn(Context, Value) -> Future<Output = Result<Value, String>>`. It reaches
//! storage and other functions through its [`Context`], exactly like process functions do through the SDK. Killing
//! it aborts its task at its next `.await`, so a native function must not block the thread.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use model::{FunctionSpec, Kind};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::{
    Activation, BoxFuture, Call, Done, Error, Host, HostRequest, Killer, LogSink, Outcome, Reply, Report, Runtime, Warm,
};

pub type NativeFn = Arc<dyn Fn(Context, Value) -> BoxFuture<'static, Result<Value, String>> + Send + Sync>;

/// What a native function gets to reach the platform.
#[derive(Clone)]
pub struct Context {
    host: Host,
    logs: Arc<Mutex<LogSink>>,
    activation_id: String,
}

/// A platform call from a native function failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("platform refused the call: {0}")]
    Refused(String),
    #[error("invoked function failed: {0}")]
    FunctionFailed(Value),
}

impl Context {
    pub fn activation_id(&self) -> &str {
        &self.activation_id
    }

    async fn call(&self, call: Call) -> Result<Value, CallError> {
        let (tx, rx) = oneshot::channel();
        let reply = Box::new(move |r| {
            let _ = tx.send(r);
        });
        (self.host)(HostRequest { call, reply });
        match rx.await {
            Ok(Reply::Ok(v)) => Ok(v),
            Ok(Reply::Refused(m)) => Err(CallError::Refused(m)),
            Ok(Reply::FunctionFailed(e)) => Err(CallError::FunctionFailed(e)),
            Err(_) => Err(CallError::Refused("the platform dropped the call".into())),
        }
    }

    /// The committed (or, later, speculatively forwarded) value of `key`; `null` when absent.
    pub async fn kv_get(&self, key: &str) -> Result<Value, CallError> {
        self.call(Call::Get { key: key.into() }).await
    }
    pub async fn kv_put(&self, key: &str, value: Value) -> Result<(), CallError> {
        self.call(Call::Put { key: key.into(), value }).await.map(|_| ())
    }
    pub async fn kv_delete(&self, key: &str) -> Result<(), CallError> {
        self.call(Call::Delete { key: key.into() }).await.map(|_| ())
    }
    /// Invokes another function and waits for its result.
    pub async fn invoke(&self, function: &str, args: Value) -> Result<Value, CallError> {
        self.call(Call::Invoke { function: function.into(), args }).await
    }
    /// Outbound HTTP, `{"method", "url", "headers", "body"}`: an external effect, performed once this function is
    /// non-speculative. Resolves to `{"status", "headers", "body"}`.
    pub async fn http(&self, request: Value) -> Result<Value, CallError> {
        self.call(Call::Http { request }).await
    }

    /// Appends a line to the activation's logs (as stdout).
    pub fn log(&self, line: &str) {
        self.logs.lock().expect("log sink poisoned").push("stdout", line);
    }
}

/// The registry of native functions; a function spec of kind `native` runs the closure registered under its name.
#[derive(Default)]
pub struct NativeRuntime {
    registry: RwLock<HashMap<String, NativeFn>>,
}

impl NativeRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) the closure behind native function `name`.
    pub fn register<F, Fut>(&self, name: &str, f: F)
    where
        F: Fn(Context, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, String>> + Send + 'static,
    {
        let f: NativeFn = Arc::new(move |ctx, input| Box::pin(f(ctx, input)));
        self.registry.write().expect("registry poisoned").insert(name.to_string(), f);
    }
}

struct NativeWarm {
    spec: Arc<FunctionSpec>,
    f: NativeFn,
}

impl Runtime for NativeRuntime {
    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Native]
    }

    fn load(&self, spec: Arc<FunctionSpec>) -> BoxFuture<'_, Result<Arc<dyn Warm>, Error>> {
        let found = self.registry.read().expect("registry poisoned").get(&spec.name).cloned();
        Box::pin(async move {
            if spec.kind != Kind::Native {
                return Err(Error::WrongKind {
                    runtime: "native",
                    function: spec.name.clone(),
                    kind: spec.kind.as_openwhisk(),
                });
            }
            let f = found.ok_or_else(|| Error::Init {
                function: spec.name.clone(),
                message: "no native function is registered under this name".into(),
            })?;
            Ok(Arc::new(NativeWarm { spec, f }) as Arc<dyn Warm>)
        })
    }
}

impl Warm for NativeWarm {
    fn spec(&self) -> &FunctionSpec {
        &self.spec
    }

    fn start(&self, activation: Activation, host: Host, done: Done) -> Killer {
        let logs = Arc::new(Mutex::new(LogSink::new(self.spec.limits.logs_bytes_max)));
        let ctx = Context { host, logs: logs.clone(), activation_id: activation.id };
        let timeout_ms = self.spec.limits.timeout_ms;
        let fut = (self.f)(ctx, activation.input);
        let killed = Arc::new(AtomicBool::new(false));
        // Reports exactly once: normally at the end, or from Drop when the task is aborted (kill) or panics.
        let mut guard = ReportGuard { done: Some(done), logs, killed: killed.clone() };
        let task = tokio::spawn(async move {
            let outcome = match tokio::time::timeout(Duration::from_millis(timeout_ms), fut).await {
                Ok(Ok(value)) => Outcome::from_returned(value),
                Ok(Err(message)) => Outcome::DeveloperError(message),
                Err(_elapsed) => Outcome::Timeout { timeout_ms },
            };
            guard.report(outcome);
        });
        let abort = task.abort_handle();
        Killer::new(move || {
            killed.store(true, Ordering::Release);
            abort.abort();
        })
    }
}

struct ReportGuard {
    done: Option<Done>,
    logs: Arc<Mutex<LogSink>>,
    killed: Arc<AtomicBool>,
}

impl ReportGuard {
    fn report(&mut self, outcome: Outcome) {
        if let Some(done) = self.done.take() {
            let logs = std::mem::replace(&mut *self.logs.lock().unwrap_or_else(|e| e.into_inner()), LogSink::new(0));
            done(Report { outcome, logs: logs.into_lines(), cpu_us: None, held: Vec::new() });
        }
    }
}

impl Drop for ReportGuard {
    fn drop(&mut self) {
        let outcome = if self.killed.load(Ordering::Acquire) {
            Outcome::Killed
        } else {
            Outcome::DeveloperError("An error has occurred: the function panicked.".into())
        };
        self.report(outcome);
    }
}
