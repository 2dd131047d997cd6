//! The fake upstream's answers in each provider's own dialect: one script of
//! steps (thinking, text, tool calls) and an ending, written out as OpenAI
//! chat chunks, Anthropic `message_*`/`content_block_*` events, Gemini
//! `GenerateContentResponse`s or Responses-API `response.*` events. A test
//! written once then runs against every kind of upstream, which is what the
//! clients' promise is: the same events whichever provider answered.

use serde_json::{Value, json};

use crate::fake_upstream::Reply;

/// `prompt_tokens` every scripted answer reports.
pub const PROMPT_TOKENS: u64 = 10;

/// An upstream API the fake speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Speaks {
    OpenAi,
    Anthropic,
    Gemini,
    Responses,
}

impl Speaks {
    pub const ALL: [Speaks; 4] = [
        Speaks::OpenAi,
        Speaks::Anthropic,
        Speaks::Gemini,
        Speaks::Responses,
    ];

    /// The `kind` (and `UPSTREAM_KIND`) that makes the proxy speak it.
    pub fn kind(self) -> &'static str {
        match self {
            Speaks::OpenAi => "openai",
            Speaks::Anthropic => "anthropic",
            Speaks::Gemini => "gemini",
            Speaks::Responses => "openai-responses",
        }
    }

    /// Where the proxy must send a chat for `model`, below the fake's `/v1`.
    pub fn chat_path(self, model: &str) -> String {
        match self {
            Speaks::OpenAi => "/v1/chat/completions".to_owned(),
            Speaks::Anthropic => "/v1/messages".to_owned(),
            Speaks::Gemini => format!("/v1/models/{model}:streamGenerateContent"),
            Speaks::Responses => "/v1/responses".to_owned(),
        }
    }
}

