//! The client side of the proxy: the only module that knows reqwest and SSE
//! parsing.
//!
//! [`Upstream::open`] sends one chat request and settles its fate before
//! anything reaches a client: it retries what is safe to retry, checks the
//! status and the content type, and turns every refusal into an [`Error`]
//! with the right status. What it returns, [`UpstreamEvents`], yields the
//! upstream's SSE events under an idle timer and an optional total deadline;
//! dropping it drops the HTTP request, which is how the upstream learns to
//! stop generating. [`Upstream::models`] fetches the model list that `/v1`
//! passes on, with the same refusals.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{
    ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, LOCATION, RETRY_AFTER,
};
use tokio::time::Instant;

use super::error_message;
mod events;

pub(crate) use self::events::UpstreamEvents;
use super::redact::Redactor;
use crate::config::{Secret, Timeouts, UpstreamSettings};
use crate::error::Error;
use crate::lock::lock;

/// An answer this recent makes `/readyz` say yes without asking again.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long a readiness probe may take.
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest upstream error body we read to explain a refusal.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// Longest model list we pass on; real ones are a few hundred KiB at most.
const MAX_MODELS_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Longest upstream message we pass on to a client.
const MAX_MESSAGE_CHARS: usize = 1_000;
/// First retry delay; doubles per attempt.
const RETRY_BASE: Duration = Duration::from_millis(250);
/// No single wait between retries is longer than this; an upstream that asks
/// for more with `Retry-After` is not retried at all.
const RETRY_CAP: Duration = Duration::from_secs(8);

/// A configured OpenAI-compatible API.
#[derive(Debug, Clone)]
pub(super) struct Upstream {
    client: reqwest::Client,
    /// `base_url` with one trailing slash, parsed once: a dialect's paths
    /// are joined to it, which spares each request parsing the host again.
    base: reqwest::Url,
    /// The configured query parameters, encoded, without the `?`.
    query: String,
    models_url: String,
    /// When the upstream last answered anything at all.
    last_answer: Arc<std::sync::Mutex<Option<Instant>>>,
    /// The dialect's headers that carry our key.
    auth: HeaderMap,
    /// Masks that key in everything the upstream says back.
    redactor: Redactor,
    timeouts: Timeouts,
    retries: u32,
    max_line_bytes: usize,
}

