//! Finish reasons, held until the body ends so that the last usage is in
//! them, and the streams that end without one.

use super::*;

pub(super) fn cases() -> Vec<Case> {
    let thinking = json!({
        "promptTokenCount": 34, "candidatesTokenCount": 469, "totalTokenCount": 1290,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 34}], "thoughtsTokenCount": 787
    });
    vec![
        case(
            "the finish waits for the end of the body, with the last usage",
            vec![
                msg(
                    r#"{"candidates": [{"content": {"parts": [{"text": "Hi"}]}}], "usageMetadata": {"promptTokenCount": 15, "totalTokenCount": 15}}"#,
                ),
                finished(
                    "STOP",
                    json!({"promptTokenCount": 13, "candidatesTokenCount": 8}),
                ),
            ],
            true,
            vec![
                token("Hi"),
                finish(
                    FinishReason::Stop,
                    Some(usage(
                        13,
                        8,
                        json!({"promptTokenCount": 13, "candidatesTokenCount": 8}),
                    )),
                ),
            ],
        ),
        case(
            "the finish is not sent before the body ends",
            vec![finished("STOP", json!({"promptTokenCount": 1}))],
            false,
            vec![],
        ),
        case(
            "thinking tokens count as completion tokens",
            vec![finished("STOP", thinking.clone())],
            true,
            vec![finish(
                FinishReason::Stop,
                Some(usage(34, 469 + 787, thinking)),
            )],
        ),
        case(
            "usage sent after the finishReason still counts",
            vec![
                finished("STOP", json!({"promptTokenCount": 3})),
                msg(
                    r#"{"usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2}, "responseId": "r1"}"#,
                ),
            ],
            true,
            vec![finish(
                FinishReason::Stop,
                Some(usage(
                    3,
                    2,
                    json!({"promptTokenCount": 3, "candidatesTokenCount": 2}),
                )),
            )],
        ),
        case(
            "a finish without usage has none",
            vec![
                parts(json!([{"text": "x"}]), "STOP"),
                msg(r#"{"usageMetadata": null}"#),
            ],
            true,
            vec![token("x"), stop()],
        ),
        case(
            "MAX_TOKENS is length",
            vec![
                text("The"),
                finished("MAX_TOKENS", json!({"candidatesTokenCount": 1})),
            ],
            true,
            vec![
                token("The"),
                finish(
                    FinishReason::Length,
                    Some(usage(0, 1, json!({"candidatesTokenCount": 1}))),
                ),
            ],
        ),
        case(
            "a safety stop keeps the text before it",
            vec![
                text("Once upon"),
                response(&[json!({
                    "finishReason": "SAFETY",
                    "index": 0,
                    "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true}]
                })]),
            ],
            true,
            vec![
                token("Once upon"),
                finish(FinishReason::ContentFilter, None),
            ],
        ),
        case(
            "a blocked prompt is content_filter, with its usage",
            vec![msg(
                r#"{"promptFeedback": {"blockReason": "PROHIBITED_CONTENT", "safetyRatings": []}, "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}, "modelVersion": "gemini-2.5-flash"}"#,
            )],
            true,
            vec![finish(
                FinishReason::ContentFilter,
                Some(usage(
                    9,
                    0,
                    json!({"promptTokenCount": 9, "totalTokenCount": 9}),
                )),
            )],
        ),
        case(
            "prompt feedback without a block reason blocks nothing",
            vec![msg(r#"{"promptFeedback": {"safetyRatings": []}}"#)],
            true,
            vec![disconnected()],
        ),
        case(
            "a stream that ends before its finishReason is cut",
            vec![text("The"), text(" capital")],
            true,
            vec![token("The"), token(" capital"), disconnected()],
        ),
        case("an empty body is cut", vec![], true, vec![disconnected()]),
        case(
            "usage alone is not a finish",
            vec![msg(r#"{"usageMetadata": {"promptTokenCount": 5}}"#)],
            true,
            vec![disconnected()],
        ),
        case(
            "every candidate must finish: one still open is a cut stream",
            vec![response(&[
                candidate(None, json!([{"text": "a"}]), "STOP"),
                candidate(Some(1), json!([{"text": "b"}]), ""),
            ])],
            true,
            vec![token("a"), token_in(Some(1), "b"), disconnected()],
        ),
        case(
            "without candidate 0, the lowest index seen gives the reason",
            vec![response(&[candidate(
                Some(2),
                json!([{"text": "b"}]),
                "MAX_TOKENS",
            )])],
            true,
            vec![token_in(Some(2), "b"), finish(FinishReason::Length, None)],
        ),
        case(
            "a reason outside the table is an upstream error naming it, with its message",
            vec![
                text("x"),
                response(&[json!({
                    "finishReason": "MALFORMED_FUNCTION_CALL",
                    "finishMessage": "Malformed function call: print(default_api.f(x=))",
                    "index": 0
                })]),
                text("late"),
            ],
            true,
            vec![
                token("x"),
                upstream_error(
                    "the upstream ended the generation with finishReason `MALFORMED_FUNCTION_CALL`: Malformed function call: print(default_api.f(x=))",
                ),
            ],
        ),
    ]
}

#[test]
fn finish_reasons_are_mapped() {
    let table = [
        ("STOP", Some(FinishReason::Stop)),
        ("MAX_TOKENS", Some(FinishReason::Length)),
        ("SAFETY", Some(FinishReason::ContentFilter)),
        ("RECITATION", Some(FinishReason::ContentFilter)),
        ("BLOCKLIST", Some(FinishReason::ContentFilter)),
        ("PROHIBITED_CONTENT", Some(FinishReason::ContentFilter)),
        ("SPII", Some(FinishReason::ContentFilter)),
        ("IMAGE_SAFETY", Some(FinishReason::ContentFilter)),
        ("LANGUAGE", Some(FinishReason::ContentFilter)),
        ("MALFORMED_FUNCTION_CALL", None),
        ("UNEXPECTED_TOOL_CALL", None),
        ("OTHER", None),
        ("FINISH_REASON_UNSPECIFIED", None),
        ("TOO_MANY_TOOL_CALLS", None),
        ("stop", None),
    ];
    let failures: Vec<String> = table
        .iter()
        .filter_map(|&(raw, expected)| {
            let (got, translator) = run(&[finished(raw, json!(null))], true);
            let expected = vec![match expected {
                Some(reason) => finish(reason, None),
                None => upstream_error(&format!(
                    "the upstream ended the generation with finishReason `{raw}`"
                )),
            }];
            (as_json(&got) != as_json(&expected) || !translator.is_done())
                .then(|| format!("{raw}: got {got:?}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
