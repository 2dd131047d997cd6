//! The Vercel AI SDK's face of tokenrelay (`docs/PROTOCOL.md` §8), so that
//! `useChat` with `DefaultChatTransport` points at us and gains resume:
//! `POST /api/ui/chat` answers a UI message stream, and
//! `GET`/`DELETE /api/ui/chat/{chat_id}/stream` resume or stop the chat's
//! latest generation.
//!
//! Like `/v1`, it is another framing of the same generations: a post starts
//! one through `routing` (so keys, limits and failover apply), naming the
//! chat it answers; a resume finds the chat's generation (here, or through
//! the shared store) and replays it from its first part, because the SDK
//! rebuilds the message from scratch on resume.
//!
//! When a resume answers 204 (nothing to resume): the chat never had a
//! generation for this key; its latest generation is no longer kept (the
//! resume TTL passed); or a client already read that generation to its
//! end, which is what the page that resumes needs to know not to show it
//! twice. A generation still running, or finished with nobody having read
//! its end, is replayed.

mod encode;
mod messages;

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use futures_util::{StreamExt, stream};

use self::encode::UiEncoder;
use super::attach::{self, Attached, Entries, attach};
use super::sse;
use super::tokenrelay::no_head;
use crate::error::Error;
use crate::http::extract::{JsonBody, Path};
use crate::policy::Grant;
use crate::state::AppState;
use crate::streams::{Caller, ChatRecord, Entry, Owner, StreamId};

/// What tells the SDK that the body is a UI message stream.
const UI_STREAM_HEADER: HeaderName = HeaderName::from_static("x-vercel-ai-ui-message-stream");

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/api/ui/chat", post(chat)).route(
        "/api/ui/chat/{chat_id}/stream",
        get(resume)
            .delete(stop)
            .head(|| async { no_head("GET, DELETE") }),
    )
}

/// `POST /api/ui/chat`: a new answer for the chat.
async fn chat(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(grant): Extension<Grant>,
    JsonBody(body): JsonBody,
) -> Result<Response, Error> {
    let messages::UiChat { request, chat } = messages::parse(&body)?;
    let (chat_id, message_id) = (chat.id.clone(), chat.message_id.clone());
    let owner = Owner {
        caller,
        chat: Some(chat),
    };
    let (stream_id, follower) = state
        .routes
        .open(&state.generations, &state.metrics, owner, &grant, request)
        .await?;
    Ok(answer(
        &state,
        caller,
        chat_id,
        stream_id,
        message_id,
        Box::pin(follower),
    ))
}

/// `GET /api/ui/chat/{chat_id}/stream`: the chat's generation from its
/// first part, then live; 204 when there is nothing to resume.
async fn resume(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(chat_id): Path<String>,
) -> Result<Response, Error> {
    let Some(record) = latest(&state, caller, &chat_id).await? else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    if record.seen {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    match attach(&state, caller, record.stream, 0).await? {
        Attached::Following(entries) => {
            // A replay from the first part is this surface's resume.
            state.metrics.resume();
            Ok(answer(
                &state,
                caller,
                chat_id,
                record.stream,
                record.message_id,
                entries,
            ))
        }
        Attached::AllSeen | Attached::Unknown => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// `DELETE /api/ui/chat/{chat_id}/stream`: the Stop button, which with
/// resume on only disconnects in the SDK itself.
async fn stop(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(chat_id): Path<String>,
) -> Result<StatusCode, Error> {
    let stopped = match latest(&state, caller, &chat_id).await? {
        Some(record) => attach::stop(&state, caller, record.stream).await?,
        None => false,
    };
    if stopped {
        Ok(StatusCode::NO_CONTENT)
    } else {
        let shown: String = chat_id.chars().take(64).collect();
        Err(Error::NotFound(format!(
            "chat `{shown}` has no generation to stop: it never had one or it has expired"
        )))
    }
}

/// The chat's latest generation: the shared store knows it on every
/// replica, this process at least the ones it started, which it still
/// resumes while the store does not answer.
async fn latest(
    state: &AppState,
    caller: Caller,
    chat_id: &str,
) -> Result<Option<ChatRecord>, Error> {
    let here = || state.generations.chat(caller, chat_id);
    match &state.cluster {
        Some(cluster) => match cluster.chat(caller, chat_id).await {
            Ok(Some(record)) => Ok(Some(record)),
            Ok(None) => Ok(here()),
            Err(error) => here().map(Some).ok_or(error),
        },
        None => Ok(here()),
    }
}

/// The UI message stream of generation `stream_id`, chat `chat_id`'s
/// answer. A client that reads it to its end marks the chat's generation
/// seen, here and for every replica, so that a later resume answers 204.
fn answer(
    state: &AppState,
    caller: Caller,
    chat_id: String,
    stream_id: StreamId,
    message_id: Option<String>,
    entries: Entries,
) -> Response {
    let message_id = message_id.unwrap_or_else(|| format!("msg-{stream_id}"));
    let mut encoder = UiEncoder::new(stream_id, message_id);
    let keepalive = state.config.keepalive;
    let state = state.clone();
    let events = entries.flat_map(move |entry| {
        let mut out = Vec::new();
        encoder.encode(&entry, &mut out);
        if matches!(entry, Entry::Done) && encoder.read_to_end() {
            seen(&state, caller, &chat_id, stream_id);
        }
        stream::iter(out)
    });
    let mut response = sse::sse(stream_id, events, keepalive);
    response
        .headers_mut()
        .insert(UI_STREAM_HEADER, HeaderValue::from_static("v1"));
    response
}

/// Marks `stream` read to its end as chat `chat_id`'s generation. The
/// shared store is told in the background: the stream is over, and a
/// resume that comes before the note lands only replays an answer the SDK
/// rebuilds identically.
fn seen(state: &AppState, caller: Caller, chat_id: &str, stream: StreamId) {
    state.generations.chat_seen(caller, chat_id, stream);
    if let Some(cluster) = state.cluster.clone() {
        let chat_id = chat_id.to_owned();
        tokio::spawn(async move {
            if let Err(error) = cluster.chat_seen(caller, &chat_id, stream).await {
                tracing::warn!(stream_id = %stream, %error, "could not note a chat as read in Redis");
            }
        });
    }
}
