//! Answer text, refusals and reasoning: what a client shows as it streams.

use super::*;

fn summary_part_added(item_id: &str, summary_index: u64) -> Input {
    event(
        "response.reasoning_summary_part.added",
        json!({"item_id": item_id, "output_index": 0, "summary_index": summary_index,
               "part": {"type": "summary_text", "text": ""}}),
    )
}

fn reasoning_item_added(output_index: u64, item_id: &str) -> Input {
    event(
        "response.output_item.added",
        json!({"output_index": output_index, "item": {"type": "reasoning", "id": item_id, "summary": []}}),
    )
}

pub(super) fn cases() -> Vec<Case> {
    let usage = usage(12, 5);
    vec![
        case(
            "text deltas in order, then the finish with usage",
            vec![
                text_delta("Hel"),
                text_delta("lo, "),
                text_delta("wörld 👋"),
                completed(usage.clone()),
            ],
            false,
            vec![
                token("Hel"),
                token("lo, "),
                token("wörld 👋"),
                finish(FinishReason::Stop, &usage),
            ],
        ),
        case(
            "escapes in deltas are decoded",
            vec![text_delta("a\n\"b\"\t\\ \u{e9}")],
            false,
            vec![token("a\n\"b\"\t\\ é")],
        ),
        case(
            "a refusal is text marked as one",
            vec![
                event(
                    "response.content_part.added",
                    json!({"item_id": "msg_1", "output_index": 0, "content_index": 0,
                           "part": {"type": "refusal", "refusal": ""}}),
                ),
                event(
                    "response.refusal.delta",
                    json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "I can't"}),
                ),
                event(
                    "response.refusal.delta",
                    json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": " help."}),
                ),
                event(
                    "response.refusal.done",
                    json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "refusal": "I can't help."}),
                ),
                completed(usage.clone()),
            ],
            false,
            vec![
                refusal("I can't"),
                refusal(" help."),
                finish(FinishReason::Stop, &usage),
            ],
        ),
        case(
            "reasoning summary, then the answer",
            vec![
                reasoning_item_added(0, "rs_1"),
                summary_part_added("rs_1", 0),
                reasoning_delta("**Thinking**\n\nThe user"),
                reasoning_delta(" greets."),
                event(
                    "response.reasoning_summary_text.done",
                    json!({"item_id": "rs_1", "output_index": 0, "summary_index": 0, "text": "**Thinking**\n\nThe user greets."}),
                ),
                text_delta("Hi!"),
            ],
            false,
            vec![
                reasoning("**Thinking**\n\nThe user"),
                reasoning(" greets."),
                token("Hi!"),
            ],
        ),
        case(
            "summary parts of one item are set apart by a blank line",
            vec![
                reasoning_item_added(0, "rs_1"),
                summary_part_added("rs_1", 0),
                reasoning_delta("First."),
                summary_part_added("rs_1", 1),
                reasoning_delta("Second"),
                reasoning_delta(" part."),
                summary_part_added("rs_1", 2),
                reasoning_delta("Third."),
            ],
            false,
            vec![
                reasoning("First."),
                reasoning("\n\n"),
                reasoning("Second"),
                reasoning(" part."),
                reasoning("\n\n"),
                reasoning("Third."),
            ],
        ),
        case(
            "so are two reasoning items, but an empty part adds nothing",
            vec![
                reasoning_item_added(0, "rs_1"),
                summary_part_added("rs_1", 0),
                reasoning_delta("One."),
                summary_part_added("rs_1", 1),
                reasoning_item_added(1, "rs_2"),
                summary_part_added("rs_2", 0),
                reasoning_delta("Two."),
            ],
            false,
            vec![reasoning("One."), reasoning("\n\n"), reasoning("Two.")],
        ),
        case(
            "raw reasoning text (open-weight models) is reasoning too",
            vec![
                reasoning_item_added(0, "rs_1"),
                event(
                    "response.reasoning_text.delta",
                    json!({"item_id": "rs_1", "output_index": 0, "content_index": 0, "delta": "Let me think"}),
                ),
                text_delta("4"),
            ],
            false,
            vec![reasoning("Let me think"), token("4")],
        ),
        case(
            "encrypted reasoning never becomes text",
            vec![
                event(
                    "response.output_item.done",
                    json!({"output_index": 0, "item": {"type": "reasoning", "id": "rs_1",
                           "encrypted_content": "gAAAAABo-secret", "summary": []}}),
                ),
                text_delta("ok"),
            ],
            false,
            vec![token("ok")],
        ),
        case(
            "empty and null deltas are not events",
            vec![
                text_delta(""),
                reasoning_delta(""),
                event("response.output_text.delta", json!({"delta": null})),
                event("response.refusal.delta", json!({})),
                text_delta("x"),
            ],
            false,
            vec![token("x")],
        ),
    ]
}
