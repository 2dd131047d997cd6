//! The translator's tests: a table of hand-built Messages events and the
//! events they must become, split by what it covers, and the recorded
//! Anthropic streams of `tests/fixtures/upstream`.

mod corpus;
mod errors;
mod finish;
mod robustness;
mod text;
mod tool_calls;

use serde_json::{Value, json};

use super::Translator;
use crate::event::{ErrorCode, FinishReason, StreamEvent};
use crate::providers::Translate;
use crate::providers::table::{self, Case, Input, as_json, case, disconnected, upstream_error};

/// `message_start`'s usage in the shape Anthropic sends it.
const START_USAGE: &str = r#"{"input_tokens":10,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}"#;

fn event(event_type: &'static str, data: Value) -> Input {
    (event_type, data.to_string())
}

/// The same event without its `event:` line, as some proxies pass it on.
fn unnamed((_, data): Input) -> Input {
    ("message", data)
}

fn message_start(usage: &str) -> Input {
    let usage: Value = serde_json::from_str(usage).unwrap();
    event(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [], "stop_reason": null, "stop_sequence": null, "usage": usage
        }}),
    )
}

fn started() -> Input {
    message_start(START_USAGE)
}

fn block_start(index: u64, block: Value) -> Input {
    event(
        "content_block_start",
        json!({"type": "content_block_start", "index": index, "content_block": block}),
    )
}

fn text_start(index: u64) -> Input {
    block_start(index, json!({"type": "text", "text": ""}))
}

fn thinking_start(index: u64) -> Input {
    block_start(
        index,
        json!({"type": "thinking", "thinking": "", "signature": ""}),
    )
}

fn tool_start(index: u64, id: &str, name: &str) -> Input {
    block_start(
        index,
        json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
    )
}

fn block_delta(index: u64, delta: Value) -> Input {
    event(
        "content_block_delta",
        json!({"type": "content_block_delta", "index": index, "delta": delta}),
    )
}

fn text_delta(index: u64, text: &str) -> Input {
    block_delta(index, json!({"type": "text_delta", "text": text}))
}

fn thinking_delta(index: u64, thinking: &str) -> Input {
    block_delta(
        index,
        json!({"type": "thinking_delta", "thinking": thinking}),
    )
}

fn signature_delta(index: u64) -> Input {
    block_delta(
        index,
        json!({"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"}),
    )
}

fn json_delta(index: u64, partial_json: &str) -> Input {
    block_delta(
        index,
        json!({"type": "input_json_delta", "partial_json": partial_json}),
    )
}

fn block_stop(index: u64) -> Input {
    event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": index}),
    )
}

fn message_delta(stop_reason: &str, usage: &str) -> Input {
    let usage: Value = serde_json::from_str(usage).unwrap();
    event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": usage}),
    )
}

fn stopped(stop_reason: &str) -> Input {
    message_delta(stop_reason, r#"{"output_tokens":5}"#)
}

fn message_stop() -> Input {
    event("message_stop", json!({"type": "message_stop"}))
}

fn ping() -> Input {
    event("ping", json!({"type": "ping"}))
}

fn error_event(kind: &str, message: &str) -> Input {
    event(
        "error",
        json!({"type": "error", "error": {"type": kind, "message": message}}),
    )
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

fn tool(index: u32, id: Option<&str>, name: Option<&str>, arguments: Option<&str>) -> StreamEvent {
    StreamEvent::ToolCall {
        index,
        id: id.map(str::to_owned),
        name: name.map(str::to_owned),
        arguments: arguments.map(str::to_owned),
        choice: None,
    }
}

fn finish(finish_reason: FinishReason, usage: Option<Value>) -> StreamEvent {
    StreamEvent::Finish {
        finish_reason,
        usage: usage.map(|usage| serde_json::value::to_raw_value(&usage).unwrap()),
    }
}

/// Our usage for prompt and completion counts and Anthropic's object.
fn usage(prompt: u64, completion: u64, raw: Value) -> Option<Value> {
    Some(json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "raw": raw,
    }))
}

/// The usage after [`started`] and [`stopped`].
fn usual_usage() -> Option<Value> {
    usage(
        10,
        5,
        json!({"input_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 5}),
    )
}

fn finished(finish_reason: FinishReason) -> StreamEvent {
    finish(finish_reason, usual_usage())
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

#[test]
fn every_event_works_unnamed_too() {
    let failures: Vec<String> = [text::cases(), tool_calls::cases(), finish::cases()]
        .into_iter()
        .flatten()
        .filter_map(|case| {
            let input: Vec<Input> = case.input.iter().cloned().map(unnamed).collect();
            let (named, _) = run(&case.input, case.end);
            let (got, _) = run(&input, case.end);
            (as_json(&got) != as_json(&named)).then(|| {
                format!(
                    "{}:\n  unnamed {}\n  named   {}",
                    case.name,
                    Value::from(as_json(&got)),
                    Value::from(as_json(&named))
                )
            })
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn is_done_only_after_a_terminal_event() {
    let mut translator = Translator::default();
    let mut out = Vec::new();
    for (event_type, data) in [
        started(),
        text_start(0),
        text_delta(0, "x"),
        stopped("end_turn"),
    ] {
        translator.push(event_type, &data, &mut out);
        assert!(!translator.is_done(), "{data}");
    }
    let (event_type, data) = message_stop();
    translator.push(event_type, &data, &mut out);
    assert!(translator.is_done());
    assert_eq!(
        as_json(&out),
        as_json(&[token("x"), finished(FinishReason::Stop)])
    );
    let mut after = Vec::new();
    translator.push("content_block_delta", &text_delta(0, "late").1, &mut after);
    translator.end(&mut after);
    assert!(after.is_empty(), "{after:?}");
}

#[test]
fn usage_is_one_line_of_json() {
    let (events, _) = run(
        &[
            ("message_start", "{\"type\":\"message_start\",\n\"message\":{\"usage\":{\n\"input_tokens\":3,\n\"output_tokens\":1}}}".to_owned()),
            stopped("end_turn"),
            message_stop(),
        ],
        false,
    );
    let Some(StreamEvent::Finish {
        usage: Some(usage), ..
    }) = events.last()
    else {
        panic!("expected a finish with usage, got {events:?}");
    };
    assert!(!usage.get().contains(['\n', '\r']), "{usage}");
}
