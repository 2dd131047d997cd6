//! Function calls: numbered in the order they start, `id` and `name` first,
//! argument fragments in order, whole arguments sent once when none streamed.

use super::*;

fn arguments_done(output_index: u64, item_id: &str, arguments: &str) -> Input {
    event(
        "response.function_call_arguments.done",
        json!({"item_id": item_id, "output_index": output_index, "arguments": arguments}),
    )
}

fn call_done(
    output_index: u64,
    item_id: &str,
    call_id: &str,
    name: &str,
    arguments: &str,
) -> Input {
    event(
        "response.output_item.done",
        json!({"output_index": output_index, "item": {
            "type": "function_call", "id": item_id, "call_id": call_id, "name": name,
            "arguments": arguments, "status": "completed"
        }}),
    )
}

pub(super) fn cases() -> Vec<Case> {
    let usage = usage(80, 30);
    vec![
        case(
            "one call streamed: id and name first, then fragments, then tool_calls",
            vec![
                call_added(0, "fc_1", "call_a", "get_weather"),
                arguments_delta(0, "fc_1", "{\"city\""),
                arguments_delta(0, "fc_1", ":\"Oslo\"}"),
                arguments_done(0, "fc_1", "{\"city\":\"Oslo\"}"),
                call_done(0, "fc_1", "call_a", "get_weather", "{\"city\":\"Oslo\"}"),
                completed(usage.clone()),
            ],
            false,
            vec![
                tool(0, Some("call_a"), Some("get_weather"), None),
                tool(0, None, None, Some("{\"city\"")),
                tool(0, None, None, Some(":\"Oslo\"}")),
                finish(FinishReason::ToolCalls, &usage),
            ],
        ),
        case(
            "calls after text and reasoning are numbered from 0, not by output index",
            vec![
                reasoning_delta("plan"),
                text_delta("Checking both."),
                call_added(2, "fc_1", "call_a", "weather"),
                arguments_delta(2, "fc_1", "{\"city\":\"Oslo\"}"),
                call_added(3, "fc_2", "call_b", "time"),
                arguments_delta(3, "fc_2", "{\"zone\":"),
                arguments_delta(3, "fc_2", "\"CET\"}"),
                completed(usage.clone()),
            ],
            false,
            vec![
                reasoning("plan"),
                token("Checking both."),
                tool(0, Some("call_a"), Some("weather"), None),
                tool(0, None, None, Some("{\"city\":\"Oslo\"}")),
                tool(1, Some("call_b"), Some("time"), None),
                tool(1, None, None, Some("{\"zone\":")),
                tool(1, None, None, Some("\"CET\"}")),
                finish(FinishReason::ToolCalls, &usage),
            ],
        ),
        case(
            "fragments of interleaved calls go to the call their item id names",
            vec![
                call_added(0, "fc_1", "call_a", "a"),
                call_added(1, "fc_2", "call_b", "b"),
                arguments_delta(1, "fc_2", "{\"y\":2}"),
                arguments_delta(0, "fc_1", "{\"x\":1}"),
            ],
            false,
            vec![
                tool(0, Some("call_a"), Some("a"), None),
                tool(1, Some("call_b"), Some("b"), None),
                tool(1, None, None, Some("{\"y\":2}")),
                tool(0, None, None, Some("{\"x\":1}")),
            ],
        ),
        case(
            "a fragment without an item id goes by its output index",
            vec![
                call_added(4, "fc_1", "call_a", "a"),
                event(
                    "response.function_call_arguments.delta",
                    json!({"output_index": 4, "delta": "{}"}),
                ),
                event(
                    "response.function_call_arguments.delta",
                    json!({"item_id": "fc_other", "output_index": 4, "delta": " "}),
                ),
            ],
            false,
            vec![
                tool(0, Some("call_a"), Some("a"), None),
                tool(0, None, None, Some("{}")),
                tool(0, None, None, Some(" ")),
            ],
        ),
        case(
            "arguments only in the done events are sent once",
            vec![
                call_added(0, "fc_1", "call_a", "a"),
                arguments_done(0, "fc_1", "{\"x\":1}"),
                call_done(0, "fc_1", "call_a", "a", "{\"x\":1}"),
                completed(usage.clone()),
            ],
            false,
            vec![
                tool(0, Some("call_a"), Some("a"), None),
                tool(0, None, None, Some("{\"x\":1}")),
                finish(FinishReason::ToolCalls, &usage),
            ],
        ),
        case(
            "arguments only in the item's done event are sent once",
            vec![
                call_added(0, "fc_1", "call_a", "a"),
                call_done(0, "fc_1", "call_a", "a", "{\"x\":1}"),
            ],
            false,
            vec![
                tool(0, Some("call_a"), Some("a"), None),
                tool(0, None, None, Some("{\"x\":1}")),
            ],
        ),
        case(
            "arguments that came with the added item go out with id and name",
            vec![
                event(
                    "response.output_item.added",
                    json!({"output_index": 0, "item": {"type": "function_call", "id": "fc_1",
                           "call_id": "call_a", "name": "a", "arguments": "{\"x\":1}"}}),
                ),
                arguments_done(0, "fc_1", "{\"x\":1}"),
                call_done(0, "fc_1", "call_a", "a", "{\"x\":1}"),
            ],
            false,
            vec![tool(0, Some("call_a"), Some("a"), Some("{\"x\":1}"))],
        ),
        case(
            "a call first seen whole at its done event is one event",
            vec![
                call_done(1, "fc_1", "call_a", "a", "{\"x\":1}"),
                completed(usage.clone()),
            ],
            false,
            vec![
                tool(0, Some("call_a"), Some("a"), Some("{\"x\":1}")),
                finish(FinishReason::ToolCalls, &usage),
            ],
        ),
        case(
            "an added item repeated is one call",
            vec![
                call_added(0, "fc_1", "call_a", "a"),
                call_added(0, "fc_1", "call_a", "a"),
                arguments_delta(0, "fc_1", "{}"),
            ],
            false,
            vec![
                tool(0, Some("call_a"), Some("a"), None),
                tool(0, None, None, Some("{}")),
            ],
        ),
        case(
            "without a call_id the item id stands in",
            vec![event(
                "response.output_item.added",
                json!({"output_index": 0, "item": {"type": "function_call", "id": "fc_1", "name": "a"}}),
            )],
            false,
            vec![tool(0, Some("fc_1"), Some("a"), None)],
        ),
        case(
            "fragments of a call never announced, and empty ones, are not events",
            vec![
                arguments_delta(0, "fc_ghost", "{\"x\":1}"),
                arguments_done(0, "fc_ghost", "{\"x\":1}"),
                call_added(1, "fc_1", "call_a", "a"),
                arguments_delta(1, "fc_1", ""),
                completed(usage.clone()),
            ],
            false,
            vec![
                tool(0, Some("call_a"), Some("a"), None),
                finish(FinishReason::ToolCalls, &usage),
            ],
        ),
        case(
            "other items (built-in tools, custom tools, messages) are not tool calls",
            vec![
                event(
                    "response.output_item.added",
                    json!({"output_index": 0, "item": {"type": "web_search_call", "id": "ws_1", "status": "in_progress"}}),
                ),
                event(
                    "response.output_item.added",
                    json!({"output_index": 1, "item": {"type": "custom_tool_call", "id": "ct_1", "call_id": "call_c", "name": "grammar", "input": ""}}),
                ),
                event(
                    "response.output_item.done",
                    json!({"output_index": 2, "item": {"type": "message", "id": "msg_1", "role": "assistant", "content": []}}),
                ),
                text_delta("done"),
                completed(usage.clone()),
            ],
            false,
            vec![token("done"), finish(FinishReason::Stop, &usage)],
        ),
    ]
}
