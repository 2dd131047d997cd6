//! What is not an event: pings, unknown events and fields, blank data,
//! anything after the end; and no input at all makes the translator panic.

use proptest::prelude::*;

use super::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
        case(
            "pings and unknown named events are not parsed",
            vec![
                ("ping", "not json".to_owned()),
                ("content_block_stop", "{".to_owned()),
                ("message_batch_progress", "[1]".to_owned()),
                text_start(0),
                text_delta(0, "x"),
            ],
            false,
            vec![token("x")],
        ),
        case(
            "unnamed events go by their type",
            vec![
                unnamed(started()),
                unnamed(ping()),
                unnamed(text_start(0)),
                unnamed(text_delta(0, "x")),
                unnamed(block_stop(0)),
                ("message", json!({"type": "something_new", "delta": {"text": "no"}}).to_string()),
                ("message", json!({"delta": {"type": "text_delta", "text": "untyped"}}).to_string()),
                unnamed(stopped("end_turn")),
                unnamed(message_stop()),
            ],
            false,
            vec![token("x"), finished(FinishReason::Stop)],
        ),
        case(
            "blank data is ignored",
            vec![("message", String::new()), ("content_block_delta", " \n ".to_owned()), text_delta(0, "x")],
            false,
            vec![token("x")],
        ),
        case(
            "unknown fields, blocks and deltas are ignored",
            vec![
                (
                    "message_start",
                    json!({"type": "message_start", "message": {"id": "m", "container": {"id": "c"}, "content": [], "usage": null}, "extra": true})
                        .to_string(),
                ),
                block_start(0, json!({"type": "container_upload", "file_id": "f"})),
                block_delta(0, json!({"type": "some_new_delta", "text": "no"})),
                block_delta(0, json!({"text": "untyped"})),
                ("content_block_start", json!({"type": "content_block_start", "index": 1}).to_string()),
                ("content_block_delta", json!({"type": "content_block_delta", "index": 1}).to_string()),
                ("message_delta", json!({"type": "message_delta"}).to_string()),
                text_start(2),
                text_delta(2, "x"),
            ],
            false,
            vec![token("x")],
        ),
        case(
            "after a finish, nothing more",
            vec![
                started(),
                stopped("end_turn"),
                message_stop(),
                text_delta(0, "late"),
                error_event("api_error", "late"),
                message_stop(),
            ],
            true,
            vec![finished(FinishReason::Stop)],
        ),
        case(
            "after an error, nothing more",
            vec![
                error_event("api_error", "boom"),
                text_delta(0, "late"),
                stopped("end_turn"),
                message_stop(),
            ],
            true,
            vec![upstream_error("boom (api_error)")],
        ),
    ]
}

/// Event types the translator reads, and some it does not.
const EVENT_TYPES: [&str; 10] = [
    "message",
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "ping",
    "error",
    "",
];

/// Data that is almost right: real event shapes with values swapped for
/// others, cut short, or with big numbers.
fn near_miss() -> impl Strategy<Value = String> {
    let templates = [
        started().1,
        tool_start(3, "toolu_1", "f").1,
        json_delta(3, "{\"a\":").1,
        text_delta(0, "x").1,
        message_delta("end_turn", r#"{"output_tokens":18446744073709551615}"#).1,
        error_event("overloaded_error", "Overloaded").1,
    ];
    (
        proptest::sample::select(templates.to_vec()),
        any::<usize>(),
        "[\\[\\]{}\":,0-9a-z\\\\ -]{0,12}",
    )
        .prop_map(|(template, at, insert)| {
            let mut at = at % (template.len() + 1);
            while !template.is_char_boundary(at) {
                at -= 1;
            }
            format!("{}{insert}", &template[..at])
        })
}

proptest! {
    #[test]
    fn no_input_makes_it_panic_or_speak_after_the_end(
        events in proptest::collection::vec(
            (proptest::sample::select(EVENT_TYPES.to_vec()), prop_oneof![any::<String>(), near_miss()]),
            0..24,
        ),
        end in any::<bool>(),
    ) {
        let mut translator = Translator::default();
        let mut out = Vec::new();
        for (event_type, data) in &events {
            let was_done = translator.is_done();
            let before = out.len();
            translator.push(event_type, data, &mut out);
            prop_assert!(!was_done || out.len() == before, "an event after the end");
        }
        if end {
            translator.end(&mut out);
            prop_assert!(translator.is_done());
        }
        let terminals = out.iter().filter(|event| event.is_terminal()).count();
        prop_assert!(terminals <= 1);
        prop_assert_eq!(terminals == 1, translator.is_done());
        prop_assert!(out.last().is_none_or(|last| last.is_terminal() || !translator.is_done()));
        for event in &out {
            let empty = matches!(
                event,
                StreamEvent::Token { token, .. } | StreamEvent::Reasoning { token, .. } if token.is_empty()
            );
            prop_assert!(!empty, "empty event {:?}", event);
        }
    }
}
