//! The file of upstreams and models (`TOKENRELAY_CONFIG`, README
//! "Several upstreams"): parsed once at start into the typed
//! [`Topology`], or refused with the line and the problem.
//!
//! `${VAR}` anywhere in a string is replaced by that variable, read through
//! the same lookup as every other setting; an unset one stops the server,
//! naming it, rather than sending an empty key upstream.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, MAX_RETRIES, MIN_POSITIVE_SECS, Secret, Timeouts, seconds};

const VARIABLE: &str = "TOKENRELAY_CONFIG";

/// Every upstream and the model names clients ask for.
#[derive(Debug, Clone)]
pub struct Topology {
    /// By name, in the file's order.
    pub upstreams: Vec<UpstreamSettings>,
    /// By name, in the file's order.
    pub models: Vec<ModelRoute>,
    pub default_model: Option<String>,
    pub cooldown: Cooldown,
}

/// One upstream: where it is, how to reach it, and its own limits.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub name: String,
    pub kind: Kind,
    pub base_url: String,
    pub api_key: Option<Secret>,
    /// Sent with every request, after the dialect's own.
    pub headers: Vec<(String, String)>,
    /// Added to every request's URL (Azure's `api-version`).
    pub query: Vec<(String, String)>,
    pub timeouts: Timeouts,
    pub retries: u32,
    pub max_line_bytes: usize,
    /// Most requests open to it at once; `None`: no limit of its own.
    pub max_concurrent: Option<usize>,
    /// The answer's length limit when a request sets none, for APIs that
    /// require one (Anthropic's `max_tokens`).
    pub max_tokens: Option<u64>,
}

/// Which API an upstream speaks (SPEC §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    /// OpenAI's chat completions, and everything compatible with it.
    #[default]
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
    /// Google's Gemini API (`generativelanguage.googleapis.com`).
    Gemini,
    /// OpenAI's Responses API.
    OpenAiResponses,
}

impl Kind {
    /// Every kind, by the name the configuration uses.
    pub const NAMES: [(&'static str, Self); 4] = [
        ("openai", Self::OpenAi),
        ("anthropic", Self::Anthropic),
        ("gemini", Self::Gemini),
        ("openai-responses", Self::OpenAiResponses),
    ];

    /// The kind named `name`, or a message listing the names there are.
    pub fn parse(name: &str) -> Result<Self, String> {
        Self::NAMES
            .iter()
            .find(|(known, _)| *known == name)
            .map(|&(_, kind)| kind)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::NAMES.iter().map(|(known, _)| *known).collect();
                format!(
                    "`{name}` is not a kind tokenrelay speaks; use one of {}",
                    names.join(", ")
                )
            })
    }
}

/// How the targets of a model name are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// In the order given.
    Fallback,
    /// A weighted random order: a target with twice the weight comes first
    /// twice as often.
    Weighted,
    /// The lowest recent time to first token first; ties, and upstreams not
    /// measured yet, at random.
    Latency,
}

/// When an upstream is skipped.
#[derive(Debug, Clone, Copy)]
pub struct Cooldown {
    /// Failures in a row that start a cooldown.
    pub after: u32,
    pub length: Duration,
}

/// A name clients ask for, and the upstream models that serve it, in order.
#[derive(Debug, Clone)]
pub struct ModelRoute {
    pub name: String,
    pub targets: Vec<Target>,
    pub strategy: Strategy,
    /// How long a target may take to its first content before the next is
    /// tried; never applied to the last.
    pub ttft_timeout: Option<Duration>,
}

/// `UPSTREAM/MODEL`: a model of one upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub upstream: String,
    pub model: String,
    /// Its share under [`Strategy::Weighted`].
    pub weight: u32,
}

