//! Typed configuration, parsed once at start-up.
//!
//! Every setting is one row of [`SETTINGS`]: the environment variable, the
//! command-line flag (the same name in kebab case), the help text and the
//! default all come from that row, so `--help`, `.env.example` and the parser
//! cannot drift apart. Parsing goes through a lookup function, so tests build a
//! `Config` from a map and never touch the process environment.

use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

mod dotenv;
mod file;

pub use self::dotenv::{DotEnv, check_name};
pub use self::file::{Cooldown, Kind, ModelRoute, Strategy, Target, Topology, UpstreamSettings};

/// One configuration variable.
#[derive(Debug)]
pub struct Setting {
    pub name: &'static str,
    pub default: Option<&'static str>,
    pub help: &'static str,
}

const fn setting(name: &'static str, default: Option<&'static str>, help: &'static str) -> Setting {
    Setting {
        name,
        default,
        help,
    }
}

/// Every variable tokenrelay reads, in the order `--help` lists them.
pub const SETTINGS: &[Setting] = &[
    setting(
        "LISTEN_ADDR",
        Some("127.0.0.1:3000"),
        "Address to serve on.",
    ),
    setting(
        "TLS_CERT_FILE",
        None,
        "PEM certificate chain, the server's own first; with TLS_KEY_FILE, LISTEN_ADDR serves HTTPS (HTTP/2 and HTTP/1.1). Read again when it changes.",
    ),
    setting(
        "TLS_KEY_FILE",
        None,
        "PEM private key of TLS_CERT_FILE's certificate: RSA or ECDSA, as PKCS#8, PKCS#1 or SEC1.",
    ),
    setting(
        "HTTP2_MAX_CONCURRENT_STREAMS",
        Some("250"),
        "Most requests open at once on one HTTP/2 connection.",
    ),
    setting(
        "HTTP2_PING_INTERVAL_SECS",
        Some("20"),
        "Seconds of silence on an HTTP/2 connection before it is pinged.",
    ),
    setting(
        "HTTP2_PING_TIMEOUT_SECS",
        Some("20"),
        "Seconds an HTTP/2 peer has to answer a ping before the connection is closed as dead.",
    ),
    setting(
        "TOKENRELAY_CONFIG",
        None,
        "TOML file of several upstreams and the model names they serve (README, Several upstreams); the UPSTREAM_* settings are then its defaults.",
    ),
    setting(
        "UPSTREAM_BASE_URL",
        None,
        "OpenAI-compatible API base, e.g. https://api.openai.com/v1. Unset: the built-in demo model.",
    ),
    setting(
        "UPSTREAM_KIND",
        Some("openai"),
        "The API UPSTREAM_BASE_URL speaks: openai, anthropic, gemini or openai-responses.",
    ),
    setting(
        "UPSTREAM_API_KEY",
        None,
        "Key sent upstream as its kind expects (`Authorization: Bearer`, `x-api-key`, `x-goog-api-key`); never logged or sent to clients.",
    ),
    setting(
        "DEFAULT_MODEL",
        None,
        "Model used when a request names none (the demo model's name when no upstream is set).",
    ),
    setting(
        "UPSTREAM_CONNECT_TIMEOUT_SECS",
        Some("10"),
        "Seconds to open a connection to the upstream.",
    ),
    setting(
        "UPSTREAM_HEADERS_TIMEOUT_SECS",
        Some("60"),
        "Seconds from sending a request until the upstream's response headers.",
    ),
    setting(
        "UPSTREAM_IDLE_TIMEOUT_SECS",
        Some("300"),
        "Longest silence between upstream chunks before the stream fails with upstream_timeout.",
    ),
    setting(
        "UPSTREAM_TOTAL_TIMEOUT_SECS",
        Some("0"),
        "Longest a whole generation may take; 0 means no limit.",
    ),
    setting(
        "UPSTREAM_RETRIES",
        Some("2"),
        "Retries of connect errors, 429 and 5xx, only before any byte reached a client.",
    ),
    setting(
        "UPSTREAM_MAX_LINE_BYTES",
        Some("4194304"),
        "Longest upstream SSE line (and event) accepted, in bytes.",
    ),
    setting(
        "KEEPALIVE_SECS",
        Some("15"),
        "Seconds of silence before a `: ping` comment is sent to a client.",
    ),
    setting(
        "RESUME_GRACE_SECS",
        Some("15"),
        "Seconds a generation keeps running with no client attached; 0 stops it at once.",
    ),
    setting(
        "RESUME_TTL_SECS",
        Some("300"),
        "Seconds a finished generation's events stay available for resuming.",
    ),
    setting(
        "RESUME_MAX_STREAM_BYTES",
        Some("8388608"),
        "Most bytes of events kept for one generation.",
    ),
    setting(
        "RESUME_MAX_TOTAL_BYTES",
        Some("536870912"),
        "Most bytes of events kept for all generations together.",
    ),
    setting(
        "REDIS_URL",
        None,
        "Keep event logs in Redis Streams so any replica can resume any stream; `redis+cluster://host:port,host:port` for a Redis Cluster.",
    ),
    setting(
        "REDIS_CLUSTER_URLS",
        None,
        "Comma-separated `redis://` URLs of Redis Cluster nodes to start from, instead of REDIS_URL.",
    ),
    setting(
        "PROXY_API_KEYS",
        None,
        "Comma-separated client keys; when set, /api and /v1 require `Authorization: Bearer`.",
    ),
    setting(
        "CORS_ALLOWED_ORIGINS",
        None,
        "Comma-separated origins allowed to call the API from a browser.",
    ),
    setting(
        "MAX_BODY_BYTES",
        Some("1048576"),
        "Largest request body accepted, in bytes.",
    ),
    setting(
        "REQUEST_TIMEOUT_SECS",
        Some("30"),
        "Longest a client may take to send its request headers, and again its body (408); a connection with no open request is closed after it.",
    ),
    setting(
        "MAX_CONNECTIONS",
        Some("16384"),
        "Most client connections open at once (at most 1000000); beyond it a connection gets 503 and is closed.",
    ),
    setting(
        "MAX_CONCURRENT_STREAMS",
        Some("10000"),
        "Most generations running at once; 0 means no limit.",
    ),
    setting(
        "RATE_LIMIT_PER_MINUTE",
        Some("0"),
        "Requests per minute per client key (per address when auth is off); 0 means no limit.",
    ),
    setting(
        "TOKENS_PER_MINUTE",
        Some("0"),
        "Tokens (prompt and answer, from each generation's usage) per minute per caller; 0 means no limit. Shared by replicas with REDIS_URL.",
    ),
    setting(
        "ALLOWED_MODELS",
        None,
        "Comma-separated model names or globs (`gpt-4o*`, `groq/*`) callers may ask for; unset: any the upstreams serve.",
    ),
    setting(
        "MAX_OUTPUT_TOKENS",
        Some("0"),
        "Largest max_tokens a request may ask for, and the one a request without a limit gets; 0 means no limit.",
    ),
    setting(
        "MAX_CHOICES",
        Some("0"),
        "Largest `n` (choices per request); 0 means no limit.",
    ),
    setting(
        "MAX_PROMPT_MESSAGES",
        Some("0"),
        "Most messages a request may hold; 0 means no limit.",
    ),
    setting(
        "MAX_PROMPT_CHARS",
        Some("0"),
        "Most characters of text all of a request's messages may hold together; 0 means no limit.",
    ),
    setting(
        "JWT_SECRET",
        None,
        "HS256 secret of the short-lived tokens an app's backend mints for its users (README, Browser-safe auth).",
    ),
    setting(
        "JWT_PUBLIC_KEY_FILE",
        None,
        "PEM public key (RSA, EC P-256 or Ed25519) verifying RS256, ES256 or EdDSA tokens instead of JWT_SECRET.",
    ),
    setting(
        "SHUTDOWN_GRACE_SECS",
        Some("10"),
        "Seconds open streams may go on after SIGTERM or Ctrl-C; 2 s later every connection is closed.",
    ),
    setting(
        "LOG_FORMAT",
        Some("text"),
        "`text` or `json`; the level comes from RUST_LOG.",
    ),
];

