//! The mirror: copies one generation's log into its Redis Stream for the
//! other replicas, asking as little of Redis as it can (README, "Several
//! replicas").
//!
//! Events are gathered and written as one entry per flush: at once while a
//! client on another replica follows the generation (it says so on the
//! `listening` channel), and otherwise once a second, when an entry is
//! worth it only for a client that may come back elsewhere; then the mirror
//! does not even wake for each event, only on the second or at the end. A
//! terminal event is always written at once. A second with nothing to write writes a
//! heartbeat, the runner's sign of life. The key's expiry is set with the
//! first entry and refreshed every half minute, and a finished log keeps it
//! when it already outlasts the resume TTL. Writes after the first never
//! create the key (`NOMKSTREAM`): a Redis that forgot the log makes the
//! mirror start it again from its first event, never from the middle.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, Stream, StreamExt};
use redis::streams::StreamRangeReply;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::link::{Backoff, RedisFailure};
use super::stored::{Pending, Place};
use super::{COMMAND_TIMEOUT, Cluster, HEARTBEAT, Keys, chat_key, expiry, owner_tag};
use crate::streams::signals::Signal;
use crate::streams::{Caller, Entry, Generation};

/// Most events in one entry.
const MAX_EVENTS: usize = 256;
/// Most bytes of events in one entry: a flush comes sooner past this.
const MAX_BYTES: usize = 256 * 1024;
/// Most entries kept per Redis Stream; older ones are trimmed away.
const MAX_ENTRIES: usize = 100_000;
/// How long a running log's key lives at least, whatever the resume TTL.
const RUNNING_TTL: Duration = Duration::from_secs(60);
/// How often a running log's expiry is pushed back; also how much longer
/// than the resume TTL a finished log may be kept.
const REFRESH: Duration = Duration::from_secs(30);

/// Mirrors through any number of Redis failures; gives up only after
/// Redis has been unreachable for as long as a running log lives.
pub(super) async fn run(cluster: Cluster, generation: Arc<Generation>, owner: Caller) {
    let mut mirror = Mirror {
        keys: Keys::new(generation.id()),
        chat: generation
            .chat
            .as_ref()
            .map(|chat| chat_key(owner, &chat.id)),
        owner: owner_tag(owner),
        cluster,
        generation,
        // Only the first announcement names the chat's generation: one
        // announced again after a failure may have been succeeded by a newer.
        chat_announced: false,
    };
    let mut backoff = Backoff::default();
    // A new stream id: Redis cannot hold anything of it yet.
    let mut ask_redis = false;
    loop {
        let Err(failure) = mirror.copy(ask_redis, &mut backoff).await else {
            return;
        };
        let id = mirror.generation.id();
        if backoff.failing_for() > RUNNING_TTL {
            tracing::warn!(stream_id = %id, %failure, "mirroring to Redis stopped");
            return;
        }
        if backoff.failing_for().is_zero() {
            tracing::warn!(stream_id = %id, %failure, "mirroring to Redis paused; retrying");
        }
        tokio::time::sleep(backoff.failed()).await;
        ask_redis = true;
    }
}

struct Mirror {
    cluster: Cluster,
    generation: Arc<Generation>,
    keys: Keys,
    /// The record of the chat the generation answers, if it answers one.
    chat: Option<String>,
    owner: String,
    chat_announced: bool,
}

/// What one run of copying knows of the Redis Stream.
#[derive(Default)]
struct Copy {
    /// The last entry there.
    top: Place,
    /// Whether the key exists, as far as this run knows.
    exists: bool,
    /// When this run last set the key's expiry.
    expiry_set: Option<Instant>,
    /// When this run last wrote an entry.
    written: Option<Instant>,
    pending: Pending,
}

/// How gathering events ended.
enum Then {
    /// More may follow.
    More,
    /// The log here no longer holds the next events; go on from this one.
    SkipTo(u64),
    /// The log is complete.
    Finished,
}

