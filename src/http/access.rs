//! Who may call the API, and how often: `PROXY_API_KEYS` bearer checks,
//! short-lived signed tokens (`JWT_SECRET`, `JWT_PUBLIC_KEY_FILE`) that an
//! app's backend mints for its users, and per-caller rate limits (README,
//! Browser-safe auth).
//!
//! The middleware runs in front of `/api` and `/v1` only; the page, static
//! files and health checks stay open. It leaves a [`Caller`] in the request
//! extensions, which is also what ties a stream to the key or token subject
//! that created it, and the [`Grant`] of a token's claims. `EventSource`
//! cannot send headers, so a token may also come as `?access_token=`; it is
//! taken off the URI before anything else sees (or logs) it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request};
use axum::http::{Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, Validation};
use serde::Deserialize;

use crate::config::{Config, Jwt, Secret};
use crate::error::Error;
use crate::lock::lock;
use crate::policy::Grant;
use crate::streams::{Caller, KeyId};

/// The query parameter that carries a token for clients that cannot set
/// headers.
const ACCESS_TOKEN: &str = "access_token";

/// How far a token's `exp` may be behind our clock: the two servers'
/// clocks differ a little, and tokens live minutes, not seconds.
const CLOCK_SKEW_SECS: u64 = 30;

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
    tokens: Option<Arc<Tokens>>,
    limiter: Option<Arc<Limiter>>,
}

/// How signed tokens are verified.
struct Tokens {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({:?})", self.validation.algorithms)
    }
}

/// The claims a token must or may carry.
#[derive(Deserialize)]
struct Claims {
    /// Required; read as optional so that a token without it is refused
    /// for that reason, not as malformed.
    #[serde(default)]
    sub: Option<String>,
    /// Model names or globs this user may ask for.
    #[serde(default)]
    models: Option<Vec<String>>,
    /// The longest answer this user may ask for.
    #[serde(default)]
    max_tokens: Option<u64>,
}

impl Access {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            keys: keyed(&config.proxy_api_keys),
            tokens: config.jwt.as_ref().map(|jwt| Arc::new(tokens(jwt))),
            limiter: config.rate_limit_per_minute.map(|limit| {
                Arc::new(Limiter {
                    limit,
                    windows: Mutex::default(),
                })
            }),
        }
    }

    /// The caller a bearer token belongs to, and what it is granted: a key
    /// (every key compared in constant time, so the answer's timing says
    /// nothing about how close a guess was), else a signed token.
    fn identify(&self, token: Option<&[u8]>) -> Result<(Caller, Grant), Error> {
        if self.keys.is_empty() && self.tokens.is_none() {
            return Ok((Caller::OPEN, Grant::default()));
        }
        let token = token.ok_or(Error::Unauthorized)?;
        let key = self.keys.iter().fold(None, |found, (key, id)| {
            let matches = constant_time_eq(key.expose().as_bytes(), token);
            found.or(matches.then_some(*id))
        });
        if let Some(id) = key {
            return Ok((Caller::keyed(id), Grant::default()));
        }
        let Some(tokens) = &self.tokens else {
            return Err(Error::Unauthorized);
        };
        let token = std::str::from_utf8(token).map_err(|_| Error::Unauthorized)?;
        let claims = jsonwebtoken::decode::<Claims>(token, &tokens.key, &tokens.validation)
            .map_err(|error| rejected(error.kind()))?
            .claims;
        let subject = claims.sub.as_deref().map(str::trim).unwrap_or_default();
        if subject.is_empty() {
            return Err(rejected(&ErrorKind::MissingRequiredClaim("sub".to_owned())));
        }
        Ok((
            Caller::keyed(KeyId::of_subject(subject)),
            Grant {
                models: claims.models,
                max_tokens: claims.max_tokens,
                ..Grant::default()
            },
        ))
    }
}

fn tokens(jwt: &Jwt) -> Tokens {
    let mut validation = Validation::new(jwt.algorithm);
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation.leeway = CLOCK_SKEW_SECS;
    // The audience is whatever the app's backend and this server agree on
    // through the key they share; a token is not refused for naming one.
    validation.validate_aud = false;
    Tokens {
        key: jwt.key.clone(),
        validation,
    }
}

/// Why a token was refused, in words for its holder.
fn rejected(kind: &ErrorKind) -> Error {
    let why = match kind {
        ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (`nbf`)".to_owned(),
        ErrorKind::InvalidSignature => "the token's signature does not verify".to_owned(),
        ErrorKind::InvalidAlgorithm => "the token is signed with another algorithm".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no `{claim}` claim"),
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => {
            "the bearer value is neither a key nor a well-formed token".to_owned()
        }
        _ => "the token is not valid".to_owned(),
    };
    Error::TokenRejected(format!("{why}; a valid key or signed token is required"))
}

fn keyed(keys: &[Secret]) -> Arc<[(Secret, KeyId)]> {
    keys.iter()
        .map(|key| (key.clone(), KeyId::of(key.expose())))
        .collect()
}

/// Authenticates and rate-limits one request.
pub(super) async fn check(access: &Access, mut request: Request, next: Next) -> Response {
    let from_query = take_access_token(&mut request);
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
        .map(|token| token.trim_ascii().to_vec())
        .or(from_query.map(String::into_bytes));
    let (caller, mut grant) = match access.identify(token.as_deref()) {
        Ok(identified) => identified,
        Err(error) => return error.into_response(),
    };
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    grant.account = identity(caller, address);
    if let Some(limiter) = &access.limiter {
        if let Err(error) = limiter.admit(grant.account.clone(), Instant::now()) {
            return error.into_response();
        }
    }
    request.extensions_mut().insert(caller);
    request.extensions_mut().insert(grant);
    next.run(request).await
}

/// Takes `?access_token=` off the request's URI and hands it back.
fn take_access_token(request: &mut Request) -> Option<String> {
    let query = request.uri().query()?;
    if !query
        .split('&')
        .any(|pair| pair.starts_with("access_token="))
    {
        return None;
    }
    let mut token = None;
    let rest: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .filter_map(|(name, value)| {
            if name == ACCESS_TOKEN {
                token.get_or_insert_with(|| value.into_owned());
                None
            } else {
                Some((name.into_owned(), value.into_owned()))
            }
        })
        .collect();
    let path = request.uri().path();
    let uri = if rest.is_empty() {
        path.to_owned()
    } else {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(rest)
            .finish();
        format!("{path}?{query}")
    };
    if let Ok(uri) = uri.parse::<Uri>() {
        *request.uri_mut() = uri;
    }
    token
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
            tokens: None,
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
        let caller = |token: &[u8]| access.identify(Some(token)).map(|(caller, _)| caller);
        let beta = caller(b"beta");
        let alpha = caller(b"alpha");
        assert_eq!(beta, Ok(Caller::keyed(KeyId::of("beta"))));
        assert_eq!(alpha, Ok(Caller::keyed(KeyId::of("alpha"))));
        assert_ne!(alpha, beta);
        for wrong in [None, Some(&b"gamma"[..]), Some(b"bet"), Some(b"")] {
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
        for token in [&b"alpha"[..], b"beta"] {
            assert_eq!(one.identify(Some(token)), other.identify(Some(token)));
        }
    }

    #[test]
    fn without_keys_everyone_is_let_in() {
        assert_eq!(
            access(&[], None).identify(None),
            Ok((Caller::OPEN, Grant::default()))
        );
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
