//! Generations and their event logs: what lets a stream outlive the client
//! that started it (SPEC §5).
//!
//! A generation is one upstream request driven by one task. Its events go
//! into a numbered, byte-bounded log; clients are [`Follower`]s that read the
//! log from any position and wait for more. The upstream request belongs to
//! the generation, not to a client, and is dropped only when it is stopped
//! (`DELETE`), when nobody has listened for the grace period, or at shutdown.
//! A finished log is kept for the resume TTL, then forgotten.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use futures_util::{Stream, StreamExt};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::access::Caller;
use crate::cluster::Cluster;
use crate::config::ResumeConfig;
use crate::error::Error;
use crate::metrics::{Cancellation, Metrics};
use crate::telemetry::Untrusted;
use crate::translate::Translator;
use crate::upstream::UpstreamEvents;
use crate::wire::{ErrorCode, FinishReason, StreamEvent};

/// A 128-bit random stream id, written as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamId([u8; 16]);

impl StreamId {
    fn random() -> Result<Self, Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)
            .map_err(|error| Error::Internal(format!("no randomness for a stream id: {error}")))?;
        Ok(Self(bytes))
    }

    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(Self(bytes))
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Every generation this process knows, running or finished.
#[derive(Clone, Debug)]
pub struct Streams {
    registry: Arc<Registry>,
}

#[derive(Debug)]
struct Registry {
    generations: Mutex<HashMap<StreamId, Arc<Generation>>>,
    config: ResumeConfig,
    max_running: Option<usize>,
    running: AtomicUsize,
    total_bytes: AtomicUsize,
    /// Fired when the shutdown grace is over: running generations end now.
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    /// Set with `REDIS_URL`: every log is mirrored for the other replicas.
    cluster: Option<Cluster>,
}

impl Streams {
    pub fn new(
        config: ResumeConfig,
        max_running: Option<usize>,
        metrics: Arc<Metrics>,
        cluster: Option<Cluster>,
    ) -> Self {
        Self {
            registry: Arc::new(Registry {
                generations: Mutex::default(),
                config,
                max_running,
                running: AtomicUsize::new(0),
                total_bytes: AtomicUsize::new(0),
                shutdown: CancellationToken::new(),
                metrics,
                cluster,
            }),
        }
    }

    /// Takes a place for a new generation, or refuses with 503 when we are at
    /// a limit. Done before the upstream is called, so a refusal costs nothing.
    pub fn reserve(&self, owner: Caller) -> Result<Ticket, Error> {
        let registry = &self.registry;
        if registry.total_bytes.load(Ordering::Relaxed) >= registry.config.max_total_bytes {
            return Err(Error::Overloaded(
                "the event logs are at RESUME_MAX_TOTAL_BYTES; try again shortly".to_owned(),
            ));
        }
        let running = registry.running.fetch_add(1, Ordering::AcqRel) + 1;
        let permit = Running(Arc::clone(registry));
        if registry.max_running.is_some_and(|max| running > max) {
            return Err(Error::Overloaded(
                "too many streams are running (MAX_CONCURRENT_STREAMS); try again shortly"
                    .to_owned(),
            ));
        }
        Ok(Ticket { permit, owner })
    }

    /// The generation `id`, if it exists and belongs to `caller`: to anyone
    /// else a stream is indistinguishable from one that never existed.
    pub fn find(&self, id: StreamId, caller: Caller) -> Option<Arc<Generation>> {
        lock(&self.registry.generations)
            .get(&id)
            .filter(|generation| generation.owner == caller)
            .cloned()
    }

    /// A generation of this process, whoever owns it: for stop requests
    /// that other replicas relay after checking the owner themselves.
    pub fn local(&self, id: StreamId) -> Option<Arc<Generation>> {
        lock(&self.registry.generations).get(&id).cloned()
    }

    /// The shared store, when replicas share one.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.registry.cluster.as_ref()
    }

    /// Generations whose upstream request is still open.
    pub fn running(&self) -> usize {
        self.registry.running.load(Ordering::Relaxed)
    }

    /// Ends every running generation with `shutting_down`.
    pub fn shut_down(&self) {
        self.registry.shutdown.cancel();
    }

    /// Fired when [`Streams::shut_down`] is called, for readers that are not
    /// generations of this process (followers of another replica's).
    pub fn shutting_down(&self) -> CancellationToken {
        self.registry.shutdown.clone()
    }
}

