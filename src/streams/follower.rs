//! A client's view of a generation: reading its log from any position,
//! waiting for more, and what a reader can meet on the way.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;

use super::generation::{Generation, Turn};
use super::records::Kept;
use crate::event::{ErrorCode, StreamEvent};
use crate::lock::lock;

/// How clients read a generation: followers, and readers that do not count
/// as listening (the Redis mirror).
impl Generation {
    /// A new client reading the log from sequence number `from`; while it
    /// is attached the generation counts as listened to.
    pub(crate) fn follow(self: &Arc<Self>, from: u64) -> Follower {
        self.reader(from, true)
    }

    /// Where sequence number `from` stands in this generation's log, for a
    /// client that wants to read on from there.
    pub(crate) fn position(&self, from: u64) -> Position {
        let log = lock(&self.log);
        let end = log.first_seq + log.records.len() as u64;
        match from.cmp(&end) {
            std::cmp::Ordering::Less => Position::Kept,
            std::cmp::Ordering::Equal if log.finished => Position::AllSeen,
            std::cmp::Ordering::Equal => Position::Kept,
            std::cmp::Ordering::Greater => Position::PastEnd { end },
        }
    }

    /// A reader that does not count as a listener (the Redis mirror).
    pub(crate) fn watch(self: &Arc<Self>, from: u64) -> Follower {
        self.reader(from, false)
    }

    fn reader(self: &Arc<Self>, from: u64, listening: bool) -> Follower {
        let mut log = lock(&self.log);
        let number = log.next_follower;
        log.next_follower += 1;
        if listening {
            log.positions.insert(number, from);
            // A second client must not wait on the first one's reading.
            self.hand_back(log);
            self.listeners_changed.notify_waiters();
        } else {
            drop(log);
        }
        Follower {
            generation: Arc::clone(self),
            number,
            next: from,
            state: Reading::Log,
            listed: None,
        }
    }
}

/// Where a position stands in a log; see [`Generation::position`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Position {
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
pub(crate) enum Entry {
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
pub(crate) struct Follower {
    pub(super) generation: Arc<Generation>,
    pub(super) number: u64,
    pub(super) next: u64,
    pub(super) state: Reading,
    /// The wake round (`Log::wake_rounds`) in which this reader's waker
    /// went into the log's list, and where in the list it went.
    pub(super) listed: Option<(u64, usize)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reading {
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
        let mut declined = false;
        let mut log = loop {
            let mut log = lock(&this.generation.log);
            if this.next < log.first_seq {
                let first_kept = log.first_seq;
                drop(log);
                this.state = Reading::DoneNext;
                return Poll::Ready(Some(Entry::Gap { first_kept }));
            }
            let index = (this.next - log.first_seq) as usize;
            if let Some(kept) = log.records.get(index) {
                let event = match kept {
                    Kept::Event(event) => event,
                    Kept::Start => this.generation.start_event(),
                };
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
                log.positions.advance(this.number, next);
                return Poll::Ready(Some(entry));
            }
            if log.finished {
                drop(log);
                this.state = Reading::Ended;
                return Poll::Ready(Some(Entry::Done));
            }
            // Nothing new: read the upstream, if it is ours to read.
            if declined || !this.generation.may_drive(&mut log, this.number, cx.waker()) {
                break log;
            }
            drop(log);
            match this.generation.take_turn(this.number, cx) {
                Turn::Read => {}
                Turn::Waiting => return Poll::Pending,
                // Looked at again before waiting: the task may have
                // appended while the log was unlocked.
                Turn::NotMine => declined = true,
            }
        };
        // A reader finds its waker where it put it, and one woken by an
        // append since is no longer listed: looking for itself in the list
        // made every token cost, with many followers, a search through all
        // of them for each one. Only a reader that left in the same round
        // moves the others, and then they look.
        let number = this.number;
        let round = log.wake_rounds;
        let at = match this.listed {
            Some((listed, at)) if listed == round => {
                if log
                    .wakers
                    .get(at)
                    .is_some_and(|(waiting, _)| *waiting == number)
                {
                    Some(at)
                } else {
                    log.wakers
                        .iter()
                        .position(|(waiting, _)| *waiting == number)
                }
            }
            _ => None,
        };
        match at.and_then(|at| Some((at, log.wakers.get_mut(at)?))) {
            Some((at, (_, waker))) => {
                waker.clone_from(cx.waker());
                this.listed = Some((round, at));
            }
            None => {
                this.listed = Some((round, log.wakers.len()));
                log.wakers.push((number, cx.waker().clone()));
            }
        }
        Poll::Pending
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let mut log = lock(&self.generation.log);
        let number = self.number;
        log.wakers.retain(|(waiting, _)| *waiting != number);
        let drove = log.driven_by(number);
        if drove {
            log.driver = None;
        }
        let last = log.positions.remove(number) && log.positions.is_empty();
        drop(log);
        if drove {
            // The upstream goes back to the task, which carries on for the
            // grace period or for the other followers.
            self.generation.task.wake();
        }
        if last {
            self.generation.listeners_changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    use futures_util::task::AtomicWaker;
    use tokio::sync::Notify;
    use tokio::time::Instant;

    use super::*;
    use crate::streams::generation::Pump;
    use crate::streams::records::tests::sample;
    use crate::streams::signals::Signals;
    use crate::streams::{Caller, StreamId};

    /// A generation with no upstream behind it, as `Ticket::start` builds one.
    fn quiet_generation() -> Arc<Generation> {
        let streams = crate::streams::tests::generations();
        let generation = Arc::new(Generation {
            id: StreamId([7; 16]),
            owner: Caller::OPEN,
            chat: None,
            model: "m".to_owned(),
            upstream: None,
            created: Instant::now(),
            registry: Arc::clone(&streams.registry),
            log: Mutex::default(),
            pump: Mutex::new(Pump::new(None)),
            task: AtomicWaker::new(),
            listeners_changed: Notify::new(),
            signals: Signals::default(),
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
    fn followers_woken_by_an_append_each_wait_again_once() {
        let generation = quiet_generation();
        let mut followers: Vec<Follower> = (0..50).map(|_| generation.follow(1)).collect();
        let mut cx = Context::from_waker(Waker::noop());
        for seq in 1..4 {
            for follower in &mut followers {
                // Twice: the second finds its own waker instead of adding one.
                for _ in 0..2 {
                    assert!(Pin::new(&mut *follower).poll_next(&mut cx).is_pending());
                }
            }
            assert_eq!(lock(&generation.log).wakers.len(), followers.len());
            // One leaving moves the others in the list; they still find themselves.
            drop(followers.remove(seq * 7));
            for follower in &mut followers {
                assert!(Pin::new(&mut *follower).poll_next(&mut cx).is_pending());
            }
            assert_eq!(lock(&generation.log).wakers.len(), followers.len());
            generation.append(sample(seq));
            assert!(lock(&generation.log).wakers.is_empty());
            for follower in &mut followers {
                let read = Pin::new(&mut *follower).poll_next(&mut cx);
                assert!(
                    matches!(read, Poll::Ready(Some(Entry::Event { seq: s, .. })) if s == seq as u64)
                );
            }
        }
    }
}
