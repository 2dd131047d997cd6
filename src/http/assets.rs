//! The demo chat page from `static/`, compiled into the binary so that the
//! one file a user runs is the whole product, wherever it is started from.
//! The libraries under `static/vendor/` (see `scripts/vendor.sh`) are listed
//! here too: a file missing from this list is a 404 in the page.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Path, content type, contents.
const FILES: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../../static/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../static/app.js"),
    ),
    (
        "/sse.js",
        "text/javascript; charset=utf-8",
        include_str!("../../static/sse.js"),
    ),
    (
        "/generation.js",
        "text/javascript; charset=utf-8",
        include_str!("../../static/generation.js"),
    ),
    (
        "/markdown.js",
        "text/javascript; charset=utf-8",
        include_str!("../../static/markdown.js"),
    ),
    (
        "/store.js",
        "text/javascript; charset=utf-8",
        include_str!("../../static/store.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("../../static/style.css"),
    ),
    (
        "/vendor/marked.esm.js",
        "text/javascript; charset=utf-8",
        include_str!("../../static/vendor/marked.esm.js"),
    ),
    (
        "/vendor/purify.es.mjs",
        "text/javascript; charset=utf-8",
        include_str!("../../static/vendor/purify.es.mjs"),
    ),
];

pub(super) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    FILES
        .iter()
        .fold(Router::new(), |router, &(path, content_type, body)| {
            router.route(path, get(move || async move { asset(content_type, body) }))
        })
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
