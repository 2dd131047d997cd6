//! What several replicas share through Redis (`REDIS_URL`): mirrored event
//! logs, stop requests and liveness, so that any replica behind a load
//! balancer can resume or stop any stream.
//!
//! The replica that runs a generation keeps serving its own clients from
//! its in-process log; a mirror task copies that log into a Redis Stream in
//! batches, so the relay never waits for a Redis round trip. Another
//! replica follows the Redis Stream with a blocking `XREAD`. Heartbeat keys
//! tell each side the other is still there: the runner's `alive` key lets a
//! follower notice a dead replica within seconds, and the follower's
//! `listening` key keeps the runner from giving up on a client that moved.
//!
//! Redis may restart, lose what it held, or stop answering altogether, and
//! none of that may take a replica down with it: every command has a
//! deadline, a failed connection is replaced (with backoff), the stop
//! channel is subscribed to again, and a mirror that lost its place asks
//! Redis where the log ends and writes the rest, from the start when Redis
//! forgot it. Local streams never wait for any of this.
//!
//! Keys, per stream id: `tokenrelay:{id}:log` (the events, entry id
//! `0-<seq+1>`, field `e` = JSON), `tokenrelay:{id}:meta` (hash: `owner`,
//! `done`), `tokenrelay:{id}:alive`, `tokenrelay:{id}:listening`; per chat
//! (`streams::chats`), `tokenrelay:chat:{owner}:{chat_id}` (hash: `stream`,
//! `message`, `seen`), which lives as long as its generation's log; per
//! caller and minute, `tokenrelay:{budget:<caller>}:<minute>` (tokens spent,
//! `TOKENS_PER_MINUTE`); and the channel `tokenrelay:stop`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, Stream, StreamExt};
use redis::aio::PubSub;
use redis::streams::StreamRangeReply;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod link;
mod remote;

use self::link::{Backoff, Link, RedisFailure, deadline};
use self::remote::{Remote, seq_of};
use super::{Caller, ChatRecord, Entry, Generation, Generations, Mirror, StreamId};
use crate::error::Error;
use crate::event::StreamEvent;

/// How often the runner says it is alive and checks for remote listeners.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a heartbeat key lives: a replica silent for this long is gone.
const LEASE: Duration = Duration::from_secs(3);
/// How long a follower's `XREAD` blocks before it checks on the runner.
const BLOCK: Duration = Duration::from_secs(1);
/// Most events written or read in one round trip.
const BATCH: usize = 256;
/// Most entries kept per Redis Stream; older ones are trimmed away.
const MAX_ENTRIES: usize = 100_000;
/// Events buffered between a remote follower's reader and its client.
const FOLLOWER_BUFFER: usize = 64;
/// How long a single Redis command (or connecting) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `/readyz` waits for Redis before calling it unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a remote follower rides out a Redis that fails or does not
/// answer before it ends its client's stream; with a blocked `XREAD` in
/// flight, it notices within `BLOCK + COMMAND_TIMEOUT` (README).
const OUTAGE: Duration = Duration::from_secs(3);
/// The first wait before reaching Redis again; it doubles up to `MAX_BACKOFF`.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Kept short: a mirror must be back before remote followers give up.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The channel `DELETE` requests travel on.
const STOP_CHANNEL: &str = "tokenrelay:stop";

impl Mirror for Cluster {
    /// Copies `generation`'s log into Redis until it ends, and keeps its
    /// heartbeat going meanwhile.
    fn mirror(&self, generation: Arc<Generation>, owner: Caller) {
        let cluster = self.clone();
        tokio::spawn(async move { cluster.run_mirror(&generation, owner).await });
    }
}

/// A stream that another replica runs (or ran), as a follower here finds it.
#[derive(Debug)]
pub(crate) enum Elsewhere<S> {
    /// Its events from the position asked for, as they come.
    Following(S),
    /// It is over and the client has read all of it.
    AllSeen,
}

