//! In-stream errors, cut streams and data that is not JSON.

use super::*;

/// The start of every invalid-data message.
const NOT_JSON: &str = "the upstream sent an event that is not valid JSON: ";

pub(super) fn cases() -> Vec<Case> {
    vec![
        case(
            "an error event mid-stream keeps the text before it",
            vec![
                started(),
                text_start(0),
                text_delta(0, "Part"),
                error_event("overloaded_error", "Overloaded"),
                text_delta(0, " late"),
                stopped("end_turn"),
                message_stop(),
            ],
            true,
            vec![
                token("Part"),
                upstream_error("Overloaded (overloaded_error)"),
            ],
        ),
        case(
            "an error event before anything else",
            vec![error_event("api_error", "Internal server error")],
            true,
            vec![upstream_error("Internal server error (api_error)")],
        ),
        case(
            "an unnamed error event",
            vec![
                started(),
                unnamed(error_event("rate_limit_error", "Slow down")),
            ],
            false,
            vec![upstream_error("Slow down (rate_limit_error)")],
        ),
        case(
            "an error after the stop reason still fails the stream",
            vec![
                started(),
                stopped("end_turn"),
                error_event("overloaded_error", "Overloaded"),
            ],
            true,
            vec![upstream_error("Overloaded (overloaded_error)")],
        ),
        case(
            "an error without a type is its message",
            vec![event(
                "error",
                json!({"type": "error", "error": {"message": "Gone"}}),
            )],
            false,
            vec![upstream_error("Gone")],
        ),
        case(
            "an error without a message is its object",
            vec![event(
                "error",
                json!({"type": "error", "error": {"type": "overloaded_error"}}),
            )],
            false,
            vec![upstream_error(r#"{"type":"overloaded_error"}"#)],
        ),
        case(
            "an error event that is not JSON is its text",
            vec![("error", "upstream exploded".to_owned())],
            false,
            vec![upstream_error("upstream exploded")],
        ),
        case(
            "an empty error event is still an error",
            vec![("error", String::new())],
            false,
            vec![upstream_error("the upstream reported an error")],
        ),
        case(
            "a stream cut before any stop reason is disconnected",
            vec![started(), text_start(0), text_delta(0, "Hal")],
            true,
            vec![token("Hal"), disconnected()],
        ),
        case(
            "a stream cut inside a tool call is disconnected",
            vec![
                started(),
                tool_start(0, "toolu_1", "f"),
                json_delta(0, "{\"a\""),
            ],
            true,
            vec![
                tool(0, Some("toolu_1"), Some("f"), None),
                tool(0, None, None, Some("{\"a\"")),
                disconnected(),
            ],
        ),
        case(
            "an empty body is disconnected",
            vec![],
            true,
            vec![disconnected()],
        ),
        case(
            "a known event that is not JSON is invalid data",
            vec![started(), ("content_block_delta", "{\"type\":".to_owned())],
            true,
            vec![StreamEvent::error(
                ErrorCode::InvalidUpstreamData,
                format!("{NOT_JSON}EOF while parsing a value at line 1 column 8"),
            )],
        ),
        case(
            "a known event that is a JSON array is invalid data",
            vec![("message_delta", "[1, 2]".to_owned())],
            false,
            vec![StreamEvent::error(
                ErrorCode::InvalidUpstreamData,
                format!("{NOT_JSON}expected a JSON object"),
            )],
        ),
        case(
            "an unnamed event that is not JSON is invalid data",
            vec![("message", "keep-alive".to_owned())],
            false,
            vec![StreamEvent::error(
                ErrorCode::InvalidUpstreamData,
                format!("{NOT_JSON}expected a JSON object"),
            )],
        ),
    ]
}

#[test]
fn invalid_data_is_reported_short_without_echoing_it() {
    let long = "x".repeat(5_000);
    let inputs = [
        (
            "content_block_delta",
            format!(r#"{{"type":"content_block_delta","index":"{long}"}}"#),
        ),
        (
            "content_block_delta",
            format!(
                r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":5}}, "{long}"}}"#
            ),
        ),
        (
            "message_start",
            r#"{"type":"message_start","message":{"usage":[1]}}"#.to_owned(),
        ),
        (
            "message_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":7}}"#.to_owned(),
        ),
        ("message", "42".to_owned()),
        ("message", r#""a string""#.to_owned()),
    ];
    for (event_type, data) in inputs {
        let (events, translator) = run(
            &[
                started(),
                text_start(0),
                text_delta(0, "ok"),
                (event_type, data.clone()),
            ],
            true,
        );
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
fn long_error_messages_are_passed_on_whole_for_masking() {
    let long = "é".repeat(1_500);
    let (events, _) = run(&[error_event("api_error", &long)], false);
    assert_eq!(
        as_json(&events),
        as_json(&[upstream_error(&format!("{long} (api_error)"))])
    );
}
