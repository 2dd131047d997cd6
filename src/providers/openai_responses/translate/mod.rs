//! Turns the Responses API's stream of named `response.*` events into our
//! event protocol. Unlike chat completions, this API says in every event what
//! it is (`response.output_text.delta`, `response.function_call_arguments.delta`...)
//! and ends with an event of its own (`response.completed`, `incomplete`,
//! `failed`) that already holds the usage, so the finish goes out at once.
//! Pure: no I/O, one call per upstream SSE event.

#[cfg(test)]
#[expect(
    clippy::unwrap_used,
    reason = "tests fail loudly on broken fixtures and helpers"
)]
mod tests;

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::event::{ErrorCode, FinishReason, StreamEvent};
use crate::providers::{DISCONNECTED, Translate, counted_usage, error_message, not_json, quoted};

const UNKNOWN_ERROR: &str = "the upstream reported an error";
const UNKNOWN_FAILURE: &str = "the upstream reported that the response failed";

/// What sets one reasoning summary part (or reasoning item) apart from the
/// next: the API streams them as separate texts, each a paragraph or more,
/// that would otherwise run together mid-sentence.
const REASONING_BREAK: &str = "\n\n";

/// Per-stream state: what must survive from one event to the next.
#[derive(Debug, Default)]
pub(super) struct Translator {
    done: bool,
    /// The function calls of the answer, in the order they started: a call's
    /// position here is its `index` in our events.
    calls: Vec<Call>,
    /// Whether reasoning text went out, and whether a new summary part or
    /// reasoning item began since its last piece.
    reasoning_sent: bool,
    reasoning_break: bool,
}

/// How the upstream refers to a function call (its item id, and its output
/// index for events that lack the id), and whether any of its arguments went
/// out, so that the whole arguments of a `done` event are only sent for a
/// call that never streamed them.
#[derive(Debug)]
struct Call {
    item_id: Option<String>,
    output_index: Option<u64>,
    arguments_sent: bool,
}

/// The events that mean something to us; every other type (`response.created`,
/// `in_progress`, `queued`, the `*.added` / `*.done` of parts and texts,
/// annotations, built-in tools' progress...) is bookkeeping and ignored.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    Refusal,
    Reasoning,
    ReasoningPart,
    ItemAdded,
    ItemDone,
    ArgumentsDelta,
    ArgumentsDone,
    Completed,
    Incomplete,
    Failed,
    Error,
}

impl Kind {
    fn of(event_type: &str) -> Option<Self> {
        Some(match event_type {
            "response.output_text.delta" => Self::Text,
            "response.refusal.delta" => Self::Refusal,
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                Self::Reasoning
            }
            "response.reasoning_summary_part.added" => Self::ReasoningPart,
            "response.output_item.added" => Self::ItemAdded,
            "response.output_item.done" => Self::ItemDone,
            "response.function_call_arguments.delta" => Self::ArgumentsDelta,
            "response.function_call_arguments.done" => Self::ArgumentsDone,
            "response.completed" => Self::Completed,
            "response.incomplete" => Self::Incomplete,
            "response.failed" => Self::Failed,
            "error" => Self::Error,
            _ => return None,
        })
    }
}

impl Translate for Translator {
    /// One dispatched upstream SSE event: its type ("message" unless the
    /// upstream named it) and its data.
    fn push(&mut self, event_type: &str, data: &str, out: &mut Vec<StreamEvent>) {
        if self.done {
            return;
        }
        let data = data.trim_ascii();
        let kind = if matches!(event_type, "message" | "") {
            // Relays that drop the `event:` lines still send the type in the
            // data; some also end with chat completions' `[DONE]`, which
            // proves nothing here: only a terminal event ends the answer.
            if data.is_empty() || data == "[DONE]" {
                return;
            }
            let Some(tagged) = self.parse::<Tagged>(data, out) else {
                return;
            };
            tagged.kind.as_deref().and_then(Kind::of)
        } else {
            Kind::of(event_type)
        };
        match kind {
            Some(Kind::Error) => {
                let message = error_event_message(data);
                self.fail(ErrorCode::UpstreamError, &message, out);
            }
            Some(kind) => {
                if let Some(event) = self.parse::<Event>(data, out) {
                    self.apply(kind, event, out);
                }
            }
            None => {}
        }
    }

