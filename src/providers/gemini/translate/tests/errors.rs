//! Errors inside the stream: Google's error object, whole, and nothing after it.

use super::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
        case(
            "an error object is an upstream error with its status",
            vec![
                text("Partial"),
                msg(
                    r#"{"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}}"#,
                ),
            ],
            false,
            vec![
                token("Partial"),
                upstream_error("The model is overloaded. Please try again later. (UNAVAILABLE)"),
            ],
        ),
        case(
            "an error without a status is its message",
            vec![msg(
                r#"{"error": {"code": 500, "message": "Internal error"}}"#,
            )],
            false,
            vec![upstream_error("Internal error")],
        ),
        case(
            "an error that is a string, or has no message, is shown as sent",
            vec![msg(r#"{"error": "quota exceeded"}"#)],
            false,
            vec![upstream_error("quota exceeded")],
        ),
        case(
            "an error object without a message is shown whole",
            vec![msg(
                r#"{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}}"#,
            )],
            false,
            vec![upstream_error(
                r#"{"code": 429, "status": "RESOURCE_EXHAUSTED"}"#,
            )],
        ),
        case(
            "after an error, nothing more, not even at the end",
            vec![
                msg(r#"{"error": {"message": "boom", "status": "INTERNAL"}}"#),
                parts(json!([{"text": "late"}]), "STOP"),
            ],
            true,
            vec![upstream_error("boom (INTERNAL)")],
        ),
        case(
            "an error after a finishReason still fails the stream",
            vec![
                parts(json!([{"text": "x"}]), "STOP"),
                msg(r#"{"error": {"message": "backend died", "status": "INTERNAL"}}"#),
            ],
            true,
            vec![token("x"), upstream_error("backend died (INTERNAL)")],
        ),
    ]
}

#[test]
fn long_error_messages_are_passed_on_whole_for_masking() {
    let long = "é".repeat(1_500);
    let data = json!({"error": {"code": 400, "message": long, "status": "INVALID_ARGUMENT"}});
    let (events, _) = run(&[msg(&data.to_string())], false);
    assert_eq!(
        as_json(&events),
        as_json(&[upstream_error(&format!("{long} (INVALID_ARGUMENT)"))])
    );
}
