//! The SSE responses every surface streams, and our own framing of a
//! follower's entries (`docs/PROTOCOL.md` §2): the `retry` hint, one `id:` +
//! `data:` pair per event, keep-alive comments, and the closing `data: [DONE]`.
//!
//! Framing is left to axum's `Sse` and `Event`, which escape data safely; we
//! decide what goes in, and how the frames leave. Every relayed token ends
//! here, and a `write` per token was most of what a token cost the proxy
//! (README, Performance), so frames that are ready together leave together:
//! [`Batches`] gathers the frames of a burst into one write, while a token
//! that comes alone, and the opening of every stream, leave at once.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt, stream};
use hyper::body::{Body as HttpBody, Frame};
use serde::Serialize;
use tokio::time::{Instant, Sleep};

use crate::event::{ErrorCode, StreamEvent};
use crate::http::STREAM_ID_HEADER;
use crate::streams::{Entry, StreamId};

/// How long a browser `EventSource` waits before reconnecting (and resuming).
const RECONNECT_AFTER: Duration = Duration::from_millis(1000);

/// The streaming response for one follower of generation `id`.
pub(crate) fn response(
    id: StreamId,
    follower: impl Stream<Item = Entry> + Send + 'static,
    keepalive: Duration,
) -> Response {
    let prefix = id.to_string();
    let mut scratch = Scratch {
        event_id: format!("{prefix}:"),
        json: Vec::new(),
    };
    let retry = stream::once(async { Event::default().retry(RECONNECT_AFTER) });
    sse(
        id,
        retry.chain(follower.map(move |entry| frame(&prefix, &mut scratch, entry))),
        keepalive,
    )
}

/// An SSE response of `events` for generation `id`, with keep-alive
/// comments and the headers that stop proxies from buffering or caching it.
/// Every streaming route of tokenrelay answers through this.
pub(crate) fn sse(
    id: StreamId,
    events: impl Stream<Item = Event> + Send + 'static,
    keepalive: Duration,
) -> Response {
    let response = Sse::new(events.map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::new().interval(keepalive).text("ping"))
        .into_response();
    let (mut parts, body) = response.into_parts();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/event-stream; charset=utf-8"),
        (header::CACHE_CONTROL, "no-cache, no-transform"),
        (HeaderName::from_static("x-accel-buffering"), "no"),
    ] {
        parts.headers.insert(name, HeaderValue::from_static(value));
    }
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        parts.headers.insert(STREAM_ID_HEADER, value);
    }
    Response::from_parts(parts, Body::new(Batches::new(body)))
}

/// Buffers one follower reuses from event to event.
struct Scratch {
    /// The `id:` value: the stream id and a colon, then the sequence number.
    event_id: String,
    /// The `data:` value; see [`json_event`].
    json: Vec<u8>,
}

fn frame(prefix: &str, scratch: &mut Scratch, entry: Entry) -> Event {
    match entry {
        Entry::Event { seq, event } => {
            scratch.event_id.truncate(prefix.len() + 1);
            push_decimal(&mut scratch.event_id, seq);
            // Our own types always serialize; a failure would be a bug, and
            // the client is still told rather than shown a silent gap.
            json_event(
                Event::default().id(scratch.event_id.as_str()),
                &event,
                &mut scratch.json,
                r#"{"type":"error","code":"invalid_upstream_data","message":"an event could not be encoded"}"#,
            )
        }
        Entry::Done => Event::default().data("[DONE]"),
        Entry::Lost { code, message } => json_event(
            Event::default(),
            &StreamEvent::error(code, message),
            &mut scratch.json,
            r#"{"type":"error","code":"upstream_disconnected"}"#,
        ),
        Entry::Gap { first_kept } => {
            let error = StreamEvent::error(
                ErrorCode::ResumeGap,
                format!(
                    "events before {prefix}:{first_kept} are no longer kept (RESUME_MAX_STREAM_BYTES); \
                     resume from there or start a new generation"
                ),
            );
            json_event(
                Event::default(),
                &error,
                &mut scratch.json,
                r#"{"type":"error","code":"resume_gap"}"#,
            )
        }
    }
}

