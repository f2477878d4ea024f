//! `specfaas serve`: the platform behind an HTTP API compatible with Apache OpenWhisk's REST API v1, so the
//! official `openwhisk` clients and existing tooling work unchanged.
//!
//! - [`Server`]: options → [`Server::start`] (binds, restores deployed actions, creates the first key) →
//!   [`Running::serve`] until shutdown.
//! - [`keys`]: `uuid:key` credentials per namespace, stored hashed and compared in constant time.
//! - `actions`: action definitions in OpenWhisk's JSON shapes, persisted in the store so a restart keeps them.
//! - Routes under `/api/v1`: namespaces (list); actions (`PUT`, `GET`, list, `DELETE`, `POST` to invoke, blocking or
//!   not); activations (list, one, its result, its logs). `/health` and `/metrics` (Prometheus text) answer
//!   without a key.
//!
//! **API boundary:** this crate reaches storage only for its own records (keys, action definitions) in the system
//! namespace; everything a function does goes through [`platform::Platform`]. Errors have OpenWhisk's shape,
//! `{"error": "...", "code": "..."}`, with the matching status.

mod actions;
pub mod keys;
mod metrics;
mod resources;
mod workflows;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use serde_json::{Value, json};
use storage::Store;

use resources::Resource;

use runtime::HostReply;

/// How long a blocking invocation waits before answering `202` with the activation id (OpenWhisk: 60 s).
pub const BLOCKING_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub config: platform::Config,
    /// How long a blocking invocation waits before answering `202`.
    pub blocking_wait: Duration,
    pub limits: NamespaceLimits,
}

/// Per-namespace invocation limits; past either, invocations get `429`. Defaults are OpenWhisk's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NamespaceLimits {
    /// Invocations of one namespace in flight at once.
    pub concurrent_invocations_max: u32,
    /// Invocations of one namespace per minute (a token bucket refilled evenly over the minute).
    pub invocations_per_minute_max: u32,
}

impl Default for NamespaceLimits {
    fn default() -> Self {
        NamespaceLimits { concurrent_invocations_max: 100, invocations_per_minute_max: 60 }
    }
}

type Limiter = governor::DefaultKeyedRateLimiter<String>;

pub struct Server;

/// A started server: its address, the credential it created on first start (if it did), and how to serve.
pub struct Running {
    pub addr: SocketAddr,
    pub first_key: Option<keys::Credential>,
    listener: tokio::net::TcpListener,
    router: Router,
    /// Stopped once serving ends, so its record writer lets go of the store before `serve` returns.
    platform: platform::Platform,
    /// The process runtime's files and sockets (a short path), removed when the server stops.
    _work: tempfile::TempDir,
}

#[derive(Clone)]
struct App {
    platform: platform::Platform,
    store: Arc<dyn Store>,
    blocking_wait: Duration,
    requests: Arc<metrics::Requests>,
    limits: NamespaceLimits,
    per_minute: Arc<Limiter>,
    /// Invocations in flight, by namespace.
    in_flight: Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>,
}

/// Holds one of a namespace's concurrent-invocation slots until dropped.
struct Slot {
    in_flight: Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>,
    namespace: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut all = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = all.get_mut(&self.namespace) {
            *n = n.saturating_sub(1);
        }
    }
}

impl App {
    /// Admits one invocation of `namespace`, or answers 429 as OpenWhisk does.
    fn admit(&self, namespace: &str) -> Result<Slot> {
        let too_many = |m: String| error(StatusCode::TOO_MANY_REQUESTS, m);
        if self.per_minute.check_key(&namespace.to_string()).is_err() {
            let allowed = self.limits.invocations_per_minute_max;
            return Err(too_many(format!("Too many requests in the last minute (allowed: {allowed}).")));
        }
        let mut all = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let n = all.entry(namespace.to_string()).or_insert(0);
        if *n >= self.limits.concurrent_invocations_max {
            let allowed = self.limits.concurrent_invocations_max;
            return Err(too_many(format!("Too many concurrent requests in flight (count: {n}, allowed: {allowed}).")));
        }
        *n += 1;
        Ok(Slot { in_flight: self.in_flight.clone(), namespace: namespace.to_string() })
    }
}

