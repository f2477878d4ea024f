//! The platform: the async shell around the engine.
//!
//! - [`Builder`] (`builder`): assembles a platform from a store, runtimes and settings; the one way every
//!   platform is made ([`Platform::builder`], [`Platform::embedded`]).
//! - [`Platform`]: a cheap, cloneable handle. It deploys functions (making them warm on their runtime) and
//!   applications per namespace, and invokes them.
//! - `invocation`: drives one [`engine::Engine`] — feeds it events from running functions and the store, executes
//!   its actions (launch, reply, read, commit, kill) — and builds the activation records.
//! - [`record`]: activation records in OpenWhisk's shape, with what speculation did to each run.
//! - [`metrics`]: counters across invocations (invocations by status, speculation, squashes by cause).
//! - `load`: samples the machine's CPU load, which reaches every invocation's engine as an event.
//! - [`effects`]: performs external effects (outbound HTTP) for non-speculative runs.
//! - [`project`]: loads a project directory (`specfaas.toml`, code files, ASL files, seed data).
//!
//! **Architecture invariant:** no speculation or scheduling decision is made here; the engine decides, the
//! platform executes. **API boundary:** callers see [`Platform`], [`Invocation`] and records, never channels.

mod builder;
pub mod effects;
mod invocation;
mod load;
pub mod metrics;
pub mod project;
pub mod record;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use engine::{Catalog, FunctionInfo};
use model::{Application, FunctionSpec};
use runtime::native::NativeRuntime;
use runtime::{Runtime, Warm};
use serde_json::Value;
use sha2::Digest as _;
use storage::Store;
use tokio::sync::mpsc;

pub use builder::{Builder, default_runtimes, embedded_store};
pub use engine::Status;
pub use invocation::{Invocation, RunTiming};
pub use record::ActivationRecord;

/// The version the engine keys a function's memo rows and predictions on: its code version, and its bound
/// parameters when it has any. Bound parameters are merged into the input here, after the engine has looked the
/// input up, so without them a function redeployed with new parameters would be served outputs memoized with the
/// old ones.
fn memo_version(spec: &FunctionSpec) -> String {
    if spec.parameters.is_empty() {
        return spec.version.clone();
    }
    let parameters = model::json::canonical(&Value::Object(spec.parameters.clone()));
    let digest = sha2::Sha256::digest(parameters.as_bytes());
    format!("{}+{}", spec.version, hex_prefix(&digest, 8))
}

fn hex_prefix(bytes: &[u8], n: usize) -> String {
    bytes.iter().take(n).map(|b| format!("{b:02x}")).collect()
}

/// Compares secrets in constant time.
fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

/// The namespace `specfaas run` and a fresh server use.
pub const DEFAULT_NAMESPACE: &str = "guest";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] model::Error),
    #[error(transparent)]
    Runtime(#[from] runtime::Error),
    #[error(transparent)]
    Storage(#[from] storage::Error),
    #[error("{what} \"{name}\" does not exist in namespace \"{namespace}\"")]
    NotFound { what: &'static str, namespace: String, name: String },
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("the input is {size} bytes, over the limit of {limit} bytes")]
    PayloadTooLarge { size: usize, limit: usize },
    #[error("the input must be a JSON object, got {0}")]
    InputNotObject(&'static str),
    /// The platform was built without something it needs.
    #[error("cannot build the platform: {0}")]
    Setup(String),
}

/// Platform-wide settings; each has a documented default.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Per-invocation limits and speculation settings, enforced by the engine.
    pub engine: engine::Config,
    /// Sizes of each namespace's branch predictor and memo table.
    pub tables: engine::tables::Sizes,
    /// Largest accepted application input, as JSON bytes (OpenWhisk: 1 MiB).
    pub payload_bytes_max: usize,
    /// Fuel (about one unit per wasm instruction) each WebAssembly activation may burn before it traps; none by
    /// default: fuel accounting slows every guest, and the timeout already bounds them.
    pub wasm_fuel: Option<u64>,
    /// How long the record writer gathers finished invocations' activation records into one store transaction
    /// (one sync to disk), in ms: default 20, at most [`RECORD_BATCH_MS_MAX`]; 0 writes each batch at once. Reads
    /// of activations flush first, so they never miss a finished invocation; a crash loses at most this window.
    pub record_batch_ms: u64,
}

/// The largest accepted [`Config::record_batch_ms`].
pub const RECORD_BATCH_MS_MAX: u64 = 1000;

impl Default for Config {
    fn default() -> Self {
        Config {
            engine: engine::Config::default(),
            tables: engine::tables::Sizes::default(),
            payload_bytes_max: 1024 * 1024,
            wasm_fuel: None,
            record_batch_ms: 20,
        }
    }
}

impl Config {
    /// Checks every setting against its maximum; the error names the setting.
    pub fn check(&self) -> Result<(), String> {
        self.tables.check()?;
        self.engine.workflows.validate().map_err(|e| format!("engine.{e}"))?;
        if self.record_batch_ms > RECORD_BATCH_MS_MAX {
            return Err(format!(
                "record_batch_ms is {}, over the maximum of {RECORD_BATCH_MS_MAX}",
                self.record_batch_ms
            ));
        }
        Ok(())
    }
}

/// Per-invocation choices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InvokeOptions {
    /// Force speculation on or off for this invocation; `None` follows the application and the platform config.
    pub speculation: Option<bool>,
    /// Force callee path prediction (`[engine] callee_paths`) on or off for this invocation, as ablations do.
    pub callee_paths: Option<bool>,
    /// Force field-by-field output guesses (`[engine] field_guesses`) on or off for this invocation, as ablations do.
    pub field_guesses: Option<bool>,
    /// Force the CPU share of speculative runs (`[engine] speculative_cpu`) for this invocation, as ablations do.
    pub speculative_cpu: Option<engine::SpeculativeCpu>,
    /// Force what becomes of squashed runs' handlers (`[engine] squashed_handlers`), as ablations do.
    pub squashed_handlers: Option<engine::SquashedHandlers>,
    /// The invocation's activation id, when the caller needs it before the invocation ends (non-blocking
    /// invocations); a fresh one otherwise.
    pub activation_id: Option<String>,
}

