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
    /// Where every attached follower is.
    pub(super) positions: Positions,
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

/// The position of every attached follower, by follower number: the next
/// sequence number it will read.
///
/// A stream mostly has one follower, and it updates its position with every
/// event it reads. So the first to attach is kept here, among the log's own
/// fields, which that read has touched already; a map's table would be
/// memory of its own to fetch for every event (README, Performance).
#[derive(Debug, Default)]
pub(super) struct Positions {
    first: Option<(u64, u64)>,
    others: HashMap<u64, u64>,
}

impl Positions {
    pub(super) fn insert(&mut self, number: u64, position: u64) {
        match self.first {
            None => self.first = Some((number, position)),
            Some(_) => {
                self.others.insert(number, position);
            }
        }
    }

    /// Moves follower `number` on to `position`, if it is still counted.
    pub(super) fn advance(&mut self, number: u64, position: u64) {
        match &mut self.first {
            Some((first, at)) if *first == number => *at = position,
            _ => {
                if let Some(at) = self.others.get_mut(&number) {
                    *at = position;
                }
            }
        }
    }

    /// Whether follower `number` was counted.
    pub(super) fn remove(&mut self, number: u64) -> bool {
        if self.first.is_some_and(|(first, _)| first == number) {
            self.first = None;
            return true;
        }
        self.others.remove(&number).is_some()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.first.is_none() && self.others.is_empty()
    }

    /// Whether follower `number` is the only one counted.
    pub(super) fn only(&self, number: u64) -> bool {
        match self.first {
            Some((first, _)) => first == number && self.others.is_empty(),
            None => self.others.len() == 1 && self.others.contains_key(&number),
        }
    }

    /// Stops counting the followers before `first_kept`, whose events are
    /// gone; returns whether there were any.
    pub(super) fn drop_behind(&mut self, first_kept: u64) -> bool {
        let mut dropped = false;
        if self.first.is_some_and(|(_, at)| at < first_kept) {
            self.first = None;
            dropped = true;
        }
        let before = self.others.len();
        self.others.retain(|_, at| *at >= first_kept);
        dropped || self.others.len() != before
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

#[cfg(test)]
mod tests {
    use super::Positions;

    #[test]
    fn positions_count_each_follower_once_wherever_it_is_kept() {
        let mut positions = Positions::default();
        positions.insert(1, 0);
        assert!(positions.only(1));
        positions.insert(2, 0);
        positions.insert(3, 5);
        assert!(!positions.only(1));
        positions.advance(1, 3);
        positions.advance(2, 7);

        // The first follower fell behind the kept events; the others did not.
        assert!(positions.drop_behind(4));
        assert!(!positions.drop_behind(4), "nobody else is behind");
        // A follower no longer counted is not counted again by reading on.
        positions.advance(1, 10);
        assert!(!positions.remove(1));
        assert!(positions.remove(3));
        assert!(positions.only(2));

        // A newcomer takes the free place beside the one still counted.
        positions.insert(4, 7);
        assert!(!positions.only(2) && !positions.only(4));
        assert!(positions.remove(4));
        assert!(positions.only(2));
        assert!(positions.remove(2));
        assert!(positions.is_empty());
    }
}
