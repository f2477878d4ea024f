//! Assembling a [`Platform`]: the store it commits to, the runtimes that run its functions, and its settings.
//!
//! Every platform is built here, one way: embedders and tests with [`Platform::builder`], `specfaas run` and
//! `specfaas serve` with [`Platform::embedded`] (the redb store and the compiled-wasm cache in a data directory).
//!
//! Runtimes are asked in order which kinds they run ([`Runtime::kinds`]), the first match wins:
//! 1. the native runtime, always there, since [`Platform::native`] is its registry;
//! 2. the runtimes added with [`Builder::runtime`], in the order added;
//! 3. with [`Builder::default_runtimes`], the process runtime (Python and Node.js) and the WebAssembly runtime,
//!    made by [`default_runtimes`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use runtime::Runtime;
use runtime::native::NativeRuntime;
use runtime::process::ProcessRuntime;
use storage::Store;
use tokio::sync::mpsc;

use crate::{Config, Error, Inner, Platform, RecorderMsg, load, metrics, record_writer};

/// Settings for a [`Platform`], then [`Builder::build`].
pub struct Builder {
    store: Arc<dyn Store>,
    config: Config,
    /// The process runtime's files and sockets; needed by the default runtimes.
    work_dir: Option<PathBuf>,
    /// Where the wasm runtime keeps compiled modules; `work_dir/wasm-cache` unless set.
    wasm_cache: Option<PathBuf>,
    runtimes: Vec<Arc<dyn Runtime>>,
    defaults: bool,
    sandbox: runtime::sandbox::Config,
}

impl Builder {
    pub(crate) fn new(store: Arc<dyn Store>) -> Builder {
        Builder {
            store,
            config: Config::default(),
            work_dir: None,
            wasm_cache: None,
            runtimes: Vec::new(),
            defaults: false,
            sandbox: runtime::sandbox::Config::default(),
        }
    }

    /// Platform-wide settings (the defaults otherwise).
    pub fn config(mut self, config: Config) -> Builder {
        self.config = config;
        self
    }

    /// The directory for the process runtime's files: runners, code, and the roots of confined handlers.
    pub fn work_dir(mut self, dir: impl Into<PathBuf>) -> Builder {
        self.work_dir = Some(dir.into());
        self
    }

    /// Keep compiled WebAssembly modules in `dir`, which may outlive the platform (`specfaas serve` and `run` use
    /// their data directory, so a restart does not recompile).
    pub fn wasm_cache(mut self, dir: impl Into<PathBuf>) -> Builder {
        self.wasm_cache = Some(dir.into());
        self
    }

    /// Adds a runtime, asked after the native runtime and any added before it, and before the default runtimes.
    pub fn runtime(mut self, runtime: Arc<dyn Runtime>) -> Builder {
        self.runtimes.push(runtime);
        self
    }

    /// How the default process runtime confines functions ([`runtime::sandbox`]; enforce unless set).
    pub fn sandbox(mut self, sandbox: runtime::sandbox::Config) -> Builder {
        self.sandbox = sandbox;
        self
    }

    /// Adds the process and WebAssembly runtimes ([`default_runtimes`]) after any added with
    /// [`Builder::runtime`]. Needs a [`Builder::work_dir`].
    pub fn default_runtimes(mut self) -> Builder {
        self.defaults = true;
        self
    }