/// The whole configuration, typed.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen_addr: SocketAddr,
    /// `None` serves plain HTTP.
    pub tls: Option<TlsFiles>,
    pub http2: Http2Config,
    /// `None` runs the built-in demo model.
    pub upstream_base_url: Option<String>,
    pub upstream_kind: Kind,
    pub upstream_api_key: Option<Secret>,
    pub default_model: Option<String>,
    pub timeouts: Timeouts,
    pub upstream_retries: u32,
    pub upstream_max_line_bytes: usize,
    pub keepalive: Duration,
    pub resume: ResumeConfig,
    pub redis: Option<RedisServers>,
    pub proxy_api_keys: Vec<Secret>,
    pub cors_allowed_origins: Vec<String>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub max_concurrent_streams: Option<usize>,
    pub rate_limit_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
    pub limits: Limits,
    pub jwt: Option<Jwt>,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    /// Several upstreams and the model names they serve, from the file
    /// `TOKENRELAY_CONFIG` names; `None` is the one-upstream shorthand of
    /// the `UPSTREAM_*` settings.
    pub topology: Option<Topology>,
}

/// What a caller may ask for (README, Safe for a public page); `None` is no
/// limit.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// Names and globs; empty: any name routing knows.
    pub allowed_models: Vec<String>,
    pub max_output_tokens: Option<u64>,
    pub max_choices: Option<u64>,
    pub max_prompt_messages: Option<usize>,
    pub max_prompt_chars: Option<usize>,
}

