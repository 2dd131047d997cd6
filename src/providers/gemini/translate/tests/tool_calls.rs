//! Whole function calls: one event each, indexed per candidate, with
//! Gemini's id or one made from the response.

use super::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
        case(
            "a function call is one event, and STOP after it is tool_calls",
            vec![
                parts(
                    json!([{"functionCall": {"name": "get_weather", "args": {"city": "Paris", "unit": "c"}}}]),
                    "STOP",
                ),
                finished(
                    "STOP",
                    json!({"promptTokenCount": 20, "candidatesTokenCount": 5}),
                ),
            ],
            true,
            vec![
                tool(
                    0,
                    "call_r1_0",
                    "get_weather",
                    r#"{"city":"Paris","unit":"c"}"#,
                ),
                finish(
                    FinishReason::ToolCalls,
                    Some(usage(
                        20,
                        5,
                        json!({"promptTokenCount": 20, "candidatesTokenCount": 5}),
                    )),
                ),
            ],
        ),
        case(
            "several calls, in one response and the next, count from 0",
            vec![
                parts(json!([{"text": "Checking both."}]), ""),
                parts(
                    json!([
                        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "Cs0B"},
                        {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}
                    ]),
                    "",
                ),
                parts(
                    json!([{"functionCall": {"name": "get_time", "args": {}}}]),
                    "STOP",
                ),
            ],
            true,
            vec![
                token("Checking both."),
                tool(0, "call_r1_0", "get_weather", r#"{"city":"Paris"}"#),
                tool(1, "call_r1_1", "get_weather", r#"{"city":"Oslo"}"#),
                tool(2, "call_r1_2", "get_time", "{}"),
                finish(FinishReason::ToolCalls, None),
            ],
        ),
        case(
            "Gemini's own call id is kept; absent or null args are {}",
            vec![parts(
                json!([
                    {"functionCall": {"id": "fc-7", "name": "a", "args": {"x": [1, 2]}}},
                    {"functionCall": {"id": "", "name": "b"}},
                    {"functionCall": {"name": "c", "args": null}}
                ]),
                "STOP",
            )],
            true,
            vec![
                tool(0, "fc-7", "a", r#"{"x":[1,2]}"#),
                tool(1, "call_r1_1", "b", "{}"),
                tool(2, "call_r1_2", "c", "{}"),
                finish(FinishReason::ToolCalls, None),
            ],
        ),
        case(
            "without a responseId, made ids say gemini",
            vec![msg(
                r#"{"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {"q": "a b"}}}]}, "finishReason": "STOP"}]}"#,
            )],
            true,
            vec![
                tool(0, "call_gemini_0", "f", r#"{"q": "a b"}"#),
                finish(FinishReason::ToolCalls, None),
            ],
        ),
        case(
            "the first responseId names every call",
            vec![
                msg(
                    r#"{"candidates": [{"content": {"parts": [{"text": "x"}]}}], "responseId": "first"}"#,
                ),
                msg(
                    r#"{"candidates": [{"content": {"parts": [{"functionCall": {"name": "f"}}]}, "finishReason": "STOP"}], "responseId": "second"}"#,
                ),
            ],
            true,
            vec![
                token("x"),
                tool(0, "call_first_0", "f", "{}"),
                finish(FinishReason::ToolCalls, None),
            ],
        ),
        case(
            "each candidate counts its own calls, and names them apart",
            vec![response(&[
                candidate(
                    None,
                    json!([{"functionCall": {"name": "f", "args": {}}}]),
                    "STOP",
                ),
                candidate(
                    Some(1),
                    json!([{"functionCall": {"name": "g", "args": {}}}, {"functionCall": {"name": "h", "args": {}}}]),
                    "STOP",
                ),
            ])],
            true,
            vec![
                tool(0, "call_r1_0", "f", "{}"),
                tool_in(Some(1), 0, "call_r1_1_0", "g", "{}"),
                tool_in(Some(1), 1, "call_r1_1_1", "h", "{}"),
                finish(FinishReason::ToolCalls, None),
            ],
        ),
        case(
            "the reason is candidate 0's: a call in another candidate does not make it tool_calls",
            vec![response(&[
                candidate(None, json!([{"text": "no call"}]), "STOP"),
                candidate(
                    Some(1),
                    json!([{"functionCall": {"name": "g", "args": {}}}]),
                    "STOP",
                ),
            ])],
            true,
            vec![
                token("no call"),
                tool_in(Some(1), 0, "call_r1_1_0", "g", "{}"),
                stop(),
            ],
        ),
        case(
            "a call cut by the token limit ends as length",
            vec![parts(
                json!([{"functionCall": {"name": "f", "args": {}}}]),
                "MAX_TOKENS",
            )],
            true,
            vec![
                tool(0, "call_r1_0", "f", "{}"),
                finish(FinishReason::Length, None),
            ],
        ),
        case(
            "a call without a name is invalid data",
            vec![
                text("x"),
                parts(json!([{"functionCall": {"args": {"a": 1}}}]), "STOP"),
                text("late"),
            ],
            true,
            vec![
                token("x"),
                StreamEvent::error(
                    ErrorCode::InvalidUpstreamData,
                    format!("{NOT_JSON}a functionCall without a name"),
                ),
            ],
        ),
    ]
}
