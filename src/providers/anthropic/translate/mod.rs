//! Turns Anthropic's Messages stream into our events: text and thinking
//! deltas of content blocks as tokens and reasoning, `tool_use` blocks as
//! tool calls numbered in the order they start, and `message_delta`'s stop
//! reason and cumulative usage as the finish. Pure: one call per upstream
//! SSE event, no I/O.
//!
//! Signatures and redacted thinking are opaque tokens Anthropic needs back
//! to continue a conversation; they are never shown as text.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::event::{ErrorCode, FinishReason, StreamEvent};
use crate::providers::{
    DISCONNECTED, Translate, counted_usage, describe_error, error_message, not_json, quoted,
};

const UNKNOWN_UPSTREAM_ERROR: &str = "the upstream reported an error";

/// `stop_reason`s and what they mean to a client. A reason outside this
/// table is not taken for a success (README, "How it behaves where the
/// contract is silent").
const STOP_REASONS: [(&str, FinishReason); 7] = [
    ("end_turn", FinishReason::Stop),
    ("stop_sequence", FinishReason::Stop),
    // A server tool's long turn paused; what came so far is a whole answer
    // that the client may send back to continue.
    ("pause_turn", FinishReason::Stop),
    ("max_tokens", FinishReason::Length),
    ("model_context_window_exceeded", FinishReason::Length),
    ("tool_use", FinishReason::ToolCalls),
    ("refusal", FinishReason::ContentFilter),
];

/// Per-stream state: what must survive from one event to the next.
#[derive(Debug, Default)]
pub(super) struct Translator {
    done: bool,
    /// From `message_delta`; the finish waits for `message_stop` (or the
    /// end of the body) so that the last usage is in it.
    stop: Option<FinishReason>,
    /// `message_start`'s usage with every later `message_delta`'s counts
    /// over it: Anthropic's counts are cumulative, so the last one holds.
    usage: Map<String, Value>,
    /// The content-block index of each `tool_use` block, in the order they
    /// started: a call's position here is its `index` for clients, whatever
    /// text or thinking blocks came between.
    tool_blocks: Vec<Option<u64>>,
}

/// The events of the Messages stream that carry something for us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    MessageStart,
    BlockStart,
    BlockDelta,
    MessageDelta,
    MessageStop,
    Error,
    /// `ping`, `content_block_stop`, and whatever a later API version adds.
    Ignored,
}

impl Kind {
    fn of(name: &str) -> Self {
        match name {
            "message_start" => Self::MessageStart,
            "content_block_start" => Self::BlockStart,
            "content_block_delta" => Self::BlockDelta,
            "message_delta" => Self::MessageDelta,
            "message_stop" => Self::MessageStop,
            "error" => Self::Error,
            _ => Self::Ignored,
        }
    }
}

