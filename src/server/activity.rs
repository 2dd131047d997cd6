//! Which connections are idle: the requests in flight on one connection,
//! counted from the moment a request arrives until its response body is
//! finished or dropped.
//!
//! hyper closes an HTTP/1.1 connection that sends no request head in time,
//! but an HTTP/2 connection may sit open with no stream for ever and hold a
//! place under `MAX_CONNECTIONS`. The accept loop waits on [`Activity::idle`]
//! to close any connection that had no open request for `REQUEST_TIMEOUT_SECS`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::watch;
use tokio::time::Instant;

/// The requests in flight on one connection.
#[derive(Debug, Clone)]
pub(super) struct Activity {
    in_flight: Arc<watch::Sender<usize>>,
}

impl Activity {
    pub(super) fn new() -> Self {
        Self {
            in_flight: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Counts one request until the returned guard is dropped.
    pub(super) fn open(&self) -> Open {
        self.in_flight.send_modify(|count| *count += 1);
        Open {
            in_flight: Arc::clone(&self.in_flight),
        }
    }

    /// Resolves once no request has been in flight from `first` on, or for
    /// `period` after the last one ended.
    pub(super) async fn idle(&self, first: Instant, period: Duration) {
        let mut in_flight = self.in_flight.subscribe();
        let mut until = first;
        loop {
            if *in_flight.borrow_and_update() == 0 {
                match tokio::time::timeout_at(until, in_flight.changed()).await {
                    Err(_) => return,
                    // The sender lives as long as `self`.
                    Ok(Err(_)) => std::future::pending::<()>().await,
                    Ok(Ok(())) => {}
                }
            }
            if in_flight.wait_for(|count| *count == 0).await.is_err() {
                std::future::pending::<()>().await;
            }
            until = Instant::now() + period;
        }
    }
}

/// One request in flight; dropping it ends the count.
#[derive(Debug)]
pub(super) struct Open {
    in_flight: Arc<watch::Sender<usize>>,
}

impl Open {
    /// Keeps the request counted for as long as `body` is being sent.
    pub(super) fn around<B>(self, body: B) -> Tracked<B> {
        Tracked { body, _open: self }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.in_flight
            .send_modify(|count| *count = count.saturating_sub(1));
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
}