/// A deployed function: its spec and its warm instance.
pub(crate) struct Deployed {
    pub spec: Arc<FunctionSpec>,
    pub warm: Arc<dyn Warm>,
}

/// One namespace's deployments. Replaced whole on every change, so an invocation keeps a consistent snapshot.
#[derive(Default)]
pub(crate) struct Deployments {
    pub functions: HashMap<String, Arc<Deployed>>,
    pub apps: HashMap<String, Arc<Application>>,
    pub catalog: Arc<Catalog>,
}

pub(crate) struct Inner {
    pub store: Arc<dyn Store>,
    pub native: Arc<NativeRuntime>,
    /// Every runtime, asked in order which kinds it runs ([`Runtime::kinds`]).
    pub runtimes: Vec<Arc<dyn Runtime>>,
    pub config: Config,
    pub namespaces: RwLock<HashMap<String, Arc<Deployments>>>,
    /// Activation records are persisted off the invocation's path, in order, by one writer task.
    pub recorder: mpsc::UnboundedSender<RecorderMsg>,
    /// Each namespace's predictor (learning tables unless `set_oracle` replaced them): never shared between tenants.
    pub oracles: RwLock<HashMap<String, engine::Oracle>>,
    pub metrics: metrics::Metrics,
    /// The machine's CPU load in percent, kept fresh by a sampler task.
    pub load: Arc<std::sync::atomic::AtomicU8>,
    /// Where functions reach the API (`__OW_API_HOST`), when a server runs.
    pub api_host: RwLock<Option<String>>,
    /// The sandbox's network rules (with the default runtimes): what confined functions, and the HTTP effects
    /// performed for them, may reach.
    pub policy: Option<Arc<runtime::sandbox::Policy>>,
    /// How the default process runtime confines functions (with the default runtimes), shown in their records.
    pub sandbox: Option<runtime::sandbox::Mode>,
    /// Ephemeral keys of running activations (`__OW_API_KEY`): uuid → the key, the namespace and the run's
    /// [`runtime::Host`]. A call with one is an implicit call of that activation.
    pub activation_keys: std::sync::Mutex<HashMap<String, ActivationKey>>,
}

pub(crate) struct ActivationKey {
    pub key: String,
    pub namespace: String,
    pub host: runtime::Host,
}

pub(crate) enum RecorderMsg {
    /// An invocation's records (its own first), serialized and stored by the writer, off the invocation's path.
    Records(String, Vec<record::ActivationRecord>),
    Flush(tokio::sync::oneshot::Sender<()>),
    /// Flush, then stop: the writer lets go of the store.
    Stop(tokio::sync::oneshot::Sender<()>),
}

/// Records sent together in one store transaction, at most (one invocation's are never split).
const RECORD_BATCH_MAX: usize = 256;

