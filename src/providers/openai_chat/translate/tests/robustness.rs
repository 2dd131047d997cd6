//! What is not an event: empty and null fields, unknown fields and events, anything after the end.

use super::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
        case(
            "empty data is ignored",
            vec![msg(""), msg(" \n "), delta(r#"{"content":"x"}"#)],
            false,
            vec![token("x")],
        ),
        case(
            "nulls and empty strings are not events",
            vec![
                delta(
                    r#"{"role":"assistant","content":null,"refusal":null,"reasoning":null,"reasoning_content":null,"tool_calls":null,"function_call":null}"#,
                ),
                delta(r#"{"content":"","refusal":"","reasoning":"","reasoning_content":""}"#),
                delta(
                    r#"{"tool_calls":[{"index":0,"id":"","function":{"name":"","arguments":""}}]}"#,
                ),
                delta("null"),
                choice(0, "{}", r#""""#),
                msg(r#"{"choices":null,"usage":null,"x_groq":null,"error":null}"#),
                msg(r#"{"choices":[{"index":0,"delta":null,"finish_reason":null}]}"#),
            ],
            true,
            vec![disconnected()],
        ),
        case(
            "chunks without choices are fine",
            vec![
                msg(
                    r#"{"choices":[],"id":"","model":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]}"#,
                ),
                msg(r#"{"id":"x","object":"chat.completion.chunk"}"#),
                delta(r#"{"content":"x"}"#),
            ],
            false,
            vec![token("x")],
        ),
        case(
            "choice without index or delta",
            vec![msg(r#"{"choices":[{"finish_reason":"length"}]}"#), done()],
            false,
            vec![finish(FinishReason::Length, None)],
        ),
        case(
            "unknown fields are ignored",
            vec![msg(
                r#"{"id":"x","provider":"p","system_fingerprint":"fp","choices":[{"index":0,"delta":{"role":"assistant","content":"x","audio":{"id":"a"},"annotations":[]},"logprobs":{"content":[{"token":"x","logprob":-0.1}]},"content_filter_results":{"hate":{"filtered":false}},"native_finish_reason":null,"finish_reason":null}],"service_tier":"default"}"#,
            )],
            false,
            vec![token("x")],
        ),
        case(
            "unknown named events are ignored",
            vec![named("ping", "keep-alive"), delta(r#"{"content":"x"}"#)],
            false,
            vec![token("x")],
        ),
        case(
            "after an error, nothing more",
            vec![
                msg(r#"{"error":"boom"}"#),
                delta(r#"{"content":"late"}"#),
                finish_chunk("stop"),
                done(),
            ],
            true,
            vec![upstream_error("boom")],
        ),
    ]
}
