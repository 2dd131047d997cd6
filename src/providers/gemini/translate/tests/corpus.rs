//! The recorded Gemini streams of `tests/fixtures/upstream` come out as
//! `expected.json` says: text, thought summaries, finish and usage.

use std::fs;

use super::*;
use crate::providers::table::FIXTURES;

/// A strict WHATWG event-stream splitter that knows the three line endings
/// (Gemini's recordings use CRLF); an unterminated last line and an event
/// no blank line completed are never dispatched.
fn split_sse(text: &str) -> Vec<(String, String)> {
    let mut lines = Vec::new();
    let mut rest = text;
    while let Some(end) = rest.find(['\r', '\n']) {
        lines.push(&rest[..end]);
        let ending = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + ending..];
    }
    let mut events = Vec::new();
    let (mut event_type, mut data) = (String::new(), String::new());
    for line in lines {
        if line.is_empty() {
            if !data.is_empty() {
                data.pop();
                let kind = if event_type.is_empty() {
                    "message"
                } else {
                    &event_type
                };
                events.push((kind.to_owned(), std::mem::take(&mut data)));
            }
            event_type.clear();
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "event" => value.clone_into(&mut event_type),
            _ => {}
        }
    }
    events
}

#[test]
fn the_splitter_knows_every_line_ending() {
    let events = split_sse(
        "data: a\r\n\r\ndata: b\n\ndata: c\r\rdata: d\r\ndata: e\n\nevent: x\ndata: f\n\ndata: cut\n",
    );
    let expected = [
        ("message", "a"),
        ("message", "b"),
        ("message", "c"),
        ("message", "d\ne"),
        ("x", "f"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(kind, data)| ((*kind).to_owned(), (*data).to_owned()))
        .collect();
    assert_eq!(events, expected);
}

/// Replays one recording and lists every way the result differs from expected.json.
fn check_recording(file: &str, entry: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let recorded = fs::read_to_string(format!("{FIXTURES}{file}")).unwrap();
    let sse = split_sse(&recorded);
    if Some(sse.len() as u64) != entry["sse_events_dispatched_strict"].as_u64() {
        problems.push(format!("the splitter dispatched {} events", sse.len()));
    }
    let mut translator = Translator::default();
    let mut events = Vec::new();
    for (event_type, data) in &sse {
        translator.push(event_type, data, &mut events);
    }
    translator.end(&mut events);

    let expected = &entry["expected"];
    let (mut content, mut reasoning) = (String::new(), String::new());
    for event in &events {
        match event {
            StreamEvent::Token {
                token,
                refusal: false,
                choice: None,
            } if !token.is_empty() => content.push_str(token),
            StreamEvent::Reasoning {
                token,
                choice: None,
            } if !token.is_empty() => {
                reasoning.push_str(token);
            }
            StreamEvent::Finish { .. } => {}
            other => problems.push(format!("unexpected event {other:?}")),
        }
    }
    let want_text = expected["text"].as_str().unwrap_or_default();
    if content != want_text {
        problems.push(format!("text: got {content:?}, expected {want_text:?}"));
    }
    let want_reasoning = expected["thought_text"].as_str().unwrap_or_default();
    if reasoning != want_reasoning {
        problems.push(format!(
            "reasoning: got {reasoning:?}, expected {want_reasoning:?}"
        ));
    }

    let raw = &expected["usageMetadata"];
    let count = |name: &str| raw[name].as_u64().unwrap_or_default();
    let want_usage = usage(
        count("promptTokenCount"),
        count("candidatesTokenCount") + count("thoughtsTokenCount"),
        raw.clone(),
    );
    let want_reason = match expected["finishReason"].as_str() {
        Some("STOP") => FinishReason::Stop,
        other => panic!("{file}: no test for finishReason {other:?}"),
    };
    let terminal = events.iter().filter(|event| event.is_terminal()).count();
    let want_finish = as_json(&[finish(want_reason, Some(want_usage.clone()))]);
    if terminal != 1
        || events
            .last()
            .map(|last| as_json(std::slice::from_ref(last)))
            != Some(want_finish.clone())
    {
        problems.push(format!(
            "ended with {:?}, expected {want_finish:?}",
            events.last()
        ));
    }
    // The totals Gemini reports are what the three numbers add up to.
    if want_usage["total_tokens"] != raw["totalTokenCount"] {
        problems.push(format!(
            "total_tokens {} is not totalTokenCount {}",
            want_usage["total_tokens"], raw["totalTokenCount"]
        ));
    }

    let mut after = Vec::new();
    translator.push("message", &text("late").1, &mut after);
    translator.end(&mut after);
    if !after.is_empty() {
        problems.push(format!("events after the end: {after:?}"));
    }
    problems
}

#[test]
fn corpus_gemini_recordings() {
    table::assert_recordings(&table::recordings("gemini", 2), check_recording);
}
