//! Every recorded Responses API stream of `tests/fixtures/upstream` comes out
//! as `expected.json` says, framed by the same SSE parser the proxy uses,
//! whole and byte by byte.

use std::collections::BTreeMap;
use std::fs;

use super::*;
use crate::providers::table::{self, FIXTURES};

/// What a client rebuilds from the events, checking on the way the rules it
/// relies on: no empty text, `id` and `name` on a call's first event only.
#[derive(Default)]
struct Extracted {
    text: String,
    refusal: String,
    reasoning: String,
    calls: BTreeMap<u32, Value>,
    terminal: Vec<StreamEvent>,
    problems: Vec<String>,
}

impl Extracted {
    fn of(events: Vec<StreamEvent>) -> Self {
        let mut extracted = Self::default();
        for event in events {
            extracted.add(event);
        }
        extracted
    }

    fn add(&mut self, event: StreamEvent) {
        match event {
            StreamEvent::Token { token, .. } | StreamEvent::Reasoning { token, .. }
                if token.is_empty() =>
            {
                self.problems.push("an empty text event".to_owned());
            }
            StreamEvent::Token { token, refusal, .. } => {
                let text = if refusal {
                    &mut self.refusal
                } else {
                    &mut self.text
                };
                text.push_str(&token);
            }
            StreamEvent::Reasoning { token, .. } => self.reasoning.push_str(&token),
            StreamEvent::ToolCall {
                index,
                id,
                name,
                arguments,
                ..
            } => {
                let fragment = arguments.unwrap_or_default();
                match self.calls.get_mut(&index) {
                    Some(call) => {
                        if id.is_some() || name.is_some() || fragment.is_empty() {
                            self.problems.push(format!("a later event of call {index}"));
                        }
                        let whole = format!("{}{fragment}", call["arguments"].as_str().unwrap());
                        call["arguments"] = Value::from(whole);
                    }
                    None => {
                        if id.is_none() || name.is_none() {
                            self.problems
                                .push(format!("call {index} began without id or name"));
                        }
                        let call = json!({"id": id, "name": name, "arguments": fragment});
                        self.calls.insert(index, call);
                    }
                }
            }
            terminal => self.terminal.push(terminal),
        }
    }
}

/// Replays one recording and lists every way the result differs from expected.json.
fn check_recording(file: &str, entry: &Value, pieces: usize) -> Vec<String> {
    let bytes = fs::read(format!("{FIXTURES}{file}")).unwrap();
    let input = table::dispatched(&bytes, pieces);
    let mut problems = Vec::new();
    if Some(input.len() as u64) != entry["sse_events_dispatched_strict"].as_u64() {
        problems.push(format!("the parser dispatched {} events", input.len()));
    }
    let mut translator = Translator::default();
    let mut events = Vec::new();
    for (event_type, data) in &input {
        translator.push(event_type, data, &mut events);
    }
    translator.end(&mut events);
    let got = Extracted::of(events);
    problems.extend(got.problems.iter().cloned());

    let expected = &entry["expected"];
    let compared = [
        (
            "text",
            &got.text,
            expected["output_text"].as_str().unwrap_or_default(),
        ),
        ("refusal", &got.refusal, ""),
        ("reasoning", &got.reasoning, ""),
    ];
    for (what, got, want) in compared {
        if got != want {
            problems.push(format!("{what}: got {got:?}, expected {want:?}"));
        }
    }

    let want_calls: Vec<Value> = expected["output_items_done"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["type"] == "function_call")
        .map(|item| json!({"id": item["call_id"], "name": item["name"], "arguments": item["arguments"]}))
        .collect();
    for item in expected["output_items_done"].as_array().unwrap() {
        let streamed = &expected["function_call_arguments_by_item"][item["id"].as_str().unwrap()];
        if item["type"] == "function_call" && *streamed != item["arguments"] {
            problems.push(format!(
                "expected.json disagrees with itself on {}",
                item["id"]
            ));
        }
    }
    let got_calls: Vec<Value> = got.calls.into_values().collect();
    if got_calls != want_calls {
        problems.push(format!("calls: got {got_calls:?}, expected {want_calls:?}"));
    }

    assert_eq!(
        expected["status"], "completed",
        "{file}: a new kind of recording"
    );
    let reason = if want_calls.is_empty() {
        FinishReason::Stop
    } else {
        FinishReason::ToolCalls
    };
    let want_terminal = as_json(&[finish(reason, &expected["usage"])]);
    if as_json(&got.terminal) != want_terminal {
        problems.push(format!(
            "ended with {:?}, expected {want_terminal:?}",
            as_json(&got.terminal)
        ));
    }

    let mut after = Vec::new();
    translator.push(&input[0].0, &input[0].1, &mut after);
    translator.end(&mut after);
    if !after.is_empty() {
        problems.push(format!("events after the end: {after:?}"));
    }
    problems
}

#[test]
fn corpus_responses_recordings() {
    table::assert_recordings(&table::recordings("responses", 2), |file, entry| {
        [usize::MAX, 1]
            .into_iter()
            .flat_map(|pieces| {
                check_recording(file, entry, pieces)
                    .into_iter()
                    .map(move |problem| format!("(pieces of {pieces} bytes) {problem}"))
            })
            .collect()
    });
}
