//! Stop reasons, the finish held back until the stream's end, and usage
//! merged from `message_start` and every `message_delta`.

use super::*;

pub(super) fn cases() -> Vec<Case> {
    let mut cases: Vec<Case> = [
        ("end_turn", FinishReason::Stop),
        ("stop_sequence", FinishReason::Stop),
        ("pause_turn", FinishReason::Stop),
        ("max_tokens", FinishReason::Length),
        ("model_context_window_exceeded", FinishReason::Length),
        ("tool_use", FinishReason::ToolCalls),
        ("refusal", FinishReason::ContentFilter),
    ]
    .into_iter()
    .map(|(reason, expected)| {
        case(
            "every known stop reason",
            vec![started(), stopped(reason), message_stop()],
            false,
            vec![finished(expected)],
        )
    })
    .collect();
    cases.extend([
        case(
            "a refusal keeps the text before it and ends as content_filter",
            vec![
                started(),
                text_start(0),
                text_delta(0, "I can't help with that."),
                block_stop(0),
                stopped("refusal"),
                message_stop(),
            ],
            false,
            vec![
                token("I can't help with that."),
                finished(FinishReason::ContentFilter),
            ],
        ),
        case(
            "an unknown stop reason is an upstream error naming it",
            vec![started(), text_start(0), text_delta(0, "x"), stopped("compaction"), message_stop()],
            true,
            vec![
                token("x"),
                upstream_error("the upstream ended the generation with stop_reason `compaction`"),
            ],
        ),
        case(
            "a stop reason then the end of the body is a finish",
            vec![started(), text_start(0), text_delta(0, "x"), stopped("end_turn")],
            true,
            vec![token("x"), finished(FinishReason::Stop)],
        ),
        case(
            "the finish is held until message_stop",
            vec![started(), stopped("end_turn"), ping()],
            false,
            vec![],
        ),
        case(
            "a later stop reason wins",
            vec![started(), stopped("end_turn"), stopped("max_tokens"), message_stop()],
            false,
            vec![finished(FinishReason::Length)],
        ),
        case(
            "a null stop reason is no stop reason",
            vec![
                started(),
                event(
                    "message_delta",
                    json!({"type": "message_delta", "delta": {"stop_reason": null}, "usage": {"output_tokens": 2}}),
                ),
            ],
            true,
            vec![disconnected()],
        ),
        case(
            "message_stop without a stop reason ends as it meant to",
            vec![started(), text_start(0), text_delta(0, "x"), message_stop()],
            false,
            vec![
                token("x"),
                finish(
                    FinishReason::Stop,
                    usage(
                        10,
                        1,
                        json!({"input_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 1}),
                    ),
                ),
            ],
        ),
        case(
            "no usage anywhere is a finish without usage",
            vec![
                event(
                    "message_delta",
                    json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}}),
                ),
                message_stop(),
            ],
            false,
            vec![finish(FinishReason::Stop, None)],
        ),
        case(
            "cache writes and reads count as prompt, the last output count holds",
            vec![
                message_start(
                    r#"{"input_tokens":5,"cache_creation_input_tokens":100,"cache_read_input_tokens":2000,"cache_creation":{"ephemeral_5m_input_tokens":100,"ephemeral_1h_input_tokens":0},"output_tokens":1,"service_tier":"standard"}"#,
                ),
                message_delta("", r#"{"output_tokens":40}"#),
                message_delta(
                    "end_turn",
                    r#"{"input_tokens":5,"cache_creation_input_tokens":100,"cache_read_input_tokens":2000,"output_tokens":80,"server_tool_use":{"web_search_requests":1}}"#,
                ),
                message_stop(),
            ],
            false,
            vec![finish(
                FinishReason::Stop,
                usage(
                    2105,
                    80,
                    json!({
                        "input_tokens": 5, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2000,
                        "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 0},
                        "output_tokens": 80, "service_tier": "standard",
                        "server_tool_use": {"web_search_requests": 1}
                    }),
                ),
            )],
        ),
        case(
            "nulls in a later usage do not erase known counts",
            vec![
                started(),
                message_delta(
                    "end_turn",
                    r#"{"input_tokens":null,"cache_read_input_tokens":null,"output_tokens":5}"#,
                ),
                message_stop(),
            ],
            false,
            vec![finished(FinishReason::Stop)],
        ),
        case(
            "counts that are not numbers count as nothing but stay in raw",
            vec![
                message_start(r#"{"input_tokens":"ten","output_tokens":-1}"#),
                stopped("end_turn"),
                message_stop(),
            ],
            false,
            vec![finish(
                FinishReason::Stop,
                usage(0, 5, json!({"input_tokens": "ten", "output_tokens": 5})),
            )],
        ),
        case(
            "absurd counts do not overflow",
            vec![
                message_start(&format!(
                    r#"{{"input_tokens":{max},"cache_read_input_tokens":{max},"output_tokens":{max}}}"#,
                    max = u64::MAX
                )),
                stopped("end_turn"),
                message_stop(),
            ],
            false,
            vec![finish(
                FinishReason::Stop,
                Some(json!({
                    "prompt_tokens": u64::MAX,
                    "completion_tokens": 0,
                    "total_tokens": u64::MAX,
                    "raw": {"input_tokens": u64::MAX, "cache_read_input_tokens": u64::MAX, "output_tokens": 5},
                })),
            )],
        ),
    ]);
    cases
}
