//! Who may call the API, and how often: `PROXY_API_KEYS` bearer checks and
//! per-caller rate limits (README, "How it behaves where the contract is silent").
//!
//! The middleware runs in front of `/api` and `/v1` only; the page, static
//! files and health checks stay open. It leaves a [`Caller`] in the request
//! extensions, which is also what ties a stream to the key that created it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::{Config, Secret};
use crate::error::Error;
use crate::lock::lock;
use crate::streams::{Caller, KeyId};

/// The window rate limits count over.
const WINDOW: Duration = Duration::from_secs(60);
/// Most callers tracked at once; the oldest windows are forgotten first, so
/// a flood of addresses cannot grow the table without bound.
const MAX_TRACKED_CALLERS: usize = 100_000;

/// Shared state of the access checks.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    /// Each client key with the identity derived from it.
    keys: Arc<[(Secret, KeyId)]>,
    limiter: Option<Arc<Limiter>>,
}

impl Access {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            keys: keyed(&config.proxy_api_keys),
            limiter: config.rate_limit_per_minute.map(|limit| {
                Arc::new(Limiter {
                    limit,
                    windows: Mutex::default(),
                })
            }),
        }
    }

    /// The caller a bearer token belongs to, comparing every key in constant
    /// time so the answer's timing says nothing about how close a guess was.
    fn identify(&self, authorization: Option<&[u8]>) -> Result<Caller, Error> {
        if self.keys.is_empty() {
            return Ok(Caller::OPEN);
        }
        let token = authorization
            .and_then(|value| value.strip_prefix(b"Bearer "))
            .map(<[u8]>::trim_ascii)
            .ok_or(Error::Unauthorized)?;
        self.keys
            .iter()
            .fold(None, |found, (key, id)| {
                let matches = constant_time_eq(key.expose().as_bytes(), token);
                found.or(matches.then_some(*id))
            })
            .map(Caller::keyed)
            .ok_or(Error::Unauthorized)
    }
}

fn keyed(keys: &[Secret]) -> Arc<[(Secret, KeyId)]> {
    keys.iter()
        .map(|key| (key.clone(), KeyId::of(key.expose())))
        .collect()
}

/// Authenticates and rate-limits one request.
pub(crate) async fn check(
    State(access): State<Access>,
    mut request: Request,
    next: Next,
) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes().to_vec());
    let caller = match access.identify(authorization.as_deref()) {
        Ok(caller) => caller,
        Err(error) => return error.into_response(),
    };
    if let Some(limiter) = &access.limiter {
        let address = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        if let Err(error) = limiter.admit(identity(caller, address), Instant::now()) {
            return error.into_response();
        }
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// Who a rate limit counts against: the key when there is one, else the address.
fn identity(caller: Caller, address: Option<IpAddr>) -> String {
    match (caller, address) {
        _ if caller.is_keyed() => caller.to_string(),
        (_, Some(address)) => format!("ip:{address}"),
        (_, None) => "anonymous".to_owned(),
    }
}

/// A fixed one-minute window per caller.
#[derive(Debug)]
struct Limiter {
    limit: u32,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Limiter {
    fn admit(&self, who: String, now: Instant) -> Result<(), Error> {
        let mut windows = lock(&self.windows);
        if windows.len() >= MAX_TRACKED_CALLERS && !windows.contains_key(&who) {
            windows.retain(|_, (started, _)| now.duration_since(*started) < WINDOW);
        }
        let (started, count) = windows.entry(who).or_insert((now, 0));
        if now.duration_since(*started) >= WINDOW {
            *started = now;
            *count = 0;
        }
        if *count >= self.limit {
            let retry_after = WINDOW.saturating_sub(now.duration_since(*started));
            return Err(Error::RateLimited {
                retry_after_secs: retry_after.as_secs().max(1),
            });
        }
        *count += 1;
        Ok(())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(keys: &[&str], limit: Option<u32>) -> Access {
        let keys: Vec<Secret> = keys
            .iter()
            .map(|key| Secret::new((*key).to_owned()))
            .collect();
        Access {
            keys: keyed(&keys),
            limiter: limit.map(|limit| {
                Arc::new(Limiter {
                    limit,
                    windows: Mutex::default(),
                })
            }),
        }
    }

    #[test]
    fn bearer_tokens_pick_their_key() {
        let access = access(&["alpha", "beta"], None);
        let beta = access.identify(Some(b"Bearer beta"));
        let alpha = access.identify(Some(b"Bearer alpha "));
        assert_eq!(beta, Ok(Caller::keyed(KeyId::of("beta"))));
        assert_eq!(alpha, Ok(Caller::keyed(KeyId::of("alpha"))));
        assert_ne!(alpha, beta);
        for wrong in [
            None,
            Some(&b"Bearer gamma"[..]),
            Some(b"beta"),
            Some(b"Bearer "),
            Some(b"Basic YWxwaGE="),
        ] {
            assert_eq!(
                access.identify(wrong),
                Err(Error::Unauthorized),
                "{wrong:?}"
            );
        }
    }

    #[test]
    fn an_identity_follows_the_key_not_its_place_in_the_list() {
        let one = access(&["alpha", "beta"], None);
        let other = access(&["beta", "gamma", "alpha"], None);
        for token in [&b"Bearer alpha"[..], b"Bearer beta"] {
            assert_eq!(one.identify(Some(token)), other.identify(Some(token)));
        }
    }

    #[test]
    fn without_keys_everyone_is_let_in() {
        assert_eq!(access(&[], None).identify(None), Ok(Caller::OPEN));
    }

    #[test]
    fn the_limit_resets_with_the_window() {
        let limiter = Limiter {
            limit: 2,
            windows: Mutex::default(),
        };
        let start = Instant::now();
        assert!(limiter.admit("a".into(), start).is_ok());
        assert!(limiter.admit("a".into(), start).is_ok());
        assert_eq!(
            limiter.admit("a".into(), start + Duration::from_secs(20)),
            Err(Error::RateLimited {
                retry_after_secs: 40
            })
        );
        assert!(
            limiter.admit("b".into(), start).is_ok(),
            "callers are counted apart"
        );
        assert!(limiter.admit("a".into(), start + WINDOW).is_ok());
    }
}