    /// The upstream body ended cleanly (no transport error); without a
    /// terminal event before it, the answer is incomplete.
    fn end(&mut self, out: &mut Vec<StreamEvent>) {
        if !self.done {
            self.fail(ErrorCode::UpstreamDisconnected, DISCONNECTED, out);
        }
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

impl Translator {
    fn apply(&mut self, kind: Kind, event: Event, out: &mut Vec<StreamEvent>) {
        match kind {
            Kind::Text => push_token(event.delta, false, out),
            Kind::Refusal => push_token(event.delta, true, out),
            Kind::Reasoning => self.push_reasoning(event.delta, out),
            Kind::ReasoningPart => self.reasoning_break = true,
            Kind::ItemAdded => match event.item {
                // An item announced again is the same call.
                Some(item)
                    if item.is_function_call()
                        && self.call(item.id.as_deref(), event.output_index).is_none() =>
                {
                    self.start_call(item, event.output_index, out);
                }
                Some(item) if item.kind.as_deref() == Some("reasoning") => {
                    self.reasoning_break = true;
                }
                _ => {}
            },
            Kind::ItemDone => {
                if let Some(item) = event.item.filter(Item::is_function_call) {
                    // A call first seen whole (no `added` before it) still
                    // goes out, as one event with everything.
                    match self.call(item.id.as_deref(), event.output_index) {
                        Some(index) => self.push_whole_arguments(index, item.arguments, out),
                        None => self.start_call(item, event.output_index, out),
                    }
                }
            }
            Kind::ArgumentsDelta => {
                // Arguments of a call never announced have no id or name to
                // go with them; a client could not use them.
                if let Some(index) = self.call(event.item_id.as_deref(), event.output_index) {
                    self.push_arguments(index, event.delta, out);
                }
            }
            Kind::ArgumentsDone => {
                if let Some(index) = self.call(event.item_id.as_deref(), event.output_index) {
                    self.push_whole_arguments(index, event.arguments, out);
                }
            }
            Kind::Completed => {
                let reason = if self.calls.is_empty() {
                    FinishReason::Stop
                } else {
                    FinishReason::ToolCalls
                };
                self.finish(reason, event.response, out);
            }
            Kind::Incomplete => self.incomplete(event.response, out),
            Kind::Failed => {
                let message = event
                    .response
                    .and_then(|response| response.error)
                    .map_or_else(|| UNKNOWN_FAILURE.to_owned(), |error| error.describe());
                self.fail(ErrorCode::UpstreamError, &message, out);
            }
            // Handled before parsing: an error event may not be JSON at all.
            Kind::Error => {}
        }
    }

    /// The call an event is about: by its item id, else by its output index.
    fn call(&self, item_id: Option<&str>, output_index: Option<u64>) -> Option<usize> {
        item_id
            .and_then(|id| {
                self.calls
                    .iter()
                    .position(|call| call.item_id.as_deref() == Some(id))
            })
            .or_else(|| {
                output_index.and_then(|at| {
                    self.calls
                        .iter()
                        .position(|call| call.output_index == Some(at))
                })
            })
    }

    fn start_call(
        &mut self,
        item: Item<'_>,
        output_index: Option<u64>,
        out: &mut Vec<StreamEvent>,
    ) {
        let arguments = non_empty(item.arguments);
        let index = ordinal(self.calls.len());
        self.calls.push(Call {
            item_id: item.id.as_deref().map(str::to_owned),
            output_index,
            arguments_sent: arguments.is_some(),
        });
        out.push(StreamEvent::ToolCall {
            index,
            // `call_id` is what a tool result must answer; the item id is
            // only a fallback for relays that leave it out.
            id: non_empty(item.call_id).or_else(|| non_empty(item.id)),
            name: non_empty(item.name),
            arguments,
            choice: None,
        });
    }

    fn push_arguments(
        &mut self,
        index: usize,
        fragment: Option<Cow<'_, str>>,
        out: &mut Vec<StreamEvent>,
    ) {
        let Some(fragment) = non_empty(fragment) else {
            return;
        };
        self.calls[index].arguments_sent = true;
        out.push(StreamEvent::ToolCall {
            index: ordinal(index),
            id: None,
            name: None,
            arguments: Some(fragment),
            choice: None,
        });
    }

    /// The `done` events repeat the whole arguments: sent only when nothing
    /// of them was streamed, else a client would read them twice.
    fn push_whole_arguments(
        &mut self,
        index: usize,
        arguments: Option<Cow<'_, str>>,
        out: &mut Vec<StreamEvent>,
    ) {
        if !self.calls[index].arguments_sent {
            self.push_arguments(index, arguments, out);
        }
    }

    fn push_reasoning(&mut self, delta: Option<Cow<'_, str>>, out: &mut Vec<StreamEvent>) {
        let Some(token) = non_empty(delta) else {
            return;
        };
        if self.reasoning_sent && self.reasoning_break {
            out.push(StreamEvent::Reasoning {
                token: REASONING_BREAK.to_owned(),
                choice: None,
            });
        }
        self.reasoning_sent = true;
        self.reasoning_break = false;
        out.push(StreamEvent::Reasoning {
            token,
            choice: None,
        });
    }

    fn incomplete(&mut self, response: Option<Response>, out: &mut Vec<StreamEvent>) {
        let reason = response
            .as_ref()
            .and_then(|response| response.incomplete_details.as_ref())
            .and_then(|details| details.reason.as_deref());
        match reason {
            Some("max_output_tokens") => self.finish(FinishReason::Length, response, out),
            Some("content_filter") => self.finish(FinishReason::ContentFilter, response, out),
            // Any other reason may mean anything; none may pass for a whole answer.
            Some(reason) => {
                let message = format!(
                    "the upstream ended the response incomplete, for the reason `{}`",
                    quoted(reason)
                );
                self.fail(ErrorCode::UpstreamError, &message, out);
            }
            None => self.fail(
                ErrorCode::UpstreamError,
                "the upstream ended the response incomplete without saying why",
                out,
            ),
        }
    }

    fn finish(
        &mut self,
        finish_reason: FinishReason,
        response: Option<Response>,
        out: &mut Vec<StreamEvent>,
    ) {
        self.done = true;
        out.push(StreamEvent::Finish {
            finish_reason,
            usage: response
                .and_then(|response| response.usage)
                .and_then(usage_of),
        });
    }

    fn fail(&mut self, code: ErrorCode, message: &str, out: &mut Vec<StreamEvent>) {
        self.done = true;
        // Whole: the provider masks our key in it before cutting it short,
        // which it could not do for a key that a cut here had split.
        out.push(StreamEvent::error(code, message.trim()));
    }

    /// `data` as a `T`, or the stream ends in `invalid_upstream_data`.
    fn parse<'a, T: Deserialize<'a>>(
        &mut self,
        data: &'a str,
        out: &mut Vec<StreamEvent>,
    ) -> Option<T> {
        // A derived struct also accepts a JSON array positionally; an event is always an object.
        let parsed = if data.starts_with('{') {
            serde_json::from_str(data).map_err(|error| error.to_string())
        } else {
            Err("expected a JSON object".to_owned())
        };
        parsed
            .map_err(|reason| {
                let message = not_json("an event", &reason);
                self.fail(ErrorCode::InvalidUpstreamData, &message, out);
            })
            .ok()
    }
}

/// The message of an `error` event: the documented shape has `message` and
/// `code` at the top, the API also sends them nested under `error` (with
/// `type` where the code is null); anything else is shown as it came.
fn error_event_message(data: &str) -> String {
    match serde_json::from_str::<ErrorEvent>(data) {
        Ok(ErrorEvent {
            error: Some(error), ..
        }) => error.describe(),
        Ok(ErrorEvent { top, error: None }) => top.describe(),
        _ => error_message(data).map_or_else(|| UNKNOWN_ERROR.to_owned(), Cow::into_owned),
    }
}

/// OpenAI's three counts from the API's own `input_tokens` and
/// `output_tokens`, with the whole object (cached and reasoning tokens) kept.
fn usage_of(usage: Value) -> Option<Box<RawValue>> {
    if !usage.is_object() {
        return None;
    }
    let count = |name: &str| usage[name].as_u64().unwrap_or_default();
    counted_usage(count("input_tokens"), count("output_tokens"), usage)
}

fn push_token(delta: Option<Cow<'_, str>>, refusal: bool, out: &mut Vec<StreamEvent>) {
    if let Some(token) = non_empty(delta) {
        out.push(StreamEvent::Token {
            token,
            refusal,
            choice: None,
        });
    }
}

fn non_empty(text: Option<Cow<'_, str>>) -> Option<String> {
    text.filter(|text| !text.is_empty()).map(Cow::into_owned)
}

fn ordinal(position: usize) -> u32 {
    u32::try_from(position).unwrap_or(u32::MAX)
}

// Upstream wire shapes. Only the fields we read are declared; serde skips the
// rest. One shape serves every event type we read: each has a few of these
// fields, and always with the same meaning.

/// Just the type, for events that came unnamed.
#[derive(Deserialize)]
struct Tagged<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, default)]
    delta: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    item_id: Option<Cow<'a, str>>,
    #[serde(default)]
    output_index: Option<u64>,
    #[serde(borrow, default)]
    item: Option<Item<'a>>,
    #[serde(borrow, default)]
    arguments: Option<Cow<'a, str>>,
    #[serde(default)]
    response: Option<Response>,
}

