//! What a caller may ask for, so that a public page in front of tokenrelay
//! is not an open relay on the server's key: which models, how long an
//! answer, how many choices, how big a prompt (README, Safe for a public
//! page). The operator's limits come from the configuration; a signed token
//! may narrow them further for its one user ([`Grant`]).
//!
//! Checked once, where every surface starts a generation, so `/api/chat`,
//! `/v1` and every later surface obey the same rules. `budget` counts what
//! each caller's generations cost against `TOKENS_PER_MINUTE`.

mod budget;

use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;

use self::budget::Budget;
use crate::config::Limits;
use crate::error::Error;
use crate::request::ChatRequest;
use crate::streams::{Cluster, Source};

/// What one caller's credentials allow beyond the operator's limits (the
/// `models` and `max_tokens` claims of a signed token; the default narrows
/// nothing), and whose budget its generations count against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Grant {
    pub(crate) models: Option<Vec<String>>,
    pub(crate) max_tokens: Option<u64>,
    /// The key or token subject, else the client's address.
    pub(crate) account: String,
}

/// The operator's limits.
#[derive(Debug, Default)]
pub(crate) struct Policy {
    limits: Limits,
    budget: Option<Arc<Budget>>,
}

impl Policy {
    /// `limits`, and `tokens_per_minute` per caller, counted across the
    /// replicas of `cluster` when there is one.
    pub(crate) fn new(
        limits: Limits,
        tokens_per_minute: Option<u64>,
        cluster: Option<Cluster>,
    ) -> Self {
        Self {
            limits,
            budget: tokens_per_minute.map(|per_minute| Arc::new(Budget::new(per_minute, cluster))),
        }
    }

    /// Refuses a caller whose tokens for this minute are spent.
    pub(crate) async fn afford(&self, grant: &Grant) -> Result<(), Error> {
        match &self.budget {
            Some(budget) => budget.admit(&grant.account).await,
            None => Ok(()),
        }
    }

    /// The characters of text `request` holds, when a budget needs them
    /// to estimate a generation's cost that reports no usage.
    pub(crate) fn prompt_chars(&self, request: &ChatRequest) -> usize {
        match self.budget {
            Some(_) => request.messages().iter().map(text_chars).sum(),
            None => 0,
        }
    }

    /// `source`, its cost counted against the caller's budget once it ends;
    /// `prompt_chars` is what [`prompt_chars`](Self::prompt_chars) said.
    pub(crate) fn meter(
        &self,
        grant: &Grant,
        prompt_chars: usize,
        source: Pin<Box<dyn Source>>,
    ) -> Pin<Box<dyn Source>> {
        match &self.budget {
            Some(budget) => budget.meter(source, grant.account.clone(), prompt_chars),
            None => source,
        }
    }

    /// Refuses a request for `model` that asks for more than `grant` and
    /// the operator allow, naming the limit; gives a request that sets no
    /// length limit the largest one allowed, so that no request is unbounded.
    pub(crate) fn admit(
        &self,
        grant: &Grant,
        model: &str,
        request: &mut ChatRequest,
    ) -> Result<(), Error> {
        let limits = &self.limits;
        if !limits.allowed_models.is_empty() && !matches_any(&limits.allowed_models, model) {
            return Err(Error::InvalidRequest(format!(
                "model `{model}` is not allowed here; ALLOWED_MODELS allows {}",
                limits.allowed_models.join(", ")
            )));
        }
        if let Some(models) = &grant.models {
            if !matches_any(models, model) {
                return Err(Error::InvalidRequest(format!(
                    "model `{model}` is not allowed for this token; its `models` claim allows {}",
                    if models.is_empty() {
                        "none".to_owned()
                    } else {
                        models.join(", ")
                    }
                )));
            }
        }
        let (ceiling, by) = match (limits.max_output_tokens, grant.max_tokens) {
            (Some(ours), Some(theirs)) if theirs < ours => {
                (Some(theirs), "this token's `max_tokens` claim")
            }
            (Some(ours), _) => (Some(ours), "MAX_OUTPUT_TOKENS"),
            (None, Some(theirs)) => (Some(theirs), "this token's `max_tokens` claim"),
            (None, None) => (None, ""),
        };
        if let Some(ceiling) = ceiling {
            match request.output_limit()? {
                Some(asked) if asked > ceiling => {
                    return Err(Error::InvalidRequest(format!(
                        "`max_tokens` of {asked} is above the limit of {ceiling} ({by})"
                    )));
                }
                Some(_) => {}
                None => request.set_output_limit(ceiling),
            }
        }
        if let Some(max) = limits.max_choices {
            let asked = request.choices()?;
            if asked > max {
                return Err(Error::InvalidRequest(format!(
                    "`n` of {asked} is above the limit of {max} choices (MAX_CHOICES)"
                )));
            }
        }
        let messages = request.messages();
        if let Some(max) = limits.max_prompt_messages {
            if messages.len() > max {
                return Err(Error::InvalidRequest(format!(
                    "the request holds {} messages, above the limit of {max} (MAX_PROMPT_MESSAGES)",
                    messages.len()
                )));
            }
        }
        if let Some(max) = limits.max_prompt_chars {
            let chars: usize = messages.iter().map(text_chars).sum();
            if chars > max {
                return Err(Error::InvalidRequest(format!(
                    "the messages hold {chars} characters of text, above the limit of {max} (MAX_PROMPT_CHARS)"
                )));
            }
        }
        Ok(())
    }
}

