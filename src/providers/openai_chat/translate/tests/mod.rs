//! The translator's tests: a table of hand-built upstream events and the
//! events they must become, split by what it covers, and the recorded
//! streams of `tests/fixtures/upstream`.

mod corpus;
mod errors;
mod finish;
mod robustness;
mod text;
mod tool_calls;

use std::collections::BTreeMap;
use std::fs;

use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::Translator;
use crate::event::{ErrorCode, FinishReason, StreamEvent};
use crate::providers::Translate;
use crate::providers::table::{self, Case, Input, as_json, case, disconnected, upstream_error};

const NOT_JSON: &str = "the upstream sent a chunk that is not valid JSON: ";

#[test]
fn chunk_strings_are_borrowed_unless_escaped() {
    use super::{ChatChunk, Cow};
    let chunk: ChatChunk<'_> =
        serde_json::from_str(r#"{"object":"chat.completion.chunk","message":"a\nb"}"#).unwrap();
    assert!(matches!(
        chunk.object.map(|text| text.0),
        Some(Cow::Borrowed("chat.completion.chunk"))
    ));
    assert!(matches!(chunk.message.map(|text| text.0), Some(Cow::Owned(m)) if m == "a\nb"));
}

fn msg(data: &str) -> Input {
    ("message", data.to_owned())
}

fn named(event_type: &'static str, data: &str) -> Input {
    (event_type, data.to_owned())
}

fn choice(index: u32, delta: &str, finish_reason: &str) -> Input {
    msg(&format!(
        r#"{{"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{{"index":{index},"delta":{delta},"logprobs":null,"finish_reason":{finish_reason}}}]}}"#
    ))
}

fn delta(delta: &str) -> Input {
    choice(0, delta, "null")
}

fn finish_chunk(reason: &str) -> Input {
    choice(0, "{}", &format!("\"{reason}\""))
}

fn done() -> Input {
    msg("[DONE]")
}

fn token(text: &str) -> StreamEvent {
    StreamEvent::Token {
        token: text.to_owned(),
        refusal: false,
        choice: None,
    }
}

fn token_in(choice: u32, text: &str) -> StreamEvent {
    StreamEvent::Token {
        token: text.to_owned(),
        refusal: false,
        choice: Some(choice),
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

fn reasoning_in(choice: u32, text: &str) -> StreamEvent {
    StreamEvent::Reasoning {
        token: text.to_owned(),
        choice: Some(choice),
    }
}

fn tool_in(
    choice: Option<u32>,
    index: u32,
    id: Option<&str>,
    name: Option<&str>,
    arguments: Option<&str>,
) -> StreamEvent {
    StreamEvent::ToolCall {
        index,
        id: id.map(str::to_owned),
        name: name.map(str::to_owned),
        arguments: arguments.map(str::to_owned),
        choice,
    }
}

fn tool(index: u32, id: Option<&str>, name: Option<&str>, arguments: Option<&str>) -> StreamEvent {
    tool_in(None, index, id, name, arguments)
}

fn finish(finish_reason: FinishReason, usage: Option<&str>) -> StreamEvent {
    StreamEvent::Finish {
        finish_reason,
        usage: usage.map(|usage| RawValue::from_string(usage.to_owned()).unwrap()),
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

#[test]
fn finish_reasons_are_normalized() {
    let table = [
        ("stop", FinishReason::Stop),
        ("end_turn", FinishReason::Stop),
        ("stop_sequence", FinishReason::Stop),
        ("eos", FinishReason::Stop),
        ("length", FinishReason::Length),
        ("max_tokens", FinishReason::Length),
        ("MAX_TOKENS", FinishReason::Length),
        ("tool_calls", FinishReason::ToolCalls),
        ("function_call", FinishReason::ToolCalls),
        ("tool_use", FinishReason::ToolCalls),
        ("content_filter", FinishReason::ContentFilter),
        ("safety", FinishReason::ContentFilter),
        ("SAFETY", FinishReason::ContentFilter),
    ];
    let failures: Vec<String> = table
        .iter()
        .filter_map(|&(raw, expected)| {
            let (got, _) = run(&[finish_chunk(raw), done()], false);
            let expected = vec![finish(expected, None)];
            (as_json(&got) != as_json(&expected)).then(|| format!("{raw}: got {got:?}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn invalid_json_ends_the_stream_without_echoing_it() {
    let long_text = "x".repeat(5_000);
    let inputs = [
        r#"{"choices":["#.to_owned(),
        "not json".to_owned(),
        "[1,2]".to_owned(),
        "42".to_owned(),
        r#""a string""#.to_owned(),
        r#"{"choices":[{"index":0,"delta":{"content":5}}]}"#.to_owned(),
        format!(r#"{{"choices":[{{"index":"{long_text}"}}]}}"#),
        format!(r#"{{"choices":[{{"delta":{{"content":"{long_text}"}}}}], oops}}"#),
    ];
    for data in inputs {
        let (events, translator) = run(&[delta(r#"{"content":"ok"}"#), msg(&data)], true);
        assert!(translator.is_done(), "{data:.60}");
        let Some((StreamEvent::Error { code, message }, before)) = events.split_last() else {
            panic!("{data:.60}: expected an error last, got {events:?}");
        };
        assert_eq!(as_json(before), as_json(&[token("ok")]), "{data:.60}");
        assert_eq!(*code, ErrorCode::InvalidUpstreamData, "{data:.60}");
        assert!(message.starts_with(NOT_JSON), "{data:.60}: {message}");
        assert!(message.chars().count() < 300, "{data:.60}: {message}");
    }
}

#[test]
fn long_upstream_error_messages_are_passed_on_whole_for_masking() {
    let long = "é".repeat(1_500);
    let (events, _) = run(&[named("error", &long)], false);
    assert_eq!(as_json(&events), as_json(&[upstream_error(&long)]));

    let (events, _) = run(&[msg(&format!(r#"{{"error":"{long}"}}"#))], false);
    assert_eq!(as_json(&events), as_json(&[upstream_error(&long)]));
}

#[test]
fn pretty_printed_usage_is_passed_on_one_line() {
    let (events, _) = run(
        &[
            msg(
                "{\n \"choices\": [],\r\n \"usage\": {\n  \"total_tokens\": 3,\n  \"note\": \"a\\nb\"\n }\n}",
            ),
            done(),
        ],
        false,
    );
    let [
        StreamEvent::Finish {
            usage: Some(usage), ..
        },
    ] = events.as_slice()
    else {
        panic!("expected one finish with usage, got {events:?}");
    };
    assert!(!usage.get().contains(['\n', '\r']), "{usage}");
    let usage: Value = serde_json::from_str(usage.get()).unwrap();
    assert_eq!(usage, json!({"total_tokens": 3, "note": "a\nb"}));
}

#[test]
fn usage_is_passed_on_verbatim() {
    let usage =
        r#"{"prompt_tokens":43,"cost":0.000669,"cost_details":{"upstream_inference_cost":null}}"#;
    let (events, _) = run(
        &[msg(&format!(r#"{{"choices":[],"usage":{usage}}}"#)), done()],
        false,
    );
    let [
        StreamEvent::Finish {
            usage: Some(got), ..
        },
    ] = events.as_slice()
    else {
        panic!("expected one finish with usage, got {events:?}");
    };
    assert_eq!(got.get(), usage);
}

#[test]
fn is_done_only_after_a_terminal_event() {
    let mut translator = Translator::default();
    let mut out = Vec::new();
    assert!(!translator.is_done());
    translator.push("message", &delta(r#"{"content":"x"}"#).1, &mut out);
    translator.push("message", &finish_chunk("stop").1, &mut out);
    assert!(!translator.is_done());
    translator.push("message", "[DONE]", &mut out);
    assert!(translator.is_done());
    assert_eq!(out.len(), 2);
}
