//! Authentication and authorization of a request: its HTTP Basic `uuid:key` credential, the namespace it belongs
//! to (a namespace key from [`crate::keys`], or a running activation's ephemeral key), and whether it may use the
//! namespace its path names.

use axum::http::{HeaderMap, header};
use base64::Engine as _;

use crate::App;
use crate::error::{Error, Result};

/// The request's credential (HTTP Basic `uuid:key`).
pub(crate) fn credential(headers: &HeaderMap) -> Result<(String, String)> {
    let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or(Error::Unauthenticated)?;
    let encoded = value.strip_prefix("Basic ").ok_or(Error::Unauthenticated)?;
    let decoded =
        base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| Error::Unauthenticated)?;
    let decoded = String::from_utf8(decoded).map_err(|_| Error::Unauthenticated)?;
    let (uuid, key) = decoded.split_once(':').ok_or(Error::Unauthenticated)?;
    Ok((uuid.to_string(), key.to_string()))
}

/// The namespace the request's key belongs to: a namespace key, or a running activation's ephemeral key.
pub(crate) async fn authenticate(app: &App, headers: &HeaderMap) -> Result<String> {
    let (uuid, key) = credential(headers)?;
    crate::keys::verify(&*app.store, &uuid, &key)
        .await
        .or_else(|| app.platform.activation_key_namespace(&uuid, &key))
        .ok_or(Error::Unauthenticated)
}

/// Resolves the path's namespace (`_` is the key's own) and checks the key may use it.
pub(crate) async fn namespace(app: &App, headers: &HeaderMap, ns: &str) -> Result<String> {
    let own = authenticate(app, headers).await?;
    if ns == "_" || ns == own {
        return Ok(own);
    }
    Err(Error::Forbidden { namespace: ns.to_string() })
}