/// The characters of text in a message: its content, as a string or text
/// parts, and the arguments of the tool calls it made.
fn text_chars(message: &Value) -> usize {
    let content = match &message["content"] {
        Value::String(text) => text.chars().count(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part["text"].as_str())
            .map(|text| text.chars().count())
            .sum(),
        _ => 0,
    };
    let calls: usize = message["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|call| call["function"]["arguments"].as_str())
        .map(|arguments| arguments.chars().count())
        .sum();
    content + calls
}

/// Whether `name` matches one of `patterns`, where `*` stands for any run
/// of characters.
fn matches_any(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|pattern| wildcard(pattern, name))
}

fn wildcard(pattern: &str, name: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        // No `*` at all: the whole name must be the pattern.
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request(body: Value) -> ChatRequest {
        ChatRequest::from_json(body.to_string().as_bytes())
            .unwrap_or_else(|error| panic!("{error}"))
    }

    #[test]
    fn globs_match_whole_names() {
        let cases = [
            ("gpt-4o*", "gpt-4o-mini", true),
            ("gpt-4o*", "gpt-4", false),
            ("groq/*", "groq/llama-3.1-8b", true),
            ("*-mini", "gpt-4o-mini", true),
            ("claude-*-4-5", "claude-sonnet-4-5", true),
            ("claude-*-4-5", "claude-sonnet-4-5-x", false),
            ("chat", "chat", true),
            ("chat", "chatty", false),
            ("*", "anything", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "acb", false),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(wildcard(pattern, name), expected, "{pattern} {name}");
        }
    }

    #[test]
    fn each_limit_refuses_naming_itself_and_a_missing_length_limit_is_filled_in() {
        let policy = Policy::new(
            Limits {
                allowed_models: vec!["gpt-4o*".to_owned(), "chat".to_owned()],
                max_output_tokens: Some(500),
                max_choices: Some(2),
                max_prompt_messages: Some(3),
                max_prompt_chars: Some(20),
            },
            None,
            None,
        );
        let open = Grant::default();
        let cases = [
            (
                "o1",
                json!({"prompt": "hi"}),
                "ALLOWED_MODELS allows gpt-4o*, chat",
            ),
            (
                "chat",
                json!({"prompt": "hi", "max_tokens": 501}),
                "limit of 500 (MAX_OUTPUT_TOKENS)",
            ),
            (
                "chat",
                json!({"prompt": "hi", "max_completion_tokens": 900}),
                "`max_tokens` of 900",
            ),
            (
                "chat",
                json!({"prompt": "hi", "n": 3}),
                "limit of 2 choices (MAX_CHOICES)",
            ),
            (
                "chat",
                json!({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}, {"role": "user", "content": "d"}]}),
                "4 messages, above the limit of 3",
            ),
            (
                "chat",
                json!({"prompt": "twenty-one characters"}),
                "21 characters",
            ),
            (
                "chat",
                json!({"prompt": "hi", "max_tokens": "lots"}),
                "must be a whole number",
            ),
        ];
        for (model, body, expected) in cases {
            let refusal = policy.admit(&open, model, &mut request(body.clone()));
            assert!(
                refusal
                    .as_ref()
                    .is_err_and(|error| error.message().contains(expected)),
                "{body}: {refusal:?}"
            );
        }
        let mut unbounded = request(json!({"prompt": "hi"}));
        assert_eq!(policy.admit(&open, "gpt-4o-mini", &mut unbounded), Ok(()));
        assert_eq!(unbounded.output_limit(), Ok(Some(500)));
    }

    #[test]
    fn a_grant_narrows_but_never_widens() {
        let policy = Policy::new(
            Limits {
                max_output_tokens: Some(500),
                ..Limits::default()
            },
            None,
            None,
        );
        let narrow = Grant {
            models: Some(vec!["gpt-4o-mini".to_owned()]),
            max_tokens: Some(100),
            account: "a".to_owned(),
        };
        let wide = Grant {
            models: None,
            max_tokens: Some(10_000),
            account: "b".to_owned(),
        };
        let refused = policy.admit(&narrow, "gpt-4o", &mut request(json!({"prompt": "hi"})));
        assert!(refused.is_err_and(|error| {
            error
                .message()
                .contains("`models` claim allows gpt-4o-mini")
        }));
        let mut capped = request(json!({"prompt": "hi"}));
        assert_eq!(policy.admit(&narrow, "gpt-4o-mini", &mut capped), Ok(()));
        assert_eq!(capped.output_limit(), Ok(Some(100)));
        let over = policy.admit(
            &wide,
            "x",
            &mut request(json!({"prompt": "hi", "max_tokens": 600})),
        );
        assert!(
            over.is_err_and(|error| error.message().contains("limit of 500 (MAX_OUTPUT_TOKENS)"))
        );
    }
}