/// How the tokens an app's backend mints are verified: the key, and the
/// one algorithm it is for (a token naming any other is refused, so an
/// RSA public key can never be used as an HMAC secret).
#[derive(Clone)]
pub struct Jwt {
    pub key: jsonwebtoken::DecodingKey,
    pub algorithm: jsonwebtoken::Algorithm,
}

impl fmt::Debug for Jwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Jwt({:?}, ***)", self.algorithm)
    }
}

/// The certificate chain and private key HTTPS is served with, loaded
/// while parsing: a bad file stops the server at start, and what was
/// checked then is what is served.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    loaded: Arc<crate::server::tls::Tls>,
}

impl TlsFiles {
    pub(crate) fn server(&self) -> Arc<crate::server::tls::Tls> {
        Arc::clone(&self.loaded)
    }
}

/// HTTP/2 settings that suit long streams.
#[derive(Debug, Clone, Copy)]
pub struct Http2Config {
    pub max_concurrent_streams: u32,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
}

/// The four separate upstream timeouts; there is deliberately no single
/// deadline for the whole body, which would cut long generations.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub headers: Duration,
    pub idle: Duration,
    pub total: Option<Duration>,
}

#[derive(Debug, Clone, Copy)]
pub struct ResumeConfig {
    pub grace: Duration,
    pub ttl: Duration,
    pub max_stream_bytes: usize,
    pub max_total_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the shared Redis is (`REDIS_URL`, `REDIS_CLUSTER_URLS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisServers {
    One(Secret),
    /// The nodes of a Redis Cluster to learn the rest of it from.
    Cluster(Vec<Secret>),
}

/// A value that must never appear in logs; `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A setting that could not be used; names the variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.variable, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses every setting from `lookup` (variable name → raw value),
    /// falling back to the defaults of [`SETTINGS`].
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let source = Lookup { lookup: &lookup };
        let mut config = Self {
            listen_addr: source.parsed("LISTEN_ADDR", "an address such as 127.0.0.1:3000")?,
            tls: source.tls_files()?,
            http2: Http2Config {
                max_concurrent_streams: source
                    .count("HTTP2_MAX_CONCURRENT_STREAMS", 1..=u32::MAX)?,
                ping_interval: source.positive_secs("HTTP2_PING_INTERVAL_SECS")?,
                ping_timeout: source.positive_secs("HTTP2_PING_TIMEOUT_SECS")?,
            },
            upstream_base_url: source.base_url()?,
            upstream_kind: match source.text("UPSTREAM_KIND") {
                None => Kind::OpenAi,
                Some(kind) => Kind::parse(&kind).map_err(|message| ConfigError {
                    variable: "UPSTREAM_KIND",
                    message,
                })?,
            },
            upstream_api_key: source.text("UPSTREAM_API_KEY").map(Secret),
            default_model: source.text("DEFAULT_MODEL"),
            timeouts: Timeouts {
                connect: source.positive_secs("UPSTREAM_CONNECT_TIMEOUT_SECS")?,
                headers: source.positive_secs("UPSTREAM_HEADERS_TIMEOUT_SECS")?,
                idle: source.positive_secs("UPSTREAM_IDLE_TIMEOUT_SECS")?,
                total: nonzero(source.secs("UPSTREAM_TOTAL_TIMEOUT_SECS")?),
            },
            upstream_retries: source.count("UPSTREAM_RETRIES", 0..=MAX_RETRIES)?,
            upstream_max_line_bytes: source.bytes("UPSTREAM_MAX_LINE_BYTES")?,
            keepalive: source.positive_secs("KEEPALIVE_SECS")?,
            resume: ResumeConfig {
                grace: source.secs("RESUME_GRACE_SECS")?,
                ttl: source.secs("RESUME_TTL_SECS")?,
                max_stream_bytes: source.bytes("RESUME_MAX_STREAM_BYTES")?,
                max_total_bytes: source.bytes("RESUME_MAX_TOTAL_BYTES")?,
            },
            redis: source.redis()?,
            proxy_api_keys: source
                .list("PROXY_API_KEYS")
                .into_iter()
                .map(Secret)
                .collect(),
            cors_allowed_origins: source.list("CORS_ALLOWED_ORIGINS"),
            max_body_bytes: source.bytes("MAX_BODY_BYTES")?,
            request_timeout: source.positive_secs("REQUEST_TIMEOUT_SECS")?,
            max_connections: source.count("MAX_CONNECTIONS", 1..=MAX_CONNECTIONS)?,
            max_concurrent_streams: nonzero_count(
                source.count("MAX_CONCURRENT_STREAMS", 0..=MAX_CONNECTIONS)?,
            ),
            rate_limit_per_minute: nonzero_count(
                source.count("RATE_LIMIT_PER_MINUTE", 0..=u32::MAX)?,
            ),
            tokens_per_minute: nonzero_count(source.count("TOKENS_PER_MINUTE", 0..=MAX_TOKENS)?),
            limits: Limits {
                allowed_models: source.list("ALLOWED_MODELS"),
                max_output_tokens: nonzero_count(
                    source.count("MAX_OUTPUT_TOKENS", 0..=MAX_TOKENS)?,
                ),
                max_choices: nonzero_count(source.count("MAX_CHOICES", 0..=MAX_CHOICES)?),
                max_prompt_messages: nonzero_count(
                    source.count("MAX_PROMPT_MESSAGES", 0..=MAX_CONNECTIONS)?,
                ),
                max_prompt_chars: nonzero_count(source.count("MAX_PROMPT_CHARS", 0..=MAX_BYTES)?),
            },
            jwt: source.jwt()?,
            shutdown_grace: source.secs("SHUTDOWN_GRACE_SECS")?,
            log_format: match source.text("LOG_FORMAT").as_deref() {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(other) => {
                    return Err(ConfigError {
                        variable: "LOG_FORMAT",
                        message: format!("expected `text` or `json`, got `{other}`"),
                    });
                }
            },
            topology: None,
        };
        if let Some(path) = source.text("TOKENRELAY_CONFIG") {
            let text = std::fs::read_to_string(&path).map_err(|error| ConfigError {
                variable: "TOKENRELAY_CONFIG",
                message: format!("cannot read `{path}`: {error}"),
            })?;
            let defaults = config.upstream_settings("");
            config.topology = Some(file::parse(&path, &text, &defaults, &lookup)?);
        }
        Ok(config)
    }

