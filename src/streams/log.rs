//! A generation's log: its events and the state of those reading them,
//! behind the one lock a batch of events is appended under.

use std::collections::HashMap;
use std::sync::MutexGuard;
use std::task::Waker;

use tokio::time::Instant;

use super::records::Records;

#[derive(Debug, Default)]
pub(super) struct Log {
    /// The events; the front one has sequence number `first_seq`.
    pub(super) records: Records,
    pub(super) first_seq: u64,
    pub(super) bytes: usize,
    pub(super) finished: bool,
    /// Token events appended so far.
    pub(super) tokens: u64,
    /// The first text event's sequence number and arrival.
    pub(super) first_token: Option<(u64, Instant)>,
    /// Whether a follower has already reported how long that event took to leave.
    pub(super) first_token_relayed: bool,
    /// Until when a client on another replica counts as listening.
    pub(super) remote_lease: Option<Instant>,
    /// Position of every attached follower, by follower number.
    pub(super) positions: HashMap<u64, u64>,
    pub(super) next_follower: u64,
    /// The readers waiting for the log to grow, by follower number: a
    /// reader that leaves takes its waker out, or a quiet generation visited
    /// by many short-lived clients would keep every one of their
    /// connections' tasks alive through it.
    pub(super) wakers: Vec<(u64, Waker)>,
    /// How many times `wakers` was emptied to wake the readers in it: a
    /// reader whose waker went in since then is listed still, and one whose
    /// waker went in before is not, without a search through the list.
    pub(super) wake_rounds: u64,
    /// The follower reading the upstream in its own task, if one does (see
    /// `generation`).
    pub(super) driver: Option<Driver>,
}

/// A follower that reads its generation's upstream itself.
#[derive(Debug)]
pub(super) struct Driver {
    pub(super) number: u64,
    /// Wakes it to wait on the log instead, once the upstream is handed back.
    pub(super) waker: Waker,
    /// How many times it has come for the next event: a count that stands
    /// still tells the generation's task that its client stopped reading.
    pub(super) turns: u64,
}

impl Log {
    /// Whether follower `number` reads the upstream itself.
    pub(super) fn driven_by(&self, number: u64) -> bool {
        self.driver
            .as_ref()
            .is_some_and(|driver| driver.number == number)
    }
}

/// Wakes the followers waiting for `log` to grow, once it is unlocked.
pub(super) fn wake_followers(mut log: MutexGuard<'_, Log>) {
    log.wake_rounds += 1;
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
