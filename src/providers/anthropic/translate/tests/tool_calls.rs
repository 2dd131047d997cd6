//! Tool calls: numbered by the order they start, not by content block,
//! id and name first, argument fragments after, several in one answer.

use super::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
        case(
            "a tool call after text is call 0, though block 1",
            vec![
                started(),
                text_start(0),
                text_delta(0, "Checking."),
                block_stop(0),
                tool_start(1, "toolu_1", "get_weather"),
                json_delta(1, ""),
                json_delta(1, "{\"locati"),
                json_delta(1, "on\": \"Paris\"}"),
                block_stop(1),
                stopped("tool_use"),
                message_stop(),
            ],
            false,
            vec![
                token("Checking."),
                tool(0, Some("toolu_1"), Some("get_weather"), None),
                tool(0, None, None, Some("{\"locati")),
                tool(0, None, None, Some("on\": \"Paris\"}")),
                finished(FinishReason::ToolCalls),
            ],
        ),
        case(
            "parallel tool calls count 0, 1, 2 in the order they start",
            vec![
                started(),
                thinking_start(0),
                thinking_delta(0, "Three cities."),
                signature_delta(0),
                block_stop(0),
                tool_start(1, "toolu_a", "weather"),
                json_delta(1, "{\"city\": \"Paris\"}"),
                block_stop(1),
                tool_start(2, "toolu_b", "weather"),
                json_delta(2, "{\"city\":"),
                json_delta(2, " \"Oslo\"}"),
                block_stop(2),
                tool_start(3, "toolu_c", "time"),
                block_stop(3),
                stopped("tool_use"),
                message_stop(),
            ],
            false,
            vec![
                reasoning("Three cities."),
                tool(0, Some("toolu_a"), Some("weather"), None),
                tool(0, None, None, Some("{\"city\": \"Paris\"}")),
                tool(1, Some("toolu_b"), Some("weather"), None),
                tool(1, None, None, Some("{\"city\":")),
                tool(1, None, None, Some(" \"Oslo\"}")),
                tool(2, Some("toolu_c"), Some("time"), None),
                finished(FinishReason::ToolCalls),
            ],
        ),
        case(
            "fragments of interleaved blocks go to their own calls",
            vec![
                tool_start(0, "toolu_a", "f"),
                tool_start(1, "toolu_b", "g"),
                json_delta(1, "{\"b\":1}"),
                json_delta(0, "{\"a\":1}"),
            ],
            false,
            vec![
                tool(0, Some("toolu_a"), Some("f"), None),
                tool(1, Some("toolu_b"), Some("g"), None),
                tool(1, None, None, Some("{\"b\":1}")),
                tool(0, None, None, Some("{\"a\":1}")),
            ],
        ),
        case(
            "a server tool between client tools takes no number",
            vec![
                tool_start(0, "toolu_a", "f"),
                block_start(
                    1,
                    json!({"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}),
                ),
                json_delta(1, "{\"query\":\"x\"}"),
                tool_start(2, "toolu_b", "g"),
                json_delta(2, "{}"),
            ],
            false,
            vec![
                tool(0, Some("toolu_a"), Some("f"), None),
                tool(1, Some("toolu_b"), Some("g"), None),
                tool(1, None, None, Some("{}")),
            ],
        ),
        case(
            "input given whole at the start goes out with the id and name",
            vec![block_start(
                0,
                json!({"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"x": [1, 2]}}),
            )],
            false,
            vec![tool(0, Some("toolu_1"), Some("f"), Some("{\"x\":[1,2]}"))],
        ),
        case(
            "padded empty input is no arguments",
            vec![(
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"f","input":{ }}}"#
                    .to_owned(),
            )],
            false,
            vec![tool(0, Some("toolu_1"), Some("f"), None)],
        ),
        case(
            "input fragments of an unknown block belong to no call",
            vec![tool_start(0, "toolu_1", "f"), json_delta(5, "{\"x\":1}")],
            false,
            vec![tool(0, Some("toolu_1"), Some("f"), None)],
        ),
        case(
            "a tool call cut by max_tokens keeps its partial arguments and ends as length",
            vec![
                started(),
                tool_start(0, "toolu_1", "make_file"),
                json_delta(0, "{\"filename\": \"tax"),
                message_delta("max_tokens", r#"{"output_tokens":5}"#),
            ],
            true,
            vec![
                tool(0, Some("toolu_1"), Some("make_file"), None),
                tool(0, None, None, Some("{\"filename\": \"tax")),
                finished(FinishReason::Length),
            ],
        ),
    ]
}
