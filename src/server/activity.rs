//! Which connections are idle: the requests in flight on one connection,
//! counted from the moment a request arrives until its response body is
//! finished or dropped.
//!
//! hyper closes an HTTP/1.1 connection that sends no request head in time,
//! but an HTTP/2 connection may sit open with no stream for ever and hold a
//! place under `MAX_CONNECTIONS`. The accept loop waits on [`Activity::idle`]
//! to close any connection that had no open request for `REQUEST_TIMEOUT_SECS`.

use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The requests in flight on one connection. Every open stream holds one:
/// a count beside a `Notify` is 56 bytes, where a `watch` channel's shared
/// state, with its eight `Notify`s, is over 300 (README, Performance).
#[derive(Debug, Clone)]
pub(super) struct Activity {
    in_flight: Arc<InFlight>,
}

#[derive(Debug, Default)]
struct InFlight {
    count: AtomicUsize,
    /// Told when the first request in flight arrives and when the last ends.
    changed: Notify,
}

impl Activity {
    pub(super) fn new() -> Self {
        Self {
            in_flight: Arc::default(),
        }
    }

    /// Counts one request until the returned guard is dropped.
    pub(super) fn open(&self) -> Open {
        // `idle` cares only whether any request is in flight.
        if self.in_flight.count.fetch_add(1, Ordering::AcqRel) == 0 {
            self.in_flight.changed.notify_waiters();
        }
        Open {
            in_flight: Arc::clone(&self.in_flight),
        }
    }

    /// Resolves once no request has been in flight from `first` on, or for
    /// `period` after the last one ended.
    pub(super) async fn idle(&self, first: Instant, period: Duration) {
        let in_flight = &*self.in_flight;
        let mut until = first;
        loop {
            // Registered before the look, so that a change just after it
            // still wakes this waiter.
            let mut changed = pin!(in_flight.changed.notified());
            changed.as_mut().enable();
            if in_flight.count.load(Ordering::Acquire) == 0 {
                tokio::select! {
                    () = tokio::time::sleep_until(until) => return,
                    () = changed => {}
                }
            } else {
                changed.await;
            }
            // A request came or the last one ended: when none is left, the
            // period counts from now.
            until = Instant::now() + period;
        }
    }
}

/// One request in flight; dropping it ends the count.
#[derive(Debug)]
pub(super) struct Open {
    in_flight: Arc<InFlight>,
}

impl Open {
    /// Keeps the request counted for as long as `body` is being sent.
    pub(super) fn around<B>(self, body: B) -> Tracked<B> {
        Tracked { body, _open: self }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if self.in_flight.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.in_flight.changed.notify_waiters();
        }
    }
}

/// A response body that keeps its request counted as in flight.
#[derive(Debug)]
pub(super) struct Tracked<B> {
    body: B,
    _open: Open,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_waits_for_the_last_request_to_end() {
        let activity = Activity::new();
        let started = Instant::now();
        let open = activity.open();
        let idle = tokio::spawn({
            let activity = activity.clone();
            async move {
                activity
                    .idle(started + Duration::from_secs(1), Duration::from_secs(1))
                    .await
            }
        });

        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!idle.is_finished(), "a request is still in flight");
        drop(open);
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(
            !idle.is_finished(),
            "the period counts from the last request"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(idle.is_finished());
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_requests_is_idle_from_the_first_deadline() {
        let activity = Activity::new();
        let started = Instant::now();

        activity
            .idle(started + Duration::from_secs(2), Duration::from_secs(30))
            .await;

        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_before_the_first_deadline_moves_it_to_a_period_after_its_end() {
        let activity = Activity::new();
        let started = Instant::now();
        let idle = tokio::spawn({
            let activity = activity.clone();
            async move {
                activity
                    .idle(started + Duration::from_secs(2), Duration::from_secs(3))
                    .await;
                started.elapsed()
            }
        });

        tokio::time::sleep(Duration::from_secs(1)).await;
        // Two at once: only the end of the last one counts.
        let (first, second) = (activity.open(), activity.open());
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(first);
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(second);

        let idle_after = tokio::time::timeout(Duration::from_secs(10), idle).await;
        assert!(
            matches!(idle_after, Ok(Ok(after)) if after == Duration::from_secs(5)),
            "{idle_after:?}"
        );
    }
}
