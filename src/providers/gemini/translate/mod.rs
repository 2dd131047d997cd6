//! Turns Gemini's `streamGenerateContent?alt=sse` stream into our events.
//! Every SSE data is one whole `GenerateContentResponse`: candidates with
//! their new parts (text, thought summaries, whole function calls) and,
//! once, their `finishReason`, beside a running `usageMetadata`. There is
//! no end marker, so the finish is only known when the body ends: then every
//! candidate must have said why it stopped. Pure, like every translator: one
//! call per SSE event, no I/O.

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::event::{ErrorCode, FinishReason, StreamEvent};
use crate::providers::{DISCONNECTED, Translate, counted_usage, describe_error, not_json, quoted};

/// Gemini's `finishReason`s that end an answer as it should end. Any other
/// (`MALFORMED_FUNCTION_CALL`, `UNEXPECTED_TOOL_CALL`, `OTHER`,
/// `FINISH_REASON_UNSPECIFIED`, reasons added later) fails the stream:
/// none of them may pass for a complete answer. `STOP` after a function
/// call becomes `tool_calls` at the end.
const FINISH_REASONS: [(&str, FinishReason); 11] = [
    ("STOP", FinishReason::Stop),
    ("MAX_TOKENS", FinishReason::Length),
    ("SAFETY", FinishReason::ContentFilter),
    ("RECITATION", FinishReason::ContentFilter),
    ("BLOCKLIST", FinishReason::ContentFilter),
    ("PROHIBITED_CONTENT", FinishReason::ContentFilter),
    ("SPII", FinishReason::ContentFilter),
    ("IMAGE_SAFETY", FinishReason::ContentFilter),
    ("IMAGE_PROHIBITED_CONTENT", FinishReason::ContentFilter),
    ("IMAGE_RECITATION", FinishReason::ContentFilter),
    ("LANGUAGE", FinishReason::ContentFilter),
];

/// Per-stream state: what must survive from one response to the next.
#[derive(Debug, Default)]
pub(super) struct Translator {
    done: bool,
    /// Every candidate seen, in the order they first appeared.
    candidates: Vec<Candidate>,
    /// The first `responseId`, which names the calls Gemini gave no id.
    response_id: Option<String>,
    /// The last `usageMetadata`: Gemini's counts are a running total.
    usage: Option<(Counts, Box<RawValue>)>,
    /// The prompt itself was blocked: no candidate will come.
    blocked: bool,
}

#[derive(Debug)]
struct Candidate {
    index: u32,
    /// How many function calls it made: the next call's tool-call index.
    calls: u32,
    finish: Option<FinishReason>,
}

