//! The OpenAI-compatible face of tokenrelay: `POST /v1/chat/completions` and
//! `GET /v1/models`, so that code written for an OpenAI SDK only changes its
//! base URL and gains the key hiding, timeouts, cancellation and metrics of
//! `/api/chat`.
//!
//! It is a second framing of the same generations, not a second relay: a
//! request starts a generation exactly as `/api/chat` does
//! (`routing`), and what its follower reads — events already
//! normalized from whichever dialect the upstream spoke — is re-encoded as
//! `chat.completion.chunk`s, or assembled into one `chat.completion` for a
//! client that did not ask to stream.
//!
//! Where OpenAI has no word for ours, this module decides:
//! - a generation stopped on request (`cancelled`) finishes with `stop`, the
//!   only reason every SDK's enum accepts that describes it;
//! - a failure after the stream began is one `{"error": {...}}` chunk, the
//!   shape the SDKs raise as an error, and no `[DONE]` follows it, so that
//!   nothing can take the answer for complete;
//! - no OpenAI client can resume, so a generation is stopped the moment its
//!   client goes away rather than after the resume grace period;
//! - a tool call whose upstream sent no id gets one (`call_<stream>_<choice>_<index>`),
//!   because clients need it to send the tool's result back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures_util::{StreamExt, stream};
use serde::Serialize;
use serde_json::value::RawValue;

use super::sse;
use crate::error::Error;
use crate::event::{ErrorCode, FinishReason, StreamEvent};
use crate::http::extract::JsonBody;
use crate::request::ChatRequest;
use crate::state::AppState;
use crate::streams::{Caller, Entry, Follower, Generation, StreamId};

/// Sent if one of our own chunks ever failed to serialize (a bug): the
/// client is told, rather than shown a silent gap.
const ENCODING_FAILED: &str = r#"{"error":{"code":"internal_error","message":"a chunk could not be encoded","type":"server_error"}}"#;

/// The `/v1` routes; `routes` puts them behind the same layers as `/api`.
pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/v1/models", get(models))
}

/// `POST /v1/chat/completions`: chunks when the client asked to stream,
/// else one `chat.completion` once the generation is over.
async fn completions(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody,
) -> Result<Response, Error> {
    let request = ChatRequest::from_json(&body)?;
    let delivery = request.delivery();
    let (id, follower) = state
        .routes
        .open(&state.streams, &state.metrics, caller, request)
        .await?;
    let answer = Answer {
        stream_id: id,
        id: format!("chatcmpl-{id}"),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs()),
        _stop: StopWhenGone(state.streams.find(id, caller)),
    };
    if delivery.stream {
        let chunks = Chunks {
            answer,
            model: String::new(),
            include_usage: delivery.include_usage,
            choices: Vec::new(),
            calls: Vec::new(),
            failed: false,
            json: Vec::new(),
        };
        return Ok(stream_response(
            id,
            follower,
            chunks,
            state.config.keepalive,
        ));
    }
    let assembled = assemble(follower, state.config.resume.max_stream_bytes).await?;
    Ok(Json(assembled.completion(&answer)?).into_response())
}

/// `GET /v1/models`: the upstream's list (the demo model's, with the demo).
async fn models(State(state): State<AppState>) -> Result<Response, Error> {
    let list = state.routes.models().await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        list,
    )
        .into_response())
}

/// What every chunk of one answer, or its completion, repeats.
#[derive(Debug)]
struct Answer {
    stream_id: StreamId,
    /// `chatcmpl-<stream_id>`.
    id: String,
    /// Unix seconds.
    created: u64,
    _stop: StopWhenGone,
}

impl Answer {
    /// The id of a tool call whose upstream sent none.
    fn call_id(&self, choice: u32, index: u32) -> String {
        format!("call_{}_{choice}_{index}", self.stream_id)
    }
}

/// Stops the generation once its `/v1` client is gone. OpenAI clients never
/// resume, so the grace period `/api/chat` gives a reconnect would only keep
/// the upstream generating, and billing, for nobody. Stopping a generation
/// that already finished does nothing.
#[derive(Debug)]
struct StopWhenGone(Option<Arc<Generation>>);

