//! The OpenAI chat-completions dialect (`POST {base}/chat/completions`,
//! `Authorization: Bearer`), which most LLM servers speak: OpenAI, Azure,
//! Groq, DeepSeek, Mistral, OpenRouter, vLLM, llama.cpp, Ollama...
//!
//! The request is the client's own fields with streaming and usage forced
//! on; the stream is translated by `translate`.

mod translate;

use std::pin::Pin;

use axum::http::HeaderMap;
use bytes::Bytes;
use serde_json::{Value, json};

use self::translate::Translator;
use super::transport::UpstreamEvents;
use super::{Dialect, Place, bearer, json_body, translated};
use crate::config::Secret;
use crate::error::Error;
use crate::request::ChatRequest;
use crate::streams::Source;

/// OpenAI's chat completions, and every API compatible with it.
#[derive(Debug, Default)]
pub(crate) struct OpenAiChat;

impl Dialect for OpenAiChat {
    fn chat_path(&self, _model: &str) -> String {
        "/chat/completions".to_owned()
    }

    fn auth_headers(&self, key: &Secret) -> Result<HeaderMap, Error> {
        bearer(key)
    }

    /// The client's fields with the model, streaming and usage reporting
    /// forced on.
    fn request_body(&self, request: ChatRequest, model: &str) -> Result<Bytes, Error> {
        let mut fields = request.into_fields();
        fields.insert("model".to_owned(), Value::String(model.to_owned()));
        fields.insert("stream".to_owned(), Value::Bool(true));
        fields.insert("stream_options".to_owned(), json!({"include_usage": true}));
        json_body(&fields)
    }

    fn source(&self, events: UpstreamEvents, place: Place) -> Pin<Box<dyn Source>> {
        translated(events, Translator::default(), place)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderValue, header};
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn the_upstream_body_keeps_extras_and_forces_streaming() {
        let request = ChatRequest::from_json(
            br#"{"prompt": "hi", "temperature": 0.2, "stream": false, "stream_options": {"include_usage": false}, "x_vendor": {"a": 1}}"#,
        )
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(request.model(), None);
        let body = OpenAiChat
            .request_body(request, "m1")
            .unwrap_or_else(|error| panic!("{error}"));
        let sent: Value = serde_json::from_slice(&body).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            sent,
            json!({
                "messages": [{"role": "user", "content": "hi"}],
                "model": "m1",
                "temperature": 0.2,
                "stream": true,
                "stream_options": {"include_usage": true},
                "x_vendor": {"a": 1}
            })
        );
    }

    #[test]
    fn the_key_travels_as_a_bearer_token_marked_sensitive() {
        let headers = OpenAiChat
            .auth_headers(&Secret::new("sk-1".to_owned()))
            .unwrap_or_else(|error| panic!("{error}"));
        let value = headers.get(header::AUTHORIZATION);
        assert_eq!(
            value.and_then(|value| value.to_str().ok()),
            Some("Bearer sk-1")
        );
        assert!(value.is_some_and(HeaderValue::is_sensitive));
    }
}
