//! Generations and their event logs: what lets a stream outlive the client
//! that started it (`docs/PROTOCOL.md` §6).
//!
//! A generation is one upstream request, read by its own task or, while
//! one client alone follows it, by that client's task. Its events go
//! into a numbered, byte-bounded log; clients are [`Follower`]s that read the
//! log from any position and wait for more. The upstream request belongs to
//! the generation, not to a client, and is dropped only when it is stopped
//! (`DELETE`), when nobody has listened for the grace period, or at shutdown.
//! A finished log is kept for the resume TTL, then forgotten.
//!
//! A generation reads its upstream as a [`Source`] of event batches that a
//! provider has already translated; it never knows which dialect spoke.
//! With `REDIS_URL`, a [`Mirror`] (`cluster`) copies each log for the other
//! replicas.

mod chats;
mod cluster;
mod follower;
mod generation;
mod log;
mod owner;
mod records;
mod signals;

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::ResumeConfig;
use crate::error::Error;
use crate::event::StreamEvent;
use crate::lock::lock;
use crate::metrics::Metrics;

pub(crate) use self::chats::{Chat, ChatRecord};
pub(crate) use self::cluster::{Cluster, Elsewhere};
pub(crate) use self::follower::{Entry, Follower, Position};
pub(crate) use self::generation::Generation;
use self::generation::Pump;
use self::log::Log;
pub(crate) use self::owner::{Caller, KeyId, Owner};
use self::signals::Signals;

/// The upstream side of a generation: batches of events a provider has
/// already translated from its dialect, ending with a terminal event.
pub(crate) trait Source: Send {
    /// Appends the next batch to `out`; `None` once nothing more will come.
    fn poll_batch(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut Vec<StreamEvent>,
    ) -> Poll<Option<()>>;

    /// When the upstream request was first sent: time to first token counts
    /// from there.
    fn started(&self) -> Instant;
}

/// Copies generations' logs where other replicas can read them.
pub(crate) trait Mirror: Send + Sync + fmt::Debug {
    fn mirror(&self, generation: Arc<Generation>, owner: Caller);
}

/// A 128-bit random stream id, written as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct StreamId([u8; 16]);

/// Stream ids one call for the system's randomness fills at a time: a
/// call per stream was one system call more on the way to every first
/// token. Each id's bytes are taken once and wiped.
const IDS_PER_FILL: usize = 32;

thread_local! {
    static UNUSED_ID_BYTES: std::cell::RefCell<([u8; 16 * IDS_PER_FILL], usize)> =
        const { std::cell::RefCell::new(([0; 16 * IDS_PER_FILL], 16 * IDS_PER_FILL)) };
}

impl StreamId {
    fn random() -> Result<Self, Error> {
        UNUSED_ID_BYTES.with_borrow_mut(|(pool, taken)| {
            if *taken == pool.len() {
                getrandom::fill(pool).map_err(|error| {
                    Error::Internal(format!("no randomness for a stream id: {error}"))
                })?;
                *taken = 0;
            }
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&pool[*taken..*taken + 16]);
            pool[*taken..*taken + 16].fill(0);
            *taken += 16;
            Ok(Self(bytes))
        })
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
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
    /// Written once: a stream id goes into several headers, events and log
    /// lines of every stream, and sixteen `write!`s cost more than the rest
    /// of formatting them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0u8; 32];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0xf)];
        }
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Every generation this process knows, running or finished.
#[derive(Clone, Debug)]
pub(crate) struct Generations {
    registry: Arc<Registry>,
}

#[derive(Debug)]
struct Registry {
    generations: Mutex<HashMap<StreamId, Arc<Generation>>>,
    /// The latest generation of each chat; see `chats`.
    chats: Mutex<HashMap<chats::ChatKey, ChatRecord>>,
    config: ResumeConfig,
    max_running: Option<usize>,
    running: AtomicUsize,
    total_bytes: AtomicUsize,
    /// Fired when the shutdown grace is over: running generations end now.
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    /// Set with `REDIS_URL`: every log is mirrored for the other replicas.
    mirror: Option<Arc<dyn Mirror>>,
}

impl Generations {
    pub(crate) fn new(
        config: ResumeConfig,
        max_running: Option<usize>,
        metrics: Arc<Metrics>,
        mirror: Option<Arc<dyn Mirror>>,
    ) -> Self {
        Self {
            registry: Arc::new(Registry {
                generations: Mutex::default(),
                chats: Mutex::default(),
                config,
                max_running,
                running: AtomicUsize::new(0),
                total_bytes: AtomicUsize::new(0),
                shutdown: CancellationToken::new(),
                metrics,
                mirror,
            }),
        }
    }