/// One piece of a scripted answer.
#[derive(Clone, Copy, Debug)]
pub enum Step {
    Text(&'static str),
    Thought(&'static str),
    /// A tool call whose arguments arrive in these fragments (Gemini sends
    /// them joined, as one object).
    Call {
        id: &'static str,
        name: &'static str,
        arguments: &'static [&'static str],
    },
}

/// How a scripted answer ends.
#[derive(Clone, Copy, Debug)]
pub enum End {
    /// As the provider ends a complete answer: stopped, or calling tools.
    Done,
    /// With this stop reason, in the provider's own spelling.
    Stopped(&'static str),
    /// With the provider's own in-stream error carrying this message.
    Failed(&'static str),
    /// The body ends before the provider's terminal event.
    Cut,
}

impl Reply {
    /// `steps` then `end`, as `speaks` streams them, one event per piece.
    pub fn answer(speaks: Speaks, steps: &[Step], end: End) -> Reply {
        let completion = steps.len() as u64;
        let calls = steps.iter().any(|step| matches!(step, Step::Call { .. }));
        let events = match speaks {
            Speaks::OpenAi => openai(steps, end, completion, calls),
            Speaks::Anthropic => anthropic(steps, end, completion, calls),
            Speaks::Gemini => gemini(steps, end, completion),
            Speaks::Responses => responses(steps, end, completion),
        };
        let body: String = events
            .iter()
            .map(|(name, data)| match name {
                Some(name) => format!("event: {name}\ndata: {data}\n\n"),
                None => format!("data: {data}\n\n"),
            })
            .collect();
        Reply::sse(body)
    }
}

/// The usage every dialect's counts come to.
pub fn usage_of(completion: u64) -> Value {
    json!({
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion,
        "total_tokens": PROMPT_TOKENS + completion,
    })
}

type Event = (Option<&'static str>, String);

fn unnamed(data: Value) -> Event {
    (None, data.to_string())
}

fn named(name: &'static str, data: Value) -> Event {
    (Some(name), data.to_string())
}

fn openai(steps: &[Step], end: End, completion: u64, calls: bool) -> Vec<Event> {
    let chunk = |delta: Value, finish: Value| {
        unnamed(json!({
            "id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": "fake-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }))
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    let mut index = 0;
    for step in steps {
        match *step {
            Step::Text(text) => events.push(chunk(json!({"content": text}), Value::Null)),
            Step::Thought(text) => {
                events.push(chunk(json!({"reasoning_content": text}), Value::Null));
            }
            Step::Call {
                id,
                name,
                arguments,
            } => {
                events.push(chunk(
                    json!({"tool_calls": [{"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
                    Value::Null,
                ));
                for fragment in arguments {
                    events.push(chunk(
                        json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}),
                        Value::Null,
                    ));
                }
                index += 1;
            }
        }
    }
    let reason = match end {
        End::Done if calls => "tool_calls",
        End::Done => "stop",
        End::Stopped(reason) => reason,
        End::Failed(message) => {
            events.push(unnamed(
                json!({"error": {"message": message, "type": "server_error"}}),
            ));
            return events;
        }
        End::Cut => return events,
    };
    events.push(chunk(json!({}), json!(reason)));
    events.push(unnamed(json!({
        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "choices": [],
        "usage": usage_of(completion),
    })));
    events.push((None, "[DONE]".to_owned()));
    events
}

fn anthropic(steps: &[Step], end: End, completion: u64, calls: bool) -> Vec<Event> {
    let mut events = vec![named(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": "claude-fake",
            "content": [], "stop_reason": null,
            "usage": {"input_tokens": PROMPT_TOKENS, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 1},
        }}),
    )];
    events.push(named("ping", json!({"type": "ping"})));
    // A block per step: text and thinking blocks hold one delta each here,
    // which is how the recordings look for short pieces too.
    for (index, step) in steps.iter().enumerate() {
        let (block, deltas): (Value, Vec<Value>) = match *step {
            Step::Text(text) => (
                json!({"type": "text", "text": ""}),
                vec![json!({"type": "text_delta", "text": text})],
            ),
            Step::Thought(text) => (
                json!({"type": "thinking", "thinking": "", "signature": ""}),
                vec![
                    json!({"type": "thinking_delta", "thinking": text}),
                    json!({"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"}),
                ],
            ),
            Step::Call {
                id,
                name,
                arguments,
            } => (
                json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                arguments
                    .iter()
                    .map(|fragment| json!({"type": "input_json_delta", "partial_json": fragment}))
                    .collect(),
            ),
        };
        events.push(named(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        for delta in deltas {
            events.push(named(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": delta}),
            ));
        }
        events.push(named(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
    }
    let reason = match end {
        End::Done if calls => "tool_use",
        End::Done => "end_turn",
        End::Stopped(reason) => reason,
        End::Failed(message) => {
            events.push(named(
                "error",
                json!({"type": "error", "error": {"type": "overloaded_error", "message": message}}),
            ));
            return events;
        }
        End::Cut => return events,
    };
    events.push(named(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": null},
               "usage": {"output_tokens": completion}}),
    ));
    events.push(named("message_stop", json!({"type": "message_stop"})));
    events
}

fn gemini(steps: &[Step], end: End, completion: u64) -> Vec<Event> {
    let response = |parts: Value, finish: Option<&str>, so_far: u64| {
        let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        if let Some(finish) = finish {
            candidate["finishReason"] = json!(finish);
        }
        unnamed(json!({
            "candidates": [candidate],
            "usageMetadata": {"promptTokenCount": PROMPT_TOKENS, "candidatesTokenCount": so_far, "totalTokenCount": PROMPT_TOKENS + so_far},
            "modelVersion": "gemini-fake", "responseId": "fake-response",
        }))
    };
    let mut events = Vec::new();
    for (sent, step) in steps.iter().enumerate() {
        let part = match *step {
            Step::Text(text) => json!({"text": text}),
            Step::Thought(text) => json!({"text": text, "thought": true}),
            Step::Call {
                id,
                name,
                arguments,
            } => {
                let args: Value = serde_json::from_str(&arguments.concat()).unwrap_or(Value::Null);
                json!({"functionCall": {"id": id, "name": name, "args": args}})
            }
        };
        events.push(response(json!([part]), None, sent as u64 + 1));
    }
    let reason = match end {
        // Gemini says STOP after a function call too.
        End::Done => "STOP",
        End::Stopped(reason) => reason,
        End::Failed(message) => {
            events.push(unnamed(
                json!({"error": {"code": 503, "message": message, "status": "UNAVAILABLE"}}),
            ));
            return events;
        }
        End::Cut => return events,
    };
    events.push(response(json!([{"text": ""}]), Some(reason), completion));
    events
}

fn responses(steps: &[Step], end: End, completion: u64) -> Vec<Event> {
    let event = |name: &'static str, mut data: Value| {
        data["type"] = json!(name);
        named(name, data)
    };
    let mut events = vec![event(
        "response.created",
        json!({"response": {"id": "resp_fake", "status": "in_progress", "model": "gpt-fake"}}),
    )];
    for (output_index, step) in steps.iter().enumerate() {
        match *step {
            Step::Text(text) => events.push(event(
                "response.output_text.delta",
                json!({"item_id": "msg_fake", "output_index": output_index, "content_index": 0, "delta": text}),
            )),
            Step::Thought(text) => events.push(event(
                "response.reasoning_summary_text.delta",
                json!({"item_id": "rs_fake", "output_index": output_index, "summary_index": 0, "delta": text}),
            )),
            Step::Call {
                id,
                name,
                arguments,
            } => {
                let item_id = format!("fc_{output_index}");
                events.push(event(
                    "response.output_item.added",
                    json!({"output_index": output_index, "item": {"type": "function_call", "id": item_id, "call_id": id, "name": name, "arguments": "", "status": "in_progress"}}),
                ));
                for fragment in arguments {
                    events.push(event(
                        "response.function_call_arguments.delta",
                        json!({"item_id": item_id, "output_index": output_index, "delta": fragment}),
                    ));
                }
            }
        }
    }
    let usage = json!({"input_tokens": PROMPT_TOKENS, "output_tokens": completion, "total_tokens": PROMPT_TOKENS + completion});
    match end {
        End::Done => events.push(event(
            "response.completed",
            json!({"response": {"id": "resp_fake", "status": "completed", "usage": usage}}),
        )),
        End::Stopped(reason) => events.push(event(
            "response.incomplete",
            json!({"response": {"id": "resp_fake", "status": "incomplete", "incomplete_details": {"reason": reason}, "usage": usage}}),
        )),
        End::Failed(message) => events.push(event(
            "response.failed",
            json!({"response": {"id": "resp_fake", "status": "failed", "error": {"code": "server_error", "message": message}}}),
        )),
        End::Cut => {}
    }
    events
}
