//! Starting and stopping the server: [`Options`] → [`Server::start`] (opens the store, prepares the work
//! directory, creates the first key, binds, starts the restore in the background) → [`Running::serve`] until
//! shutdown, which removes the work directory.
//!
//! The **work directory** holds every tenant's code and the process runtime's sockets. It sits at a path that
//! depends only on the data directory ([`work_dir`]), so a server killed before it could remove it leaves it where
//! the next start on that data directory finds it and cleans it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Extension};
use axum::routing::get;
use serde_json::json;
use sha2::{Digest, Sha256};
use storage::Store;

use crate::admission::{Admission, NamespaceLimits};
use crate::error::{Error, Result};
use crate::resources::Resource;
use crate::{App, activations, invoke, keys, metrics, resources, restore};

/// How long a blocking invocation waits before answering `202` with the activation id (OpenWhisk: 60 s).
pub const BLOCKING_WAIT: Duration = Duration::from_secs(60);

/// Longest work directory path kept inside the data directory: a socket `WORK/N.sock` (N up to 20 digits) must fit
/// a Unix socket address (107 bytes).
const WORK_PATH_MAX: usize = 80;

#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub config: platform::Config,
    /// How long a blocking invocation waits before answering `202`.
    pub blocking_wait: Duration,
    pub limits: NamespaceLimits,
    /// How functions are confined.
    pub sandbox: runtime::sandbox::Config,
    /// Test hook: when set, the restore of each stored action or workflow first takes a permit from it, so a test
    /// can hold the restore where it wants. `None` (the default) restores at full speed.
    pub restore_gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl Options {
    /// Default settings on `data_dir`, listening on `listen`.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Options {
        Options {
            listen,
            data_dir,
            config: platform::Config::default(),
            blocking_wait: BLOCKING_WAIT,
            limits: NamespaceLimits::default(),
            sandbox: runtime::sandbox::Config::default(),
            restore_gate: None,
        }
    }
}

pub struct Server;

/// A started server: its address, the credential it created on first start (if it did), and how to serve.
pub struct Running {
    pub addr: SocketAddr,
    pub first_key: Option<keys::Credential>,
    /// The work directory (see the module's doc), removed when the server stops.
    pub work_dir: PathBuf,
    listener: tokio::net::TcpListener,
    router: Router,
    restore: tokio::task::JoinHandle<()>,
    restored: tokio::sync::watch::Receiver<bool>,
    platform: platform::Platform,
    _work: WorkDir,
}

/// Where the work directory of `data_dir` lives: `DATA_DIR/work` when that path is short enough for the sockets
/// in it, else `/tmp/specfaas-HASH`, HASH naming the data directory.
pub fn work_dir(data_dir: &Path) -> Result<PathBuf> {
    let data = std::fs::canonicalize(data_dir)
        .map_err(|e| Error::Start(format!("cannot resolve {}: {e}", data_dir.display())))?;
    let inside = data.join("work");
    if inside.as_os_str().len() <= WORK_PATH_MAX {
        return Ok(inside);
    }
    let hash = hex::encode(&Sha256::digest(data.as_os_str().as_encoded_bytes())[..8]);
    Ok(PathBuf::from(format!("/tmp/specfaas-{hash}")))
}

/// The work directory, created empty and removed on drop. Whatever a killed server left there is removed first, but
/// only if it carries [`WorkDir::MARKER`]: a directory of that name that specfaas did not make is never deleted.
struct WorkDir(PathBuf);

impl WorkDir {
    /// The file that marks a directory as a specfaas work directory.
    const MARKER: &str = ".specfaas-work";

