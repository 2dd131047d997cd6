//! The reader behind a follower of a stream another replica runs: it reads
//! the Redis copy of the log with a blocking `XREAD`, ends only after the
//! terminal event (or with `resume_gap`), tells the runner it listens, and
//! gives up on a Redis that stops answering or a runner that went silent
//! (README, "Several replicas").

use redis::AsyncCommands;
use redis::streams::{StreamReadOptions, StreamReadReply};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::link::{Backoff, Connection, RedisFailure, deadline};
use super::stored::{Place, Stored};
use super::{
    BATCH, BLOCK, COMMAND_TIMEOUT, Cluster, HEARTBEAT, Keys, LEASE, LISTEN_CHANNEL, OUTAGE, millis,
};
use crate::event::ErrorCode;
use crate::streams::{Entry, StreamId};

/// The reader behind one remote follower.
pub(super) struct Remote {
    pub(super) cluster: Cluster,
    pub(super) id: StreamId,
    pub(super) keys: Keys,
    pub(super) sender: mpsc::Sender<Entry>,
    /// `None` after a failure, until it is replaced.
    pub(super) reader: Option<Connection>,
    /// The sequence number the client needs next.
    pub(super) expected: u64,
    /// The entry read last, or where reading starts.
    pub(super) after: Place,
    /// When the runner last showed it is there: an entry, or the start.
    pub(super) heard: Instant,
    /// When the runner was last told that this follower listens.
    pub(super) told: Option<Instant>,
    /// After Redis came back, how long a silent runner is not yet taken
    /// for a dead one: its mirror needs a moment to write again.
    pub(super) runner_grace: Option<Instant>,
}

/// What one round of reading left to do.
pub(super) enum Round {
    Continue,
    Ended,
}

impl Remote {
    /// Forwards events until the terminal one, a failure the follower
    /// cannot ride out, the client leaving, or shutdown.
    pub(super) async fn run(mut self) {
        let mut backoff = Backoff::default();
        let mut last_answer = Instant::now();
        loop {
            let closing = self.cluster.closing.clone();
            let sender = self.sender.clone();
            let round = tokio::select! {
                biased;
                () = closing.cancelled() => None,
                () = sender.closed() => return,
                round = self.round() => Some(round),
            };
            match round {
                None => {
                    self.end(
                        ErrorCode::ShuttingDown,
                        "the server is shutting down".to_owned(),
                    )
                    .await;
                    return;
                }
                Some(Ok(Round::Ended)) => return,
                Some(Ok(Round::Continue)) => {
                    last_answer = Instant::now();
                    backoff.succeeded();
                }
                Some(Err(failure)) => {
                    self.reader = None;
                    let wait = backoff.failed();
                    if last_answer.elapsed() + wait >= OUTAGE {
                        self.end(
                            ErrorCode::UpstreamDisconnected,
                            format!("lost the shared event log ({failure})"),
                        )
                        .await;
                        return;
                    }
                    self.runner_grace = Some(Instant::now() + wait + LEASE);
                    tokio::select! {
                        () = closing.cancelled() => {}
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    pub(super) async fn round(&mut self) -> Result<Round, RedisFailure> {
        if self.told.is_none_or(|at| at.elapsed() >= HEARTBEAT) {
            let mut listening = redis::pipe();
            listening
                .publish(LISTEN_CHANNEL, self.id.to_string())
                .ignore();
            self.cluster
                .link
                .query::<()>(&listening, COMMAND_TIMEOUT)
                .await?;
            self.told = Some(Instant::now());
        }
        let mut reader = match &self.reader {
            Some(reader) => reader.clone(),
            None => {
                let reader = self.cluster.link.reader().await?;
                self.reader = Some(reader.clone());
                reader
            }
        };
        let options = StreamReadOptions::default()
            .block(millis(BLOCK) as usize)
            .count(BATCH);
        let after = self.after.id();
        let reply: Option<StreamReadReply> = deadline(
            BLOCK + COMMAND_TIMEOUT,
            reader.xread_options(&[&self.keys.log], &[&after], &options),
        )
        .await?;
        let entries: Vec<_> = reply
            .into_iter()
            .flat_map(|reply| reply.keys)
            .flat_map(|key| key.ids)
            .collect();
        if entries.is_empty() {
            return self.silence().await;
        }
        for entry in &entries {
            let Some(stored) = Stored::read(entry) else {
                self.end(
                    ErrorCode::UpstreamDisconnected,
                    "the shared event log holds an unreadable entry".to_owned(),
                )
                .await;
                return Ok(Round::Ended);
            };
            self.after = stored.place;
            self.heard = Instant::now();
            if let Round::Ended = self.forward(stored).await {
                return Ok(Round::Ended);
            }
        }
        Ok(Round::Continue)
    }

    /// Sends the client the events of `stored` it has not seen.
    async fn forward(&mut self, stored: Stored) -> Round {
        let first = stored.first();
        if !stored.events.is_empty() && first > self.expected {
            let _ = self.sender.send(Entry::Gap { first_kept: first }).await;
            let _ = self.sender.send(Entry::Done).await;
            return Round::Ended;
        }
        for (seq, event) in (first..).zip(stored.events) {
            if seq < self.expected {
                continue;
            }
            self.expected = seq + 1;
            let terminal = event.is_terminal();
            if self.sender.send(Entry::Event { seq, event }).await.is_err() {
                return Round::Ended;
            }
            if terminal {
                let _ = self.sender.send(Entry::Done).await;
                return Round::Ended;
            }
        }
        if stored.done && self.expected == stored.place.end {
            // The client had every event, the terminal one with them.
            let _ = self.sender.send(Entry::Done).await;
            return Round::Ended;
        }
        if stored.done {
            // The end of the log, without a terminal event read.
            self.end(
                ErrorCode::ResumeGap,
                "the shared event log ends before this stream's last event \
                 (it was trimmed or lost); start a new generation"
                    .to_owned(),
            )
            .await;
            return Round::Ended;
        }
        Round::Continue
    }

    /// Nothing new: the runner writes at least once a second while it
    /// runs, so a longer silence means it is gone, unless the log ended
    /// where this follower cannot see it.
    async fn silence(&mut self) -> Result<Round, RedisFailure> {
        let in_grace = self
            .runner_grace
            .is_some_and(|until| Instant::now() < until);
        if self.heard.elapsed() < LEASE || in_grace {
            return Ok(Round::Continue);
        }
        let top = self.cluster.last_entry(&self.keys).await?;
        if top.as_ref().is_some_and(|top| top.place > self.after) {
            // Written after our read: read it.
            return Ok(Round::Continue);
        }
        if top.is_some_and(|top| top.done) {
            self.end(
                ErrorCode::ResumeGap,
                "the shared event log lost the end of this stream; start a new generation"
                    .to_owned(),
            )
            .await;
        } else {
            self.end(
                ErrorCode::UpstreamDisconnected,
                "the replica running this generation stopped before it finished".to_owned(),
            )
            .await;
        }
        Ok(Round::Ended)
    }

    /// Ends the client's stream honestly: an `error` that takes no place
    /// in the log, then the end.
    pub(super) async fn end(&self, code: ErrorCode, message: String) {
        let _ = self.sender.send(Entry::Lost { code, message }).await;
        let _ = self.sender.send(Entry::Done).await;
    }
}
