//! Errors as OpenAI's API answers them (`docs/PROTOCOL.md` §7), so that the
//! SDKs raise their own typed errors: the status, and
//! `{"error": {"message", "type", "code"}}`.

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::Error;

/// An [`Error`] answered on `/v1`.
#[derive(Debug)]
pub(super) struct OpenAiError(pub(super) Error);

impl From<Error> for OpenAiError {
    fn from(error: Error) -> Self {
        Self(error)
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let mut response = (status, Json(body(&self.0))).into_response();
        // Retry-After and WWW-Authenticate mean the same to OpenAI clients.
        let ours = self.0.into_response();
        for name in [
            axum::http::header::RETRY_AFTER,
            axum::http::header::WWW_AUTHENTICATE,
        ] {
            if let Some(value) = ours.headers().get(&name) {
                response.headers_mut().insert(name, value.clone());
            }
        }
        response
    }
}

/// The body of an error response, and the last chunk of a `/v1` stream
/// that fails after it began, which the SDKs raise as an error of their own.
/// OpenAI's fields are the ones our own protocol uses (`docs/PROTOCOL.md` §4).
pub(super) fn body(error: &Error) -> impl Serialize + use<> {
    error.body()
}
