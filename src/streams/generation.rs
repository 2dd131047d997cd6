//! One generation: the upstream [`Source`] read to its end, every batch
//! appended to the log under one lock, and the grace period that ends it
//! when nobody listens (`docs/PROTOCOL.md` §6).
//!
//! The generation's own task reads the upstream whenever several clients
//! follow it, or none. While one client alone follows, that client's
//! connection task reads the upstream itself as it waits for the next event:
//! a token then crosses two tasks instead of three (README, Performance).
//! The task takes the upstream back as soon as anyone else follows, that
//! client leaves, or the generation must end.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use super::log::{Driver, Log, wake_followers};
use super::signals::{Signal, Signals};
use super::{Caller, Chat, Registry, Running, Source, StreamId, chats};
use crate::event::{ErrorCode, FinishReason, StreamEvent};
use crate::lock::lock;
use crate::metrics::Cancellation;
use crate::telemetry::Untrusted;
use crate::woken::WhenWoken;

/// How long a follower that reads the upstream itself may go without coming
/// for its next event before the task takes the upstream back: its client
/// may have stopped reading, and the log, not the upstream, must then be
/// what waits (and what is bounded). A quiet upstream looks the same; the
/// follower then takes the upstream again with its next event.
const STALL_CHECK: Duration = Duration::from_secs(2);

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
    /// The upstream until the generation ends. Whoever reads it holds this
    /// lock and may then take the log's; never the other way round.
    pub(super) pump: Mutex<Pump>,
    /// The generation's task, woken when it must read the upstream again
    /// or a follower has ended the generation.
    pub(super) task: AtomicWaker,
    /// Wakes the task when the last listener leaves or one comes back.
    pub(super) listeners_changed: Notify,
    /// `DELETE` or the only client gone for good: stop now, without a
    /// grace period; and the log complete, for readers that do not wait on
    /// every event (the Redis mirror).
    pub(super) signals: Signals,
    pub(super) running: Mutex<Option<Running>>,
}

/// A running generation's upstream, and the batch being read from it.
pub(super) struct Pump {
    source: Option<Pin<Box<dyn Source>>>,
    events: Vec<StreamEvent>,
}

impl Pump {
    pub(super) fn new(source: Option<Pin<Box<dyn Source>>>) -> Self {
        Self {
            source,
            // A paced stream's batches are one event each; a `Vec` would
            // begin at room for four, held by every open stream.
            events: Vec::with_capacity(1),
        }
    }
}

impl fmt::Debug for Pump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pump")
            .field("running", &self.source.is_some())
            .finish_non_exhaustive()
    }
}

/// What a follower's turn at reading the upstream came to.
pub(super) enum Turn {
    /// A batch, or the end, went into the log.
    Read,
    /// Nothing yet; the upstream wakes the follower when there is.
    Waiting,
    /// The upstream is not this follower's to read (or is gone): it waits
    /// on the log like any other.
    NotMine,
}

impl Generation {
    pub(crate) fn id(&self) -> StreamId {
        self.id
    }

    /// A client on another replica is following this generation until `until`.
    pub(crate) fn listened_elsewhere(&self, until: Instant) {
        let mut log = lock(&self.log);
        log.remote_lease = Some(until);
        self.hand_back(log);
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
        self.signals.raise(Signal::Stop);
    }

    /// Ends the generation now because its client left and will not come
    /// back (no grace period); counted as `client_gone`.
    pub(crate) fn abandon(&self) {
        self.signals.raise(Signal::Abandon);
    }

