//! Every recorded stream of `tests/fixtures/upstream` comes out as `expected.json` says.

use super::*;
use crate::providers::table::{self, FIXTURES};

/// What a client would rebuild from one choice's events.
#[derive(Default)]
struct Extracted {
    content: String,
    refusal: String,
    reasoning: String,
    tool_calls: BTreeMap<u32, Value>,
}

/// Replays one recording and lists every way the result differs from expected.json.
fn check_recording(file: &str, entry: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let text = fs::read_to_string(format!("{FIXTURES}{file}")).unwrap();
    let sse = table::strict_events(&text);
    if Some(sse.len() as u64) != entry["sse_events_dispatched_strict"].as_u64() {
        problems.push(format!("the splitter dispatched {} events", sse.len()));
    }
    let mut translator = Translator::default();
    let mut events = Vec::new();
    for (event_type, data) in &sse {
        translator.push(event_type, data, &mut events);
    }
    translator.end(&mut events);

    let choices = extract(&events, &mut problems);
    compare_choices(choices, &entry["expected"], &mut problems);
    compare_terminal(&events, &entry["expected"], &mut problems);

    let mut after = Vec::new();
    translator.push("message", &delta(r#"{"content":"late"}"#).1, &mut after);
    translator.end(&mut after);
    if !after.is_empty() {
        problems.push(format!("events after the end: {after:?}"));
    }
    problems
}

/// Accumulates the events per choice, checking on the way the rules a
/// client relies on: no empty events, `id`/`name` on a call's first event only.
fn extract(events: &[StreamEvent], problems: &mut Vec<String>) -> BTreeMap<u32, Extracted> {
    let mut choices: BTreeMap<u32, Extracted> = BTreeMap::new();
    for event in events {
        match event {
            StreamEvent::Token {
                token,
                refusal,
                choice,
            } => {
                let extracted = choices.entry(choice.unwrap_or(0)).or_default();
                let text = if *refusal {
                    &mut extracted.refusal
                } else {
                    &mut extracted.content
                };
                text.push_str(token);
            }
            StreamEvent::Reasoning { token, choice } => {
                let extracted = choices.entry(choice.unwrap_or(0)).or_default();
                extracted.reasoning.push_str(token);
            }
            StreamEvent::ToolCall {
                index,
                id,
                name,
                arguments,
                choice,
            } => {
                let calls = &mut choices.entry(choice.unwrap_or(0)).or_default().tool_calls;
                let fragment = arguments.as_deref().unwrap_or_default();
                if let Some(call) = calls.get_mut(index) {
                    if id.is_some() || name.is_some() || fragment.is_empty() {
                        problems.push(format!("later tool call event {event:?}"));
                    }
                    let arguments = format!("{}{fragment}", call["arguments"].as_str().unwrap());
                    call["arguments"] = Value::from(arguments);
                } else {
                    if id.is_none() || name.is_none() {
                        problems.push(format!(
                            "first tool call event without id or name {event:?}"
                        ));
                    }
                    let call =
                        json!({"index": index, "id": id, "name": name, "arguments": fragment});
                    calls.insert(*index, call);
                }
            }
            StreamEvent::Start { .. } | StreamEvent::Finish { .. } | StreamEvent::Error { .. } => {}
        }
        let empty = matches!(
            event,
            StreamEvent::Token { token, .. } | StreamEvent::Reasoning { token, .. } if token.is_empty()
        );
        if empty {
            problems.push(format!("empty event {event:?}"));
        }
    }
    choices
}

fn compare_choices(
    mut choices: BTreeMap<u32, Extracted>,
    expected: &Value,
    problems: &mut Vec<String>,
) {
    for want in expected["choices"].as_array().unwrap() {
        let index = u32::try_from(want["index"].as_u64().unwrap()).unwrap();
        let got = choices.remove(&index).unwrap_or_default();
        let want_text = |keys: &[&str]| {
            keys.iter()
                .find_map(|key| want[*key].as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let compared = [
            ("content", got.content, want_text(&["content"])),
            ("refusal", got.refusal, want_text(&["refusal"])),
            (
                "reasoning",
                got.reasoning,
                want_text(&[
                    "reasoning_content",
                    "reasoning",
                    "thinking_from_content_array",
                ]),
            ),
        ];
        for (what, got, want) in compared {
            if got != want {
                problems.push(format!(
                    "choice {index} {what}: got {got:?}, expected {want:?}"
                ));
            }
        }
        let got_calls: Vec<Value> = got.tool_calls.into_values().collect();
        let want_calls: Vec<Value> = want["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|call| {
                json!({
                    "index": call["index"],
                    "id": call["id"],
                    "name": call["name"],
                    "arguments": call["arguments"],
                })
            })
            .collect();
        if got_calls != want_calls {
            problems.push(format!(
                "choice {index} tool calls: got {got_calls:?}, expected {want_calls:?}"
            ));
        }
    }
    if !choices.is_empty() {
        problems.push(format!(
            "events for unexpected choices {:?}",
            choices.keys()
        ));
    }
}

/// Exactly one terminal event, last: the upstream's error where the
/// recording has one, else a finish with choice 0's reason and the usage.
fn compare_terminal(events: &[StreamEvent], expected: &Value, problems: &mut Vec<String>) {
    let terminals = events.iter().filter(|event| event.is_terminal()).count();
    if terminals != 1 {
        problems.push(format!("{terminals} terminal events"));
    }
    match (events.last(), expected["in_stream_errors"].get(0)) {
        (Some(StreamEvent::Error { code, message }), Some(error)) => {
            let want = error
                .get("payload")
                .map_or(&error["payload_error"], |payload| &payload["error"])["message"]
                .as_str();
            if *code != ErrorCode::UpstreamError || want != Some(message.as_str()) {
                problems.push(format!(
                    "error {code:?} {message:?}, expected upstream_error {want:?}"
                ));
            }
        }
        (
            Some(StreamEvent::Finish {
                finish_reason,
                usage,
            }),
            None,
        ) => {
            let want = expected["choices"]
                .as_array()
                .unwrap()
                .iter()
                .find(|choice| choice["index"] == 0)
                .and_then(|choice| choice["finish_reason"].as_str());
            if want != Some(finish_reason.as_str()) {
                problems.push(format!(
                    "finish_reason {finish_reason:?}, expected {want:?}"
                ));
            }
            let usage: Value = usage.as_ref().map_or(Value::Null, |usage| {
                serde_json::from_str(usage.get()).unwrap()
            });
            if usage != expected["usage"] {
                problems.push(format!("usage {usage}, expected {}", expected["usage"]));
            }
        }
        (last, error) => problems.push(format!(
            "ended with {last:?}, expected in-stream error {error:?}"
        )),
    }
}

#[test]
fn corpus_openai_chat_recordings() {
    table::assert_recordings(&table::recordings("openai_chat", 17), check_recording);
}