/// A connection to the shared Redis.
#[derive(Clone)]
pub(crate) struct Cluster {
    link: Arc<Link>,
    ttl: Duration,
    /// Fired when the shutdown grace is over: remote followers end then.
    closing: CancellationToken,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster").finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to `url`; finished logs are kept for `ttl`.
    pub(crate) async fn connect(url: &str, ttl: Duration) -> Result<Self, Error> {
        let client = redis::Client::open(url)
            .map_err(|error| Error::Internal(format!("invalid REDIS_URL: {}", kind(&error))))?;
        let link = Arc::new(Link::new(client));
        link.connection()
            .await
            .map_err(|failure| Error::Internal(format!("cannot reach Redis ({failure})")))?;
        Ok(Self {
            link,
            ttl,
            closing: CancellationToken::new(),
        })
    }

    /// Stops local generations when any replica asks (`DELETE` elsewhere),
    /// subscribing again whenever the subscription is lost; at shutdown,
    /// ends the followers of generations that run elsewhere.
    pub(crate) async fn listen_for_stops(&self, generations: Generations) -> Result<(), Error> {
        let first = self
            .subscribe()
            .await
            .map_err(|failure| Error::Internal(format!("cannot subscribe in Redis ({failure})")))?;
        let cluster = self.clone();
        let shutting_down = generations.shutting_down();
        tokio::spawn(async move {
            tokio::select! {
                () = cluster.relay_stops(first, &generations) => {}
                () = shutting_down.cancelled() => {}
            }
            cluster.closing.cancel();
        });
        Ok(())
    }

    async fn subscribe(&self) -> Result<PubSub, RedisFailure> {
        let subscribing = async {
            let mut pubsub = self.link.client.get_async_pubsub().await?;
            pubsub.subscribe(STOP_CHANNEL).await?;
            Ok(pubsub)
        };
        deadline(COMMAND_TIMEOUT, subscribing).await
    }

    /// Runs for the life of the process.
    async fn relay_stops(&self, first: PubSub, generations: &Generations) {
        let mut pubsub = Some(first);
        let mut backoff = Backoff::default();
        loop {
            match pubsub.take() {
                Some(subscribed) => {
                    backoff.succeeded();
                    stop_on_request(subscribed, generations).await;
                    tracing::warn!(
                        "lost the Redis subscription for stop requests; subscribing again"
                    );
                }
                None => tokio::time::sleep(backoff.failed()).await,
            }
            pubsub = self.subscribe().await.ok();
        }
    }

    /// Mirrors through any number of Redis failures; gives up only after
    /// Redis has been unreachable for as long as a mirrored log lives.
    async fn run_mirror(&self, generation: &Arc<Generation>, owner: Caller) {
        let mut keys = Keys::new(generation.id());
        keys.chat = generation
            .chat
            .as_ref()
            .map(|chat| chat_key(owner, &chat.id));
        let running_ttl = self.ttl.max(Duration::from_secs(60));
        let mut backoff = Backoff::default();
        // Only the first announcement names the chat's generation: one
        // announced again after a failure may have been succeeded by a newer.
        let mut chat_announced = false;
        loop {
            let Err(failure) = self
                .mirror_from_redis_end(
                    generation,
                    owner,
                    &keys,
                    running_ttl,
                    &mut backoff,
                    &mut chat_announced,
                )
                .await
            else {
                return;
            };
            if backoff.failing_for() > running_ttl {
                tracing::warn!(stream_id = %generation.id(), %failure, "mirroring to Redis stopped");
                return;
            }
            if backoff.failing_for().is_zero() {
                tracing::warn!(stream_id = %generation.id(), %failure, "mirroring to Redis paused; retrying");
            }
            tokio::time::sleep(backoff.failed()).await;
        }
    }

