//! The upstreams tokenrelay speaks to: one folder per dialect behind one
//! trait, [`Dialect`], and the transport they share.
//!
//! A dialect says where a chat request goes, how the key travels, what body
//! to send, and how to translate the upstream's event stream into our
//! events (`docs/PROTOCOL.md` §3) with a pure [`Translate`]. `transport` is
//! the only code that knows reqwest; `sse` frames bytes for
//! `eventsource-stream`; `redact` keeps our key out of what upstreams say.
//! A [`Provider`] puts a dialect and a transport together and hands a
//! generation a [`Source`] of translated batches.

mod anthropic;
mod conversation;
mod gemini;
mod openai_chat;
mod openai_responses;
mod redact;
mod sse;
#[cfg(test)]
mod table;
mod transport;

use std::borrow::Cow;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use bytes::Bytes;
use futures_util::Stream;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::config::{Kind, Secret, UpstreamSettings};
use crate::error::Error;
use crate::event::StreamEvent;
use crate::request::ChatRequest;
use crate::streams::Source;

pub(crate) use self::redact::truncate;
use self::transport::{Upstream, UpstreamEvents};

/// The in-stream error of every dialect whose stream ends before its end.
pub(crate) const DISCONNECTED: &str =
    "the upstream closed the stream before the generation finished";

/// How one kind of upstream API is spoken.
pub(crate) trait Dialect: Send + Sync + fmt::Debug {
    /// Where a chat request for `model` goes, below the base URL; it may
    /// carry a query of its own.
    fn chat_path(&self, model: &str) -> String;

    /// Where the model list is, below the base URL.
    fn models_path(&self) -> &'static str {
        "/models"
    }

    /// The headers that carry `key` as this API expects it.
    fn auth_headers(&self, key: &Secret) -> Result<HeaderMap, Error>;

    /// The body of a streaming chat request for `model`.
    fn request_body(&self, request: ChatRequest, model: &str) -> Result<Bytes, Error>;

    /// One response's event stream as our batches, read through a fresh
    /// translator of this dialect (see [`translated`]).
    fn source(&self, events: UpstreamEvents, place: Place) -> Pin<Box<dyn Source>>;

    /// The upstream's model list (a JSON body) as OpenAI's
    /// `{"object": "list", "data": [{"id": ...}, ...]}`, which `/v1/models`
    /// serves and routing reads.
    fn model_list(&self, body: Bytes) -> Result<Bytes, Error> {
        Ok(body)
    }
}

/// Turns one upstream's SSE events into ours: a pure function of what it is
/// fed, so it can be tested with hand-built input.
pub(crate) trait Translate: Send {
    /// Translates one SSE event (its type, `message` unless named, and data).
    fn push(&mut self, event_type: &str, data: &str, out: &mut Vec<StreamEvent>);

    /// The upstream's stream ended: a finish it held back, or the error
    /// that says it ended too soon.
    fn end(&mut self, out: &mut Vec<StreamEvent>);

    /// Whether a terminal event went out; nothing follows it.
    fn is_done(&self) -> bool;
}

/// One configured upstream: its dialect and the connection to it.
#[derive(Debug)]
pub(crate) struct Provider {
    dialect: Box<dyn Dialect>,
    transport: Upstream,
    places: Arc<Places>,
}

/// An upstream's `max_concurrent`: how many of its requests may be open.
#[derive(Debug)]
struct Places {
    max: Option<usize>,
    open: AtomicUsize,
}

impl Places {
    fn take(self: &Arc<Self>) -> Option<Place> {
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        let place = Place(Arc::clone(self));
        self.max.is_none_or(|max| open <= max).then_some(place)
    }
}

