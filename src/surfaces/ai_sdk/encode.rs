//! The AI SDK's UI message stream from a follower's entries
//! (`docs/PROTOCOL.md` §8): `start` and `start-step`, text and reasoning
//! as start/delta/end runs with ids, tool input as start/delta/available,
//! then `finish-step` and `finish`, or an `error` part; `[DONE]` last.
//!
//! Every part carries only the fields the SDK's own schema names: strict
//! clients reject any other. Where our events say more than a part can,
//! this module decides:
//! - a generation stopped on request finishes with `other`, and one that
//!   broke off ends with `error`, never with a `finish` that looks complete;
//! - a tool call's input is parsed once the generation finishes, when its
//!   last fragment is known; input that is not JSON is a `tool-input-error`;
//! - only the first choice is a UI message: the others are not shown.

use axum::response::sse::Event;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::event::{ErrorCode, FinishReason, StreamEvent};
use crate::streams::{Entry, StreamId};
use crate::surfaces::sse;

/// Sent if one of our own parts ever failed to serialize (a bug): the client
/// is told, rather than shown a silent gap.
const ENCODING_FAILED: &str = r#"{"type":"error","errorText":"a part could not be encoded"}"#;

/// The most tool input kept per answer until it is parsed: beyond it a
/// call's input is reported as an error rather than held.
const MAX_TOOL_INPUT_BYTES: usize = 1 << 20;

/// Re-encodes one follower's entries as UI message stream parts.
#[derive(Debug)]
pub(super) struct UiEncoder {
    message_id: String,
    stream_id: String,
    model: String,
    upstream: Option<String>,
    /// The text or reasoning part that is open, and its id.
    open: Option<(Run, String)>,
    /// Parts opened so far: each gets its own id.
    opened: u32,
    calls: Vec<Call>,
    input_bytes: usize,
    /// The generation's own last event (`finish` or `error`) went out.
    complete: bool,
    /// Scratch for each part's JSON; see [`sse::json_event`].
    json: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Text,
    Reasoning,
}

#[derive(Debug)]
struct Call {
    index: u32,
    id: String,
    name: String,
    /// `None` once it outgrew what we keep.
    input: Option<String>,
}

impl UiEncoder {
    /// An encoder for generation `stream`, whose answer is message `message_id`.
    pub(super) fn new(stream: StreamId, message_id: String) -> Self {
        Self {
            message_id,
            stream_id: stream.to_string(),
            model: String::new(),
            upstream: None,
            open: None,
            opened: 0,
            calls: Vec::new(),
            input_bytes: 0,
            complete: false,
            json: Vec::new(),
        }
    }

    /// Whether the client got the whole generation, its last event and
    /// `[DONE]`: then nobody needs it replayed.
    pub(super) fn read_to_end(&self) -> bool {
        self.complete
    }

    /// Appends the parts for one entry to `out`.
    pub(super) fn encode(&mut self, entry: &Entry, out: &mut Vec<Event>) {
        match entry {
            Entry::Event { event, .. } => self.event(event, out),
            Entry::Gap { .. } => self.fail(
                ErrorCode::ResumeGap,
                "this client fell further behind the generation than RESUME_MAX_STREAM_BYTES \
                 keeps; the answer is incomplete",
                out,
            ),
            Entry::Lost { code, message } => self.fail(*code, message, out),
            Entry::Done => out.push(Event::default().data("[DONE]")),
        }
    }