/// A reserved place for a generation whose upstream is being called.
#[derive(Debug)]
pub struct Ticket {
    permit: Running,
    owner: Caller,
}

impl Ticket {
    /// Registers the generation, spawns the task that drives `upstream`, and
    /// returns the first follower, already attached so the grace period
    /// cannot start before the client reads.
    pub fn start(
        self,
        model: &str,
        upstream: UpstreamEvents,
    ) -> Result<(StreamId, Follower), Error> {
        let Self { permit, owner } = self;
        let registry = Arc::clone(&permit.0);
        let id = StreamId::random()?;
        let generation = Arc::new(Generation {
            id,
            owner,
            model: model.to_owned(),
            created: Instant::now(),
            registry: Arc::clone(&registry),
            log: Mutex::new(Log::default()),
            listeners_changed: Notify::new(),
            stop: CancellationToken::new(),
            abandon: CancellationToken::new(),
            running: Mutex::new(Some(permit)),
        });
        generation.append(StreamEvent::Start {
            stream_id: id.to_string(),
            model: model.to_owned(),
        });
        lock(&registry.generations).insert(id, Arc::clone(&generation));
        let follower = generation.follow(0);
        if let Some(cluster) = &registry.cluster {
            cluster.mirror(Arc::clone(&generation), owner);
        }
        tokio::spawn(Arc::clone(&generation).run(upstream));
        Ok((id, follower))
    }
}