    /// Only call it while holding the data directory's store open: the store admits one process, so no running
    /// server uses this directory.
    fn create(path: PathBuf) -> Result<WorkDir> {
        let fail = |e: std::io::Error| Error::Start(format!("cannot prepare {}: {e}", path.display()));
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() && path.join(Self::MARKER).is_file() => {
                std::fs::remove_dir_all(&path).map_err(fail)?
            }
            Ok(_) => {
                return Err(Error::Start(format!(
                    "{} exists and is not a specfaas work directory (it has no {}); move it away or use another \
                     data directory",
                    path.display(),
                    Self::MARKER
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(e)),
        }
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(0o700).create(&path).map_err(fail)?;
        let work = WorkDir(path);
        std::fs::write(work.0.join(Self::MARKER), "the work directory of a specfaas server; removed when it stops\n")
            .map_err(|e| Error::Start(format!("cannot prepare {}: {e}", work.0.display())))?;
        Ok(work)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // A handler that was starting as the server stopped may still add its root: try again a few times.
        let mut last = None;
        for _ in 0..20 {
            match std::fs::remove_dir_all(&self.0) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(e) => last = Some(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        if let Some(e) = last {
            eprintln!("warning: cannot remove the work directory {}: {e}", self.0.display());
        }
    }
}

impl Server {
    /// Opens the store, cleans and creates the work directory, creates the `guest` key on first start (written to
    /// `DATA_DIR/auth`), binds the listener, and starts redeploying the stored actions and workflows in the
    /// background (see `restore`).
    pub async fn start(options: Options) -> Result<Running> {
        let data_dir = &options.data_dir;
        // The store first: it admits one process per data directory, which makes cleaning the work directory safe.
        let store: Arc<dyn Store> = platform::embedded_store(data_dir).map_err(|e| Error::Start(e.to_string()))?;
        let work_path = work_dir(data_dir)?;
        let work = WorkDir::create(work_path.clone())?;
        let platform = platform::Platform::builder(store.clone())
            .wasm_cache(data_dir.join("wasm-cache"))
            .default_runtimes()
            .sandbox(options.sandbox.clone())
            .work_dir(&work.0)
            .config(options.config)
            .build()
            .map_err(|e| Error::Start(e.to_string()))?;
        let mut first_key = None;
        if keys::list(&*store, platform::DEFAULT_NAMESPACE).await?.is_empty() {
            let credential = keys::create(&*store, platform::DEFAULT_NAMESPACE).await?;
            let path = data_dir.join("auth");
            std::fs::write(&path, credential.auth())
                .map_err(|e| Error::Start(format!("cannot write {}: {e}", path.display())))?;
            first_key = Some(credential);
        }
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .map_err(|e| Error::Start(format!("cannot listen on {}: {e}", options.listen)))?;
        let addr = listener.local_addr().map_err(|e| Error::Start(e.to_string()))?;
        platform.set_api_host(&format!("http://{addr}"));
        let app = App {
            metrics: Arc::new(metrics::Exporter::new(platform.clone())),
            platform,
            store,
            blocking_wait: options.blocking_wait,
            admission: Admission::new(options.limits)?,
            locks: Default::default(),
            restore: Default::default(),
        };
        let order = restore::plan(&app).await?;
        let (finished, restored) = tokio::sync::watch::channel(false);
        let restore = tokio::spawn(restore::run(app.clone(), order, options.restore_gate.clone(), finished));
        let platform = app.platform.clone();
        let payload_max = options.config.payload_bytes_max;
        Ok(Running {
            addr,
            first_key,
            work_dir: work_path,
            listener,
            router: router(app, payload_max),
            restore,
            restored,
            platform,
            _work: work,
        })
    }
}

impl Running {
    /// Resolves once every resource stored before the start is redeployed (or failed to, which is logged), or
    /// the server stopped first.
    pub fn restored(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut restored = self.restored.clone();
        async move {
            let _ = restored.wait_for(|done| *done).await;
        }
    }

    /// Serves until `shutdown` resolves. Then it stops the restore if it is still going, persists the activation
    /// records still queued, releases the store and removes the work directory.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> Result<()> {
        let Running { listener, router, restore, platform, _work, .. } = self;
        let served = axum::serve(listener, router).with_graceful_shutdown(shutdown).await;
        restore.abort();
        let _ = restore.await;
        platform.shutdown().await;
        drop(_work);
        served.map_err(|e| Error::Internal(e.to_string()))
    }
}

fn router(app: App, payload_max: usize) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics::render))
        .route("/api/v1/namespaces", get(namespaces))
        .merge(resource_routes(Resource::Action, "actions"))
        .merge(resource_routes(Resource::Workflow, "workflows"))
        .route("/api/v1/namespaces/{ns}/activations", get(activations::list))
        .route("/api/v1/namespaces/{ns}/activations/{id}", get(activations::get))
        .route("/api/v1/namespaces/{ns}/activations/{id}/result", get(activations::result))
        .route("/api/v1/namespaces/{ns}/activations/{id}/logs", get(activations::logs))
        // A little over the payload limit, so the handlers can answer an oversized body with OpenWhisk's error.
        .layer(DefaultBodyLimit::max(payload_max + 64 * 1024))
        .layer(axum::middleware::from_fn_with_state(app.clone(), metrics::record))
        .with_state(app)
}

/// The routes of one kind of resource; the handlers learn which kind from the request's extensions.
fn resource_routes(kind: Resource, plural: &str) -> Router<App> {
    Router::new()
        .route(&format!("/api/v1/namespaces/{{ns}}/{plural}"), get(resources::list))
        .route(
            &format!("/api/v1/namespaces/{{ns}}/{plural}/{{name}}"),
            get(resources::get).put(resources::put).delete(resources::delete).post(invoke::invoke_resource),
        )
        .layer(Extension(kind))
}

/// Liveness, and how many stored actions and workflows are still being restored after the start.
async fn health(axum::extract::State(app): axum::extract::State<App>) -> axum::Json<serde_json::Value> {
    axum::Json(json!({"status": "ok", "restoring": app.restore.len()}))
}

async fn namespaces(
    axum::extract::State(app): axum::extract::State<App>,
    headers: axum::http::HeaderMap,
) -> Result<axum::Json<serde_json::Value>> {
    Ok(axum::Json(json!([crate::auth::authenticate(&app, &headers).await?])))
}
