//! How an answer ends: the terminal events, their usage, and streams cut
//! before one.

use super::*;

pub(super) fn cases() -> Vec<Case> {
    let usage = usage(278, 9);
    vec![
        case(
            "completed is stop, at once, with the usage counted",
            vec![text_delta("x"), completed(usage.clone())],
            false,
            vec![token("x"), finish(FinishReason::Stop, &usage)],
        ),
        case(
            "completed without usage",
            vec![completed(Value::Null)],
            false,
            vec![finish(FinishReason::Stop, &Value::Null)],
        ),
        case(
            "completed without a response object",
            vec![event("response.completed", json!({}))],
            false,
            vec![finish(FinishReason::Stop, &Value::Null)],
        ),
        case(
            "usage with other counts missing counts them as 0",
            vec![completed(json!({"input_tokens": 7, "total_tokens": 7}))],
            false,
            vec![StreamEvent::Finish {
                finish_reason: FinishReason::Stop,
                usage: serde_json::value::to_raw_value(&json!({
                    "prompt_tokens": 7, "completion_tokens": 0, "total_tokens": 7,
                    "raw": {"input_tokens": 7, "total_tokens": 7},
                }))
                .ok(),
            }],
        ),
        case(
            "incomplete at max_output_tokens is length, even mid tool call",
            vec![
                call_added(0, "fc_1", "call_a", "a"),
                arguments_delta(0, "fc_1", "{\"x\":"),
                incomplete(json!("max_output_tokens"), usage.clone()),
            ],
            false,
            vec![
                tool(0, Some("call_a"), Some("a"), None),
                tool(0, None, None, Some("{\"x\":")),
                finish(FinishReason::Length, &usage),
            ],
        ),
        case(
            "incomplete by the content filter is content_filter",
            vec![
                text_delta("Once upon"),
                incomplete(json!("content_filter"), usage.clone()),
            ],
            false,
            vec![
                token("Once upon"),
                finish(FinishReason::ContentFilter, &usage),
            ],
        ),
        case(
            "incomplete for another reason is no success",
            vec![
                text_delta("x"),
                incomplete(json!("max_tool_calls"), usage.clone()),
            ],
            false,
            vec![
                token("x"),
                upstream_error(
                    "the upstream ended the response incomplete, for the reason `max_tool_calls`",
                ),
            ],
        ),
        case(
            "incomplete without a reason is no success",
            vec![terminal(
                "response.incomplete",
                "incomplete",
                json!({"incomplete_details": null}),
            )],
            false,
            vec![upstream_error(
                "the upstream ended the response incomplete without saying why",
            )],
        ),
        case(
            "a stream cut mid text is disconnected",
            vec![text_delta("Hel")],
            true,
            vec![token("Hel"), disconnected()],
        ),
        case(
            "a stream cut mid tool call is disconnected, not tool_calls",
            vec![
                call_added(0, "fc_1", "call_a", "a"),
                arguments_delta(0, "fc_1", "{\"x\""),
                event(
                    "response.function_call_arguments.done",
                    json!({"item_id": "fc_1", "output_index": 0, "arguments": "{\"x\"}"}),
                ),
            ],
            true,
            vec![
                tool(0, Some("call_a"), Some("a"), None),
                tool(0, None, None, Some("{\"x\"")),
                disconnected(),
            ],
        ),
        case(
            "an empty stream is disconnected",
            vec![],
            true,
            vec![disconnected()],
        ),
        case(
            "only lifecycle events, then the end, is disconnected",
            vec![
                terminal("response.created", "in_progress", json!({"usage": null})),
                terminal(
                    "response.in_progress",
                    "in_progress",
                    json!({"usage": null}),
                ),
            ],
            true,
            vec![disconnected()],
        ),
        case(
            "a chat-style [DONE] is no terminal event",
            vec![text_delta("x"), raw("message", "[DONE]")],
            true,
            vec![token("x"), disconnected()],
        ),
    ]
}
