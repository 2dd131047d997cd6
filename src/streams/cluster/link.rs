//! The connection to Redis every task of a replica shares: replaced when it
//! fails, with attempts spaced out, and every command under a deadline, so
//! that a Redis that restarts or freezes is ridden out (README, "Several
//! replicas"). The same link speaks to one server or to a Redis Cluster,
//! where commands go to the node that holds their key's slot.

use std::fmt;
use std::future::Future;

use std::time::Duration;

use futures_util::FutureExt;
use redis::aio::{ConnectionLike, MultiplexedConnection, PubSub};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{COMMAND_TIMEOUT, MAX_BACKOFF, MIN_BACKOFF, kind};
use crate::config::RedisServers;
use crate::error::Error;
use crate::lock::lock;

/// The servers a replica shares its logs through.
pub(super) enum Servers {
    One(redis::Client),
    Cluster {
        client: ClusterClient,
        /// Each node on its own, for the subscription: a message published
        /// on any node of a cluster reaches the subscribers of every node.
        nodes: Vec<redis::Client>,
    },
}

impl Servers {
    pub(super) fn open(servers: &RedisServers) -> Result<Self, Error> {
        let invalid = |variable: &str, error: &redis::RedisError| {
            Error::Internal(format!("invalid {variable}: {}", kind(error)))
        };
        match servers {
            RedisServers::One(url) => redis::Client::open(url.expose())
                .map(Self::One)
                .map_err(|error| invalid("REDIS_URL", &error)),
            RedisServers::Cluster(urls) => {
                let nodes = urls
                    .iter()
                    .map(|url| redis::Client::open(url.expose()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|error| invalid("REDIS_CLUSTER_URLS", &error))?;
                let client = ClusterClient::builder(
                    nodes.iter().map(|node| node.get_connection_info().clone()),
                )
                // Our own deadlines bound every command; the client's
                // retries only ride out a slot moving to another node.
                .retries(CLUSTER_RETRIES)
                .min_retry_wait(100)
                .max_retry_wait(500)
                .build()
                .map_err(|error| invalid("REDIS_CLUSTER_URLS", &error))?;
                Ok(Self::Cluster { client, nodes })
            }
        }
    }

    /// A new connection whose replies may take up to `response` (`None`:
    /// as long as they take, for a blocking read under its own deadline).
    async fn connect(&self, response: Option<Duration>) -> Result<Connection, RedisFailure> {
        match self {
            Self::One(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(COMMAND_TIMEOUT))
                    .set_response_timeout(response);
                deadline(
                    COMMAND_TIMEOUT,
                    client.get_multiplexed_async_connection_with_config(&config),
                )
                .await
                .map(Connection::One)
            }
            Self::Cluster { client, .. } => {
                let config = ClusterConfig::new()
                    .set_connection_timeout(COMMAND_TIMEOUT)
                    .set_response_timeout(response.unwrap_or(NO_REPLY_LIMIT));
                deadline(
                    COMMAND_TIMEOUT,
                    client.get_async_connection_with_config(config),
                )
                .await
                .map(Connection::Cluster)
            }
        }
    }

    /// A subscription; in a cluster, on the `attempt`-th node in turn, so
    /// that a node that is gone is passed over on the next attempt.
    pub(super) async fn subscribe(
        &self,
        channels: &[&str],
        attempt: usize,
    ) -> Result<PubSub, RedisFailure> {
        let client = match self {
            Self::One(client) => client,
            Self::Cluster { nodes, .. } => &nodes[attempt % nodes.len()],
        };
        let subscribing = async {
            let mut pubsub = client.get_async_pubsub().await?;
            for channel in channels {
                pubsub.subscribe(*channel).await?;
            }
            Ok(pubsub)
        };
        deadline(COMMAND_TIMEOUT, subscribing).await
    }
}

/// How often a cluster connection tries a command again after a node
/// redirected it or went away, within the command's deadline.
const CLUSTER_RETRIES: u32 = 3;
/// What stands for "no limit" where the cluster client wants one.
const NO_REPLY_LIMIT: Duration = Duration::from_secs(24 * 60 * 60);