    /// Starts the platform: its record writer and load sampler run as tasks, so this must be called inside a
    /// tokio runtime.
    pub fn build(self) -> Result<Platform, Error> {
        let Builder { store, config, work_dir, wasm_cache, runtimes: added, defaults, sandbox } = self;
        config.check().map_err(Error::Setup)?;
        let native = Arc::new(NativeRuntime::new());
        let mut runtimes: Vec<Arc<dyn Runtime>> = vec![native.clone()];
        runtimes.extend(added);
        let mut policy = None;
        let mode = defaults.then_some(sandbox.mode);
        if defaults {
            let work_dir = work_dir
                .ok_or_else(|| Error::Setup("the default runtimes need a work directory (Builder::work_dir)".into()))?;
            let cache = wasm_cache.unwrap_or_else(|| work_dir.join("wasm-cache"));
            let defaults = default_runtimes(&work_dir, &cache, &config, &sandbox)?;
            policy = Some(defaults.policy);
            runtimes.extend(defaults.runtimes);
        }
        let (recorder, rx) = mpsc::unbounded_channel::<RecorderMsg>();
        tokio::spawn(record_writer(store.clone(), std::time::Duration::from_millis(config.record_batch_ms), rx));
        let inner = Inner {
            store,
            native,
            runtimes,
            config,
            namespaces: RwLock::new(HashMap::new()),
            recorder,
            oracles: RwLock::new(HashMap::new()),
            metrics: metrics::Metrics::default(),
            load: load::sampler(),
            api_host: RwLock::new(None),
            policy,
            sandbox: mode,
            activation_keys: Default::default(),
        };
        Ok(Platform { inner: Arc::new(inner) })
    }
}

/// The runtimes every `specfaas` platform has beside the native one, and the network rules of its sandbox.
pub struct DefaultRuntimes {
    pub runtimes: Vec<Arc<dyn Runtime>>,
    /// The process runtime's network rules: the platform adds its API address when a server listens.
    pub policy: Arc<runtime::sandbox::Policy>,
}

/// The process runtime (Python and Node.js), with its files in `work_dir` and its handlers confined as `sandbox`
/// says, and the WebAssembly runtime, caching compiled modules in `wasm_cache` and burning at most
/// `config.wasm_fuel`.
pub fn default_runtimes(
    work_dir: &Path,
    wasm_cache: &Path,
    config: &Config,
    sandbox: &runtime::sandbox::Config,
) -> Result<DefaultRuntimes, Error> {
    let wasm = runtime::wasm::Options {
        cache_dir: Some(wasm_cache.to_path_buf()),
        fuel: config.wasm_fuel,
        ..Default::default()
    };
    let process = ProcessRuntime::with_sandbox(work_dir, sandbox)?;
    let policy = process.policy_handle();
    Ok(DefaultRuntimes { runtimes: vec![Arc::new(process), Arc::new(runtime::wasm::WasmRuntime::new(wasm)?)], policy })
}

/// The embedded, durable store of a data directory (`DATA_DIR/store.redb`), created if missing.
pub fn embedded_store(data_dir: &Path) -> Result<Arc<dyn Store>, Error> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| Error::File { path: data_dir.display().to_string(), message: format!("cannot create: {e}") })?;
    Ok(Arc::new(storage::RedbStore::open(data_dir.join("store.redb"))?))
}

impl Platform {
    /// A builder for a platform on `store`, with the native runtime only until runtimes are added.
    pub fn builder(store: Arc<dyn Store>) -> Builder {
        Builder::new(store)
    }

    /// The platform `specfaas run` and `specfaas serve` run: the [`embedded_store`] of `data_dir`, the default
    /// runtimes, and compiled wasm modules cached in `DATA_DIR/wasm-cache`. Set the work directory (and perhaps
    /// the config) before building.
    pub fn embedded(data_dir: &Path) -> Result<Builder, Error> {
        Ok(Builder::new(embedded_store(data_dir)?).wasm_cache(data_dir.join("wasm-cache")).default_runtimes())
    }

    /// A platform on `store` with the default runtimes, their files in `work_dir`: shorthand for
    /// `Platform::builder(store).work_dir(work_dir).config(config).default_runtimes().build()`.
    pub fn new(store: Arc<dyn Store>, work_dir: &Path, config: Config) -> Result<Platform, Error> {
        Platform::builder(store).work_dir(work_dir).config(config).default_runtimes().build()
    }
}