/// Holds one place of `MAX_CONCURRENT_STREAMS` until the upstream request ends.
#[derive(Debug)]
struct Running(Arc<Registry>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One upstream generation and its event log.
#[derive(Debug)]
pub struct Generation {
    id: StreamId,
    /// The key that created it; only that key may resume or stop it.
    owner: Caller,
    model: String,
    created: Instant,
    registry: Arc<Registry>,
    log: Mutex<Log>,
    /// Wakes the driver when the last listener leaves or one comes back.
    listeners_changed: Notify,
    /// `DELETE`: stop now.
    stop: CancellationToken,
    /// The only client left for good: stop now, without a grace period.
    abandon: CancellationToken,
    running: Mutex<Option<Running>>,
}

#[derive(Debug, Default)]
struct Log {
    /// The events; the front one has sequence number `first_seq`.
    events: Events,
    first_seq: u64,
    bytes: usize,
    finished: bool,
    /// Token events appended so far.
    tokens: u64,
    /// The first text event's sequence number and arrival.
    first_token: Option<(u64, Instant)>,
    /// Whether a follower has already reported how long that event took to leave.
    first_token_relayed: bool,
    /// Until when a client on another replica counts as listening.
    remote_lease: Option<Instant>,
    /// Position of every attached follower, by follower number.
    positions: HashMap<u64, u64>,
    next_follower: u64,
    /// The readers waiting for the log to grow, by follower number: a
    /// reader that leaves takes its waker out, or a quiet generation visited
    /// by many short-lived clients would keep every one of their
    /// connections' tasks alive through it.
    wakers: Vec<(u64, Waker)>,
}

impl Generation {
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// A new client reading the log from sequence number `from`; while it
    /// is attached the generation counts as listened to.
    pub fn follow(self: &Arc<Self>, from: u64) -> Follower {
        self.reader(from, true)
    }

    /// Where sequence number `from` stands in this generation's log, for a
    /// client that wants to read on from there.
    pub fn position(&self, from: u64) -> Position {
        let log = lock(&self.log);
        let end = log.first_seq + log.events.len() as u64;
        match from.cmp(&end) {
            std::cmp::Ordering::Less => Position::Kept,
            std::cmp::Ordering::Equal if log.finished => Position::AllSeen,
            std::cmp::Ordering::Equal => Position::Kept,
            std::cmp::Ordering::Greater => Position::PastEnd { end },
        }
    }

    /// A reader that does not count as a listener (the Redis mirror).
    pub fn watch(self: &Arc<Self>, from: u64) -> Follower {
        self.reader(from, false)
    }

    fn reader(self: &Arc<Self>, from: u64, listening: bool) -> Follower {
        let number = {
            let mut log = lock(&self.log);
            let number = log.next_follower;
            log.next_follower += 1;
            if listening {
                log.positions.insert(number, from);
            }
            number
        };
        if listening {
            self.listeners_changed.notify_waiters();
        }
        Follower {
            generation: Arc::clone(self),
            number,
            next: from,
            state: Reading::Log,
        }
    }

    /// A client on another replica is following this generation until `until`.
    pub fn listened_elsewhere(&self, until: Instant) {
        lock(&self.log).remote_lease = Some(until);
        self.listeners_changed.notify_waiters();
    }

    /// `DELETE`: followers get `finish` with `cancelled`.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Ends the generation now because its client left and will not come
    /// back (no grace period); counted as `client_gone`.
    pub fn abandon(&self) {
        self.abandon.cancel();
    }

    /// Drives the upstream to its end, appending every event, and keeps the
    /// log for the resume TTL afterwards.
    pub async fn run(self: Arc<Self>, mut upstream: UpstreamEvents) {
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
            let mut translator = Translator::new();
            let mut events = Vec::new();
            loop {
                tokio::select! {
                    biased;
                    cause = &mut interrupted => {
                        cancelled = Some(cause);
                        break Some(interruption(cause));
                    }
                    item = upstream.next() => match item {
                        Some(Ok(chunk)) => {
                            translator.push(&chunk.event, &chunk.data, &mut events);
                            upstream.scrub(&mut events);
                        }
                        Some(Err(failure)) => break Some(failure.into()),
                        None => translator.end(&mut events),
                    },
                }
                if !events.is_empty() {
                    self.append_all(&mut events, upstream.started());
                }
                if translator.is_done() {
                    break None;
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
                    + log.events.len() as u64
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
        let outcome = match log.events.last() {
            Some(StreamEvent::Finish { finish_reason, .. }) => finish_reason.as_str(),
            Some(StreamEvent::Error { code, .. }) => {
                self.registry.metrics.upstream_failure(*code);
                code.as_str()
            }
            _ => "unknown",
        };
        let ttft_ms = log
            .first_token
            .map(|(_, at)| at.duration_since(self.created).as_secs_f64() * 1e3);
        tracing::info!(
            stream_id = %self.id,
            model = %Untrusted(&self.model),
            outcome,
            ttft_ms,
            tokens = log.tokens,
            duration_ms = self.created.elapsed().as_secs_f64() * 1e3,
            "stream finished"
        );
    }

    fn append(&self, event: StreamEvent) {
        let mut log = lock(&self.log);
        self.keep(&mut log, event);
        wake_followers(log);
    }

    fn keep(&self, log: &mut Log, event: StreamEvent) {
        let size = log.events.push(event);
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
        while log.bytes > limit && log.events.len() > 1 {
            if let Some(size) = log.events.pop_front() {
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
        log.events.shrink_to_fit();
        wake_followers(log);
    }

    fn forget(&self) {
        lock(&self.registry.generations).remove(&self.id);
        let bytes = std::mem::take(&mut lock(&self.log).bytes);
        self.registry
            .total_bytes
            .fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// The events of one log, kept compactly: a long answer is thousands of
/// text deltas of a few bytes each, held for the resume TTL. Held as typed
/// events (an `Arc` of 88 bytes, plus an allocation for the text) they cost
/// about 150 bytes of memory apiece; here a text delta costs 24 bytes plus
/// its text, stored back to back with the others. Followers get each event
/// rebuilt, which costs what sharing a typed one saved.
#[derive(Debug, Default)]
struct Events {
    kept: VecDeque<Kept>,
    /// The text of the text deltas kept, back to back.
    text: String,
    /// Where `text` begins in all the text this log was ever given: trimmed
    /// deltas leave their text behind until it is worth moving the rest.
    text_start: u64,
}

#[derive(Debug)]
enum Kept {
    /// A `token` or `reasoning` event, its text `len` bytes at `start`.
    Text {
        kind: TextKind,
        choice: Option<u32>,
        start: u64,
        len: u32,
    },
    Event(Box<StreamEvent>),
}

#[derive(Debug, Clone, Copy)]
enum TextKind {
    Token,
    Refusal,
    Reasoning,
}

impl Events {
    fn len(&self) -> usize {
        self.kept.len()
    }

    /// Keeps `event`; returns its size as the log's bounds count it.
    fn push(&mut self, event: StreamEvent) -> usize {
        let size = event.size();
        let (kind, token, choice) = match event {
            StreamEvent::Token {
                token,
                refusal,
                choice,
            } => (
                if refusal {
                    TextKind::Refusal
                } else {
                    TextKind::Token
                },
                token,
                choice,
            ),
            StreamEvent::Reasoning { token, choice } => (TextKind::Reasoning, token, choice),
            event => {
                self.kept.push_back(Kept::Event(Box::new(event)));
                return size;
            }
        };
        let Ok(len) = u32::try_from(token.len()) else {
            let event = rebuild(kind, token, choice);
            self.kept.push_back(Kept::Event(Box::new(event)));
            return size;
        };
        let start = self.text_start + self.text.len() as u64;
        self.text.push_str(&token);
        self.kept.push_back(Kept::Text {
            kind,
            choice,
            start,
            len,
        });
        size
    }

    fn shrink_to_fit(&mut self) {
        self.kept.shrink_to_fit();
        self.text.shrink_to_fit();
    }

    /// A copy of the event at `index`.
    fn get(&self, index: usize) -> Option<StreamEvent> {
        Some(match self.kept.get(index)? {
            Kept::Text {
                kind,
                choice,
                start,
                len,
            } => {
                let from = (start - self.text_start) as usize;
                let token = self.text[from..from + *len as usize].to_owned();
                rebuild(*kind, token, *choice)
            }
            Kept::Event(event) => (**event).clone(),
        })
    }

    /// The last event, if it is not a text delta.
    fn last(&self) -> Option<&StreamEvent> {
        match self.kept.back()? {
            Kept::Event(event) => Some(event),
            Kept::Text { .. } => None,
        }
    }

    /// Drops the oldest event; returns its size as the log's bounds count it.
    fn pop_front(&mut self) -> Option<usize> {
        Some(match self.kept.pop_front()? {
            Kept::Text { start, len, .. } => {
                let live = start + u64::from(len);
                let dead = (live - self.text_start) as usize;
                // Moving the live text costs at most what was freed, so
                // trimming stays linear overall.
                if dead * 2 >= self.text.len() {
                    self.text.drain(..dead);
                    self.text_start = live;
                }
                StreamEvent::size_holding(len as usize)
            }
            Kept::Event(event) => event.size(),
        })
    }
}

fn rebuild(kind: TextKind, token: String, choice: Option<u32>) -> StreamEvent {
    match kind {
        TextKind::Token | TextKind::Refusal => StreamEvent::Token {
            token,
            refusal: matches!(kind, TextKind::Refusal),
            choice,
        },
        TextKind::Reasoning => StreamEvent::Reasoning { token, choice },
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

/// Where a position stands in a log; see [`Generation::position`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// There is something to read there, now or later (or a `resume_gap`
    /// explains why not).
    Kept,
    /// The generation is over and every event before it was read.
    AllSeen,
    /// Beyond the last event there will ever be, or yet is: `end` is the
    /// next sequence number.
    PastEnd { end: u64 },
}

/// What a follower reads.
#[derive(Debug, Clone)]
pub enum Entry {
    /// An event with its sequence number.
    Event { seq: u64, event: StreamEvent },
    /// The events at this follower's position are no longer kept; `Done`
    /// follows, so the client sees the error and the end of its stream.
    Gap { first_kept: u64 },
    /// The generation is over and every event was read.
    Done,
    /// This reader's view of the generation broke off, not the generation
    /// (the shared store stopped answering, the server is shutting down): an
    /// `error` at no position in the log, so that a client that resumes
    /// continues right after the last event it really saw. `Done` follows.
    Lost { code: ErrorCode, message: String },
}

/// One client's view of a generation. Dropping it detaches the client.
#[derive(Debug)]
pub struct Follower {
    generation: Arc<Generation>,
    number: u64,
    next: u64,
    state: Reading,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    Log,
    /// A gap was reported; `Done` comes next.
    DoneNext,
    Ended,
}

impl Stream for Follower {
    type Item = Entry;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Entry>> {
        match self.state {
            Reading::Log => {}
            Reading::DoneNext => {
                self.state = Reading::Ended;
                return Poll::Ready(Some(Entry::Done));
            }
            Reading::Ended => return Poll::Ready(None),
        }
        let this = &mut *self;
        let mut log = lock(&this.generation.log);
        if this.next < log.first_seq {
            let first_kept = log.first_seq;
            drop(log);
            this.state = Reading::DoneNext;
            return Poll::Ready(Some(Entry::Gap { first_kept }));
        }
        let index = (this.next - log.first_seq) as usize;
        if let Some(event) = log.events.get(index) {
            if let Some((seq, at)) = log.first_token {
                if seq == this.next && !log.first_token_relayed {
                    log.first_token_relayed = true;
                    this.generation.registry.metrics.proxy_ttft(at.elapsed());
                }
            }
            let entry = Entry::Event {
                seq: this.next,
                event,
            };
            this.next += 1;
            let next = this.next;
            if let Some(position) = log.positions.get_mut(&this.number) {
                *position = next;
            }
            return Poll::Ready(Some(entry));
        }
        if log.finished {
            drop(log);
            this.state = Reading::Ended;
            return Poll::Ready(Some(Entry::Done));
        }
        let number = this.number;
        match log
            .wakers
            .iter_mut()
            .find(|(waiting, _)| *waiting == number)
        {
            Some((_, waker)) => waker.clone_from(cx.waker()),
            None => log.wakers.push((number, cx.waker().clone())),
        }
        Poll::Pending
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let mut log = lock(&self.generation.log);
        let number = self.number;
        log.wakers.retain(|(waiting, _)| *waiting != number);
        if log.positions.remove(&self.number).is_some() && log.positions.is_empty() {
            drop(log);
            self.generation.listeners_changed.notify_waiters();
        }
    }
}

/// Wakes the followers waiting for `log` to grow, once it is unlocked.
fn wake_followers(mut log: MutexGuard<'_, Log>) {
    // One follower is the usual case: popping its waker keeps the list's
    // memory, where taking the list would allocate a new one for every token.
    let (one, many) = if log.wakers.len() > 1 {
        (None, std::mem::take(&mut log.wakers))
    } else {
        (log.wakers.pop(), Vec::new())
    };
    drop(log);
    one.into_iter()
        .chain(many)
        .for_each(|(_, waker)| waker.wake());
}

/// Our locks guard plain data and are never held across an await, so a
/// poisoned lock only means another thread panicked mid-update of counters;
/// carrying on is better than taking the whole server down with it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(event: &StreamEvent) -> String {
        serde_json::to_string(event).unwrap_or_else(|error| panic!("{error}"))
    }

    fn sample(i: usize) -> StreamEvent {
        match i % 5 {
            0 => StreamEvent::Token {
                token: format!("tok{i} é"),
                refusal: false,
                choice: None,
            },
            1 => StreamEvent::Reasoning {
                token: format!("think{i}"),
                choice: Some(2),
            },
            2 => StreamEvent::Token {
                token: format!("no{i}"),
                refusal: true,
                choice: Some(1),
            },
            3 => StreamEvent::ToolCall {
                index: 1,
                id: Some(format!("call{i}")),
                name: None,
                arguments: Some("{}".to_owned()),
                choice: None,
            },
            _ => StreamEvent::Token {
                token: String::new(),
                refusal: false,
                choice: Some(3),
            },
        }
    }

    #[test]
    fn kept_events_come_back_exactly_as_given_after_any_trimming() {
        let mut events = Events::default();
        let mut sizes = VecDeque::new();
        let mut first = 0;
        for i in 0..1_000 {
            let event = sample(i);
            let size = event.size();
            assert_eq!(events.push(event), size);
            sizes.push_back(size);
            // Trim now and then, a varying number, as the byte bound would.
            if i % 7 == 6 {
                for _ in 0..(i % 5) {
                    assert_eq!(events.pop_front(), sizes.pop_front());
                    first += 1;
                }
            }
            for (index, seq) in (first..=i).enumerate() {
                assert_eq!(
                    events.get(index).as_ref().map(json),
                    Some(json(&sample(seq))),
                    "event {seq}"
                );
            }
        }
        assert_eq!(events.len(), sizes.len());
        assert!(events.get(events.len()).is_none());
        // The text of trimmed deltas does not pile up.
        let live: usize = (first..1_000)
            .map(|seq| match sample(seq) {
                StreamEvent::Token { token, .. } | StreamEvent::Reasoning { token, .. } => {
                    token.len()
                }
                _ => 0,
            })
            .sum();
        assert!(
            events.text.len() <= 2 * live + 16,
            "{} for {live}",
            events.text.len()
        );
    }

    #[test]
    fn a_kept_text_delta_is_24_bytes_plus_its_text() {
        assert_eq!(std::mem::size_of::<Kept>(), 24);
    }

    #[test]
    fn only_a_terminal_or_other_event_is_last() {
        let mut events = Events::default();
        assert!(events.last().is_none());
        events.push(sample(0));
        assert!(events.last().is_none());
        let finish = StreamEvent::Finish {
            finish_reason: FinishReason::Stop,
            usage: None,
        };
        let expected = json(&finish);
        events.push(finish);
        assert_eq!(events.last().map(json), Some(expected));
    }

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

    /// A generation with no upstream behind it, as `Ticket::start` builds one.
    fn quiet_generation() -> Arc<Generation> {
        let config = ResumeConfig {
            grace: Duration::from_secs(5),
            ttl: Duration::from_secs(5),
            max_stream_bytes: 1 << 20,
            max_total_bytes: 1 << 24,
        };
        let streams = Streams::new(config, None, Arc::default(), None);
        let generation = Arc::new(Generation {
            id: StreamId([7; 16]),
            owner: Caller::OPEN,
            model: "m".to_owned(),
            created: Instant::now(),
            registry: Arc::clone(&streams.registry),
            log: Mutex::default(),
            listeners_changed: Notify::new(),
            stop: CancellationToken::new(),
            abandon: CancellationToken::new(),
            running: Mutex::new(None),
        });
        generation.append(sample(0));
        generation
    }

    #[test]
    fn followers_that_leave_a_quiet_generation_leave_nothing_behind() {
        struct Connection;
        impl Wake for Connection {
            fn wake(self: Arc<Self>) {}
        }
        let generation = quiet_generation();
        for visit in 0..10_000 {
            // Every visitor is another connection, with a waker of its own.
            let waker = Waker::from(Arc::new(Connection));
            let mut cx = Context::from_waker(&waker);
            let mut follower = generation.follow(visit % 2);
            while let Poll::Ready(Some(_)) = Pin::new(&mut follower).poll_next(&mut cx) {}
            drop(follower);
        }
        let log = lock(&generation.log);
        assert!(log.wakers.is_empty(), "{} wakers kept", log.wakers.len());
        assert!(log.positions.is_empty());
        assert!(log.wakers.capacity() <= 4, "{}", log.wakers.capacity());
    }

    #[test]
    fn a_waiting_follower_is_woken_once_per_append_with_its_latest_waker() {
        struct Count(std::sync::atomic::AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let generation = quiet_generation();
        let mut follower = generation.follow(1);
        let (old, new) = (
            Arc::new(Count(AtomicUsize::new(0))),
            Arc::new(Count(AtomicUsize::new(0))),
        );
        for waker in [&old, &new] {
            let waker = Waker::from(Arc::clone(waker));
            let polled = Pin::new(&mut follower).poll_next(&mut Context::from_waker(&waker));
            assert!(polled.is_pending());
        }
        assert_eq!(lock(&generation.log).wakers.len(), 1);
        generation.append(sample(1));
        assert_eq!(old.0.load(Ordering::Relaxed), 0);
        assert_eq!(new.0.load(Ordering::Relaxed), 1);
        assert!(matches!(
            Pin::new(&mut follower).poll_next(&mut Context::from_waker(Waker::noop())),
            Poll::Ready(Some(Entry::Event { seq: 1, .. }))
        ));
    }

    #[test]
    fn stream_ids_round_trip_and_are_random() {
        let id = StreamId::random().unwrap_or_else(|error| panic!("{error}"));
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(StreamId::parse(&text), Some(id));
        assert_ne!(StreamId::random().ok(), Some(id));
        assert_eq!(StreamId::parse("not-an-id"), None);
        assert_eq!(StreamId::parse(&"zz".repeat(16)), None);
    }
}
