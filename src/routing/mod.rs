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

mod plan;

use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use tokio::time::Instant;

use self::plan::{Candidate, Health};
use crate::config::{Cooldown, ModelRoute, Strategy, Target, Topology};
use crate::error::Error;
use crate::event::{ErrorCode, StreamEvent};
use crate::lock::lock;
use crate::metrics::{Metrics, RefusalKind};
use crate::policy::{Grant, Policy};
use crate::providers::Provider;
use crate::providers::uniform;
use crate::request::ChatRequest;
use crate::streams::{Follower, Generations, Owner, Source, StreamId};

/// Model names and the upstreams behind them.
#[derive(Debug)]
pub(crate) struct Routes {
    /// By name, in the configured order.
    providers: Vec<(String, Provider)>,
    /// `None`: the one-upstream shorthand, where every name goes to it as is.
    models: Option<Vec<ModelRoute>>,
    /// The model of a request that names none.
    default_model: Option<String>,
    /// How each provider has fared, by its index.
    health: Vec<Mutex<Health>>,
    cooldown: Cooldown,
    /// What callers may ask for.
    policy: Policy,
}

impl Routes {
    /// One upstream for every model name.
    pub(crate) fn single(provider: Provider, default_model: Option<String>) -> Self {
        Self {
            providers: vec![("default".to_owned(), provider)],
            models: None,
            default_model,
            health: vec![Mutex::default()],
            // One upstream is never skipped: there is nowhere else to go.
            cooldown: Cooldown {
                after: u32::MAX,
                length: Duration::ZERO,
            },
            policy: Policy::default(),
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
            health: providers.iter().map(|_| Mutex::default()).collect(),
            providers,
            models: Some(topology.models.clone()),
            default_model: topology.default_model.clone().or(default_model),
            cooldown: topology.cooldown,
            policy: Policy::default(),
        }
    }

    /// The same routes, with requests held to `policy`.
    pub(crate) fn with_policy(self, policy: Policy) -> Self {
        Self { policy, ..self }
    }

    pub(crate) fn default_model(&self) -> Option<&str> {
        self.default_model.as_deref()
    }

