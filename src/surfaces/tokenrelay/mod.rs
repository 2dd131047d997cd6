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

use super::attach::{self, Attached, Entries, attach};
use super::sse;
use crate::error::Error;
use crate::http::extract::{JsonBody, Path, Query};
use crate::policy::Grant;
use crate::request::ChatRequest;
use crate::state::AppState;
use crate::streams::{Caller, StreamId};

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
        return match attach(&state, caller, point.id, point.from).await? {
            Attached::Following(entries) => Ok(follow(&state, point.id, entries)),
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
        return match attach(&state, caller, point.id, point.from).await? {
            Attached::Following(entries) => Ok(follow(&state, point.id, entries)),
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
    match attach(&state, caller, point.id, point.from).await? {
        Attached::Following(entries) => Ok(follow(&state, id, entries)),
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
    if attach::stop(&state, caller, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(unknown_stream(&stream_id))
    }
}

/// `HEAD` where `GET` streams: axum would answer it by running the `GET`
/// handler, which starts a billed generation (or attaches to one) for a
/// client that reads nothing.
pub(super) fn no_head(allow: &'static str) -> Response {
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

fn follow(state: &AppState, id: StreamId, entries: Entries) -> Response {
    sse::response(id, entries, state.config.keepalive)
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
