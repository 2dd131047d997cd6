//! The recorded upstream corpus (`tests/fixtures/upstream/`) through the whole
//! proxy: every OpenAI-compatible dialect however its bytes are split, SSE
//! framing variants, bytes that are not an event stream, and the recordings of
//! other APIs, which must still end honestly.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::{Future, StreamExt};
use serde_json::{Value, json};

use crate::failures::{assert_failed_after_start, content_chunk, finish_chunk};
use crate::fake_upstream::{Chunking, Reply};
use crate::helpers::{Transcript, spawn_app, spawn_app_with};

/// What every recording is expected to give, keyed by file name.
pub(crate) const EXPECTED: &str = include_str!("../fixtures/upstream/expected.json");

/// How many recordings are in the OpenAI chat-completions dialect.
const OPENAI_CHAT_RECORDINGS: usize = 17;

/// Longer than any replay takes (the longest, 67 KB in one-byte pieces,
/// takes seconds in a debug build, and passed 15 s beside the rest of the
/// suite on 2 cores), shorter than `Transcript::read`'s own limit, so a
/// proxy that never ends a stream fails with the file's name.
pub(crate) const REPLAY_LIMIT: Duration = Duration::from_secs(25);

/// Replays run side by side at most this many at a time: all at once, a
/// busy 2-core machine gives each so little time that the slowest (a
/// recording in one-byte pieces) can pass `REPLAY_LIMIT` while doing
/// nothing wrong.
const REPLAYS_AT_ONCE: usize = 2;

