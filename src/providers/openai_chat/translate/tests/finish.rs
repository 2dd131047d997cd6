//! How a stream finishes: finish reasons, usage, `[DONE]` and the end of the body.

use super::*;

pub(super) fn cases() -> Vec<Case> {
    let usage = r#"{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}"#;
    vec![
        case(
            "finish_reason error is an upstream error, not a stop",
            vec![delta(r#"{"content":"Hal"}"#), finish_chunk("error"), done()],
            false,
            vec![
                token("Hal"),
                upstream_error("the upstream ended the generation with finish_reason `error`"),
            ],
        ),
        case(
            "an unknown finish_reason is never a success",
            vec![finish_chunk("insufficient_system_resource"), done()],
            false,
            vec![upstream_error(
                "the upstream ended the generation with finish_reason `insufficient_system_resource`",
            )],
        ),
        case(
            "an unknown finish_reason of another choice fails the stream too",
            vec![
                choice(0, r#"{"content":"a"}"#, r#""stop""#),
                choice(1, r#"{"content":"b"}"#, r#""abort""#),
                choice(2, r#"{"content":"c"}"#, "null"),
                done(),
            ],
            false,
            vec![
                token("a"),
                token_in(1, "b"),
                upstream_error("the upstream ended the generation with finish_reason `abort`"),
            ],
        ),
        case(
            "provider spellings of length and content filtering",
            vec![finish_chunk("MAX_OUTPUT_TOKENS"), done()],
            false,
            vec![finish(FinishReason::Length, None)],
        ),
        case(
            "Gemini's RECITATION is content filtering",
            vec![finish_chunk("RECITATION"), done()],
            false,
            vec![finish(FinishReason::ContentFilter, None)],
        ),
        case(
            "several choices in one chunk, in order",
            vec![msg(
                r#"{"choices":[{"index":2,"delta":{"content":"c"}},{"index":0,"delta":{"content":"a"}}]}"#,
            )],
            false,
            vec![token_in(2, "c"), token("a")],
        ),
        case(
            "finish_reason: choice 0's wins over one seen first",
            vec![
                choice(1, "{}", r#""length""#),
                choice(0, "{}", r#""tool_calls""#),
                choice(2, "{}", r#""content_filter""#),
                done(),
            ],
            false,
            vec![finish(FinishReason::ToolCalls, None)],
        ),
        case(
            "finish_reason: without choice 0, the first seen",
            vec![
                choice(2, "{}", r#""length""#),
                choice(1, "{}", r#""stop""#),
                done(),
            ],
            false,
            vec![finish(FinishReason::Length, None)],
        ),
        case(
            "finish_reason: a later null or other reason does not replace it",
            vec![
                finish_chunk("length"),
                finish_chunk("stop"),
                msg(&format!(
                    r#"{{"choices":[{{"index":0,"delta":{{"content":""}},"finish_reason":null}}],"usage":{usage}}}"#
                )),
                done(),
            ],
            false,
            vec![finish(FinishReason::Length, Some(usage))],
        ),
        case(
            "finish is held back for the usage chunk that follows",
            vec![
                delta(r#"{"content":"x"}"#),
                finish_chunk("stop"),
                msg(&format!(r#"{{"choices":[],"usage":{usage}}}"#)),
                done(),
            ],
            false,
            vec![token("x"), finish(FinishReason::Stop, Some(usage))],
        ),
        case(
            "usage on the finish chunk",
            vec![
                msg(&format!(
                    r#"{{"choices":[{{"index":0,"delta":{{"content":""}},"finish_reason":"stop"}}],"usage":{usage}}}"#
                )),
                done(),
            ],
            false,
            vec![finish(FinishReason::Stop, Some(usage))],
        ),
        case(
            "usage: the most recent non-null object wins",
            vec![
                msg(r#"{"choices":[],"usage":{"total_tokens":1}}"#),
                msg(r#"{"choices":[],"usage":{"total_tokens":2}}"#),
                msg(r#"{"choices":[],"usage":null}"#),
                msg(r#"{"choices":[],"usage":7}"#),
                finish_chunk("stop"),
                done(),
            ],
            false,
            vec![finish(FinishReason::Stop, Some(r#"{"total_tokens":2}"#))],
        ),
        case(
            "usage under x_groq",
            vec![
                msg(&format!(
                    r#"{{"choices":[{{"index":0,"delta":{{}},"finish_reason":"tool_calls"}}],"x_groq":{{"id":"req_1","usage":{usage}}}}}"#
                )),
                done(),
            ],
            false,
            vec![finish(FinishReason::ToolCalls, Some(usage))],
        ),
        case(
            "top-level usage preferred over x_groq's in the same chunk",
            vec![
                msg(r#"{"x_groq":{"usage":{"total_tokens":1}},"usage":{"total_tokens":2}}"#),
                done(),
            ],
            false,
            vec![finish(FinishReason::Stop, Some(r#"{"total_tokens":2}"#))],
        ),
        case(
            "[DONE] without a finish_reason is a stop",
            vec![delta(r#"{"content":"x"}"#), done()],
            false,
            vec![token("x"), stop()],
        ),
        case(
            "[DONE] with surrounding whitespace",
            vec![msg(" [DONE]\n")],
            false,
            vec![stop()],
        ),
        case(
            "EOF after a finish_reason: finish (no [DONE] sent)",
            vec![
                delta(r#"{"content":"x"}"#),
                finish_chunk("length"),
                msg(&format!(r#"{{"choices":[],"usage":{usage}}}"#)),
            ],
            true,
            vec![token("x"), finish(FinishReason::Length, Some(usage))],
        ),
        case(
            "EOF without a finish_reason: disconnected",
            vec![delta(r#"{"content":"x"}"#)],
            true,
            vec![token("x"), disconnected()],
        ),
        case(
            "EOF on an empty stream: disconnected",
            vec![],
            true,
            vec![disconnected()],
        ),
        case(
            "after finish, nothing more",
            vec![
                finish_chunk("stop"),
                done(),
                delta(r#"{"content":"late"}"#),
                named("error", r#"{"error":{"message":"late"}}"#),
                msg("not json"),
                done(),
            ],
            true,
            vec![stop()],
        ),
    ]
}