    fn event(&mut self, event: &StreamEvent, out: &mut Vec<Event>) {
        match event {
            StreamEvent::Start {
                model, upstream, ..
            } => {
                self.model.clone_from(model);
                self.upstream.clone_from(upstream);
                let start = Part::Start {
                    message_id: &self.message_id,
                    message_metadata: Metadata {
                        model: &self.model,
                        upstream: self.upstream.as_deref(),
                        usage: None,
                        stream_id: &self.stream_id,
                    },
                };
                let start = part(&mut self.json, &start);
                out.extend([start, part(&mut self.json, &Part::StartStep)]);
            }
            StreamEvent::Token {
                token,
                choice: None | Some(0),
                ..
            } => self.run(Run::Text, token, out),
            StreamEvent::Reasoning {
                token,
                choice: None | Some(0),
            } => self.run(Run::Reasoning, token, out),
            StreamEvent::ToolCall {
                index,
                id,
                name,
                arguments,
                choice: None | Some(0),
            } => self.tool_call(
                *index,
                id.as_deref(),
                name.as_deref(),
                arguments.as_deref(),
                out,
            ),
            // Only the first choice is a UI message.
            StreamEvent::Token { .. }
            | StreamEvent::Reasoning { .. }
            | StreamEvent::ToolCall { .. } => {}
            StreamEvent::Finish {
                finish_reason,
                usage,
            } => self.finish(*finish_reason, usage.as_deref(), out),
            StreamEvent::Error { code, message } => {
                self.fail(*code, message, out);
                self.complete = true;
            }
        }
    }

    /// A delta of text or reasoning, opening its part first if needed.
    fn run(&mut self, run: Run, delta: &str, out: &mut Vec<Event>) {
        if self.open.as_ref().is_none_or(|(open, _)| *open != run) {
            self.close(out);
            let id = format!("{}-{}", run.name(), self.opened);
            self.opened += 1;
            let start = match run {
                Run::Text => Part::TextStart { id: &id },
                Run::Reasoning => Part::ReasoningStart { id: &id },
            };
            out.push(part(&mut self.json, &start));
            self.open = Some((run, id));
        }
        let Some((_, id)) = &self.open else {
            return;
        };
        let delta_part = match run {
            Run::Text => Part::TextDelta { id, delta },
            Run::Reasoning => Part::ReasoningDelta { id, delta },
        };
        out.push(part(&mut self.json, &delta_part));
    }

    /// Ends the open text or reasoning part.
    fn close(&mut self, out: &mut Vec<Event>) {
        if let Some((run, id)) = self.open.take() {
            let end = match run {
                Run::Text => Part::TextEnd { id: &id },
                Run::Reasoning => Part::ReasoningEnd { id: &id },
            };
            out.push(part(&mut self.json, &end));
        }
    }

    fn tool_call(
        &mut self,
        index: u32,
        id: Option<&str>,
        name: Option<&str>,
        arguments: Option<&str>,
        out: &mut Vec<Event>,
    ) {
        let at = match self.calls.iter().position(|call| call.index == index) {
            Some(at) => at,
            None => {
                self.close(out);
                let call = Call {
                    index,
                    id: id
                        .map_or_else(|| format!("call_{}_{index}", self.stream_id), str::to_owned),
                    name: name.unwrap_or_default().to_owned(),
                    input: Some(String::new()),
                };
                let start = Part::ToolInputStart {
                    tool_call_id: &call.id,
                    tool_name: &call.name,
                };
                out.push(part(&mut self.json, &start));
                self.calls.push(call);
                self.calls.len() - 1
            }
        };
        let Some(delta) = arguments.filter(|delta| !delta.is_empty()) else {
            return;
        };
        self.input_bytes += delta.len();
        let over = self.input_bytes > MAX_TOOL_INPUT_BYTES;
        let call = &mut self.calls[at];
        if over {
            call.input = None;
        } else if let Some(input) = &mut call.input {
            input.push_str(delta);
        }
        let delta = Part::ToolInputDelta {
            tool_call_id: &call.id,
            input_text_delta: delta,
        };
        out.push(part(&mut self.json, &delta));
    }

    fn finish(&mut self, reason: FinishReason, usage: Option<&RawValue>, out: &mut Vec<Event>) {
        self.close(out);
        for call in std::mem::take(&mut self.calls) {
            let available = match call.input.as_deref().map(parse_input) {
                Some(Ok(input)) => Part::ToolInputAvailable {
                    tool_call_id: &call.id,
                    tool_name: &call.name,
                    input,
                },
                Some(Err(error)) => Part::ToolInputError {
                    tool_call_id: &call.id,
                    tool_name: &call.name,
                    input: Value::String(call.input.clone().unwrap_or_default()),
                    error_text: format!("the tool input is not valid JSON: {error}"),
                },
                None => Part::ToolInputError {
                    tool_call_id: &call.id,
                    tool_name: &call.name,
                    input: Value::Null,
                    error_text: format!(
                        "the tool input is longer than the {MAX_TOOL_INPUT_BYTES} bytes kept"
                    ),
                },
            };
            out.push(part(&mut self.json, &available));
        }
        let finish = Part::Finish {
            finish_reason: finish_reason(reason),
            message_metadata: Metadata {
                model: &self.model,
                upstream: self.upstream.as_deref(),
                usage: Some(usage),
                stream_id: &self.stream_id,
            },
        };
        let finish = part(&mut self.json, &finish);
        out.extend([part(&mut self.json, &Part::FinishStep), finish]);
        self.complete = true;
    }

