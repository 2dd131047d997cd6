//! The table-test harness every translator's tests share: hand-built
//! upstream events in, our events out, compared as the client receives them;
//! and the recorded streams of `tests/fixtures/upstream`, found by their
//! dialect in `expected.json`. Each dialect keeps its own builders of wire
//! events, its own tables and its own reading of what a recording must give;
//! only the running, the comparing and the finding live here, once.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{DISCONNECTED, Translate};
use crate::event::{ErrorCode, StreamEvent};

/// One dispatched upstream SSE event: (event type, data).
pub(crate) type Input = (&'static str, String);

/// One row of a translator's table.
pub(crate) struct Case {
    pub(crate) name: &'static str,
    pub(crate) input: Vec<Input>,
    /// Whether the upstream body then ends (EOF) with `Translate::end`.
    pub(crate) end: bool,
    pub(crate) expected: Vec<StreamEvent>,
}

pub(crate) fn case(
    name: &'static str,
    input: Vec<Input>,
    end: bool,
    expected: Vec<StreamEvent>,
) -> Case {
    Case {
        name,
        input,
        end,
        expected,
    }
}

/// `input` through a fresh translator, then its end when `end`.
pub(crate) fn run<T: Translate + Default>(input: &[Input], end: bool) -> (Vec<StreamEvent>, T) {
    let mut translator = T::default();
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
pub(crate) fn as_json(events: &[StreamEvent]) -> Vec<Value> {
    events
        .iter()
        .map(|event| serde_json::to_value(event).unwrap_or(Value::Null))
        .collect()
}

/// The upstream's own error, as every translator passes it on.
pub(crate) fn upstream_error(message: &str) -> StreamEvent {
    StreamEvent::error(ErrorCode::UpstreamError, message)
}

/// The end of a stream that stopped before its terminal event.
pub(crate) fn disconnected() -> StreamEvent {
    StreamEvent::error(ErrorCode::UpstreamDisconnected, DISCONNECTED)
}

/// Runs every row of `tables` through a fresh `T` and fails listing each
/// row that came out otherwise than it expects.
pub(crate) fn assert_table<T: Translate + Default>(tables: impl IntoIterator<Item = Vec<Case>>) {
    let failures = failures::<T>(tables.into_iter().flatten());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every row of `cases` whose events, or whose being done, differ from what
/// it expects, described for the failure message.
pub(crate) fn failures<T: Translate + Default>(
    cases: impl IntoIterator<Item = Case>,
) -> Vec<String> {
    cases
        .into_iter()
        .filter_map(|case| {
            let (got, translator) = run::<T>(&case.input, case.end);
            let (got, expected) = (as_json(&got), as_json(&case.expected));
            let terminal = expected
                .last()
                .is_some_and(|event| event["type"] == "finish" || event["type"] == "error");
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
        .collect()
}

/// Where the recorded upstream streams are.
pub(crate) const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/upstream/");

/// The recordings of `format` that `expected.json` lists, with their
/// entries; fails unless there are `count`, so that a renamed `format`
/// key cannot make a corpus test check nothing.
pub(crate) fn recordings(format: &str, count: usize) -> Vec<(String, Value)> {
    let manifest = std::fs::read_to_string(format!("{FIXTURES}expected.json"))
        .unwrap_or_else(|error| panic!("expected.json: {error}"));
    let manifest: BTreeMap<String, Value> =
        serde_json::from_str(&manifest).unwrap_or_else(|error| panic!("expected.json: {error}"));
    let found: Vec<(String, Value)> = manifest
        .into_iter()
        .filter(|(_, entry)| entry["format"] == format)
        .collect();
    assert_eq!(found.len(), count, "{format} recordings in expected.json");
    found
}

/// Fails listing every problem `check` finds in each of `recordings`,
/// each with its file's name.
pub(crate) fn assert_recordings(
    recordings: &[(String, Value)],
    check: impl Fn(&str, &Value) -> Vec<String>,
) {
    let failures: Vec<String> = recordings
        .iter()
        .flat_map(|(file, entry)| {
            check(file, entry)
                .into_iter()
                .map(move |problem| format!("{file}: {problem}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
