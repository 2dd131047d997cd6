//! What several replicas share through Redis (`REDIS_URL`, or a Redis
//! Cluster with `REDIS_CLUSTER_URLS`): mirrored event logs, stop requests
//! and who listens where, so that any replica behind a load balancer can
//! resume or stop any stream.
//!
//! The replica that runs a generation keeps serving its own clients from
//! its in-process log; a mirror task (`mirror`) copies that log into a Redis
//! Stream, several events to an entry (`stored`), so the relay never waits
//! for a Redis round trip and Redis is asked little per token. Another
//! replica follows the Redis Stream with a blocking `XREAD` (`remote`), and
//! says on the `listening` channel that it does: the runner then writes at
//! once rather than once a second, and does not give up on a client that
//! moved. A runner writes at least once a second while it runs, so a
//! follower notices a dead replica within seconds.
//!
//! Redis may restart, lose what it held, or stop answering altogether, and
//! none of that may take a replica down with it: every command has a
//! deadline, a failed connection is replaced (with backoff), the channels
//! are subscribed to again, and a mirror that lost its place asks Redis
//! where the log ends and writes the rest, from the start when Redis forgot
//! it. Local streams never wait for any of this.
//!
//! Keys: per stream id, `tokenrelay:{<id>}:log` (the Redis Stream); per
//! chat (`streams::chats`), `tokenrelay:chat:<owner>:<chat_id>` (hash:
//! `stream`, `message`, `seen`), which lives as long as its generation's
//! log; per caller and minute, `tokenrelay:{budget:<caller>}:<minute>`
//! (tokens spent, `TOKENS_PER_MINUTE`); and the channels `tokenrelay:stop`
//! and `tokenrelay:listening`. Every command touches one key, so each goes
//! to the one node of a cluster that holds it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use redis::aio::PubSub;
use redis::streams::StreamRangeReply;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod link;
mod mirror;
mod remote;
mod stored;

use self::link::{Backoff, Link, RedisFailure, Servers, deadline};
use self::remote::Remote;
use self::stored::{Place, Stored};
use super::{Caller, ChatRecord, Entry, Generation, Generations, Mirror, StreamId};
use crate::config::RedisServers;
use crate::error::Error;

/// How often a runner writes while nobody elsewhere listens, and how often
/// a remote follower says it listens.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a runner or a listener may be silent before it counts as gone.
const LEASE: Duration = Duration::from_secs(3);
/// How long a follower's `XREAD` blocks before it checks on the runner.
const BLOCK: Duration = Duration::from_secs(1);
/// Most entries read in one round trip.
const BATCH: usize = 64;
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
/// The channel remote followers name the stream they follow on, every
/// `HEARTBEAT`.
const LISTEN_CHANNEL: &str = "tokenrelay:listening";

impl Mirror for Cluster {
    /// Copies `generation`'s log into Redis until it ends.
    fn mirror(&self, generation: Arc<Generation>, owner: Caller) {
        tokio::spawn(mirror::run(self.clone(), generation, owner));
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
    /// Connects to `servers`; finished logs are kept for `ttl`.
    pub(crate) async fn connect(servers: &RedisServers, ttl: Duration) -> Result<Self, Error> {
        let link = Arc::new(Link::new(Servers::open(servers)?));
        link.connection()
            .await
            .map_err(|failure| Error::Internal(format!("cannot reach Redis ({failure})")))?;
        Ok(Self {
            link,
            ttl,
            closing: CancellationToken::new(),
        })
    }

    /// Stops local generations when any replica asks (`DELETE` elsewhere)
    /// and notes who listens elsewhere, subscribing again whenever the
    /// subscription is lost; at shutdown, ends the followers of
    /// generations that run elsewhere.
    pub(crate) async fn listen_for_stops(&self, generations: Generations) -> Result<(), Error> {
        let first = self
            .subscribe(0)
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

    async fn subscribe(&self, attempt: usize) -> Result<PubSub, RedisFailure> {
        self.link
            .servers
            .subscribe(&[STOP_CHANNEL, LISTEN_CHANNEL], attempt)
            .await
    }

    /// Runs for the life of the process.
    async fn relay_stops(&self, first: PubSub, generations: &Generations) {
        let mut pubsub = Some(first);
        let mut backoff = Backoff::default();
        let mut attempt = 0;
        loop {
            match pubsub.take() {
                Some(subscribed) => {
                    backoff.succeeded();
                    obey(subscribed, generations).await;
                    tracing::warn!(
                        "lost the Redis subscription for stop requests; subscribing again"
                    );
                }
                None => tokio::time::sleep(backoff.failed()).await,
            }
            attempt += 1;
            pubsub = self.subscribe(attempt).await.ok();
        }
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
        let Some(top) = self.top(&keys, caller).await? else {
            return Ok(None);
        };
        if top.done {
            let end = top.place.end;
            if from > end {
                return Err(Error::InvalidRequest(format!(
                    "`Last-Event-ID` is past the end of stream {id}, whose last event is {id}:{}",
                    end.saturating_sub(1)
                )));
            }
            if from == end {
                return Ok(Some(Elsewhere::AllSeen));
            }
        }
        let reader = self.link.reader().await.map_err(unavailable)?;
        let (sender, mut receiver) = mpsc::channel(FOLLOWER_BUFFER);
        let remote = Remote {
            cluster: self.clone(),
            id,
            keys,
            sender,
            reader: Some(reader),
            expected: from,
            after: Place::before(from),
            heard: Instant::now(),
            told: None,
            runner_grace: None,
        };
        tokio::spawn(remote.run());
        Ok(Some(Elsewhere::Following(futures_util::stream::poll_fn(
            move |cx| receiver.poll_recv(cx),
        ))))
    }

    /// The last entry of `keys`' log, when the log is `caller`'s.
    async fn top(&self, keys: &Keys, caller: Caller) -> Result<Option<Stored>, Error> {
        let top = self.last_entry(keys).await.map_err(unavailable)?;
        let tag = owner_tag(caller);
        Ok(top.filter(|top| top.owner.as_deref() == Some(tag.as_str())))
    }

    /// The last entry of `keys`' log, if there is a readable one.
    async fn last_entry(&self, keys: &Keys) -> Result<Option<Stored>, RedisFailure> {
        let mut top = redis::pipe();
        top.xrevrange_count(&keys.log, "+", "-", 1);
        let (top,): (StreamRangeReply,) = self.link.query(&top, COMMAND_TIMEOUT).await?;
        Ok(top.ids.first().and_then(Stored::read))
    }

    /// Asks every replica to stop `id`; false when no replica knows it for `caller`.
    pub(crate) async fn stop(&self, id: StreamId, caller: Caller) -> Result<bool, Error> {
        if self.top(&Keys::new(id), caller).await?.is_none() {
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

/// Stops the local generations named on the stop channel, and notes the
/// ones named on the listening channel as followed elsewhere, until the
/// subscription is lost; a ping now and then notices a Redis that went
/// away without closing the connection.
async fn obey(pubsub: PubSub, generations: &Generations) {
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
                let Some(generation) = id.and_then(|id| generations.local(id)) else {
                    continue;
                };
                if message.get_channel_name() == LISTEN_CHANNEL {
                    generation.listened_elsewhere(Instant::now() + LEASE);
                } else {
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

struct Keys {
    log: String,
}

impl Keys {
    fn new(id: StreamId) -> Self {
        Self {
            log: format!("tokenrelay:{{{id}}}:log"),
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
