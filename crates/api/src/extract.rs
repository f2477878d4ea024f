//! Request extractors that answer with [`Error`] in OpenWhisk's shape rather than axum's plain-text rejections:
//! [`Query`], a query string parsed by serde into its typed document.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// A query string as `T` (see `documents` for each route's); a parameter that does not parse is a `400` naming it.
pub(crate) struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        let text = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(text.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|e| Error::Query { parameter: e.path().to_string(), message: e.into_inner().to_string() })
    }
}
