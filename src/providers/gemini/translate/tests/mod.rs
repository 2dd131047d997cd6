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
use crate::providers::{DISCONNECTED, Translate};

const NOT_JSON: &str = "the upstream sent a response that is not valid JSON: ";

/// One dispatched upstream SSE event: (event type, data).
type Input = (&'static str, String);

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

fn upstream_error(message: &str) -> StreamEvent {
    StreamEvent::error(ErrorCode::UpstreamError, message)
}

fn disconnected() -> StreamEvent {
    StreamEvent::error(ErrorCode::UpstreamDisconnected, DISCONNECTED)
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

#[test]
fn table() {
    let failures: Vec<String> = [
        text::cases(),
        tool_calls::cases(),
        finish::cases(),
        errors::cases(),
        robustness::cases(),
    ]
    .into_iter()
    .flatten()
    .filter_map(|case| {
        let (got, translator) = run(&case.input, case.end);
        let (got, expected) = (as_json(&got), as_json(&case.expected));
        let terminal = case.expected.last().is_some_and(StreamEvent::is_terminal);
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
