//! What is not an event, what is not a response, and arbitrary input.

use proptest::prelude::*;

use super::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
        case(
            "empty data is ignored",
            vec![msg(""), msg(" \r\n "), text("x")],
            false,
            vec![token("x")],
        ),
        case(
            "named events are not responses",
            vec![named("ping", "keep-alive"), named("error", "{}"), text("x")],
            false,
            vec![token("x")],
        ),
        case(
            "unknown fields and nulls are ignored",
            vec![
                msg(
                    r#"{"candidates": [{"content": {"parts": [{"text": "x", "thought": null, "videoMetadata": {}}], "role": "model"}, "index": 0, "safetyRatings": [], "citationMetadata": {}, "avgLogprobs": -0.1, "finishReason": null}], "modelVersion": "m", "createTime": "2025-01-01T00:00:00Z", "responseId": null}"#,
                ),
                msg(
                    r#"{"candidates": null, "usageMetadata": null, "promptFeedback": null, "error": null}"#,
                ),
            ],
            false,
            vec![token("x")],
        ),
        case(
            "[DONE] is not Gemini's and not JSON",
            vec![text("x"), msg("[DONE]")],
            true,
            vec![
                token("x"),
                StreamEvent::error(
                    ErrorCode::InvalidUpstreamData,
                    format!("{NOT_JSON}expected a JSON object"),
                ),
            ],
        ),
        case(
            "usage with counts that are not counts is invalid data",
            vec![msg(r#"{"usageMetadata": {"promptTokenCount": "many"}}"#)],
            true,
            vec![StreamEvent::error(
                ErrorCode::InvalidUpstreamData,
                format!(
                    "{NOT_JSON}usageMetadata: invalid type: string \"many\", expected u32 at line 1 column 27"
                ),
            )],
        ),
        case(
            "after the finish, nothing more",
            vec![parts(json!([{"text": "x"}]), "STOP")],
            true,
            vec![token("x"), stop()],
        ),
    ]
}

#[test]
fn what_is_not_a_response_ends_the_stream_without_echoing_it() {
    let long = "x".repeat(5_000);
    let inputs = [
        r#"{"candidates": ["#.to_owned(),
        "not json".to_owned(),
        r#"[{"candidates": []}]"#.to_owned(),
        ",".to_owned(),
        "42".to_owned(),
        r#""text""#.to_owned(),
        r#"{"candidates": {"index": 0}}"#.to_owned(),
        r#"{"candidates": [{"index": -1}]}"#.to_owned(),
        r#"{"candidates": [{"content": {"parts": [{"text": 5}]}}]}"#.to_owned(),
        format!(r#"{{"candidates": [{{"finishReason": {long}}}]}}"#),
        format!(r#"{{"candidates": [{{"content": {{"parts": [{{"text": "{long}"}}]}}}}], oops}}"#),
    ];
    for data in inputs {
        let (events, translator) = run(&[text("ok"), msg(&data)], true);
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

/// Pieces Gemini's responses are made of, so that arbitrary streams reach
/// past the JSON parser.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z]{0,6}".prop_map(|text| json!({"candidates": [{"content": {"parts": [{"text": text}]}}]}).to_string()),
        (0u32..3, "[A-Z_]{0,12}").prop_map(|(index, reason)| {
            json!({"candidates": [{"index": index, "finishReason": reason}]}).to_string()
        }),
        (0u32..3, proptest::option::of("[a-z]{0,3}")).prop_map(|(index, name)| {
            json!({"candidates": [{"index": index, "content": {"parts": [{"functionCall": {"name": name, "args": {}}}]}}]}).to_string()
        }),
        Just(r#"{"usageMetadata": {"promptTokenCount": 4294967296, "candidatesTokenCount": 18446744073709551615, "thoughtsTokenCount": 18446744073709551615}}"#.to_owned()),
        Just(r#"{"promptFeedback": {"blockReason": "OTHER"}}"#.to_owned()),
        Just(r#"{"error": {"message": "x"}}"#.to_owned()),
    ]
}

proptest! {
    #[test]
    fn any_stream_ends_in_exactly_one_terminal_event(
        stream in proptest::collection::vec((proptest::option::of("[a-z]{1,5}"), piece()), 0..12),
    ) {
        let mut translator = Translator::default();
        let mut out = Vec::new();
        for (event_type, data) in &stream {
            translator.push(event_type.as_deref().unwrap_or("message"), data, &mut out);
        }
        translator.end(&mut out);
        prop_assert!(translator.is_done());
        let terminals = out.iter().filter(|event| event.is_terminal()).count();
        prop_assert_eq!(terminals, 1);
        prop_assert!(out.last().is_some_and(StreamEvent::is_terminal));
        let empty = out.iter().any(|event| matches!(
            event,
            StreamEvent::Token { token, .. } | StreamEvent::Reasoning { token, .. } if token.is_empty()
        ));
        prop_assert!(!empty);
    }
}
