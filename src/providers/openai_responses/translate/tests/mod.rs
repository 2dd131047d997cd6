//! The translator's tests: tables of hand-built Responses API events and the
//! events they must become, split by what they cover, and the recorded
//! streams of `tests/fixtures/upstream`.

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

/// A named event as the API sends it: the name again in the data's `type`.
fn event(kind: &'static str, mut fields: Value) -> Input {
    fields["type"] = Value::from(kind);
    (kind, fields.to_string())
}

/// The same event without its `event:` line, as some relays pass it on.
fn unnamed(kind: &'static str, fields: Value) -> Input {
    ("message", event(kind, fields).1)
}

fn raw(event_type: &'static str, data: &str) -> Input {
    (event_type, data.to_owned())
}

fn text_delta(delta: &str) -> Input {
    event(
        "response.output_text.delta",
        json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": delta}),
    )
}

fn reasoning_delta(delta: &str) -> Input {
    event(
        "response.reasoning_summary_text.delta",
        json!({"item_id": "rs_1", "output_index": 0, "summary_index": 0, "delta": delta}),
    )
}

fn call_added(output_index: u64, item_id: &str, call_id: &str, name: &str) -> Input {
    event(
        "response.output_item.added",
        json!({"output_index": output_index, "item": {
            "type": "function_call", "id": item_id, "call_id": call_id, "name": name,
            "arguments": "", "status": "in_progress"
        }}),
    )
}

fn arguments_delta(output_index: u64, item_id: &str, delta: &str) -> Input {
    event(
        "response.function_call_arguments.delta",
        json!({"item_id": item_id, "output_index": output_index, "delta": delta}),
    )
}

/// A terminal event with its response object's `fields`.
fn terminal(kind: &'static str, status: &str, fields: Value) -> Input {
    let mut response =
        json!({"id": "resp_1", "object": "response", "status": status, "output": []});
    if let (Some(response), Value::Object(fields)) = (response.as_object_mut(), fields) {
        response.extend(fields);
    }
    event(kind, json!({"response": response}))
}

fn completed(usage: Value) -> Input {
    terminal("response.completed", "completed", json!({"usage": usage}))
}

fn incomplete(reason: Value, usage: Value) -> Input {
    terminal(
        "response.incomplete",
        "incomplete",
        json!({"incomplete_details": {"reason": reason}, "usage": usage}),
    )
}

fn usage(input: u64, output: u64) -> Value {
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input + output,
    })
}

fn token(text: &str) -> StreamEvent {
    StreamEvent::Token {
        token: text.to_owned(),
        refusal: false,
        choice: None,
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

fn tool(index: u32, id: Option<&str>, name: Option<&str>, arguments: Option<&str>) -> StreamEvent {
    StreamEvent::ToolCall {
        index,
        id: id.map(str::to_owned),
        name: name.map(str::to_owned),
        arguments: arguments.map(str::to_owned),
        choice: None,
    }
}

/// A finish with the usage we make of the API's `usage` (`Value::Null` for none).
fn finish(finish_reason: FinishReason, usage: &Value) -> StreamEvent {
    let usage = usage.as_object().map(|_| {
        let count = |name: &str| usage[name].as_u64().unwrap();
        let (prompt, completion) = (count("input_tokens"), count("output_tokens"));
        let counted = json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "raw": usage,
        });
        serde_json::value::to_raw_value(&counted).unwrap()
    });
    StreamEvent::Finish {
        finish_reason,
        usage,
    }
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
fn nothing_follows_a_terminal_event() {
    for last in [completed(usage(1, 1)), raw("error", r#"{"message":"x"}"#)] {
        let (mut out, mut translator) = run(&[text_delta("a"), last], false);
        assert!(translator.is_done());
        let before = out.len();
        for (event_type, data) in [text_delta("late"), completed(usage(2, 2))] {
            translator.push(event_type, &data, &mut out);
        }
        translator.end(&mut out);
        assert_eq!(out.len(), before, "{out:?}");
    }
}