impl Drop for StopWhenGone {
    fn drop(&mut self) {
        if let Some(generation) = &self.0 {
            generation.abandon();
        }
    }
}

// ---- streaming: chat.completion.chunk -------------------------------------

fn stream_response(
    id: StreamId,
    follower: Follower,
    mut chunks: Chunks,
    keepalive: Duration,
) -> Response {
    let events =
        follower.flat_map(move |entry| stream::iter(chunks.encode(&entry).into_iter().flatten()));
    sse::sse(id, events, keepalive)
}

/// Re-encodes one follower's entries as `chat.completion.chunk`s.
#[derive(Debug)]
struct Chunks {
    answer: Answer,
    /// The model the generation runs on, from its `start` event.
    model: String,
    include_usage: bool,
    /// Choices whose first delta went out; it carries the role.
    choices: Vec<u32>,
    /// Tool calls, as (choice, index), whose first fragment went out; it
    /// carries the id and the type.
    calls: Vec<(u32, u32)>,
    /// An error chunk went out: the stream ends without `[DONE]`.
    failed: bool,
    /// Scratch for each chunk's JSON; see [`sse::json_event`].
    json: Vec<u8>,
}

impl Chunks {
    /// The SSE events for one entry: none, one, or (a finish followed by the
    /// usage the client asked for) two.
    fn encode(&mut self, entry: &Entry) -> [Option<Event>; 2] {
        match entry {
            Entry::Event { event, .. } => self.event(event),
            Entry::Gap { .. } => [Some(self.fail(&resume_gap())), None],
            Entry::Lost { code, message } => {
                let error = Error::Interrupted {
                    code: *code,
                    message: message.clone(),
                };
                [Some(self.fail(&error)), None]
            }
            Entry::Done if self.failed => [None, None],
            Entry::Done => [Some(Event::default().data("[DONE]")), None],
        }
    }

    fn event(&mut self, event: &StreamEvent) -> [Option<Event>; 2] {
        let chunk = match event {
            StreamEvent::Start { model, .. } => {
                self.model.clone_from(model);
                // OpenAI opens with the role and empty content; SDKs that
                // assemble messages take the role from here.
                self.delta(0, Delta::content(""))
            }
            StreamEvent::Token {
                token,
                refusal: false,
                choice,
            } => self.delta(choice.unwrap_or(0), Delta::content(token)),
            StreamEvent::Token {
                token,
                refusal: true,
                choice,
            } => self.delta(
                choice.unwrap_or(0),
                Delta {
                    refusal: Some(token),
                    ..Delta::default()
                },
            ),
            StreamEvent::Reasoning { token, choice } => self.delta(
                choice.unwrap_or(0),
                Delta {
                    reasoning_content: Some(token),
                    ..Delta::default()
                },
            ),
            StreamEvent::ToolCall {
                index,
                id,
                name,
                arguments,
                choice,
            } => {
                let choice = choice.unwrap_or(0);
                let first = !self.calls.contains(&(choice, *index));
                // Only the first fragment carries an id; an id that turns up
                // later would contradict the one already sent.
                let id = first.then(|| {
                    self.calls.push((choice, *index));
                    id.clone()
                        .unwrap_or_else(|| self.answer.call_id(choice, *index))
                });
                let call = ToolCallDelta {
                    index: *index,
                    id: id.as_deref(),
                    kind: first.then_some("function"),
                    function: FunctionDelta {
                        name: name.as_deref(),
                        arguments: arguments.as_deref().unwrap_or(""),
                    },
                };
                self.delta(
                    choice,
                    Delta {
                        tool_calls: Some([call]),
                        ..Delta::default()
                    },
                )
            }
            StreamEvent::Finish {
                finish_reason,
                usage,
            } => return self.finish(*finish_reason, usage.as_deref()),
            StreamEvent::Error { code, message } => self.fail(&Error::Interrupted {
                code: *code,
                message: message.clone(),
            }),
        };
        [Some(chunk), None]
    }

