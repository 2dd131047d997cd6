//! The reader behind a follower of a stream another replica runs: it reads
//! the Redis copy of the log with a blocking `XREAD`, ends only after the
//! terminal event (or with `resume_gap`), and gives up on a Redis that stops
//! answering (README, "Several replicas").

use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};
use tokio::sync::mpsc;
use tokio::time::Instant;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;

use super::link::{Backoff, RedisFailure, deadline};
use super::{BATCH, BLOCK, COMMAND_TIMEOUT, Cluster, Keys, LEASE, OUTAGE, lease_options, millis};
use crate::event::{ErrorCode, StreamEvent};
use crate::streams::Entry;

/// The reader behind one remote follower.
pub(super) struct Remote {
    pub(super) cluster: Cluster,
    pub(super) keys: Keys,
    pub(super) sender: mpsc::Sender<Entry>,
    /// `None` after a failure, until it is replaced.
    pub(super) reader: Option<MultiplexedConnection>,
    /// The sequence number the client needs next.
    pub(super) expected: u64,
    /// After Redis came back, how long a missing heartbeat is not yet taken
    /// for a dead runner: its mirror needs a moment to announce it again.
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
        let keys = &self.keys;
        let mut listening = redis::pipe();
        listening
            .set_options(&keys.listening, 1, lease_options())
            .ignore();
        self.cluster
            .link
            .query::<()>(&listening, COMMAND_TIMEOUT)
            .await?;
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
        let last = format!("0-{}", self.expected);
        let reply: Option<StreamReadReply> = deadline(
            BLOCK + COMMAND_TIMEOUT,
            reader.xread_options(&[&keys.log], &[&last], &options),
        )
        .await?;
        let entries = reply
            .into_iter()
            .flat_map(|reply| reply.keys)
            .flat_map(|key| key.ids);
        let mut any = false;
        for entry in entries {
            any = true;
            let seq = seq_of(&entry.id).unwrap_or(0);
            if seq > self.expected {
                let _ = self.sender.send(Entry::Gap { first_kept: seq }).await;
                let _ = self.sender.send(Entry::Done).await;
                return Ok(Round::Ended);
            }
            let Some(event) = event_of(&entry) else {
                self.end(
                    ErrorCode::UpstreamDisconnected,
                    "the shared event log holds an unreadable event".to_owned(),
                )
                .await;
                return Ok(Round::Ended);
            };
            self.expected = seq + 1;
            let terminal = event.is_terminal();
            if self.sender.send(Entry::Event { seq, event }).await.is_err() {
                return Ok(Round::Ended);
            }
            if terminal {
                let _ = self.sender.send(Entry::Done).await;
                return Ok(Round::Ended);
            }
        }
        if any {
            return Ok(Round::Continue);
        }
        // Nothing new for a while: is the log complete, and is its runner
        // still there?
        let mut state = redis::pipe();
        state
            .exists(&keys.alive)
            .hget(&keys.meta, "done")
            .xrevrange_count(&keys.log, "+", "-", 1);
        let (alive, done, top): (bool, Option<String>, StreamRangeReply) =
            self.cluster.link.query(&state, COMMAND_TIMEOUT).await?;
        if done.is_some() {
            let top = top.ids.first();
            let top_seq = top.and_then(|entry| seq_of(&entry.id));
            if top_seq.is_some_and(|seq| seq >= self.expected) {
                // Written after our read: read it.
                return Ok(Round::Continue);
            }
            // The client ends cleanly only if it has the terminal event.
            let has_terminal = top_seq.is_some_and(|seq| seq + 1 == self.expected)
                && top
                    .and_then(event_of)
                    .is_some_and(|event| event.is_terminal());
            if has_terminal {
                let _ = self.sender.send(Entry::Done).await;
            } else {
                self.end(
                    ErrorCode::ResumeGap,
                    "the shared event log ends before this stream's last event \
                     (it was trimmed or lost); start a new generation"
                        .to_owned(),
                )
                .await;
            }
            return Ok(Round::Ended);
        }
        let in_grace = self
            .runner_grace
            .is_some_and(|until| Instant::now() < until);
        if !alive && !in_grace {
            self.end(
                ErrorCode::UpstreamDisconnected,
                "the replica running this generation stopped before it finished".to_owned(),
            )
            .await;
            return Ok(Round::Ended);
        }
        Ok(Round::Continue)
    }

    /// Ends the client's stream honestly: an `error` that takes no place
    /// in the log, then the end.
    pub(super) async fn end(&self, code: ErrorCode, message: String) {
        let _ = self.sender.send(Entry::Lost { code, message }).await;
        let _ = self.sender.send(Entry::Done).await;
    }
}

/// The sequence number of the event stored under entry id `0-<seq+1>`.
pub(super) fn seq_of(entry_id: &str) -> Option<u64> {
    let (_, n) = entry_id.split_once('-')?;
    n.parse::<u64>().ok()?.checked_sub(1)
}

pub(super) fn event_of(entry: &redis::streams::StreamId) -> Option<StreamEvent> {
    entry
        .get::<String>("e")
        .and_then(|json| serde_json::from_str(&json).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_are_one_past_the_sequence_number() {
        assert_eq!(seq_of("0-1"), Some(0));
        assert_eq!(seq_of("0-18446744073709551615"), Some(u64::MAX - 1));
        assert_eq!(seq_of("0-0"), None);
        assert_eq!(seq_of("junk"), None);
    }
}