impl Translate for Translator {
    fn push(&mut self, event_type: &str, data: &str, out: &mut Vec<StreamEvent>) {
        // Gemini names no events; a named one is not a response.
        if self.done || !matches!(event_type, "message" | "") {
            return;
        }
        let data = data.trim_ascii();
        if data.is_empty() {
            return;
        }
        // A derived struct also accepts a JSON array positionally; a
        // response is always an object.
        if !data.starts_with('{') {
            self.fail_not_json("expected a JSON object", out);
            return;
        }
        match serde_json::from_str::<Response<'_>>(data) {
            Ok(response) => self.apply(response, out),
            Err(error) => self.fail_not_json(&error.to_string(), out),
        }
    }

    fn end(&mut self, out: &mut Vec<StreamEvent>) {
        if self.done {
            return;
        }
        let finish_reason = if self.blocked {
            Some(FinishReason::ContentFilter)
        } else {
            self.finish_reason()
        };
        let Some(finish_reason) = finish_reason else {
            self.fail(ErrorCode::UpstreamDisconnected, DISCONNECTED, out);
            return;
        };
        self.done = true;
        out.push(StreamEvent::Finish {
            finish_reason,
            usage: self.usage.take().and_then(|(counts, raw)| {
                let raw = serde_json::from_str::<Value>(raw.get()).unwrap_or(Value::Null);
                counted_usage(
                    counts.prompt.into(),
                    u64::from(counts.candidates) + u64::from(counts.thoughts),
                    raw,
                )
            }),
        });
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

impl Translator {
    fn apply(&mut self, response: Response<'_>, out: &mut Vec<StreamEvent>) {
        if self.response_id.is_none() {
            self.response_id = response.response_id.filter(|id| !id.is_empty());
        }
        let no_candidates = response.candidates.as_ref().is_none_or(Vec::is_empty);
        for candidate in response.candidates.into_iter().flatten() {
            self.apply_candidate(candidate, out);
            if self.done {
                return;
            }
        }
        if let Some(error) = response.error {
            self.fail(ErrorCode::UpstreamError, &error_text(error), out);
            return;
        }
        let block_reason = response
            .prompt_feedback
            .and_then(|feedback| feedback.block_reason);
        if no_candidates && block_reason.is_some_and(|reason| !reason.is_empty()) {
            self.blocked = true;
        }
        if let Some(usage) = response.usage_metadata {
            match serde_json::from_str::<Counts>(usage.get()) {
                Ok(counts) => self.usage = Some((counts, usage.to_owned())),
                Err(error) => self.fail_not_json(&format!("usageMetadata: {error}"), out),
            }
        }
    }

    fn apply_candidate(&mut self, candidate: WireCandidate<'_>, out: &mut Vec<StreamEvent>) {
        let index = candidate.index.unwrap_or(0);
        let choice = (index != 0).then_some(index);
        let position = self
            .candidates
            .iter()
            .position(|seen| seen.index == index)
            .unwrap_or_else(|| {
                self.candidates.push(Candidate {
                    index,
                    calls: 0,
                    finish: None,
                });
                self.candidates.len() - 1
            });
        let state = &mut self.candidates[position];
        let parts = candidate.content.and_then(|content| content.parts);
        for part in parts.into_iter().flatten() {
            if let Some(token) = part.text.filter(|text| !text.is_empty()) {
                out.push(if part.thought == Some(true) {
                    StreamEvent::Reasoning { token, choice }
                } else {
                    StreamEvent::Token {
                        token,
                        refusal: false,
                        choice,
                    }
                });
            }
            let Some(call) = part.function_call else {
                continue;
            };
            let Some(name) = call.name.filter(|name| !name.is_empty()) else {
                self.fail_not_json("a functionCall without a name", out);
                return;
            };
            let ordinal = state.calls;
            state.calls += 1;
            let id = call.id.filter(|id| !id.is_empty()).unwrap_or_else(|| {
                let response = self.response_id.as_deref().unwrap_or("gemini");
                match choice {
                    None => format!("call_{response}_{ordinal}"),
                    Some(index) => format!("call_{response}_{index}_{ordinal}"),
                }
            });
            let arguments = match call.args.map(RawValue::get) {
                None | Some("null") => "{}".to_owned(),
                Some(args) => args.to_owned(),
            };
            out.push(StreamEvent::ToolCall {
                index: ordinal,
                id: Some(id),
                name: Some(name),
                arguments: Some(arguments),
                choice,
            });
        }
        let Some(reason) = candidate.finish_reason.filter(|reason| !reason.is_empty()) else {
            return;
        };
        match FINISH_REASONS.iter().find(|(name, _)| *name == reason) {
            Some(&(_, finish)) => state.finish = Some(finish),
            None => {
                let mut message = format!(
                    "the upstream ended the generation with finishReason `{}`",
                    quoted(reason)
                );
                if let Some(detail) = candidate
                    .finish_message
                    .filter(|text| !text.trim().is_empty())
                {
                    message.push_str(": ");
                    message.push_str(detail.trim());
                }
                self.fail(ErrorCode::UpstreamError, &message, out);
            }
        }
    }

    /// Candidate 0's reason (the lowest index seen when it never came), once
    /// every candidate seen has one.
    fn finish_reason(&self) -> Option<FinishReason> {
        if self
            .candidates
            .iter()
            .any(|candidate| candidate.finish.is_none())
        {
            return None;
        }
        let first = self
            .candidates
            .iter()
            .min_by_key(|candidate| candidate.index)?;
        first.finish.map(|finish| match finish {
            FinishReason::Stop if first.calls > 0 => FinishReason::ToolCalls,
            finish => finish,
        })
    }

    fn fail(&mut self, code: ErrorCode, message: &str, out: &mut Vec<StreamEvent>) {
        self.done = true;
        // Whole: the provider masks our key in it before cutting it short.
        out.push(StreamEvent::error(code, message.trim()));
    }

    fn fail_not_json(&mut self, reason: &str, out: &mut Vec<StreamEvent>) {
        let message = not_json("a response", reason);
        self.fail(ErrorCode::InvalidUpstreamData, &message, out);
    }
}

/// Google's `{"code", "message", "status"}` as "message (STATUS)"; any other
/// shape as `describe_error` reads it.
fn error_text(error: &RawValue) -> String {
    match serde_json::from_str::<WireError>(error.get()) {
        Ok(WireError {
            message: Some(message),
            status,
        }) if !message.trim().is_empty() => match status.filter(|status| !status.is_empty()) {
            Some(status) => format!("{} ({status})", message.trim()),
            None => message,
        },
        _ => describe_error(error).into_owned(),
    }
}

// Upstream wire shapes. Only the fields we read are declared; serde skips
// the rest (`thoughtSignature`, `safetyRatings`, `modelVersion`...). Text is
// owned because it becomes an event's `String` as it is.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response<'a> {
    #[serde(borrow, default)]
    candidates: Option<Vec<WireCandidate<'a>>>,
    #[serde(borrow, default)]
    usage_metadata: Option<&'a RawValue>,
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    response_id: Option<String>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCandidate<'a> {
    #[serde(default)]
    index: Option<u32>,
    #[serde(borrow, default)]
    content: Option<Content<'a>>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    finish_message: Option<String>,
}

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(borrow, default)]
    parts: Option<Vec<WirePart<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePart<'a> {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought: Option<bool>,
    #[serde(borrow, default)]
    function_call: Option<FunctionCall<'a>>,
}

#[derive(Deserialize)]
struct FunctionCall<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(borrow, default)]
    args: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

/// The counts of a `usageMetadata` that make our usage; absent ones are 0.
/// They are `int32` in Google's API, which also keeps their sums in range.
#[derive(Debug, Deserialize)]
struct Counts {
    #[serde(default, rename = "promptTokenCount")]
    prompt: u32,
    #[serde(default, rename = "candidatesTokenCount")]
    candidates: u32,
    /// Thinking tokens, which OpenAI counts among the completion tokens.
    #[serde(default, rename = "thoughtsTokenCount")]
    thoughts: u32,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

#[cfg(test)]
#[expect(
    clippy::unwrap_used,
    reason = "tests fail loudly on broken fixtures and helpers"
)]
mod tests;
