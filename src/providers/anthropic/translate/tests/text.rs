//! Text and thinking: deltas in order, initial block text, and what never
//! shows (signatures, redacted thinking, empty deltas).

use super::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
        case(
            "text deltas become tokens, the finish waits for message_stop",
            vec![
                started(),
                text_start(0),
                ping(),
                text_delta(0, "Hel"),
                text_delta(0, "lo"),
                block_stop(0),
                stopped("end_turn"),
                message_stop(),
            ],
            false,
            vec![token("Hel"), token("lo"), finished(FinishReason::Stop)],
        ),
        case(
            "text a block starts with is a token",
            vec![
                started(),
                block_start(0, json!({"type": "text", "text": "Hi"})),
                text_delta(0, " there"),
            ],
            false,
            vec![token("Hi"), token(" there")],
        ),
        case(
            "thinking deltas are reasoning, the signature is nothing",
            vec![
                started(),
                thinking_start(0),
                thinking_delta(0, "Let me"),
                thinking_delta(0, " think."),
                signature_delta(0),
                block_stop(0),
                text_start(1),
                text_delta(1, "42"),
                block_stop(1),
                stopped("end_turn"),
                message_stop(),
            ],
            false,
            vec![
                reasoning("Let me"),
                reasoning(" think."),
                token("42"),
                finished(FinishReason::Stop),
            ],
        ),
        case(
            "thinking a block starts with is reasoning",
            vec![block_start(
                0,
                json!({"type": "thinking", "thinking": "Hmm", "signature": ""}),
            )],
            false,
            vec![reasoning("Hmm")],
        ),
        case(
            "redacted thinking shows nothing",
            vec![
                started(),
                block_start(
                    0,
                    json!({"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"}),
                ),
                block_stop(0),
                text_start(1),
                text_delta(1, "Done."),
            ],
            false,
            vec![token("Done.")],
        ),
        case(
            "empty deltas are not events",
            vec![
                started(),
                text_start(0),
                text_delta(0, ""),
                thinking_delta(0, ""),
                block_delta(0, json!({"type": "text_delta"})),
                block_delta(0, json!({"type": "text_delta", "text": null})),
                block_delta(0, json!({"type": "thinking_delta", "thinking": null})),
            ],
            false,
            vec![],
        ),
        case(
            "citations annotate text already sent",
            vec![
                started(),
                text_start(0),
                text_delta(0, "The sky is blue."),
                block_delta(
                    0,
                    json!({"type": "citations_delta", "citation": {"type": "char_location", "cited_text": "blue", "document_index": 0, "start_char_index": 0, "end_char_index": 4}}),
                ),
            ],
            false,
            vec![token("The sky is blue.")],
        ),
        case(
            "server tool blocks and their results are not text",
            vec![
                started(),
                block_start(
                    0,
                    json!({"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}),
                ),
                json_delta(0, "{\"query\": \"weather\"}"),
                block_stop(0),
                block_start(
                    1,
                    json!({"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [{"type": "web_search_result", "title": "x", "url": "https://example.com"}]}),
                ),
                block_stop(1),
                text_start(2),
                text_delta(2, "Sunny."),
            ],
            false,
            vec![token("Sunny.")],
        ),
        case(
            "multi-byte text passes whole",
            vec![
                text_start(0),
                text_delta(0, "°C 雨 🌧"),
                text_delta(0, "\n\"q\""),
            ],
            false,
            vec![token("°C 雨 🌧"), token("\n\"q\"")],
        ),
    ]
}