impl Server {
    /// Opens the store, restores deployed actions, creates the `guest` key on first start (written to
    /// `DATA_DIR/auth`), and binds the listener.
    pub async fn start(options: Options) -> std::result::Result<Running, String> {
        let work = tempfile::Builder::new().prefix("sfs").tempdir_in("/tmp").map_err(|e| e.to_string())?;
        let platform = platform::Platform::embedded(&options.data_dir)
            .and_then(|b| b.work_dir(work.path()).config(options.config).build())
            .map_err(|e| e.to_string())?;
        let store = platform.store().clone();
        actions::restore(&platform, &*store).await;
        workflows::restore(&platform, &*store).await;
        let mut first_key = None;
        if keys::list(&*store, platform::DEFAULT_NAMESPACE).await?.is_empty() {
            let credential = keys::create(&*store, platform::DEFAULT_NAMESPACE).await?;
            let path = options.data_dir.join("auth");
            std::fs::write(&path, credential.auth()).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            first_key = Some(credential);
        }
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", options.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        platform.set_api_host(&format!("http://{addr}"));
        let per_minute = std::num::NonZeroU32::new(options.limits.invocations_per_minute_max)
            .ok_or("invocations_per_minute_max must be at least 1")?;
        let app = App {
            platform: platform.clone(),
            store,
            blocking_wait: options.blocking_wait,
            requests: Default::default(),
            limits: options.limits,
            per_minute: Arc::new(governor::RateLimiter::keyed(governor::Quota::per_minute(per_minute))),
            in_flight: Default::default(),
        };
        let payload_max = options.config.payload_bytes_max;
        Ok(Running { addr, first_key, listener, router: router(app, payload_max), platform, _work: work })
    }
}

impl Running {
    /// Serves until `shutdown` resolves.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::result::Result<(), String> {
        let served =
            axum::serve(self.listener, self.router).with_graceful_shutdown(shutdown).await.map_err(|e| e.to_string());
        // Outstanding activation records are persisted, and the writer's handle on the store is gone, once this
        // returns: the data directory can be reopened at once.
        self.platform.shutdown().await;
        served
    }
}

fn router(app: App, payload_max: usize) -> Router {
    Router::new()
        .route("/health", get(|| async { axum::Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics::render))
        .route("/api/v1/namespaces", get(namespaces))
        .merge(resource_routes(Resource::Action, "actions"))
        .merge(resource_routes(Resource::Workflow, "workflows"))
        .route("/api/v1/namespaces/{ns}/activations", get(list_activations))
        .route("/api/v1/namespaces/{ns}/activations/{id}", get(get_activation))
        .route("/api/v1/namespaces/{ns}/activations/{id}/result", get(activation_result))
        .route("/api/v1/namespaces/{ns}/activations/{id}/logs", get(activation_logs))
        // A little over the payload limit, so the handlers can answer an oversized body with OpenWhisk's error.
        .layer(DefaultBodyLimit::max(payload_max + 64 * 1024))
        .layer(axum::middleware::from_fn_with_state(app.clone(), metrics::record))
        .with_state(app)
}

/// The routes of one kind of resource; the handlers learn which kind from the request's extensions.
fn resource_routes(kind: Resource, plural: &str) -> Router<App> {
    Router::new()
        .route(&format!("/api/v1/namespaces/{{ns}}/{plural}"), get(list_resource))
        .route(
            &format!("/api/v1/namespaces/{{ns}}/{plural}/{{name}}"),
            get(get_resource).put(put_resource).delete(delete_resource).post(invoke_resource),
        )
        .layer(Extension(kind))
}

/// An error in OpenWhisk's shape.
pub(crate) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
        let mut response = (self.0, axum::Json(json!({"error": self.1, "code": code}))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"specfaas\""));
        }
        response
    }
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError(status, message.into())
}

pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

fn not_found() -> ApiError {
    error(StatusCode::NOT_FOUND, "The requested resource does not exist.")
}

type Result<T> = std::result::Result<T, ApiError>;

/// The request's credential (HTTP Basic `uuid:key`).
fn credential(headers: &HeaderMap) -> Result<(String, String)> {
    let invalid = || error(StatusCode::UNAUTHORIZED, "The supplied authentication is invalid.");
    let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or_else(invalid)?;
    let encoded = value.strip_prefix("Basic ").ok_or_else(invalid)?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| invalid())?;
    let decoded = String::from_utf8(decoded).map_err(|_| invalid())?;
    let (uuid, key) = decoded.split_once(':').ok_or_else(invalid)?;
    Ok((uuid.to_string(), key.to_string()))
}

/// The namespace the request's key belongs to: a namespace key, or a running activation's ephemeral key.
async fn authenticate(app: &App, headers: &HeaderMap) -> Result<String> {
    let (uuid, key) = credential(headers)?;
    keys::verify(&*app.store, &uuid, &key)
        .await
        .or_else(|| app.platform.activation_key_namespace(&uuid, &key))
        .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "The supplied authentication is invalid."))
}