    /// A chunk with one choice's delta; a choice's first delta says who speaks.
    fn delta(&mut self, choice: u32, mut delta: Delta<'_>) -> Event {
        if !self.choices.contains(&choice) {
            self.choices.push(choice);
            delta.role = Some("assistant");
        }
        let choices = [ChunkChoice {
            index: choice,
            delta,
            finish_reason: None,
        }];
        self.chunk(&choices, None)
    }

    /// The finish reason for every choice (the upstream's, once for all),
    /// then the usage chunk when the client asked for one.
    fn finish(&mut self, reason: FinishReason, usage: Option<&RawValue>) -> [Option<Event>; 2] {
        let reason = finish_reason(reason);
        let choices: Vec<ChunkChoice<'_>> = self
            .choices
            .iter()
            .map(|&index| ChunkChoice {
                index,
                delta: Delta::default(),
                finish_reason: Some(reason),
            })
            .collect();
        let usage = self.include_usage.then(|| self.chunk(&[], Some(usage)));
        [Some(self.chunk(&choices, None)), usage]
    }

    fn chunk(&mut self, choices: &[ChunkChoice<'_>], usage: Option<Option<&RawValue>>) -> Event {
        let chunk = Chunk {
            id: &self.answer.id,
            object: "chat.completion.chunk",
            created: self.answer.created,
            model: &self.model,
            choices,
            usage,
        };
        sse::json_event(Event::default(), &chunk, &mut self.json, ENCODING_FAILED)
    }

    fn fail(&mut self, error: &Error) -> Event {
        self.failed = true;
        sse::json_event(
            Event::default(),
            &error.body(),
            &mut self.json,
            ENCODING_FAILED,
        )
    }
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChunkChoice<'a>],
    /// Only on the usage chunk, where it may be `null` if the upstream
    /// reported none.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<&'a RawValue>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    finish_reason: Option<&'static str>,
}

#[derive(Default, Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<&'a str>,
    /// DeepSeek's name, which the SDKs that read reasoning at all understand.
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
}

impl<'a> Delta<'a> {
    fn content(text: &'a str) -> Self {
        Delta {
            content: Some(text),
            ..Delta::default()
        }
    }
}

#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    /// Always present: some clients (the AI SDK) reject a call without it.
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

// ---- not streaming: one chat.completion -----------------------------------

/// Reads a whole generation, within `limit` event bytes (the per-stream
/// bound of the event log, so that a non-streaming answer is bounded too).
async fn assemble(mut follower: Follower, limit: usize) -> Result<Assembled, Error> {
    let mut assembled = Assembled::default();
    let mut bytes = 0usize;
    while let Some(entry) = follower.next().await {
        match entry {
            Entry::Event { event, .. } => {
                bytes = bytes.saturating_add(event.size());
                if bytes > limit {
                    return Err(Error::Overloaded(format!(
                        "the answer grew past RESUME_MAX_STREAM_BYTES ({limit} bytes), \
                         the most kept for a client that does not stream; ask with `stream: true`"
                    )));
                }
                assembled.apply(&event)?;
            }
            Entry::Gap { .. } => return Err(resume_gap()),
            Entry::Lost { code, message } => return Err(Error::Interrupted { code, message }),
            Entry::Done => break,
        }
    }
    Ok(assembled)
}

/// A generation's events, accumulated per choice as an SDK would.
#[derive(Debug, Default)]
struct Assembled {
    model: String,
    choices: BTreeMap<u32, Message>,
    finish: Option<(FinishReason, Option<Box<RawValue>>)>,
}

#[derive(Debug, Default)]
struct Message {
    content: String,
    refusal: String,
    reasoning: String,
    calls: BTreeMap<u32, Call>,
}

#[derive(Debug, Default)]
struct Call {
    id: Option<String>,
    name: String,
    arguments: String,
}