    /// Announces the generation, asks Redis where its copy of the log ends
    /// (nowhere, after Redis lost it), and writes from there until the log
    /// is complete or Redis fails.
    async fn mirror_from_redis_end(
        &self,
        generation: &Arc<Generation>,
        owner: Caller,
        keys: &Keys,
        running_ttl: Duration,
        backoff: &mut Backoff,
        chat_announced: &mut bool,
    ) -> Result<(), RedisFailure> {
        let mut announce = redis::pipe();
        announce
            .hset(&keys.meta, "owner", owner_tag(owner))
            .ignore()
            .pexpire(&keys.meta, expiry(running_ttl))
            .ignore()
            .set_options(&keys.alive, 1, lease_options())
            .ignore();
        if let (Some(chat_key), Some(chat), false) = (&keys.chat, &generation.chat, *chat_announced)
        {
            announce
                .del(chat_key)
                .ignore()
                .hset(chat_key, "stream", generation.id().to_string())
                .ignore()
                .pexpire(chat_key, expiry(running_ttl))
                .ignore();
            if let Some(message_id) = &chat.message_id {
                announce.hset(chat_key, "message", message_id).ignore();
            }
        }
        announce.xrevrange_count(&keys.log, "+", "-", 1);
        let (top,): (StreamRangeReply,) = self.link.query(&announce, COMMAND_TIMEOUT).await?;
        *chat_announced = true;
        backoff.succeeded();
        let next = top
            .ids
            .first()
            .and_then(|entry| seq_of(&entry.id))
            .map_or(0, |seq| seq + 1);
        let mut log = generation.watch(next);
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        let mut beat = redis::pipe();
        beat.set_options(&keys.alive, 1, lease_options())
            .ignore()
            .exists(&keys.listening);
        loop {
            tokio::select! {
                entry = log.next() => {
                    let (events, then) = batch(entry, &mut log);
                    let finished = matches!(then, Then::Finished);
                    self.write(keys, &events, finished, running_ttl).await?;
                    match then {
                        Then::More => {}
                        // Trimmed here before it was copied: Redis gets a
                        // gap too, which followers there report.
                        Then::SkipTo(first_kept) => log = generation.watch(first_kept),
                        Then::Finished => return Ok(()),
                    }
                }
                _ = heartbeat.tick() => {
                    let (listening,): (bool,) = self.link.query(&beat, COMMAND_TIMEOUT).await?;
                    if listening {
                        generation.listened_elsewhere(Instant::now() + LEASE);
                    }
                }
            }
        }
    }

    /// Writes one batch, and the `done` marker after the last event.
    async fn write(
        &self,
        keys: &Keys,
        events: &[(u64, StreamEvent)],
        finished: bool,
        running_ttl: Duration,
    ) -> Result<(), RedisFailure> {
        let mut pipe = redis::pipe();
        for (seq, event) in events {
            let json = serde_json::to_string(event).unwrap_or_default();
            pipe.cmd("XADD")
                .arg(&keys.log)
                .arg("MAXLEN")
                .arg("~")
                .arg(MAX_ENTRIES)
                .arg(format!("0-{}", seq + 1))
                .arg("e")
                .arg(json)
                .ignore();
        }
        let ttl = if finished { self.ttl } else { running_ttl };
        pipe.pexpire(&keys.log, expiry(ttl)).ignore();
        pipe.pexpire(&keys.meta, expiry(ttl)).ignore();
        if let Some(chat_key) = &keys.chat {
            pipe.pexpire(chat_key, expiry(ttl)).ignore();
        }
        if finished {
            pipe.hset(&keys.meta, "done", 1).ignore();
            pipe.del(&keys.alive).ignore();
        }
        self.link.query(&pipe, COMMAND_TIMEOUT).await
    }