/// An output item: a message, a reasoning item, a function call...
#[derive(Deserialize)]
struct Item<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    call_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<Cow<'a, str>>,
}

impl Item<'_> {
    fn is_function_call(&self) -> bool {
        self.kind.as_deref() == Some("function_call")
    }
}

/// The response object of the terminal events.
#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    incomplete_details: Option<IncompleteDetails>,
    #[serde(default)]
    error: Option<Failure>,
}

#[derive(Deserialize)]
struct IncompleteDetails {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct ErrorEvent {
    #[serde(flatten)]
    top: Failure,
    #[serde(default)]
    error: Option<Failure>,
}

/// What went wrong: a `response.failed`'s `error`, or an `error` event's.
#[derive(Deserialize)]
struct Failure {
    #[serde(default)]
    message: Option<String>,
    /// A string, but null in some events and a number from some relays.
    #[serde(default)]
    code: Option<Value>,
    /// Only in the nested shape, where it names the error's kind.
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

impl Failure {
    /// "message (code)", the code being the best name the upstream gave it.
    fn describe(&self) -> String {
        let message = self
            .message
            .as_deref()
            .map(str::trim)
            .filter(|message| !message.is_empty())
            .unwrap_or(UNKNOWN_ERROR);
        let code = match &self.code {
            Some(Value::String(code)) if !code.is_empty() => Some(code.clone()),
            Some(code @ Value::Number(_)) => Some(code.to_string()),
            _ => self
                .kind
                .clone()
                .filter(|kind| !kind.is_empty() && kind != "error"),
        };
        match code {
            Some(code) => format!("{message} ({code})"),
            None => message.to_owned(),
        }
    }
}