impl Assembled {
    /// Adds one event; an in-stream error is the answer's failure.
    fn apply(&mut self, event: &StreamEvent) -> Result<(), Error> {
        match event {
            StreamEvent::Start { model, .. } => {
                self.model.clone_from(model);
                self.choices.entry(0).or_default();
            }
            StreamEvent::Token {
                token,
                refusal: false,
                choice,
            } => self.message(*choice).content.push_str(token),
            StreamEvent::Token {
                token,
                refusal: true,
                choice,
            } => self.message(*choice).refusal.push_str(token),
            StreamEvent::Reasoning { token, choice } => {
                self.message(*choice).reasoning.push_str(token);
            }
            StreamEvent::ToolCall {
                index,
                id,
                name,
                arguments,
                choice,
            } => {
                let call = self.message(*choice).calls.entry(*index).or_default();
                if call.id.is_none() {
                    call.id.clone_from(id);
                }
                if let Some(name) = name {
                    call.name.push_str(name);
                }
                if let Some(arguments) = arguments {
                    call.arguments.push_str(arguments);
                }
            }
            StreamEvent::Finish {
                finish_reason,
                usage,
            } => self.finish = Some((*finish_reason, usage.clone())),
            StreamEvent::Error { code, message } => {
                return Err(Error::Interrupted {
                    code: *code,
                    message: message.clone(),
                });
            }
        }
        Ok(())
    }

    fn message(&mut self, choice: Option<u32>) -> &mut Message {
        self.choices.entry(choice.unwrap_or(0)).or_default()
    }

    /// The `chat.completion` object; `usage` is always there, as with
    /// OpenAI (`null` only when the upstream reported none).
    fn completion<'a>(&'a self, answer: &'a Answer) -> Result<Completion<'a>, Error> {
        let Some((reason, usage)) = &self.finish else {
            return Err(Error::Internal(
                "the generation ended without finishing".to_owned(),
            ));
        };
        let finish_reason = finish_reason(*reason);
        let text = |text: &'a String| (!text.is_empty()).then_some(text.as_str());
        let choices = self
            .choices
            .iter()
            .map(|(&index, message)| CompletionChoice {
                index,
                message: AssistantMessage {
                    role: "assistant",
                    content: text(&message.content),
                    refusal: text(&message.refusal),
                    reasoning_content: text(&message.reasoning),
                    tool_calls: message
                        .calls
                        .iter()
                        .map(|(&call_index, call)| ToolCall {
                            id: call
                                .id
                                .clone()
                                .unwrap_or_else(|| answer.call_id(index, call_index)),
                            kind: "function",
                            function: Function {
                                name: &call.name,
                                arguments: &call.arguments,
                            },
                        })
                        .collect(),
                },
                finish_reason,
            })
            .collect();
        Ok(Completion {
            id: &answer.id,
            object: "chat.completion",
            created: answer.created,
            model: &self.model,
            choices,
            usage: usage.as_deref(),
        })
    }
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<CompletionChoice<'a>>,
    usage: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    /// `null` when the model only called tools or refused, as with OpenAI.
    content: Option<&'a str>,
    refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCall<'a>>,
}

#[derive(Serialize)]
struct ToolCall<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    function: Function<'a>,
}

#[derive(Serialize)]
struct Function<'a> {
    name: &'a str,
    arguments: &'a str,
}

// ---- shared ----------------------------------------------------------------

/// OpenAI's spelling of a finish reason. A generation stopped on request has
/// none; `stop` describes it and is accepted by every SDK's enum, where
/// `cancelled` would fail strictly typed clients.
fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Cancelled => FinishReason::Stop.as_str(),
        reason => reason.as_str(),
    }
}

