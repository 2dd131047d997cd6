//! An upstream's event stream after it answered 200: its SSE events under
//! an idle timer and an optional total deadline, ending after the first
//! failure. Dropping it drops the HTTP request, which is how the upstream
//! learns to stop generating.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use futures_util::StreamExt;

use super::{MAX_MESSAGE_CHARS, root_cause};
use crate::config::Timeouts;
use crate::event::{ErrorCode, StreamEvent};
use crate::providers::redact::Redactor;
use crate::providers::sse;

/// One SSE event from the upstream: its type (`message` unless named) and data.
#[derive(Debug)]
pub(crate) struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Why an upstream stream ended early, after it had started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No bytes for the idle timeout, or the total deadline passed.
    Timeout(String),
    /// The connection broke before the upstream finished.
    Disconnected(String),
    /// The bytes were not a valid event stream.
    InvalidData(String),
}

impl From<Failure> for StreamEvent {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Timeout(message) => StreamEvent::error(ErrorCode::UpstreamTimeout, message),
            Failure::Disconnected(message) => {
                StreamEvent::error(ErrorCode::UpstreamDisconnected, message)
            }
            Failure::InvalidData(message) => {
                StreamEvent::error(ErrorCode::InvalidUpstreamData, message)
            }
        }
    }
}

type EventStream =
    Pin<Box<dyn Stream<Item = Result<sse::Event, sse::SseError<reqwest::Error>>> + Send>>;

/// The upstream's events after a 200, with the idle timer and total deadline
/// applied. Ends after the first failure.
pub(crate) struct UpstreamEvents {
    inner: EventStream,
    idle: Duration,
    /// Fires at the idle deadline or the total deadline, whichever is first.
    alarm: Pin<Box<Sleep>>,
    /// Set when bytes arrive; cleared when an event does.
    activity: Arc<AtomicBool>,
    /// When the last event arrived: the idle timeout counts from here.
    last_event: Instant,
    deadline: Option<(Duration, Instant)>,
    /// When the request was first sent.
    started: Instant,
    redactor: Redactor,
    finished: bool,
}

impl std::fmt::Debug for UpstreamEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamEvents").finish_non_exhaustive()
    }
}

impl Stream for UpstreamEvents {
    type Item = Result<SseEvent, Failure>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let item = match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(item) => item,
            // The alarm is re-armed only when it fires, not after every
            // event: moving a timer costs more than the rest of an event's
            // way through here (README, Performance).
            Poll::Pending => loop {
                ready!(self.alarm.as_mut().poll(cx));
                let now = Instant::now();
                if self.deadline.is_some_and(|(_, deadline)| now >= deadline) {
                    let failure = self.timeout();
                    return self.fail(failure);
                }
                let quiet_since = if self.activity.swap(false, Ordering::Relaxed) {
                    now
                } else {
                    self.last_event
                };
                if now >= quiet_since + self.idle {
                    let failure = self.timeout();
                    return self.fail(failure);
                }
                let alarm = self.alarm_after(quiet_since);
                self.alarm.as_mut().reset(alarm);
            },
        };
        let now = Instant::now();
        self.last_event = now;
        self.activity.store(false, Ordering::Relaxed);
        if self.deadline.is_some_and(|(_, deadline)| now >= deadline) {
            let failure = self.timeout();
            return self.fail(failure);
        }
        match item {
            None => Poll::Ready(None),
            Some(Ok(event)) => Poll::Ready(Some(Ok(SseEvent {
                event: event.event,
                data: event.data,
            }))),
            Some(Err(error)) => self.fail(failure(error)),
        }
    }
}

impl UpstreamEvents {
    pub(super) fn new(
        response: reqwest::Response,
        max_line_bytes: usize,
        timeouts: Timeouts,
        started: Instant,
        redactor: Redactor,
    ) -> Self {
        let activity = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&activity);
        // Bytes that complete no event (keep-alive comments, a long line in
        // pieces) still prove the upstream is alive.
        let body = response
            .bytes_stream()
            .inspect(move |_| seen.store(true, Ordering::Relaxed));
        let mut events = Self {
            inner: Box::pin(sse::events(body, max_line_bytes)),
            idle: timeouts.idle,
            alarm: Box::pin(tokio::time::sleep(timeouts.idle)),
            activity,
            last_event: Instant::now(),
            deadline: timeouts.total.map(|total| (total, started + total)),
            started,
            redactor,
            finished: false,
        };
        let alarm = events.alarm_after(events.last_event);
        events.alarm.as_mut().reset(alarm);
        events
    }

    /// When the request that opened these events was first sent.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// Masks our key in upstream error messages, then cuts them short,
    /// before they reach a client or a log.
    pub(crate) fn scrub(&self, events: &mut [StreamEvent]) {
        for event in events {
            if let StreamEvent::Error { message, .. } = event {
                *message = self.redactor.clean(message, MAX_MESSAGE_CHARS);
            }
        }
    }

    /// The idle deadline counted from `quiet_since`, or the total deadline
    /// if that comes first.
    fn alarm_after(&self, quiet_since: Instant) -> Instant {
        let idle = quiet_since + self.idle;
        match self.deadline {
            Some((_, deadline)) => idle.min(deadline),
            None => idle,
        }
    }

    fn timeout(&self) -> Failure {
        match self.deadline {
            Some((total, deadline)) if Instant::now() >= deadline => Failure::Timeout(format!(
                "the generation took longer than the total limit of {} s",
                total.as_secs_f64()
            )),
            _ => Failure::Timeout(format!(
                "the upstream sent nothing for {} s",
                self.idle.as_secs_f64()
            )),
        }
    }

    fn fail(&mut self, failure: Failure) -> Poll<Option<Result<SseEvent, Failure>>> {
        self.finished = true;
        Poll::Ready(Some(Err(failure)))
    }
}

fn failure(error: sse::SseError<reqwest::Error>) -> Failure {
    match error {
        sse::SseError::Transport(error) => Failure::Disconnected(format!(
            "the upstream connection broke before the generation finished ({})",
            root_cause(&error)
        )),
        sse::SseError::InvalidUtf8 => {
            Failure::InvalidData("the upstream sent bytes that are not valid UTF-8".to_owned())
        }
        sse::SseError::TooLong { limit } => Failure::InvalidData(format!(
            "the upstream sent an event longer than UPSTREAM_MAX_LINE_BYTES ({limit} bytes)"
        )),
    }
}
