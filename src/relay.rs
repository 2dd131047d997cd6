//! Frames a follower's entries as the SSE response of SPEC §2: the `retry`
//! hint, one `id:` + `data:` pair per event, keep-alive comments, and the
//! closing `data: [DONE]`.
//!
//! Every relayed token ends here, so this is the hot path's last stretch and
//! it is written for it (README, Performance):
//! - Events are framed by hand into one buffer, the JSON serialized straight
//!   into it. Our frames are `id:` and one `data:` line, and compact JSON
//!   never holds a raw CR or LF (serde_json escapes them in strings), so the
//!   bytes are exactly what axum's `Event` would write, without its
//!   per-write line scanning, its `String` for the id and its buffer per event.
//! - Entries that are ready together leave in one write. After the first
//!   entry of a batch the relay yields once to the runtime, which lets the
//!   upstream's connection and the generation task turn every token already
//!   received into log entries; the batch then takes them all. A burst costs
//!   one `writev` instead of one per token, which was most of the CPU a token
//!   cost. A lone token waits only for the tasks that were ready anyway.
//! - The keep-alive timer is re-armed only when it fires, not after every event.

use std::convert::Infallible;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use crate::streams::{Entry, StreamId};
use crate::wire::{ErrorCode, StreamEvent};

/// Tells a browser `EventSource` to reconnect (and resume) after one second.
const RETRY: &[u8] = b"retry: 1000\n\n";
const PING: &[u8] = b": ping\n\n";
const DONE: &[u8] = b"data: [DONE]\n\n";
/// Sent if one of our own events ever failed to serialize (a bug): the client
/// is told rather than shown a silent gap.
const ENCODING_FAILED: &[u8] =
    br#"{"type":"error","code":"invalid_upstream_data","message":"an event could not be encoded"}"#;
/// A batch stops growing here, so one slow client never holds a large buffer.
const MAX_BATCH_BYTES: usize = 64 * 1024;
/// An entry that comes within this of the last write is part of a burst, and
/// its batch may wait up to `MAX_HOLD` for the rest: a token of a fast stream
/// leaves at most a millisecond later, in one write with its neighbours,
/// instead of one write each. A token that comes alone (any model a person
/// can read along with) never waits, and neither does the first one.
const BURST_GAP: Duration = Duration::from_millis(1);
const MAX_HOLD: Duration = Duration::from_millis(1);
/// At most this many rounds of gathering per batch.
const MAX_ROUNDS: usize = 256;
/// Room for a few token events before the buffer has to grow; a batch
/// starts as big as the one before it.
const BATCH_CAPACITY: usize = 512;

pub const STREAM_ID_HEADER: HeaderName = HeaderName::from_static("x-stream-id");

/// The streaming response for one follower of generation `id`.
pub fn response(
    id: StreamId,
    follower: impl Stream<Item = Entry> + Send + 'static,
    keepalive: Duration,
) -> Response {
    let prefix = id.to_string();
    stream(id, follower, keepalive, RETRY, move |entry, batch| {
        frame(&prefix, entry, batch)
    })
}

/// An SSE response for generation `id`: `prelude`, then what `frame` writes
/// for each entry of `follower` (returning whether it was model text), in
/// batches, with keep-alive comments and the headers that stop proxies from
/// buffering or caching it. Every streaming route of tokenrelay answers
/// through this; `/v1` frames OpenAI chunks.
pub fn stream<S, F>(
    id: StreamId,
    follower: S,
    keepalive: Duration,
    prelude: &'static [u8],
    frame: F,
) -> Response
where
    S: Stream<Item = Entry> + Send + 'static,
    F: FnMut(Entry, &mut BytesMut) -> bool + Send + 'static,
{
    let relay = Relay {
        follower: Box::pin(follower),
        frame,
        prelude,
        keepalive,
        alarm: Box::pin(tokio::time::sleep(keepalive)),
        last_sent: Instant::now(),
        started: false,
        capacity: BATCH_CAPACITY,
        text_sent: false,
        hold_timer: None,
        ended: false,
    };
    let batches = futures_util::stream::unfold(relay, |mut relay| async move {
        let batch = relay.next_batch().await?;
        Some((Ok::<_, Infallible>(batch), relay))
    });
    let mut response = Response::new(Body::from_stream(batches));
    set_headers(&mut response, id);
    response
}

