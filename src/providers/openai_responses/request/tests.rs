//! The request bodies built from whole chat requests, and what is refused.

use serde_json::{Value, json};

use super::body;
use crate::providers::conversation::Conversation;
use crate::request::ChatRequest;

fn build(request: Value) -> Result<Value, String> {
    let request = ChatRequest::from_json(request.to_string().as_bytes())
        .unwrap_or_else(|error| panic!("{error}"));
    let conversation =
        Conversation::read(request, super::UPSTREAM).map_err(|error| error.message())?;
    body(conversation, "gpt-5").map_err(|error| error.message())
}

/// A one-message request with `fields` added.
fn request(fields: &Value) -> Value {
    let mut request = json!({"model": "alias", "messages": [{"role": "user", "content": "Hi"}]});
    if let (Some(request), Some(fields)) = (request.as_object_mut(), fields.as_object()) {
        request.extend(fields.clone());
    }
    request
}

/// The body of that request.
fn with(fields: Value) -> Value {
    build(request(&fields)).unwrap_or_else(|error| panic!("{error}"))
}

#[test]
fn a_whole_conversation_becomes_instructions_and_input_items() {
    let body = build(json!({
        "model": "alias",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Use metric."},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather and time here?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg", "detail": "high"}}
            ]},
            {"role": "assistant", "content": "Looking.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "4°C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "09:00"}]},
            {"role": "assistant", "content": "4°C at 09:00."},
            {"role": "user", "content": "And tomorrow?"}
        ],
        "stream": true,
        "stream_options": {"include_usage": true}
    }))
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        body,
        json!({
            "model": "gpt-5",
            "stream": true,
            "store": false,
            "instructions": "Be brief.\n\nUse metric.",
            "input": [
                {"role": "user", "content": [
                    {"type": "input_text", "text": "Weather and time here?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBO", "detail": "auto"},
                    {"type": "input_image", "image_url": "https://example.com/a.jpg", "detail": "auto"}
                ]},
                {"role": "assistant", "content": [{"type": "output_text", "text": "Looking."}]},
                {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Oslo\"}"},
                {"type": "function_call", "call_id": "call_2", "name": "time", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "4°C"},
                {"type": "function_call_output", "call_id": "call_2", "output": "09:00"},
                {"role": "assistant", "content": [{"type": "output_text", "text": "4°C at 09:00."}]},
                {"role": "user", "content": [{"type": "input_text", "text": "And tomorrow?"}]}
            ]
        })
    );
}

#[test]
fn no_system_prompt_no_instructions_and_no_empty_assistant_message() {
    let body = build(json!({"messages": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ]},
        {"role": "tool", "tool_call_id": "c", "content": "done"}
    ]}))
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(body.get("instructions"), None);
    assert_eq!(
        body["input"],
        json!([
            {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "done"}
        ])
    );
}

#[test]
fn tools_are_flat_functions_not_strict_unless_asked() {
    let body = with(json!({
        "tools": [
            {"type": "function", "function": {"name": "weather", "description": "Weather now",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
            {"type": "function", "function": {"name": "ping"}},
            {"type": "function", "function": {"name": "exact", "strict": true,
             "parameters": {"type": "object", "properties": {}, "additionalProperties": false}}}
        ],
        "parallel_tool_calls": false
    }));
    assert_eq!(
        body["tools"],
        json!([
            {"type": "function", "name": "weather", "description": "Weather now", "strict": false,
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
            {"type": "function", "name": "ping", "strict": false,
             "parameters": {"type": "object", "properties": {}}},
            {"type": "function", "name": "exact", "strict": true,
             "parameters": {"type": "object", "properties": {}, "additionalProperties": false}}
        ])
    );
    assert_eq!(body["parallel_tool_calls"], json!(false));
    assert_eq!(with(json!({})).get("tools"), None);
}

#[test]
fn tool_choice_in_this_api_s_shape() {
    let cases = [
        (json!("auto"), json!("auto")),
        (json!("none"), json!("none")),
        (json!("required"), json!("required")),
        (
            json!({"type": "function", "function": {"name": "weather"}}),
            json!({"type": "function", "name": "weather"}),
        ),
    ];
    for (asked, sent) in cases {
        assert_eq!(
            with(json!({"tool_choice": asked}))["tool_choice"],
            sent,
            "{asked}"
        );
    }
    assert_eq!(with(json!({})).get("tool_choice"), None);
}

#[test]
fn sampling_settings_and_the_token_limit() {
    let body = with(json!({
        "max_tokens": 100, "temperature": 0.2, "top_p": 0.9, "user": "u-42"
    }));
    assert_eq!(body["max_output_tokens"], json!(100));
    assert_eq!(body["temperature"], json!(0.2));
    assert_eq!(body["top_p"], json!(0.9));
    assert_eq!(body["user"], json!("u-42"));
    let newer = with(json!({"max_tokens": 100, "max_completion_tokens": 300}));
    assert_eq!(newer["max_output_tokens"], json!(300));
    let plain = with(json!({}));
    for field in [
        "max_output_tokens",
        "temperature",
        "top_p",
        "user",
        "reasoning",
        "text",
    ] {
        assert_eq!(plain.get(field), None, "{field}");
    }
}

#[test]
fn reasoning_effort_asks_for_summaries() {
    let cases = [
        ("none", json!({"effort": "none"})),
        ("minimal", json!({"effort": "minimal", "summary": "auto"})),
        ("low", json!({"effort": "low", "summary": "auto"})),
        ("medium", json!({"effort": "medium", "summary": "auto"})),
        ("high", json!({"effort": "high", "summary": "auto"})),
    ];
    for (effort, sent) in cases {
        assert_eq!(
            with(json!({"reasoning_effort": effort}))["reasoning"],
            sent,
            "{effort}"
        );
    }
}

#[test]
fn response_format_and_verbosity_become_text() {
    let cases = [
        (
            json!({"response_format": {"type": "text"}}),
            json!({"format": {"type": "text"}}),
        ),
        (
            json!({"response_format": {"type": "json_object"}}),
            json!({"format": {"type": "json_object"}}),
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {
                "name": "city", "strict": true,
                "schema": {"type": "object", "properties": {"name": {"type": "string"}}}
            }}}),
            json!({"format": {"type": "json_schema", "name": "city", "strict": true,
                   "schema": {"type": "object", "properties": {"name": {"type": "string"}}}}}),
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}}),
            json!({"format": {"type": "json_schema", "name": "response", "schema": {"type": "object"}}}),
        ),
        (json!({"verbosity": "low"}), json!({"verbosity": "low"})),
        (
            json!({"verbosity": "high", "response_format": {"type": "json_object"}}),
            json!({"format": {"type": "json_object"}, "verbosity": "high"}),
        ),
    ];
    for (asked, sent) in cases {
        assert_eq!(with(asked.clone())["text"], sent, "{asked}");
    }
}

