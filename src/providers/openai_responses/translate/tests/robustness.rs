//! What is not an event: lifecycle and unknown events, unknown fields,
//! events without their `event:` line; and that no input makes it panic or
//! break the rules a client relies on.

use proptest::prelude::*;

use super::*;

pub(super) fn cases() -> Vec<Case> {
    let usage = usage(3, 1);
    vec![
        case(
            "lifecycle events are not events",
            vec![
                terminal("response.created", "in_progress", json!({"usage": null})),
                terminal(
                    "response.in_progress",
                    "in_progress",
                    json!({"usage": null}),
                ),
                terminal("response.queued", "queued", json!({})),
                event(
                    "response.output_item.added",
                    json!({"output_index": 0, "item": {"type": "message", "id": "msg_1", "role": "assistant", "content": []}}),
                ),
                event(
                    "response.content_part.added",
                    json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": ""}}),
                ),
                text_delta("x"),
                event(
                    "response.output_text.done",
                    json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "text": "x"}),
                ),
                event(
                    "response.content_part.done",
                    json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "x"}}),
                ),
            ],
            true,
            vec![token("x"), disconnected()],
        ),
        case(
            "unknown events are ignored, even when their data is not JSON",
            vec![
                raw("ping", "keep-alive"),
                raw("response.output_text.annotation.added", "{"),
                event(
                    "response.audio.delta",
                    json!({"delta": {"not": "a string"}, "sequence_number": 4}),
                ),
                event(
                    "response.custom_tool_call_input.delta",
                    json!({"item_id": "ct_1", "output_index": 0, "delta": "x"}),
                ),
                text_delta("y"),
            ],
            false,
            vec![token("y")],
        ),
        case(
            "unknown fields are ignored",
            vec![
                event(
                    "response.output_text.delta",
                    json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "x",
                           "logprobs": [{"token": "x", "logprob": -0.1}], "obfuscation": "a1b2", "sequence_number": 9}),
                ),
                terminal(
                    "response.completed",
                    "completed",
                    json!({"usage": usage, "tools": [], "reasoning": {"effort": null}, "metadata": {}}),
                ),
            ],
            false,
            vec![token("x"), finish(FinishReason::Stop, &usage)],
        ),
        case(
            "unnamed events are read by the type in their data",
            vec![
                unnamed(
                    "response.created",
                    json!({"response": {"id": "resp_1", "status": "in_progress"}}),
                ),
                unnamed(
                    "response.output_item.added",
                    json!({"output_index": 0, "item": {"type": "function_call", "id": "fc_1", "call_id": "call_a", "name": "a"}}),
                ),
                unnamed(
                    "response.function_call_arguments.delta",
                    json!({"item_id": "fc_1", "output_index": 0, "delta": "{}"}),
                ),
                unnamed("response.completed", json!({"response": {"usage": usage}})),
            ],
            false,
            vec![
                tool(0, Some("call_a"), Some("a"), None),
                tool(0, None, None, Some("{}")),
                finish(FinishReason::ToolCalls, &usage),
            ],
        ),
        case(
            "unnamed data without a known type, and empty data, are not events",
            vec![
                raw("message", ""),
                raw("message", " \n "),
                raw("message", r#"{"delta":"no type"}"#),
                raw("message", r#"{"type":"response.unknown","delta":"x"}"#),
                raw("message", r#"{"type":null}"#),
                text_delta("z"),
            ],
            false,
            vec![token("z")],
        ),
        case(
            "the event name says what an event is, whatever its data's type",
            vec![raw(
                "response.output_text.delta",
                r#"{"type":"response.completed","delta":"x","response":{"usage":null}}"#,
            )],
            false,
            vec![token("x")],
        ),
    ]
}

/// Event types worth generating: the ones read, a lifecycle one, one unknown.
const TYPES: [&str; 14] = [
    "response.output_text.delta",
    "response.refusal.delta",
    "response.reasoning_summary_text.delta",
    "response.reasoning_summary_part.added",
    "response.output_item.added",
    "response.output_item.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.completed",
    "response.incomplete",
    "response.failed",
    "error",
    "response.created",
    "response.whatever",
];

/// Data that reads as these events, with every field's value varied.
fn plausible() -> impl Strategy<Value = Value> {
    let id = prop_oneof![Just("fc_1"), Just("fc_2"), Just("rs_1")];
    let kind = prop_oneof![Just("function_call"), Just("reasoning"), Just("message")];
    let reason = prop_oneof![
        Just("max_output_tokens"),
        Just("content_filter"),
        Just("other")
    ];
    (
        "[a-z{}\":é]{0,6}",
        0u64..3,
        id,
        kind,
        reason,
        proptest::option::of(0u64..1000),
        any::<bool>(),
    )
        .prop_map(|(text, index, id, kind, reason, tokens, nested)| {
            let usage = tokens.map(|n| json!({"input_tokens": n, "output_tokens": n}));
            let mut data = json!({
                "delta": text, "item_id": id, "output_index": index, "arguments": text,
                "item": {"type": kind, "id": id, "call_id": text, "name": text, "arguments": text},
                "response": {"usage": usage, "incomplete_details": {"reason": reason},
                             "error": {"message": text, "code": null}},
                "message": text, "code": reason,
            });
            if nested {
                data["error"] = json!({"message": text, "type": reason});
            }
            data
        })
}

/// Anything at all: text, JSON of the wrong types, plausible events.
fn data() -> impl Strategy<Value = String> {
    let wrong = prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        Just(json!([1])),
        Just(json!({"x": 1}))
    ];
    prop_oneof![
        1 => "\\PC{0,40}",
        1 => (wrong, "[a-z_]{1,10}").prop_map(|(value, field)| json!({ field: value }).to_string()),
        6 => plausible().prop_map(|data| data.to_string()),
    ]
}

fn input() -> impl Strategy<Value = (String, String)> {
    (proptest::sample::select(&TYPES[..]), any::<bool>(), data()).prop_map(
        |(kind, unnamed, data)| {
            if !unnamed {
                return (kind.to_owned(), data);
            }
            match serde_json::from_str::<Value>(&data) {
                Ok(Value::Object(mut fields)) => {
                    fields.insert("type".to_owned(), Value::from(kind));
                    ("message".to_owned(), Value::Object(fields).to_string())
                }
                _ => ("message".to_owned(), data),
            }
        },
    )
}

proptest! {
    #[test]
    fn no_input_breaks_the_rules(inputs in proptest::collection::vec(input(), 0..24), end in any::<bool>()) {
        let mut translator = Translator::default();
        let mut out = Vec::new();
        for (event_type, data) in &inputs {
            translator.push(event_type, data, &mut out);
        }
        if end {
            translator.end(&mut out);
            prop_assert!(translator.is_done());
        }
        let terminals = out.iter().filter(|event| event.is_terminal()).count();
        prop_assert_eq!(terminals, usize::from(translator.is_done()));
        prop_assert!(!translator.is_done() || out.last().is_some_and(StreamEvent::is_terminal));
        let mut calls = 0;
        for event in &out {
            match event {
                StreamEvent::Token { token, .. } | StreamEvent::Reasoning { token, .. } => {
                    prop_assert!(!token.is_empty());
                }
                StreamEvent::ToolCall { index, id, name, arguments, .. } => {
                    if *index == calls {
                        calls += 1;
                    } else {
                        prop_assert!(*index < calls, "call {} before call {}", index, calls);
                        prop_assert!(id.is_none() && name.is_none());
                        prop_assert!(arguments.as_ref().is_some_and(|text| !text.is_empty()));
                    }
                }
                _ => {}
            }
        }
    }
}