    /// The one upstream of the `UPSTREAM_*` settings, at `base_url`; also
    /// the defaults of every upstream in a [`Topology`].
    pub fn upstream_settings(&self, base_url: &str) -> UpstreamSettings {
        UpstreamSettings {
            name: "default".to_owned(),
            kind: self.upstream_kind,
            base_url: base_url.to_owned(),
            api_key: self.upstream_api_key.clone(),
            headers: Vec::new(),
            query: Vec::new(),
            timeouts: self.timeouts,
            retries: self.upstream_retries,
            max_line_bytes: self.upstream_max_line_bytes,
            max_concurrent: None,
            max_tokens: None,
        }
    }

    /// Parses command-line flags over `env` (the process environment in
    /// `main`): a flag wins over a variable of the same name, which wins over
    /// the default. Exits with usage help on a malformed command line.
    pub fn from_args(
        args: impl IntoIterator<Item = std::ffi::OsString>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let matches = command().get_matches_from(args);
        // `${VAR}` in the config file may name any variable, which only
        // the environment holds.
        Self::from_lookup(|name| {
            SETTINGS
                .iter()
                .any(|setting| setting.name == name)
                .then(|| matches.get_one::<String>(name).cloned())
                .flatten()
                .or_else(|| env(name))
        })
    }

    /// True when requests go to the built-in demo model.
    pub fn uses_demo(&self) -> bool {
        self.upstream_base_url.is_none() && self.topology.is_none()
    }
}