/// One open request to an upstream with a `max_concurrent`.
#[derive(Debug)]
pub(crate) struct Place(Arc<Places>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Provider {
    /// The upstream `settings` describe, spoken to in its kind's dialect.
    pub(crate) fn new(settings: &UpstreamSettings) -> Result<Self, Error> {
        let dialect: Box<dyn Dialect> = match settings.kind {
            Kind::OpenAi => Box::new(openai_chat::OpenAiChat),
            Kind::Anthropic => Box::new(anthropic::Anthropic::new(settings.max_tokens)),
            Kind::Gemini => Box::new(gemini::Gemini),
            Kind::OpenAiResponses => Box::new(openai_responses::OpenAiResponses),
        };
        let auth = match &settings.api_key {
            Some(key) => dialect.auth_headers(key)?,
            None => HeaderMap::new(),
        };
        let transport = Upstream::new(settings, dialect.models_path(), auth)?;
        Ok(Self {
            dialect,
            transport,
            places: Arc::new(Places {
                max: settings.max_concurrent,
                open: AtomicUsize::new(0),
            }),
        })
    }

    /// Sends `request` for `model` and resolves once the upstream answered
    /// with an event stream (refusals, retries and deadlines are settled by
    /// then), with the translated batches to come. `retry` says whether this
    /// upstream's own retries apply. At `max_concurrent` open requests it
    /// refuses at once; the place is held until the source is dropped.
    pub(crate) async fn open(
        &self,
        request: ChatRequest,
        model: &str,
        retry: bool,
    ) -> Result<Pin<Box<dyn Source>>, Error> {
        let place = self.places.take().ok_or_else(|| {
            Error::Overloaded(format!(
                "the upstream is at its max_concurrent of {} open requests",
                self.places.max.unwrap_or_default()
            ))
        })?;
        let path = self.dialect.chat_path(model);
        let body = self.dialect.request_body(request, model)?;
        let events = self.transport.open(&path, body, retry).await?;
        Ok(self.dialect.source(events, place))
    }

    /// The upstream's own model list, in OpenAI's shape.
    pub(crate) async fn models(&self) -> Result<Bytes, Error> {
        let list = self.transport.models().await?;
        self.dialect.model_list(list)
    }

    /// Whether the upstream answered recently, or answers now.
    pub(crate) async fn ready(&self) -> bool {
        self.transport.ready().await
    }
}

/// The most upstream events read into one batch, so that a fast upstream
/// still lets its followers see a batch before the next is read.
const MAX_EVENTS_PER_BATCH: usize = 64;

/// `events` as our event batches, through `translator`. The translator is
/// kept in the same allocation as the events, not boxed on its own: it is
/// asked about every event, and memory of its own would be one more place
/// to fetch from for each (README, Performance).
fn translated<T: Translate + Unpin + 'static>(
    events: UpstreamEvents,
    translator: T,
    place: Place,
) -> Pin<Box<dyn Source>> {
    Box::pin(Translated {
        events,
        translator,
        _place: place,
    })
}

/// An upstream's events as our event batches.
struct Translated<T> {
    events: UpstreamEvents,
    translator: T,
    /// Given back when the generation drops its upstream request.
    _place: Place,
}

impl<T: Translate + Unpin> Source for Translated<T> {
    fn poll_batch(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut Vec<StreamEvent>,
    ) -> Poll<Option<()>> {
        let this = &mut *self;
        if this.translator.is_done() {
            return Poll::Ready(None);
        }
        // Everything the upstream has already sent goes into one batch (one
        // append under the log's lock, one wake of the followers): in a
        // burst, taking one event per batch cost more than reading it.
        let mut read = 0;
        // A terminal event ends the batch: the generation ends on it.
        while read < MAX_EVENTS_PER_BATCH
            && !this.translator.is_done()
            && !out.last().is_some_and(StreamEvent::is_terminal)
        {
            let Poll::Ready(next) = Pin::new(&mut this.events).poll_next(cx) else {
                if read == 0 {
                    return Poll::Pending;
                }
                break;
            };
            read += 1;
            match next {
                Some(Ok(event)) => this.translator.push(&event.event, &event.data, out),
                Some(Err(failure)) => {
                    out.push(failure.into());
                    break;
                }
                None => {
                    this.translator.end(out);
                    break;
                }
            }
        }
        this.events.scrub(out);
        Poll::Ready(Some(()))
    }

    fn started(&self) -> Instant {
        self.events.started()
    }
}

