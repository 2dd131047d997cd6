//! The recorded Gemini streams of `tests/fixtures/upstream` come out as
//! `expected.json` says: text, thought summaries, finish and usage.

use std::fs;

use super::*;
use crate::providers::table::{self, FIXTURES};

/// Replays one recording and lists every way the result differs from expected.json.
fn check_recording(file: &str, entry: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let recorded = fs::read_to_string(format!("{FIXTURES}{file}")).unwrap();
    let sse = table::strict_events(&recorded);
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
