//! Turns an OpenAI-compatible chat-completion stream into our event protocol
//! (`docs/PROTOCOL.md` §3), so that every provider dialect is understood in one place and the
//! rest of the server only ever sees `StreamEvent`s. Pure: no I/O, one call per
//! upstream SSE event, which is why chunks are parsed into borrowed structs.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::event::{ErrorCode, FinishReason, StreamEvent};
use crate::providers::{Translate, describe_error, error_message, not_json, quoted};

const DISCONNECTED: &str = "the upstream closed the stream before the generation finished";
const UNKNOWN_UPSTREAM_ERROR: &str = "the upstream reported an error";

/// Providers spell the same stop conditions differently; matched case-insensitively
/// because native APIs (Gemini) use upper case and some compat layers pass it through.
/// A reason outside this table is not taken for a success (README, "How it
/// behaves where the contract is silent").
const FINISH_REASONS: [(&str, FinishReason); 18] = [
    ("stop", FinishReason::Stop),
    ("end_turn", FinishReason::Stop),
    ("stop_sequence", FinishReason::Stop),
    ("eos", FinishReason::Stop),
    ("length", FinishReason::Length),
    ("max_tokens", FinishReason::Length),
    ("max_output_tokens", FinishReason::Length),
    ("model_length", FinishReason::Length),
    ("tool_calls", FinishReason::ToolCalls),
    ("function_call", FinishReason::ToolCalls),
    ("tool_use", FinishReason::ToolCalls),
    ("content_filter", FinishReason::ContentFilter),
    ("safety", FinishReason::ContentFilter),
    ("recitation", FinishReason::ContentFilter),
    ("refusal", FinishReason::ContentFilter),
    ("blocklist", FinishReason::ContentFilter),
    ("prohibited_content", FinishReason::ContentFilter),
    ("spii", FinishReason::ContentFilter),
];

/// Per-stream state: what must survive from one chunk to the next.
#[derive(Debug, Default)]
pub(super) struct Translator {
    done: bool,
    /// Choice index and normalized reason; held back until `[DONE]` or EOF
    /// because usage usually arrives in a later chunk.
    finish: Option<(u32, FinishReason)>,
    usage: Option<Box<RawValue>>,
    tool_calls: Vec<ToolCallState>,
}

/// Whether a tool call's `id` and `name` went out already: clients take them
/// from the first fragment, and several providers repeat them on every one.
#[derive(Debug)]
struct ToolCallState {
    choice: u32,
    index: u32,
    id_sent: bool,
    name_sent: bool,
}

impl Translate for Translator {
    /// One dispatched upstream SSE event: its type ("message" unless the
    /// upstream named it) and its data.
    fn push(&mut self, event_type: &str, data: &str, out: &mut Vec<StreamEvent>) {
        if self.done {
            return;
        }
        match event_type {
            "message" | "" => self.push_chunk(data, out),
            "error" => {
                let message = error_message(data).unwrap_or(Cow::Borrowed(UNKNOWN_UPSTREAM_ERROR));
                self.fail(ErrorCode::UpstreamError, &message, out);
            }
            // Chat-completion chunks are unnamed; named events (pings, other
            // dialects' bookkeeping) carry nothing for us, and treating them as
            // chunks would turn a harmless non-JSON ping into a failed stream.
            _ => {}
        }
    }

    /// The upstream body ended cleanly (no transport error).
    fn end(&mut self, out: &mut Vec<StreamEvent>) {
        if self.done {
            return;
        }
        if self.finish.is_some() {
            // Several providers close the body after the finish chunk without `[DONE]`.
            self.emit_finish(out);
        } else {
            self.fail(ErrorCode::UpstreamDisconnected, DISCONNECTED, out);
        }
    }

    /// True once a terminal event (finish or error) has been emitted; the
    /// caller stops reading then.
    fn is_done(&self) -> bool {
        self.done
    }
}

