//! One `chat.completion` from a whole generation: the `/v1` answer for a
//! client that did not ask to stream (`docs/PROTOCOL.md` §7).

use std::collections::BTreeMap;

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::value::RawValue;

use super::{Answer, finish_reason, resume_gap};
use crate::error::Error;
use crate::event::{FinishReason, StreamEvent};
use crate::streams::{Entry, Follower};

/// Reads a whole generation, within `limit` event bytes (the per-stream
/// bound of the event log, so that a non-streaming answer is bounded too).
pub(super) async fn assemble(mut follower: Follower, limit: usize) -> Result<Assembled, Error> {
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
pub(super) struct Assembled {
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
    pub(super) fn apply(&mut self, event: &StreamEvent) -> Result<(), Error> {
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
    pub(super) fn completion<'a>(&'a self, answer: &'a Answer) -> Result<Completion<'a>, Error> {
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
pub(super) struct Completion<'a> {
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
