//! Finding a generation again, for every surface that resumes or stops one:
//! here when this process runs it, else through the shared store
//! (`REDIS_URL`), and only for the key that created it. Each surface frames
//! what the follower reads in its own way.

use std::pin::Pin;

use futures_util::Stream;

use crate::error::Error;
use crate::state::AppState;
use crate::streams::{Caller, Elsewhere, Entry, Position, StreamId};

/// A follower of a generation, wherever it runs.
pub(super) type Entries = Pin<Box<dyn Stream<Item = Entry> + Send>>;

/// What attaching to a generation found.
pub(super) enum Attached {
    Following(Entries),
    /// It is over and the client read all of it.
    AllSeen,
    /// No replica knows it for this caller.
    Unknown,
}

/// A follower of generation `id` from sequence number `from`; a `from`
/// beyond the end is the client's mistake, a 400.
pub(super) async fn attach(
    state: &AppState,
    caller: Caller,
    id: StreamId,
    from: u64,
) -> Result<Attached, Error> {
    let attached = match state.generations.find(id, caller) {
        Some(generation) => match generation.position(from) {
            Position::Kept => Attached::Following(Box::pin(generation.follow(from))),
            Position::AllSeen => Attached::AllSeen,
            Position::PastEnd { end } => return Err(past_the_end(from, end)),
        },
        None => match &state.cluster {
            Some(cluster) => match cluster.follow(id, caller, from).await? {
                Some(Elsewhere::Following(remote)) => Attached::Following(Box::pin(remote)),
                Some(Elsewhere::AllSeen) => Attached::AllSeen,
                None => Attached::Unknown,
            },
            None => Attached::Unknown,
        },
    };
    // A client reading from the start is only attaching; a surface whose
    // resumes replay from the start counts them itself.
    if matches!(attached, Attached::Following(_)) && from > 0 {
        state.metrics.resume();
    }
    Ok(attached)
}

/// Stops generation `id` wherever it runs; false when no replica knows it
/// for `caller`.
pub(super) async fn stop(state: &AppState, caller: Caller, id: StreamId) -> Result<bool, Error> {
    if let Some(generation) = state.generations.find(id, caller) {
        generation.stop();
        return Ok(true);
    }
    match &state.cluster {
        Some(cluster) => cluster.stop(id, caller).await,
        None => Ok(false),
    }
}

fn past_the_end(from: u64, end: u64) -> Error {
    Error::InvalidRequest(format!(
        "`Last-Event-ID` names event {}, but the stream has only {end} events so far",
        from.saturating_sub(1)
    ))
}