#[test]
fn store_is_off_unless_the_client_asks_and_known_fields_pass_on() {
    assert_eq!(with(json!({}))["store"], json!(false));
    assert_eq!(with(json!({"store": null}))["store"], json!(false));
    assert_eq!(with(json!({"store": true}))["store"], json!(true));
    let passed = json!({
        "metadata": {"team": "a"},
        "previous_response_id": "resp_1",
        "include": ["reasoning.encrypted_content"],
        "truncation": "auto",
        "service_tier": "flex",
        "prompt_cache_key": "k",
        "prompt_cache_retention": "24h",
        "safety_identifier": "s",
        "max_tool_calls": 3
    });
    let mut asked = passed.clone();
    asked["top_k"] = json!(40);
    asked["safetySettings"] = json!([]);
    asked["background"] = json!(false);
    asked["frequency_penalty"] = json!(0);
    asked["logprobs"] = json!(false);
    asked["modalities"] = json!(["text"]);
    let body = with(asked);
    for (name, value) in passed.as_object().into_iter().flatten() {
        assert_eq!(body.get(name), Some(value), "{name}");
    }
    for name in [
        "top_k",
        "safetySettings",
        "background",
        "frequency_penalty",
        "logprobs",
        "modalities",
        "stream_options",
    ] {
        assert_eq!(body.get(name), None, "{name}");
    }
}

#[test]
fn what_this_api_cannot_honour_is_refused_naming_the_field() {
    let cases = [
        (
            json!({"n": 2}),
            "`n` above 1 cannot be served by an openai-responses upstream",
        ),
        (
            json!({"stop": "END"}),
            "`stop` cannot be sent to an openai-responses upstream",
        ),
        (json!({"stop": ["a", "b"]}), "`stop` cannot be sent"),
        (json!({"seed": 7}), "`seed` cannot be sent"),
        (json!({"background": true}), "`background` cannot be sent"),
        (
            json!({"frequency_penalty": 0.5}),
            "`frequency_penalty` cannot be sent",
        ),
        (
            json!({"presence_penalty": -1}),
            "`presence_penalty` cannot be sent",
        ),
        (json!({"logprobs": true}), "`logprobs` cannot be sent"),
        (json!({"top_logprobs": 2}), "`top_logprobs` cannot be sent"),
        (
            json!({"logit_bias": {"50256": -100}}),
            "`logit_bias` cannot be sent",
        ),
        (
            json!({"modalities": ["text", "audio"]}),
            "`modalities` cannot be sent",
        ),
        (
            json!({"audio": {"voice": "alloy"}}),
            "`audio` cannot be sent",
        ),
        (
            json!({"prediction": {"type": "content"}}),
            "`prediction` cannot be sent",
        ),
        (
            json!({"web_search_options": {}}),
            "`web_search_options` cannot be sent",
        ),
        (
            json!({"functions": [{"name": "f"}]}),
            "`functions` cannot be sent",
        ),
    ];
    for (fields, expected) in cases {
        match build(request(&fields)) {
            Ok(body) => panic!("{fields} should be refused, got {body}"),
            Err(message) => assert!(message.contains(expected), "{fields}: {message}"),
        }
    }
    for idle in [
        json!({"n": 1}),
        json!({"stop": []}),
        json!({"stop": null}),
        json!({"seed": null}),
    ] {
        assert!(build(request(&idle)).is_ok(), "{idle} asks for nothing");
    }
}