    /// Reads the upstream to its end (unless a follower does), and keeps
    /// the log for the resume TTL afterwards.
    pub(crate) async fn run(self: Arc<Self>) {
        let config = self.registry.config;
        let interrupted = WhenWoken::new(async {
            tokio::select! {
                biased;
                signal = self.signals.first_of(&[Signal::Stop, Signal::Abandon]) => match signal {
                    Signal::Stop => Cancellation::Stopped,
                    _ => Cancellation::Abandoned,
                },
                () = self.registry.shutdown.cancelled() => Cancellation::Shutdown,
                () = self.abandoned(config.grace) => Cancellation::Abandoned,
            }
        });
        tokio::pin!(interrupted);
        let stall_check = tokio::time::sleep(STALL_CHECK);
        tokio::pin!(stall_check);
        let mut turns_seen = None;
        loop {
            tokio::select! {
                biased;
                cause = &mut interrupted => {
                    self.hand_back(lock(&self.log));
                    if self.end(&mut lock(&self.pump), Some(interruption(cause))) {
                        self.registry.metrics.cancellation(cause);
                    }
                    break;
                }
                ended = std::future::poll_fn(|cx| {
                    self.drive(cx, stall_check.as_mut(), &mut turns_seen)
                }) => if ended {
                    break;
                },
            }
        }
        tokio::time::sleep(config.ttl).await;
        self.forget();
    }

    /// The task's turn at the upstream, unless a follower reads it (then
    /// `stall_check` watches that follower's turns): ready after a batch,
    /// with whether the generation is over.
    fn drive(
        &self,
        cx: &mut Context<'_>,
        mut stall_check: Pin<&mut Sleep>,
        turns_seen: &mut Option<u64>,
    ) -> Poll<bool> {
        // Before looking, so that a hand-back after the look still wakes us.
        self.task.register(cx.waker());
        let mut pump = lock(&self.pump);
        if pump.source.is_none() {
            return Poll::Ready(true);
        }
        let log = lock(&self.log);
        let Some(turns) = log.driver.as_ref().map(|driver| driver.turns) else {
            drop(log);
            *turns_seen = None;
            return self.read(&mut pump, cx);
        };
        drop(log);
        while stall_check.as_mut().poll(cx).is_ready() {
            if *turns_seen == Some(turns) {
                self.hand_back(lock(&self.log));
                *turns_seen = None;
                return self.read(&mut pump, cx);
            }
            *turns_seen = Some(turns);
            stall_check.as_mut().reset(Instant::now() + STALL_CHECK);
        }
        Poll::Pending
    }

    /// Whether follower `number`, finding nothing new in `log`, reads the
    /// upstream itself: it does while it alone follows here and nobody
    /// elsewhere. `waker` is where a hand-back will find it.
    pub(super) fn may_drive(&self, log: &mut Log, number: u64, waker: &Waker) -> bool {
        match &mut log.driver {
            Some(driver) if driver.number == number => {
                driver.waker.clone_from(waker);
                driver.turns = driver.turns.wrapping_add(1);
                true
            }
            Some(_) => false,
            None => {
                let alone = log.positions.only(number);
                let elsewhere = log.remote_lease.is_some_and(|until| until > Instant::now());
                if alone && !elsewhere && !log.finished {
                    log.driver = Some(Driver {
                        number,
                        waker: waker.clone(),
                        turns: 0,
                    });
                }
                log.driver.is_some()
            }
        }
    }

    /// Follower `number`'s turn at the upstream, which `may_drive` gave it.
    pub(super) fn take_turn(&self, number: u64, cx: &mut Context<'_>) -> Turn {
        let mut pump = lock(&self.pump);
        // Handed back since: the task reads now, and a read here would take
        // the upstream's wake-ups away from it.
        let mine = lock(&self.log).driven_by(number);
        if !mine || pump.source.is_none() {
            return Turn::NotMine;
        }
        match self.read(&mut pump, cx) {
            Poll::Ready(_) => Turn::Read,
            Poll::Pending => Turn::Waiting,
        }
    }

    /// The upstream goes back to the task: someone else follows now, the
    /// one that read it left, or the generation is ending. The follower that
    /// read it is woken to wait on the log instead.
    pub(super) fn hand_back(&self, mut log: MutexGuard<'_, Log>) {
        let Some(driver) = log.driver.take() else {
            return;
        };
        drop(log);
        driver.waker.wake();
        self.task.wake();
    }