impl Translate for Translator {
    /// One dispatched SSE event. Anthropic names every event; a proxy that
    /// drops the `event:` lines leaves the data's own `type` to go by.
    fn push(&mut self, event_type: &str, data: &str, out: &mut Vec<StreamEvent>) {
        if self.done {
            return;
        }
        let named = (!matches!(event_type, "message" | "")).then(|| Kind::of(event_type));
        match named {
            // Not parsed at all: a ping or a newer event whose data we do
            // not read cannot fail the stream.
            Some(Kind::Ignored) => return,
            // Its data need not even be JSON to be worth passing on.
            Some(Kind::Error) => return self.fail_upstream(data, out),
            _ => {}
        }
        let data = data.trim_ascii();
        if data.is_empty() {
            return;
        }
        // A derived struct also accepts a JSON array positionally; an event is always an object.
        if !data.starts_with('{') {
            return self.fail_not_json("expected a JSON object", out);
        }
        let event = match serde_json::from_str::<Event<'_>>(data) {
            Ok(event) => event,
            Err(error) => return self.fail_not_json(&error.to_string(), out),
        };
        match named.unwrap_or_else(|| Kind::of(&event.kind)) {
            Kind::MessageStart => self.merge_usage(event.message.and_then(|m| m.usage)),
            Kind::BlockStart => self.start_block(event.index, event.content_block, out),
            Kind::BlockDelta => self.block_delta(event.index, event.delta, out),
            Kind::MessageDelta => {
                self.merge_usage(event.usage);
                let reason = event.delta.and_then(|delta| delta.stop_reason);
                if let Some(reason) = reason.filter(|reason| !reason.is_empty()) {
                    self.stop_with(reason, out);
                }
            }
            // Anthropic always says why before it stops; a stream that
            // stopped without saying ended as it meant to.
            Kind::MessageStop => self.finish(self.stop.unwrap_or(FinishReason::Stop), out),
            Kind::Error => self.fail_upstream(data, out),
            Kind::Ignored => {}
        }
    }

    /// The body ended: after a stop reason the answer is complete even
    /// without `message_stop` (recorded streams end so); before one it was
    /// cut.
    fn end(&mut self, out: &mut Vec<StreamEvent>) {
        if self.done {
            return;
        }
        match self.stop {
            Some(reason) => self.finish(reason, out),
            None => self.fail(ErrorCode::UpstreamDisconnected, DISCONNECTED, out),
        }
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

impl Translator {
    fn start_block(
        &mut self,
        index: Option<u64>,
        block: Option<Block>,
        out: &mut Vec<StreamEvent>,
    ) {
        let Some(block) = block else {
            return;
        };
        match &*block.kind {
            "text" => push_token(block.text, out),
            "thinking" => push_reasoning(block.thinking, out),
            "tool_use" => {
                let ordinal = ordinal(self.tool_blocks.len());
                self.tool_blocks.push(index);
                out.push(StreamEvent::ToolCall {
                    index: ordinal,
                    id: block.id.filter(|id| !id.is_empty()),
                    name: block.name.filter(|name| !name.is_empty()),
                    arguments: given_arguments(block.input),
                    choice: None,
                });
            }
            // `redacted_thinking` is opaque; `server_tool_use` and the
            // results of Anthropic's own tools (web search...) are neither
            // the client's calls nor answer text.
            _ => {}
        }
    }

    fn block_delta(
        &mut self,
        index: Option<u64>,
        delta: Option<Delta>,
        out: &mut Vec<StreamEvent>,
    ) {
        let Some(delta) = delta else {
            return;
        };
        match &*delta.kind {
            "text_delta" => push_token(delta.text, out),
            "thinking_delta" => push_reasoning(delta.thinking, out),
            "input_json_delta" => {
                // Input of a block that is no client tool call (a server
                // tool's) has no call to belong to.
                let Some(position) = self.tool_blocks.iter().rposition(|&block| block == index)
                else {
                    return;
                };
                if let Some(fragment) = delta.partial_json.filter(|json| !json.is_empty()) {
                    out.push(StreamEvent::ToolCall {
                        index: ordinal(position),
                        id: None,
                        name: None,
                        arguments: Some(fragment),
                        choice: None,
                    });
                }
            }
            // `signature_delta` is opaque, `citations_delta` annotates text
            // already sent.
            _ => {}
        }
    }

    /// Later counts win; a `null` does not erase a count already known.
    fn merge_usage(&mut self, usage: Option<Map<String, Value>>) {
        for (name, value) in usage.into_iter().flatten() {
            if !value.is_null() {
                self.usage.insert(name, value);
            }
        }
    }

    fn stop_with(&mut self, reason: String, out: &mut Vec<StreamEvent>) {
        match STOP_REASONS.iter().find(|(name, _)| *name == reason) {
            Some(&(_, normalized)) => self.stop = Some(normalized),
            None => {
                let message = format!(
                    "the upstream ended the generation with stop_reason `{}`",
                    quoted(reason)
                );
                self.fail(ErrorCode::UpstreamError, &message, out);
            }
        }
    }

    fn finish(&mut self, finish_reason: FinishReason, out: &mut Vec<StreamEvent>) {
        self.done = true;
        out.push(StreamEvent::Finish {
            finish_reason,
            usage: self.counted_usage(),
        });
    }

    /// OpenAI's prompt count includes cached input; Anthropic counts the
    /// uncached rest, cache writes and cache reads apart.
    fn counted_usage(&mut self) -> Option<Box<RawValue>> {
        if self.usage.is_empty() {
            return None;
        }
        let count = |name: &str| self.usage.get(name).and_then(Value::as_u64).unwrap_or(0);
        let prompt = count("input_tokens")
            .saturating_add(count("cache_creation_input_tokens"))
            .saturating_add(count("cache_read_input_tokens"));
        // Absurd counts must not overflow the total.
        let completion = count("output_tokens").min(u64::MAX - prompt);
        counted_usage(
            prompt,
            completion,
            Value::Object(std::mem::take(&mut self.usage)),
        )
    }

    fn fail_upstream(&mut self, data: &str, out: &mut Vec<StreamEvent>) {
        let message = upstream_error(data);
        self.fail(ErrorCode::UpstreamError, &message, out);
    }

    fn fail(&mut self, code: ErrorCode, message: &str, out: &mut Vec<StreamEvent>) {
        self.done = true;
        // Whole: the provider masks our key in it before cutting it short,
        // which it could not do for a key that a cut here had split.
        out.push(StreamEvent::error(code, message.trim()));
    }

    fn fail_not_json(&mut self, reason: &str, out: &mut Vec<StreamEvent>) {
        let message = not_json("an event", reason);
        self.fail(ErrorCode::InvalidUpstreamData, &message, out);
    }
}

/// What an `error` event says, with the error's type beside its message
/// ("Overloaded (overloaded_error)"): the type is what tells a client to retry.
fn upstream_error(data: &str) -> String {
    let data = data.trim();
    let error = data
        .starts_with('{')
        .then(|| serde_json::from_str::<ErrorEvent<'_>>(data).ok())
        .flatten()
        .and_then(|event| event.error);
    let Some(error) = error else {
        return error_message(data)
            .map_or_else(|| UNKNOWN_UPSTREAM_ERROR.to_owned(), Cow::into_owned);
    };
    let kind = serde_json::from_str::<ErrorBody>(error.get())
        .ok()
        .and_then(|body| body.kind)
        .filter(|kind| !kind.is_empty());
    let message = describe_error(error);
    match kind {
        Some(kind) if !message.contains(kind.as_str()) => format!("{message} ({kind})"),
        _ => message.into_owned(),
    }
}

/// The input a `tool_use` block starts with: `{}` while it streams as
/// `input_json_delta`s, whole only from a proxy that has it all at once.
fn given_arguments(input: Option<&RawValue>) -> Option<String> {
    let text = input?.get().trim();
    let empty = text
        .bytes()
        .filter(|byte| !byte.is_ascii_whitespace())
        .eq(*b"{}");
    (!empty).then(|| text.to_owned())
}

fn ordinal(position: usize) -> u32 {
    u32::try_from(position).unwrap_or(u32::MAX)
}

fn push_token(text: Option<String>, out: &mut Vec<StreamEvent>) {
    if let Some(token) = text.filter(|text| !text.is_empty()) {
        out.push(StreamEvent::Token {
            token,
            refusal: false,
            choice: None,
        });
    }
}

fn push_reasoning(text: Option<String>, out: &mut Vec<StreamEvent>) {
    if let Some(token) = text.filter(|text| !text.is_empty()) {
        out.push(StreamEvent::Reasoning {
            token,
            choice: None,
        });
    }
}

// Upstream wire shapes: one struct for every event, since an unnamed one is
// only known by its `type` once parsed. Only the fields we read are
// declared; serde skips the rest (signatures, redacted data) unread. Texts
// are owned: each becomes an event's string as it is.

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    index: Option<u64>,
    #[serde(borrow, default)]
    content_block: Option<Block<'a>>,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(default)]
    usage: Option<Map<String, Value>>,
}

/// `message_start`'s message, of which only the usage matters: its content
/// is empty and streams in blocks.
#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    usage: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct Block<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
}

/// A content block's delta, or `message_delta`'s (which has no `type`).
#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    partial_json: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct ErrorEvent<'a> {
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

#[cfg(test)]
#[expect(
    clippy::unwrap_used,
    reason = "tests fail loudly on broken fixtures and helpers"
)]
mod tests;