/// A connection to the one server or to the whole cluster.
#[derive(Clone)]
pub(super) enum Connection {
    One(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::One(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::One(conn) => conn.req_packed_commands(cmd, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(cmd, offset, count).boxed(),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::One(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// The command connection every task shares, replaced when it fails.
/// Attempts to connect again are spaced out ([`Backoff`]), so while Redis
/// is down a caller gets a quick refusal rather than a wait.
pub(super) struct Link {
    pub(super) servers: Servers,
    /// The connection, numbered so a failure forgets only the one that failed.
    pub(super) current: std::sync::Mutex<Option<(u64, Connection)>>,
    /// Held while connecting, so one caller connects and the others wait
    /// for it (each within its own deadline).
    pub(super) connecting: Mutex<Reconnect>,
}

#[derive(Default)]
pub(super) struct Reconnect {
    pub(super) made: u64,
    pub(super) backoff: Backoff,
    pub(super) retry_at: Option<Instant>,
}

impl Link {
    pub(super) fn new(servers: Servers) -> Self {
        Self {
            servers,
            current: std::sync::Mutex::default(),
            connecting: Mutex::default(),
        }
    }

    /// Runs `pipe` within `limit`, connecting first if need be.
    pub(super) async fn query<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
        limit: Duration,
    ) -> Result<T, RedisFailure> {
        let mut used = None;
        match tokio::time::timeout(limit, self.attempt(pipe, &mut used)).await {
            Ok(result) => result,
            Err(_) => {
                // Redis does not answer on it: the next caller connects anew.
                if let Some(number) = used {
                    self.forget(number);
                }
                Err(RedisFailure::TimedOut)
            }
        }
    }

    /// A connection that broke while nobody used it (Redis restarted) gets
    /// one more try on a fresh one.
    pub(super) async fn attempt<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
        used: &mut Option<u64>,
    ) -> Result<T, RedisFailure> {
        let mut tries = 2;
        loop {
            let (number, mut conn, fresh) = self.connection().await?;
            *used = Some(number);
            match pipe.query_async(&mut conn).await {
                Err(error) if is_lost_connection(&error) => {
                    self.forget(number);
                    tries -= 1;
                    if fresh || tries == 0 {
                        return Err(RedisFailure::Redis(error));
                    }
                }
                result => return result.map_err(RedisFailure::Redis),
            }
        }
    }

    /// The current connection, its number, and whether it was made just now.
    pub(super) async fn connection(&self) -> Result<(u64, Connection, bool), RedisFailure> {
        if let Some((number, conn)) = self.current() {
            return Ok((number, conn, false));
        }
        let mut reconnect = self.connecting.lock().await;
        if let Some((number, conn)) = self.current() {
            return Ok((number, conn, false));
        }
        if reconnect.retry_at.is_some_and(|at| Instant::now() < at) {
            return Err(RedisFailure::Backoff);
        }
        match self.servers.connect(Some(COMMAND_TIMEOUT)).await {
            Ok(conn) => {
                reconnect.made += 1;
                let number = reconnect.made;
                *self.slot() = Some((number, conn.clone()));
                reconnect.backoff.succeeded();
                reconnect.retry_at = None;
                Ok((number, conn, true))
            }
            Err(failure) => {
                let wait = reconnect.backoff.failed();
                reconnect.retry_at = Some(Instant::now() + wait);
                Err(failure)
            }
        }
    }

    pub(super) fn current(&self) -> Option<(u64, Connection)> {
        self.slot().clone()
    }

    /// Forgets connection `number`, unless it was replaced already.
    pub(super) fn forget(&self, number: u64) {
        let mut slot = self.slot();
        if slot.as_ref().is_some_and(|(current, _)| *current == number) {
            *slot = None;
        }
    }

    /// Never held across an await.
    pub(super) fn slot(&self) -> std::sync::MutexGuard<'_, Option<(u64, Connection)>> {
        lock(&self.current)
    }

    /// A connection of its own for a blocking read: with no response
    /// timeout, as it waits on purpose; the reader puts its own deadline
    /// around each read.
    pub(super) async fn reader(&self) -> Result<Connection, RedisFailure> {
        self.servers.connect(None).await
    }
}

/// Whether `error` means the connection is gone, not that a command failed.
pub(super) fn is_lost_connection(error: &redis::RedisError) -> bool {
    !matches!(
        error.kind(),
        redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
    )
}

/// Why Redis could not be used.
#[derive(Debug)]
pub(super) enum RedisFailure {
    Redis(redis::RedisError),
    TimedOut,
    /// Connecting failed a moment ago; the next attempt waits its turn.
    Backoff,
    /// Redis no longer holds a log it was writing (it restarted empty).
    Forgotten,
}

impl fmt::Display for RedisFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Redis(error) => f.write_str(&kind(error)),
            Self::TimedOut => f.write_str("no answer in time"),
            Self::Backoff => f.write_str("not reachable a moment ago"),
            Self::Forgotten => f.write_str("it lost the log"),
        }
    }
}

/// `future` within `limit`.
pub(super) async fn deadline<T>(
    limit: Duration,
    future: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, RedisFailure> {
    match tokio::time::timeout(limit, future).await {
        Ok(result) => result.map_err(RedisFailure::Redis),
        Err(_) => Err(RedisFailure::TimedOut),
    }
}

/// Waits between attempts to reach Redis: from `MIN_BACKOFF`, doubling to
/// `MAX_BACKOFF`, and remembers since when it has been failing.
#[derive(Debug, Default)]
pub(super) struct Backoff {
    pub(super) failures: u32,
    pub(super) since: Option<Instant>,
}

impl Backoff {
    /// Counts a failure; returns how long to wait before the next attempt.
    pub(super) fn failed(&mut self) -> Duration {
        self.since.get_or_insert_with(Instant::now);
        let wait = MIN_BACKOFF
            .saturating_mul(1 << self.failures.min(16))
            .min(MAX_BACKOFF);
        self.failures = self.failures.saturating_add(1);
        wait
    }

    pub(super) fn succeeded(&mut self) {
        *self = Self::default();
    }

    pub(super) fn failing_for(&self) -> Duration {
        self.since.map_or(Duration::ZERO, |since| since.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_starts_over_after_a_success() {
        let mut backoff = Backoff::default();
        let waits: Vec<u128> = (0..7).map(|_| backoff.failed().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000, 1000]);
        backoff.succeeded();
        assert_eq!(backoff.failing_for(), Duration::ZERO);
        assert_eq!(backoff.failed(), MIN_BACKOFF);
    }
}
