//! The translator's tests: a table of hand-built `GenerateContentResponse`s
//! and the events they must become, split by what they cover, the recorded
//! streams of `tests/fixtures/upstream`, and arbitrary input.

mod corpus;
mod errors;
mod finish;
mod robustness;
mod text;
mod tool_calls;

use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::Translator;
use crate::event::{ErrorCode, FinishReason, StreamEvent};
use crate::providers::Translate;
use crate::providers::table::{self, Case, Input, as_json, case, disconnected, upstream_error};

const NOT_JSON: &str = "the upstream sent a response that is not valid JSON: ";

fn msg(data: &str) -> Input {
    ("message", data.to_owned())
}

fn named(event_type: &'static str, data: &str) -> Input {
    (event_type, data.to_owned())
}

/// A response with these candidates (JSON objects), as Gemini frames it.
fn response(candidates: &[Value]) -> Input {
    msg(
        &json!({"candidates": candidates, "modelVersion": "gemini-2.5-flash", "responseId": "r1"})
            .to_string(),
    )
}

/// Candidate 0 with `parts`, and `finish` as its finishReason unless empty.
fn parts(parts: Value, finish: &str) -> Input {
    response(&[candidate(None, parts, finish)])
}

fn candidate(index: Option<u32>, parts: Value, finish: &str) -> Value {
    let mut candidate = json!({"content": {"parts": parts, "role": "model"}});
    if let Some(index) = index {
        candidate["index"] = index.into();
    }
    if !finish.is_empty() {
        candidate["finishReason"] = finish.into();
    }
    candidate
}

fn text(text: &str) -> Input {
    parts(json!([{"text": text}]), "")
}

fn thought(text: &str) -> Input {
    parts(json!([{"text": text, "thought": true}]), "")
}

/// A response that only ends candidate 0, with this usage.
fn finished(reason: &str, usage: Value) -> Input {
    msg(&json!({
        "candidates": [{"content": {"parts": [], "role": "model"}, "finishReason": reason, "index": 0}],
        "usageMetadata": usage,
        "responseId": "r1",
    })
    .to_string())
}

fn token(text: &str) -> StreamEvent {
    token_in(None, text)
}

fn token_in(choice: Option<u32>, text: &str) -> StreamEvent {
    StreamEvent::Token {
        token: text.to_owned(),
        refusal: false,
        choice,
    }
}

fn reasoning(text: &str) -> StreamEvent {
    reasoning_in(None, text)
}

fn reasoning_in(choice: Option<u32>, text: &str) -> StreamEvent {
    StreamEvent::Reasoning {
        token: text.to_owned(),
        choice,
    }
}

fn tool(index: u32, id: &str, name: &str, arguments: &str) -> StreamEvent {
    tool_in(None, index, id, name, arguments)
}

fn tool_in(choice: Option<u32>, index: u32, id: &str, name: &str, arguments: &str) -> StreamEvent {
    StreamEvent::ToolCall {
        index,
        id: Some(id.to_owned()),
        name: Some(name.to_owned()),
        arguments: Some(arguments.to_owned()),
        choice,
    }
}

/// Our usage of Gemini's counts, `raw` being its `usageMetadata`.
fn usage(prompt: u64, completion: u64, raw: Value) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "raw": raw,
    })
}

fn finish(finish_reason: FinishReason, usage: Option<Value>) -> StreamEvent {
    StreamEvent::Finish {
        finish_reason,
        usage: usage.map(|usage| RawValue::from_string(usage.to_string()).unwrap()),
    }
}

fn stop() -> StreamEvent {
    finish(FinishReason::Stop, None)
}

fn run(input: &[Input], end: bool) -> (Vec<StreamEvent>, Translator) {
    table::run(input, end)
}

#[test]
fn table() {
    table::assert_table::<Translator>([
        text::cases(),
        tool_calls::cases(),
        finish::cases(),
        errors::cases(),
        robustness::cases(),
    ]);
}