/// Appends `n` in decimal: `write!` cost more than the rest of an event id.
fn push_decimal(text: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    text.push_str(std::str::from_utf8(&digits[start..]).unwrap_or_default());
}

/// `event` with `value` as its JSON `data:`, or `fallback` should `value`
/// not serialize. The JSON is written into `json`, a buffer reused from event
/// to event, and handed to the event in one piece: axum's `json_data` passes
/// each of serde_json's many small writes on by itself, which was a fifth of
/// what framing a token cost.
pub(crate) fn json_event(
    event: Event,
    value: &impl Serialize,
    json: &mut Vec<u8>,
    fallback: &str,
) -> Event {
    json.clear();
    let data = serde_json::to_writer(&mut *json, value)
        .ok()
        .and_then(|()| std::str::from_utf8(json).ok())
        .unwrap_or(fallback);
    let event = event.data(data);
    // A rare long event must not keep its memory for the rest of the stream.
    if json.capacity() > KEEP_JSON_BYTES {
        *json = Vec::new();
    }
    event
}

/// [`json_event`] keeps its buffer for the next event unless it grew past this.
const KEEP_JSON_BYTES: usize = 16 * 1024;

/// A batch stops growing here, so one slow client never holds a large buffer.
const MAX_BATCH_BYTES: usize = 64 * 1024;
/// A frame that comes within this of the last write is part of a burst, and
/// its batch may wait up to `MAX_HOLD` for the rest: a token of a fast stream
/// leaves at most a millisecond later, in one write with its neighbours,
/// instead of one write each. A token that comes alone (any model a person
/// can read along with) never waits.
const BURST_GAP: Duration = Duration::from_millis(1);
const MAX_HOLD: Duration = Duration::from_millis(1);
/// At most this many rounds of gathering per batch.
const MAX_ROUNDS: u32 = 256;
/// Batches that always leave at once: the opening (`retry` and `start`, or
/// the role chunk) and the first answer after it, whose delay would be
/// added to the time to first token.
const OPENING_BATCHES: u32 = 2;

/// A response body that writes the frames of a burst together.
///
/// When a batch starts within `BURST_GAP` of the last write, it yields to the
/// runtime once per round instead of leaving: the upstream's connection and
/// the generation task, woken by the same burst, turn every token already
/// received into frames, and the batch takes them all. When a round brings
/// nothing, it waits for the next frame until `MAX_HOLD` after the batch
/// began. A burst then costs one `write` instead of one per token.
struct Batches<B> {
    inner: B,
    batch: BytesMut,
    /// The inner body has ended (or failed, with the error in `failed`).
    ended: bool,
    failed: Option<axum::Error>,
    /// Batches written so far (it stops counting at `u32::MAX`).
    written: u32,
    last_write: Option<Instant>,
    /// The current batch: when it began, and whether it may wait for more.
    began: Option<Instant>,
    bursting: bool,
    rounds: u32,
    /// Ends a wait for the rest of a burst; made on the first wait.
    hold: Option<Pin<Box<Sleep>>>,
}

impl<B> Batches<B> {
    fn new(inner: B) -> Self {
        Self {
            inner,
            batch: BytesMut::new(),
            ended: false,
            failed: None,
            written: 0,
            last_write: None,
            began: None,
            bursting: false,
            rounds: 0,
            hold: None,
        }
    }
}

