//! tokenrelay: a token-streaming proxy between chat front ends and any
//! OpenAI-compatible LLM API.
//!
//! A front end POSTs a chat; tokenrelay forwards it upstream with the
//! server-side key, parses the upstream's Server-Sent Events, and re-emits a
//! small normalized event protocol that ends in `data: [DONE]`. Generations
//! outlive their clients for a grace period so that a dropped connection can
//! resume without paying for the answer twice.
//!
//! # Layout
//! - [`access`]: client keys and rate limits.
//! - [`config`]: typed settings from flags, the environment and `.env`.
//! - [`server`]: the accept loop, its limits and graceful shutdown.
//! - [`routes`]: the HTTP surface and the state it shares.
//! - [`request`]: a client's chat request, validated, and the upstream body.
//! - [`upstream`]: the only module that speaks HTTP to the LLM API and parses its SSE.
//! - [`translate`]: pure mapping from upstream chunks to our events.
//! - [`cluster`]: event logs, stops and liveness shared through Redis.
//! - [`streams`]: generations, their event logs, followers, grace and TTL.
//! - [`relay`]: our events framed as the SSE response.
//! - [`openai`]: the OpenAI-compatible face, `/v1`, for existing SDKs.
//! - [`wire`]: the public event protocol.
//! - [`error`]: the one error type and its HTTP responses.
//! - [`metrics`]: Prometheus counters and histograms.
//! - [`demo`]: the built-in demo model.
//! - [`assets`]: the demo page.
//! - [`telemetry`]: logging set-up.

pub mod access;
pub mod assets;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod error;
pub mod metrics;
pub mod openai;
pub mod relay;
pub mod request;
pub mod routes;
pub mod server;
pub mod streams;
pub mod telemetry;
pub mod translate;
pub mod upstream;
pub mod wire;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;

pub use config::Config;
pub use routes::AppState;

use crate::access::Access;
use crate::cluster::Cluster;
use crate::metrics::Metrics;
use crate::streams::Streams;
use crate::upstream::Upstream;

impl AppState {
    /// Builds the shared state; starts the demo model when no upstream is set.
    pub async fn new(config: Config) -> std::io::Result<Self> {
        let (base_url, default_model) = match &config.upstream_base_url {
            Some(url) => (url.clone(), config.default_model.clone()),
            None => {
                let url = demo::spawn().await?;
                tracing::info!("no UPSTREAM_BASE_URL is set: serving the built-in demo model");
                let model = config
                    .default_model
                    .clone()
                    .unwrap_or_else(|| demo::MODEL.to_owned());
                (url, Some(model))
            }
        };
        let upstream = Upstream::new(&config, &base_url).map_err(std::io::Error::other)?;
        let metrics = Arc::new(Metrics::default());
        let cluster = match &config.redis_url {
            Some(url) => Some(
                Cluster::connect(url.expose(), config.resume.ttl)
                    .await
                    .map_err(std::io::Error::other)?,
            ),
            None => None,
        };
        let streams = Streams::new(
            config.resume,
            config.max_concurrent_streams,
            Arc::clone(&metrics),
            cluster.clone(),
        );
        if let Some(cluster) = &cluster {
            cluster
                .listen_for_stops(streams.clone())
                .await
                .map_err(std::io::Error::other)?;
            tracing::info!("event logs are shared through Redis");
        }
        Ok(Self {
            streams,
            metrics,
            access: Access::new(&config),
            upstream,
            default_model,
            config: Arc::new(config),
        })
    }
}

/// The whole application as a router.
pub fn app(state: AppState) -> Router {
    routes::router(state)
}

/// Serves until `shutdown` resolves, then stops accepting, gives open streams
/// `SHUTDOWN_GRACE_SECS` to finish, ends the rest with `shutting_down`, and
/// returns at most [`server::SHUTDOWN_DRAIN`] later whatever is still open.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let streams = state.streams.clone();
    let grace = state.config.shutdown_grace;
    let limits = server::Limits {
        max_connections: state.config.max_connections,
        request_timeout: state.config.request_timeout,
        max_body_bytes: state.config.max_body_bytes,
        shutdown_grace: grace,
    };
    server::run(listener, app(state), limits, shutdown, move || {
        tracing::info!(
            grace_secs = grace.as_secs_f64(),
            "shutting down: no new connections"
        );
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            streams.shut_down();
        });
    })
    .await
}