impl Translator {
    fn push_chunk(&mut self, data: &str, out: &mut Vec<StreamEvent>) {
        let data = data.trim_ascii();
        if data.is_empty() {
            return;
        }
        if data == "[DONE]" {
            self.emit_finish(out);
            return;
        }
        // A derived struct also accepts a JSON array positionally; a chunk is always an object.
        if !data.starts_with('{') {
            self.fail_not_json("expected a JSON object", out);
            return;
        }
        match serde_json::from_str::<ChatChunk<'_>>(data) {
            Ok(chunk) => self.apply(&chunk, out),
            Err(error) => self.fail_not_json(&error.to_string(), out),
        }
    }

    fn apply(&mut self, chunk: &ChatChunk<'_>, out: &mut Vec<StreamEvent>) {
        for choice in chunk.choices.iter().flatten() {
            self.apply_choice(choice, out);
            if self.done {
                return;
            }
        }
        // Checked after the deltas so that text arriving alongside the error is
        // not lost, and even after a finish_reason: the stream did not end cleanly.
        if let Some(error) = chunk.error {
            self.fail(ErrorCode::UpstreamError, &describe_error(error), out);
            return;
        }
        if chunk.object.as_deref() == Some("error") {
            // vLLM-style error chunk: the message sits at the top level.
            let message = non_empty(chunk.message.as_deref()).unwrap_or(UNKNOWN_UPSTREAM_ERROR);
            self.fail(ErrorCode::UpstreamError, message, out);
            return;
        }
        let usage = chunk
            .usage
            .or_else(|| chunk.x_groq.as_ref().and_then(|x| x.usage));
        if let Some(usage) = usage.and_then(own_usage) {
            self.usage = Some(usage);
        }
    }

    fn apply_choice(&mut self, choice: &Choice<'_>, out: &mut Vec<StreamEvent>) {
        let index = choice.index;
        let tag = choice_tag(index);
        if let Some(delta) = &choice.delta {
            // Some providers send the same text as both fields; one is enough.
            let reasoning = non_empty(delta.reasoning_content.as_deref())
                .or_else(|| non_empty(delta.reasoning.as_deref()));
            if let Some(text) = reasoning {
                push_reasoning(text, tag, out);
            }
            match &delta.content {
                Some(Content::Text(text)) => push_token(text, false, tag, out),
                Some(Content::Parts(parts)) => push_content_parts(parts, tag, out),
                None => {}
            }
            if let Some(text) = &delta.refusal {
                push_token(text, true, tag, out);
            }
            for (position, call) in delta.tool_calls.iter().flatten().enumerate() {
                // Without an index, the position in the array is the only identity there is.
                let call_index = call
                    .index
                    .unwrap_or_else(|| u32::try_from(position).unwrap_or(u32::MAX));
                let function = call.function.as_ref();
                self.push_tool_call(
                    (index, call_index),
                    call.id.as_deref(),
                    function.and_then(|f| f.name.as_deref()),
                    function.and_then(|f| f.arguments.as_deref()),
                    out,
                );
            }
            if let Some(function) = &delta.function_call {
                self.push_tool_call(
                    (index, 0),
                    None,
                    function.name.as_deref(),
                    function.arguments.as_deref(),
                    out,
                );
            }
        }
        if let Some(reason) = non_empty(choice.finish_reason.as_deref()) {
            let Some(normalized) = normalize_finish_reason(reason) else {
                // OpenRouter ends a failed generation with `"error"`; other
                // reasons we do not know may mean anything, so none of them
                // may pass for a complete answer.
                let message = format!(
                    "the upstream ended the generation with finish_reason `{}`",
                    quoted(reason)
                );
                self.fail(ErrorCode::UpstreamError, &message, out);
                return;
            };
            let keep_current = self.finish.is_some_and(|(seen, _)| seen == 0 || index != 0);
            if !keep_current {
                self.finish = Some((index, normalized));
            }
        }
    }

    fn push_tool_call(
        &mut self,
        (choice, index): (u32, u32),
        id: Option<&str>,
        name: Option<&str>,
        arguments: Option<&str>,
        out: &mut Vec<StreamEvent>,
    ) {
        let position = self
            .tool_calls
            .iter()
            .position(|call| call.choice == choice && call.index == index)
            .unwrap_or_else(|| {
                self.tool_calls.push(ToolCallState {
                    choice,
                    index,
                    id_sent: false,
                    name_sent: false,
                });
                self.tool_calls.len() - 1
            });
        let state = &mut self.tool_calls[position];
        let id = non_empty(id).filter(|_| !state.id_sent);
        let name = non_empty(name).filter(|_| !state.name_sent);
        let arguments = non_empty(arguments);
        if id.is_none() && name.is_none() && arguments.is_none() {
            return;
        }
        state.id_sent |= id.is_some();
        state.name_sent |= name.is_some();
        out.push(StreamEvent::ToolCall {
            index,
            id: id.map(str::to_owned),
            name: name.map(str::to_owned),
            arguments: arguments.map(str::to_owned),
            choice: choice_tag(choice),
        });
    }

    fn emit_finish(&mut self, out: &mut Vec<StreamEvent>) {
        self.done = true;
        out.push(StreamEvent::Finish {
            finish_reason: self.finish.map_or(FinishReason::Stop, |(_, reason)| reason),
            usage: self.usage.take(),
        });
    }

    fn fail(&mut self, code: ErrorCode, message: &str, out: &mut Vec<StreamEvent>) {
        self.done = true;
        out.push(StreamEvent::error(
            code,
            // Whole: the provider masks our key in it before cutting it short,
            // which it could not do for a key that a cut here had split.
            message.trim(),
        ));
    }

    fn fail_not_json(&mut self, reason: &str, out: &mut Vec<StreamEvent>) {
        let message = not_json("a chunk", reason);
        self.fail(ErrorCode::InvalidUpstreamData, &message, out);
    }
}

fn normalize_finish_reason(reason: &str) -> Option<FinishReason> {
    FINISH_REASONS
        .iter()
        .find(|(name, _)| reason.eq_ignore_ascii_case(name))
        .map(|&(_, normalized)| normalized)
}

/// Only choices other than the first are tagged, so single-choice clients never see the field.
fn choice_tag(index: u32) -> Option<u32> {
    (index != 0).then_some(index)
}

