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
//! Keys, per stream id: `tokenrelay:{id}:log` (the events, entry id
//! `0-<seq+1>`, field `e` = JSON), `tokenrelay:{id}:meta` (hash: `owner`,
//! `done`), `tokenrelay:{id}:alive`, `tokenrelay:{id}:listening`; and the
//! channel `tokenrelay:stop`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, Stream, StreamExt};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::access::Caller;
use crate::error::Error;
use crate::streams::{Entry, Generation, StreamId, Streams};
use crate::wire::{ErrorCode, StreamEvent};

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
/// How long a single Redis command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// The channel `DELETE` requests travel on.
const STOP_CHANNEL: &str = "tokenrelay:stop";

/// A connection to the shared Redis.
#[derive(Clone)]
pub struct Cluster {
    client: redis::Client,
    commands: MultiplexedConnection,
    ttl: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to `url`; finished logs are kept for `ttl`.
    pub async fn connect(url: &str, ttl: Duration) -> Result<Self, Error> {
        let client = redis::Client::open(url)
            .map_err(|error| Error::Internal(format!("invalid REDIS_URL: {}", kind(&error))))?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT));
        let commands = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|error| Error::Internal(format!("cannot reach Redis ({})", kind(&error))))?;
        Ok(Self {
            client,
            commands,
            ttl,
        })
    }

    /// Stops local generations when any replica asks (`DELETE` elsewhere).
    pub async fn listen_for_stops(&self, streams: Streams) -> Result<(), Error> {
        let mut pubsub = self.client.get_async_pubsub().await.map_err(|error| {
            Error::Internal(format!("cannot subscribe in Redis ({})", kind(&error)))
        })?;
        pubsub.subscribe(STOP_CHANNEL).await.map_err(|error| {
            Error::Internal(format!("cannot subscribe in Redis ({})", kind(&error)))
        })?;
        tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            while let Some(message) = messages.next().await {
                let id = std::str::from_utf8(message.get_payload_bytes())
                    .ok()
                    .and_then(StreamId::parse);
                if let Some(generation) = id.and_then(|id| streams.local(id)) {
                    generation.stop();
                }
            }
            tracing::warn!("the Redis subscription for stop requests ended");
        });
        Ok(())
    }

    /// Copies `generation`'s log into Redis until it ends, and keeps its
    /// heartbeat going meanwhile.
    pub fn mirror(&self, generation: Arc<Generation>, owner: Caller) {
        let cluster = self.clone();
        tokio::spawn(async move {
            if let Err(error) = cluster.run_mirror(&generation, owner).await {
                tracing::warn!(stream_id = %generation.id(), %error, "mirroring to Redis stopped");
            }
        });
    }

    async fn run_mirror(
        &self,
        generation: &Arc<Generation>,
        owner: Caller,
    ) -> redis::RedisResult<()> {
        let keys = Keys::new(generation.id());
        let mut conn = self.commands.clone();
        let running_ttl = self.ttl.max(Duration::from_secs(60));
        let () = redis::pipe()
            .hset(&keys.meta, "owner", owner_tag(owner))
            .ignore()
            .pexpire(&keys.meta, expiry(running_ttl))
            .ignore()
            .set_options(&keys.alive, 1, lease_options())
            .ignore()
            .query_async(&mut conn)
            .await?;
        let mut log = generation.watch(0);
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        loop {
            tokio::select! {
                entry = log.next() => {
                    let batch = batch(entry, &mut log);
                    let finished = self.write(&mut conn, &keys, &batch, running_ttl).await?;
                    if finished {
                        return Ok(());
                    }
                }
                _ = heartbeat.tick() => {
                    let (_, listening): ((), bool) = redis::pipe()
                        .set_options(&keys.alive, 1, lease_options())
                        .exists(&keys.listening)
                        .query_async(&mut conn)
                        .await?;
                    if listening {
                        generation.listened_elsewhere(Instant::now() + LEASE);
                    }
                }
            }
        }
    }

    /// Writes one batch; returns whether the log is complete.
    async fn write(
        &self,
        conn: &mut MultiplexedConnection,
        keys: &Keys,
        batch: &[Entry],
        running_ttl: Duration,
    ) -> redis::RedisResult<bool> {
        let mut pipe = redis::pipe();
        let mut finished = false;
        for entry in batch {
            match entry {
                Entry::Event { seq, event } => {
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
                Entry::Done | Entry::Gap { .. } => finished = true,
            }
        }
        let ttl = if finished { self.ttl } else { running_ttl };
        pipe.pexpire(&keys.log, expiry(ttl)).ignore();
        pipe.pexpire(&keys.meta, expiry(ttl)).ignore();
        if finished {
            pipe.hset(&keys.meta, "done", 1).ignore();
            pipe.del(&keys.alive).ignore();
        }
        let () = pipe.query_async(conn).await?;
        Ok(finished)
    }

    /// Follows a generation that runs on another replica, from sequence
    /// number `from`; `None` when no replica knows it for `caller`.
    pub async fn follow(
        &self,
        id: StreamId,
        caller: Caller,
        from: u64,
    ) -> Result<Option<impl Stream<Item = Entry> + Send + 'static + use<>>, Error> {
        let keys = Keys::new(id);
        if !self.owned_by(&keys, caller).await? {
            return Ok(None);
        }
        // A blocking read needs a connection of its own with no response
        // timeout: it waits on purpose.
        let reader = self
            .client
            .get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(COMMAND_TIMEOUT))
                    .set_response_timeout(None),
            )
            .await
            .map_err(unavailable)?;
        let (sender, mut receiver) = mpsc::channel(FOLLOWER_BUFFER);
        let commands = self.commands.clone();
        tokio::spawn(async move {
            let mut next = from;
            if let Err(error) = read_remote(reader, commands, &keys, &mut next, &sender).await {
                end_with_error(
                    &sender,
                    next,
                    format!("lost the shared event log ({})", kind(&error)),
                )
                .await;
            }
        });
        Ok(Some(futures_util::stream::poll_fn(move |cx| {
            receiver.poll_recv(cx)
        })))
    }

    /// Asks every replica to stop `id`; false when no replica knows it for `caller`.
    pub async fn stop(&self, id: StreamId, caller: Caller) -> Result<bool, Error> {
        let keys = Keys::new(id);
        if !self.owned_by(&keys, caller).await? {
            return Ok(false);
        }
        let mut conn = self.commands.clone();
        let _: i64 = conn
            .publish(STOP_CHANNEL, id.to_string())
            .await
            .map_err(unavailable)?;
        Ok(true)
    }

    async fn owned_by(&self, keys: &Keys, caller: Caller) -> Result<bool, Error> {
        let mut conn = self.commands.clone();
        let owner: Option<String> = conn.hget(&keys.meta, "owner").await.map_err(unavailable)?;
        Ok(owner.as_deref() == Some(owner_tag(caller).as_str()))
    }
}

