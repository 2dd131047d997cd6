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

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::{Router, middleware};
use tower_http::cors::{AllowOrigin, CorsLayer};

use self::access::Access;
use crate::metrics::{Metrics, Outcome};
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
    let api = surfaces.route_layer(middleware::from_fn_with_state(
        Gate {
            access: Access::new(&state.config),
            metrics: Arc::clone(&state.metrics),
        },
        gate,
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
    let origins: Arc<[HeaderValue]> = state
        .config
        .cors_allowed_origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    if origins.is_empty() {
        return router.with_state(state);
    }
    router
        .layer(cors(&origins))
        .layer(middleware::from_fn_with_state(
            origins,
            cors_only_for_allowed,
        ))
        .with_state(state)
}

/// What every API request passes: the request counter around the access
/// check.
#[derive(Clone)]
struct Gate {
    access: Access,
    metrics: Arc<Metrics>,
}

/// One layer, not one each: a `from_fn` layer clones and boxes the service
/// below it for every request, and merging the two took about 20 µs off a
/// request's way to its first token (README, Performance).
async fn gate(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    let route = ops::route(&request);
    // Outside the access check, so refusals are counted too.
    let response = access::check(&gate.access, request, next).await;
    gate.metrics
        .request(route, Outcome::of(response.status().as_u16()));
    response
}

/// CORS for the configured origins.
fn cors(origins: &[HeaderValue]) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([STREAM_ID_HEADER])
        .max_age(Duration::from_secs(600))
}

/// Takes every CORS header off the answer to an origin that is not allowed:
/// the CORS layer leaves `Access-Control-Expose-Headers` (and, on a
/// preflight, the allowed methods and headers) there, which tells a page
/// that may not read our answers what it would be allowed to do.
async fn cors_only_for_allowed(
    State(origins): State<Arc<[HeaderValue]>>,
    request: Request,
    next: Next,
) -> Response {
    let allowed = request
        .headers()
        .get(header::ORIGIN)
        .is_none_or(|origin| origins.contains(origin));
    let mut response = next.run(request).await;
    if !allowed {
        let names: Vec<HeaderName> = response
            .headers()
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in names {
            response.headers_mut().remove(name);
        }
    }
    response
}
