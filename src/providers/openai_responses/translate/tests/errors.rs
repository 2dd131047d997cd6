//! Errors the upstream reports inside its stream, in each shape, and data
//! that cannot be read.

use super::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
        case(
            "response.failed carries the error's message and code",
            vec![
                text_delta("par"),
                terminal(
                    "response.failed",
                    "failed",
                    json!({"error": {"code": "server_error", "message": "The model had an error."}}),
                ),
            ],
            false,
            vec![
                token("par"),
                upstream_error("The model had an error. (server_error)"),
            ],
        ),
        case(
            "response.failed without an error object",
            vec![terminal(
                "response.failed",
                "failed",
                json!({"error": null}),
            )],
            false,
            vec![upstream_error(
                "the upstream reported that the response failed",
            )],
        ),
        case(
            "error event, the documented top-level shape",
            vec![raw(
                "error",
                r#"{"type":"error","code":"rate_limit_exceeded","message":"Rate limit reached","param":null,"sequence_number":3}"#,
            )],
            false,
            vec![upstream_error("Rate limit reached (rate_limit_exceeded)")],
        ),
        case(
            "error event, the nested shape the API also sends",
            vec![
                reasoning_delta("r"),
                raw(
                    "error",
                    r#"{"type":"error","sequence_number":2,"error":{"type":"too_many_requests","code":"too_many_requests","message":"Too Many Requests","param":null}}"#,
                ),
            ],
            false,
            vec![
                reasoning("r"),
                upstream_error("Too Many Requests (too_many_requests)"),
            ],
        ),
        case(
            "error event, nested with a null code: the type names it",
            vec![raw(
                "error",
                r#"{"type":"error","error":{"type":"service_unavailable_error","code":null,"message":"Unable to verify model access right now. Please retry.","param":null}}"#,
            )],
            false,
            vec![upstream_error(
                "Unable to verify model access right now. Please retry. (service_unavailable_error)",
            )],
        ),
        case(
            "error event with a numeric code",
            vec![raw("error", r#"{"message":"quota exceeded","code":429}"#)],
            false,
            vec![upstream_error("quota exceeded (429)")],
        ),
        case(
            "error event without a message",
            vec![raw("error", r#"{"type":"error","code":"server_error"}"#)],
            false,
            vec![upstream_error(
                "the upstream reported an error (server_error)",
            )],
        ),
        case(
            "error event with an error string",
            vec![raw("error", r#"{"type":"error","error":"boom"}"#)],
            false,
            vec![upstream_error("boom")],
        ),
        case(
            "error event with plain text",
            vec![raw("error", "  upstream overloaded\n")],
            false,
            vec![upstream_error("upstream overloaded")],
        ),
        case(
            "error event with no data",
            vec![raw("error", "")],
            false,
            vec![upstream_error("the upstream reported an error")],
        ),
        case(
            "an unnamed error event is still an error",
            vec![
                text_delta("x"),
                raw(
                    "message",
                    r#"{"type":"error","code":"server_error","message":"An error occurred."}"#,
                ),
            ],
            true,
            vec![
                token("x"),
                upstream_error("An error occurred. (server_error)"),
            ],
        ),
    ]
}

#[test]
fn unreadable_data_ends_the_stream_without_echoing_it() {
    const NOT_JSON: &str = "the upstream sent an event that is not valid JSON: ";
    let long_text = "x".repeat(5_000);
    let inputs = [
        raw("response.output_text.delta", r#"{"delta":"#),
        raw("response.output_text.delta", "not json"),
        raw("response.output_text.delta", "[1,2]"),
        raw("response.output_text.delta", r#"{"delta":5}"#),
        raw(
            "response.completed",
            r#"{"response":{"incomplete_details":{"reason":7}}}"#,
        ),
        raw(
            "response.output_item.added",
            r#"{"item":{"type":"function_call","name":[]}}"#,
        ),
        raw(
            "response.function_call_arguments.delta",
            r#"{"output_index":-1}"#,
        ),
        raw(
            "response.output_text.delta",
            &format!(r#"{{"delta":{long_text}}}"#),
        ),
        raw("message", "not json"),
        raw("message", "42"),
        raw("message", r#"{"type":["response.completed"]}"#),
        raw(
            "message",
            &format!(r#"{{"type":"response.output_text.delta","delta":"{long_text}",}}"#),
        ),
    ];
    for (event_type, data) in inputs {
        let (events, translator) = run(&[text_delta("ok"), (event_type, data.clone())], true);
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
fn long_upstream_error_messages_are_passed_on_whole_for_masking() {
    let long = "é".repeat(1_500);
    let failed = terminal(
        "response.failed",
        "failed",
        json!({"error": {"code": null, "message": long}}),
    );
    let error = event("error", json!({"code": null, "message": long}));
    for input in [failed, error] {
        let (events, _) = run(&[input], false);
        assert_eq!(as_json(&events), as_json(&[upstream_error(&long)]));
    }
}