    /// The upstream models that may serve `model`, in the order to try
    /// them, and how long each but the last may take to its first content.
    fn targets(&self, model: &str) -> Result<(Vec<Attempt<'_>>, Option<Duration>), Error> {
        let Some(models) = &self.models else {
            let attempts = self
                .providers
                .iter()
                .enumerate()
                .map(|(index, (_, provider))| Attempt {
                    index,
                    provider,
                    upstream: None,
                    model: model.to_owned(),
                })
                .collect();
            return Ok((attempts, None));
        };
        let (targets, strategy, ttft): (Vec<Target>, _, _) =
            match models.iter().find(|route| route.name == model) {
                Some(route) => (route.targets.clone(), route.strategy, route.ttft_timeout),
                None => model
                    .split_once('/')
                    .filter(|(upstream, rest)| {
                        !rest.is_empty() && self.providers.iter().any(|(name, _)| name == upstream)
                    })
                    .map(|(upstream, rest)| {
                        let target = Target {
                            upstream: upstream.to_owned(),
                            model: rest.to_owned(),
                            weight: 1,
                        };
                        (vec![target], Strategy::Fallback, None)
                    })
                    .ok_or_else(|| self.unknown_model(model))?,
            };
        let attempts: Vec<(Attempt<'_>, u32)> = targets
            .into_iter()
            .filter_map(|target| {
                let index = self
                    .providers
                    .iter()
                    .position(|(name, _)| *name == target.upstream)?;
                let (name, provider) = &self.providers[index];
                let attempt = Attempt {
                    index,
                    provider,
                    upstream: Some(name.as_str()),
                    model: target.model,
                };
                Some((attempt, target.weight))
            })
            .collect();
        let now = Instant::now();
        let candidates: Vec<Candidate> = attempts
            .iter()
            .map(|(attempt, weight)| {
                let health = lock(&self.health[attempt.index]);
                Candidate {
                    weight: *weight,
                    cooling: health.cooling(now),
                    ttft: health.ttft(),
                }
            })
            .collect();
        let order = plan::order(strategy, &candidates, &mut uniform);
        for &index in order.iter().skip(1) {
            lock(&self.health[attempts[index].0.index]).passed_over();
        }
        let ordered = order
            .into_iter()
            .map(|index| attempts[index].0.clone())
            .collect();
        Ok((ordered, ttft))
    }

    fn unknown_model(&self, model: &str) -> Error {
        let shown: String = model.chars().take(100).collect();
        let models = self.models.iter().flatten().map(|route| route.name.clone());
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
        owner: impl Into<Owner>,
        grant: &Grant,
        mut request: ChatRequest,
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
        self.policy.admit(grant, &model, &mut request)?;
        let (attempts, ttft) = self.targets(&model)?;
        self.policy.afford(grant).await?;
        let prompt_chars = self.policy.prompt_chars(&request);
        // Reserve before calling an upstream, so a refused request costs nothing.
        let ticket = generations.reserve(owner.into())?;
        let mut last = None;
        let mut request = Some(request);
        for (attempt, target) in attempts.iter().enumerate() {
            let is_last = attempt + 1 == attempts.len();
            // Copied only for an attempt that may be followed by another.
            let Some(this) = (if is_last {
                request.take()
            } else {
                request.clone()
            }) else {
                break;
            };
            let sent = Instant::now();
            let mut opened: Result<Pin<Box<dyn Source>>, Error> =
                target.provider.open(this, &target.model, is_last).await;
            // With somewhere else to go, the attempt is committed only at its
            // first content, so that a failure before then can still move on.
            if !is_last {
                if let Ok(source) = opened {
                    opened = first_content(source, ttft).await;
                }
            }
            match opened {
                Ok(source) => {
                    lock(&self.health[target.index]).answered(sent.elapsed());
                    let source = self.policy.meter(grant, prompt_chars, source);
                    return ticket.start(&target.model, target.upstream, source);
                }
                Err(error) => {
                    lock(&self.health[target.index]).failed(Instant::now(), self.cooldown);
                    // After its 200 an attempt fails like a stream does, and
                    // is counted as the in-stream failure it is.
                    match &error {
                        Error::Interrupted { code, .. } => {
                            metrics.upstream_failure(target.upstream, *code);
                        }
                        error => metrics.upstream_refusal(target.upstream, RefusalKind::of(error)),
                    }
                    if is_last || !another_may_answer(&error) {
                        return Err(error);
                    }
                    if let (Some(from), Some(to)) = (
                        target.upstream,
                        attempts.get(attempt + 1).and_then(|next| next.upstream),
                    ) {
                        metrics.failover(from, to, error.code());
                    }
                    tracing::warn!(
                        upstream = target.upstream,
                        code = error.code(),
                        "an upstream failed before its first token; trying the next target"
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
            .map(|route| &route.name)
            .map(|name| json!({"id": name, "object": "model", "created": 0, "owned_by": "tokenrelay"}))
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

    /// Each upstream by name with its state: `ok`, `cooling` (skipped after
    /// failing in a row) or `unreachable`; nothing for the shorthand's one.
    pub(crate) async fn upstream_states(&self) -> Vec<(&str, &'static str)> {
        let now = Instant::now();
        let mut states = Vec::with_capacity(self.providers.len());
        for (index, (name, provider)) in self.providers.iter().enumerate() {
            let cooling = lock(&self.health[index]).cooling(now);
            let state = if cooling {
                "cooling"
            } else if provider.ready().await {
                "ok"
            } else {
                "unreachable"
            };
            states.push((name.as_str(), state));
        }
        states
    }

    /// Whether upstreams are configured by name.
    pub(crate) fn named(&self) -> bool {
        self.models.is_some()
    }
}

/// One upstream model to try.
#[derive(Clone)]
struct Attempt<'a> {
    /// The provider's place in `Routes::providers`.
    index: usize,
    provider: &'a Provider,
    /// Its name, when upstreams are configured by name.
    upstream: Option<&'a str>,
    model: String,
}

/// `source` once its first content (text, reasoning, a tool call) or its
/// finish has arrived, with what came before it held for the generation;
/// an error before then, the end of the stream, or no content within
/// `ttft` refuses it, and dropping it drops the upstream request.
async fn first_content(
    mut source: Pin<Box<dyn Source>>,
    ttft: Option<Duration>,
) -> Result<Pin<Box<dyn Source>>, Error> {
    let mut held = Vec::new();
    let deadline = ttft.map(|ttft| (ttft, Instant::now() + ttft));
    loop {
        let batch = std::future::poll_fn(|cx| source.as_mut().poll_batch(cx, &mut held));
        let more = match deadline {
            Some((ttft, at)) => {
                tokio::time::timeout_at(at, batch)
                    .await
                    .map_err(|_| Error::Interrupted {
                        code: ErrorCode::UpstreamTimeout,
                        message: format!(
                            "no first token within ttft_timeout_secs ({} s)",
                            ttft.as_secs_f64()
                        ),
                    })?
            }
            None => batch.await,
        };
        if held
            .iter()
            .any(|event| event.is_text() || matches!(event, StreamEvent::Finish { .. }))
        {
            return Ok(Box::pin(Held { held, source }));
        }
        if let Some(StreamEvent::Error { code, message }) = held.last() {
            return Err(Error::Interrupted {
                code: *code,
                message: message.clone(),
            });
        }
        if more.is_none() {
            return Err(Error::Interrupted {
                code: ErrorCode::UpstreamDisconnected,
                message: "the upstream closed the stream before its first token".to_owned(),
            });
        }
    }
}

/// A source whose first events were already read.
struct Held {
    held: Vec<StreamEvent>,
    source: Pin<Box<dyn Source>>,
}

impl Source for Held {
    fn poll_batch(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut Vec<StreamEvent>,
    ) -> Poll<Option<()>> {
        if self.held.is_empty() {
            return self.source.as_mut().poll_batch(cx, out);
        }
        out.append(&mut self.held);
        Poll::Ready(Some(()))
    }

    fn started(&self) -> Instant {
        self.source.started()
    }
}

/// Whether a refusal is this upstream's alone, so the next target may well
/// answer. A 400 is the request's fault and would be refused everywhere.
fn another_may_answer(error: &Error) -> bool {
    match error {
        Error::Upstream { status, .. } => {
            matches!(status, 401 | 403 | 404 | 408 | 409 | 429) || *status >= 500
        }
        Error::BadGateway(_)
        | Error::UpstreamTimeout(_)
        | Error::Interrupted { .. }
        | Error::Overloaded(_) => true,
        _ => false,
    }
}
