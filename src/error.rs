//! The one error type of the HTTP surface, and the only place errors become
//! a status code and a JSON body (`docs/PROTOCOL.md` §4).
//!
//! Each variant says who is to blame: the client (4xx), the upstream
//! (502/504) or us (500/503). Messages are written for the caller and never
//! carry internals, our upstream key or a prompt.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::event::ErrorCode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Error {
    /// The request is malformed; the message names the field.
    InvalidRequest(String),
    Unauthorized,
    /// A bearer token that is not a key and not a valid signed token: the
    /// message says why (expired, bad signature...), never what it held.
    TokenRejected(String),
    /// An unknown or expired stream id, or an unknown path.
    NotFound(String),
    PayloadTooLarge {
        limit: usize,
    },
    /// The path and query are longer than we read.
    UriTooLong {
        limit: usize,
    },
    /// Too many header fields, or too many bytes of them.
    HeadersTooLarge {
        max_headers: usize,
        max_bytes: usize,
    },
    /// A known path asked with a method it does not serve.
    MethodNotAllowed,
    /// The client sent its body too slowly.
    RequestTimeout {
        limit: std::time::Duration,
    },
    UnsupportedMediaType(String),
    RateLimited {
        retry_after_secs: u64,
    },
    /// The caller's `TOKENS_PER_MINUTE` are spent for this minute.
    TokensSpent {
        limit: u64,
        retry_after_secs: u64,
    },
    /// The upstream answered with an error status.
    Upstream {
        status: u16,
        message: String,
    },
    /// The upstream could not be reached, or answered something that is not an event stream.
    BadGateway(String),
    /// The upstream did not answer in time.
    UpstreamTimeout(String),
    /// The generation failed after it had begun (an in-stream `error` of
    /// `docs/PROTOCOL.md` §5), told to a `/v1` client, which has no `error` event to read.
    Interrupted {
        code: ErrorCode,
        message: String,
    },
    /// We are at a configured limit.
    Overloaded(String),
    /// `/readyz`: the upstream has not answered recently.
    NotReady(String),
    /// A bug or an impossible state on our side.
    Internal(String),
}

impl Error {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized | Self::TokenRejected(_) => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited { .. } | Self::TokensSpent { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Upstream { .. } | Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Interrupted { code, .. } => match code {
                ErrorCode::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
                ErrorCode::UpstreamError
                | ErrorCode::UpstreamDisconnected
                | ErrorCode::InvalidUpstreamData => StatusCode::BAD_GATEWAY,
                // Ours, not the upstream's: a retry (elsewhere) may well succeed.
                ErrorCode::Cancelled | ErrorCode::ShuttingDown | ErrorCode::ResumeGap => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            },
            Self::Overloaded(_) | Self::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable code of `docs/PROTOCOL.md` §4.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::Unauthorized | Self::TokenRejected(_) => "unauthorized",
            Self::NotFound(_) => "not_found",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UriTooLong { .. } => "uri_too_long",
            Self::HeadersTooLarge { .. } => "headers_too_large",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RequestTimeout { .. } => "request_timeout",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::RateLimited { .. } | Self::TokensSpent { .. } => "rate_limited",
            Self::Upstream { .. } | Self::BadGateway(_) => "upstream_error",
            Self::UpstreamTimeout(_) => "upstream_timeout",
            Self::Interrupted { code, .. } => code.as_str(),
            Self::Overloaded(_) => "overloaded",
            Self::NotReady(_) => "not_ready",
            Self::Internal(_) => "internal_error",
        }
    }

    /// OpenAI's error `type`, so SDKs classify our errors as they do theirs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_)
            | Self::NotFound(_)
            | Self::PayloadTooLarge { .. }
            | Self::UriTooLong { .. }
            | Self::HeadersTooLarge { .. }
            | Self::MethodNotAllowed
            | Self::RequestTimeout { .. }
            | Self::UnsupportedMediaType(_) => "invalid_request_error",
            Self::Unauthorized | Self::TokenRejected(_) => "authentication_error",
            Self::RateLimited { .. } | Self::TokensSpent { .. } => "rate_limit_error",
            Self::Upstream { .. } | Self::BadGateway(_) | Self::UpstreamTimeout(_) => {
                "upstream_error"
            }
            Self::Interrupted {
                code: ErrorCode::Cancelled | ErrorCode::ShuttingDown | ErrorCode::ResumeGap,
                ..
            } => "server_error",
            Self::Interrupted { .. } => "upstream_error",
            Self::Overloaded(_) | Self::NotReady(_) | Self::Internal(_) => "server_error",
        }
    }

    pub(crate) fn message(&self) -> String {
        match self {
            Self::InvalidRequest(message)
            | Self::NotFound(message)
            | Self::UnsupportedMediaType(message)
            | Self::BadGateway(message)
            | Self::UpstreamTimeout(message)
            | Self::Overloaded(message)
            | Self::NotReady(message)
            | Self::Internal(message)
            | Self::TokenRejected(message)
            | Self::Interrupted { message, .. } => message.clone(),
            Self::Unauthorized => {
                "a valid `Authorization: Bearer <key>` header is required".to_owned()
            }
            Self::PayloadTooLarge { limit } => {
                format!("the request body is larger than the limit of {limit} bytes")
            }
            Self::UriTooLong { limit } => {
                format!("the request URI is longer than the limit of {limit} bytes")
            }
            Self::HeadersTooLarge {
                max_headers,
                max_bytes,
            } => format!(
                "the request headers exceed the limit of {max_headers} fields or {max_bytes} bytes"
            ),
            Self::MethodNotAllowed => {
                "this path does not serve that method; see the `Allow` header".to_owned()
            }
            Self::RateLimited { retry_after_secs } => {
                format!("too many requests; retry after {retry_after_secs} s")
            }
            Self::TokensSpent {
                limit,
                retry_after_secs,
            } => format!(
                "this minute's {limit} tokens (TOKENS_PER_MINUTE) are spent; retry after {retry_after_secs} s"
            ),
            Self::RequestTimeout { limit } => {
                format!(
                    "the request body did not arrive within {} s",
                    limit.as_secs_f64()
                )
            }
            Self::Upstream { status, message } => {
                format!("the upstream answered {status}: {message}")
            }
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl std::error::Error for Error {}

#[derive(Serialize)]
struct Body {
    error: Detail,
}

#[derive(Serialize)]
struct Detail {
    code: &'static str,
    message: String,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_status: Option<u16>,
}

impl Error {
    /// `{"error": {"code", "message", "type"}}`: the body of an error
    /// response, and also the last chunk of a `/v1` stream that fails after
    /// it began, which OpenAI SDKs raise as an error of their own.
    /// The upstream's own status, when it refused.
    pub(crate) fn upstream_status(&self) -> Option<u16> {
        match self {
            Self::Upstream { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub(crate) fn body(&self) -> impl Serialize + use<> {
        Body {
            error: Detail {
                code: self.code(),
                message: self.message(),
                kind: self.kind(),
                upstream_status: self.upstream_status(),
            },
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        match self {
            Self::RateLimited { retry_after_secs }
            | Self::TokensSpent {
                retry_after_secs, ..
            } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            Self::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
