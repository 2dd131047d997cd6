//! Every recorded Anthropic stream of `tests/fixtures/upstream` comes out as
//! `expected.json` says, read by the same strict SSE framer the proxy uses:
//! two recordings lack their final blank line, so their `message_stop` is
//! never dispatched and the stop reason before it must finish them.

use std::collections::BTreeMap;
use std::fs;

use super::*;
use crate::providers::table::{self, FIXTURES};

/// What a client rebuilds from the events, checking on the way that none
/// is empty and that only a call's first event names it.
#[derive(Debug, Default, PartialEq)]
struct Answer {
    text: String,
    reasoning: String,
    /// By index: id, name, the arguments joined.
    tool_calls: BTreeMap<u32, (String, String, String)>,
    finish: Option<(FinishReason, Value)>,
}

fn rebuild(events: &[StreamEvent], problems: &mut Vec<String>) -> Answer {
    let mut answer = Answer::default();
    for event in events {
        match event {
            StreamEvent::Token {
                token,
                refusal,
                choice,
            } => {
                if token.is_empty() || *refusal || choice.is_some() {
                    problems.push(format!("unexpected token event {event:?}"));
                }
                answer.text.push_str(token);
            }
            StreamEvent::Reasoning { token, choice } => {
                if token.is_empty() || choice.is_some() {
                    problems.push(format!("unexpected reasoning event {event:?}"));
                }
                answer.reasoning.push_str(token);
            }
            StreamEvent::ToolCall {
                index,
                id,
                name,
                arguments,
                ..
            } => {
                let fragment = arguments.clone().unwrap_or_default();
                match answer.tool_calls.get_mut(index) {
                    Some(call) => {
                        if id.is_some() || name.is_some() || fragment.is_empty() {
                            problems.push(format!("later tool call event {event:?}"));
                        }
                        call.2.push_str(&fragment);
                    }
                    None => {
                        let (Some(id), Some(name)) = (id, name) else {
                            problems.push(format!(
                                "first tool call event without id or name {event:?}"
                            ));
                            continue;
                        };
                        answer
                            .tool_calls
                            .insert(*index, (id.clone(), name.clone(), fragment));
                    }
                }
            }
            StreamEvent::Finish {
                finish_reason,
                usage,
            } => {
                let usage = usage.as_ref().map_or(Value::Null, |usage| {
                    serde_json::from_str(usage.get()).unwrap()
                });
                answer.finish = Some((*finish_reason, usage));
            }
            StreamEvent::Start { .. } | StreamEvent::Error { .. } => {
                problems.push(format!("unexpected event {event:?}"));
            }
        }
    }
    answer
}

/// The answer `expected.json` describes, block by block, with the usage our
/// finish must carry: message_start's usage with message_delta's over it.
fn expected_answer(expected: &Value) -> Answer {
    let blocks = expected["blocks"].as_array().unwrap();
    let joined = |kind: &str, field: &str| -> String {
        blocks
            .iter()
            .filter(|block| block["type"] == kind)
            .map(|block| block[field].as_str().unwrap())
            .collect()
    };
    let tool_calls = blocks
        .iter()
        .filter(|block| block["type"] == "tool_use")
        .enumerate()
        .map(|(index, block)| {
            let text = |field: &str| block[field].as_str().unwrap().to_owned();
            (
                u32::try_from(index).unwrap(),
                (text("id"), text("name"), text("input_json")),
            )
        })
        .collect();
    let finish_reason = match expected["stop_reason"].as_str().unwrap() {
        "end_turn" => FinishReason::Stop,
        "max_tokens" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        other => panic!("no expectation for stop_reason {other}"),
    };
    let mut raw = expected["usage_message_start"].as_object().unwrap().clone();
    for (name, value) in expected["usage_message_delta"].as_object().unwrap() {
        raw.insert(name.clone(), value.clone());
    }
    let count = |name: &str| raw[name].as_u64().unwrap();
    let prompt = count("input_tokens")
        + count("cache_creation_input_tokens")
        + count("cache_read_input_tokens");
    let usage = usage(prompt, count("output_tokens"), Value::Object(raw.clone())).unwrap();
    Answer {
        text: joined("text", "text"),
        reasoning: joined("thinking", "thinking"),
        tool_calls,
        finish: Some((finish_reason, usage)),
    }
}

fn check_recording(file: &str, entry: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let sse = table::dispatched(&fs::read(format!("{FIXTURES}{file}")).unwrap(), usize::MAX);
    if Some(sse.len() as u64) != entry["sse_events_dispatched_strict"].as_u64() {
        problems.push(format!("the framer dispatched {} events", sse.len()));
    }
    let mut translator = Translator::default();
    let mut events = Vec::new();
    for (event_type, data) in &sse {
        translator.push(event_type, data, &mut events);
    }
    translator.end(&mut events);
    if !events.last().is_some_and(StreamEvent::is_terminal) {
        problems.push(format!("no terminal event last: {:?}", events.last()));
    }
    let got = rebuild(&events, &mut problems);
    let want = expected_answer(&entry["expected"]);
    if got != want {
        problems.push(format!("got {got:#?}\nexpected {want:#?}"));
    }
    let mut after = Vec::new();
    translator.push("content_block_delta", &text_delta(0, "late").1, &mut after);
    translator.end(&mut after);
    if !after.is_empty() {
        problems.push(format!("events after the end: {after:?}"));
    }
    problems
}

#[test]
fn corpus_anthropic_recordings() {
    table::assert_recordings(&table::recordings("anthropic", 4), check_recording);
}