    /// Takes a place for a new generation, or refuses with 503 when we are at
    /// a limit. Done before the upstream is called, so a refusal costs nothing.
    pub(crate) fn reserve(&self, owner: Owner) -> Result<Ticket, Error> {
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
    pub(crate) fn find(&self, id: StreamId, caller: Caller) -> Option<Arc<Generation>> {
        lock(&self.registry.generations)
            .get(&id)
            .filter(|generation| generation.owner == caller)
            .cloned()
    }

    /// A generation of this process, whoever owns it: for stop requests
    /// that other replicas relay after checking the owner themselves.
    pub(crate) fn local(&self, id: StreamId) -> Option<Arc<Generation>> {
        lock(&self.registry.generations).get(&id).cloned()
    }

    /// Generations whose upstream request is still open.
    pub(crate) fn running(&self) -> usize {
        self.registry.running.load(Ordering::Relaxed)
    }

    /// Ends every running generation with `shutting_down`.
    pub(crate) fn shut_down(&self) {
        self.registry.shutdown.cancel();
    }

    /// Fired when [`Generations::shut_down`] is called, for readers that are not
    /// generations of this process (followers of another replica's).
    pub(crate) fn shutting_down(&self) -> CancellationToken {
        self.registry.shutdown.clone()
    }
}

/// A reserved place for a generation whose upstream is being called.
#[derive(Debug)]
pub(crate) struct Ticket {
    permit: Running,
    owner: Owner,
}

impl Ticket {
    /// Registers the generation, spawns its task (see `generation` for who
    /// reads `source`), and returns the first follower, already attached so
    /// the grace period cannot start before the client reads.
    /// `upstream` names the configured upstream that answers, when there
    /// are several; `model` is the model as that upstream knows it.
    pub(crate) fn start(
        self,
        model: &str,
        upstream: Option<&str>,
        source: Pin<Box<dyn Source>>,
    ) -> Result<(StreamId, Follower), Error> {
        let Self {
            permit,
            owner: Owner {
                caller: owner,
                chat,
            },
        } = self;
        let registry = Arc::clone(&permit.0);
        let id = StreamId::random()?;
        if let Some(chat) = &chat {
            chats::record(&registry, owner, chat, id);
        }
        let generation = Arc::new(Generation {
            id,
            owner,
            chat,
            model: model.to_owned(),
            upstream: upstream.map(str::to_owned),
            created: Instant::now(),
            registry: Arc::clone(&registry),
            log: Mutex::new(Log::default()),
            pump: Mutex::new(Pump::new(Some(source))),
            task: AtomicWaker::new(),
            listeners_changed: Notify::new(),
            signals: Signals::default(),
            running: Mutex::new(Some(permit)),
        });
        generation.append_start();
        lock(&registry.generations).insert(id, Arc::clone(&generation));
        let follower = generation.follow(0);
        if let Some(mirror) = &registry.mirror {
            mirror.mirror(Arc::clone(&generation), owner);
        }
        tokio::spawn(Arc::clone(&generation).run());
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

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;

    /// A process's generations as the unit tests want them: no stream
    /// limit, no mirror, a generous grace and TTL.
    pub(crate) fn generations() -> Generations {
        let config = ResumeConfig {
            grace: Duration::from_secs(30),
            ttl: Duration::from_secs(30),
            max_stream_bytes: 1 << 20,
            max_total_bytes: 1 << 24,
        };
        Generations::new(config, None, Arc::default(), None)
    }

    #[test]
    fn stream_ids_round_trip_and_are_random() {
        let id = StreamId::random().unwrap_or_else(|error| panic!("{error}"));
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(StreamId::parse(&text), Some(id));
        assert_ne!(StreamId::random().ok(), Some(id));
        // Across refills of the pool, no id comes twice or from wiped bytes.
        let ids: std::collections::HashSet<[u8; 16]> = (0..3 * IDS_PER_FILL)
            .map(|_| {
                StreamId::random()
                    .unwrap_or_else(|error| panic!("{error}"))
                    .0
            })
            .collect();
        assert_eq!(ids.len(), 3 * IDS_PER_FILL);
        assert!(!ids.contains(&[0; 16]));
        assert_eq!(StreamId::parse("not-an-id"), None);
        let known = StreamId([
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54,
            0x32, 0x10,
        ]);
        assert_eq!(known.to_string(), "0123456789abcdeffedcba9876543210");
        assert_eq!(StreamId::parse(&"zz".repeat(16)), None);
    }
}
