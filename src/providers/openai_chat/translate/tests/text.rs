//! Answer text, refusals and reasoning, in every shape providers send them.

use super::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
        case(
            "content string",
            vec![
                delta(r#"{"role":"assistant","content":"Hel"}"#),
                delta(r#"{"content":"lo"}"#),
                finish_chunk("stop"),
                done(),
            ],
            false,
            vec![token("Hel"), token("lo"), stop()],
        ),
        case(
            "escaped content is unescaped",
            vec![delta(r#"{"content":"a\n\"b\" \u00e9\ud83d\ude0a"}"#)],
            false,
            vec![token("a\n\"b\" é😊")],
        ),
        case(
            "content parts: text, thinking array, thinking string; others ignored",
            vec![delta(
                r#"{"content":[{"type":"text","text":"Hi"},{"type":"thinking","thinking":[{"type":"text","text":"hmm"},{"type":"signature","text":"sig"}]},{"type":"thinking","thinking":"plain"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":""},{"type":"thinking","thinking":[]},{"type":"thinking","thinking":null},{"type":"reference","text":"r"}]}"#,
            )],
            false,
            vec![token("Hi"), reasoning("hmm"), reasoning("plain")],
        ),
        case(
            "refusal",
            vec![delta(r#"{"content":null,"refusal":"I can't help."}"#)],
            false,
            vec![refusal("I can't help.")],
        ),
        case(
            "reasoning_content",
            vec![delta(r#"{"content":"","reasoning_content":"think"}"#)],
            false,
            vec![reasoning("think")],
        ),
        case(
            "reasoning",
            vec![delta(r#"{"reasoning":"think","channel":"analysis"}"#)],
            false,
            vec![reasoning("think")],
        ),
        case(
            "reasoning_details never doubles reasoning",
            vec![
                delta(
                    r#"{"reasoning":"a","reasoning_details":[{"type":"reasoning.text","text":"a","index":0}]}"#,
                ),
                delta(
                    r#"{"reasoning":null,"reasoning_details":[{"type":"reasoning.text","text":"","signature":"s"}]}"#,
                ),
            ],
            false,
            vec![reasoning("a")],
        ),
        case(
            "reasoning_content and reasoning carrying the same text emit once",
            vec![delta(r#"{"reasoning_content":"x","reasoning":"x"}"#)],
            false,
            vec![reasoning("x")],
        ),
        case(
            "within a delta: reasoning, content, refusal, tool calls",
            vec![delta(
                r#"{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}],"refusal":"r","content":"c","reasoning_content":"t"}"#,
            )],
            false,
            vec![
                reasoning("t"),
                token("c"),
                refusal("r"),
                tool(0, Some("c1"), Some("f"), Some("{}")),
            ],
        ),
    ]
}