    /// Follows a generation that runs on another replica, from sequence
    /// number `from`; `None` when no replica knows it for `caller`.
    pub(crate) async fn follow(
        &self,
        id: StreamId,
        caller: Caller,
        from: u64,
    ) -> Result<Option<Elsewhere<impl Stream<Item = Entry> + Send + 'static + use<>>>, Error> {
        let keys = Keys::new(id);
        let mut state = redis::pipe();
        state
            .hget(&keys.meta, "owner")
            .hget(&keys.meta, "done")
            .xrevrange_count(&keys.log, "+", "-", 1);
        let (owner, done, top): (Option<String>, Option<String>, StreamRangeReply) = self
            .link
            .query(&state, COMMAND_TIMEOUT)
            .await
            .map_err(unavailable)?;
        if owner.as_deref() != Some(owner_tag(caller).as_str()) {
            return Ok(None);
        }
        let last = top.ids.first().and_then(|entry| seq_of(&entry.id));
        if let (Some(_), Some(last)) = (done, last) {
            if from > last.saturating_add(1) {
                return Err(Error::InvalidRequest(format!(
                    "`Last-Event-ID` is past the end of stream {id}, whose last event is {id}:{last}"
                )));
            }
            if from == last.saturating_add(1) {
                return Ok(Some(Elsewhere::AllSeen));
            }
        }
        let reader = self.link.reader().await.map_err(unavailable)?;
        let (sender, mut receiver) = mpsc::channel(FOLLOWER_BUFFER);
        let remote = Remote {
            cluster: self.clone(),
            keys,
            sender,
            reader: Some(reader),
            expected: from,
            runner_grace: None,
        };
        tokio::spawn(remote.run());
        Ok(Some(Elsewhere::Following(futures_util::stream::poll_fn(
            move |cx| receiver.poll_recv(cx),
        ))))
    }

    /// Asks every replica to stop `id`; false when no replica knows it for `caller`.
    pub(crate) async fn stop(&self, id: StreamId, caller: Caller) -> Result<bool, Error> {
        let keys = Keys::new(id);
        let mut owner = redis::pipe();
        owner.hget(&keys.meta, "owner");
        let (owner,): (Option<String>,) = self
            .link
            .query(&owner, COMMAND_TIMEOUT)
            .await
            .map_err(unavailable)?;
        if owner.as_deref() != Some(owner_tag(caller).as_str()) {
            return Ok(false);
        }
        let mut publish = redis::pipe();
        publish.publish(STOP_CHANNEL, id.to_string()).ignore();
        self.link
            .query::<()>(&publish, COMMAND_TIMEOUT)
            .await
            .map_err(unavailable)?;
        Ok(true)
    }

    /// The tokens `account` spent in `minute`, as every replica counted them.
    pub(crate) async fn tokens_spent(&self, account: &str, minute: u64) -> Result<u64, Error> {
        let mut get = redis::pipe();
        get.get(budget_key(account, minute));
        let (spent,): (Option<u64>,) = self
            .link
            .query(&get, COMMAND_TIMEOUT)
            .await
            .map_err(unavailable)?;
        Ok(spent.unwrap_or(0))
    }

    /// Adds `tokens` to what `account` spent in `minute`; the count is kept
    /// a minute past its own.
    pub(crate) async fn spend_tokens(
        &self,
        account: &str,
        minute: u64,
        tokens: u64,
    ) -> Result<(), Error> {
        let key = budget_key(account, minute);
        let mut add = redis::pipe();
        add.atomic()
            .incr(&key, tokens)
            .ignore()
            .expire(&key, 120)
            .ignore();
        self.link
            .query::<()>(&add, COMMAND_TIMEOUT)
            .await
            .map_err(unavailable)
    }

    /// The chat `id` of `caller`, as the replica that runs its latest
    /// generation announced it; `None` when no replica knows it.
    pub(crate) async fn chat(&self, caller: Caller, id: &str) -> Result<Option<ChatRecord>, Error> {
        let mut read = redis::pipe();
        read.cmd("HMGET")
            .arg(chat_key(caller, id))
            .arg("stream")
            .arg("message")
            .arg("seen");
        let ((stream, message_id, seen),): ((Option<String>, Option<String>, Option<String>),) =
            self.link
                .query(&read, COMMAND_TIMEOUT)
                .await
                .map_err(unavailable)?;
        Ok(stream
            .as_deref()
            .and_then(StreamId::parse)
            .map(|stream| ChatRecord {
                stream,
                message_id,
                seen: seen.is_some(),
            }))
    }

    /// Notes for every replica that a client read `stream`, chat `id`'s
    /// generation, to its end; a newer generation of the chat is left as it is.
    pub(crate) async fn chat_seen(
        &self,
        caller: Caller,
        id: &str,
        stream: StreamId,
    ) -> Result<(), Error> {
        let mut seen = redis::pipe();
        seen.cmd("EVAL")
            .arg(MARK_SEEN)
            .arg(1)
            .arg(chat_key(caller, id))
            .arg(stream.to_string())
            .ignore();
        self.link
            .query::<()>(&seen, COMMAND_TIMEOUT)
            .await
            .map_err(unavailable)
    }

    /// Whether Redis answers now, for `/readyz`; why not, when it does not.
    pub(crate) async fn ping(&self) -> Result<(), String> {
        let mut ping = redis::pipe();
        ping.cmd("PING").ignore();
        self.link
            .query::<()>(&ping, PROBE_TIMEOUT)
            .await
            .map_err(|failure| failure.to_string())
    }
}