impl<B> Batches<B>
where
    B: HttpBody<Data = Bytes, Error = axum::Error> + Unpin,
{
    /// Appends every frame that is ready now; true if there was one.
    fn gather(&mut self, cx: &mut Context<'_>) -> bool {
        let mut any = false;
        while !self.ended && self.batch.len() < MAX_BATCH_BYTES {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // An SSE body has no trailers; anything else is data.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if self.began.is_none() {
                        let now = Instant::now();
                        self.began = Some(now);
                        self.bursting = self.written >= OPENING_BATCHES
                            && self.last_write.is_some_and(|last| now - last < BURST_GAP);
                    }
                    self.batch.extend_from_slice(&data);
                    any = true;
                }
                Poll::Ready(Some(Err(error))) => {
                    self.failed = Some(error);
                    self.ended = true;
                }
                Poll::Ready(None) => self.ended = true,
                Poll::Pending => break,
            }
        }
        any
    }

    /// Whether the batch should wait for more of its burst; arranges to be
    /// polled again when it should.
    fn wait_for_more(&mut self, cx: &mut Context<'_>, came: bool) -> bool {
        if !self.bursting
            || self.ended
            || self.batch.len() >= MAX_BATCH_BYTES
            || self.rounds >= MAX_ROUNDS
        {
            return false;
        }
        self.rounds += 1;
        if came {
            // Back of the run queue: whatever is ready runs first.
            cx.waker().wake_by_ref();
            return true;
        }
        let Some(began) = self.began else {
            return false;
        };
        let deadline = began + MAX_HOLD;
        let hold = self
            .hold
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if hold.deadline() != deadline {
            hold.as_mut().reset(deadline);
        }
        // Pending: the inner body or the timer wakes us, whichever is first.
        hold.as_mut().poll(cx).is_pending()
    }
}