impl Upstream {
    /// Builds the client for one upstream (its `base_url` is for example
    /// `https://api.openai.com/v1`); `auth` carries the key as its dialect
    /// sends it, and the upstream's own headers and query parameters go with
    /// every request.
    pub(crate) fn new(
        settings: &UpstreamSettings,
        models_path: &str,
        mut auth: HeaderMap,
    ) -> Result<Self, Error> {
        for (name, value) in &settings.headers {
            let (Ok(name), Ok(value)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::from_str(value),
            ) else {
                return Err(Error::Internal(format!(
                    "upstream `{}`: header `{name}` cannot be sent",
                    settings.name
                )));
            };
            auth.insert(name, value);
        }
        let base_url = settings.base_url.trim_end_matches('/');
        let query = query_string(&settings.query);
        // Several Upstreams may be built in one process (tests do); only the
        // first installation can succeed and every later one is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(settings.timeouts.connect)
            // Without it a small SSE write waits for the peer's delayed ACK.
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("tokenrelay/", env!("CARGO_PKG_VERSION")))
            // A prompt is never re-sent to another address: a redirect is
            // answered as the upstream error it is.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| {
                Error::Internal(format!("could not build the HTTP client: {error}"))
            })?;
        Ok(Self {
            client,
            models_url: with_query(format!("{base_url}{models_path}"), &query),
            base: reqwest::Url::parse(&format!("{base_url}/")).map_err(|error| {
                Error::Internal(format!(
                    "upstream `{}`: its base URL cannot be parsed: {error}",
                    settings.name
                ))
            })?,
            query,
            last_answer: Arc::default(),
            auth,
            redactor: Redactor::new(secrets(settings)),
            timeouts: settings.timeouts,
            retries: settings.retries,
            max_line_bytes: settings.max_line_bytes,
        })
    }

    /// Sends a chat request to `path` (`body` is final JSON, streaming
    /// asked for) and resolves once the upstream has answered 200 with an
    /// event stream. Connect errors, 429 and 5xx are retried here, the only
    /// place where nothing has reached a client yet, unless `retry` is false
    /// (another upstream is the retry).
    pub(super) async fn open(
        &self,
        path: &str,
        body: Bytes,
        retry: bool,
    ) -> Result<UpstreamEvents, Error> {
        // `./` keeps a path whose first segment holds a colon from reading
        // as a scheme.
        let relative = with_query(format!(".{path}"), &self.query);
        let url = self.base.join(&relative).map_err(|error| {
            Error::BadGateway(format!(
                "the upstream URL for `{}` cannot be formed: {error}",
                path.chars().take(200).collect::<String>()
            ))
        })?;
        let retries = if retry { self.retries } else { 0 };
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            let outcome = self.attempt(url.clone(), body.clone()).await;
            let wait = match &outcome {
                Err(Refusal::Retryable { retry_after, .. }) if attempt < retries => {
                    backoff(attempt, *retry_after)
                }
                _ => None,
            };
            match (outcome, wait) {
                (Ok(response), _) => return Ok(self.events(response, started)),
                (Err(refusal), None) => return Err(self.redact(refusal.into_error())),
                (Err(_), Some(wait)) => {
                    attempt += 1;
                    tracing::warn!(
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        "retrying the upstream"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn attempt(&self, url: reqwest::Url, body: Bytes) -> Result<reqwest::Response, Refusal> {
        let request = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "text/event-stream")
            .body(body);
        let (response, deadline) = self.send(request).await?;
        let status = response.status();
        if status.is_success() {
            let kind = content_type(response.headers()).map(str::to_owned);
            if kind
                .as_deref()
                .is_some_and(|kind| kind.eq_ignore_ascii_case("text/event-stream"))
            {
                return Ok(response);
            }
            // Some upstreams answer 200 with a JSON error instead of a stream;
            // what the body says is the most useful part of the refusal.
            return Err(Refusal::Final(Error::BadGateway(format!(
                "the upstream answered with content type `{}` instead of an event stream: {}",
                kind.as_deref().unwrap_or("none"),
                self.explain(response, deadline).await
            ))));
        }
        if status.is_redirection() {
            return Err(Refusal::Final(self.redirected(&response)));
        }
        let retry_after = retry_after(response.headers());
        let error = Error::Upstream {
            status: status.as_u16(),
            message: self.explain(response, deadline).await,
        };
        if status.as_u16() == 429 || status.is_server_error() {
            Err(Refusal::Retryable { error, retry_after })
        } else {
            Err(Refusal::Final(error))
        }
    }

    /// The upstream's `GET /models` list, passed on as it came (vendors add
    /// their own fields), with the same refusals as a chat request.
    pub(super) async fn models(&self) -> Result<Bytes, Error> {
        let request = self
            .client
            .get(&self.models_url)
            .header(ACCEPT, "application/json");
        let (response, deadline) = self
            .send(request)
            .await
            .map_err(|refusal| self.redact(refusal.into_error()))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(self.redirected(&response));
        }
        if !status.is_success() {
            return Err(self.redact(Error::Upstream {
                status: status.as_u16(),
                message: self.explain(response, deadline).await,
            }));
        }
        let body = match read_prefix(response, MAX_MODELS_BODY_BYTES, deadline).await {
            Prefix {
                cut: Some(Cut::Deadline),
                ..
            } => {
                return Err(Error::UpstreamTimeout(format!(
                    "the upstream did not send the whole model list within UPSTREAM_HEADERS_TIMEOUT_SECS ({} s)",
                    self.timeouts.headers.as_secs_f64()
                )));
            }
            Prefix {
                cut: Some(Cut::Broken(error)),
                ..
            } => {
                return Err(Error::BadGateway(format!(
                    "the upstream connection broke while sending the model list ({})",
                    root_cause(&error)
                )));
            }
            Prefix { more: true, .. } => {
                return Err(Error::BadGateway(format!(
                    "the upstream's model list is longer than {MAX_MODELS_BODY_BYTES} bytes"
                )));
            }
            Prefix { bytes, .. } => bytes,
        };
        serde_json::from_slice::<serde::de::IgnoredAny>(&body)
            .map_err(|_| Error::BadGateway("the upstream's model list is not JSON".to_owned()))?;
        Ok(Bytes::from(body))
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.headers(self.auth.clone())
    }

    /// Sends `request` with our key and waits for the response headers,
    /// within the headers timeout; only connect errors are worth retrying.
    /// Also returns the end of that timeout: a refusal's body must arrive
    /// by then too, or a 401 that never finishes its body would hold the
    /// client for good.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(reqwest::Response, Instant), Refusal> {
        let request = self.authorized(request);
        let headers_timeout = self.timeouts.headers;
        let deadline = Instant::now() + headers_timeout;
        let response = match tokio::time::timeout_at(deadline, request.send()).await {
            Err(_) => {
                return Err(Refusal::Final(Error::UpstreamTimeout(format!(
                    "the upstream sent no response headers within {} s",
                    headers_timeout.as_secs_f64()
                ))));
            }
            Ok(Err(error)) if error.is_connect() => {
                return Err(Refusal::Retryable {
                    error: Error::BadGateway(format!(
                        "could not connect to the upstream ({})",
                        root_cause(&error)
                    )),
                    retry_after: None,
                });
            }
            Ok(Err(error)) => {
                return Err(Refusal::Final(Error::BadGateway(format!(
                    "the upstream request failed ({})",
                    root_cause(&error)
                ))));
            }
            Ok(Ok(response)) => response,
        };
        self.answered();
        Ok((response, deadline))
    }

    /// The upstream's own explanation of a refusal, from a bounded prefix
    /// of its body read until `deadline`, with our key masked.
    async fn explain(&self, response: reqwest::Response, deadline: Instant) -> String {
        let prefix = read_prefix(response, MAX_ERROR_BODY_BYTES, deadline).await;
        // A body cut short still explains as much as it got to say.
        let mut message = self
            .redactor
            .clean(&explanation(&prefix.bytes), MAX_MESSAGE_CHARS);
        if matches!(prefix.cut, Some(Cut::Deadline)) {
            message.push_str(&format!(
                " (the rest of the body did not arrive within UPSTREAM_HEADERS_TIMEOUT_SECS, {} s)",
                self.timeouts.headers.as_secs_f64()
            ));
        }
        message
    }

    /// A redirect is refused, not followed: following it would send the
    /// prompt, and on some clients the key, to an address nobody configured.
    fn redirected(&self, response: &reqwest::Response) -> Error {
        let location = response
            .headers()
            .get(LOCATION)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        let message = match location {
            Some(location) => format!(
                "the upstream redirected the request to `{}`, and redirects are not followed; configure that address instead",
                self.redactor.clean(&location, MAX_MESSAGE_CHARS)
            ),
            None => "the upstream redirected the request without saying where, and redirects are not followed".to_owned(),
        };
        Error::Upstream {
            status: response.status().as_u16(),
            message,
        }
    }

    fn events(&self, response: reqwest::Response, started: Instant) -> UpstreamEvents {
        UpstreamEvents::new(
            response,
            self.max_line_bytes,
            self.timeouts,
            started,
            self.redactor.clone(),
        )
    }

    /// Whether the upstream answered recently; asks it (`GET /models`) when
    /// it has been quiet, since an idle proxy has no other evidence.
    pub(super) async fn ready(&self) -> bool {
        let recent = lock(&self.last_answer).is_some_and(|at| at.elapsed() < READY_WITHIN);
        if recent {
            return true;
        }
        let probe = self.authorized(self.client.get(&self.models_url));
        let answered = matches!(
            tokio::time::timeout(self.timeouts.headers.min(READY_PROBE_TIMEOUT), probe.send()).await,
            Ok(Ok(response)) if !response.status().is_server_error()
        );
        if answered {
            self.answered();
        }
        answered
    }

    fn answered(&self) {
        *lock(&self.last_answer) = Some(Instant::now());
    }

    /// Every message of a refusal, with our key masked once more: the
    /// upstream's words were masked when read, but a message may also
    /// quote what the transport said.
    fn redact(&self, error: Error) -> Error {
        let clean = |message: String| self.redactor.clean(&message, usize::MAX);
        match error {
            Error::Upstream { status, message } => Error::Upstream {
                status,
                message: clean(message),
            },
            Error::BadGateway(message) => Error::BadGateway(clean(message)),
            Error::UpstreamTimeout(message) => Error::UpstreamTimeout(clean(message)),
            error => error,
        }
    }
}