impl Mirror {
    /// Copies from where Redis's copy ends (from the start on a new stream,
    /// or after Redis lost it) until the log is complete or Redis fails.
    async fn copy(&mut self, ask_redis: bool, backoff: &mut Backoff) -> Result<(), RedisFailure> {
        let mut copy = Copy::default();
        if ask_redis {
            let mut top = redis::pipe();
            top.xrevrange_count(&self.keys.log, "+", "-", 1);
            let (top,): (StreamRangeReply,) =
                self.cluster.link.query(&top, COMMAND_TIMEOUT).await?;
            if let Some(place) = top.ids.first().and_then(|entry| Place::parse(&entry.id)) {
                copy.top = place;
                copy.exists = true;
            }
        }
        let mut log = self.generation.watch(copy.top.end);
        let mut tick = tokio::time::interval_at(Instant::now() + HEARTBEAT, HEARTBEAT);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The first entry goes out at once, with whatever is there already,
        // so that other replicas know the stream from its start.
        let mut then = drain(&mut copy.pending, &mut log);
        loop {
            match then {
                Then::Finished => return self.write(&mut copy, true).await,
                Then::SkipTo(first_kept) => {
                    // Trimmed here before it was copied: Redis gets a gap
                    // too, which followers there report.
                    self.write(&mut copy, false).await?;
                    log = self.generation.watch(first_kept);
                }
                Then::More if copy.expiry_set.is_none() || self.urgent(&copy.pending) => {
                    self.write(&mut copy, false).await?;
                }
                Then::More => {}
            }
            backoff.succeeded();
            if !self.chat_announced {
                self.announce_chat().await?;
            }
            then = self.next(&mut copy, &mut log, &mut tick).await?;
        }
    }

    /// Gathers what comes next. While a client elsewhere follows, every
    /// event is taken as it comes, and a heartbeat written when nothing was
    /// lately. Otherwise the log is left alone, so that its events cost no
    /// wake-up here, and read once a second, or when it ends.
    async fn next(
        &self,
        copy: &mut Copy,
        log: &mut (impl Stream<Item = Entry> + Unpin),
        tick: &mut Interval,
    ) -> Result<Then, RedisFailure> {
        loop {
            if self.generation.is_followed_elsewhere() {
                tokio::select! {
                    entry = log.next() => return Ok(gather(&mut copy.pending, entry, log)),
                    _ = tick.tick() => {
                        let lately = copy.written.is_some_and(|at| at.elapsed() < HEARTBEAT / 2);
                        if copy.pending.count() > 0 || !lately {
                            self.write(copy, false).await?;
                        }
                    }
                }
                continue;
            }
            tokio::select! {
                () = self.generation.signals.raised(Signal::Ended) => return Ok(drain(&mut copy.pending, log)),
                () = self.generation.listeners_changed.notified() => {}
                _ = tick.tick() => loop {
                    let then = drain(&mut copy.pending, log);
                    if !matches!(then, Then::More) {
                        return Ok(then);
                    }
                    let full = full(&copy.pending);
                    self.write(copy, false).await?;
                    if !full {
                        break;
                    }
                },
            }
        }
    }

    /// Whether waiting events should go out now rather than on the tick.
    fn urgent(&self, pending: &Pending) -> bool {
        full(pending) || (pending.count() > 0 && self.generation.is_followed_elsewhere())
    }

    /// Writes what is waiting as one entry (a heartbeat when nothing is),
    /// marked done after the last event.
    async fn write(&self, copy: &mut Copy, done: bool) -> Result<(), RedisFailure> {
        let place = copy.pending.place_after(copy.top);
        let events = copy.pending.take();
        let mut pipe = redis::pipe();
        let add = pipe.cmd("XADD").arg(&self.keys.log);
        if copy.exists {
            add.arg("NOMKSTREAM");
        }
        add.arg("MAXLEN")
            .arg("~")
            .arg(MAX_ENTRIES)
            .arg(place.id())
            .arg("o")
            .arg(&self.owner);
        if let Some(events) = events {
            add.arg("e").arg(events);
        }
        if done {
            add.arg("d").arg(1);
        }
        let expire = expiry_due(
            self.cluster.ttl,
            copy.expiry_set.map(|set| set.elapsed()),
            done,
        );
        if let Some(ttl) = expire {
            pipe.pexpire(&self.keys.log, expiry(ttl)).ignore();
        }
        let (added,): (Option<String>,) = self.cluster.link.query(&pipe, COMMAND_TIMEOUT).await?;
        if added.is_none() {
            return Err(RedisFailure::Forgotten);
        }
        copy.top = place;
        copy.exists = true;
        copy.written = Some(Instant::now());
        if let Some(ttl) = expire {
            copy.expiry_set = Some(Instant::now());
            if let Some(chat) = &self.chat {
                let mut pipe = redis::pipe();
                pipe.pexpire(chat, expiry(ttl)).ignore();
                self.cluster
                    .link
                    .query::<()>(&pipe, COMMAND_TIMEOUT)
                    .await?;
            }
        }
        Ok(())
    }

