//! [`Error`]: everything the API can answer with besides success, and how each maps to an HTTP status and
//! OpenWhisk's error body, `{"error": "...", "code": "..."}` ([`ErrorBody`]).

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use serde::{Deserialize, Serialize};

/// OpenWhisk's error body. `code` identifies the occurrence (OpenWhisk: the transaction id), for a log search.
/// It lives here, not among the documents, so that the documents may use [`Error`] without an import circle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub code: String,
}

impl ErrorBody {
    pub fn new(error: String) -> ErrorBody {
        ErrorBody { error, code: uuid::Uuid::new_v4().simple().to_string()[..16].to_string() }
    }
}

/// How long a client is told to wait before retrying a resource that is still being restored.
pub const RESTORE_RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No key, a malformed one, or one that does not match (401). Never echoes the key.
    #[error("The supplied authentication is invalid.")]
    Unauthenticated,
    /// The key is valid but not for this namespace (403).
    #[error("The supplied authentication is not authorized to access '{namespace}'.")]
    Forbidden { namespace: String },
    /// A sequence component in another namespace (403).
    #[error("component '{component}' is in namespace '{owner}', not '{namespace}'")]
    ForeignComponent { component: String, owner: String, namespace: String },
    /// No such action, workflow or activation (404).
    #[error("The requested resource does not exist.")]
    NotFound,
    /// A body that is not JSON, or JSON of the wrong shape (400); `at` is the path of the offending field.
    #[error("The request content was malformed: {}{message}", at.as_deref().map(|a| format!("'{a}': ")).unwrap_or_default())]
    Malformed { at: Option<String>, message: String },
    /// A query parameter that does not parse (400).
    #[error("'{parameter}' {message}")]
    Query { parameter: String, message: String },
    /// A limit of an action outside its documented range (400).
    #[error("limit '{limit}' must be {min}..={max}{unit}, got {got}")]
    Limit { limit: &'static str, min: u64, max: u64, unit: &'static str, got: u64 },
    /// Anything else wrong with what was sent (400): a bad kind, code that does not load, an invalid workflow.
    #[error("{0}")]
    Invalid(String),
    /// Creating a resource that exists without `overwrite`, or under a name the other kind holds (409).
    #[error("{0}")]
    Conflict(String),
    /// A body over the payload limit (413).
    #[error("The request content was {size} bytes, over the limit of {limit} bytes.")]
    PayloadTooLarge { size: usize, limit: usize },
    /// A namespace past its invocations per minute (429).
    #[error("Too many requests in the last minute (allowed: {allowed}).")]
    RateLimited { allowed: u32 },
    /// A namespace past its concurrent invocations (429).
    #[error("Too many concurrent requests in flight (count: {count}, allowed: {allowed}).")]
    TooManyInFlight { count: u32, allowed: u32 },
    /// The server has just started and has not redeployed this stored resource yet (503, with `Retry-After`).
    #[error("{what} '{name}' is still being restored after a restart; retry shortly")]
    Restoring { what: &'static str, name: String },
    /// The store failed (500).
    #[error("storage: {0}")]
    Storage(#[from] storage::Error),
    /// Starting the server failed: a directory, the listener, a setting.
    #[error("{0}")]
    Start(String),
    /// A bug or an unexpected failure of the platform (500).
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Unauthenticated => StatusCode::UNAUTHORIZED,
            Error::Forbidden { .. } | Error::ForeignComponent { .. } => StatusCode::FORBIDDEN,
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::Malformed { .. } | Error::Query { .. } | Error::Limit { .. } | Error::Invalid(_) => {
                StatusCode::BAD_REQUEST
            }
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::RateLimited { .. } | Error::TooManyInFlight { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Restoring { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Storage(_) | Error::Start(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A JSON body that does not parse, or does not fit its document type.
    pub(crate) fn malformed(e: serde_path_to_error::Error<serde_json::Error>) -> Error {
        let path = e.path().to_string();
        let at = (path != ".").then_some(path);
        Error::Malformed { at, message: e.into_inner().to_string() }
    }
}

impl From<platform::Error> for Error {
    fn from(e: platform::Error) -> Error {
        match e {
            platform::Error::NotFound { .. } => Error::NotFound,
            platform::Error::PayloadTooLarge { size, limit } => Error::PayloadTooLarge { size, limit },
            platform::Error::InputNotObject(_) => Error::Invalid(e.to_string()),
            other => Error::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody::new(self.to_string());
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            Error::Unauthenticated => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"specfaas\""));
            }
            Error::Restoring { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RESTORE_RETRY_AFTER.as_secs()));
            }
            _ => {}
        }
        response
    }
}