/// The command line: one `--kebab-case` flag per setting.
pub fn command() -> clap::Command {
    let about = "tokenrelay: a fast, honest token-streaming proxy for OpenAI-compatible LLM APIs.\n\
                 Every flag can also be set as the environment variable shown, or in .env; flags win.";
    SETTINGS.iter().fold(
        clap::Command::new("tokenrelay")
            .version(env!("CARGO_PKG_VERSION"))
            .about(about),
        |command, setting| {
            let help = match setting.default {
                Some(default) => format!(
                    "{} [env {}] [default {default}]",
                    setting.help, setting.name
                ),
                None => format!("{} [env {}]", setting.help, setting.name),
            };
            let arg = clap::Arg::new(setting.name)
                .long(setting.name.to_ascii_lowercase().replace('_', "-"))
                .value_name("VALUE")
                // `--keepalive-secs -1` is a value to refuse by name, not a flag `-1`.
                .allow_negative_numbers(true)
                .help(help);
            // The file of upstreams is what people reach for first.
            let arg = if setting.name == "TOKENRELAY_CONFIG" {
                arg.visible_alias("config")
            } else {
                arg
            };
            command.arg(arg)
        },
    )
}

struct Lookup<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Lookup<'_> {
    /// The raw value, or the default; blank counts as unset so that
    /// `VAR=` in a `.env` file means "use the default".
    fn text(&self, name: &'static str) -> Option<String> {
        (self.lookup)(name)
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
            .or_else(|| default_of(name).map(str::to_owned))
    }

    fn parsed<T: std::str::FromStr>(
        &self,
        name: &'static str,
        expected: &str,
    ) -> Result<T, ConfigError> {
        let raw = self.text(name).unwrap_or_default();
        raw.parse().map_err(|_| ConfigError {
            variable: name,
            message: format!("expected {expected}, got `{raw}`"),
        })
    }

    /// A whole number within `allowed`.
    fn count<T>(&self, name: &'static str, allowed: RangeInclusive<T>) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + fmt::Display,
    {
        let expected = format!(
            "a whole number from {} to {}",
            allowed.start(),
            allowed.end()
        );
        let value = self.parsed(name, &expected)?;
        if allowed.contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError {
                variable: name,
                message: format!("expected {expected}, got `{value}`"),
            })
        }
    }

    fn bytes(&self, name: &'static str) -> Result<usize, ConfigError> {
        self.count(name, 1..=MAX_BYTES)
    }

    /// Seconds from 0 to [`MAX_SECS`].
    fn secs(&self, name: &'static str) -> Result<Duration, ConfigError> {
        self.secs_from(name, 0.0)
    }

    /// Seconds from [`MIN_POSITIVE_SECS`] to [`MAX_SECS`].
    fn positive_secs(&self, name: &'static str) -> Result<Duration, ConfigError> {
        self.secs_from(name, MIN_POSITIVE_SECS)
    }

    fn secs_from(&self, name: &'static str, min: f64) -> Result<Duration, ConfigError> {
        let expected = format!("a number of seconds from {min} to {MAX_SECS}");
        let secs: f64 = self.parsed(name, &expected)?;
        seconds(secs, min).map_err(|message| ConfigError {
            variable: name,
            message,
        })
    }

    /// `JWT_SECRET` or `JWT_PUBLIC_KEY_FILE`, read now so that a missing
    /// file stops the server instead of failing every request.
    /// A `redis+cluster://` URL names its nodes after the scheme, split by
    /// commas, sharing one user and password; the messages never quote a
    /// URL, which may hold the password.
    fn redis(&self) -> Result<Option<RedisServers>, ConfigError> {
        let nodes = self.list("REDIS_CLUSTER_URLS");
        let url = self.text("REDIS_URL");
        if !nodes.is_empty() {
            if url.is_some() {
                return Err(ConfigError {
                    variable: "REDIS_CLUSTER_URLS",
                    message: "set it or REDIS_URL, not both".to_owned(),
                });
            }
            return Ok(Some(RedisServers::Cluster(
                nodes.into_iter().map(Secret).collect(),
            )));
        }
        let Some(url) = url else {
            return Ok(None);
        };
        let Some((scheme, rest)) = url
            .strip_prefix("redis+cluster://")
            .map(|rest| ("redis", rest))
            .or_else(|| {
                url.strip_prefix("rediss+cluster://")
                    .map(|rest| ("rediss", rest))
            })
        else {
            return Ok(Some(RedisServers::One(Secret(url))));
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (login, hosts) = match authority.rsplit_once('@') {
            Some((login, hosts)) => (format!("{login}@"), hosts),
            None => (String::new(), authority),
        };
        let nodes: Vec<Secret> = hosts
            .split(',')
            .map(str::trim)
            .filter(|host| !host.is_empty())
            .map(|host| Secret(format!("{scheme}://{login}{host}/{path}")))
            .collect();
        if nodes.is_empty() {
            return Err(ConfigError {
                variable: "REDIS_URL",
                message: "a `redis+cluster://` URL names no node".to_owned(),
            });
        }
        Ok(Some(RedisServers::Cluster(nodes)))
    }

    fn jwt(&self) -> Result<Option<Jwt>, ConfigError> {
        match (self.text("JWT_SECRET"), self.text("JWT_PUBLIC_KEY_FILE")) {
            (Some(_), Some(_)) => Err(ConfigError {
                variable: "JWT_PUBLIC_KEY_FILE",
                message: "set either JWT_SECRET or JWT_PUBLIC_KEY_FILE, not both".to_owned(),
            }),
            (Some(secret), None) if secret.len() < 32 => Err(ConfigError {
                variable: "JWT_SECRET",
                message: "must be at least 32 characters: a short HS256 secret can be guessed offline from any token".to_owned(),
            }),
            (Some(secret), None) => Ok(Some(Jwt {
                key: jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
                algorithm: jsonwebtoken::Algorithm::HS256,
            })),
            (None, Some(path)) => {
                let refuse = |message: String| ConfigError {
                    variable: "JWT_PUBLIC_KEY_FILE",
                    message,
                };
                let pem = std::fs::read(&path)
                    .map_err(|error| refuse(format!("cannot read `{path}`: {error}")))?;
                use jsonwebtoken::{Algorithm, DecodingKey};
                let parsed = DecodingKey::from_rsa_pem(&pem)
                    .map(|key| (key, Algorithm::RS256))
                    .or_else(|_| DecodingKey::from_ec_pem(&pem).map(|key| (key, Algorithm::ES256)))
                    .or_else(|_| DecodingKey::from_ed_pem(&pem).map(|key| (key, Algorithm::EdDSA)));
                match parsed {
                    Ok((key, algorithm)) => Ok(Some(Jwt { key, algorithm })),
                    Err(_) => Err(refuse(format!(
                        "`{path}` is not a PEM public key of RSA, EC P-256 or Ed25519"
                    ))),
                }
            }
            (None, None) => Ok(None),
        }
    }

    fn list(&self, name: &'static str) -> Vec<String> {
        self.text(name)
            .map(|raw| {
                raw.split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Both TLS files or neither; the pair must load as a certificate.
    fn tls_files(&self) -> Result<Option<TlsFiles>, ConfigError> {
        let (cert, key): (PathBuf, PathBuf) =
            match (self.text("TLS_CERT_FILE"), self.text("TLS_KEY_FILE")) {
                (None, None) => return Ok(None),
                (Some(cert), Some(key)) => (cert.into(), key.into()),
                (Some(_), None) => {
                    return Err(ConfigError {
                        variable: "TLS_KEY_FILE",
                        message: "unset, but TLS_CERT_FILE is set: HTTPS needs both".to_owned(),
                    });
                }
                (None, Some(_)) => {
                    return Err(ConfigError {
                        variable: "TLS_CERT_FILE",
                        message: "unset, but TLS_KEY_FILE is set: HTTPS needs both".to_owned(),
                    });
                }
            };
        let loaded = crate::server::tls::Tls::load(&cert, &key).map_err(|error| ConfigError {
            variable: error.file.variable(),
            message: error.message,
        })?;
        Ok(Some(TlsFiles {
            cert,
            key,
            loaded: Arc::new(loaded),
        }))
    }

    fn base_url(&self) -> Result<Option<String>, ConfigError> {
        let Some(raw) = self.text("UPSTREAM_BASE_URL") else {
            return Ok(None);
        };
        let valid = raw.parse::<axum::http::Uri>().ok().filter(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
        });
        match valid {
            Some(_) => Ok(Some(raw.trim_end_matches('/').to_owned())),
            None => Err(ConfigError {
                variable: "UPSTREAM_BASE_URL",
                message: format!("expected an http:// or https:// URL, got `{raw}`"),
            }),
        }
    }
}

/// The longest duration any setting takes: a year. Longer is a typo, and
/// deadlines computed from it must not overflow.
const MAX_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// `secs` as a duration when it lies from `min` to [`MAX_SECS`], else what
/// was expected: the one range check of every setting in seconds, in the
/// environment and in the file of upstreams alike.
fn seconds(secs: f64, min: f64) -> Result<Duration, String> {
    // NaN fails both comparisons, so it is refused too.
    (secs >= min && secs <= MAX_SECS)
        .then(|| Duration::try_from_secs_f64(secs).ok())
        .flatten()
        .ok_or_else(|| {
            format!("expected a number of seconds from {min} to {MAX_SECS}, got `{secs}`")
        })
}

/// The shortest duration where 0 makes no sense: below the timers' resolution.
const MIN_POSITIVE_SECS: f64 = 0.001;

/// The largest byte size any setting takes: 1 TiB.
const MAX_BYTES: usize = 1 << 40;

/// Far more connections (and streams) than one process can hold open; the
/// soft `RLIMIT_NOFILE` usually binds much earlier.
const MAX_CONNECTIONS: usize = 1_000_000;

/// The largest token count a setting may hold: far past any model's window,
/// and no sum of such counts can overflow.
const MAX_TOKENS: u64 = 1 << 40;

/// The largest `n` a limit may allow: more choices than any API serves.
const MAX_CHOICES: u64 = 128;

/// Retries happen before a client sees a byte; more than this only delays
/// the error.
const MAX_RETRIES: u32 = 100;

fn default_of(name: &str) -> Option<&'static str> {
    SETTINGS
        .iter()
        .find(|setting| setting.name == name)
        .and_then(|setting| setting.default)
}

fn nonzero(duration: Duration) -> Option<Duration> {
    (!duration.is_zero()).then_some(duration)
}

fn nonzero_count<T: Default + PartialEq>(value: T) -> Option<T> {
    (value != T::default()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_spec() {
        let config = parse(&[]).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:3000");
        assert!(config.uses_demo());
        assert_eq!(config.keepalive, Duration::from_secs(15));
        assert_eq!(config.upstream_retries, 2);
        assert_eq!(config.timeouts.total, None);
        assert_eq!(config.resume.grace, Duration::from_secs(15));
        assert_eq!(config.resume.ttl, Duration::from_secs(300));
        assert_eq!(config.max_body_bytes, 1024 * 1024);
        assert_eq!(config.rate_limit_per_minute, None);
        assert_eq!(config.log_format, LogFormat::Text);
        assert!(
            config.tls.is_none(),
            "plain HTTP unless both TLS files are set"
        );
        assert_eq!(config.http2.max_concurrent_streams, 250);
    }

    #[test]
    fn redis_is_one_server_or_the_nodes_of_a_cluster() {
        let redis = |pairs: &[(&str, &str)]| parse(pairs).map(|config| config.redis);
        let nodes = |urls: &[&str]| {
            Ok(Some(RedisServers::Cluster(
                urls.iter()
                    .map(|url| Secret::new((*url).to_owned()))
                    .collect(),
            )))
        };

        assert_eq!(redis(&[]), Ok(None));
        assert_eq!(
            redis(&[("REDIS_URL", "redis://10.0.0.1:6379/")]),
            Ok(Some(RedisServers::One(Secret::new(
                "redis://10.0.0.1:6379/".to_owned()
            ))))
        );
        assert_eq!(
            redis(&[("REDIS_URL", "redis+cluster://:pw@a:7000,b:7001/")]),
            nodes(&["redis://:pw@a:7000/", "redis://:pw@b:7001/"])
        );
        assert_eq!(
            redis(&[("REDIS_URL", "rediss+cluster://a:7000")]),
            nodes(&["rediss://a:7000/"])
        );
        assert_eq!(
            redis(&[("REDIS_CLUSTER_URLS", "redis://a:7000, redis://b:7001")]),
            nodes(&["redis://a:7000", "redis://b:7001"])
        );
        let both = redis(&[
            ("REDIS_URL", "redis://a:6379/"),
            ("REDIS_CLUSTER_URLS", "redis://b:7000"),
        ]);
        assert_eq!(
            both.map_err(|error| error.to_string()),
            Err("invalid REDIS_CLUSTER_URLS: set it or REDIS_URL, not both".to_owned())
        );
        let empty = redis(&[("REDIS_URL", "redis+cluster://:secret@/")]);
        let empty = empty.map_err(|error| error.to_string());
        assert!(
            empty
                .as_ref()
                .is_err_and(|message| !message.contains("secret")),
            "{empty:?}"
        );
    }

    #[test]
    fn one_tls_file_without_the_other_names_the_missing_one() {
        let only_cert = parse(&[("TLS_CERT_FILE", "/etc/ssl/cert.pem")]).err();
        let only_key = parse(&[("TLS_KEY_FILE", "/etc/ssl/key.pem")]).err();
        let missing = parse(&[
            ("TLS_CERT_FILE", "/nonexistent/cert.pem"),
            ("TLS_KEY_FILE", "/nonexistent/key.pem"),
        ])
        .err();

        assert_eq!(only_cert.map(|error| error.variable), Some("TLS_KEY_FILE"));
        assert_eq!(only_key.map(|error| error.variable), Some("TLS_CERT_FILE"));
        let missing = missing.map(|error| error.to_string()).unwrap_or_default();
        assert!(
            missing.starts_with("invalid TLS_CERT_FILE: cannot read `/nonexistent/cert.pem`"),
            "{missing}"
        );
    }

    #[test]
    fn invalid_or_out_of_range_values_name_the_variable() {
        let cases = [
            ("LISTEN_ADDR", "nowhere"),
            ("UPSTREAM_BASE_URL", "ftp://example.com"),
            ("UPSTREAM_IDLE_TIMEOUT_SECS", "soon"),
            ("UPSTREAM_IDLE_TIMEOUT_SECS", "0"),
            ("KEEPALIVE_SECS", "-1"),
            ("MAX_BODY_BYTES", "0"),
            ("LOG_FORMAT", "xml"),
            // Outside a sane range:
            ("UPSTREAM_TOTAL_TIMEOUT_SECS", "1e15"),
            ("SHUTDOWN_GRACE_SECS", "31536001"),
            ("RESUME_TTL_SECS", "NaN"),
            ("RESUME_GRACE_SECS", "inf"),
            ("REQUEST_TIMEOUT_SECS", "-0.5"),
            ("KEEPALIVE_SECS", "0.0000001"),
            ("MAX_CONNECTIONS", "0"),
            ("MAX_CONNECTIONS", "2305843009213693952"),
            ("MAX_CONNECTIONS", "99999999999999999999999"),
            ("MAX_CONCURRENT_STREAMS", "18446744073709551615"),
            ("UPSTREAM_RETRIES", "4294967295"),
            ("UPSTREAM_KIND", "claude"),
            ("RATE_LIMIT_PER_MINUTE", "4294967296"),
            ("MAX_BODY_BYTES", "18446744073709551615"),
            ("RESUME_MAX_TOTAL_BYTES", "1e9"),
            ("HTTP2_MAX_CONCURRENT_STREAMS", "0"),
            ("HTTP2_MAX_CONCURRENT_STREAMS", "4294967296"),
            ("HTTP2_PING_INTERVAL_SECS", "0"),
            ("HTTP2_PING_TIMEOUT_SECS", "never"),
        ];
        for (variable, value) in cases {
            let error = parse(&[(variable, value)]).err();
            assert_eq!(
                error.map(|error| error.variable),
                Some(variable),
                "{variable}={value} should be refused"
            );
        }
        let longest = parse(&[
            ("RESUME_TTL_SECS", "31536000"),
            ("MAX_CONNECTIONS", "1000000"),
        ])
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(longest.resume.ttl, Duration::from_secs(31_536_000));
    }

    #[test]
    fn zero_means_unlimited_where_documented() {
        let config = parse(&[
            ("UPSTREAM_TOTAL_TIMEOUT_SECS", "0"),
            ("MAX_CONCURRENT_STREAMS", "0"),
            ("RESUME_GRACE_SECS", "0"),
        ])
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(config.timeouts.total, None);
        assert_eq!(config.max_concurrent_streams, None);
        assert_eq!(config.resume.grace, Duration::ZERO);
    }

    #[test]
    fn lists_are_trimmed_and_secrets_hidden() {
        let config = parse(&[
            ("PROXY_API_KEYS", " alpha, beta ,,"),
            ("UPSTREAM_API_KEY", "sk-very-secret"),
            ("UPSTREAM_BASE_URL", "https://api.example.com/v1/"),
        ])
        .unwrap_or_else(|error| panic!("{error}"));
        let keys: Vec<&str> = config.proxy_api_keys.iter().map(Secret::expose).collect();
        assert_eq!(keys, ["alpha", "beta"]);
        assert_eq!(
            config.upstream_base_url.as_deref(),
            Some("https://api.example.com/v1")
        );
        assert!(!format!("{config:?}").contains("sk-very-secret"));
    }

    #[test]
    fn flags_win_over_the_environment() {
        let args = ["tokenrelay", "--keepalive-secs", "3"].map(std::ffi::OsString::from);
        let env = |name: &str| match name {
            "KEEPALIVE_SECS" => Some("7".to_owned()),
            "RESUME_TTL_SECS" => Some("9".to_owned()),
            _ => None,
        };
        let config = Config::from_args(args, env).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(config.keepalive, Duration::from_secs(3));
        assert_eq!(config.resume.ttl, Duration::from_secs(9));
    }

    #[test]
    fn env_example_lists_every_setting() {
        let example = include_str!("../../.env.example");
        for setting in SETTINGS {
            assert!(
                example.contains(&format!("{}=", setting.name)),
                "{} is missing from .env.example",
                setting.name
            );
        }
    }
}
