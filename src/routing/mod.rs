//! Which upstream serves a request: a model name to the providers and
//! models that answer it, tried in order, and the start of a generation at
//! the first that accepts it (README, "Several upstreams").
//!
//! With the `UPSTREAM_*` shorthand one upstream serves every model name as
//! the client wrote it. With `TOKENRELAY_CONFIG` a request names a
//! `[models]` entry or `UPSTREAM/MODEL`; a refusal that another upstream may
//! not share (an unreachable host, a timeout, 401/403/404/408/409/429/5xx, an
//! answer that is not an event stream) moves on to the next target before
//! anything has reached the client.

use std::pin::Pin;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::config::{Target, Topology};
use crate::error::Error;
use crate::metrics::{Metrics, RefusalKind};
use crate::providers::Provider;
use crate::request::ChatRequest;
use crate::streams::{Caller, Follower, Generations, Source, StreamId};

/// Model names and the upstreams behind them.
#[derive(Debug)]
pub(crate) struct Routes {
    /// By name, in the configured order.
    providers: Vec<(String, Provider)>,
    /// `None`: the one-upstream shorthand, where every name goes to it as is.
    models: Option<Vec<(String, Vec<Target>)>>,
    /// The model of a request that names none.
    default_model: Option<String>,
}

impl Routes {
    /// One upstream for every model name.
    pub(crate) fn single(provider: Provider, default_model: Option<String>) -> Self {
        Self {
            providers: vec![("default".to_owned(), provider)],
            models: None,
            default_model,
        }
    }

    /// The upstreams and model names of `topology`, each upstream with its
    /// provider.
    pub(crate) fn configured(
        topology: &Topology,
        providers: Vec<(String, Provider)>,
        default_model: Option<String>,
    ) -> Self {
        Self {
            providers,
            models: Some(
                topology
                    .models
                    .iter()
                    .map(|route| (route.name.clone(), route.targets.clone()))
                    .collect(),
            ),
            default_model: topology.default_model.clone().or(default_model),
        }
    }

    pub(crate) fn default_model(&self) -> Option<&str> {
        self.default_model.as_deref()
    }

    /// The upstream models that may serve `model`, in the order to try them.
    fn targets(&self, model: &str) -> Result<Vec<(&Provider, String)>, Error> {
        let Some(models) = &self.models else {
            return Ok(self
                .providers
                .iter()
                .map(|(_, provider)| (provider, model.to_owned()))
                .collect());
        };
        let targets: Vec<Target> = match models.iter().find(|(name, _)| name == model) {
            Some((_, targets)) => targets.clone(),
            None => model
                .split_once('/')
                .filter(|(upstream, rest)| {
                    !rest.is_empty() && self.providers.iter().any(|(name, _)| name == upstream)
                })
                .map(|(upstream, rest)| {
                    vec![Target {
                        upstream: upstream.to_owned(),
                        model: rest.to_owned(),
                    }]
                })
                .ok_or_else(|| self.unknown_model(model))?,
        };
        Ok(targets
            .into_iter()
            .filter_map(|target| {
                self.providers
                    .iter()
                    .find(|(name, _)| *name == target.upstream)
                    .map(|(_, provider)| (provider, target.model))
            })
            .collect())
    }

    fn unknown_model(&self, model: &str) -> Error {
        let shown: String = model.chars().take(100).collect();
        let models = self.models.iter().flatten().map(|(name, _)| name.clone());
        let upstreams = self
            .providers
            .iter()
            .map(|(name, _)| format!("{name}/MODEL"));
        let known: Vec<String> = models.chain(upstreams).collect();
        Error::InvalidRequest(format!(
            "`model` `{shown}` is not served here; ask for one of: {}",
            known.join(", ")
        ))
    }

    /// Starts a generation for `request` once an upstream has answered 200;
    /// every surface starts its generations here and differs only in how it
    /// frames what the follower reads.
    pub(crate) async fn open(
        &self,
        generations: &Generations,
        metrics: &Metrics,
        caller: Caller,
        request: ChatRequest,
    ) -> Result<(StreamId, Follower), Error> {
        let model = request
            .model()
            .or(self.default_model.as_deref())
            .ok_or_else(|| {
                Error::InvalidRequest(
                    "`model` is required: the request names none and DEFAULT_MODEL is not set"
                        .to_owned(),
                )
            })?
            .to_owned();
        let targets = self.targets(&model)?;
        // Reserve before calling an upstream, so a refused request costs nothing.
        let ticket = generations.reserve(caller)?;
        let mut last = None;
        for (attempt, (provider, upstream_model)) in targets.iter().enumerate() {
            let is_last = attempt + 1 == targets.len();
            let opened: Result<Pin<Box<dyn Source>>, Error> =
                provider.open(request.clone(), upstream_model).await;
            match opened {
                Ok(source) => return ticket.start(upstream_model, source),
                Err(error) => {
                    metrics.upstream_refusal(RefusalKind::of(&error));
                    if is_last || !another_may_answer(&error) {
                        return Err(error);
                    }
                    tracing::warn!(
                        attempt,
                        code = error.code(),
                        "an upstream refused; trying the next target"
                    );
                    last = Some(error);
                }
            }
        }
        Err(last.unwrap_or_else(|| self.unknown_model(&model)))
    }

    /// The model names clients may ask for, and each upstream's own list.
    pub(crate) async fn models(&self) -> Result<Bytes, Error> {
        let Some(models) = &self.models else {
            return match self.providers.first() {
                Some((_, provider)) => provider.models().await,
                None => Err(self.unknown_model("")),
            };
        };
        let mut data: Vec<Value> = models
            .iter()
            .map(|(name, _)| json!({"id": name, "object": "model", "created": 0, "owned_by": "tokenrelay"}))
            .collect();
        for (name, provider) in &self.providers {
            // An upstream that cannot list its models still serves them.
            let Ok(list) = provider.models().await else {
                continue;
            };
            let listed: Value = serde_json::from_slice(&list).unwrap_or(Value::Null);
            for model in listed["data"].as_array().into_iter().flatten() {
                if let Some(id) = model["id"].as_str() {
                    data.push(json!({"id": format!("{name}/{id}"), "object": "model", "created": model["created"].as_u64().unwrap_or(0), "owned_by": name}));
                }
            }
        }
        serde_json::to_vec(&json!({"object": "list", "data": data}))
            .map(Bytes::from)
            .map_err(|error| Error::Internal(format!("could not encode the model list: {error}")))
    }

    /// Whether any upstream can take requests.
    pub(crate) async fn ready(&self) -> bool {
        for (_, provider) in &self.providers {
            if provider.ready().await {
                return true;
            }
        }
        false
    }
}

/// Whether a refusal is this upstream's alone, so the next target may well
/// answer. A 400 is the request's fault and would be refused everywhere.
fn another_may_answer(error: &Error) -> bool {
    match error {
        Error::Upstream { status, .. } => {
            matches!(status, 401 | 403 | 404 | 408 | 409 | 429) || *status >= 500
        }
        Error::BadGateway(_) | Error::UpstreamTimeout(_) => true,
        _ => false,
    }
}