fn resume_gap() -> Error {
    Error::Interrupted {
        code: ErrorCode::ResumeGap,
        message: "this client fell further behind the generation than RESUME_MAX_STREAM_BYTES \
                  keeps; the answer is incomplete"
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> Answer {
        let stream_id = StreamId::parse(&"ab".repeat(16)).unwrap_or_else(|| panic!("an id"));
        Answer {
            stream_id,
            id: format!("chatcmpl-{stream_id}"),
            created: 7,
            _stop: StopWhenGone(None),
        }
    }

    fn token(text: &str, refusal: bool, choice: Option<u32>) -> StreamEvent {
        StreamEvent::Token {
            token: text.to_owned(),
            refusal,
            choice,
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

    fn assemble_all(events: Vec<StreamEvent>) -> Result<serde_json::Value, Error> {
        let mut assembled = Assembled::default();
        for event in &events {
            assembled.apply(event)?;
        }
        let answer = answer();
        let completion = assembled.completion(&answer)?;
        serde_json::to_value(&completion).map_err(|error| Error::Internal(error.to_string()))
    }

    #[test]
    fn a_whole_answer_is_assembled_per_choice_with_usage() {
        let usage = RawValue::from_string(r#"{"prompt_tokens":1,"vendor":{"x":2}}"#.to_owned())
            .unwrap_or_else(|error| panic!("{error}"));
        let completion = assemble_all(vec![
            StreamEvent::Start {
                stream_id: "s".to_owned(),
                model: "m".to_owned(),
            },
            StreamEvent::Reasoning {
                token: "hm".to_owned(),
                choice: None,
            },
            token("Hel", false, None),
            token("lo", false, None),
            token("No", false, Some(1)),
            token("sorry", true, Some(2)),
            call(1, Some("c1"), Some("second"), "{}"),
            call(0, None, Some("first"), "{\"a\""),
            call(0, None, None, ":1}"),
            StreamEvent::Finish {
                finish_reason: FinishReason::ToolCalls,
                usage: Some(usage),
            },
        ])
        .unwrap_or_else(|error| panic!("{error}"));
        let stream_id = "ab".repeat(16);
        assert_eq!(
            completion,
            serde_json::json!({
                "id": format!("chatcmpl-{stream_id}"),
                "object": "chat.completion",
                "created": 7,
                "model": "m",
                "choices": [
                    {"index": 0, "finish_reason": "tool_calls", "message": {
                        "role": "assistant", "content": "Hello", "refusal": null,
                        "reasoning_content": "hm",
                        "tool_calls": [
                            {"id": format!("call_{stream_id}_0_0"), "type": "function",
                             "function": {"name": "first", "arguments": "{\"a\":1}"}},
                            {"id": "c1", "type": "function",
                             "function": {"name": "second", "arguments": "{}"}}
                        ]}},
                    {"index": 1, "finish_reason": "tool_calls", "message": {
                        "role": "assistant", "content": "No", "refusal": null}},
                    {"index": 2, "finish_reason": "tool_calls", "message": {
                        "role": "assistant", "content": null, "refusal": "sorry"}}
                ],
                "usage": {"prompt_tokens": 1, "vendor": {"x": 2}}
            })
        );
    }

    #[test]
    fn an_in_stream_error_fails_the_whole_answer_with_its_status() {
        let cases = [
            (ErrorCode::UpstreamError, 502, "upstream_error"),
            (ErrorCode::UpstreamDisconnected, 502, "upstream_error"),
            (ErrorCode::InvalidUpstreamData, 502, "upstream_error"),
            (ErrorCode::UpstreamTimeout, 504, "upstream_error"),
            (ErrorCode::ShuttingDown, 503, "server_error"),
        ];
        for (code, status, kind) in cases {
            let error = assemble_all(vec![
                token("partial", false, None),
                StreamEvent::error(code, "it broke"),
            ])
            .err()
            .unwrap_or_else(|| panic!("{code:?} should fail the answer"));
            assert_eq!(error.status().as_u16(), status, "{code:?}");
            let body = serde_json::to_value(error.body()).unwrap_or_default();
            assert_eq!(
                body,
                serde_json::json!({"error": {"code": code.as_str(), "message": "it broke", "type": kind}}),
                "{code:?}"
            );
        }
    }

    #[test]
    fn cancelled_is_spelled_stop() {
        assert_eq!(finish_reason(FinishReason::Cancelled), "stop");
        assert_eq!(finish_reason(FinishReason::Length), "length");
        assert_eq!(finish_reason(FinishReason::ToolCalls), "tool_calls");
    }
}
