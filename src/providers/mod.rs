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

mod openai_chat;
mod redact;
mod sse;
mod transport;

use std::borrow::Cow;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use axum::http::HeaderMap;
use bytes::Bytes;
use futures_util::Stream;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::config::{Secret, UpstreamSettings};
use crate::error::Error;
use crate::event::StreamEvent;
use crate::request::ChatRequest;
use crate::streams::Source;

pub(crate) use self::openai_chat::OpenAiChat;
pub(crate) use self::redact::truncate;
use self::transport::{Upstream, UpstreamEvents};

/// How one kind of upstream API is spoken.
pub(crate) trait Dialect: Send + Sync + fmt::Debug {
    /// Where chat requests go, below the base URL.
    fn chat_path(&self) -> &'static str;

    /// The headers that carry `key` as this API expects it.
    fn auth_headers(&self, key: &Secret) -> Result<HeaderMap, Error>;

    /// The body of a streaming chat request for `model`.
    fn request_body(&self, request: ChatRequest, model: &str) -> Result<Bytes, Error>;

    /// A fresh translator for one response's event stream.
    fn translator(&self) -> Box<dyn Translate>;
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
struct Place(Arc<Places>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Provider {
    /// `dialect` spoken to the upstream `settings` describe.
    pub(crate) fn new(
        settings: &UpstreamSettings,
        dialect: Box<dyn Dialect>,
    ) -> Result<Self, Error> {
        let auth = match &settings.api_key {
            Some(key) => dialect.auth_headers(key)?,
            None => HeaderMap::new(),
        };
        let transport = Upstream::new(settings, dialect.chat_path(), auth)?;
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
        let body = self.dialect.request_body(request, model)?;
        let events = self.transport.open(body, retry).await?;
        Ok(Box::pin(Translated {
            events,
            translator: self.dialect.translator(),
            _place: place,
        }))
    }

    /// The upstream's own model list, passed on as it came.
    pub(crate) async fn models(&self) -> Result<Bytes, Error> {
        self.transport.models().await
    }

    /// Whether the upstream answered recently, or answers now.
    pub(crate) async fn ready(&self) -> bool {
        self.transport.ready().await
    }
}

/// An upstream's events as our event batches.
struct Translated {
    events: UpstreamEvents,
    translator: Box<dyn Translate>,
    /// Given back when the generation drops its upstream request.
    _place: Place,
}

impl Source for Translated {
    fn poll_batch(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut Vec<StreamEvent>,
    ) -> Poll<Option<()>> {
        let this = &mut *self;
        if this.translator.is_done() {
            return Poll::Ready(None);
        }
        match ready!(Pin::new(&mut this.events).poll_next(cx)) {
            Some(Ok(event)) => this.translator.push(&event.event, &event.data, out),
            Some(Err(failure)) => out.push(failure.into()),
            None => this.translator.end(out),
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

/// What an upstream says went wrong, in the shapes OpenAI-style APIs use:
/// `{"error": {"message": ...}}`, `{"error": "..."}`, `{"message": ...}`;
/// anything else is shown as the upstream wrote it rather than hidden behind
/// a generic text. `None` when it said nothing at all.
pub(crate) fn error_message(body: &str) -> Option<Cow<'_, str>> {
    let body = body.trim();
    if body.is_empty() {
        return None;
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
        ];
        for (body, expected) in cases {
            assert_eq!(error_message(body).as_deref(), Some(expected), "{body}");
        }
        assert_eq!(error_message("  "), None);
    }
}
