//! Extractors that refuse in our error shape (`docs/PROTOCOL.md` §4)
//! where axum's own would answer in plain text: the JSON body, the query
//! string and path parameters.

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::state::AppState;

/// A request body that must be JSON, read within `MAX_BODY_BYTES`. Unlike
/// axum's `Json`, every refusal has our error shape.
pub(crate) struct JsonBody(pub(crate) Bytes);

impl FromRequest<AppState> for JsonBody {
    type Rejection = Error;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Error> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .unwrap_or_default();
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(Error::UnsupportedMediaType(format!(
                "expected `Content-Type: application/json`, got `{}`",
                if content_type.is_empty() {
                    "none"
                } else {
                    &content_type
                }
            )));
        }
        // A client trickling its body must not hold a connection forever.
        let limit = state.config.request_timeout;
        match tokio::time::timeout(limit, Bytes::from_request(request, state)).await {
            Ok(Ok(body)) => Ok(Self(body)),
            Ok(Err(rejection)) => Err(body_error(&rejection, state.config.max_body_bytes)),
            Err(_) => Err(Error::RequestTimeout { limit }),
        }
    }
}

fn body_error(rejection: &BytesRejection, limit: usize) -> Error {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::PayloadTooLarge { limit }
    } else {
        Error::InvalidRequest(format!(
            "could not read the request body: {}",
            rejection.body_text()
        ))
    }
}

/// axum's `Query`, refusing in our error shape (a duplicate or mistyped
/// parameter names itself in the message).
pub(crate) struct Query<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Error> {
        axum::extract::Query::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|rejection| Error::InvalidRequest(rejection.body_text()))
    }
}

/// axum's `Path`, refusing in our error shape.
pub(crate) struct Path<T>(pub(crate) T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Error> {
        axum::extract::Path::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|rejection| Error::InvalidRequest(rejection.body_text()))
    }
}