/// A number in [0, 1) that differs per call: retry jitter and the order of
/// weighted targets need no better.
pub(crate) fn uniform() -> f64 {
    let mut bytes = [0u8; 8];
    match getrandom::fill(&mut bytes) {
        Ok(()) => (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

/// `key` in the header `name`, marked sensitive so that no debug output
/// of a request shows it.
pub(crate) fn key_header(name: HeaderName, value: String) -> Result<HeaderMap, Error> {
    let mut value = HeaderValue::from_str(&value).map_err(|_| {
        Error::Internal("the upstream's API key cannot be sent in an HTTP header".to_owned())
    })?;
    value.set_sensitive(true);
    Ok(HeaderMap::from_iter([(name, value)]))
}

/// `Authorization: Bearer <key>`, as OpenAI's APIs take it.
pub(crate) fn bearer(key: &Secret) -> Result<HeaderMap, Error> {
    key_header(header::AUTHORIZATION, format!("Bearer {}", key.expose()))
}

/// Parser errors and stop reasons can quote hostile values; this much of
/// one is enough to diagnose.
const MAX_REASON_CHARS: usize = 200;

/// `reason` (a parser's complaint, a stop reason we do not know) cut to
/// what a translator's message quotes of it.
pub(crate) fn quoted(reason: impl Into<String>) -> String {
    truncate(reason.into(), MAX_REASON_CHARS)
}

/// The message of the `invalid_upstream_data` error for upstream data that
/// is not the JSON it must be; `what` names the dialect's unit ("a chunk").
pub(crate) fn not_json(what: &str, reason: &str) -> String {
    format!(
        "the upstream sent {what} that is not valid JSON: {}",
        quoted(reason)
    )
}

/// An upstream request body as the bytes sent.
pub(crate) fn json_body(body: &impl serde::Serialize) -> Result<Bytes, Error> {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|error| Error::Internal(format!("could not encode the upstream request: {error}")))
}

/// The `usage` of a finish from a native API's own counts: OpenAI's three
/// numbers, which every client reads, and the provider's object under `raw`
/// for the details only it has (cache reads, thinking tokens...).
pub(crate) fn counted_usage(prompt: u64, completion: u64, raw: Value) -> Option<Box<RawValue>> {
    serde_json::value::to_raw_value(&json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt.saturating_add(completion),
        "raw": raw,
    }))
    .ok()
}

/// OpenAI's model list of `models`, each an id and when it was made
/// (seconds since 1970, 0 when unknown), listed as owned by `owner`.
pub(crate) fn model_list(
    models: impl Iterator<Item = (String, u64)>,
    owner: &str,
) -> Result<Bytes, Error> {
    let data: Vec<Value> = models
        .map(|(id, created)| json!({"id": id, "object": "model", "created": created, "owned_by": owner}))
        .collect();
    serde_json::to_vec(&json!({"object": "list", "data": data}))
        .map(Bytes::from)
        .map_err(|error| Error::Internal(format!("could not encode the model list: {error}")))
}

/// What an upstream says went wrong, in the shapes LLM APIs use:
/// `{"error": {"message": ...}}` (OpenAI, Anthropic's with a `type` beside
/// it, Google's with `code` and `status`), `{"error": "..."}`,
/// `{"message": ...}`, and Gemini's streaming endpoint's `[{"error": ...}]`;
/// anything else is shown as the upstream wrote it rather than hidden behind
/// a generic text. `None` when it said nothing at all.
pub(crate) fn error_message(body: &str) -> Option<Cow<'_, str>> {
    let body = body.trim();
    if body.is_empty() {
        return None;
    }
    if body.starts_with('[') {
        if let Ok([only]) = serde_json::from_str::<[&RawValue; 1]>(body) {
            return error_message(only.get());
        }
    }
    let payload = body
        .starts_with('{')
        .then(|| serde_json::from_str::<ErrorPayload<'_>>(body).ok())
        .flatten();
    Some(match payload {
        Some(ErrorPayload {
            error: Some(error), ..
        }) => describe_error(error),
        Some(ErrorPayload {
            message: Some(message),
            ..
        }) if !message.is_empty() => message,
        _ => Cow::Borrowed(body),
    })
}

/// An `error` value: an object with a `message`, or a bare string.
pub(crate) fn describe_error(error: &RawValue) -> Cow<'_, str> {
    let text = error.get();
    let message = if text.starts_with('"') {
        serde_json::from_str::<String>(text).ok().map(Cow::Owned)
    } else if text.starts_with('{') {
        serde_json::from_str::<ErrorObject<'_>>(text)
            .ok()
            .and_then(|object| object.message)
    } else {
        None
    };
    match message {
        Some(message) if !message.trim().is_empty() => message,
        _ => Cow::Borrowed(text),
    }
}

#[derive(Deserialize)]
struct ErrorPayload<'a> {
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ErrorObject<'a> {
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

#[cfg(test)]
mod tests {
    use super::error_message;

    #[test]
    fn error_messages_are_read_from_every_usual_shape() {
        let cases = [
            (
                r#"{"error": {"message": "bad key", "type": "x"}}"#,
                "bad key",
            ),
            (r#"{"error": "quota"}"#, "quota"),
            (r#"{"message": "overloaded"}"#, "overloaded"),
            (r#"{"error": {"code": 5}}"#, r#"{"code": 5}"#),
            ("upstream exploded", "upstream exploded"),
            (r#"{"error": {"message": "a\nb"}}"#, "a\nb"),
            (
                r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#,
                "Overloaded",
            ),
            (
                r#"[{"error": {"code": 400, "message": "API key not valid", "status": "INVALID_ARGUMENT"}}]"#,
                "API key not valid",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(error_message(body).as_deref(), Some(expected), "{body}");
        }
        assert_eq!(error_message("  "), None);
    }
}
