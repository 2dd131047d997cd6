//! The normalized events every provider produces and every surface consumes:
//! the event protocol `/api/chat` streams (`docs/PROTOCOL.md` §3).
//!
//! These types are the contract with every front end, so they live apart from
//! the code that produces them: each provider's translator builds them from
//! upstream chunks, `surfaces::sse` frames them as our SSE, and `/v1`
//! re-encodes them as OpenAI chunks.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One event of a generation, in the order the client sees them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum StreamEvent {
    /// First event of every stream.
    Start {
        stream_id: String,
        model: String,
        /// The configured upstream that answers, when there are several.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        upstream: Option<String>,
    },
    /// Assistant text; `refusal` marks text from `delta.refusal`.
    Token {
        token: String,
        #[serde(default, skip_serializing_if = "is_false")]
        refusal: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        choice: Option<u32>,
    },
    /// Thinking text from reasoning models.
    Reasoning {
        token: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        choice: Option<u32>,
    },
    /// A fragment of a tool call; `id` and `name` come with its first fragment.
    ToolCall {
        index: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        arguments: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        choice: Option<u32>,
    },
    /// The generation ended. `usage` is the upstream's own object, passed on
    /// verbatim so vendor fields (cost, cached tokens...) survive.
    Finish {
        finish_reason: FinishReason,
        #[serde(deserialize_with = "raw_usage")]
        usage: Option<Box<RawValue>>,
    },
    /// The generation failed after the stream began.
    Error { code: ErrorCode, message: String },
}

impl StreamEvent {
    /// `finish` and `error` end a stream; exactly one of them precedes `[DONE]`.
    pub(crate) fn is_terminal(&self) -> bool {
        matches!(self, Self::Finish { .. } | Self::Error { .. })
    }

    /// Text the model produced: what counts as a relayed token.
    pub(crate) fn is_text(&self) -> bool {
        matches!(
            self,
            Self::Token { .. } | Self::Reasoning { .. } | Self::ToolCall { .. }
        )
    }

    /// Roughly the bytes this event holds: what the memory bounds of the
    /// event log count.
    pub(crate) fn size(&self) -> usize {
        Self::size_holding(match self {
            Self::Start {
                stream_id,
                model,
                upstream,
            } => stream_id.len() + model.len() + upstream.as_ref().map_or(0, String::len),
            Self::Token { token, .. } | Self::Reasoning { token, .. } => token.len(),
            Self::ToolCall {
                id,
                name,
                arguments,
                ..
            } => [id, name, arguments]
                .into_iter()
                .map(|text| text.as_ref().map_or(0, String::len))
                .sum(),
            Self::Finish { usage, .. } => usage.as_ref().map_or(0, |usage| usage.get().len()),
            Self::Error { message, .. } => message.len(),
        })
    }

    /// The [`size`](Self::size) of an event holding `text` bytes of text:
    /// the one formula, also for logs that keep events in pieces.
    pub(crate) fn size_holding(text: usize) -> usize {
        const OVERHEAD: usize = 64;
        OVERHEAD + text
    }

    pub(crate) fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            code,
            message: message.into(),
        }
    }
}

/// Why a generation stopped. Upstream spellings of the same idea
/// (`end_turn`, `max_tokens`, `function_call`...) are folded into these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    Cancelled,
}

impl FinishReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::ToolCalls => "tool_calls",
            Self::ContentFilter => "content_filter",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Codes of the in-stream `error` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ErrorCode {
    UpstreamError,
    UpstreamDisconnected,
    UpstreamTimeout,
    InvalidUpstreamData,
    Cancelled,
    ShuttingDown,
    /// A follower asked for events that are no longer kept.
    ResumeGap,
}

impl ErrorCode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::UpstreamError => "upstream_error",
            Self::UpstreamDisconnected => "upstream_disconnected",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::InvalidUpstreamData => "invalid_upstream_data",
            Self::Cancelled => "cancelled",
            Self::ShuttingDown => "shutting_down",
            Self::ResumeGap => "resume_gap",
        }
    }
}

/// Reads `usage` back (from a log shared between replicas). An internally
/// tagged enum hands its fields over pre-parsed, which a `RawValue` cannot
/// borrow from, so the value takes one detour through `Value`; this runs once
/// per stream, never per token.
fn raw_usage<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Box<RawValue>>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(deserializer)?;
    value
        .map(|value| serde_json::value::to_raw_value(&value).map_err(serde::de::Error::custom))
        .transpose()
}

fn is_false(value: &bool) -> bool {
    !*value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_back_as_they_were_written() {
        let events = [
            r#"{"type":"start","stream_id":"ab","model":"m"}"#,
            r#"{"type":"token","token":"hi","refusal":true,"choice":2}"#,
            r#"{"type":"reasoning","token":"hm"}"#,
            r#"{"type":"tool_call","index":1,"id":"c","name":"f","arguments":"{}"}"#,
            r#"{"type":"finish","finish_reason":"length","usage":{"prompt_tokens":3,"cost":0.5}}"#,
            r#"{"type":"finish","finish_reason":"cancelled","usage":null}"#,
            r#"{"type":"error","code":"upstream_timeout","message":"slow"}"#,
        ];
        for json in events {
            let event: StreamEvent =
                serde_json::from_str(json).unwrap_or_else(|error| panic!("{json}: {error}"));
            assert_eq!(serde_json::to_string(&event).ok().as_deref(), Some(json));
        }
    }
}
