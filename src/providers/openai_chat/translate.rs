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
use crate::providers::{Translate, describe_error, error_message, truncate};

/// Parser errors can quote the offending value; keep only enough to diagnose.
const MAX_REASON_CHARS: usize = 200;

const DISCONNECTED: &str = "the upstream closed the stream before the generation finished";
const NOT_JSON: &str = "the upstream sent a chunk that is not valid JSON";
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
                    truncate(reason.to_owned(), MAX_REASON_CHARS)
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
            // Whole: `upstream` masks our key in it before cutting it short,
            // which it could not do for a key that a cut here had split.
            message.trim(),
        ));
    }

    fn fail_not_json(&mut self, reason: &str, out: &mut Vec<StreamEvent>) {
        let message = format!(
            "{NOT_JSON}: {}",
            truncate(reason.to_owned(), MAX_REASON_CHARS)
        );
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
mod tests {
    use std::collections::BTreeMap;
    use std::fs;

    use serde_json::value::RawValue;
    use serde_json::{Value, json};

    use super::Translator;
    use crate::event::{ErrorCode, FinishReason, StreamEvent};
    use crate::providers::Translate;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/upstream/");
    const NOT_JSON: &str = "the upstream sent a chunk that is not valid JSON: ";

    /// One dispatched upstream SSE event: (event type, data).
    type Input = (&'static str, String);

    #[test]
    fn chunk_strings_are_borrowed_unless_escaped() {
        use super::{ChatChunk, Cow};
        let chunk: ChatChunk<'_> =
            serde_json::from_str(r#"{"object":"chat.completion.chunk","message":"a\nb"}"#).unwrap();
        assert!(matches!(
            chunk.object.map(|text| text.0),
            Some(Cow::Borrowed("chat.completion.chunk"))
        ));
        assert!(matches!(chunk.message.map(|text| text.0), Some(Cow::Owned(m)) if m == "a\nb"));
    }

    fn msg(data: &str) -> Input {
        ("message", data.to_owned())
    }

    fn named(event_type: &'static str, data: &str) -> Input {
        (event_type, data.to_owned())
    }

    fn choice(index: u32, delta: &str, finish_reason: &str) -> Input {
        msg(&format!(
            r#"{{"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{{"index":{index},"delta":{delta},"logprobs":null,"finish_reason":{finish_reason}}}]}}"#
        ))
    }

    fn delta(delta: &str) -> Input {
        choice(0, delta, "null")
    }

    fn finish_chunk(reason: &str) -> Input {
        choice(0, "{}", &format!("\"{reason}\""))
    }

    fn done() -> Input {
        msg("[DONE]")
    }

    fn token(text: &str) -> StreamEvent {
        StreamEvent::Token {
            token: text.to_owned(),
            refusal: false,
            choice: None,
        }
    }

    fn token_in(choice: u32, text: &str) -> StreamEvent {
        StreamEvent::Token {
            token: text.to_owned(),
            refusal: false,
            choice: Some(choice),
        }
    }

    fn refusal(text: &str) -> StreamEvent {
        StreamEvent::Token {
            token: text.to_owned(),
            refusal: true,
            choice: None,
        }
    }

    fn reasoning(text: &str) -> StreamEvent {
        StreamEvent::Reasoning {
            token: text.to_owned(),
            choice: None,
        }
    }

    fn reasoning_in(choice: u32, text: &str) -> StreamEvent {
        StreamEvent::Reasoning {
            token: text.to_owned(),
            choice: Some(choice),
        }
    }

    fn tool_in(
        choice: Option<u32>,
        index: u32,
        id: Option<&str>,
        name: Option<&str>,
        arguments: Option<&str>,
    ) -> StreamEvent {
        StreamEvent::ToolCall {
            index,
            id: id.map(str::to_owned),
            name: name.map(str::to_owned),
            arguments: arguments.map(str::to_owned),
            choice,
        }
    }

    fn tool(
        index: u32,
        id: Option<&str>,
        name: Option<&str>,
        arguments: Option<&str>,
    ) -> StreamEvent {
        tool_in(None, index, id, name, arguments)
    }

    fn finish(finish_reason: FinishReason, usage: Option<&str>) -> StreamEvent {
        StreamEvent::Finish {
            finish_reason,
            usage: usage.map(|usage| RawValue::from_string(usage.to_owned()).unwrap()),
        }
    }

    fn stop() -> StreamEvent {
        finish(FinishReason::Stop, None)
    }

    fn upstream_error(message: &str) -> StreamEvent {
        StreamEvent::error(ErrorCode::UpstreamError, message)
    }

    fn disconnected() -> StreamEvent {
        StreamEvent::error(
            ErrorCode::UpstreamDisconnected,
            "the upstream closed the stream before the generation finished",
        )
    }

    fn run(input: &[Input], end: bool) -> (Vec<StreamEvent>, Translator) {
        let mut translator = Translator::default();
        let mut out = Vec::new();
        for (event_type, data) in input {
            translator.push(event_type, data, &mut out);
        }
        if end {
            translator.end(&mut out);
        }
        (out, translator)
    }

    /// Events compared as the client receives them (their JSON), which also
    /// compares `usage` by value rather than by formatting.
    fn as_json(events: &[StreamEvent]) -> Vec<Value> {
        events
            .iter()
            .map(|event| serde_json::to_value(event).unwrap())
            .collect()
    }

    struct Case {
        name: &'static str,
        input: Vec<Input>,
        /// Whether the upstream body then ends (EOF) with `Translator::end`.
        end: bool,
        expected: Vec<StreamEvent>,
    }

    fn case(name: &'static str, input: Vec<Input>, end: bool, expected: Vec<StreamEvent>) -> Case {
        Case {
            name,
            input,
            end,
            expected,
        }
    }

    fn cases() -> Vec<Case> {
        let usage = r#"{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}"#;
        vec![
            case(
                "content string",
                vec![
                    delta(r#"{"role":"assistant","content":"Hel"}"#),
                    delta(r#"{"content":"lo"}"#),
                    finish_chunk("stop"),
                    done(),
                ],
                false,
                vec![token("Hel"), token("lo"), stop()],
            ),
            case(
                "finish_reason error is an upstream error, not a stop",
                vec![delta(r#"{"content":"Hal"}"#), finish_chunk("error"), done()],
                false,
                vec![
                    token("Hal"),
                    upstream_error("the upstream ended the generation with finish_reason `error`"),
                ],
            ),
            case(
                "an unknown finish_reason is never a success",
                vec![finish_chunk("insufficient_system_resource"), done()],
                false,
                vec![upstream_error(
                    "the upstream ended the generation with finish_reason `insufficient_system_resource`",
                )],
            ),
            case(
                "an unknown finish_reason of another choice fails the stream too",
                vec![
                    choice(0, r#"{"content":"a"}"#, r#""stop""#),
                    choice(1, r#"{"content":"b"}"#, r#""abort""#),
                    choice(2, r#"{"content":"c"}"#, "null"),
                    done(),
                ],
                false,
                vec![
                    token("a"),
                    token_in(1, "b"),
                    upstream_error("the upstream ended the generation with finish_reason `abort`"),
                ],
            ),
            case(
                "provider spellings of length and content filtering",
                vec![finish_chunk("MAX_OUTPUT_TOKENS"), done()],
                false,
                vec![finish(FinishReason::Length, None)],
            ),
            case(
                "Gemini's RECITATION is content filtering",
                vec![finish_chunk("RECITATION"), done()],
                false,
                vec![finish(FinishReason::ContentFilter, None)],
            ),
            case(
                "escaped content is unescaped",
                vec![delta(r#"{"content":"a\n\"b\" \u00e9\ud83d\ude0a"}"#)],
                false,
                vec![token("a\n\"b\" é😊")],
            ),
            case(
                "content parts: text, thinking array, thinking string; others ignored",
                vec![delta(
                    r#"{"content":[{"type":"text","text":"Hi"},{"type":"thinking","thinking":[{"type":"text","text":"hmm"},{"type":"signature","text":"sig"}]},{"type":"thinking","thinking":"plain"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":""},{"type":"thinking","thinking":[]},{"type":"thinking","thinking":null},{"type":"reference","text":"r"}]}"#,
                )],
                false,
                vec![token("Hi"), reasoning("hmm"), reasoning("plain")],
            ),
            case(
                "refusal",
                vec![delta(r#"{"content":null,"refusal":"I can't help."}"#)],
                false,
                vec![refusal("I can't help.")],
            ),
            case(
                "reasoning_content",
                vec![delta(r#"{"content":"","reasoning_content":"think"}"#)],
                false,
                vec![reasoning("think")],
            ),
            case(
                "reasoning",
                vec![delta(r#"{"reasoning":"think","channel":"analysis"}"#)],
                false,
                vec![reasoning("think")],
            ),
            case(
                "reasoning_details never doubles reasoning",
                vec![
                    delta(
                        r#"{"reasoning":"a","reasoning_details":[{"type":"reasoning.text","text":"a","index":0}]}"#,
                    ),
                    delta(
                        r#"{"reasoning":null,"reasoning_details":[{"type":"reasoning.text","text":"","signature":"s"}]}"#,
                    ),
                ],
                false,
                vec![reasoning("a")],
            ),
            case(
                "reasoning_content and reasoning carrying the same text emit once",
                vec![delta(r#"{"reasoning_content":"x","reasoning":"x"}"#)],
                false,
                vec![reasoning("x")],
            ),
            case(
                "within a delta: reasoning, content, refusal, tool calls",
                vec![delta(
                    r#"{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}],"refusal":"r","content":"c","reasoning_content":"t"}"#,
                )],
                false,
                vec![
                    reasoning("t"),
                    token("c"),
                    refusal("r"),
                    tool(0, Some("c1"), Some("f"), Some("{}")),
                ],
            ),
            case(
                "tool call: first fragment, empty fragment, next fragments",
                vec![
                    delta(
                        r#"{"tool_calls":[{"index":1,"id":"toolu_1","type":"function","function":{"name":"read_file","arguments":""}}]}"#,
                    ),
                    delta(r#"{"tool_calls":[{"index":1,"function":{"arguments":""}}]}"#),
                    delta(r#"{"tool_calls":[{"index":1,"function":{}}]}"#),
                    delta(r#"{"tool_calls":[{"index":1,"function":{"arguments":"{\"pa"}}]}"#),
                    delta(r#"{"tool_calls":[{"index":1,"function":{"arguments":"th\": 1}"}}]}"#),
                ],
                false,
                vec![
                    tool(1, Some("toolu_1"), Some("read_file"), None),
                    tool(1, None, None, Some("{\"pa")),
                    tool(1, None, None, Some("th\": 1}")),
                ],
            ),
            case(
                "tool call: id and name repeated on every fragment go out once",
                vec![
                    delta(
                        r#"{"tool_calls":[{"index":0,"id":"c1","function":{"name":"f","arguments":"{"}}]}"#,
                    ),
                    delta(
                        r#"{"tool_calls":[{"index":0,"id":"c1","function":{"name":"f","arguments":"}"}}]}"#,
                    ),
                    delta(
                        r#"{"tool_calls":[{"index":0,"id":"c1","function":{"name":"f","arguments":""}}]}"#,
                    ),
                ],
                false,
                vec![
                    tool(0, Some("c1"), Some("f"), Some("{")),
                    tool(0, None, None, Some("}")),
                ],
            ),
            case(
                "tool call: a name arriving after the id is still sent, once",
                vec![
                    delta(r#"{"tool_calls":[{"index":0,"id":"c1","function":{"name":""}}]}"#),
                    delta(
                        r#"{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{}"}}]}"#,
                    ),
                ],
                false,
                vec![
                    tool(0, Some("c1"), None, None),
                    tool(0, None, Some("f"), Some("{}")),
                ],
            ),
            case(
                "parallel tool calls in one delta",
                vec![
                    delta(
                        r#"{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":""}},{"index":1,"id":"b","function":{"name":"g","arguments":"{}"}}]}"#,
                    ),
                    delta(r#"{"tool_calls":[{"index":0,"function":{"arguments":"[]"}}]}"#),
                ],
                false,
                vec![
                    tool(0, Some("a"), Some("f"), None),
                    tool(1, Some("b"), Some("g"), Some("{}")),
                    tool(0, None, None, Some("[]")),
                ],
            ),
            case(
                "tool call without index: its position in the array",
                vec![delta(
                    r#"{"tool_calls":[{"id":"c","function":{"name":"h"}},{"id":"d","function":{"name":"k"}}]}"#,
                )],
                false,
                vec![
                    tool(0, Some("c"), Some("h"), None),
                    tool(1, Some("d"), Some("k"), None),
                ],
            ),
            case(
                "legacy function_call is tool call 0",
                vec![
                    delta(r#"{"function_call":{"name":"f","arguments":""}}"#),
                    delta(r#"{"function_call":{"arguments":"{\"a\":1}"}}"#),
                    delta(r#"{"function_call":{"arguments":""}}"#),
                    finish_chunk("function_call"),
                    done(),
                ],
                false,
                vec![
                    tool(0, None, Some("f"), None),
                    tool(0, None, None, Some("{\"a\":1}")),
                    finish(FinishReason::ToolCalls, None),
                ],
            ),
            case(
                "n>1: choices other than 0 are tagged; tool calls tracked per choice",
                vec![
                    choice(1, r#"{"role":"assistant","content":"b"}"#, "null"),
                    choice(0, r#"{"content":"a"}"#, "null"),
                    choice(2, r#"{"reasoning_content":"r"}"#, "null"),
                    choice(
                        1,
                        r#"{"tool_calls":[{"index":0,"id":"x","function":{"name":"f","arguments":"1"}}]}"#,
                        "null",
                    ),
                    choice(
                        0,
                        r#"{"tool_calls":[{"index":0,"id":"y","function":{"name":"g"}}]}"#,
                        "null",
                    ),
                ],
                false,
                vec![
                    token_in(1, "b"),
                    token("a"),
                    reasoning_in(2, "r"),
                    tool_in(Some(1), 0, Some("x"), Some("f"), Some("1")),
                    tool(0, Some("y"), Some("g"), None),
                ],
            ),
            case(
                "several choices in one chunk, in order",
                vec![msg(
                    r#"{"choices":[{"index":2,"delta":{"content":"c"}},{"index":0,"delta":{"content":"a"}}]}"#,
                )],
                false,
                vec![token_in(2, "c"), token("a")],
            ),
            case(
                "finish_reason: choice 0's wins over one seen first",
                vec![
                    choice(1, "{}", r#""length""#),
                    choice(0, "{}", r#""tool_calls""#),
                    choice(2, "{}", r#""content_filter""#),
                    done(),
                ],
                false,
                vec![finish(FinishReason::ToolCalls, None)],
            ),
            case(
                "finish_reason: without choice 0, the first seen",
                vec![
                    choice(2, "{}", r#""length""#),
                    choice(1, "{}", r#""stop""#),
                    done(),
                ],
                false,
                vec![finish(FinishReason::Length, None)],
            ),
            case(
                "finish_reason: a later null or other reason does not replace it",
                vec![
                    finish_chunk("length"),
                    finish_chunk("stop"),
                    msg(&format!(
                        r#"{{"choices":[{{"index":0,"delta":{{"content":""}},"finish_reason":null}}],"usage":{usage}}}"#
                    )),
                    done(),
                ],
                false,
                vec![finish(FinishReason::Length, Some(usage))],
            ),
            case(
                "finish is held back for the usage chunk that follows",
                vec![
                    delta(r#"{"content":"x"}"#),
                    finish_chunk("stop"),
                    msg(&format!(r#"{{"choices":[],"usage":{usage}}}"#)),
                    done(),
                ],
                false,
                vec![token("x"), finish(FinishReason::Stop, Some(usage))],
            ),
            case(
                "usage on the finish chunk",
                vec![
                    msg(&format!(
                        r#"{{"choices":[{{"index":0,"delta":{{"content":""}},"finish_reason":"stop"}}],"usage":{usage}}}"#
                    )),
                    done(),
                ],
                false,
                vec![finish(FinishReason::Stop, Some(usage))],
            ),
            case(
                "usage: the most recent non-null object wins",
                vec![
                    msg(r#"{"choices":[],"usage":{"total_tokens":1}}"#),
                    msg(r#"{"choices":[],"usage":{"total_tokens":2}}"#),
                    msg(r#"{"choices":[],"usage":null}"#),
                    msg(r#"{"choices":[],"usage":7}"#),
                    finish_chunk("stop"),
                    done(),
                ],
                false,
                vec![finish(FinishReason::Stop, Some(r#"{"total_tokens":2}"#))],
            ),
            case(
                "usage under x_groq",
                vec![
                    msg(&format!(
                        r#"{{"choices":[{{"index":0,"delta":{{}},"finish_reason":"tool_calls"}}],"x_groq":{{"id":"req_1","usage":{usage}}}}}"#
                    )),
                    done(),
                ],
                false,
                vec![finish(FinishReason::ToolCalls, Some(usage))],
            ),
            case(
                "top-level usage preferred over x_groq's in the same chunk",
                vec![
                    msg(r#"{"x_groq":{"usage":{"total_tokens":1}},"usage":{"total_tokens":2}}"#),
                    done(),
                ],
                false,
                vec![finish(FinishReason::Stop, Some(r#"{"total_tokens":2}"#))],
            ),
            case(
                "[DONE] without a finish_reason is a stop",
                vec![delta(r#"{"content":"x"}"#), done()],
                false,
                vec![token("x"), stop()],
            ),
            case(
                "[DONE] with surrounding whitespace",
                vec![msg(" [DONE]\n")],
                false,
                vec![stop()],
            ),
            case(
                "EOF after a finish_reason: finish (no [DONE] sent)",
                vec![
                    delta(r#"{"content":"x"}"#),
                    finish_chunk("length"),
                    msg(&format!(r#"{{"choices":[],"usage":{usage}}}"#)),
                ],
                true,
                vec![token("x"), finish(FinishReason::Length, Some(usage))],
            ),
            case(
                "EOF without a finish_reason: disconnected",
                vec![delta(r#"{"content":"x"}"#)],
                true,
                vec![token("x"), disconnected()],
            ),
            case(
                "EOF on an empty stream: disconnected",
                vec![],
                true,
                vec![disconnected()],
            ),
            case(
                "error event type with an error object",
                vec![
                    delta(r#"{"reasoning":"r"}"#),
                    named(
                        "error",
                        r#"{"error":{"message":"Tool call validation failed","type":"invalid_request_error","code":"tool_use_failed"}}"#,
                    ),
                ],
                true,
                vec![
                    reasoning("r"),
                    upstream_error("Tool call validation failed"),
                ],
            ),
            case(
                "error event type, Anthropic shape",
                vec![named(
                    "error",
                    r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
                )],
                false,
                vec![upstream_error("Overloaded")],
            ),
            case(
                "error event type with a top-level message",
                vec![named("error", r#"{"message":"quota exceeded","code":429}"#)],
                false,
                vec![upstream_error("quota exceeded")],
            ),
            case(
                "error event type with plain text",
                vec![named("error", "  upstream overloaded\n")],
                false,
                vec![upstream_error("upstream overloaded")],
            ),
            case(
                "error event type with no data",
                vec![named("error", "")],
                false,
                vec![upstream_error("the upstream reported an error")],
            ),
            case(
                "error object in a data chunk",
                vec![
                    delta(r#"{"content":"x"}"#),
                    msg(r#"{"error":{"message":"The server had an error","type":"server_error"}}"#),
                ],
                true,
                vec![token("x"), upstream_error("The server had an error")],
            ),
            case(
                "error string in a data chunk",
                vec![msg(r#"{"error":"rate \"limited\""}"#)],
                false,
                vec![upstream_error("rate \"limited\"")],
            ),
            case(
                "error object without a message: shown as sent",
                vec![msg(r#"{"error":{"code":500}}"#)],
                false,
                vec![upstream_error(r#"{"code":500}"#)],
            ),
            case(
                "error after a finish_reason still fails the stream (OpenRouter)",
                vec![
                    delta(r#"{"reasoning":"We need"}"#),
                    finish_chunk("length"),
                    msg(&format!(
                        r#"{{"error":{{"code":400,"message":"Token limit reached"}},"choices":[{{"index":0,"delta":{{"content":"!"}},"finish_reason":null}}],"usage":{usage}}}"#
                    )),
                    done(),
                ],
                true,
                vec![
                    reasoning("We need"),
                    token("!"),
                    upstream_error("Token limit reached"),
                ],
            ),
            case(
                "error: null is not an error",
                vec![msg(
                    r#"{"error":null,"choices":[{"index":0,"delta":{"content":"x"}}]}"#,
                )],
                false,
                vec![token("x")],
            ),
            case(
                "vLLM-style error chunk",
                vec![msg(
                    r#"{"object":"error","message":"prompt too long","type":"BadRequestError","code":400}"#,
                )],
                false,
                vec![upstream_error("prompt too long")],
            ),
            case(
                "empty data is ignored",
                vec![msg(""), msg(" \n "), delta(r#"{"content":"x"}"#)],
                false,
                vec![token("x")],
            ),
            case(
                "nulls and empty strings are not events",
                vec![
                    delta(
                        r#"{"role":"assistant","content":null,"refusal":null,"reasoning":null,"reasoning_content":null,"tool_calls":null,"function_call":null}"#,
                    ),
                    delta(r#"{"content":"","refusal":"","reasoning":"","reasoning_content":""}"#),
                    delta(
                        r#"{"tool_calls":[{"index":0,"id":"","function":{"name":"","arguments":""}}]}"#,
                    ),
                    delta("null"),
                    choice(0, "{}", r#""""#),
                    msg(r#"{"choices":null,"usage":null,"x_groq":null,"error":null}"#),
                    msg(r#"{"choices":[{"index":0,"delta":null,"finish_reason":null}]}"#),
                ],
                true,
                vec![disconnected()],
            ),
            case(
                "chunks without choices are fine",
                vec![
                    msg(
                        r#"{"choices":[],"id":"","model":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]}"#,
                    ),
                    msg(r#"{"id":"x","object":"chat.completion.chunk"}"#),
                    delta(r#"{"content":"x"}"#),
                ],
                false,
                vec![token("x")],
            ),
            case(
                "choice without index or delta",
                vec![msg(r#"{"choices":[{"finish_reason":"length"}]}"#), done()],
                false,
                vec![finish(FinishReason::Length, None)],
            ),
            case(
                "unknown fields are ignored",
                vec![msg(
                    r#"{"id":"x","provider":"p","system_fingerprint":"fp","choices":[{"index":0,"delta":{"role":"assistant","content":"x","audio":{"id":"a"},"annotations":[]},"logprobs":{"content":[{"token":"x","logprob":-0.1}]},"content_filter_results":{"hate":{"filtered":false}},"native_finish_reason":null,"finish_reason":null}],"service_tier":"default"}"#,
                )],
                false,
                vec![token("x")],
            ),
            case(
                "unknown named events are ignored",
                vec![named("ping", "keep-alive"), delta(r#"{"content":"x"}"#)],
                false,
                vec![token("x")],
            ),
            case(
                "after finish, nothing more",
                vec![
                    finish_chunk("stop"),
                    done(),
                    delta(r#"{"content":"late"}"#),
                    named("error", r#"{"error":{"message":"late"}}"#),
                    msg("not json"),
                    done(),
                ],
                true,
                vec![stop()],
            ),
            case(
                "after an error, nothing more",
                vec![
                    msg(r#"{"error":"boom"}"#),
                    delta(r#"{"content":"late"}"#),
                    finish_chunk("stop"),
                    done(),
                ],
                true,
                vec![upstream_error("boom")],
            ),
        ]
    }

    #[test]
    fn table() {
        let failures: Vec<String> = cases()
            .into_iter()
            .filter_map(|case| {
                let (got, translator) = run(&case.input, case.end);
                let (got, expected) = (as_json(&got), as_json(&case.expected));
                let terminal = expected
                    .last()
                    .is_some_and(|event| event["type"] == "finish" || event["type"] == "error");
                (got != expected || translator.is_done() != terminal).then(|| {
                    format!(
                        "{}:\n  got      {}\n  expected {}\n  is_done {}",
                        case.name,
                        Value::from(got),
                        Value::from(expected),
                        translator.is_done(),
                    )
                })
            })
            .collect();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn finish_reasons_are_normalized() {
        let table = [
            ("stop", FinishReason::Stop),
            ("end_turn", FinishReason::Stop),
            ("stop_sequence", FinishReason::Stop),
            ("eos", FinishReason::Stop),
            ("length", FinishReason::Length),
            ("max_tokens", FinishReason::Length),
            ("MAX_TOKENS", FinishReason::Length),
            ("tool_calls", FinishReason::ToolCalls),
            ("function_call", FinishReason::ToolCalls),
            ("tool_use", FinishReason::ToolCalls),
            ("content_filter", FinishReason::ContentFilter),
            ("safety", FinishReason::ContentFilter),
            ("SAFETY", FinishReason::ContentFilter),
        ];
        let failures: Vec<String> = table
            .iter()
            .filter_map(|&(raw, expected)| {
                let (got, _) = run(&[finish_chunk(raw), done()], false);
                let expected = vec![finish(expected, None)];
                (as_json(&got) != as_json(&expected)).then(|| format!("{raw}: got {got:?}"))
            })
            .collect();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn invalid_json_ends_the_stream_without_echoing_it() {
        let long_text = "x".repeat(5_000);
        let inputs = [
            r#"{"choices":["#.to_owned(),
            "not json".to_owned(),
            "[1,2]".to_owned(),
            "42".to_owned(),
            r#""a string""#.to_owned(),
            r#"{"choices":[{"index":0,"delta":{"content":5}}]}"#.to_owned(),
            format!(r#"{{"choices":[{{"index":"{long_text}"}}]}}"#),
            format!(r#"{{"choices":[{{"delta":{{"content":"{long_text}"}}}}], oops}}"#),
        ];
        for data in inputs {
            let (events, translator) = run(&[delta(r#"{"content":"ok"}"#), msg(&data)], true);
            assert!(translator.is_done(), "{data:.60}");
            let Some((StreamEvent::Error { code, message }, before)) = events.split_last() else {
                panic!("{data:.60}: expected an error last, got {events:?}");
            };
            assert_eq!(as_json(before), as_json(&[token("ok")]), "{data:.60}");
            assert_eq!(*code, ErrorCode::InvalidUpstreamData, "{data:.60}");
            assert!(message.starts_with(NOT_JSON), "{data:.60}: {message}");
            assert!(message.chars().count() < 300, "{data:.60}: {message}");
        }
    }

    #[test]
    fn long_upstream_error_messages_are_passed_on_whole_for_masking() {
        let long = "é".repeat(1_500);
        let (events, _) = run(&[named("error", &long)], false);
        assert_eq!(as_json(&events), as_json(&[upstream_error(&long)]));

        let (events, _) = run(&[msg(&format!(r#"{{"error":"{long}"}}"#))], false);
        assert_eq!(as_json(&events), as_json(&[upstream_error(&long)]));
    }

    #[test]
    fn pretty_printed_usage_is_passed_on_one_line() {
        let (events, _) = run(
            &[
                msg(
                    "{\n \"choices\": [],\r\n \"usage\": {\n  \"total_tokens\": 3,\n  \"note\": \"a\\nb\"\n }\n}",
                ),
                done(),
            ],
            false,
        );
        let [
            StreamEvent::Finish {
                usage: Some(usage), ..
            },
        ] = events.as_slice()
        else {
            panic!("expected one finish with usage, got {events:?}");
        };
        assert!(!usage.get().contains(['\n', '\r']), "{usage}");
        let usage: Value = serde_json::from_str(usage.get()).unwrap();
        assert_eq!(usage, json!({"total_tokens": 3, "note": "a\nb"}));
    }

    #[test]
    fn usage_is_passed_on_verbatim() {
        let usage = r#"{"prompt_tokens":43,"cost":0.000669,"cost_details":{"upstream_inference_cost":null}}"#;
        let (events, _) = run(
            &[msg(&format!(r#"{{"choices":[],"usage":{usage}}}"#)), done()],
            false,
        );
        let [
            StreamEvent::Finish {
                usage: Some(got), ..
            },
        ] = events.as_slice()
        else {
            panic!("expected one finish with usage, got {events:?}");
        };
        assert_eq!(got.get(), usage);
    }

    #[test]
    fn is_done_only_after_a_terminal_event() {
        let mut translator = Translator::default();
        let mut out = Vec::new();
        assert!(!translator.is_done());
        translator.push("message", &delta(r#"{"content":"x"}"#).1, &mut out);
        translator.push("message", &finish_chunk("stop").1, &mut out);
        assert!(!translator.is_done());
        translator.push("message", "[DONE]", &mut out);
        assert!(translator.is_done());
        assert_eq!(out.len(), 2);
    }

    /// A strict WHATWG event-stream splitter, enough for the LF-only fixtures.
    fn split_sse(text: &str) -> Vec<(String, String)> {
        let mut events = Vec::new();
        let mut event_type = String::new();
        let mut data = String::new();
        let mut lines: Vec<&str> = text.split('\n').collect();
        // Whatever follows the last line feed is an unterminated line: never dispatched.
        lines.pop();
        for line in lines {
            if line.is_empty() {
                if !data.is_empty() {
                    data.pop();
                    let kind = if event_type.is_empty() {
                        "message".to_owned()
                    } else {
                        event_type.clone()
                    };
                    events.push((kind, std::mem::take(&mut data)));
                }
                event_type.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "data" => {
                    data.push_str(value);
                    data.push('\n');
                }
                "event" => value.clone_into(&mut event_type),
                _ => {}
            }
        }
        events
    }

    /// What a client would rebuild from one choice's events.
    #[derive(Default)]
    struct Extracted {
        content: String,
        refusal: String,
        reasoning: String,
        tool_calls: BTreeMap<u32, Value>,
    }

    /// Replays one recording and lists every way the result differs from expected.json.
    fn check_recording(file: &str, entry: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        let text = fs::read_to_string(format!("{FIXTURES}{file}")).unwrap();
        let sse = split_sse(&text);
        if Some(sse.len() as u64) != entry["sse_events_dispatched_strict"].as_u64() {
            problems.push(format!("the splitter dispatched {} events", sse.len()));
        }
        let mut translator = Translator::default();
        let mut events = Vec::new();
        for (event_type, data) in &sse {
            translator.push(event_type, data, &mut events);
        }
        translator.end(&mut events);

        let choices = extract(&events, &mut problems);
        compare_choices(choices, &entry["expected"], &mut problems);
        compare_terminal(&events, &entry["expected"], &mut problems);

        let mut after = Vec::new();
        translator.push("message", &delta(r#"{"content":"late"}"#).1, &mut after);
        translator.end(&mut after);
        if !after.is_empty() {
            problems.push(format!("events after the end: {after:?}"));
        }
        problems
    }

    /// Accumulates the events per choice, checking on the way the rules a
    /// client relies on: no empty events, `id`/`name` on a call's first event only.
    fn extract(events: &[StreamEvent], problems: &mut Vec<String>) -> BTreeMap<u32, Extracted> {
        let mut choices: BTreeMap<u32, Extracted> = BTreeMap::new();
        for event in events {
            match event {
                StreamEvent::Token {
                    token,
                    refusal,
                    choice,
                } => {
                    let extracted = choices.entry(choice.unwrap_or(0)).or_default();
                    let text = if *refusal {
                        &mut extracted.refusal
                    } else {
                        &mut extracted.content
                    };
                    text.push_str(token);
                }
                StreamEvent::Reasoning { token, choice } => {
                    let extracted = choices.entry(choice.unwrap_or(0)).or_default();
                    extracted.reasoning.push_str(token);
                }
                StreamEvent::ToolCall {
                    index,
                    id,
                    name,
                    arguments,
                    choice,
                } => {
                    let calls = &mut choices.entry(choice.unwrap_or(0)).or_default().tool_calls;
                    let fragment = arguments.as_deref().unwrap_or_default();
                    if let Some(call) = calls.get_mut(index) {
                        if id.is_some() || name.is_some() || fragment.is_empty() {
                            problems.push(format!("later tool call event {event:?}"));
                        }
                        let arguments =
                            format!("{}{fragment}", call["arguments"].as_str().unwrap());
                        call["arguments"] = Value::from(arguments);
                    } else {
                        if id.is_none() || name.is_none() {
                            problems.push(format!(
                                "first tool call event without id or name {event:?}"
                            ));
                        }
                        let call =
                            json!({"index": index, "id": id, "name": name, "arguments": fragment});
                        calls.insert(*index, call);
                    }
                }
                StreamEvent::Start { .. }
                | StreamEvent::Finish { .. }
                | StreamEvent::Error { .. } => {}
            }
            let empty = matches!(
                event,
                StreamEvent::Token { token, .. } | StreamEvent::Reasoning { token, .. } if token.is_empty()
            );
            if empty {
                problems.push(format!("empty event {event:?}"));
            }
        }
        choices
    }

    fn compare_choices(
        mut choices: BTreeMap<u32, Extracted>,
        expected: &Value,
        problems: &mut Vec<String>,
    ) {
        for want in expected["choices"].as_array().unwrap() {
            let index = u32::try_from(want["index"].as_u64().unwrap()).unwrap();
            let got = choices.remove(&index).unwrap_or_default();
            let want_text = |keys: &[&str]| {
                keys.iter()
                    .find_map(|key| want[*key].as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            let compared = [
                ("content", got.content, want_text(&["content"])),
                ("refusal", got.refusal, want_text(&["refusal"])),
                (
                    "reasoning",
                    got.reasoning,
                    want_text(&[
                        "reasoning_content",
                        "reasoning",
                        "thinking_from_content_array",
                    ]),
                ),
            ];
            for (what, got, want) in compared {
                if got != want {
                    problems.push(format!(
                        "choice {index} {what}: got {got:?}, expected {want:?}"
                    ));
                }
            }
            let got_calls: Vec<Value> = got.tool_calls.into_values().collect();
            let want_calls: Vec<Value> = want["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|call| {
                    json!({
                        "index": call["index"],
                        "id": call["id"],
                        "name": call["name"],
                        "arguments": call["arguments"],
                    })
                })
                .collect();
            if got_calls != want_calls {
                problems.push(format!(
                    "choice {index} tool calls: got {got_calls:?}, expected {want_calls:?}"
                ));
            }
        }
        if !choices.is_empty() {
            problems.push(format!(
                "events for unexpected choices {:?}",
                choices.keys()
            ));
        }
    }

    /// Exactly one terminal event, last: the upstream's error where the
    /// recording has one, else a finish with choice 0's reason and the usage.
    fn compare_terminal(events: &[StreamEvent], expected: &Value, problems: &mut Vec<String>) {
        let terminals = events.iter().filter(|event| event.is_terminal()).count();
        if terminals != 1 {
            problems.push(format!("{terminals} terminal events"));
        }
        match (events.last(), expected["in_stream_errors"].get(0)) {
            (Some(StreamEvent::Error { code, message }), Some(error)) => {
                let want = error
                    .get("payload")
                    .map_or(&error["payload_error"], |payload| &payload["error"])["message"]
                    .as_str();
                if *code != ErrorCode::UpstreamError || want != Some(message.as_str()) {
                    problems.push(format!(
                        "error {code:?} {message:?}, expected upstream_error {want:?}"
                    ));
                }
            }
            (
                Some(StreamEvent::Finish {
                    finish_reason,
                    usage,
                }),
                None,
            ) => {
                let want = expected["choices"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|choice| choice["index"] == 0)
                    .and_then(|choice| choice["finish_reason"].as_str());
                if want != Some(finish_reason.as_str()) {
                    problems.push(format!(
                        "finish_reason {finish_reason:?}, expected {want:?}"
                    ));
                }
                let usage: Value = usage.as_ref().map_or(Value::Null, |usage| {
                    serde_json::from_str(usage.get()).unwrap()
                });
                if usage != expected["usage"] {
                    problems.push(format!("usage {usage}, expected {}", expected["usage"]));
                }
            }
            (last, error) => problems.push(format!(
                "ended with {last:?}, expected in-stream error {error:?}"
            )),
        }
    }

    #[test]
    fn corpus_openai_chat_recordings() {
        let manifest = fs::read_to_string(format!("{FIXTURES}expected.json")).unwrap();
        let manifest: BTreeMap<String, Value> = serde_json::from_str(&manifest).unwrap();
        let recordings: Vec<(&String, &Value)> = manifest
            .iter()
            .filter(|(_, entry)| entry["format"] == "openai_chat")
            .collect();
        // Guards against a renamed `format` key silently checking nothing.
        assert_eq!(
            recordings.len(),
            17,
            "openai_chat recordings in expected.json"
        );
        let failures: Vec<String> = recordings
            .into_iter()
            .flat_map(|(file, entry)| {
                check_recording(file, entry)
                    .into_iter()
                    .map(move |problem| format!("{file}: {problem}"))
            })
            .collect();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}
