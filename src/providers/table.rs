//! The table-test harness every translator's tests share: hand-built
//! upstream events in, our events out, compared as the client receives them;
//! and the recorded streams of `tests/fixtures/upstream`, found by their
//! dialect in `expected.json` and read either by a strict reference
//! splitter or by the proxy's own framer. Each dialect keeps its own builders of wire
//! events, its own tables and its own reading of what a recording must give;
//! only the running, the comparing and the finding live here, once.

use std::collections::BTreeMap;
use std::convert::Infallible;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt, stream};

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

/// A strict WHATWG event-stream splitter that knows the three line endings
/// (Gemini's recordings use CRLF); an unterminated last line and an event
/// no blank line completed are never dispatched.
pub(crate) fn strict_events(text: &str) -> Vec<(String, String)> {
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

/// The recording's events as the proxy dispatches them, its body cut into `pieces`.
pub(crate) fn dispatched(bytes: &[u8], pieces: usize) -> Vec<(String, String)> {
    let chunks: Vec<Result<Bytes, Infallible>> = bytes
        .chunks(pieces)
        .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
        .collect();
    let Some(events) = super::sse::events(stream::iter(chunks), 1 << 20)
        .collect::<Vec<_>>()
        .now_or_never()
    else {
        panic!("an in-memory body is read at once");
    };
    events
        .into_iter()
        .map(|event| {
            let event = event.unwrap_or_else(|error| panic!("{error}"));
            (event.event, event.data)
        })
        .collect()
}

/// The reference splitter itself, so that what it says of a recording can be trusted.
mod tests {
    use super::strict_events;

    #[test]
    fn the_splitter_knows_every_line_ending() {
        let events = strict_events(
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
}
