//! `chat.completion.chunk`s from a follower's entries: the streaming
//! answer of `/v1` (`docs/PROTOCOL.md` §7).

use serde::Serialize;
use serde_json::value::RawValue;

use super::{Answer, ENCODING_FAILED, finish_reason, resume_gap};
use crate::error::Error;
use crate::event::{FinishReason, StreamEvent};
use crate::streams::Entry;
use crate::surfaces::sse;
use axum::response::sse::Event;

/// Re-encodes one follower's entries as `chat.completion.chunk`s.
#[derive(Debug)]
pub(super) struct ChunkEncoder {
    pub(super) answer: Answer,
    /// The model the generation runs on, from its `start` event.
    pub(super) model: String,
    pub(super) include_usage: bool,
    /// Choices whose first delta went out; it carries the role.
    pub(super) choices: Vec<u32>,
    /// Tool calls, as (choice, index), whose first fragment went out; it
    /// carries the id and the type.
    pub(super) calls: Vec<(u32, u32)>,
    /// An error chunk went out: the stream ends without `[DONE]`.
    pub(super) failed: bool,
    /// Scratch for each chunk's JSON; see [`sse::json_event`].
    pub(super) json: Vec<u8>,
}

impl ChunkEncoder {
    /// The SSE events for one entry: none, one, or (a finish followed by the
    /// usage the client asked for) two.
    pub(super) fn encode(&mut self, entry: &Entry) -> [Option<Event>; 2] {
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
                self.delta(0, ChunkDelta::content(""))
            }
            StreamEvent::Token {
                token,
                refusal: false,
                choice,
            } => self.delta(choice.unwrap_or(0), ChunkDelta::content(token)),
            StreamEvent::Token {
                token,
                refusal: true,
                choice,
            } => self.delta(
                choice.unwrap_or(0),
                ChunkDelta {
                    refusal: Some(token),
                    ..ChunkDelta::default()
                },
            ),
            StreamEvent::Reasoning { token, choice } => self.delta(
                choice.unwrap_or(0),
                ChunkDelta {
                    reasoning_content: Some(token),
                    ..ChunkDelta::default()
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
                let call = ChunkToolCall {
                    index: *index,
                    id: id.as_deref(),
                    kind: first.then_some("function"),
                    function: ChunkFunction {
                        name: name.as_deref(),
                        arguments: arguments.as_deref().unwrap_or(""),
                    },
                };
                self.delta(
                    choice,
                    ChunkDelta {
                        tool_calls: Some([call]),
                        ..ChunkDelta::default()
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
    fn delta(&mut self, choice: u32, mut delta: ChunkDelta<'_>) -> Event {
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
                delta: ChunkDelta::default(),
                finish_reason: Some(reason),
            })
            .collect();
        let usage = self.include_usage.then(|| self.chunk(&[], Some(usage)));
        [Some(self.chunk(&choices, None)), usage]
    }

    fn chunk(&mut self, choices: &[ChunkChoice<'_>], usage: Option<Option<&RawValue>>) -> Event {
        let chunk = CompletionChunk {
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
            &super::error::body(error),
            &mut self.json,
            ENCODING_FAILED,
        )
    }
}

#[derive(Serialize)]
struct CompletionChunk<'a> {
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
    delta: ChunkDelta<'a>,
    finish_reason: Option<&'static str>,
}

#[derive(Default, Serialize)]
struct ChunkDelta<'a> {
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
    tool_calls: Option<[ChunkToolCall<'a>; 1]>,
}

impl<'a> ChunkDelta<'a> {
    fn content(text: &'a str) -> Self {
        ChunkDelta {
            content: Some(text),
            ..ChunkDelta::default()
        }
    }
}

#[derive(Serialize)]
struct ChunkToolCall<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    /// Always present: some clients (the AI SDK) reject a call without it.
    function: ChunkFunction<'a>,
}

#[derive(Serialize)]
struct ChunkFunction<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}