/// Resolves the path's namespace (`_` is the key's own) and checks the key may use it.
async fn namespace(app: &App, headers: &HeaderMap, ns: &str) -> Result<String> {
    let own = authenticate(app, headers).await?;
    if ns == "_" || ns == own {
        return Ok(own);
    }
    Err(error(StatusCode::FORBIDDEN, format!("The supplied authentication is not authorized to access '{ns}'.")))
}

async fn namespaces(State(app): State<App>, headers: HeaderMap) -> Result<axum::Json<Value>> {
    Ok(axum::Json(json!([authenticate(&app, &headers).await?])))
}

async fn list_resource(
    State(app): State<App>,
    Extension(kind): Extension<Resource>,
    headers: HeaderMap,
    Path(ns): Path<String>,
) -> Result<axum::Json<Value>> {
    let ns = namespace(&app, &headers, &ns).await?;
    Ok(axum::Json(Value::Array(kind.list(&*app.store, &ns).await?)))
}

async fn get_resource(
    State(app): State<App>,
    Extension(kind): Extension<Resource>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> Result<axum::Json<Value>> {
    let ns = namespace(&app, &headers, &ns).await?;
    kind.get(&*app.store, &ns, &name).await?.map(axum::Json).ok_or_else(not_found)
}

async fn put_resource(
    State(app): State<App>,
    Extension(kind): Extension<Resource>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    body: Bytes,
) -> Result<axum::Json<Value>> {
    let ns = namespace(&app, &headers, &ns).await?;
    let overwrite = query.get("overwrite").is_some_and(|v| v == "true");
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("The request content was malformed: {e}")))?;
    Ok(axum::Json(kind.put(&app.platform, &*app.store, &ns, &name, &body, overwrite).await?))
}

async fn delete_resource(
    State(app): State<App>,
    Extension(kind): Extension<Resource>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> Result<axum::Json<Value>> {
    let ns = namespace(&app, &headers, &ns).await?;
    kind.delete(&app.platform, &*app.store, &ns, &name).await?.map(axum::Json).ok_or_else(not_found)
}

async fn invoke_resource(
    State(app): State<App>,
    Extension(kind): Extension<Resource>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    body: Bytes,
) -> Result<Response> {
    let ns = namespace(&app, &headers, &ns).await?;
    if kind.get(&*app.store, &ns, &name).await?.is_none() {
        return Err(not_found());
    }
    // Made by a running activation with its ephemeral key: an implicit call of that activation.
    let (uuid, key) = credential(&headers)?;
    if app.platform.activation_key_namespace(&uuid, &key).is_some() {
        return invoke_as_activation(&app, &uuid, &key, &name, &query, &body).await;
    }
    invoke(app, ns, name, query, body).await
}

/// An invocation by a running function through the API: it goes through the engine as an implicit call, so it is
/// speculated and committed with its caller like `specfaas.invoke`. It always waits for the callee.
async fn invoke_as_activation(
    app: &App,
    uuid: &str,
    key: &str,
    name: &str,
    query: &std::collections::HashMap<String, String>,
    body: &Bytes,
) -> Result<Response> {
    let input: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| error(StatusCode::BAD_REQUEST, format!("The request content was malformed: {e}")))?
    };
    let reply = app
        .platform
        .invoke_as_activation(uuid, key, name, input)
        .await
        .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "The supplied authentication is invalid."))?;
    let (status, state, result) = match reply {
        HostReply::Ok(v) => (StatusCode::OK, "success", v),
        HostReply::FunctionFailed(e) => (StatusCode::BAD_GATEWAY, "application error", json!({"error": e})),
        HostReply::Refused(m) => return Err(error(StatusCode::BAD_REQUEST, m)),
    };
    let body = if query.get("result").is_some_and(|v| v == "true") {
        result
    } else {
        json!({"activationId": uuid::Uuid::new_v4().simple().to_string(), "name": name,
               "response": {"status": state, "success": status == StatusCode::OK, "result": result}})
    };
    Ok((status, axum::Json(body)).into_response())
}