/// Reads the Redis Stream from `from`, forwarding events until the terminal
/// one, and notices a runner that went away.
async fn read_remote(
    mut reader: MultiplexedConnection,
    mut commands: MultiplexedConnection,
    keys: &Keys,
    expected: &mut u64,
    sender: &mpsc::Sender<Entry>,
) -> redis::RedisResult<()> {
    let mut last = format!("0-{expected}");
    let options = StreamReadOptions::default()
        .block(millis(BLOCK) as usize)
        .count(BATCH);
    loop {
        let () = commands
            .set_options(&keys.listening, 1, lease_options())
            .await?;
        let reply: Option<StreamReadReply> = reader
            .xread_options(&[&keys.log], &[&last], &options)
            .await?;
        let entries = reply
            .into_iter()
            .flat_map(|reply| reply.keys)
            .flat_map(|key| key.ids);
        let mut any = false;
        for entry in entries {
            any = true;
            let seq = entry
                .id
                .split_once('-')
                .and_then(|(_, n)| n.parse::<u64>().ok())
                .map_or(0, |n| n.saturating_sub(1));
            if seq > *expected {
                let _ = sender.send(Entry::Gap { first_kept: seq }).await;
                let _ = sender.send(Entry::Done).await;
                return Ok(());
            }
            let event = entry
                .get::<String>("e")
                .and_then(|json| serde_json::from_str::<StreamEvent>(&json).ok());
            let Some(event) = event else {
                end_with_error(
                    sender,
                    seq,
                    "the shared event log holds an unreadable event".to_owned(),
                )
                .await;
                return Ok(());
            };
            last = entry.id;
            *expected = seq + 1;
            let terminal = event.is_terminal();
            if sender.send(Entry::Event { seq, event }).await.is_err() {
                return Ok(());
            }
            if terminal {
                let _ = sender.send(Entry::Done).await;
                return Ok(());
            }
        }
        if any {
            continue;
        }
        if sender.is_closed() {
            return Ok(());
        }
        let (alive, done): (bool, Option<String>) = redis::pipe()
            .exists(&keys.alive)
            .hget(&keys.meta, "done")
            .query_async(&mut commands)
            .await?;
        if done.is_some() {
            let _ = sender.send(Entry::Done).await;
            return Ok(());
        }
        if !alive {
            end_with_error(
                sender,
                *expected,
                "the replica running this generation stopped before it finished".to_owned(),
            )
            .await;
            return Ok(());
        }
    }
}

/// Ends a remote follower honestly: an `error` event numbered `seq`, then the end.
async fn end_with_error(sender: &mpsc::Sender<Entry>, seq: u64, message: String) {
    let error = StreamEvent::error(ErrorCode::UpstreamDisconnected, message);
    let _ = sender.send(Entry::Event { seq, event: error }).await;
    let _ = sender.send(Entry::Done).await;
}

/// The entry that woke the mirror, and whatever else is already waiting.
fn batch(first: Option<Entry>, log: &mut (impl Stream<Item = Entry> + Unpin)) -> Vec<Entry> {
    let mut batch: Vec<Entry> = first.into_iter().collect();
    if batch.is_empty() {
        batch.push(Entry::Done);
        return batch;
    }
    while batch.len() < BATCH {
        match log.next().now_or_never() {
            Some(Some(entry)) => batch.push(entry),
            Some(None) => {
                batch.push(Entry::Done);
                break;
            }
            None => break,
        }
    }
    batch
}

struct Keys {
    log: String,
    meta: String,
    alive: String,
    listening: String,
}

impl Keys {
    fn new(id: StreamId) -> Self {
        Self {
            log: format!("tokenrelay:{id}:log"),
            meta: format!("tokenrelay:{id}:meta"),
            alive: format!("tokenrelay:{id}:alive"),
            listening: format!("tokenrelay:{id}:listening"),
        }
    }
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

fn unavailable(error: redis::RedisError) -> Error {
    Error::Overloaded(format!(
        "the shared event store is unavailable ({})",
        kind(&error)
    ))
}