enum Refusal {
    Retryable {
        error: Error,
        retry_after: Option<Duration>,
    },
    Final(Error),
}

impl Refusal {
    fn into_error(self) -> Error {
        match self {
            Self::Retryable { error, .. } | Self::Final(error) => error,
        }
    }
}

/// The delay before retry number `attempt + 1`, or `None` when the upstream
/// asked for a longer pause than we are willing to hold a client for.
fn backoff(attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
    if let Some(asked) = retry_after {
        return (asked <= RETRY_CAP).then_some(asked);
    }
    let exponential = RETRY_BASE
        .saturating_mul(1 << attempt.min(16))
        .min(RETRY_CAP);
    // Full jitter between half and all of the delay spreads out clients that
    // failed together, so they do not retry in lockstep.
    let half = exponential / 2;
    Some(half + half.mul_f64(crate::providers::uniform()))
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.split(';').next().unwrap_or_default().trim())
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<f64>().ok())
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
}

/// What an upstream must never see quoted back: its key, and the values of
/// its headers whose names say they carry credentials (`api-key`,
/// `Authorization`, `X-Auth-Token`...).
fn secrets(settings: &UpstreamSettings) -> impl Iterator<Item = &str> {
    let credential = |name: &str| {
        let name = name.to_ascii_lowercase();
        ["key", "auth", "token", "secret"]
            .iter()
            .any(|word| name.contains(word))
    };
    let headers = settings
        .headers
        .iter()
        .filter(move |(name, _)| credential(name))
        .map(|(_, value)| value.as_str());
    settings.api_key.iter().map(Secret::expose).chain(headers)
}