fn set_headers(response: &mut Response, id: StreamId) {
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
}

/// One client's response body in the making.
struct Relay<S, F> {
    follower: Pin<Box<S>>,
    /// Appends an entry's frame to the batch; true if it was model text.
    frame: F,
    /// Sent before the first entry.
    prelude: &'static [u8],
    keepalive: Duration,
    /// Fires `keepalive` after it was last armed; a ping goes out only if
    /// nothing else did since `last_sent`.
    alarm: Pin<Box<Sleep>>,
    last_sent: Instant,
    /// The prelude went out.
    started: bool,
    /// What the next batch's buffer starts with.
    capacity: usize,
    /// Model text went out: later batches may wait for more.
    text_sent: bool,
    /// Ends the wait for the rest of a burst; made on the first one.
    hold_timer: Option<Pin<Box<Sleep>>>,
    /// The follower has ended; nothing more to read.
    ended: bool,
}

impl<S, F> Relay<S, F>
where
    S: Stream<Item = Entry>,
    F: FnMut(Entry, &mut BytesMut) -> bool,
{
    /// The next bytes to write: whatever entries are ready (waiting for one
    /// if none is), or a keep-alive comment; `None` once all is sent.
    async fn next_batch(&mut self) -> Option<Bytes> {
        if self.ended {
            return None;
        }
        let mut batch = BytesMut::with_capacity(self.capacity);
        if !self.started {
            self.started = true;
            batch.extend_from_slice(self.prelude);
        }
        let mut text = false;
        // One entry with our own waker, the one thing worth being woken for.
        let entries = poll_fn(|cx| {
            let entries = self.gather(cx, &mut batch, 1, &mut text);
            if entries > 0 || self.ended || !batch.is_empty() {
                return Poll::Ready(entries);
            }
            self.poll_keepalive(cx, &mut batch).map(|()| 0)
        })
        .await;
        if entries > 0 {
            let first = Instant::now();
            // Entries that follow the last write closely are a burst: it
            // pays to gather the rest of it first. An entry that comes alone
            // goes out at once, and so does everything until the first
            // token is out.
            let bursting = self.text_sent && first - self.last_sent < BURST_GAP;
            let rounds = if bursting { MAX_ROUNDS } else { 0 };
            for _ in 0..rounds {
                if self.ended || batch.len() >= MAX_BATCH_BYTES {
                    break;
                }
                // Let every task that is ready run — the upstream's
                // connection and the generation above all — then take what
                // they appended. Polled with a no-op waker, the follower does
                // not wake us per event meanwhile; the yield brings us back.
                tokio::task::yield_now().await;
                let more = {
                    let mut cx = Context::from_waker(Waker::noop());
                    self.gather(&mut cx, &mut batch, usize::MAX, &mut text)
                };
                if more > 0 {
                    continue;
                }
                if !self.hold(first + MAX_HOLD, &mut batch, &mut text).await {
                    break;
                }
            }
        }
        if batch.is_empty() {
            return None;
        }
        self.text_sent |= text;
        self.last_sent = Instant::now();
        // The next batch is probably like this one: start it big enough.
        self.capacity = batch
            .len()
            .next_power_of_two()
            .clamp(BATCH_CAPACITY, MAX_BATCH_BYTES);
        Some(batch.freeze())
    }

    /// Waits for the next entry until `deadline`; true if one came.
    async fn hold(&mut self, deadline: Instant, batch: &mut BytesMut, text: &mut bool) -> bool {
        if Instant::now() >= deadline {
            return false;
        }
        let mut timer = self
            .hold_timer
            .take()
            .unwrap_or_else(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        let came = poll_fn(|cx| {
            if self.gather(cx, batch, 1, text) > 0 || self.ended {
                return Poll::Ready(true);
            }
            timer.as_mut().poll(cx).map(|()| false)
        })
        .await;
        self.hold_timer = Some(timer);
        came
    }

    /// Frames up to `most` entries that are ready now; returns how many, and
    /// sets `text` if one was model text.
    fn gather(
        &mut self,
        cx: &mut Context<'_>,
        batch: &mut BytesMut,
        most: usize,
        text: &mut bool,
    ) -> usize {
        let mut entries = 0;
        while entries < most && !self.ended && batch.len() < MAX_BATCH_BYTES {
            match self.follower.as_mut().poll_next(cx) {
                Poll::Ready(Some(entry)) => {
                    *text |= (self.frame)(entry, batch);
                    entries += 1;
                }
                Poll::Ready(None) => self.ended = true,
                Poll::Pending => break,
            }
        }
        entries
    }

    /// Ready with a `: ping` in `batch` once nothing has gone out for `keepalive`.
    fn poll_keepalive(&mut self, cx: &mut Context<'_>, batch: &mut BytesMut) -> Poll<()> {
        ready!(self.alarm.as_mut().poll(cx));
        let now = Instant::now();
        let due = self.last_sent + self.keepalive;
        if now < due {
            // Something went out since the alarm was armed: wait from then.
            self.alarm.as_mut().reset(due);
            ready!(self.alarm.as_mut().poll(cx));
        }
        batch.extend_from_slice(PING);
        self.alarm.as_mut().reset(Instant::now() + self.keepalive);
        Poll::Ready(())
    }
}

/// Appends one entry's SSE frame to `batch`; true if it was model text.
fn frame(prefix: &str, entry: Entry, batch: &mut BytesMut) -> bool {
    match entry {
        Entry::Event { seq, event } => {
            batch.extend_from_slice(b"id: ");
            batch.extend_from_slice(prefix.as_bytes());
            batch.put_u8(b':');
            put_decimal(batch, seq);
            batch.extend_from_slice(b"\ndata: ");
            put_json(batch, &event);
            batch.extend_from_slice(b"\n\n");
            return event.is_text();
        }
        Entry::Done => batch.extend_from_slice(DONE),
        Entry::Gap { first_kept } => {
            let error = StreamEvent::error(
                ErrorCode::ResumeGap,
                format!(
                    "events before {prefix}:{first_kept} are no longer kept (RESUME_MAX_STREAM_BYTES); \
                     resume from there or start a new generation"
                ),
            );
            batch.extend_from_slice(b"data: ");
            put_json(batch, &error);
            batch.extend_from_slice(b"\n\n");
        }
    }
    false
}

fn put_json(batch: &mut BytesMut, event: &StreamEvent) {
    let start = batch.len();
    if let StreamEvent::Token {
        token,
        refusal: false,
        choice: None,
    } = event
    {
        // Nearly every event relayed, so it skips serde's tagged-enum
        // machinery; the test below holds it to the same bytes.
        batch.extend_from_slice(br#"{"type":"token","token":"#);
        if serde_json::to_writer(batch.writer(), token.as_str()).is_ok() {
            batch.put_u8(b'}');
            return;
        }
        batch.truncate(start);
    }
    if serde_json::to_writer(batch.writer(), event).is_err() {
        batch.truncate(start);
        batch.extend_from_slice(ENCODING_FAILED);
    }
}

/// `value` in decimal, without going through `fmt`.
fn put_decimal(batch: &mut BytesMut, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    while at > 0 {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    batch.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;
    use axum::response::sse::{Event, Sse};
    use futures_util::{StreamExt, stream};

    fn framed(entry: Entry) -> String {
        let mut batch = BytesMut::new();
        let _ = frame("ab", entry, &mut batch);
        String::from_utf8_lossy(&batch).into_owned()
    }

    /// What axum's `Sse` writes for `event` with id `id`.
    async fn axum_frame(id: &str, event: &StreamEvent) -> String {
        let event = Event::default()
            .id(id)
            .json_data(event)
            .unwrap_or_else(|error| panic!("{error}"));
        let body = Sse::new(stream::iter([Ok::<_, Infallible>(event)]))
            .into_response()
            .into_body();
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn frames_are_what_axum_would_write() {
        let events = [
            StreamEvent::Token {
                token: "a\nb \"c\"\r\u{2028}é\u{1}\\".to_owned(),
                refusal: false,
                choice: None,
            },
            StreamEvent::Token {
                token: "refused".to_owned(),
                refusal: true,
                choice: Some(1),
            },
            StreamEvent::ToolCall {
                index: 1,
                id: Some("call_1".to_owned()),
                name: Some("f".to_owned()),
                arguments: Some("{\"x\":\n1}".to_owned()),
                choice: Some(2),
            },
            StreamEvent::error(ErrorCode::UpstreamError, "line\r\nbreak"),
        ];
        for (seq, event) in [0, 9, 10, 1_234_567_890].into_iter().zip(events) {
            let expected = axum_frame(&format!("ab:{seq}"), &event).await;
            let event = std::sync::Arc::new(event);
            assert_eq!(framed(Entry::Event { seq, event }), expected);
        }
        assert_eq!(framed(Entry::Done), "data: [DONE]\n\n");
        assert!(
            framed(Entry::Gap { first_kept: 7 })
                .starts_with("data: {\"type\":\"error\",\"code\":\"resume_gap\"")
        );
    }

    fn token(seq: u64) -> Entry {
        Entry::Event {
            seq,
            event: std::sync::Arc::new(StreamEvent::Token {
                token: format!("w{seq} "),
                refusal: false,
                choice: None,
            }),
        }
    }

    fn stream_id() -> StreamId {
        StreamId::parse(&"ab".repeat(16)).unwrap_or_else(|| panic!("a stream id"))
    }

    #[tokio::test]
    async fn a_burst_leaves_whole_in_order_and_in_few_writes() {
        let start = Entry::Event {
            seq: 0,
            event: std::sync::Arc::new(StreamEvent::Start {
                stream_id: "ab".repeat(16),
                model: "m".to_owned(),
            }),
        };
        let entries: Vec<Entry> = std::iter::once(start)
            .chain((1..=2_000).map(token))
            .chain([Entry::Done])
            .collect();
        let mut expected = BytesMut::from(RETRY);
        for entry in entries.iter().cloned() {
            let _ = frame(&"ab".repeat(16), entry, &mut expected);
        }
        let body = response(stream_id(), stream::iter(entries), Duration::from_secs(15))
            .into_body()
            .into_data_stream();
        let batches: Vec<Bytes> = body
            .map(|batch| batch.unwrap_or_else(|error| panic!("{error}")))
            .collect()
            .await;
        assert_eq!(batches.concat(), expected);
        // The prelude and start, the first token alone, then the rest as
        // fast as MAX_BATCH_BYTES allows.
        let most = 2 + expected.len() / MAX_BATCH_BYTES + 2;
        assert!(batches.len() <= most, "{} writes", batches.len());
    }

    #[tokio::test(start_paused = true)]
    async fn silence_gets_a_ping_after_keepalive() {
        let keepalive = Duration::from_secs(15);
        let started = Instant::now();
        let mut body = response(stream_id(), stream::pending::<Entry>(), keepalive)
            .into_body()
            .into_data_stream();
        let first = body.next().await.and_then(Result::ok);
        assert_eq!(first.as_deref(), Some(RETRY));
        let second = body.next().await.and_then(Result::ok);
        assert_eq!(second.as_deref(), Some(PING));
        assert_eq!(started.elapsed(), keepalive);
        let third = body.next().await.and_then(Result::ok);
        assert_eq!(third.as_deref(), Some(PING));
        assert_eq!(started.elapsed(), keepalive * 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_token_goes_out_at_once_and_a_burst_waits_at_most_max_hold() {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel::<Entry>();
        let follower = stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|entry| (entry, receiver))
        });
        let mut body = response(stream_id(), follower, Duration::from_secs(15))
            .into_body()
            .into_data_stream();
        let mut next = async || body.next().await.and_then(Result::ok).unwrap_or_default();
        let send = |entry| {
            sender
                .send(entry)
                .unwrap_or_else(|_| panic!("the relay is gone"))
        };
        send(token(0));
        assert!(next().await.starts_with(RETRY));
        for seq in 1..=2 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let sent = Instant::now();
            send(token(seq));
            let batch = next().await;
            assert!(batch.starts_with(format!("id: {}:{seq}\n", "ab".repeat(16)).as_bytes()));
            assert_eq!(sent.elapsed(), Duration::ZERO);
        }
        // Right after a write: the start of a burst, which waits for company.
        let sent = Instant::now();
        send(token(3));
        let batch = next().await;
        assert!(batch.starts_with(format!("id: {}:3\n", "ab".repeat(16)).as_bytes()));
        assert_eq!(sent.elapsed(), MAX_HOLD);
    }

    #[test]
    fn decimals() {
        for value in [0, 7, 10, 99, 100, u64::MAX] {
            let mut batch = BytesMut::new();
            put_decimal(&mut batch, value);
            assert_eq!(batch, value.to_string().as_bytes());
        }
    }
}
