//! Google's Gemini API (`POST {base}/models/{model}:streamGenerateContent?alt=sse`,
//! `x-goog-api-key`), spoken natively so that thought summaries, whole
//! function calls, running usage and safety stops reach clients as they are.
//!
//! `request` builds `contents`, `systemInstruction`, `generationConfig` and
//! `tools` from the client's chat request; `translate` turns each streamed
//! `GenerateContentResponse` into our events.

mod request;
mod translate;

use std::pin::Pin;

use axum::http::{HeaderMap, HeaderName};
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

/// How refusals name this API.
const UPSTREAM: &str = "a gemini upstream";

/// What a model name may hold in the path unencoded: RFC 3986's unreserved
/// characters. A name is one path segment, whatever the client sent.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[derive(Debug)]
pub(crate) struct Gemini;

impl Dialect for Gemini {
    /// Google names models `models/gemini-...`; either spelling is taken.
    fn chat_path(&self, model: &str) -> String {
        let model = model.strip_prefix("models/").unwrap_or(model);
        format!(
            "/models/{}:streamGenerateContent?alt=sse",
            percent_encoding::utf8_percent_encode(model, SEGMENT)
        )
    }

    fn models_path(&self) -> &'static str {
        "/models?pageSize=1000"
    }

    fn auth_headers(&self, key: &Secret) -> Result<HeaderMap, Error> {
        key_header(
            HeaderName::from_static("x-goog-api-key"),
            key.expose().to_owned(),
        )
    }

    fn request_body(&self, request: ChatRequest, _model: &str) -> Result<Bytes, Error> {
        let conversation = Conversation::read(request, UPSTREAM)?;
        json_body(&request::body(conversation)?)
    }

    fn source(&self, events: UpstreamEvents, place: Place) -> Pin<Box<dyn Source>> {
        translated(events, Translator::default(), place)
    }

    /// `{"models": [{"name": "models/...", "supportedGenerationMethods": [...]}]}`:
    /// only the models that generate content can be asked for a chat.
    fn model_list(&self, body: Bytes) -> Result<Bytes, Error> {
        #[derive(Deserialize)]
        struct List {
            #[serde(default)]
            models: Vec<Model>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Model {
            name: String,
            supported_generation_methods: Option<Vec<String>>,
        }
        let list: List = serde_json::from_slice(&body).map_err(|error| {
            Error::BadGateway(format!(
                "the upstream's model list is not Gemini's: {error}"
            ))
        })?;
        let chat = list.models.into_iter().filter(|model| {
            model
                .supported_generation_methods
                .as_ref()
                .is_none_or(|methods| methods.iter().any(|method| method == "generateContent"))
        });
        model_list(
            chat.map(|model| {
                let id = model.name.strip_prefix("models/").unwrap_or(&model.name);
                (id.to_owned(), 0)
            }),
            "google",
        )
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn the_model_is_one_path_segment_whatever_it_holds() {
        let cases = [
            (
                "gemini-2.5-flash",
                "/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            ),
            (
                "models/gemini-2.0-flash",
                "/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            ),
            (
                "../a?b#c",
                "/models/..%2Fa%3Fb%23c:streamGenerateContent?alt=sse",
            ),
        ];
        for (model, path) in cases {
            assert_eq!(Gemini.chat_path(model), path, "{model}");
        }
    }

    #[test]
    fn the_key_travels_as_x_goog_api_key() {
        let headers = Gemini
            .auth_headers(&Secret::new("AIza-1".to_owned()))
            .unwrap_or_else(|error| panic!("{error}"));
        let key = headers.get("x-goog-api-key");
        assert_eq!(key.and_then(|value| value.to_str().ok()), Some("AIza-1"));
        assert!(key.is_some_and(HeaderValue::is_sensitive));
        assert_eq!(headers.len(), 1);
    }

    #[test]
    fn the_model_list_keeps_the_models_that_chat() {
        let listed = Gemini
            .model_list(Bytes::from_static(
                br#"{"models": [
                    {"name": "models/gemini-2.5-flash", "supportedGenerationMethods": ["generateContent", "countTokens"]},
                    {"name": "models/text-embedding-004", "supportedGenerationMethods": ["embedContent"]}
                ], "nextPageToken": "x"}"#,
            ))
            .unwrap_or_else(|error| panic!("{error}"));
        let listed: serde_json::Value =
            serde_json::from_slice(&listed).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            listed,
            serde_json::json!({"object": "list", "data": [
                {"id": "gemini-2.5-flash", "object": "model", "created": 0, "owned_by": "google"}
            ]})
        );
    }
}