/// `url` with the configured `query` after the query it may have.
fn with_query(mut url: String, query: &str) -> String {
    if !query.is_empty() {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(query);
    }
    url
}

/// `name=value&...`, percent-encoded, or nothing.
fn query_string(pairs: &[(String, String)]) -> String {
    // Everything but the unreserved characters of RFC 3986.
    const ENCODED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let encode = |text: &str| percent_encoding::utf8_percent_encode(text, ENCODED).to_string();
    let joined: Vec<String> = pairs
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect();
    joined.join("&")
}

/// What an error body says, or that it said nothing.
fn explanation(body: &[u8]) -> String {
    let body = String::from_utf8_lossy(body);
    error_message(&body).map_or_else(|| "no message".to_owned(), Cow::into_owned)
}

/// At most `limit` bytes of a body: never more is buffered.
struct Prefix {
    bytes: Vec<u8>,
    /// The body went on past `limit`.
    more: bool,
    /// Why the body ended before its end, if it did.
    cut: Option<Cut>,
}

enum Cut {
    Broken(reqwest::Error),
    /// It had not ended by the deadline.
    Deadline,
}

async fn read_prefix(response: reqwest::Response, limit: usize, deadline: Instant) -> Prefix {
    let mut prefix = Prefix {
        bytes: Vec::new(),
        more: false,
        cut: None,
    };
    let mut stream = response.bytes_stream();
    loop {
        let Ok(piece) = tokio::time::timeout_at(deadline, stream.next()).await else {
            prefix.cut = Some(Cut::Deadline);
            break;
        };
        let Some(piece) = piece else {
            break;
        };
        match piece {
            Ok(piece) => {
                let room = limit - prefix.bytes.len();
                prefix
                    .bytes
                    .extend_from_slice(&piece[..piece.len().min(room)]);
                if piece.len() > room {
                    prefix.more = true;
                    break;
                }
            }
            Err(error) => {
                prefix.cut = Some(Cut::Broken(error));
                break;
            }
        }
    }
    prefix
}

/// The innermost cause, which names the actual problem ("connection
/// refused") without the URL that reqwest's own message repeats.
fn root_cause(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_respects_the_cap() {
        let first = backoff(0, None).unwrap_or_default();
        assert!(first >= RETRY_BASE / 2 && first <= RETRY_BASE);
        let late = backoff(10, None).unwrap_or_default();
        assert!(late <= RETRY_CAP && late >= RETRY_CAP / 2);
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        assert_eq!(
            backoff(0, Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(backoff(0, Some(RETRY_CAP * 2)), None);
    }
}
