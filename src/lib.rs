//! tokenrelay: a token-streaming proxy between chat front ends and LLM APIs.
//!
//! A front end POSTs a chat; tokenrelay forwards it upstream with the
//! server-side key, parses the upstream's Server-Sent Events, and re-emits a
//! small normalized event protocol that ends in `data: [DONE]`
//! (`docs/PROTOCOL.md`). Generations outlive their clients for a grace
//! period so that a dropped connection can resume without paying for the
//! answer twice.
//!
//! # Layout
//! Requests come in through a surface, are routed to an upstream provider,
//! and become a generation in `streams`, which every surface reads back in
//! its own framing (README, "Architecture"). Each layer imports only the
//! ones below it:
//! - `http`: the router and its layer order; access (keys, CORS, rate
//!   limits); the operations routes; the extractors; the demo page's files.
//! - `surfaces`: one folder per way clients talk to us (`tokenrelay` for
//!   `/api/chat`, `openai` for `/v1`), each only encoding generations.
//! - `routing`: a model name to the upstream that serves it.
//! - `providers`: one folder per upstream dialect behind one trait, and the
//!   transport (the only code that knows reqwest) with its SSE framer.
//! - `streams`: generations, their event logs and followers; the Redis mirror.
//! - `event`: the normalized events providers produce and surfaces consume.
//! - `request`: a client's chat request, validated.
//! - `policy`: what a caller may ask for (models, lengths, choices, prompt size).
//! - `server`: the accept loop, its limits and shutdown; HTTPS (`server::tls`).
//! - `state`, [`config`], `error`, `metrics`, `demo`, [`telemetry`].

#![warn(unreachable_pub)]

pub mod config;
pub mod telemetry;

mod demo;
mod error;
mod event;
mod http;
mod lock;
mod metrics;
mod policy;
mod providers;
mod request;
mod routing;
mod server;
mod state;
mod streams;
mod surfaces;
mod woken;

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;

pub use config::Config;
pub use state::AppState;

/// The whole application as a router.
pub fn app(state: AppState) -> Router {
    http::router(state, surfaces::router())
}

/// A listener on `addr` for [`serve`], with a listen backlog sized for a
/// storm of connections rather than tokio's default.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    server::bind(addr)
}

/// Serves (over HTTPS when `TLS_CERT_FILE` is set) until `shutdown`
/// resolves, then stops accepting, gives open streams `SHUTDOWN_GRACE_SECS`
/// to finish, ends the rest with `shutting_down`, and closes whatever is
/// still open shortly after.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let generations = state.generations.clone();
    let grace = state.config.shutdown_grace;
    let limits = server::Limits {
        max_connections: state.config.max_connections,
        request_timeout: state.config.request_timeout,
        max_body_bytes: state.config.max_body_bytes,
        shutdown_grace: grace,
        http2_max_streams: state.config.http2.max_concurrent_streams,
        http2_ping_interval: state.config.http2.ping_interval,
        http2_ping_timeout: state.config.http2.ping_timeout,
    };
    let tls = state.config.tls.as_ref().map(config::TlsFiles::server);
    server::run(listener, app(state), limits, tls, shutdown, move || {
        tracing::info!(
            grace_secs = grace.as_secs_f64(),
            "shutting down: no new connections"
        );
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            generations.shut_down();
        });
    })
    .await
}