    /// Reads one batch from the upstream into the log; ready with whether
    /// that ended the generation.
    fn read(&self, pump: &mut Pump, cx: &mut Context<'_>) -> Poll<bool> {
        let Some(source) = pump.source.as_mut() else {
            return Poll::Ready(true);
        };
        let more = ready!(source.as_mut().poll_batch(cx, &mut pump.events));
        let ended = pump.events.last().is_some_and(StreamEvent::is_terminal);
        if !pump.events.is_empty() {
            let sent = source.started();
            self.append_all(&mut pump.events, sent);
        }
        if ended {
            self.end(pump, None);
        } else if more.is_none() {
            // A source ends with a terminal event; one that does not must
            // still not look complete.
            self.end(
                pump,
                Some(StreamEvent::error(
                    ErrorCode::UpstreamDisconnected,
                    "the upstream closed the stream before the generation finished",
                )),
            );
        }
        Poll::Ready(pump.source.is_none())
    }

    /// Drops the upstream, appends `last` if the upstream did not end the
    /// log itself, and finishes the log; false if it was already over.
    fn end(&self, pump: &mut Pump, last: Option<StreamEvent>) -> bool {
        // Dropping the response closes the connection: the upstream stops generating.
        if pump.source.take().is_none() {
            return false;
        }
        // A burst grew it to a whole batch; nothing reads into it again, and
        // the generation is kept for the resume TTL.
        pump.events = Vec::new();
        if let Some(event) = last {
            self.append(event);
        }
        self.finish();
        self.report();
        self.task.wake();
        true
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

    /// Opens the log with the generation's `start`, kept as a mark alone
    /// and rebuilt by [`Generation::start_event`] for whoever reads it.
    pub(super) fn append_start(&self) {
        // Counted as the event it stands for, by the one rule every event is.
        let size = self.start_event().size();
        let mut log = lock(&self.log);
        let size = log.records.push_start(size);
        self.count(&mut log, size);
        wake_followers(log);
    }

    /// The `start` event, which the log keeps only a mark of.
    pub(super) fn start_event(&self) -> StreamEvent {
        StreamEvent::Start {
            stream_id: self.id.to_string(),
            model: self.model.clone(),
            upstream: self.upstream.clone(),
        }
    }

    fn keep(&self, log: &mut Log, event: StreamEvent) {
        let size = log.records.push(event);
        self.count(log, size);
    }

    /// Counts `size` more bytes against the log's bounds, trimming to them.
    fn count(&self, log: &mut Log, size: usize) {
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
        log.positions.drop_behind(first)
    }

    fn finish(&self) {
        lock(&self.running).take();
        let mut log = lock(&self.log);
        log.finished = true;
        // Nothing grows a finished log; it is kept for the TTL as it is.
        log.records.shrink_to_fit();
        wake_followers(log);
        self.signals.raise(Signal::Ended);
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

/// Who is following a generation.
enum Listening {
    Here,
    /// Only a client on another replica, whose lease runs until then.
    Elsewhere(Instant),
    Nobody,
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use futures_util::{Stream, StreamExt};
    use tokio::sync::mpsc;

    use super::*;
    use crate::streams::{Entry, Follower};

    /// An upstream that yields whatever the test sends, one event a batch.
    struct Channel {
        events: mpsc::UnboundedReceiver<StreamEvent>,
        started: Instant,
    }

    impl Source for Channel {
        fn poll_batch(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            out: &mut Vec<StreamEvent>,
        ) -> Poll<Option<()>> {
            let event = ready!(self.get_mut().events.poll_recv(cx));
            Poll::Ready(event.map(|event| out.push(event)))
        }

        fn started(&self) -> Instant {
            self.started
        }
    }

    /// Counts how often the task it stands for was woken.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn token(text: &str) -> StreamEvent {
        StreamEvent::Token {
            token: text.to_owned(),
            refusal: false,
            choice: None,
        }
    }

    /// A generation over a `Channel`, its first follower, and its sender.
    fn started() -> (Follower, mpsc::UnboundedSender<StreamEvent>) {
        let generations = crate::streams::tests::generations();
        let (send, events) = mpsc::unbounded_channel();
        let source = Channel {
            events,
            started: Instant::now(),
        };
        let ticket = generations
            .reserve(Caller::OPEN.into())
            .unwrap_or_else(|error| panic!("{error:?}"));
        let (_, follower) = ticket
            .start("m", None, Box::pin(source))
            .unwrap_or_else(|error| panic!("{error:?}"));
        (follower, send)
    }

    /// Polls `follower` once with `waker`.
    fn poll(follower: &mut Follower, waker: &Arc<Wakes>) -> Poll<Option<Entry>> {
        let waker = Waker::from(Arc::clone(waker));
        Pin::new(follower).poll_next(&mut Context::from_waker(&waker))
    }

    fn text(entry: Option<Entry>) -> Option<String> {
        match entry {
            Some(Entry::Event {
                event: StreamEvent::Token { token, .. },
                ..
            }) => Some(token),
            _ => None,
        }
    }

    fn driver(follower: &Follower) -> Option<u64> {
        let log = lock(&follower.generation.log);
        log.driver.as_ref().map(|driver| driver.number)
    }

    #[tokio::test]
    async fn a_lone_follower_reads_the_upstream_in_its_own_task() {
        let (mut follower, send) = started();
        let client = Arc::new(Wakes::default());
        assert!(matches!(
            poll(&mut follower, &client),
            Poll::Ready(Some(Entry::Event { seq: 0, .. }))
        ));
        assert!(poll(&mut follower, &client).is_pending());
        assert_eq!(driver(&follower), Some(follower.number));

        for word in ["a", "b", "c"] {
            let before = client.0.load(Ordering::Relaxed);
            send.send(token(word))
                .unwrap_or_else(|_| panic!("the source is gone"));
            // The upstream woke the client's task itself, with no task between.
            assert_eq!(client.0.load(Ordering::Relaxed), before + 1);
            match poll(&mut follower, &client) {
                Poll::Ready(entry) => assert_eq!(text(entry).as_deref(), Some(word)),
                Poll::Pending => panic!("{word} was not read"),
            }
            assert!(poll(&mut follower, &client).is_pending());
        }
        drop(send);
        let rest: Vec<Entry> = follower.collect().await;
        assert!(
            matches!(
                &rest[..],
                [
                    Entry::Event {
                        event: StreamEvent::Error {
                            code: ErrorCode::UpstreamDisconnected,
                            ..
                        },
                        ..
                    },
                    Entry::Done
                ]
            ),
            "{rest:?}"
        );
    }

    #[tokio::test]
    async fn a_second_follower_is_not_held_back_by_a_first_that_stopped_reading() {
        let (mut first, send) = started();
        let client = Arc::new(Wakes::default());
        while poll(&mut first, &client).is_ready() {}
        assert_eq!(driver(&first), Some(first.number));

        let mut second = first.generation.follow(1);
        assert_eq!(driver(&first), None, "the upstream went back to the task");
        assert!(client.0.load(Ordering::Relaxed) >= 1, "the first was told");
        for word in ["a", "b", "c"] {
            send.send(token(word))
                .unwrap_or_else(|_| panic!("the source is gone"));
            // Well within `STALL_CHECK`: only the hand-back can make this pass.
            let next = tokio::time::timeout(Duration::from_millis(500), second.next()).await;
            assert_eq!(text(next.ok().flatten()).as_deref(), Some(word));
        }
        // The first still gets every event, from the log.
        for word in ["a", "b", "c"] {
            match poll(&mut first, &client) {
                Poll::Ready(entry) => assert_eq!(text(entry).as_deref(), Some(word)),
                Poll::Pending => panic!("{word} is not in the log"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_takes_the_upstream_back_from_a_follower_that_stopped_coming() {
        let (mut follower, send) = started();
        let client = Arc::new(Wakes::default());
        while poll(&mut follower, &client).is_ready() {}
        assert_eq!(driver(&follower), Some(follower.number));
        for word in ["a", "b"] {
            send.send(token(word))
                .unwrap_or_else(|_| panic!("the source is gone"));
        }

        tokio::time::sleep(STALL_CHECK / 2).await;
        assert_eq!(driver(&follower), Some(follower.number), "not yet");
        tokio::time::sleep(STALL_CHECK * 2).await;
        assert_eq!(driver(&follower), None);
        let log = lock(&follower.generation.log);
        assert_eq!(
            log.records.len(),
            3,
            "the task read what the follower did not"
        );
    }
}
