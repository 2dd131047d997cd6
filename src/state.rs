//! What every handler shares, built once at start from the configuration:
//! the upstreams, the generations, the shared store and the counters.

use std::sync::Arc;

use crate::config::Config;
use crate::demo;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::providers::Provider;
use crate::routing::Routes;
use crate::streams::{Cluster, Generations, Mirror};

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub(crate) config: Arc<Config>,
    pub(crate) routes: Arc<Routes>,
    pub(crate) generations: Generations,
    /// Set with `REDIS_URL`: streams of other replicas are found through it.
    pub(crate) cluster: Option<Cluster>,
    pub(crate) metrics: Arc<Metrics>,
}

impl AppState {
    /// Builds the shared state; starts the demo model when no upstream is set.
    pub async fn new(config: Config) -> std::io::Result<Self> {
        let routes = match &config.topology {
            Some(topology) => {
                let mut providers = Vec::new();
                for upstream in &topology.upstreams {
                    let provider = Provider::new(upstream).map_err(std::io::Error::other)?;
                    providers.push((upstream.name.clone(), provider));
                }
                Routes::configured(topology, providers, config.default_model.clone())
            }
            None => {
                let (base_url, default_model) = match &config.upstream_base_url {
                    Some(url) => (url.clone(), config.default_model.clone()),
                    None => {
                        let url = demo::spawn().await?;
                        tracing::info!(
                            "no UPSTREAM_BASE_URL is set: serving the built-in demo model"
                        );
                        let model = config
                            .default_model
                            .clone()
                            .unwrap_or_else(|| demo::MODEL.to_owned());
                        (url, Some(model))
                    }
                };
                let provider = Provider::new(&config.upstream_settings(&base_url))
                    .map_err(std::io::Error::other)?;
                Routes::single(provider, default_model)
            }
        };
        let metrics = Arc::new(Metrics::default());
        let cluster = match &config.redis {
            Some(servers) => Some(
                Cluster::connect(servers, config.resume.ttl)
                    .await
                    .map_err(std::io::Error::other)?,
            ),
            None => None,
        };
        let generations = Generations::new(
            config.resume,
            config.max_concurrent_streams,
            Arc::clone(&metrics),
            cluster
                .clone()
                .map(|cluster| Arc::new(cluster) as Arc<dyn Mirror>),
        );
        let policy = Policy::new(
            config.limits.clone(),
            config.tokens_per_minute,
            cluster.clone(),
        );
        if let Some(cluster) = &cluster {
            cluster
                .listen_for_stops(generations.clone())
                .await
                .map_err(std::io::Error::other)?;
            tracing::info!("event logs are shared through Redis");
        }
        Ok(Self {
            routes: Arc::new(routes.with_policy(policy)),
            generations,
            cluster,
            metrics,
            config: Arc::new(config),
        })
    }
}
