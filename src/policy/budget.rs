//! Token budgets: `TOKENS_PER_MINUTE` per caller, counted from what each
//! generation really cost (its usage, or an estimate from its text when the
//! upstream reports none), because a request count says nothing about a
//! caller who asks for a hundred thousand tokens at a time.
//!
//! Minutes are fixed windows of the wall clock, so that replicas agree on
//! them; with `REDIS_URL` every replica adds to and reads the same count.
//! Redis being away never stops traffic: each replica's own count still
//! holds the line for what it served.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tokio::time::Instant;

use crate::error::Error;
use crate::event::StreamEvent;
use crate::lock::lock;
use crate::streams::{Cluster, Source};

/// How many characters of text a token is taken to hold when the upstream
/// reports no usage: about right for English with common tokenizers.
const CHARS_PER_TOKEN: usize = 4;

/// Most callers counted at once on one replica; the oldest windows are
/// dropped first, so a flood of addresses cannot grow the table for good.
const MAX_ACCOUNTS: usize = 100_000;

/// A per-minute token allowance per caller.
#[derive(Debug)]
pub(crate) struct Budget {
    per_minute: u64,
    /// This replica's count: account → (minute, tokens spent in it).
    local: Mutex<HashMap<String, (u64, u64)>>,
    shared: Option<Cluster>,
}

impl Budget {
    pub(crate) fn new(per_minute: u64, shared: Option<Cluster>) -> Self {
        Self {
            per_minute,
            local: Mutex::default(),
            shared,
        }
    }

    /// Refuses `account` with 429 while this minute's tokens are spent.
    pub(crate) async fn admit(&self, account: &str) -> Result<(), Error> {
        let (minute, second) = now();
        let mine = lock(&self.local)
            .get(account)
            .filter(|(window, _)| *window == minute)
            .map_or(0, |(_, spent)| *spent);
        let everyone = match &self.shared {
            Some(cluster) => cluster.tokens_spent(account, minute).await.unwrap_or(0),
            None => 0,
        };
        if mine.max(everyone) >= self.per_minute {
            return Err(Error::TokensSpent {
                limit: self.per_minute,
                retry_after_secs: 60 - second,
            });
        }
        Ok(())
    }

    /// `source`, counting what it costs `account` once it ends; `prompt_chars`
    /// estimates the prompt's share when the upstream reports no usage.
    pub(crate) fn meter(
        self: &Arc<Self>,
        source: Pin<Box<dyn Source>>,
        account: String,
        prompt_chars: usize,
    ) -> Pin<Box<dyn Source>> {
        Box::pin(Metered {
            source,
            budget: Arc::clone(self),
            account,
            chars: prompt_chars,
            reported: None,
        })
    }

    fn spend(&self, account: String, tokens: u64) {
        let (minute, _) = now();
        {
            let mut local = lock(&self.local);
            if local.len() >= MAX_ACCOUNTS && !local.contains_key(&account) {
                local.retain(|_, (window, _)| *window == minute);
            }
            let entry = local.entry(account.clone()).or_insert((minute, 0));
            if entry.0 != minute {
                *entry = (minute, 0);
            }
            entry.1 = entry.1.saturating_add(tokens);
        }
        if let (Some(cluster), Ok(runtime)) = (&self.shared, tokio::runtime::Handle::try_current())
        {
            let cluster = cluster.clone();
            runtime.spawn(async move {
                if let Err(error) = cluster.spend_tokens(&account, minute, tokens).await {
                    tracing::warn!(%error, "could not add to the shared token budget");
                }
            });
        }
    }
}

/// The current minute since 1970, and the second within it.
fn now() -> (u64, u64) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    (secs / 60, secs % 60)
}

/// A generation's source that tallies its cost as it passes.
struct Metered {
    source: Pin<Box<dyn Source>>,
    budget: Arc<Budget>,
    account: String,
    /// Characters of prompt and of text so far, for the estimate.
    chars: usize,
    /// The upstream's own count, from the finish's usage.
    reported: Option<u64>,
}

impl Source for Metered {
    fn poll_batch(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut Vec<StreamEvent>,
    ) -> Poll<Option<()>> {
        let before = out.len();
        let polled = ready!(self.source.as_mut().poll_batch(cx, out));
        let mut chars = 0;
        let mut reported = None;
        for event in &out[before..] {
            match event {
                StreamEvent::Token { token, .. } | StreamEvent::Reasoning { token, .. } => {
                    chars += token.chars().count();
                }
                StreamEvent::ToolCall { arguments, .. } => {
                    chars += arguments.as_deref().map_or(0, |text| text.chars().count());
                }
                StreamEvent::Finish {
                    usage: Some(usage), ..
                } => reported = total_tokens(usage.get()),
                _ => {}
            }
        }
        self.chars += chars;
        if reported.is_some() {
            self.reported = reported;
        }
        Poll::Ready(polled)
    }

    fn started(&self) -> Instant {
        self.source.started()
    }
}

impl Drop for Metered {
    /// The generation is over, finished or not: what it used is spent.
    fn drop(&mut self) {
        let tokens = self
            .reported
            .unwrap_or_else(|| self.chars.div_ceil(CHARS_PER_TOKEN) as u64);
        self.budget.spend(std::mem::take(&mut self.account), tokens);
    }
}

/// `total_tokens` of a usage object, else its prompt and completion counts.
fn total_tokens(usage: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct Usage {
        total_tokens: Option<u64>,
        prompt_tokens: Option<u64>,
        completion_tokens: Option<u64>,
    }
    let usage: Usage = serde_json::from_str(usage).ok()?;
    usage.total_tokens.or_else(|| {
        usage
            .prompt_tokens
            .zip(usage.completion_tokens)
            .map(|(prompt, completion)| prompt + completion)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_spent_minute_is_refused_until_the_next() {
        let budget = Budget::new(100, None);
        assert_eq!(budget.admit("key:a").await, Ok(()));
        budget.spend("key:a".to_owned(), 100);
        let refused = budget.admit("key:a").await;
        assert!(
            matches!(refused, Err(Error::TokensSpent { limit: 100, retry_after_secs }) if (1..=60).contains(&retry_after_secs)),
            "{refused:?}"
        );
        assert_eq!(
            budget.admit("key:b").await,
            Ok(()),
            "callers are counted apart"
        );
        let (minute, _) = now();
        lock(&budget.local).insert("key:a".to_owned(), (minute - 1, 1_000));
        assert_eq!(
            budget.admit("key:a").await,
            Ok(()),
            "last minute's spending is over"
        );
    }

    #[test]
    fn usage_counts_its_total_or_its_parts() {
        assert_eq!(
            total_tokens(r#"{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}"#),
            Some(7)
        );
        assert_eq!(
            total_tokens(r#"{"prompt_tokens":3,"completion_tokens":4}"#),
            Some(7)
        );
        assert_eq!(total_tokens(r#"{"cost":1}"#), None);
    }
}
