//! Errors an upstream reports inside its stream, in each shape.

use super::*;

pub(super) fn cases() -> Vec<Case> {
    let usage = r#"{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}"#;
    vec![
        case(
            "error event type with an error object",
            vec![
                delta(r#"{"reasoning":"r"}"#),
                named(
                    "error",
                    r#"{"error":{"message":"Tool call validation failed","type":"invalid_request_error","code":"tool_use_failed"}}"#,
                ),
            ],
            true,
            vec![
                reasoning("r"),
                upstream_error("Tool call validation failed"),
            ],
        ),
        case(
            "error event type, Anthropic shape",
            vec![named(
                "error",
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            )],
            false,
            vec![upstream_error("Overloaded")],
        ),
        case(
            "error event type with a top-level message",
            vec![named("error", r#"{"message":"quota exceeded","code":429}"#)],
            false,
            vec![upstream_error("quota exceeded")],
        ),
        case(
            "error event type with plain text",
            vec![named("error", "  upstream overloaded\n")],
            false,
            vec![upstream_error("upstream overloaded")],
        ),
        case(
            "error event type with no data",
            vec![named("error", "")],
            false,
            vec![upstream_error("the upstream reported an error")],
        ),
        case(
            "error object in a data chunk",
            vec![
                delta(r#"{"content":"x"}"#),
                msg(r#"{"error":{"message":"The server had an error","type":"server_error"}}"#),
            ],
            true,
            vec![token("x"), upstream_error("The server had an error")],
        ),
        case(
            "error string in a data chunk",
            vec![msg(r#"{"error":"rate \"limited\""}"#)],
            false,
            vec![upstream_error("rate \"limited\"")],
        ),
        case(
            "error object without a message: shown as sent",
            vec![msg(r#"{"error":{"code":500}}"#)],
            false,
            vec![upstream_error(r#"{"code":500}"#)],
        ),
        case(
            "error after a finish_reason still fails the stream (OpenRouter)",
            vec![
                delta(r#"{"reasoning":"We need"}"#),
                finish_chunk("length"),
                msg(&format!(
                    r#"{{"error":{{"code":400,"message":"Token limit reached"}},"choices":[{{"index":0,"delta":{{"content":"!"}},"finish_reason":null}}],"usage":{usage}}}"#
                )),
                done(),
            ],
            true,
            vec![
                reasoning("We need"),
                token("!"),
                upstream_error("Token limit reached"),
            ],
        ),
        case(
            "error: null is not an error",
            vec![msg(
                r#"{"error":null,"choices":[{"index":0,"delta":{"content":"x"}}]}"#,
            )],
            false,
            vec![token("x")],
        ),
        case(
            "vLLM-style error chunk",
            vec![msg(
                r#"{"object":"error","message":"prompt too long","type":"BadRequestError","code":400}"#,
            )],
            false,
            vec![upstream_error("prompt too long")],
        ),
    ]
}
