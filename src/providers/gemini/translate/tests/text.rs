//! Text and thought summaries, in one candidate and in several.

use super::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
        case(
            "text parts are tokens, in order",
            vec![
                text("The"),
                text(" capital"),
                parts(json!([{"text": " is Paris."}]), "STOP"),
            ],
            true,
            vec![token("The"), token(" capital"), token(" is Paris."), stop()],
        ),
        case(
            "thought parts are reasoning, their signatures nothing",
            vec![
                thought("**Planning**\n\n"),
                parts(
                    json!([{"text": "Hi", "thoughtSignature": "CiIB0e2Kb6Syj1a961Ef"}]),
                    "",
                ),
                parts(
                    json!([{"text": "", "thought": true, "thoughtSignature": "Cs0B"}]),
                    "",
                ),
                parts(json!([{"thoughtSignature": "Cs0B"}]), "STOP"),
            ],
            true,
            vec![reasoning("**Planning**\n\n"), token("Hi"), stop()],
        ),
        case(
            "`thought: false` is answer text",
            vec![parts(json!([{"text": "x", "thought": false}]), "")],
            false,
            vec![token("x")],
        ),
        case(
            "several parts of one response keep their order",
            vec![parts(
                json!([{"text": "a", "thought": true}, {"text": "b"}, {"text": "c", "thought": true}]),
                "",
            )],
            false,
            vec![reasoning("a"), token("b"), reasoning("c")],
        ),
        case(
            "empty text, missing parts and missing content are not events",
            vec![
                parts(json!([{"text": ""}]), ""),
                parts(json!(null), ""),
                parts(json!([]), ""),
                response(&[json!({"index": 0})]),
                response(&[json!({"content": null})]),
                response(&[json!({"content": {"role": "model"}})]),
                response(&[]),
            ],
            false,
            vec![],
        ),
        case(
            "parts Gemini makes for other tools or other modalities are skipped",
            vec![parts(
                json!([
                    {"inlineData": {"mimeType": "image/png", "data": "iVBO"}},
                    {"executableCode": {"language": "PYTHON", "code": "print(1)"}},
                    {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "1"}},
                    {"text": "done"}
                ]),
                "",
            )],
            false,
            vec![token("done")],
        ),
        case(
            "multi-byte text passes whole",
            vec![text("23 °C, 晴れ 🌤")],
            false,
            vec![token("23 °C, 晴れ 🌤")],
        ),
        case(
            "candidates other than the first are tagged with their index",
            vec![
                response(&[
                    candidate(None, json!([{"text": "A", "thought": true}]), ""),
                    candidate(Some(1), json!([{"text": "B", "thought": true}]), ""),
                ]),
                response(&[
                    candidate(Some(0), json!([{"text": "one"}]), "STOP"),
                    candidate(Some(1), json!([{"text": "two"}]), ""),
                ]),
                response(&[candidate(Some(1), json!([{"text": " more"}]), "MAX_TOKENS")]),
            ],
            true,
            vec![
                reasoning("A"),
                reasoning_in(Some(1), "B"),
                token("one"),
                token_in(Some(1), "two"),
                token_in(Some(1), " more"),
                stop(),
            ],
        ),
    ]
}