impl Target {
    /// `UPSTREAM/MODEL` when `UPSTREAM` is one of `upstreams`; the model
    /// may itself contain slashes (`openrouter/meta-llama/llama-3`).
    pub fn parse(text: &str, upstreams: &[UpstreamSettings]) -> Option<Self> {
        let (upstream, model) = text.split_once('/')?;
        (!model.is_empty() && upstreams.iter().any(|known| known.name == upstream)).then(|| Self {
            upstream: upstream.to_owned(),
            model: model.to_owned(),
            weight: 1,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    default_model: Option<String>,
    cooldown_after: Option<u32>,
    cooldown_secs: Option<f64>,
    #[serde(default)]
    upstreams: BTreeMap<String, UpstreamEntry>,
    #[serde(default)]
    models: BTreeMap<String, ModelEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamEntry {
    kind: Option<String>,
    base_url: String,
    api_key: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    query: BTreeMap<String, String>,
    connect_timeout_secs: Option<f64>,
    headers_timeout_secs: Option<f64>,
    idle_timeout_secs: Option<f64>,
    total_timeout_secs: Option<f64>,
    retries: Option<u32>,
    max_concurrent: Option<usize>,
    max_tokens: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelEntry {
    targets: Vec<TargetEntry>,
    strategy: Option<String>,
    ttft_timeout_secs: Option<f64>,
}

/// `"UPSTREAM/MODEL"`, or `{ target = "UPSTREAM/MODEL", weight = 3 }`.
#[derive(Deserialize)]
#[serde(untagged)]
enum TargetEntry {
    Plain(String),
    Weighted { target: String, weight: u32 },
}

/// Parses the file at `path` (its text is `text`), over the `UPSTREAM_*`
/// settings in `defaults`, expanding `${VAR}` through `lookup`.
pub(super) fn parse(
    path: &str,
    text: &str,
    defaults: &UpstreamSettings,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Topology, ConfigError> {
    let refuse = |message: String| ConfigError {
        variable: VARIABLE,
        message: format!("{path}: {message}"),
    };
    let file: File = toml::from_str(text).map_err(|error| refuse(error.to_string()))?;
    let expand = |where_: &str, value: &str| {
        expand(value, lookup).map_err(|problem| refuse(format!("{where_}: {problem}")))
    };
    let mut upstreams = Vec::new();
    for (name, entry) in file.upstreams {
        if name.is_empty() || name.contains('/') {
            return Err(refuse(format!(
                "upstream name `{name}` must be non-empty and contain no `/`"
            )));
        }
        let at = |key: &str| format!("upstreams.{name}.{key}");
        let kind = match entry.kind.as_deref() {
            None => Kind::OpenAi,
            Some(kind) => {
                Kind::parse(kind).map_err(|problem| refuse(format!("{}: {problem}", at("kind"))))?
            }
        };
        let base_url = expand(&at("base_url"), &entry.base_url)?;
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(refuse(format!(
                "{}: expected an http:// or https:// URL, got `{base_url}`",
                at("base_url")
            )));
        }
        let pairs = |table: BTreeMap<String, String>, key: &str| {
            table
                .into_iter()
                .map(|(field, value)| {
                    Ok((
                        field.clone(),
                        expand(&format!("{}.{field}", at(key)), &value)?,
                    ))
                })
                .collect::<Result<Vec<_>, ConfigError>>()
        };
        let secs = |value: Option<f64>, key: &str, default: Duration| match value {
            None => Ok(default),
            Some(secs) => seconds(secs, MIN_POSITIVE_SECS)
                .map_err(|problem| refuse(format!("{}: {problem}", at(key)))),
        };
        let retries = match entry.retries {
            Some(retries) if retries > MAX_RETRIES => {
                return Err(refuse(format!(
                    "{}: expected at most {MAX_RETRIES}, got {retries}",
                    at("retries")
                )));
            }
            retries => retries.unwrap_or(defaults.retries),
        };
        upstreams.push(UpstreamSettings {
            base_url,
            api_key: match &entry.api_key {
                Some(key) => Some(Secret(expand(&at("api_key"), key)?)),
                None => None,
            },
            headers: pairs(entry.headers, "headers")?,
            query: pairs(entry.query, "query")?,
            timeouts: Timeouts {
                connect: secs(
                    entry.connect_timeout_secs,
                    "connect_timeout_secs",
                    defaults.timeouts.connect,
                )?,
                headers: secs(
                    entry.headers_timeout_secs,
                    "headers_timeout_secs",
                    defaults.timeouts.headers,
                )?,
                idle: secs(
                    entry.idle_timeout_secs,
                    "idle_timeout_secs",
                    defaults.timeouts.idle,
                )?,
                total: match entry.total_timeout_secs {
                    None => defaults.timeouts.total,
                    Some(total) => Some(secs(Some(total), "total_timeout_secs", Duration::ZERO)?),
                },
            },
            retries,
            max_line_bytes: defaults.max_line_bytes,
            max_concurrent: match entry.max_concurrent {
                Some(max) if !(1..=1_000_000).contains(&max) => {
                    return Err(refuse(format!(
                        "{}: expected a whole number from 1 to 1000000, got {max}",
                        at("max_concurrent")
                    )));
                }
                max => max,
            },
            max_tokens: match entry.max_tokens {
                Some(0) => {
                    return Err(refuse(format!(
                        "{}: expected a whole number above 0",
                        at("max_tokens")
                    )));
                }
                max => max,
            },
            kind,
            name,
        });
    }
    if upstreams.is_empty() {
        return Err(refuse("no `[upstreams.NAME]` is declared".to_owned()));
    }
    let mut models = Vec::new();
    for (name, entry) in file.models {
        if entry.targets.is_empty() {
            return Err(refuse(format!("models.{name}.targets: is empty")));
        }
        let targets = entry
            .targets
            .iter()
            .map(|target| {
                let (text, weight) = match target {
                    TargetEntry::Plain(text) => (text, 1),
                    TargetEntry::Weighted { target, weight } => (target, *weight),
                };
                let parsed = Target::parse(text, &upstreams).map(|target| Target { weight, ..target });
                parsed.ok_or_else(|| {
                    refuse(format!(
                        "models.{name}.targets: `{text}` is not UPSTREAM/MODEL with a declared upstream ({})",
                        upstreams.iter().map(|upstream| upstream.name.as_str()).collect::<Vec<_>>().join(", ")
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ttft_timeout = entry
            .ttft_timeout_secs
            .map(|secs| seconds(secs, MIN_POSITIVE_SECS))
            .transpose()
            .map_err(|problem| refuse(format!("models.{name}.ttft_timeout_secs: {problem}")))?;
        let strategy = match entry.strategy.as_deref() {
            None | Some("fallback") => Strategy::Fallback,
            Some("weighted") => Strategy::Weighted,
            Some("latency") => Strategy::Latency,
            Some(other) => {
                return Err(refuse(format!(
                    "models.{name}.strategy: expected `fallback`, `weighted` or `latency`, got `{other}`"
                )));
            }
        };
        models.push(ModelRoute {
            name,
            targets,
            strategy,
            ttft_timeout,
        });
    }
    let cooldown = Cooldown {
        after: file.cooldown_after.unwrap_or(3).max(1),
        length: match file.cooldown_secs {
            None => Duration::from_secs(30),
            Some(secs) => {
                seconds(secs, 0.0).map_err(|problem| refuse(format!("cooldown_secs: {problem}")))?
            }
        },
    };
    Ok(Topology {
        upstreams,
        models,
        default_model: file.default_model,
        cooldown,
    })
}

/// `value` with every `${VAR}` replaced by `lookup(VAR)`.
fn expand(value: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "a `${` is not closed by `}`".to_owned())?;
        let name = &after[..end];
        let found = lookup(name).filter(|found| !found.is_empty());
        match found {
            Some(found) => out.push_str(&found),
            None => return Err(format!("`${{{name}}}` is not set in the environment")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> UpstreamSettings {
        UpstreamSettings {
            name: "default".to_owned(),
            kind: Kind::OpenAi,
            base_url: String::new(),
            api_key: None,
            headers: Vec::new(),
            query: Vec::new(),
            timeouts: Timeouts {
                connect: Duration::from_secs(10),
                headers: Duration::from_secs(60),
                idle: Duration::from_secs(60),
                total: None,
            },
            retries: 2,
            max_line_bytes: 1 << 20,
            max_concurrent: None,
            max_tokens: None,
        }
    }

    fn parse_with(text: &str, env: &[(&str, &str)]) -> Result<Topology, ConfigError> {
        let lookup = |name: &str| {
            env.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        };
        parse("up.toml", text, &defaults(), &lookup)
    }

    #[test]
    fn upstreams_and_models_are_read_with_variables_and_overrides() {
        let topology = parse_with(
            r#"
default_model = "chat"
[upstreams.azure]
base_url = "https://${AZURE_HOST}/openai/deployments/gpt"
api_key = "${AZURE_KEY}"
headers = { "api-key" = "${AZURE_KEY}" }
query = { "api-version" = "2024-10-21" }
idle_timeout_secs = 5
retries = 0
[upstreams.local]
base_url = "http://127.0.0.1:11434/v1"
[models.chat]
targets = ["azure/gpt-4o-mini", { target = "local/meta/llama3", weight = 4 }]
strategy = "weighted"
"#,
            &[("AZURE_HOST", "x.openai.azure.com"), ("AZURE_KEY", "k1")],
        )
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(topology.default_model.as_deref(), Some("chat"));
        let azure = &topology.upstreams[0];
        assert_eq!(
            azure.base_url,
            "https://x.openai.azure.com/openai/deployments/gpt"
        );
        assert_eq!(azure.api_key.as_ref().map(Secret::expose), Some("k1"));
        assert_eq!(azure.headers, [("api-key".to_owned(), "k1".to_owned())]);
        assert_eq!(
            azure.query,
            [("api-version".to_owned(), "2024-10-21".to_owned())]
        );
        assert_eq!(azure.timeouts.idle, Duration::from_secs(5));
        assert_eq!(azure.timeouts.connect, Duration::from_secs(10));
        assert_eq!(azure.retries, 0);
        assert_eq!(topology.upstreams[1].retries, 2);
        assert_eq!(
            topology.models[0].targets,
            [
                Target {
                    upstream: "azure".to_owned(),
                    model: "gpt-4o-mini".to_owned(),
                    weight: 1
                },
                Target {
                    upstream: "local".to_owned(),
                    model: "meta/llama3".to_owned(),
                    weight: 4
                },
            ]
        );
    }

    #[test]
    fn the_shipped_example_parses() {
        let example = include_str!("../../tokenrelay.example.toml");
        let env = [
            ("OPENAI_API_KEY", "sk-1"),
            ("AZURE_OPENAI_API_KEY", "az-1"),
            ("GROQ_API_KEY", "gsk-1"),
            ("ANTHROPIC_API_KEY", "sk-ant-1"),
            ("GEMINI_API_KEY", "AIza-1"),
        ];
        let topology = parse_with(example, &env).unwrap_or_else(|error| panic!("{error}"));
        let names: Vec<&str> = topology.upstreams.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "anthropic",
                "azure",
                "gemini",
                "groq",
                "local",
                "openai",
                "responses"
            ]
        );
        let kinds: Vec<Kind> = topology.upstreams.iter().map(|u| u.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::Anthropic,
                Kind::OpenAi,
                Kind::Gemini,
                Kind::OpenAi,
                Kind::OpenAi,
                Kind::OpenAi,
                Kind::OpenAiResponses
            ]
        );
        assert_eq!(topology.upstreams[0].max_tokens, Some(8192));
        assert_eq!(topology.models.len(), 4);
        assert_eq!(topology.default_model.as_deref(), Some("chat"));
    }

    #[test]
    fn a_bad_file_is_refused_with_where_and_what() {
        let cases = [
            ("[upstreams.a]\nbase_url = ", "line 2"),
            (
                "[upstreams.a]\nbase_url = \"http://h\"\nunknown = 1",
                "unknown field `unknown`",
            ),
            (
                "[upstreams.a]\nbase_url = \"${NOPE}\"",
                "`${NOPE}` is not set",
            ),
            (
                "[upstreams.a]\nbase_url = \"ftp://h\"",
                "upstreams.a.base_url",
            ),
            (
                "[upstreams.a]\nbase_url = \"http://h\"\nkind = \"smoke\"",
                "upstreams.a.kind: `smoke` is not a kind tokenrelay speaks; use one of openai, anthropic, gemini, openai-responses",
            ),
            (
                "[upstreams.a]\nbase_url = \"http://h\"\nmax_tokens = 0",
                "upstreams.a.max_tokens: expected a whole number above 0",
            ),
            (
                "[upstreams.a]\nbase_url = \"http://h\"\nidle_timeout_secs = 1e12",
                "upstreams.a.idle_timeout_secs",
            ),
            (
                "[upstreams.a]\nbase_url = \"http://h\"\n[models.m]\ntargets = [\"b/x\"]",
                "`b/x` is not UPSTREAM/MODEL",
            ),
            (
                "[upstreams.a]\nbase_url = \"http://h\"\n[models.m]\ntargets = []",
                "models.m.targets: is empty",
            ),
            ("default_model = \"m\"", "no `[upstreams.NAME]`"),
        ];
        for (text, expected) in cases {
            let error = parse_with(text, &[])
                .err()
                .unwrap_or_else(|| panic!("{text} was accepted"));
            assert_eq!(error.variable, VARIABLE);
            assert!(
                error.message.starts_with("up.toml: ") && error.message.contains(expected),
                "{text}: {}",
                error.message
            );
        }
    }
}