/// The one task that persists activation records, in the order invocations finished. It gathers the records of
/// invocations that finish within `window` of the first (or up to [`RECORD_BATCH_MAX`] records) into one
/// transaction: one sync to disk for many invocations, so that persisting records does not compete with the
/// invocations themselves for the machine's cores and disk. A flush or a stop writes what was gathered at once.
async fn record_writer(
    store: Arc<dyn storage::Store>,
    window: std::time::Duration,
    mut rx: mpsc::UnboundedReceiver<RecorderMsg>,
) {
    let mut next = None;
    loop {
        let msg = match next.take() {
            Some(msg) => msg,
            None => match rx.recv().await {
                Some(msg) => msg,
                None => return,
            },
        };
        match msg {
            RecorderMsg::Records(namespace, records) => {
                let mut count = records.len();
                let mut batch = vec![(namespace, records)];
                let deadline = tokio::time::Instant::now() + window;
                while count < RECORD_BATCH_MAX {
                    let more = match rx.try_recv() {
                        Ok(msg) => Some(msg),
                        Err(mpsc::error::TryRecvError::Disconnected) => None,
                        Err(mpsc::error::TryRecvError::Empty) => {
                            tokio::time::timeout_at(deadline, rx.recv()).await.ok().flatten()
                        }
                    };
                    match more {
                        Some(RecorderMsg::Records(namespace, records)) => {
                            count += records.len();
                            batch.push((namespace, records));
                        }
                        Some(other) => {
                            next = Some(other); // a flush or stop waits for the records before it
                            break;
                        }
                        None => break, // the window closed (or the platform is gone)
                    }
                }
                // Serializing records is CPU work: it runs on the blocking pool, so it never holds up an async
                // worker that an invocation's hand-off could use.
                let entries = tokio::task::spawn_blocking(move || {
                    batch
                        .iter()
                        .flat_map(|(namespace, records)| {
                            records.iter().map(|r| storage::ActivationEntry {
                                namespace: namespace.clone(),
                                id: r.activation_id.clone(),
                                name: r.name.clone(),
                                start_ms: r.start,
                                record: r.to_json(),
                            })
                        })
                        .collect::<Vec<_>>()
                })
                .await;
                if let Ok(entries) = entries {
                    let _ = store.put_activations(entries).await;
                }
            }
            RecorderMsg::Flush(done) => {
                let _ = done.send(());
            }
            RecorderMsg::Stop(done) => {
                drop(store);
                let _ = done.send(());
                return;
            }
        }
    }
}

/// Handle to a running platform. Cloning is cheap; all clones share one platform.
#[derive(Clone)]
pub struct Platform {
    inner: Arc<Inner>,
}