/// Invokes an action or workflow: blocking (up to the blocking wait) or not, the whole record or the result.
async fn invoke(
    app: App,
    ns: String,
    name: String,
    query: std::collections::HashMap<String, String>,
    body: Bytes,
) -> Result<Response> {
    let limit = app.platform.config().payload_bytes_max;
    if body.len() > limit {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("The request content was {} bytes, over the limit of {limit} bytes.", body.len()),
        ));
    }
    let input: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| error(StatusCode::BAD_REQUEST, format!("The request content was malformed: {e}")))?
    };
    if !input.is_object() {
        return Err(error(StatusCode::BAD_REQUEST, "The request content must be a JSON object of parameters."));
    }
    let blocking = query.get("blocking").is_some_and(|v| v == "true");
    let result_only = query.get("result").is_some_and(|v| v == "true");
    let slot = app.admit(&ns)?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let options = platform::InvokeOptions { activation_id: Some(id.clone()), ..Default::default() };
    let platform = app.platform.clone();
    let invocation = tokio::spawn(async move {
        let _slot = slot; // the concurrency slot is held until the invocation ends, blocking or not
        platform.invoke_with(&ns, &name, input, options).await
    });
    if !blocking {
        return Ok((StatusCode::ACCEPTED, axum::Json(json!({"activationId": id}))).into_response());
    }
    let inv = match tokio::time::timeout(app.blocking_wait, invocation).await {
        Err(_) => return Ok((StatusCode::ACCEPTED, axum::Json(json!({"activationId": id}))).into_response()),
        Ok(Err(e)) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, format!("the invocation failed: {e}"))),
        Ok(Ok(Err(e))) => return Err(platform_error(e)),
        Ok(Ok(Ok(inv))) => inv,
    };
    // OpenWhisk answers a blocking invocation that ended in an error with 502, the record (or result) included.
    let status = match inv.status {
        platform::Status::Success => StatusCode::OK,
        platform::Status::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_GATEWAY,
    };
    let body = if result_only { inv.result.clone() } else { inv.record.to_json() };
    Ok((status, axum::Json(body)).into_response())
}

fn platform_error(e: platform::Error) -> ApiError {
    match e {
        platform::Error::NotFound { .. } => error(StatusCode::NOT_FOUND, "The requested resource does not exist."),
        platform::Error::PayloadTooLarge { .. } => error(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
        platform::Error::InputNotObject(_) => error(StatusCode::BAD_REQUEST, e.to_string()),
        other => error(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

async fn list_activations(
    State(app): State<App>,
    headers: HeaderMap,
    Path(ns): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Result<axum::Json<Value>> {
    let ns = namespace(&app, &headers, &ns).await?;
    let number = |k: &str| -> Result<Option<u64>> {
        query
            .get(k)
            .map(|v| v.parse::<u64>().map_err(|_| error(StatusCode::BAD_REQUEST, format!("'{k}' must be a number"))))
            .transpose()
    };
    let q = storage::ActivationQuery {
        name: query.get("name").cloned(),
        since_ms: number("since")?,
        upto_ms: number("upto")?,
        skip: number("skip")?.unwrap_or(0) as usize,
        limit: number("limit")?.unwrap_or(30).min(200) as usize,
    };
    let docs = query.get("docs").is_some_and(|v| v == "true");
    app.platform.flush_records().await;
    let list = app
        .store
        .list_activations(&ns, &q)
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(axum::Json(Value::Array(
        list.into_iter()
            .map(|e| {
                let mut r = e.record;
                if !docs && let Value::Object(m) = &mut r {
                    m.remove("logs");
                    if let Some(Value::Object(resp)) = m.remove("response") {
                        m.insert("statusCode".into(), resp.get("statusCode").cloned().unwrap_or(Value::Null));
                    }
                }
                r
            })
            .collect(),
    )))
}

async fn activation(app: &App, headers: &HeaderMap, ns: &str, id: &str) -> Result<Value> {
    let ns = namespace(app, headers, ns).await?;
    app.platform.flush_records().await;
    app.platform
        .activation(&ns, id)
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .ok_or_else(not_found)
}

async fn get_activation(
    State(app): State<App>,
    headers: HeaderMap,
    Path((ns, id)): Path<(String, String)>,
) -> Result<axum::Json<Value>> {
    Ok(axum::Json(activation(&app, &headers, &ns, &id).await?))
}

async fn activation_result(
    State(app): State<App>,
    headers: HeaderMap,
    Path((ns, id)): Path<(String, String)>,
) -> Result<axum::Json<Value>> {
    Ok(axum::Json(activation(&app, &headers, &ns, &id).await?["response"].clone()))
}

async fn activation_logs(
    State(app): State<App>,
    headers: HeaderMap,
    Path((ns, id)): Path<(String, String)>,
) -> Result<axum::Json<Value>> {
    let record = activation(&app, &headers, &ns, &id).await?;
    Ok(axum::Json(json!({"logs": record["logs"]})))
}
