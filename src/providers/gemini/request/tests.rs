//! Request bodies for whole conversations and for each setting, and the
//! requests a gemini upstream cannot be sent.

use serde_json::{Value, json};

use super::{body, media_type_of};
use crate::providers::conversation::Conversation;
use crate::providers::gemini::UPSTREAM;
use crate::request::ChatRequest;

fn build(request: Value) -> Result<Value, String> {
    let request = ChatRequest::from_json(request.to_string().as_bytes()).unwrap();
    Conversation::read(request, UPSTREAM)
        .and_then(body)
        .map_err(|error| error.message())
}

/// A request with one user message `hi` and `fields`.
fn with(fields: Value) -> Value {
    let mut request =
        json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]});
    for (name, value) in fields.as_object().unwrap() {
        request[name] = value.clone();
    }
    request
}

/// The `contents` of [`with`]'s request.
fn hi() -> Value {
    json!([{"role": "user", "parts": [{"text": "hi"}]}])
}

#[test]
fn a_whole_conversation_becomes_contents() {
    let got = build(json!({
        "model": "gemini-2.5-flash",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Use metric."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is the weather here and there?"},
                {"type": "text", "text": ""},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/photos/sky.WEBP?size=large#top"}}
            ]},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21, \"sky\": \"clear\"}"},
            {"role": "tool", "tool_call_id": "call_2", "content": "rain, 9 °C"},
            {"role": "assistant", "content": "Paris is clear at 21 °C; Oslo has rain at 9 °C."},
            {"role": "user", "content": "And tomorrow?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_3", "type": "function", "function": {"name": "forecast", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "call_3", "content": "[\"sun\", \"sun\"]"}
        ]
    }))
    .unwrap();
    let expected = json!({
        "contents": [
            {"role": "user", "parts": [
                {"text": "What is the weather here and there?"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBO"}},
                {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/photos/sky.WEBP?size=large#top"}}
            ]},
            {"role": "model", "parts": [
                {"text": "Checking."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "skip_thought_signature_validator"},
                {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temp": 21, "sky": "clear"}}},
                {"functionResponse": {"name": "get_weather", "response": {"result": "rain, 9 °C"}}}
            ]},
            {"role": "model", "parts": [{"text": "Paris is clear at 21 °C; Oslo has rain at 9 °C."}]},
            {"role": "user", "parts": [{"text": "And tomorrow?"}]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "forecast", "args": {}}, "thoughtSignature": "skip_thought_signature_validator"}
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "forecast", "response": {"result": "[\"sun\", \"sun\"]"}}}
            ]}
        ],
        "systemInstruction": {"parts": [{"text": "Be brief.\n\nUse metric."}]}
    });
    assert_eq!(got, expected);
}

#[test]
fn a_plain_request_is_contents_alone() {
    assert_eq!(build(with(json!({}))).unwrap(), json!({"contents": hi()}));
    let empty_system = with(json!({"messages": [
        {"role": "system", "content": [{"type": "text", "text": ""}]},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "text", "text": ""}]},
        {"role": "user", "content": "there"}
    ]}));
    assert_eq!(
        build(empty_system).unwrap(),
        json!({"contents": [{"role": "user", "parts": [{"text": "hi"}, {"text": "there"}]}]})
    );
}

#[test]
fn tools_and_tool_choice() {
    let tools = json!([
        {"type": "function", "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "strict": true,
            "parameters": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": ["string", "null"], "enum": ["c", "f", null]}},
                "required": ["city", "unit"], "additionalProperties": false}
        }},
        {"type": "function", "function": {"name": "now"}}
    ]);
    let declarations = json!([{"functionDeclarations": [
        {"name": "get_weather", "description": "The weather in a city",
            "parametersJsonSchema": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": ["string", "null"], "enum": ["c", "f", null]}},
                "required": ["city", "unit"], "additionalProperties": false}},
        {"name": "now", "parametersJsonSchema": {"type": "object", "properties": {}}}
    ]}]);
    let cases = [
        (json!(null), None),
        (json!("auto"), Some(json!({"mode": "AUTO"}))),
        (json!("none"), Some(json!({"mode": "NONE"}))),
        (json!("required"), Some(json!({"mode": "ANY"}))),
        (
            json!({"type": "function", "function": {"name": "now"}}),
            Some(json!({"mode": "ANY", "allowedFunctionNames": ["now"]})),
        ),
    ];
    for (choice, mode) in cases {
        let mut request = with(json!({"tools": tools, "parallel_tool_calls": false}));
        if !choice.is_null() {
            request["tool_choice"] = choice.clone();
        }
        let got = build(request).unwrap();
        let mut expected = json!({"contents": hi(), "tools": declarations});
        if let Some(mode) = mode {
            expected["toolConfig"] = json!({"functionCallingConfig": mode});
        }
        assert_eq!(got, expected, "{choice}");
    }
    for choice in ["auto", "none"] {
        assert_eq!(
            build(with(json!({"tool_choice": choice}))).unwrap(),
            json!({"contents": hi()}),
            "{choice} without tools"
        );
    }
}

