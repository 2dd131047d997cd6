//! The routes operators and the demo page use: `/api/info`, `/healthz`,
//! `/readyz`, `/metrics`; the route each API request is counted under;
//! and the answers for paths and methods no route serves.

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::error::Error;
use crate::metrics::Route;
use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/info", get(info))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// What the demo page needs to know about this server.
async fn info(State(state): State<AppState>) -> Response {
    axum::Json(json!({
        "demo": state.config.uses_demo(),
        "default_model": state.routes.default_model(),
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
/// With several upstreams it is ready while any is usable, and the body
/// gives each one's state.
async fn readyz(State(state): State<AppState>) -> Result<Response, Error> {
    let states = state.routes.upstream_states().await;
    if !states.iter().any(|(_, upstream)| *upstream == "ok") {
        return Err(Error::NotReady(if state.routes.named() {
            let listed: Vec<String> = states
                .iter()
                .map(|(name, upstream)| format!("{name}: {upstream}"))
                .collect();
            format!("no upstream is usable ({})", listed.join(", "))
        } else {
            "the upstream has not answered recently".to_owned()
        }));
    }
    let mut body = match &state.cluster {
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
    if state.routes.named() {
        let upstreams: serde_json::Map<String, serde_json::Value> = states
            .into_iter()
            .map(|(name, upstream)| (name.to_owned(), json!(upstream)))
            .collect();
        body["upstreams"] = serde_json::Value::Object(upstreams);
    }
    Ok(axum::Json(body).into_response())
}

async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.metrics.render(state.generations.running());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// The route an API request is counted under.
pub(super) fn route(request: &Request) -> Route {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(Route::other, Route::matched)
}

pub(super) async fn not_found() -> Error {
    Error::NotFound("no such route".to_owned())
}

pub(super) async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed
}