impl Platform {
    /// The registry of native functions: register a closure here, then deploy a `native` function of that name.
    pub fn native(&self) -> &NativeRuntime {
        &self.inner.native
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    fn deployments(&self, namespace: &str) -> Arc<Deployments> {
        self.inner.namespaces.read().expect("poisoned").get(namespace).cloned().unwrap_or_default()
    }

    fn update(
        &self,
        namespace: &str,
        change: impl FnOnce(&mut HashMap<String, Arc<Deployed>>, &mut HashMap<String, Arc<Application>>),
    ) {
        let mut all = self.inner.namespaces.write().expect("poisoned");
        let old = all.get(namespace).cloned().unwrap_or_default();
        let mut functions = old.functions.clone();
        let mut apps = old.apps.clone();
        change(&mut functions, &mut apps);
        let catalog = Catalog {
            functions: functions
                .iter()
                .map(|(n, d)| {
                    (
                        n.clone(),
                        FunctionInfo { version: memo_version(&d.spec), annotations: d.spec.annotations.clone() },
                    )
                })
                .collect(),
        };
        all.insert(namespace.to_string(), Arc::new(Deployments { functions, apps, catalog: Arc::new(catalog) }));
    }

    /// Deploys (or replaces) a function and makes it warm. Code that fails to load is rejected here.
    pub async fn deploy_function(&self, namespace: &str, spec: FunctionSpec) -> Result<(), Error> {
        let spec = Arc::new(spec);
        let runtime = self.inner.runtimes.iter().find(|r| r.kinds().contains(&spec.kind)).ok_or_else(|| {
            Error::Runtime(runtime::Error::Io(format!(
                "no runtime runs functions of kind {}",
                spec.kind.as_openwhisk()
            )))
        })?;
        let warm = runtime.load(spec.clone()).await?;
        let name = spec.name.clone();
        self.update(namespace, |functions, _| {
            functions.insert(name, Arc::new(Deployed { spec, warm }));
        });
        Ok(())
    }

    /// Removes a function or an application; whether there was one. Applications that use a removed function fail
    /// when they reach it.
    pub fn remove(&self, namespace: &str, name: &str) -> bool {
        let mut found = false;
        self.update(namespace, |functions, apps| {
            found = functions.remove(name).is_some() | apps.remove(name).is_some();
        });
        found
    }

    /// Tells functions where the API is: they get `__OW_API_HOST` and a per-activation `__OW_API_KEY`, so
    /// OpenWhisk-style code can invoke other actions through the API; such calls are implicit calls.
    pub fn set_api_host(&self, url: &str) {
        *self.inner.api_host.write().expect("poisoned") = Some(url.to_string());
        let addr = url.trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/');
        if let (Some(policy), Ok(addr)) = (&self.inner.policy, addr.parse()) {
            policy.set_api(addr);
        }
    }

    /// The namespace of a running activation's ephemeral key (`uuid:key`), if it is one.
    pub fn activation_key_namespace(&self, uuid: &str, key: &str) -> Option<String> {
        let keys = self.inner.activation_keys.lock().unwrap_or_else(|e| e.into_inner());
        let entry = keys.get(uuid)?;
        let same: bool = subtle_eq(entry.key.as_bytes(), key.as_bytes());
        same.then(|| entry.namespace.clone())
    }

    /// An invocation made with a running activation's ephemeral key: an implicit call of that activation,
    /// through the engine, exactly like `specfaas.invoke`. `None` when the key is not (or no longer) valid.
    pub async fn invoke_as_activation(
        &self,
        uuid: &str,
        key: &str,
        function: &str,
        args: Value,
    ) -> Option<runtime::Reply> {
        let host = {
            let keys = self.inner.activation_keys.lock().unwrap_or_else(|e| e.into_inner());
            let entry = keys.get(uuid)?;
            if !subtle_eq(entry.key.as_bytes(), key.as_bytes()) {
                return None;
            }
            entry.host.clone()
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let reply = Box::new(move |r| {
            let _ = tx.send(r);
        });
        host(runtime::HostRequest { call: runtime::Call::Invoke { function: function.to_string(), args }, reply });
        Some(rx.await.unwrap_or(runtime::Reply::Refused("the calling activation is over".into())))
    }

    /// The deployed function `name`, if any.
    pub fn function(&self, namespace: &str, name: &str) -> Option<Arc<FunctionSpec>> {
        self.deployments(namespace).functions.get(name).map(|d| d.spec.clone())
    }

    /// The deployed application `name`, if any.
    pub fn app(&self, namespace: &str, name: &str) -> Option<Arc<Application>> {
        self.deployments(namespace).apps.get(name).cloned()
    }

    /// Whether `function` is deployed in `namespace`.
    pub fn has_function(&self, namespace: &str, function: &str) -> bool {
        self.deployments(namespace).functions.contains_key(function)
    }

    /// Deploys (or replaces) an application. Its functions must already be deployed (checked when it was built).
    pub fn deploy_app(&self, namespace: &str, app: Application) {
        let name = app.name.clone();
        self.update(namespace, |_, apps| {
            apps.insert(name, Arc::new(app));
        });
    }

    /// Deploys a whole project: functions, then applications, then seed data for keys that do not exist yet.
    pub async fn deploy_project(&self, namespace: &str, dir: &Path) -> Result<project::Summary, Error> {
        self.deploy_manifest(namespace, project::Project::read(dir)?).await
    }

    /// [`Platform::deploy_project`] for a project already read (and perhaps adjusted, as a benchmark does). The
    /// functions load concurrently, since each process function starts an interpreter; the first failure, in
    /// manifest order, is returned.
    pub async fn deploy_manifest(
        &self,
        namespace: &str,
        manifest: project::Project,
    ) -> Result<project::Summary, Error> {
        let mut summary = project::Summary::default();
        let mut loads = tokio::task::JoinSet::new();
        for (i, spec) in manifest.functions.into_iter().enumerate() {
            summary.functions.push(spec.name.clone());
            let (platform, namespace) = (self.clone(), namespace.to_string());
            loads.spawn(async move { (i, platform.deploy_function(&namespace, spec).await) });
        }
        let mut failures = Vec::new();
        while let Some(joined) = loads.join_next().await {
            let (i, result) = joined.expect("deploying a function does not panic");
            if let Err(e) = result {
                failures.push((i, e));
            }
        }
        if let Some((_, e)) = failures.into_iter().min_by_key(|(i, _)| *i) {
            return Err(e);
        }
        let known: std::collections::HashSet<String> = self.deployments(namespace).functions.keys().cloned().collect();
        for app in manifest.apps.build(&|f| known.contains(f), &self.inner.config.engine.workflows)? {
            summary.apps.push(app.name.clone());
            self.deploy_app(namespace, app);
        }
        if let Some(seed) = manifest.seed {
            for (key, value) in seed {
                let batch = storage::Batch {
                    namespace: namespace.to_string(),
                    writes: vec![storage::Write { key: key.clone(), op: storage::Op::Put(value) }],
                    expect: vec![(key, 0)],
                };
                match self.inner.store.apply(batch).await {
                    Ok(_) => summary.seeded += 1,
                    Err(storage::Error::Conflict { .. }) => {} // already there: seeds never overwrite
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(summary)
    }

    /// Invokes an application, or a function directly, and waits for it to complete.
    pub async fn invoke(&self, namespace: &str, name: &str, input: Value) -> Result<Invocation, Error> {
        self.invoke_with(namespace, name, input, InvokeOptions::default()).await
    }

    /// [`Platform::invoke`], with per-invocation options.
    pub async fn invoke_with(
        &self,
        namespace: &str,
        name: &str,
        input: Value,
        options: InvokeOptions,
    ) -> Result<Invocation, Error> {
        let deployments = self.deployments(namespace);
        let app = match deployments.apps.get(name) {
            Some(app) => app.clone(),
            None if deployments.functions.contains_key(name) => {
                Arc::new(Application::function(name, name, &|f| deployments.functions.contains_key(f))?)
            }
            None => {
                return Err(Error::NotFound {
                    what: "application or function",
                    namespace: namespace.into(),
                    name: name.into(),
                });
            }
        };
        let size = serde_json::to_vec(&input).map(|v| v.len()).unwrap_or(0);
        if size > self.inner.config.payload_bytes_max {
            return Err(Error::PayloadTooLarge { size, limit: self.inner.config.payload_bytes_max });
        }
        if !input.is_object() {
            return Err(Error::InputNotObject(model::path::type_name(&input)));
        }
        // The driver runs as a task on the runtime's workers, not on the caller's thread: a run it launches then
        // lands on the same worker (tokio's LIFO slot), and each hand-off avoids two cross-thread wake-ups.
        let mut config = self.inner.config.engine;
        config.speculation = options.speculation.unwrap_or(config.speculation && app.speculation);
        config.callee_paths = options.callee_paths.unwrap_or(config.callee_paths);
        config.field_guesses = options.field_guesses.unwrap_or(config.field_guesses);
        config.speculative_cpu = options.speculative_cpu.unwrap_or(config.speculative_cpu);
        config.squashed_handlers = options.squashed_handlers.unwrap_or(config.squashed_handlers);
        let oracle = self.oracle(namespace);
        let id = options.activation_id.unwrap_or_else(record::new_activation_id);
        let request = invocation::Request { app, input, config, oracle, activation_id: id };
        let driver = invocation::run(self.inner.clone(), namespace.to_string(), deployments, request);
        Ok(tokio::spawn(driver).await.expect("the invocation driver does not panic"))
    }

    /// The namespace's predictors.
    fn oracle(&self, namespace: &str) -> engine::Oracle {
        if let Some(t) = self.inner.oracles.read().expect("poisoned").get(namespace) {
            return t.clone();
        }
        let mut all = self.inner.oracles.write().expect("poisoned");
        all.entry(namespace.to_string()).or_insert_with(|| engine::tables::learning(self.inner.config.tables)).clone()
    }

    /// Replaces the namespace's predictor (by default, learning tables sized by `Config::tables`) for invocations
    /// that start from now on. Speculation stays sound under any predictor, however wrong: this is how tests hold
    /// it to that with adversarial ones, and how an embedder plugs in its own.
    pub fn set_oracle(&self, namespace: &str, oracle: engine::Oracle) {
        self.inner.oracles.write().expect("poisoned").insert(namespace.to_string(), oracle);
    }

    /// Counters across every invocation so far, and the runtimes' handler counts.
    pub fn metrics(&self) -> metrics::Snapshot {
        let mut snapshot = self.inner.metrics.snapshot();
        for runtime in &self.inner.runtimes {
            snapshot.add_handlers(&runtime.handlers());
        }
        snapshot
    }

    /// Waits until every activation record produced so far is persisted.
    pub async fn flush_records(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.inner.recorder.send(RecorderMsg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Persists outstanding records and stops the record writer. Call it before dropping the last handle when
    /// the store must be released at once (to reopen it, say); later records are not persisted.
    pub async fn shutdown(self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.inner.recorder.send(RecorderMsg::Stop(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// A stored activation record.
    pub async fn activation(&self, namespace: &str, id: &str) -> Result<Option<Value>, Error> {
        Ok(self.inner.store.get_activation(namespace, id).await?.map(|e| e.record))
    }
}