#[test]
fn sampling_settings_are_generation_config() {
    let got = build(with(json!({
        "max_tokens": 100, "max_completion_tokens": 200, "temperature": 0.2, "top_p": 0.9,
        "stop": ["END", "###"], "n": 3, "seed": 42, "top_k": 40,
        "presence_penalty": 0.5, "frequency_penalty": -0.5,
        "response_format": {"type": "json_object"},
        "user": "u-1", "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        "cachedContent": "cachedContents/abc", "labels": {"team": "a"}, "logit_bias": null, "unknown_field": 1
    })))
    .unwrap();
    assert_eq!(
        got,
        json!({
            "contents": hi(),
            "generationConfig": {
                "maxOutputTokens": 200, "temperature": 0.2, "topP": 0.9,
                "stopSequences": ["END", "###"], "candidateCount": 3, "seed": 42,
                "responseMimeType": "application/json",
                "topK": 40, "presencePenalty": 0.5, "frequencyPenalty": -0.5
            },
            "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
            "cachedContent": "cachedContents/abc",
            "labels": {"team": "a"}
        })
    );
    let stop = build(with(
        json!({"stop": "END", "max_tokens": 5, "n": 1, "response_format": {"type": "text"}}),
    ))
    .unwrap();
    assert_eq!(
        stop,
        json!({"contents": hi(), "generationConfig": {"maxOutputTokens": 5, "stopSequences": ["END"]}})
    );
}

#[test]
fn a_json_schema_is_the_response_schema() {
    let schema = json!({"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"], "additionalProperties": false});
    let got = build(with(json!({"response_format": {"type": "json_schema", "json_schema": {"name": "a", "strict": true, "schema": schema}}})))
        .unwrap();
    assert_eq!(
        got,
        json!({"contents": hi(), "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": schema}})
    );
}

#[test]
fn reasoning_effort_is_a_thinking_budget() {
    let cases = [
        ("none", json!({"thinkingBudget": 0})),
        ("minimal", json!({"thinkingBudget": 0})),
        (
            "low",
            json!({"thinkingBudget": 1024, "includeThoughts": true}),
        ),
        (
            "medium",
            json!({"thinkingBudget": 8192, "includeThoughts": true}),
        ),
        (
            "high",
            json!({"thinkingBudget": 24576, "includeThoughts": true}),
        ),
    ];
    for (effort, thinking) in cases {
        assert_eq!(
            build(with(json!({"reasoning_effort": effort}))).unwrap(),
            json!({"contents": hi(), "generationConfig": {"thinkingConfig": thinking}}),
            "{effort}"
        );
    }
}

#[test]
fn what_cannot_be_sent_is_refused_naming_the_field() {
    let tool = json!([{"type": "function", "function": {"name": "f"}}]);
    let cases = [
        (
            with(json!({"messages": [
                {"role": "user", "content": "hi"},
                {"role": "tool", "tool_call_id": "call_9", "content": "42"}
            ]})),
            "the tool message answering `call_9` needs a `name`",
        ),
        (
            with(json!({"tool_choice": "required"})),
            "`tool_choice` asks for a function call, but `tools` declares no function",
        ),
        (
            with(json!({"tool_choice": {"type": "function", "function": {"name": "f"}}})),
            "`tools` declares no function",
        ),
        (
            with(
                json!({"tools": tool, "tool_choice": {"type": "function", "function": {"name": "g"}}}),
            ),
            "`tool_choice.function.name` `g` is not among `tools`",
        ),
    ];
    for (request, expected) in cases {
        match build(request.clone()) {
            Ok(body) => panic!("{request} should be refused, not sent as {body}"),
            Err(message) => assert!(message.contains(expected), "{request}: {message}"),
        }
    }
    let named = with(json!({"messages": [
        {"role": "user", "content": "hi"},
        {"role": "tool", "tool_call_id": "call_9", "name": "lookup", "content": "42"}
    ]}));
    assert_eq!(
        build(named).unwrap()["contents"][0]["parts"][1],
        json!({"functionResponse": {"name": "lookup", "response": {"result": "42"}}})
    );
}

#[test]
fn an_image_url_says_what_it_holds_by_its_extension() {
    let cases = [
        ("https://x.test/a.png", "image/png"),
        ("https://x.test/a.JPG", "image/jpeg"),
        ("https://x.test/a.jpeg?v=1", "image/jpeg"),
        ("https://x.test/a.webp#f", "image/webp"),
        ("https://x.test/a.gif", "image/gif"),
        ("gs://bucket/photo.heic", "image/heic"),
        ("https://x.test/photo.HEIF", "image/heif"),
        ("https://x.test/image", "image/jpeg"),
        ("https://x.test.png/image", "image/jpeg"),
        ("https://x.test/a.svg", "image/jpeg"),
        ("https://x.test/a.png/", "image/jpeg"),
    ];
    for (url, media_type) in cases {
        assert_eq!(media_type_of(url), media_type, "{url}");
    }
}