    /// The answer broke off: an `error` part, after ending the open one.
    fn fail(&mut self, code: ErrorCode, message: &str, out: &mut Vec<Event>) {
        self.close(out);
        let error = Part::Error {
            error_text: format!("{}: {message}", code.as_str()),
        };
        out.push(part(&mut self.json, &error));
    }
}

fn part(json: &mut Vec<u8>, part: &Part<'_>) -> Event {
    sse::json_event(Event::default(), part, json, ENCODING_FAILED)
}

impl Run {
    fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Reasoning => "reasoning",
        }
    }
}

/// A tool call's complete input; a call that takes no arguments may send none.
fn parse_input(input: &str) -> Result<Value, serde_json::Error> {
    if input.trim().is_empty() {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    serde_json::from_str(input)
}

/// The SDK's finish reasons: `stop`, `length`, `content-filter`,
/// `tool-calls`, `error`, `other`.
fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool-calls",
        FinishReason::ContentFilter => "content-filter",
        // Stopped on request: complete as far as it went, but not a `stop`
        // the model chose.
        FinishReason::Cancelled => "other",
    }
}

/// One part of the UI message stream, exactly as the SDK's schema names
/// its fields.
#[derive(Serialize)]
#[serde(
    tag = "type",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
enum Part<'a> {
    Start {
        message_id: &'a str,
        message_metadata: Metadata<'a>,
    },
    StartStep,
    TextStart {
        id: &'a str,
    },
    TextDelta {
        id: &'a str,
        delta: &'a str,
    },
    TextEnd {
        id: &'a str,
    },
    ReasoningStart {
        id: &'a str,
    },
    ReasoningDelta {
        id: &'a str,
        delta: &'a str,
    },
    ReasoningEnd {
        id: &'a str,
    },
    ToolInputStart {
        tool_call_id: &'a str,
        tool_name: &'a str,
    },
    ToolInputDelta {
        tool_call_id: &'a str,
        input_text_delta: &'a str,
    },
    ToolInputAvailable {
        tool_call_id: &'a str,
        tool_name: &'a str,
        input: Value,
    },
    ToolInputError {
        tool_call_id: &'a str,
        tool_name: &'a str,
        input: Value,
        error_text: String,
    },
    FinishStep,
    Finish {
        finish_reason: &'static str,
        message_metadata: Metadata<'a>,
    },
    Error {
        error_text: String,
    },
}

