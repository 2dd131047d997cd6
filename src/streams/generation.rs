//! One generation: the task that drives its upstream [`Source`] to the end,
//! appending every batch to the log under one lock, and the grace period
//! that ends it when nobody listens (`docs/PROTOCOL.md` §6).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::log::{Log, wake_followers};
use super::{Caller, Chat, Registry, Running, Source, StreamId, chats};
use crate::event::{ErrorCode, FinishReason, StreamEvent};
use crate::lock::lock;
use crate::metrics::Cancellation;
use crate::telemetry::Untrusted;

/// One upstream generation and its event log.
#[derive(Debug)]
pub(crate) struct Generation {
    pub(super) id: StreamId,
    /// The key that created it; only that key may resume or stop it.
    pub(super) owner: Caller,
    /// The chat it answers, when a surface named one.
    pub(super) chat: Option<Chat>,
    pub(super) model: String,
    /// The configured upstream serving it, when there are several.
    pub(super) upstream: Option<String>,
    pub(super) created: Instant,
    pub(super) registry: Arc<Registry>,
    pub(super) log: Mutex<Log>,
    /// Wakes the driver when the last listener leaves or one comes back.
    pub(super) listeners_changed: Notify,
    /// `DELETE`: stop now.
    pub(super) stop: CancellationToken,
    /// The only client left for good: stop now, without a grace period.
    pub(super) abandon: CancellationToken,
    /// Fired once the log is complete, for readers that do not wait on
    /// every event (the Redis mirror).
    pub(super) ended: CancellationToken,
    pub(super) running: Mutex<Option<Running>>,
}

impl Generation {
    pub(crate) fn id(&self) -> StreamId {
        self.id
    }

    /// A client on another replica is following this generation until `until`.
    pub(crate) fn listened_elsewhere(&self, until: Instant) {
        lock(&self.log).remote_lease = Some(until);
        self.listeners_changed.notify_waiters();
    }

    /// Whether a client on another replica follows it now.
    pub(crate) fn is_followed_elsewhere(&self) -> bool {
        lock(&self.log)
            .remote_lease
            .is_some_and(|until| until > Instant::now())
    }

    /// `DELETE`: followers get `finish` with `cancelled`.
    pub(crate) fn stop(&self) {
        self.stop.cancel();
    }

    /// Ends the generation now because its client left and will not come
    /// back (no grace period); counted as `client_gone`.
    pub(crate) fn abandon(&self) {
        self.abandon.cancel();
    }

    /// Drives the upstream to its end, appending every batch, and keeps the
    /// log for the resume TTL afterwards.
    pub(crate) async fn run(self: Arc<Self>, mut upstream: Pin<Box<dyn Source>>) {
        let config = self.registry.config;
        let metrics = Arc::clone(&self.registry.metrics);
        let mut cancelled = None;
        let ending = {
            let interrupted = WhenWoken::new(async {
                tokio::select! {
                    biased;
                    () = self.stop.cancelled() => Cancellation::Stopped,
                    () = self.registry.shutdown.cancelled() => Cancellation::Shutdown,
                    () = self.abandoned(config.grace) => Cancellation::Abandoned,
                    () = self.abandon.cancelled() => Cancellation::Abandoned,
                }
            });
            tokio::pin!(interrupted);
            let mut events = Vec::new();
            loop {
                let more = tokio::select! {
                    biased;
                    cause = &mut interrupted => {
                        cancelled = Some(cause);
                        break Some(interruption(cause));
                    }
                    more = std::future::poll_fn(|cx| upstream.as_mut().poll_batch(cx, &mut events)) => more,
                };
                let ended = events.last().is_some_and(StreamEvent::is_terminal);
                if !events.is_empty() {
                    self.append_all(&mut events, upstream.started());
                }
                if ended {
                    break None;
                }
                if more.is_none() {
                    // A source ends with a terminal event; one that does not
                    // must still not look complete.
                    break Some(StreamEvent::error(
                        ErrorCode::UpstreamDisconnected,
                        "the upstream closed the stream before the generation finished",
                    ));
                }
            }
        };
        // Dropping the response closes the connection: the upstream stops generating.
        drop(upstream);
        if let Some(event) = ending {
            self.append(event);
        }
        self.finish();
        if let Some(cause) = cancelled {
            metrics.cancellation(cause);
        }
        self.report();
        tokio::time::sleep(config.ttl).await;
        self.forget();
    }