/// Runs `replays` a few at a time; their results in the order they end.
pub(crate) async fn side_by_side<T>(
    replays: impl IntoIterator<Item = impl Future<Output = T>>,
) -> Vec<T> {
    futures_util::stream::iter(replays)
        .buffer_unordered(REPLAYS_AT_ONCE)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_chat_recordings_come_out_right_when_sent_whole() {
    assert_corpus_comes_out_right(&[Chunking::Whole]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_chat_recordings_come_out_right_in_one_byte_pieces() {
    assert_corpus_comes_out_right(&[Chunking::Bytes(1)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_chat_recordings_come_out_right_in_random_pieces() {
    assert_corpus_comes_out_right(&[
        Chunking::Random { seed: 11, max: 7 },
        Chunking::Random { seed: 23, max: 64 },
        Chunking::Random { seed: 47, max: 700 },
    ])
    .await;
}

#[tokio::test]
async fn sse_framing_variants_give_the_same_events_as_the_recording() {
    // Arrange
    let file = "openai-content-usage.sse";
    let original = String::from_utf8(fixture_bytes(file))
        .unwrap_or_else(|error| panic!("{file} is not UTF-8: {error}"));
    let app = spawn_app().await;
    app.upstream.push(Reply::sse(original.clone()));
    let reference = app.chat(&json!({"prompt": "x"})).await;
    assert_eq!(
        reference.terminal(),
        [json!({"type": "finish", "finish_reason": "stop",
                "usage": {"prompt_tokens": 14, "completion_tokens": 30, "total_tokens": 44,
                          "completion_tokens_details": {"reasoning_tokens": 0}}})],
        "{file} as recorded"
    );
    assert!(!reference.text_of("token").is_empty(), "{file} as recorded");
    let variants: [(&str, String); 6] = [
        ("CRLF line endings", original.replace('\n', "\r\n")),
        ("CR line endings", original.replace('\n', "\r")),
        ("a leading BOM", format!("\u{FEFF}{original}")),
        (
            "`data:` without a space",
            map_lines(&original, |_, line| match line.strip_prefix("data: ") {
                Some(data) => format!("data:{data}"),
                None => line.to_owned(),
            }),
        ),
        (
            "each JSON chunk split over two `data:` lines",
            map_lines(&original, |_, line| match line.split_once(',') {
                Some((head, tail)) if line.starts_with("data: {") => {
                    format!("{head},\ndata: {tail}")
                }
                _ => line.to_owned(),
            }),
        ),
        (
            "comment, `id:` and `event: message` lines",
            map_lines(&original, |n, line| {
                if line.starts_with("data:") {
                    format!(": keep-alive\nid: {n}\nevent: message\n{line}")
                } else {
                    line.to_owned()
                }
            }),
        ),
    ];

    for (variant, body) in variants {
        for chunking in [
            Chunking::Whole,
            Chunking::Bytes(1),
            Chunking::Random { seed: 5, max: 13 },
        ] {
            // Act
            app.upstream
                .push(Reply::sse(body.clone()).chunked(chunking));
            let transcript = app.chat(&json!({"prompt": "x"})).await;

            // Assert
            assert_eq!(
                transcript.status, 200,
                "{file} with {variant}, {chunking:?}"
            );
            assert_eq!(
                without_start(transcript.events()),
                without_start(reference.events()),
                "{file} with {variant}, {chunking:?}: tokens, finish or usage differ"
            );
            assert!(
                transcript.ends_with_done(),
                "{file} with {variant}, {chunking:?}"
            );
        }
    }
}

#[tokio::test]
async fn invalid_utf8_ends_the_stream_with_invalid_upstream_data() {
    // Arrange
    let app = spawn_app().await;
    let body = [
        content_chunk("fine").into_bytes(),
        // 0xFF inside the JSON string of an otherwise well-formed chunk.
        replace_all(content_chunk("bad ").as_bytes(), b"bad ", b"bad \xFF"),
        content_chunk(" more").into_bytes(),
        finish_chunk("stop").into_bytes(),
        b"data: [DONE]\n\n".to_vec(),
    ]
    .concat();
    app.upstream.push(Reply::sse(body));

    // Act
    let transcript = app.chat(&json!({"prompt": "x"})).await;

    // Assert
    assert_failed_after_start(&transcript, "invalid_upstream_data", "invalid UTF-8");
    assert_eq!(
        transcript.text_of("token"),
        "fine",
        "the token before the bad bytes arrives, nothing after it does"
    );
}

#[tokio::test]
async fn an_endless_line_ends_with_invalid_upstream_data_and_drops_the_upstream() {
    // Arrange
    let app = spawn_app_with(&[("UPSTREAM_MAX_LINE_BYTES", "65536")]).await;
    let piece = format!("data: {}", "a".repeat(8192));
    app.upstream.push(Reply::endless(piece));

    // Act
    let transcript = tokio::time::timeout(REPLAY_LIMIT, app.chat(&json!({"prompt": "x"})))
        .await
        .unwrap_or_else(|_| panic!("an endless upstream line never ended the stream"));

    // Assert
    assert_failed_after_start(&transcript, "invalid_upstream_data", "an endless line");
    assert!(
        app.upstream.wait_dropped(1, Duration::from_secs(5)).await,
        "the proxy kept reading an upstream line it had given up on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_of_other_apis_end_with_exactly_one_terminal_event() {
    // Arrange
    let others: Vec<String> = recordings()
        .into_iter()
        .filter(|(_, entry)| entry["format"] != "openai_chat")
        .map(|(file, _)| file)
        .collect();
    assert!(
        others.len() >= 8,
        "the Anthropic, Gemini and Responses-API recordings are missing: {others:?}"
    );
    let chunkings = [Chunking::Whole, Chunking::Random { seed: 3, max: 31 }];

    // Act
    let replays = side_by_side(others.iter().flat_map(|file| {
        chunkings
            .iter()
            .map(move |&chunking| async move { (file, chunking, replay(file, chunking).await) })
    }))
    .await;

    // Assert
    let problems: Vec<String> = replays
        .iter()
        .flat_map(|(file, chunking, transcript)| {
            let mut problems = Vec::new();
            check_frame(transcript, &mut problems);
            problems
                .into_iter()
                .map(move |problem| format!("{file} ({chunking:?}): {problem}"))
        })
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---- helpers -------------------------------------------------------------

/// Replays every OpenAI-chat recording with each chunking, each on its own
/// proxy so they run side by side, and fails listing every difference.
async fn assert_corpus_comes_out_right(chunkings: &[Chunking]) {
    let files = openai_chat_recordings();

    let replays = side_by_side(files.iter().flat_map(|(file, entry)| {
        chunkings.iter().map(move |&chunking| async move {
            (file, entry, chunking, replay(file, chunking).await)
        })
    }))
    .await;

    let problems: Vec<String> = replays
        .iter()
        .flat_map(|(file, entry, chunking, transcript)| {
            check_recording(&entry["expected"], transcript)
                .into_iter()
                .map(move |problem| format!("{file} ({chunking:?}): {problem}"))
        })
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// One fixture through a fresh proxy.
async fn replay(file: &str, chunking: Chunking) -> Transcript {
    let app = spawn_app().await;
    app.upstream.push(Reply::fixture(file).chunked(chunking));
    tokio::time::timeout(REPLAY_LIMIT, app.chat(&json!({"prompt": "replay"})))
        .await
        .unwrap_or_else(|_| panic!("{file} ({chunking:?}): the stream did not end"))
}

/// Every difference between what the client saw and what expected.json lists.
fn check_recording(expected: &Value, transcript: &Transcript) -> Vec<String> {
    let mut problems = Vec::new();
    check_frame(transcript, &mut problems);
    let events = transcript.events();
    compare_choices(expected, &extract(&events), &mut problems);

    let terminal = transcript.terminal();
    let [last] = terminal.as_slice() else {
        return problems;
    };
    let upstream_errors = upstream_errors(expected);
    if upstream_errors.is_empty() {
        let finish_reason = &expected["choices"][0]["finish_reason"];
        let usage = &expected["usage"];
        if last["type"] != "finish"
            || last["finish_reason"] != *finish_reason
            || last["usage"] != *usage
        {
            problems.push(format!(
                "expected finish {finish_reason} with usage {usage}, got {last}"
            ));
        }
    } else {
        let message = last["message"].as_str().unwrap_or_default();
        if last["type"] != "error"
            || last["code"] != "upstream_error"
            || !upstream_errors
                .iter()
                .all(|wanted| message.contains(wanted))
        {
            problems.push(format!(
                "expected an upstream_error carrying {upstream_errors:?}, got {last}"
            ));
        }
    }
    problems
}

/// Every difference between the choices expected.json lists and what a
/// client accumulated, `seen`.
pub(crate) fn compare_choices(
    expected: &Value,
    seen: &BTreeMap<u64, Extracted>,
    problems: &mut Vec<String>,
) {
    let wanted: BTreeMap<u64, Extracted> = expected["choices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|choice| {
            (
                choice["index"].as_u64().unwrap_or(0),
                expected_choice(choice),
            )
        })
        .collect();
    let indices: BTreeSet<u64> = wanted.keys().chain(seen.keys()).copied().collect();
    for index in indices {
        let nothing = Extracted::default();
        let want = wanted.get(&index).unwrap_or(&nothing);
        let got = seen.get(&index).unwrap_or(&nothing);
        let mut differ = |what: &str, want: &dyn std::fmt::Debug, got: &dyn std::fmt::Debug| {
            problems.push(format!(
                "choice {index} {what}: expected {want:?}\n  but the client saw {got:?}"
            ));
        };
        if want.content != got.content {
            differ("content", &want.content, &got.content);
        }
        if want.refusal != got.refusal {
            differ("refusal", &want.refusal, &got.refusal);
        }
        if want.reasoning != got.reasoning {
            differ("reasoning", &want.reasoning, &got.reasoning);
        }
        if want.tool_calls != got.tool_calls {
            differ("tool calls", &want.tool_calls, &got.tool_calls);
        }
    }
}

/// The messages of the upstream's own in-stream errors, which the client must
/// be shown; empty when the recording ends cleanly.
pub(crate) fn upstream_errors(expected: &Value) -> Vec<&str> {
    expected["in_stream_errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|error| {
            error["payload"]["error"]["message"]
                .as_str()
                .or_else(|| error["payload_error"]["message"].as_str())
        })
        .collect()
}

/// The shape every stream must have: 200, `start` first, exactly one
/// `finish` or `error` as the last event, then `data: [DONE]`.
fn check_frame(transcript: &Transcript, problems: &mut Vec<String>) {
    if transcript.status != 200 {
        problems.push(format!("status {}", transcript.status));
    }
    let events = transcript.events();
    if events.first().map(|event| &event["type"]) != Some(&json!("start")) {
        problems.push(format!(
            "the first event is not start: {:?}",
            events.first()
        ));
    }
    let terminal = transcript.terminal();
    if terminal.len() != 1 {
        problems.push(format!("{} terminal events: {terminal:?}", terminal.len()));
    } else if events.last() != terminal.first() {
        problems.push(format!(
            "events after the terminal one: {:?}",
            events.last()
        ));
    }
    if !transcript.ends_with_done() {
        problems.push("the stream does not end with data: [DONE]".to_owned());
    }
}

/// What a client accumulates for one choice.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Extracted {
    pub(crate) content: String,
    pub(crate) refusal: String,
    pub(crate) reasoning: String,
    pub(crate) tool_calls: BTreeMap<u64, ToolCall>,
}

#[derive(Debug, Default, PartialEq)]
pub(crate) struct ToolCall {
    pub(crate) id: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) arguments: String,
}

/// Accumulates the events per choice as a client would.
pub(crate) fn extract(events: &[Value]) -> BTreeMap<u64, Extracted> {
    let mut choices: BTreeMap<u64, Extracted> = BTreeMap::new();
    for event in events {
        let choice = choices
            .entry(event["choice"].as_u64().unwrap_or(0))
            .or_default();
        let token = event["token"].as_str().unwrap_or_default();
        match event["type"].as_str() {
            Some("token") if event["refusal"] == true => choice.refusal.push_str(token),
            Some("token") => choice.content.push_str(token),
            Some("reasoning") => choice.reasoning.push_str(token),
            Some("tool_call") => {
                let index = event["index"].as_u64().unwrap_or(u64::MAX);
                let call = choice.tool_calls.entry(index).or_insert_with(|| ToolCall {
                    id: event["id"].as_str().map(str::to_owned),
                    name: event["name"].as_str().map(str::to_owned),
                    arguments: String::new(),
                });
                call.arguments
                    .push_str(event["arguments"].as_str().unwrap_or_default());
            }
            _ => {}
        }
    }
    choices.retain(|_, choice| *choice != Extracted::default());
    choices
}

/// One choice of expected.json in the same shape.
fn expected_choice(choice: &Value) -> Extracted {
    let text = |key: &str| choice[key].as_str().unwrap_or_default().to_owned();
    Extracted {
        content: text("content"),
        refusal: text("refusal"),
        reasoning: [
            "reasoning_content",
            "reasoning",
            "thinking_from_content_array",
        ]
        .into_iter()
        .map(text)
        .collect(),
        tool_calls: choice["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|call| {
                let field = |key: &str| call[key].as_str().map(str::to_owned);
                (
                    call["index"].as_u64().unwrap_or(u64::MAX),
                    ToolCall {
                        id: field("id"),
                        name: field("name"),
                        arguments: field("arguments").unwrap_or_default(),
                    },
                )
            })
            .collect(),
    }
}

/// The recordings in the OpenAI chat-completions dialect, with their entries.
pub(crate) fn openai_chat_recordings() -> Vec<(String, Value)> {
    let files: Vec<(String, Value)> = recordings()
        .into_iter()
        .filter(|(_, entry)| entry["format"] == "openai_chat")
        .collect();
    assert_eq!(
        files.len(),
        OPENAI_CHAT_RECORDINGS,
        "expected.json lists a different number of openai_chat recordings"
    );
    files
}

/// Every recording listed in expected.json, with its entry.
fn recordings() -> Vec<(String, Value)> {
    let all: BTreeMap<String, Value> = serde_json::from_str(EXPECTED)
        .unwrap_or_else(|error| panic!("expected.json is not valid: {error}"));
    all.into_iter().collect()
}

fn fixture_bytes(file: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/upstream/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|error| panic!("read {path}: {error}"))
}

/// Rewrites every LF-terminated line of `text` with `f(line number, line)`.
fn map_lines(text: &str, f: impl Fn(usize, &str) -> String) -> String {
    text.split_inclusive('\n')
        .enumerate()
        .map(|(n, line)| match line.strip_suffix('\n') {
            Some(line) => format!("{}\n", f(n, line)),
            None => f(n, line),
        })
        .collect()
}

/// `bytes` with every `from` replaced by `to`.
fn replace_all(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest.starts_with(from) {
            out.extend_from_slice(to);
            rest = &rest[from.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

/// The events without `start`, whose stream id differs on every request.
fn without_start(events: Vec<Value>) -> Vec<Value> {
    events
        .into_iter()
        .filter(|event| event["type"] != "start")
        .collect()
}