/// Where one caller's token count for one minute is kept; the account in
/// braces, so that a Redis Cluster keeps each caller's counts on one node.
fn budget_key(account: &str, minute: u64) -> String {
    format!("tokenrelay:{{budget:{account}}}:{minute}")
}

/// Stops the local generations named on the stop channel until the
/// subscription is lost; a ping now and then notices a Redis that went
/// away without closing the connection.
async fn stop_on_request(pubsub: PubSub, generations: &Generations) {
    let (mut sink, mut messages) = pubsub.split();
    let mut check = tokio::time::interval(LEASE);
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else {
                    return;
                };
                let id = std::str::from_utf8(message.get_payload_bytes())
                    .ok()
                    .and_then(StreamId::parse);
                if let Some(generation) = id.and_then(|id| generations.local(id)) {
                    generation.stop();
                }
            }
            _ = check.tick() => {
                if deadline(COMMAND_TIMEOUT, sink.ping::<redis::Value>()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// How a batch of the mirror ends.
enum Then {
    /// More may follow.
    More,
    /// The log here no longer holds the next events; go on from this one.
    SkipTo(u64),
    /// The log is complete.
    Finished,
}

/// The events that woke the mirror, and whatever else is already waiting.
fn batch(
    first: Option<Entry>,
    log: &mut (impl Stream<Item = Entry> + Unpin),
) -> (Vec<(u64, StreamEvent)>, Then) {
    let mut events = Vec::new();
    let mut entry = first;
    loop {
        match entry {
            Some(Entry::Event { seq, event }) => events.push((seq, event)),
            Some(Entry::Gap { first_kept }) => return (events, Then::SkipTo(first_kept)),
            Some(Entry::Done | Entry::Lost { .. }) | None => return (events, Then::Finished),
        }
        if events.len() >= BATCH {
            return (events, Then::More);
        }
        match log.next().now_or_never() {
            Some(next) => entry = next,
            None => return (events, Then::More),
        }
    }
}

struct Keys {
    log: String,
    meta: String,
    alive: String,
    listening: String,
    /// The record of the chat the generation answers, if it answers one.
    chat: Option<String>,
}

impl Keys {
    fn new(id: StreamId) -> Self {
        Self {
            log: format!("tokenrelay:{id}:log"),
            meta: format!("tokenrelay:{id}:meta"),
            alive: format!("tokenrelay:{id}:alive"),
            listening: format!("tokenrelay:{id}:listening"),
            chat: None,
        }
    }
}

/// Marks a chat's record seen only while it still names the stream that
/// was read to its end.
const MARK_SEEN: &str = "if redis.call('HGET', KEYS[1], 'stream') == ARGV[1] then \
     redis.call('HSET', KEYS[1], 'seen', '1') end return 0";

/// Scoped by the owner, so that another key naming the same chat finds nothing.
fn chat_key(owner: Caller, id: &str) -> String {
    format!("tokenrelay:chat:{}:{id}", owner_tag(owner))
}

fn owner_tag(caller: Caller) -> String {
    caller.to_string()
}

fn lease_options() -> redis::SetOptions {
    redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(millis(LEASE)))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A `PEXPIRE` argument.
fn expiry(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// What went wrong, without the error's text, which can quote `REDIS_URL`
/// and its password.
fn kind(error: &redis::RedisError) -> String {
    format!("{:?}", error.kind())
}

fn unavailable(failure: RedisFailure) -> Error {
    Error::Overloaded(format!("the shared event store is unavailable ({failure})"))
}
