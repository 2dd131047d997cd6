//! OpenAI's Responses API (`POST {base}/responses`, `Authorization: Bearer`),
//! spoken natively so that reasoning summaries and the stream's own terminal
//! events (`response.completed`, `incomplete`, `failed`) reach clients, which
//! chat completions cannot carry for the models only this API serves.
//!
//! `request` builds `instructions` and `input` items from the client's chat
//! request; `translate` turns the named `response.*` events into ours.

mod request;
mod translate;

use std::pin::Pin;

use axum::http::HeaderMap;
use bytes::Bytes;

use self::translate::Translator;
use super::conversation::Conversation;
use super::transport::UpstreamEvents;
use super::{Dialect, Place, bearer, json_body, translated};
use crate::config::Secret;
use crate::error::Error;
use crate::request::ChatRequest;
use crate::streams::Source;

/// How refusals name this API.
const UPSTREAM: &str = "an openai-responses upstream";

#[derive(Debug)]
pub(crate) struct OpenAiResponses;

impl Dialect for OpenAiResponses {
    fn chat_path(&self, _model: &str) -> String {
        "/responses".to_owned()
    }

    fn auth_headers(&self, key: &Secret) -> Result<HeaderMap, Error> {
        bearer(key)
    }

    fn request_body(&self, request: ChatRequest, model: &str) -> Result<Bytes, Error> {
        let conversation = Conversation::read(request, UPSTREAM)?;
        json_body(&request::body(conversation, model)?)
    }

    fn source(&self, events: UpstreamEvents, place: Place) -> Pin<Box<dyn Source>> {
        translated(events, Translator::default(), place)
    }
}
