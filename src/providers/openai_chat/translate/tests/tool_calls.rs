//! Tool calls: fragments, ids and names once, parallel calls, several choices.

use super::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
        case(
            "tool call: first fragment, empty fragment, next fragments",
            vec![
                delta(
                    r#"{"tool_calls":[{"index":1,"id":"toolu_1","type":"function","function":{"name":"read_file","arguments":""}}]}"#,
                ),
                delta(r#"{"tool_calls":[{"index":1,"function":{"arguments":""}}]}"#),
                delta(r#"{"tool_calls":[{"index":1,"function":{}}]}"#),
                delta(r#"{"tool_calls":[{"index":1,"function":{"arguments":"{\"pa"}}]}"#),
                delta(r#"{"tool_calls":[{"index":1,"function":{"arguments":"th\": 1}"}}]}"#),
            ],
            false,
            vec![
                tool(1, Some("toolu_1"), Some("read_file"), None),
                tool(1, None, None, Some("{\"pa")),
                tool(1, None, None, Some("th\": 1}")),
            ],
        ),
        case(
            "tool call: id and name repeated on every fragment go out once",
            vec![
                delta(
                    r#"{"tool_calls":[{"index":0,"id":"c1","function":{"name":"f","arguments":"{"}}]}"#,
                ),
                delta(
                    r#"{"tool_calls":[{"index":0,"id":"c1","function":{"name":"f","arguments":"}"}}]}"#,
                ),
                delta(
                    r#"{"tool_calls":[{"index":0,"id":"c1","function":{"name":"f","arguments":""}}]}"#,
                ),
            ],
            false,
            vec![
                tool(0, Some("c1"), Some("f"), Some("{")),
                tool(0, None, None, Some("}")),
            ],
        ),
        case(
            "tool call: a name arriving after the id is still sent, once",
            vec![
                delta(r#"{"tool_calls":[{"index":0,"id":"c1","function":{"name":""}}]}"#),
                delta(r#"{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{}"}}]}"#),
            ],
            false,
            vec![
                tool(0, Some("c1"), None, None),
                tool(0, None, Some("f"), Some("{}")),
            ],
        ),
        case(
            "parallel tool calls in one delta",
            vec![
                delta(
                    r#"{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":""}},{"index":1,"id":"b","function":{"name":"g","arguments":"{}"}}]}"#,
                ),
                delta(r#"{"tool_calls":[{"index":0,"function":{"arguments":"[]"}}]}"#),
            ],
            false,
            vec![
                tool(0, Some("a"), Some("f"), None),
                tool(1, Some("b"), Some("g"), Some("{}")),
                tool(0, None, None, Some("[]")),
            ],
        ),
        case(
            "tool call without index: its position in the array",
            vec![delta(
                r#"{"tool_calls":[{"id":"c","function":{"name":"h"}},{"id":"d","function":{"name":"k"}}]}"#,
            )],
            false,
            vec![
                tool(0, Some("c"), Some("h"), None),
                tool(1, Some("d"), Some("k"), None),
            ],
        ),
        case(
            "legacy function_call is tool call 0",
            vec![
                delta(r#"{"function_call":{"name":"f","arguments":""}}"#),
                delta(r#"{"function_call":{"arguments":"{\"a\":1}"}}"#),
                delta(r#"{"function_call":{"arguments":""}}"#),
                finish_chunk("function_call"),
                done(),
            ],
            false,
            vec![
                tool(0, None, Some("f"), None),
                tool(0, None, None, Some("{\"a\":1}")),
                finish(FinishReason::ToolCalls, None),
            ],
        ),
        case(
            "n>1: choices other than 0 are tagged; tool calls tracked per choice",
            vec![
                choice(1, r#"{"role":"assistant","content":"b"}"#, "null"),
                choice(0, r#"{"content":"a"}"#, "null"),
                choice(2, r#"{"reasoning_content":"r"}"#, "null"),
                choice(
                    1,
                    r#"{"tool_calls":[{"index":0,"id":"x","function":{"name":"f","arguments":"1"}}]}"#,
                    "null",
                ),
                choice(
                    0,
                    r#"{"tool_calls":[{"index":0,"id":"y","function":{"name":"g"}}]}"#,
                    "null",
                ),
            ],
            false,
            vec![
                token_in(1, "b"),
                token("a"),
                reasoning_in(2, "r"),
                tool_in(Some(1), 0, Some("x"), Some("f"), Some("1")),
                tool(0, Some("y"), Some("g"), None),
            ],
        ),
    ]
}