/// What `useChat` shows as `message.metadata`: where the answer came from,
/// and the stream id that `DELETE /api/chat/{stream_id}` also takes.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Metadata<'a> {
    model: &'a str,
    upstream: Option<&'a str>,
    /// Only at the finish, where it may be `null` if the upstream reported none.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<&'a RawValue>>,
    stream_id: &'a str,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::{StreamExt, stream};
    use serde_json::json;

    use super::*;

    fn stream_id() -> StreamId {
        StreamId::parse(&"ab".repeat(16)).unwrap_or_else(|| panic!("a stream id"))
    }

    fn start() -> StreamEvent {
        StreamEvent::Start {
            stream_id: "ab".repeat(16),
            model: "m".to_owned(),
            upstream: Some("primary".to_owned()),
        }
    }

    fn token(text: &str) -> StreamEvent {
        StreamEvent::Token {
            token: text.to_owned(),
            refusal: false,
            choice: None,
        }
    }

    fn reasoning(text: &str) -> StreamEvent {
        StreamEvent::Reasoning {
            token: text.to_owned(),
            choice: None,
        }
    }

    fn call(index: u32, id: Option<&str>, name: Option<&str>, arguments: &str) -> StreamEvent {
        StreamEvent::ToolCall {
            index,
            id: id.map(str::to_owned),
            name: name.map(str::to_owned),
            arguments: Some(arguments.to_owned()),
            choice: None,
        }
    }

    fn finish(reason: FinishReason, usage: Option<&str>) -> StreamEvent {
        StreamEvent::Finish {
            finish_reason: reason,
            usage: usage.map(|usage| {
                RawValue::from_string(usage.to_owned()).unwrap_or_else(|error| panic!("{error}"))
            }),
        }
    }

    /// The `data:` lines the client reads for these entries, each as JSON
    /// (`[DONE]` as a string), and whether it read the whole generation.
    async fn parts(entries: Vec<Entry>) -> (Vec<Value>, bool) {
        let mut encoder = UiEncoder::new(stream_id(), "msg-1".to_owned());
        let mut events = Vec::new();
        for entry in &entries {
            encoder.encode(entry, &mut events);
        }
        let body: String = sse::sse(stream_id(), stream::iter(events), Duration::from_secs(15))
            .into_body()
            .into_data_stream()
            .map(|bytes| String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned())
            .collect()
            .await;
        let parts: Vec<Value> = body
            .lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .map(|data| serde_json::from_str(data).unwrap_or_else(|_| json!(data)))
            .collect();
        (parts, encoder.read_to_end())
    }

    fn events(events: Vec<StreamEvent>) -> Vec<Entry> {
        let seqs = 0..;
        let mut entries: Vec<Entry> = seqs
            .zip(events)
            .map(|(seq, event)| Entry::Event { seq, event })
            .collect();
        entries.push(Entry::Done);
        entries
    }

    fn opening() -> [Value; 2] {
        let stream_id = "ab".repeat(16);
        [
            json!({"type": "start", "messageId": "msg-1", "messageMetadata":
                {"model": "m", "upstream": "primary", "streamId": stream_id}}),
            json!({"type": "start-step"}),
        ]
    }

    fn closing(reason: &str, usage: Value) -> [Value; 3] {
        let stream_id = "ab".repeat(16);
        [
            json!({"type": "finish-step"}),
            json!({"type": "finish", "finishReason": reason, "messageMetadata":
                {"model": "m", "upstream": "primary", "usage": usage, "streamId": stream_id}}),
            json!("[DONE]"),
        ]
    }

    #[tokio::test]
    async fn reasoning_and_text_are_runs_with_their_own_ids() {
        let (parts, read_to_end) = parts(events(vec![
            start(),
            reasoning("hm"),
            reasoning("m"),
            token("Hel"),
            token("lo"),
            finish(
                FinishReason::Stop,
                Some(r#"{"prompt_tokens":3,"completion_tokens":2}"#),
            ),
        ]))
        .await;
        let mut expected = opening().to_vec();
        expected.extend([
            json!({"type": "reasoning-start", "id": "reasoning-0"}),
            json!({"type": "reasoning-delta", "id": "reasoning-0", "delta": "hm"}),
            json!({"type": "reasoning-delta", "id": "reasoning-0", "delta": "m"}),
            json!({"type": "reasoning-end", "id": "reasoning-0"}),
            json!({"type": "text-start", "id": "text-1"}),
            json!({"type": "text-delta", "id": "text-1", "delta": "Hel"}),
            json!({"type": "text-delta", "id": "text-1", "delta": "lo"}),
            json!({"type": "text-end", "id": "text-1"}),
        ]);
        expected.extend(closing(
            "stop",
            json!({"prompt_tokens": 3, "completion_tokens": 2}),
        ));
        assert_eq!(parts, expected);
        assert!(read_to_end);
    }

    #[tokio::test]
    async fn tool_input_streams_and_is_parsed_at_the_finish() {
        let stream_id = "ab".repeat(16);
        let (parts, _) = parts(events(vec![
            start(),
            token("Let me check."),
            call(0, Some("c1"), Some("weather"), "{\"city\""),
            call(1, None, Some("clock"), ""),
            call(0, None, None, ":\"Paris\"}"),
            call(2, Some("c3"), Some("broken"), "{not json"),
            finish(FinishReason::ToolCalls, None),
        ]))
        .await;
        let clock = format!("call_{stream_id}_1");
        let mut expected = opening().to_vec();
        expected.extend([
            json!({"type": "text-start", "id": "text-0"}),
            json!({"type": "text-delta", "id": "text-0", "delta": "Let me check."}),
            json!({"type": "text-end", "id": "text-0"}),
            json!({"type": "tool-input-start", "toolCallId": "c1", "toolName": "weather"}),
            json!({"type": "tool-input-delta", "toolCallId": "c1", "inputTextDelta": "{\"city\""}),
            json!({"type": "tool-input-start", "toolCallId": clock, "toolName": "clock"}),
            json!({"type": "tool-input-delta", "toolCallId": "c1", "inputTextDelta": ":\"Paris\"}"}),
            json!({"type": "tool-input-start", "toolCallId": "c3", "toolName": "broken"}),
            json!({"type": "tool-input-delta", "toolCallId": "c3", "inputTextDelta": "{not json"}),
            json!({"type": "tool-input-available", "toolCallId": "c1", "toolName": "weather",
                   "input": {"city": "Paris"}}),
            json!({"type": "tool-input-available", "toolCallId": clock, "toolName": "clock",
                   "input": {}}),
            json!({"type": "tool-input-error", "toolCallId": "c3", "toolName": "broken",
                   "input": "{not json",
                   "errorText": "the tool input is not valid JSON: key must be a string at line 1 column 2"}),
        ]);
        expected.extend(closing("tool-calls", Value::Null));
        assert_eq!(parts, expected);
    }

    #[tokio::test]
    async fn finish_reasons_are_the_sdks() {
        let cases = [
            (FinishReason::Stop, "stop"),
            (FinishReason::Length, "length"),
            (FinishReason::ToolCalls, "tool-calls"),
            (FinishReason::ContentFilter, "content-filter"),
            (FinishReason::Cancelled, "other"),
        ];
        for (reason, expected) in cases {
            let (parts, _) = parts(events(vec![start(), finish(reason, None)])).await;
            assert_eq!(parts[3]["finishReason"], json!(expected), "{reason:?}");
        }
    }

    #[tokio::test]
    async fn an_answer_that_broke_off_ends_with_an_error_never_a_finish() {
        let (parts, read_to_end) = parts(events(vec![
            start(),
            token("half"),
            StreamEvent::error(ErrorCode::UpstreamDisconnected, "cut"),
        ]))
        .await;
        let mut expected = opening().to_vec();
        expected.extend([
            json!({"type": "text-start", "id": "text-0"}),
            json!({"type": "text-delta", "id": "text-0", "delta": "half"}),
            json!({"type": "text-end", "id": "text-0"}),
            json!({"type": "error", "errorText": "upstream_disconnected: cut"}),
            json!("[DONE]"),
        ]);
        assert_eq!(parts, expected);
        assert!(read_to_end, "the generation's own error is its end");
    }

    #[tokio::test]
    async fn a_view_that_broke_off_is_an_error_and_not_read_to_the_end() {
        for broken in [
            Entry::Gap { first_kept: 9 },
            Entry::Lost {
                code: ErrorCode::ShuttingDown,
                message: "bye".to_owned(),
            },
        ] {
            let entries = vec![
                Entry::Event {
                    seq: 0,
                    event: start(),
                },
                broken,
                Entry::Done,
            ];
            let (parts, read_to_end) = parts(entries).await;
            assert_eq!(parts.len(), 4, "{parts:?}");
            assert_eq!(parts[2]["type"], json!("error"));
            assert_eq!(parts[3], json!("[DONE]"));
            assert!(!read_to_end);
        }
    }

    #[tokio::test]
    async fn other_choices_are_not_shown() {
        let (parts, _) = parts(events(vec![
            start(),
            StreamEvent::Token {
                token: "other".to_owned(),
                refusal: false,
                choice: Some(1),
            },
            finish(FinishReason::Stop, None),
        ]))
        .await;
        assert_eq!(parts.len(), 5, "{parts:?}");
    }
}
