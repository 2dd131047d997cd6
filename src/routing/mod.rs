//! Which upstream serves a request: a model name to the provider and model
//! that answer it, and the start of a generation there.
//!
//! Today one upstream serves every model (`UPSTREAM_BASE_URL`, or the demo
//! model); this is the seam where several upstreams, their order and their
//! health will be chosen between.

use std::pin::Pin;

use bytes::Bytes;

use crate::error::Error;
use crate::metrics::{Metrics, RefusalKind};
use crate::providers::Provider;
use crate::request::ChatRequest;
use crate::streams::{Caller, Follower, Generations, Source, StreamId};

/// Model names and the upstream behind them.
#[derive(Debug)]
pub(crate) struct Routes {
    provider: Provider,
    /// The model of a request that names none.
    default_model: Option<String>,
}

impl Routes {
    pub(crate) fn new(provider: Provider, default_model: Option<String>) -> Self {
        Self {
            provider,
            default_model,
        }
    }

    pub(crate) fn default_model(&self) -> Option<&str> {
        self.default_model.as_deref()
    }

    /// Starts a generation for `request` once its upstream has answered 200;
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
        // Reserve before calling the upstream, so a refused request costs nothing.
        let ticket = generations.reserve(caller)?;
        let source: Pin<Box<dyn Source>> = self
            .provider
            .open(request, &model)
            .await
            .inspect_err(|error| metrics.upstream_refusal(RefusalKind::of(error)))?;
        ticket.start(&model, source)
    }

    /// Every model the upstreams list.
    pub(crate) async fn models(&self) -> Result<Bytes, Error> {
        self.provider.models().await
    }

    /// Whether an upstream can take requests.
    pub(crate) async fn ready(&self) -> bool {
        self.provider.ready().await
    }
}
