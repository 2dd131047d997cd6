//! Anthropic's Messages API (`POST {base}/messages`, `x-api-key` and
//! `anthropic-version`), spoken natively so that Claude's thinking, tool use,
//! cumulative usage and stop reasons reach clients whole, which the
//! OpenAI-compatible shim in front of it drops.
//!
//! `request` builds the body from the client's chat request; `translate`
//! turns the `message_*` and `content_block_*` events into ours.

mod request;
mod translate;

use std::pin::Pin;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use serde::Deserialize;

use self::translate::Translator;
use super::conversation::Conversation;
use super::transport::UpstreamEvents;
use super::{Dialect, Place, json_body, key_header, model_list, translated};
use crate::config::Secret;
use crate::error::Error;
use crate::request::ChatRequest;
use crate::streams::Source;

/// The API version every request names; the stream format of SPEC §10 is
/// this version's.
const VERSION: &str = "2023-06-01";

/// Anthropic requires a length limit; this one applies when neither the
/// request nor the upstream's `max_tokens` sets one.
const DEFAULT_MAX_TOKENS: u64 = 4096;

/// How refusals name this API.
const UPSTREAM: &str = "an anthropic upstream";

#[derive(Debug)]
pub(crate) struct Anthropic {
    max_tokens: u64,
}

impl Anthropic {
    /// `max_tokens`: the upstream's configured limit for requests without one.
    pub(crate) fn new(max_tokens: Option<u64>) -> Self {
        Self {
            max_tokens: max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        }
    }
}

impl Dialect for Anthropic {
    fn chat_path(&self, _model: &str) -> String {
        "/messages".to_owned()
    }

    fn models_path(&self) -> &'static str {
        "/models?limit=1000"
    }

    fn auth_headers(&self, key: &Secret) -> Result<HeaderMap, Error> {
        let mut headers = key_header(
            HeaderName::from_static("x-api-key"),
            key.expose().to_owned(),
        )?;
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(VERSION),
        );
        Ok(headers)
    }

    fn request_body(&self, request: ChatRequest, model: &str) -> Result<Bytes, Error> {
        let conversation = Conversation::read(request, UPSTREAM)?;
        json_body(&request::body(conversation, model, self.max_tokens)?)
    }

    fn source(&self, events: UpstreamEvents, place: Place) -> Pin<Box<dyn Source>> {
        translated(events, Translator::default(), place)
    }

    /// `{"data": [{"id", "created_at", ...}], "has_more", ...}`.
    fn model_list(&self, body: Bytes) -> Result<Bytes, Error> {
        #[derive(Deserialize)]
        struct List {
            data: Vec<Model>,
        }
        #[derive(Deserialize)]
        struct Model {
            id: String,
        }
        let list: List = serde_json::from_slice(&body).map_err(|error| {
            Error::BadGateway(format!(
                "the upstream's model list is not Anthropic's: {error}"
            ))
        })?;
        model_list(
            list.data.into_iter().map(|model| (model.id, 0)),
            "anthropic",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_travels_as_x_api_key_with_the_api_version() {
        let headers = Anthropic::new(None)
            .auth_headers(&Secret::new("sk-ant-1".to_owned()))
            .unwrap_or_else(|error| panic!("{error}"));
        let key = headers.get("x-api-key");
        assert_eq!(key.and_then(|value| value.to_str().ok()), Some("sk-ant-1"));
        assert!(key.is_some_and(HeaderValue::is_sensitive));
        assert_eq!(
            headers
                .get("anthropic-version")
                .and_then(|value| value.to_str().ok()),
            Some(VERSION)
        );
        assert_eq!(headers.len(), 2);
    }

    #[test]
    fn the_model_list_becomes_openai_s() {
        let listed = Anthropic::new(None)
            .model_list(Bytes::from_static(
                br#"{"data": [{"type": "model", "id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5", "created_at": "2025-09-29T00:00:00Z"}], "has_more": false}"#,
            ))
            .unwrap_or_else(|error| panic!("{error}"));
        let listed: serde_json::Value =
            serde_json::from_slice(&listed).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            listed,
            serde_json::json!({"object": "list", "data": [
                {"id": "claude-sonnet-4-5", "object": "model", "created": 0, "owned_by": "anthropic"}
            ]})
        );
    }
}
