//! Our own surface (`docs/PROTOCOL.md` §1–§6): `POST /api/chat` and its
//! `GET` form for `EventSource`, attaching to a generation with
//! `Last-Event-ID`, and stopping one.
//!
//! Handlers stay thin: a request becomes a generation through `routing`, or
//! a follower of one in `streams`, framed by `sse`.

use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;

use super::sse;
use crate::error::Error;
use crate::http::extract::{JsonBody, Path, Query};
use crate::policy::Grant;
use crate::request::ChatRequest;
use crate::state::AppState;
use crate::streams::{Caller, Elsewhere, Position, StreamId};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/chat",
            post(chat)
                .get(chat_from_query)
                .head(|| async { no_head("GET, POST") }),
        )
        .route(
            "/api/chat/{stream_id}/events",
            get(events).head(|| async { no_head("GET") }),
        )
        .route("/api/chat/{stream_id}", axum::routing::delete(stop))
}

/// `POST /api/chat`: resume if the client says where it left off, else start.
/// A `Last-Event-ID` that no replica knows is a 404: starting a new,
/// billed generation instead would answer a question nobody asked again.
async fn chat(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(grant): Extension<Grant>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, Error> {
    if let Some(point) = last_event_id(&headers, None)? {
        return match attach(&state, caller, point).await? {
            Attached::Following(response) => Ok(response),
            Attached::AllSeen => Ok(StatusCode::NO_CONTENT.into_response()),
            Attached::Unknown => Err(unknown_stream(&point.id.to_string())),
        };
    }
    let JsonBody(body) = JsonBody::from_request(request, &state).await?;
    start(&state, caller, &grant, ChatRequest::from_json(&body)?).await
}

#[derive(Debug, Deserialize)]
struct ChatQuery {
    prompt: Option<String>,
    model: Option<String>,
    last_event_id: Option<String>,
}

/// `GET /api/chat?prompt=...` for `EventSource`, whose automatic reconnect
/// carries `Last-Event-ID` and so continues the same answer. A reconnect
/// with nothing left to read (the answer was read to its end, or is no
/// longer known) gets 204, which tells `EventSource` to stop reconnecting;
/// it never starts the generation again.
async fn chat_from_query(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(grant): Extension<Grant>,
    headers: HeaderMap,
    Query(query): Query<ChatQuery>,
) -> Result<Response, Error> {
    if let Some(point) = last_event_id(&headers, query.last_event_id.as_deref())? {
        return match attach(&state, caller, point).await? {
            Attached::Following(response) => Ok(response),
            Attached::AllSeen | Attached::Unknown => Ok(StatusCode::NO_CONTENT.into_response()),
        };
    }
    start(
        &state,
        caller,
        &grant,
        ChatRequest::from_prompt(query.prompt, query.model)?,
    )
    .await
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    last_event_id: Option<String>,
}

/// `GET /api/chat/{stream_id}/events`: replay after `Last-Event-ID`, then follow.
async fn events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(stream_id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Result<Response, Error> {
    let id = parse_stream_id(&stream_id)?;
    let point = match last_event_id(&headers, query.last_event_id.as_deref())? {
        Some(point) if point.id == id => point,
        Some(_) => {
            return Err(Error::InvalidRequest(
                "`Last-Event-ID` names a different stream than the path".to_owned(),
            ));
        }
        None => ResumePoint { id, from: 0 },
    };
    match attach(&state, caller, point).await? {
        Attached::Following(response) => Ok(response),
        Attached::AllSeen => Ok(StatusCode::NO_CONTENT.into_response()),
        Attached::Unknown => Err(unknown_stream(&stream_id)),
    }
}

/// `DELETE /api/chat/{stream_id}`: the Stop button.
async fn stop(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(stream_id): Path<String>,
) -> Result<StatusCode, Error> {
    let id = parse_stream_id(&stream_id)?;
    if let Some(generation) = state.generations.find(id, caller) {
        generation.stop();
        return Ok(StatusCode::NO_CONTENT);
    }
    // Running on another replica: ask it, through the shared store.
    match &state.cluster {
        Some(cluster) if cluster.stop(id, caller).await? => Ok(StatusCode::NO_CONTENT),
        _ => Err(unknown_stream(&stream_id)),
    }
}

/// `HEAD` where `GET` streams: axum would answer it by running the `GET`
/// handler, which starts a billed generation (or attaches to one) for a
/// client that reads nothing.
fn no_head(allow: &'static str) -> Response {
    let mut response = Error::MethodNotAllowed.into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

async fn start(
    state: &AppState,
    caller: Caller,
    grant: &Grant,
    request: ChatRequest,
) -> Result<Response, Error> {
    let (id, follower) = state
        .routes
        .open(&state.generations, &state.metrics, caller, grant, request)
        .await?;
    Ok(sse::response(id, follower, state.config.keepalive))
}

/// Where a client wants to read a generation from.
#[derive(Debug, Clone, Copy)]
struct ResumePoint {
    id: StreamId,
    /// The first sequence number it has not seen.
    from: u64,
}

/// What attaching to a generation found.
enum Attached {
    Following(Response),
    /// It is over and the client read all of it.
    AllSeen,
    /// No replica knows it for this caller.
    Unknown,
}

/// A follower of a generation from a resume point: here when this process
/// runs it, else through the shared store.
async fn attach(state: &AppState, caller: Caller, point: ResumePoint) -> Result<Attached, Error> {
    let ResumePoint { id, from } = point;
    let keepalive = state.config.keepalive;
    let attached = match state.generations.find(id, caller) {
        Some(generation) => match generation.position(from) {
            Position::Kept => {
                Attached::Following(sse::response(id, generation.follow(from), keepalive))
            }
            Position::AllSeen => Attached::AllSeen,
            Position::PastEnd { end } => return Err(past_the_end(from, end)),
        },
        None => match &state.cluster {
            Some(cluster) => match cluster.follow(id, caller, from).await? {
                Some(Elsewhere::Following(remote)) => {
                    Attached::Following(sse::response(id, remote, keepalive))
                }
                Some(Elsewhere::AllSeen) => Attached::AllSeen,
                None => Attached::Unknown,
            },
            None => Attached::Unknown,
        },
    };
    if matches!(attached, Attached::Following(_)) && from > 0 {
        state.metrics.resume();
    }
    Ok(attached)
}

fn past_the_end(from: u64, end: u64) -> Error {
    Error::InvalidRequest(format!(
        "`Last-Event-ID` names event {}, but the stream has only {end} events so far",
        from.saturating_sub(1)
    ))
}

/// `Last-Event-ID: <stream_id>:<seq>` from the header, else from the
/// query; absent or empty is `None`, anything else not in our form a 400.
fn last_event_id(headers: &HeaderMap, query: Option<&str>) -> Result<Option<ResumePoint>, Error> {
    let raw = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| invalid_last_event_id("not text"))?,
        ),
        None => query,
    };
    let Some(raw) = raw.map(str::trim).filter(|raw| !raw.is_empty()) else {
        return Ok(None);
    };
    let shown: String = raw.chars().take(80).collect();
    let (id, seq) = raw
        .rsplit_once(':')
        .ok_or_else(|| invalid_last_event_id(&shown))?;
    let id = StreamId::parse(id).ok_or_else(|| invalid_last_event_id(&shown))?;
    let seq: u64 = seq.parse().map_err(|_| invalid_last_event_id(&shown))?;
    let from = seq.checked_add(1).ok_or_else(|| {
        Error::InvalidRequest(format!(
            "`Last-Event-ID` names event {seq}, past the end of any stream"
        ))
    })?;
    Ok(Some(ResumePoint { id, from }))
}

fn invalid_last_event_id(shown: &str) -> Error {
    Error::InvalidRequest(format!(
        "`Last-Event-ID` must be `<stream_id>:<seq>` as tokenrelay sent it, got `{shown}`"
    ))
}

fn parse_stream_id(text: &str) -> Result<StreamId, Error> {
    StreamId::parse(text).ok_or_else(|| unknown_stream(text))
}

fn unknown_stream(text: &str) -> Error {
    let shown: String = text.chars().take(64).collect();
    Error::NotFound(format!(
        "no stream `{shown}`: it never existed or has expired"
    ))
}