    /// Resolves once nobody has listened for `grace`.
    async fn abandoned(&self, grace: Duration) {
        loop {
            let changed = self.listeners_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.listening() {
                Listening::Here => {
                    changed.await;
                    continue;
                }
                Listening::Elsewhere(until) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {}
                        () = changed => {}
                    }
                    continue;
                }
                Listening::Nobody => {}
            }
            tokio::select! {
                () = tokio::time::sleep(grace) => {
                    if matches!(self.listening(), Listening::Nobody) {
                        return;
                    }
                }
                () = changed => {}
            }
        }
    }

    fn listening(&self) -> Listening {
        let log = lock(&self.log);
        match log.remote_lease {
            _ if !log.positions.is_empty() => Listening::Here,
            Some(until) if until > Instant::now() => Listening::Elsewhere(until),
            _ => Listening::Nobody,
        }
    }

    /// Appends a batch from the upstream, counting its tokens and noting
    /// when the first one arrived (`sent` is when the upstream request went out).
    fn append_all(&self, events: &mut Vec<StreamEvent>, sent: Instant) {
        let tokens = events.iter().filter(|event| event.is_text()).count() as u64;
        if tokens > 0 {
            self.registry.metrics.tokens(tokens);
        }
        let mut log = lock(&self.log);
        if tokens > 0 {
            log.tokens += tokens;
            if log.first_token.is_none() {
                let now = Instant::now();
                let seq = log.first_seq
                    + log.records.len() as u64
                    + events.iter().position(StreamEvent::is_text).unwrap_or(0) as u64;
                log.first_token = Some((seq, now));
                self.registry.metrics.upstream_ttft(now - sent);
            }
        }
        for event in events.drain(..) {
            self.keep(&mut log, event);
        }
        wake_followers(log);
    }

    /// One log line per finished stream, and the in-stream failure metrics.
    fn report(&self) {
        let log = lock(&self.log);
        let outcome = match log.records.last() {
            Some(StreamEvent::Finish { finish_reason, .. }) => finish_reason.as_str(),
            Some(StreamEvent::Error { code, .. }) => {
                self.registry
                    .metrics
                    .upstream_failure(self.upstream.as_deref(), *code);
                code.as_str()
            }
            _ => "unknown",
        };
        let ttft_ms = log
            .first_token
            .map(|(_, at)| at.duration_since(self.created).as_secs_f64() * 1e3);
        tracing::info!(
            stream_id = %self.id,
            caller = %self.owner,
            model = %Untrusted(&self.model),
            upstream = self.upstream.as_deref(),
            outcome,
            ttft_ms,
            tokens = log.tokens,
            duration_ms = self.created.elapsed().as_secs_f64() * 1e3,
            "stream finished"
        );
    }

    pub(super) fn append(&self, event: StreamEvent) {
        let mut log = lock(&self.log);
        self.keep(&mut log, event);
        wake_followers(log);
    }

    fn keep(&self, log: &mut Log, event: StreamEvent) {
        let size = log.records.push(event);
        log.bytes += size;
        self.registry.total_bytes.fetch_add(size, Ordering::Relaxed);
        let lost_listener = self.trim(log);
        if lost_listener && log.positions.is_empty() {
            self.listeners_changed.notify_waiters();
        }
    }

    /// Drops the oldest events beyond the per-stream bound (keeping the
    /// newest, which live followers need). Followers left behind are no
    /// longer counted as listening; they get a clear error when they read.
    /// Returns whether any follower was left behind.
    fn trim(&self, log: &mut Log) -> bool {
        let limit = self.registry.config.max_stream_bytes;
        let mut freed = 0;
        while log.bytes > limit && log.records.len() > 1 {
            if let Some(size) = log.records.pop_front() {
                log.bytes -= size;
                freed += size;
                log.first_seq += 1;
            }
        }
        if freed == 0 {
            return false;
        }
        self.registry
            .total_bytes
            .fetch_sub(freed, Ordering::Relaxed);
        let first = log.first_seq;
        let before = log.positions.len();
        log.positions.retain(|_, position| *position >= first);
        log.positions.len() != before
    }

    fn finish(&self) {
        lock(&self.running).take();
        let mut log = lock(&self.log);
        log.finished = true;
        // Nothing grows a finished log; it is kept for the TTL as it is.
        log.records.shrink_to_fit();
        wake_followers(log);
        self.ended.cancel();
    }

    fn forget(&self) {
        lock(&self.registry.generations).remove(&self.id);
        if let Some(chat) = &self.chat {
            chats::forget(&self.registry, self.owner, chat, self.id);
        }
        let bytes = std::mem::take(&mut lock(&self.log).bytes);
        self.registry
            .total_bytes
            .fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// The last event of a generation that `cause` ended.
fn interruption(cause: Cancellation) -> StreamEvent {
    match cause {
        Cancellation::Stopped => StreamEvent::Finish {
            finish_reason: FinishReason::Cancelled,
            usage: None,
        },
        Cancellation::Shutdown => {
            StreamEvent::error(ErrorCode::ShuttingDown, "the server is shutting down")
        }
        Cancellation::Abandoned => StreamEvent::error(
            ErrorCode::Cancelled,
            "no client was attached for the resume grace period",
        ),
    }
}

/// A future polled only once one of the wakers it registered has fired.
///
/// A generation's task wakes for every upstream chunk, and polling its stop,
/// shutdown and grace futures each time cost several mutex round trips per
/// token (README, Performance); they fire once in a generation's life.
struct WhenWoken<F> {
    future: Pin<Box<F>>,
    signal: Arc<Signal>,
}

/// Set by the wrapped future's wakers; wakes the task that polls it.
#[derive(Debug)]
struct Signal {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F> WhenWoken<F> {
    fn new(future: F) -> Self {
        Self {
            future: Box::pin(future),
            // Polled once at the start, to register its wakers.
            signal: Arc::new(Signal {
                fired: AtomicBool::new(true),
                task: AtomicWaker::new(),
            }),
        }
    }
}

impl<F: Future> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        // Registered before looking, so a wake that comes after the look
        // still reaches this task.
        this.signal.task.register(cx.waker());
        if !this.signal.fired.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = Waker::from(Arc::clone(&this.signal));
        this.future.as_mut().poll(&mut Context::from_waker(&waker))
    }
}

/// Who is following a generation.
enum Listening {
    Here,
    /// Only a client on another replica, whose lease runs until then.
    Elsewhere(Instant),
    Nobody,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_when_woken_future_is_polled_at_the_start_and_after_its_wakers_fire() {
        let polls = std::cell::Cell::new(0);
        let registered = std::cell::RefCell::new(None::<Waker>);
        let inner = std::future::poll_fn(|cx| {
            polls.set(polls.get() + 1);
            *registered.borrow_mut() = Some(cx.waker().clone());
            if polls.get() == 3 {
                Poll::Ready("fired")
            } else {
                Poll::Pending
            }
        });
        let mut future = std::pin::pin!(WhenWoken::new(inner));
        let mut cx = Context::from_waker(Waker::noop());

        for _ in 0..5 {
            assert!(future.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.get(), 1);
        let wake = |registered: &std::cell::RefCell<Option<Waker>>| {
            if let Some(waker) = registered.borrow_mut().take() {
                waker.wake();
            }
        };
        wake(&registered);
        assert!(future.as_mut().poll(&mut cx).is_pending());
        assert!(future.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.get(), 2);
        wake(&registered);
        assert_eq!(future.as_mut().poll(&mut cx), Poll::Ready("fired"));
    }
}