fn non_empty(text: Option<&str>) -> Option<&str> {
    text.filter(|text| !text.is_empty())
}

fn push_token(text: &str, refusal: bool, choice: Option<u32>, out: &mut Vec<StreamEvent>) {
    if !text.is_empty() {
        out.push(StreamEvent::Token {
            token: text.to_owned(),
            refusal,
            choice,
        });
    }
}

fn push_reasoning(text: &str, choice: Option<u32>, out: &mut Vec<StreamEvent>) {
    if !text.is_empty() {
        out.push(StreamEvent::Reasoning {
            token: text.to_owned(),
            choice,
        });
    }
}

/// Mistral's content array: text parts are answer text, thinking parts are reasoning.
fn push_content_parts(parts: &[Part<'_>], choice: Option<u32>, out: &mut Vec<StreamEvent>) {
    for part in parts {
        match part.kind.as_deref() {
            Some("text") => {
                push_token(part.text.as_deref().unwrap_or_default(), false, choice, out)
            }
            Some("thinking") => match &part.thinking {
                Some(Content::Text(text)) => push_reasoning(text, choice, out),
                Some(Content::Parts(inner)) => {
                    for text in inner
                        .iter()
                        .filter(|part| part.kind.as_deref() == Some("text"))
                        .filter_map(|part| part.text.as_deref())
                    {
                        push_reasoning(text, choice, out);
                    }
                }
                None => {}
            },
            _ => {}
        }
    }
}

/// Usage is passed on verbatim, but the relay writes it inside one SSE `data:`
/// line: a pretty-printed object would break that framing. Raw line breaks can
/// only be insignificant whitespace in JSON, so spaces are an exact substitute.
fn own_usage(usage: &RawValue) -> Option<Box<RawValue>> {
    let text = usage.get();
    if !text.starts_with('{') {
        return None;
    }
    if text.contains(['\n', '\r']) {
        RawValue::from_string(text.replace(['\n', '\r'], " ")).ok()
    } else {
        Some(usage.to_owned())
    }
}

// Upstream wire shapes. Only the fields we read are declared; serde skips the
// rest. Strings are borrowed from the chunk when they hold no escapes.

#[derive(Deserialize)]
struct ChatChunk<'a> {
    #[serde(borrow, default)]
    choices: Option<Vec<Choice<'a>>>,
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
    #[serde(borrow, default)]
    x_groq: Option<XGroq<'a>>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
    #[serde(borrow, default)]
    object: Option<Text<'a>>,
    #[serde(borrow, default)]
    message: Option<Text<'a>>,
}

/// Groq reports usage under `x_groq` (and, lately, also at the top level).
#[derive(Deserialize)]
struct XGroq<'a> {
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default)]
    index: u32,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<Content<'a>>,
    #[serde(borrow, default)]
    refusal: Option<Text<'a>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Text<'a>>,
    #[serde(borrow, default)]
    reasoning: Option<Text<'a>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCallDelta<'a>>>,
    #[serde(borrow, default)]
    function_call: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize)]
struct ToolCallDelta<'a> {
    #[serde(default)]
    index: Option<u32>,
    #[serde(borrow, default)]
    id: Option<Text<'a>>,
    #[serde(borrow, default)]
    function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize)]
struct FunctionDelta<'a> {
    #[serde(borrow, default)]
    name: Option<Text<'a>>,
    #[serde(borrow, default)]
    arguments: Option<Text<'a>>,
}

/// A string field, borrowed from the chunk when it holds no escapes. A plain
/// `Cow` would not do: behind an `Option`, serde's `borrow` falls back to an
/// owned copy, an allocation per chunk for `object` alone.
struct Text<'a>(Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Text(Cow::Borrowed(text)))
    }

    fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Text(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E>(self, text: String) -> Result<Self::Value, E> {
        Ok(Text(Cow::Owned(text)))
    }
}

/// `delta.content` and a thinking part's `thinking`: a string or a list of parts.
enum Content<'a> {
    Text(Text<'a>),
    Parts(Vec<Part<'a>>),
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Text<'a>>,
    #[serde(borrow, default)]
    text: Option<Text<'a>>,
    #[serde(borrow, default)]
    thinking: Option<Content<'a>>,
}

// Hand-written rather than `#[serde(untagged)]`: untagged buffers every value
// before trying the variants, and content is the field parsed once per token.
impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ContentVisitor)
    }
}

struct ContentVisitor;

impl<'de> Visitor<'de> for ContentVisitor {
    type Value = Content<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a string or an array of content parts")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        TextVisitor.visit_borrowed_str(text).map(Content::Text)
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
        TextVisitor.visit_str(text).map(Content::Text)
    }

    fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Self::Value, E> {
        TextVisitor.visit_string(text).map(Content::Text)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(1));
        while let Some(part) = seq.next_element()? {
            parts.push(part);
        }
        Ok(Content::Parts(parts))
    }
}

#[cfg(test)]
#[expect(
    clippy::unwrap_used,
    reason = "tests fail loudly on broken fixtures and helpers"
)]
mod tests;
