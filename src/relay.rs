//! Frames a follower's entries as the SSE response of SPEC §2: the `retry`
//! hint, one `id:` + `data:` pair per event, keep-alive comments, and the
//! closing `data: [DONE]`.
//!
//! Framing is left to axum's `Sse` and `Event`, which escape data safely; we
//! only decide what goes in.

use std::convert::Infallible;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt, stream};

use crate::streams::{Entry, StreamId};
use crate::wire::{ErrorCode, StreamEvent};

/// How long a browser `EventSource` waits before reconnecting (and resuming).
const RECONNECT_AFTER: Duration = Duration::from_millis(1000);

pub const STREAM_ID_HEADER: HeaderName = HeaderName::from_static("x-stream-id");

/// The streaming response for one follower of generation `id`.
pub fn response(
    id: StreamId,
    follower: impl Stream<Item = Entry> + Send + 'static,
    keepalive: Duration,
) -> Response {
    let prefix = id.to_string();
    let retry = stream::once(async { Event::default().retry(RECONNECT_AFTER) });
    sse(
        id,
        retry.chain(follower.map(move |entry| frame(&prefix, entry))),
        keepalive,
    )
}

/// An SSE response of `events` for generation `id`, with keep-alive
/// comments and the headers that stop proxies from buffering or caching it.
/// Every streaming route of tokenrelay answers through this.
pub fn sse(
    id: StreamId,
    events: impl Stream<Item = Event> + Send + 'static,
    keepalive: Duration,
) -> Response {
    let mut response = Sse::new(events.map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::new().interval(keepalive).text("ping"))
        .into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/event-stream; charset=utf-8"),
        (header::CACHE_CONTROL, "no-cache, no-transform"),
        (HeaderName::from_static("x-accel-buffering"), "no"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        headers.insert(STREAM_ID_HEADER, value);
    }
    response
}

fn frame(prefix: &str, entry: Entry) -> Event {
    match entry {
        Entry::Event { seq, event } => {
            let frame = Event::default().id(format!("{prefix}:{seq}"));
            // Our own types always serialize; a failure would be a bug, and
            // the client is still told rather than shown a silent gap.
            frame.json_data(&*event).unwrap_or_else(|_| {
                Event::default().data(r#"{"type":"error","code":"invalid_upstream_data","message":"an event could not be encoded"}"#)
            })
        }
        Entry::Done => done(),
        Entry::Gap { first_kept } => {
            let error = StreamEvent::error(
                ErrorCode::ResumeGap,
                format!(
                    "events before {prefix}:{first_kept} are no longer kept (RESUME_MAX_STREAM_BYTES); \
                     resume from there or start a new generation"
                ),
            );
            Event::default().json_data(&error).unwrap_or_else(|_| {
                Event::default().data(r#"{"type":"error","code":"resume_gap"}"#)
            })
        }
    }
}

fn done() -> Event {
    Event::default().data("[DONE]")
}
