//! The HTTP side of tokenrelay: the router, the order of its layers, and
//! what every route shares (`docs/PROTOCOL.md` §1).
//!
//! The surfaces bring their own routes; this module puts them behind the
//! access checks and the request counter, adds the operations routes and
//! the demo page, and answers everything else. Errors outside any surface
//! are answered in our own shape (`docs/PROTOCOL.md` §4).

pub(crate) mod access;
mod assets;
pub(crate) mod extract;
mod ops;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::{Router, middleware};
use tower_http::cors::{AllowOrigin, CorsLayer};

use self::access::Access;
use crate::state::AppState;

/// The header that names a response's stream, so that a client can stop or
/// resume it.
pub(crate) const STREAM_ID_HEADER: HeaderName = HeaderName::from_static("x-stream-id");

/// The whole application: the surfaces' routes (`surfaces`) behind the
/// access checks and the counter, beside the operations routes and the page.
pub(crate) fn router(state: AppState, surfaces: Router<AppState>) -> Router {
    let max_body = state.config.max_body_bytes;
    // Everything in `api` is behind the key check and the rate limit; the
    // page, its files and the health checks stay open.
    let api = surfaces
        .route_layer(middleware::from_fn_with_state(
            Access::new(&state.config),
            access::check,
        ))
        // Outside the access check, so refusals are counted too.
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state.metrics),
            ops::count,
        ));
    let router = Router::new()
        .merge(api)
        .merge(ops::router())
        .merge(assets::router())
        // axum still adds the `Allow` header to this answer.
        .method_not_allowed_fallback(ops::method_not_allowed)
        .fallback(ops::not_found)
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
            .expose_headers([STREAM_ID_HEADER])
            .max_age(Duration::from_secs(600))
    })
}