    /// Points the chat's record at this generation, for every replica.
    async fn announce_chat(&mut self) -> Result<(), RedisFailure> {
        if let (Some(chat_key), Some(chat)) = (&self.chat, &self.generation.chat) {
            let mut announce = redis::pipe();
            announce
                .del(chat_key)
                .ignore()
                .hset(chat_key, "stream", self.generation.id().to_string())
                .ignore()
                .pexpire(
                    chat_key,
                    expiry(self.cluster.ttl.max(RUNNING_TTL) + REFRESH),
                )
                .ignore();
            if let Some(message_id) = &chat.message_id {
                announce.hset(chat_key, "message", message_id).ignore();
            }
            self.cluster
                .link
                .query::<()>(&announce, COMMAND_TIMEOUT)
                .await?;
        }
        self.chat_announced = true;
        Ok(())
    }
}

/// The expiry to set with a write, if one is due, `since` the last one was
/// set: a running log lives long past its next refresh; a finished one
/// keeps the expiry it has when that still outlasts the resume `ttl`.
fn expiry_due(ttl: Duration, since: Option<Duration>, done: bool) -> Option<Duration> {
    let running = ttl.max(RUNNING_TTL) + REFRESH;
    match since {
        None if done => Some(ttl),
        None => Some(running),
        Some(since) if done => (ttl < RUNNING_TTL || since >= REFRESH).then_some(ttl),
        Some(since) => (since >= REFRESH).then_some(running),
    }
}

/// Whether `pending` makes a whole entry.
fn full(pending: &Pending) -> bool {
    pending.count() >= MAX_EVENTS || pending.bytes() >= MAX_BYTES
}

/// Adds whatever is waiting in `log` to `pending`.
fn drain(pending: &mut Pending, log: &mut (impl Stream<Item = Entry> + Unpin)) -> Then {
    match log.next().now_or_never() {
        Some(entry) => gather(pending, entry, log),
        None => Then::More,
    }
}

/// Adds `first` and whatever else is already waiting to `pending`; `None`
/// is the end of the log.
fn gather(
    pending: &mut Pending,
    first: Option<Entry>,
    log: &mut (impl Stream<Item = Entry> + Unpin),
) -> Then {
    let mut entry = first;
    loop {
        match entry {
            Some(Entry::Event { seq, event }) => pending.push(seq, &event),
            Some(Entry::Gap { first_kept }) => return Then::SkipTo(first_kept),
            Some(Entry::Done | Entry::Lost { .. }) | None => return Then::Finished,
        }
        if full(pending) {
            return Then::More;
        }
        match log.next().now_or_never() {
            Some(next) => entry = next,
            None => return Then::More,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_set_once_refreshed_rarely_and_a_finished_log_outlasts_the_ttl() {
        let secs = Duration::from_secs;
        let cases = [
            // (ttl, since the last setting, done) -> the expiry to set
            ((300, None, false), Some(330)),
            ((300, Some(0), false), None),
            ((300, Some(29), false), None),
            ((300, Some(30), false), Some(330)),
            // Set less than 30 s ago to ttl + 30 s: at least ttl remains.
            ((300, Some(29), true), None),
            ((300, Some(30), true), Some(300)),
            ((300, None, true), Some(300)),
            // A short ttl: a running log still lives a minute and more, and
            // a finished one is cut down to the ttl.
            ((5, None, false), Some(90)),
            ((5, Some(1), true), Some(5)),
            ((0, Some(1), true), Some(0)),
        ];
        for ((ttl, since, done), expected) in cases {
            assert_eq!(
                expiry_due(secs(ttl), since.map(secs), done),
                expected.map(secs),
                "ttl {ttl}, since {since:?}, done {done}"
            );
        }
    }
}