impl<B> HttpBody for Batches<B>
where
    B: HttpBody<Data = Bytes, Error = axum::Error> + Unpin,
{
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let came = this.gather(cx);
        if this.batch.is_empty() {
            return match this.failed.take() {
                Some(error) => Poll::Ready(Some(Err(error))),
                None if this.ended => Poll::Ready(None),
                None => Poll::Pending,
            };
        }
        if this.wait_for_more(cx, came) {
            return Poll::Pending;
        }
        this.written = this.written.saturating_add(1);
        this.last_write = Some(Instant::now());
        this.began = None;
        this.rounds = 0;
        let capacity = this.batch.len().next_power_of_two().min(MAX_BATCH_BYTES);
        let batch = std::mem::replace(&mut this.batch, BytesMut::with_capacity(capacity));
        Poll::Ready(Some(Ok(Frame::data(batch.freeze()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_id() -> StreamId {
        StreamId::parse(&"ab".repeat(16)).unwrap_or_else(|| panic!("a stream id"))
    }

    fn token(seq: u64) -> Entry {
        Entry::Event {
            seq,
            event: StreamEvent::Token {
                token: format!("w{seq} "),
                refusal: false,
                choice: None,
            },
        }
    }

    fn body(entries: impl Stream<Item = Entry> + Send + 'static) -> axum::body::BodyDataStream {
        response(stream_id(), entries, Duration::from_secs(15))
            .into_body()
            .into_data_stream()
    }

    async fn next(body: &mut axum::body::BodyDataStream) -> String {
        let bytes = body.next().await.and_then(Result::ok).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn decimals_are_written_as_format_writes_them() {
        for n in [0, 7, 10, 99, 100, 12_345, u64::from(u32::MAX), u64::MAX] {
            let mut text = String::from("id:");
            push_decimal(&mut text, n);
            assert_eq!(text, format!("id:{n}"));
        }
    }

    #[test]
    fn json_events_keep_a_small_buffer_only() {
        // What the event says is the framing tests' business.
        let mut json = Vec::new();
        let _ = json_event(Event::default(), &"hi", &mut json, "");
        assert_eq!(json, br#""hi""#);
        let long = "x".repeat(KEEP_JSON_BYTES * 2);
        let _ = json_event(Event::default(), &long, &mut json, "");
        assert_eq!(json.capacity(), 0);
    }

    #[tokio::test]
    async fn events_are_framed_by_the_protocol() {
        let id = "ab".repeat(16);
        let entries = [
            token(1),
            Entry::Event {
                seq: 2,
                event: StreamEvent::error(ErrorCode::UpstreamError, "line\r\nbreak"),
            },
            Entry::Gap { first_kept: 7 },
            Entry::Lost {
                code: ErrorCode::ShuttingDown,
                message: "bye".to_owned(),
            },
            Entry::Done,
        ];
        let text: String = body(stream::iter(entries))
            .map(|bytes| String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned())
            .collect()
            .await;
        let expected = format!(
            "retry: 1000\n\n\
             id: {id}:1\ndata: {{\"type\":\"token\",\"token\":\"w1 \"}}\n\n\
             id: {id}:2\ndata: {{\"type\":\"error\",\"code\":\"upstream_error\",\"message\":\"line\\r\\nbreak\"}}\n\n\
             data: {{\"type\":\"error\",\"code\":\"resume_gap\",\"message\":\"events before {id}:7 are no longer kept (RESUME_MAX_STREAM_BYTES); resume from there or start a new generation\"}}\n\n\
             data: {{\"type\":\"error\",\"code\":\"shutting_down\",\"message\":\"bye\"}}\n\n\
             data: [DONE]\n\n"
        );
        assert_eq!(text, expected);
    }

    #[tokio::test]
    async fn a_burst_leaves_whole_in_order_and_in_few_writes() {
        let entries: Vec<Entry> = (1..=2_000).map(token).chain([Entry::Done]).collect();
        let batches: Vec<Bytes> = body(stream::iter(entries))
            .map(|batch| batch.unwrap_or_else(|error| panic!("{error}")))
            .collect()
            .await;
        let text = String::from_utf8_lossy(&batches.concat()).into_owned();
        let tokens: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("data: {\"type\":\"token\",\"token\":\""))
            .collect();
        let expected: Vec<String> = (1..=2_000).map(|seq| format!("w{seq} \"}}")).collect();
        assert_eq!(tokens, expected);
        assert!(text.ends_with("data: [DONE]\n\n"));
        // The opening batches alone, then the rest as fast as
        // MAX_BATCH_BYTES allows.
        let most = OPENING_BATCHES as usize + text.len() / MAX_BATCH_BYTES + 2;
        assert!(batches.len() <= most, "{} writes", batches.len());
    }

    #[tokio::test(start_paused = true)]
    async fn silence_gets_a_ping_after_keepalive() {
        let keepalive = Duration::from_secs(15);
        let started = Instant::now();
        let mut body = body(stream::pending::<Entry>());
        assert_eq!(next(&mut body).await, "retry: 1000\n\n");
        assert_eq!(next(&mut body).await, ": ping\n\n");
        assert_eq!(started.elapsed(), keepalive);
        assert_eq!(next(&mut body).await, ": ping\n\n");
        assert_eq!(started.elapsed(), keepalive * 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_token_goes_out_at_once_and_a_burst_waits_at_most_max_hold() {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel::<Entry>();
        let follower = stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|entry| (entry, receiver))
        });
        let mut body = body(follower);
        let send = |entry| {
            sender
                .send(entry)
                .unwrap_or_else(|_| panic!("the relay is gone"))
        };
        let id = "ab".repeat(16);
        assert_eq!(next(&mut body).await, "retry: 1000\n\n");
        // The first answer right after the opening does not wait.
        send(token(1));
        let sent = Instant::now();
        assert!(next(&mut body).await.starts_with(&format!("id: {id}:1\n")));
        assert_eq!(sent.elapsed(), Duration::ZERO);
        for seq in 2..=3 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let sent = Instant::now();
            send(token(seq));
            assert!(
                next(&mut body)
                    .await
                    .starts_with(&format!("id: {id}:{seq}\n"))
            );
            assert_eq!(sent.elapsed(), Duration::ZERO);
        }
        // Right after a write: the start of a burst, which waits for company.
        let sent = Instant::now();
        send(token(4));
        assert!(next(&mut body).await.starts_with(&format!("id: {id}:4\n")));
        assert_eq!(sent.elapsed(), MAX_HOLD);
    }
}
