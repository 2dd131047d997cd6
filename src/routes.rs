//! The HTTP surface of SPEC §1: routes, extractors, and the order of layers.
//!
//! Handlers stay thin: they turn requests into calls on `upstream` and
//! `streams`, and hand the result to `relay`. Every failure is an [`Error`],
//! which becomes a response in `error` alone.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, middleware};
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::access::{self, Access, Caller};
use crate::assets;
use crate::cluster::Elsewhere;
use crate::config::Config;
use crate::error::Error;
use crate::metrics::{Metrics, Outcome};
use crate::openai;
use crate::relay;
use crate::request::ChatRequest;
use crate::streams::{Follower, Position, StreamId, Streams};
use crate::upstream::Upstream;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub upstream: Upstream,
    pub streams: Streams,
    pub access: Access,
    pub metrics: Arc<Metrics>,
    pub default_model: Option<String>,
}

pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    // Everything in `api` is behind the key check and the rate limit; the
    // page, its files and the health checks stay open.
    let api = Router::new()
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
        .merge(openai::router())
        .route_layer(middleware::from_fn_with_state(
            state.access.clone(),
            access::check,
        ))
        // Outside the access check, so refusals are counted too.
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state.metrics),
            count,
        ));
    let router = Router::new()
        .merge(api)
        .route("/api/info", get(info))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(assets::router())
        // axum still adds the `Allow` header to this answer.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        // Bodies are read through `JsonBody`, which turns this limit into our 413.
        .layer(DefaultBodyLimit::max(max_body));
    // Outermost, so that preflight requests (which carry no key) are answered.
    match cors(&state.config.cors_allowed_origins) {
        Some(cors) => router.layer(cors).with_state(state),
        None => router.with_state(state),
    }
}

/// CORS for the configured origins; other origins get no CORS headers at all.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    (!origins.is_empty()).then(|| {
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([relay::STREAM_ID_HEADER])
            .max_age(Duration::from_secs(600))
    })
}

/// `POST /api/chat`: resume if the client says where it left off, else start.
/// A `Last-Event-ID` that no replica knows is a 404: starting a new,
/// billed generation instead would answer a question nobody asked again.
async fn chat(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
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
    start(&state, caller, ChatRequest::from_json(&body)?).await
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
    if let Some(generation) = state.streams.find(id, caller) {
        generation.stop();
        return Ok(StatusCode::NO_CONTENT);
    }
    // Running on another replica: ask it, through the shared store.
    match state.streams.cluster() {
        Some(cluster) if cluster.stop(id, caller).await? => Ok(StatusCode::NO_CONTENT),
        _ => Err(unknown_stream(&stream_id)),
    }
}

/// What the demo page needs to know about this server.
async fn info(State(state): State<AppState>) -> Response {
    axum::Json(json!({
        "demo": state.config.uses_demo(),
        "default_model": state.default_model,
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// Ready when the upstream answered recently (or answers a probe now).
/// Without Redis, streams started here still work, so a Redis that does
/// not answer makes the replica degraded, not unready.
async fn readyz(State(state): State<AppState>) -> Result<Response, Error> {
    if !state.upstream.ready().await {
        return Err(Error::NotReady(
            "the upstream has not answered recently".to_owned(),
        ));
    }
    let body = match state.streams.cluster() {
        None => json!({"status": "ready"}),
        Some(cluster) => match cluster.ping().await {
            Ok(()) => json!({"status": "ready", "redis": "ok"}),
            Err(problem) => json!({
                "status": "degraded",
                "redis": "unreachable",
                "message": format!(
                    "Redis does not answer ({problem}): streams of other replicas cannot be resumed or stopped here"
                ),
            }),
        },
    };
    Ok(axum::Json(body).into_response())
}

async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.metrics.render(state.streams.running());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Counts every API request by route and outcome.
async fn count(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: middleware::Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status();
    let outcome = match status.as_u16() {
        ..400 => Outcome::Ok,
        502 | 504 => Outcome::UpstreamError,
        400..500 => Outcome::ClientError,
        _ => Outcome::ServerError,
    };
    metrics.request(&route, outcome);
    response
}

async fn not_found() -> Error {
    Error::NotFound("no such route".to_owned())
}

async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed
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

async fn start(state: &AppState, caller: Caller, request: ChatRequest) -> Result<Response, Error> {
    let (id, follower) = open(state, caller, request).await?;
    Ok(relay::response(id, follower, state.config.keepalive))
}

/// Starts a generation once the upstream has answered 200; `/api/chat` and
/// `/v1` differ only in how they frame what the follower reads.
pub(crate) async fn open(
    state: &AppState,
    caller: Caller,
    request: ChatRequest,
) -> Result<(StreamId, Follower), Error> {
    let model = request
        .model()
        .or(state.default_model.as_deref())
        .ok_or_else(|| {
            Error::InvalidRequest(
                "`model` is required: the request names none and DEFAULT_MODEL is not set"
                    .to_owned(),
            )
        })?
        .to_owned();
    let body = request.upstream_body(&model)?;
    // Reserve before calling the upstream, so a refused request costs nothing.
    let ticket = state.streams.reserve(caller)?;
    let upstream = state.upstream.open(body).await.inspect_err(|error| {
        state.metrics.upstream_refusal(match error {
            Error::Upstream { .. } => "status",
            Error::UpstreamTimeout(_) => "headers_timeout",
            _ => "connect",
        });
    })?;
    ticket.start(&model, upstream)
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
    let attached = match state.streams.find(id, caller) {
        Some(generation) => match generation.position(from) {
            Position::Kept => {
                Attached::Following(relay::response(id, generation.follow(from), keepalive))
            }
            Position::AllSeen => Attached::AllSeen,
            Position::PastEnd { end } => return Err(past_the_end(from, end)),
        },
        None => match state.streams.cluster() {
            Some(cluster) => match cluster.follow(id, caller, from).await? {
                Some(Elsewhere::Following(remote)) => {
                    Attached::Following(relay::response(id, remote, keepalive))
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

/// A request body that must be JSON, read within `MAX_BODY_BYTES`. Unlike
/// axum's `Json`, every refusal has our error shape.
pub(crate) struct JsonBody(pub(crate) Bytes);

impl FromRequest<AppState> for JsonBody {
    type Rejection = Error;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Error> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .unwrap_or_default();
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(Error::UnsupportedMediaType(format!(
                "expected `Content-Type: application/json`, got `{}`",
                if content_type.is_empty() {
                    "none"
                } else {
                    &content_type
                }
            )));
        }
        // A client trickling its body must not hold a connection forever.
        let limit = state.config.request_timeout;
        match tokio::time::timeout(limit, Bytes::from_request(request, state)).await {
            Ok(Ok(body)) => Ok(Self(body)),
            Ok(Err(rejection)) => Err(body_error(&rejection, state.config.max_body_bytes)),
            Err(_) => Err(Error::RequestTimeout { limit }),
        }
    }
}

fn body_error(rejection: &BytesRejection, limit: usize) -> Error {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::PayloadTooLarge { limit }
    } else {
        Error::InvalidRequest(format!(
            "could not read the request body: {}",
            rejection.body_text()
        ))
    }
}

/// axum's `Query`, refusing in our error shape (a duplicate or mistyped
/// parameter names itself in the message).
pub(crate) struct Query<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Error> {
        axum::extract::Query::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|rejection| Error::InvalidRequest(rejection.body_text()))
    }
}

/// axum's `Path`, refusing in our error shape.
pub(crate) struct Path<T>(pub(crate) T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Error> {
        axum::extract::Path::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|rejection| Error::InvalidRequest(rejection.body_text()))
    }
}
