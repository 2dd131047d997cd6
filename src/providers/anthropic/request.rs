//! The body of a streaming `POST /messages` from the client's conversation:
//! Anthropic keeps the system prompt beside the messages, wants the roles to
//! alternate, carries tool results as `tool_result` blocks of a user turn,
//! and cannot answer without `max_tokens`.
//!
//! What the Messages API has no place for (`n` above 1, `response_format`
//! JSON modes, `seed`, log probabilities, penalties...) is refused with a
//! 400 that names the field, so that a client never believes it got what it
//! asked for.

use serde_json::{Map, Value, json};

use super::UPSTREAM;
use crate::error::Error;
use crate::providers::conversation::{
    Conversation, Effort, Image, Part, ResponseFormat, Side, ToolChoice, Turn, alternating,
};

/// Fields the Messages API knows under the same name as the client sent
/// them, passed on from what the conversation did not read itself:
/// `metadata` and `thinking` are handled apart because they meet `user` and
/// `reasoning_effort`.
const PASSED_ON: [&str; 2] = ["top_k", "service_tier"];

/// OpenAI settings the Messages API has nothing like; refused unless the
/// client set them to their "off" value (`false`, `0`, `null`, empty), which
/// some SDKs send with every request.
const UNSUPPORTED: [&str; 7] = [
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "frequency_penalty",
    "presence_penalty",
    "audio",
    "prediction",
];

/// Anthropic's sampling temperature goes up to 1, OpenAI's to 2.
const MAX_TEMPERATURE: f64 = 1.0;

/// The thinking budget of each `reasoning_effort`, in tokens: Anthropic's
/// minimum, four times it, sixteen times it.
fn thinking_budget(effort: Effort) -> Option<u64> {
    match effort {
        Effort::None | Effort::Minimal => None,
        Effort::Low => Some(1024),
        Effort::Medium => Some(4096),
        Effort::High => Some(16384),
    }
}

/// The Messages API request for `model`; `max_tokens` applies when the
/// client set no limit of its own.
pub(super) fn body(
    mut conversation: Conversation,
    model: &str,
    max_tokens: u64,
) -> Result<Value, Error> {
    refuse_unsupported(&conversation)?;
    let mut body = Map::new();
    body.insert("model".to_owned(), json!(model));
    body.insert("stream".to_owned(), json!(true));

    let answer = conversation.max_tokens.unwrap_or(max_tokens);
    let native_thinking = conversation
        .extra
        .remove("thinking")
        .filter(|thinking| !thinking.is_null());
    let budget = conversation.reasoning_effort.and_then(thinking_budget);
    let max_tokens = match (native_thinking, budget) {
        // The client's own Anthropic setting says more than an effort
        // level, and its budget is the client's to fit under its limit.
        (Some(thinking), _) => {
            body.insert("thinking".to_owned(), thinking);
            answer
        }
        (None, Some(budget)) => {
            body.insert(
                "thinking".to_owned(),
                json!({"type": "enabled", "budget_tokens": budget}),
            );
            // Thinking counts against `max_tokens`, which must exceed the
            // budget: a limit meant for the answer alone is kept for it.
            if answer <= budget {
                budget + answer
            } else {
                answer
            }
        }
        (None, None) => answer,
    };
    body.insert("max_tokens".to_owned(), json!(max_tokens));

    if let Some(system) = conversation
        .system
        .take()
        .filter(|system| !system.is_empty())
    {
        body.insert("system".to_owned(), json!(system));
    }
    body.insert(
        "messages".to_owned(),
        messages(std::mem::take(&mut conversation.turns)),
    );
    if !conversation.tools.is_empty() {
        let tools: Vec<Value> = conversation
            .tools
            .iter()
            .map(|tool| {
                // `strict` has no place here: Anthropic checks tool input
                // against the schema only in a beta behind its own header.
                let mut spec = json!({"name": tool.name, "input_schema": tool.parameters});
                if let Some(description) = &tool.description {
                    spec["description"] = json!(description);
                }
                spec
            })
            .collect();
        body.insert("tools".to_owned(), json!(tools));
    }
    if let Some(choice) = tool_choice(&conversation) {
        body.insert("tool_choice".to_owned(), choice);
    }
    if let Some(temperature) = conversation.temperature {
        body.insert("temperature".to_owned(), json!(temperature));
    }
    if let Some(top_p) = conversation.top_p {
        body.insert("top_p".to_owned(), json!(top_p));
    }
    if !conversation.stop.is_empty() {
        body.insert("stop_sequences".to_owned(), json!(conversation.stop));
    }
    if let Some(metadata) = metadata(&mut conversation) {
        body.insert("metadata".to_owned(), metadata);
    }
    for name in PASSED_ON {
        if let Some(value) = conversation.extra.remove(name).filter(|v| !v.is_null()) {
            body.insert(name.to_owned(), value);
        }
    }
    Ok(Value::Object(body))
}

fn refuse_unsupported(conversation: &Conversation) -> Result<(), Error> {
    conversation.one_choice(UPSTREAM)?;
    let refused = |message: String| Err(Error::InvalidRequest(message));
    match &conversation.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. }) => {
            return refused(format!(
                "`response_format` json_object and json_schema cannot be sent to {UPSTREAM}: \
                 the Messages API has no structured output setting; describe the format in the \
                 prompt, or ask for a tool call with that schema"
            ));
        }
    }
    if conversation.seed.is_some() {
        return refused(format!(
            "`seed` cannot be sent to {UPSTREAM}: the Messages API has no reproducible sampling"
        ));
    }
    if conversation
        .temperature
        .is_some_and(|temperature| temperature > MAX_TEMPERATURE)
    {
        return refused(format!(
            "`temperature` above {MAX_TEMPERATURE} cannot be sent to {UPSTREAM}, whose range is 0 to {MAX_TEMPERATURE}"
        ));
    }
    if let Some(name) = UNSUPPORTED
        .into_iter()
        .find(|name| conversation.extra.get(*name).is_some_and(is_set))
    {
        return refused(format!(
            "`{name}` cannot be sent to {UPSTREAM}: the Messages API has no such setting"
        ));
    }
    Ok(())
}

/// Whether a setting asks for something, rather than being its off value.
fn is_set(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => false,
        Value::Number(number) => number.as_f64() != Some(0.0),
        Value::Object(object) => !object.is_empty(),
        Value::Array(array) => !array.is_empty(),
        Value::Bool(true) | Value::String(_) => true,
    }
}

/// The turns as alternating user and assistant messages of content blocks;
/// the results of parallel calls, and the user text after them, share one
/// user message as Anthropic requires.
fn messages(turns: Vec<Turn>) -> Value {
    let blocks = turns.into_iter().flat_map(|turn| match turn {
        Turn::User(parts) => parts
            .into_iter()
            .map(|part| (Side::User, user_block(part)))
            .collect::<Vec<_>>(),
        Turn::Assistant { text, tool_calls } => {
            // Anthropic refuses empty text blocks; a turn of calls only has none.
            let text = (!text.is_empty()).then(|| json!({"type": "text", "text": text}));
            text.into_iter()
                .chain(tool_calls.into_iter().map(|call| {
                    json!({"type": "tool_use", "id": call.id, "name": call.name, "input": call.input})
                }))
                .map(|block| (Side::Model, block))
                .collect()
        }
        Turn::ToolResult {
            call_id, content, ..
        } => {
            let mut block = json!({"type": "tool_result", "tool_use_id": call_id});
            if !content.is_empty() {
                block["content"] = json!(content);
            }
            vec![(Side::User, block)]
        }
    });
    alternating(blocks)
        .into_iter()
        .map(|(side, content)| {
            let role = match side {
                Side::User => "user",
                Side::Model => "assistant",
            };
            json!({"role": role, "content": content})
        })
        .collect()
}

fn user_block(part: Part) -> Value {
    match part {
        Part::Text(text) => json!({"type": "text", "text": text}),
        Part::Image(Image::Inline { media_type, data }) => json!({
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }),
        Part::Image(Image::Url(url)) => {
            json!({"type": "image", "source": {"type": "url", "url": url}})
        }
    }
}

/// `tool_choice`, where `parallel_tool_calls: false` lives as
/// `disable_parallel_tool_use`. Without tools nothing can be called, in
/// parallel or not, so no choice is made up to carry it.
fn tool_choice(conversation: &Conversation) -> Option<Value> {
    let serial = conversation.parallel_tool_calls == Some(false);
    let mut choice = match &conversation.tool_choice {
        Some(ToolChoice::None) => return Some(json!({"type": "none"})),
        Some(ToolChoice::Auto) => json!({"type": "auto"}),
        Some(ToolChoice::Required) => json!({"type": "any"}),
        Some(ToolChoice::Function(name)) => json!({"type": "tool", "name": name}),
        None if serial && !conversation.tools.is_empty() => json!({"type": "auto"}),
        None => return None,
    };
    if serial {
        choice["disable_parallel_tool_use"] = json!(true);
    }
    Some(choice)
}

/// The client's own `metadata` wins; `user` fills in the `user_id` it lacks.
fn metadata(conversation: &mut Conversation) -> Option<Value> {
    let user = conversation.user.take();
    match conversation
        .extra
        .remove("metadata")
        .filter(|metadata| !metadata.is_null())
    {
        Some(Value::Object(mut metadata)) => {
            if let Some(user) = user {
                metadata.entry("user_id").or_insert(json!(user));
            }
            Some(Value::Object(metadata))
        }
        Some(other) => Some(other),
        None => user.map(|user| json!({"user_id": user})),
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly on a broken case")]
mod tests {
    use super::*;
    use crate::request::ChatRequest;

    const MODEL: &str = "claude-sonnet-4-5";
    const DEFAULT: u64 = 4096;

    fn build(request: Value) -> Result<Value, String> {
        let request = ChatRequest::from_json(request.to_string().as_bytes()).unwrap();
        let conversation = Conversation::read(request, UPSTREAM).map_err(|e| e.message())?;
        body(conversation, MODEL, DEFAULT).map_err(|error| error.message())
    }

    fn built(request: Value) -> Value {
        build(request.clone()).unwrap_or_else(|error| panic!("{request}: {error}"))
    }

    fn user(text: &str) -> Value {
        json!({"role": "user", "content": text})
    }

    /// The body of a one-message conversation with `settings` beside it.
    fn with(settings: Value) -> Value {
        let mut request = json!({"model": "m", "messages": [user("Hi")]});
        for (name, value) in settings.as_object().unwrap() {
            request[name] = value.clone();
        }
        built(request)
    }

    #[test]
    fn a_whole_conversation_becomes_alternating_messages() {
        let body = built(json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": "Use metric."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather here and there?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}
                ]},
                {"role": "assistant", "content": "Checking both.", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "toolu_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "18 C"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": "4 C"},
                {"role": "assistant", "content": "Paris 18 C, Oslo 4 C."},
                {"role": "user", "content": "And tomorrow?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "toolu_3", "type": "function", "function": {"name": "forecast", "arguments": ""}}
                ]},
                {"role": "tool", "tool_call_id": "toolu_3", "content": [{"type": "text", "text": ""}]},
                {"role": "user", "content": "Well?"}
            ]
        }));
        assert_eq!(
            body,
            json!({
                "model": MODEL,
                "stream": true,
                "max_tokens": DEFAULT,
                "system": "Be brief.\n\nUse metric.",
                "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": "Weather here and there?"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
                        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}}
                    ]},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "Checking both."},
                        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                        {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Oslo"}}
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C"},
                        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "4 C"}
                    ]},
                    {"role": "assistant", "content": [{"type": "text", "text": "Paris 18 C, Oslo 4 C."}]},
                    {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]},
                    {"role": "assistant", "content": [
                        {"type": "tool_use", "id": "toolu_3", "name": "forecast", "input": {}}
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_3"},
                        {"type": "text", "text": "Well?"}
                    ]}
                ]
            })
        );
    }

    #[test]
    fn the_smallest_request_has_no_system_and_the_default_limit() {
        assert_eq!(
            built(json!({"model": "m", "messages": [user("Hi")]})),
            json!({
                "model": MODEL,
                "stream": true,
                "max_tokens": DEFAULT,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
            })
        );
        let empty = json!([{"type": "text", "text": ""}]);
        let body = built(json!({"messages": [{"role": "system", "content": empty}, user("Hi")]}));
        assert_eq!(body.get("system"), None);
    }

    #[test]
    fn tools_and_tool_choice_take_anthropic_s_shapes() {
        let tools = json!([
            {"type": "function", "function": {"name": "weather", "description": "Looks it up",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": true}},
            {"type": "function", "function": {"name": "now"}}
        ]);
        let body = with(json!({"tools": tools}));
        assert_eq!(
            body["tools"],
            json!([
                {"name": "weather", "description": "Looks it up",
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                {"name": "now", "input_schema": {"type": "object", "properties": {}}}
            ])
        );
        assert_eq!(body.get("tool_choice"), None);

        let cases = [
            (json!({"tool_choice": "auto"}), json!({"type": "auto"})),
            (json!({"tool_choice": "required"}), json!({"type": "any"})),
            (json!({"tool_choice": "none"}), json!({"type": "none"})),
            (
                json!({"tool_choice": {"type": "function", "function": {"name": "now"}}}),
                json!({"type": "tool", "name": "now"}),
            ),
            (
                json!({"parallel_tool_calls": false}),
                json!({"type": "auto", "disable_parallel_tool_use": true}),
            ),
            (
                json!({"tool_choice": "required", "parallel_tool_calls": false}),
                json!({"type": "any", "disable_parallel_tool_use": true}),
            ),
            (
                json!({"tool_choice": {"type": "function", "function": {"name": "now"}}, "parallel_tool_calls": false}),
                json!({"type": "tool", "name": "now", "disable_parallel_tool_use": true}),
            ),
            (
                json!({"tool_choice": "none", "parallel_tool_calls": false}),
                json!({"type": "none"}),
            ),
        ];
        for (settings, expected) in cases {
            let mut settings = settings;
            settings["tools"] = tools.clone();
            assert_eq!(
                with(settings.clone())["tool_choice"],
                expected,
                "{settings}"
            );
        }
        assert_eq!(
            with(json!({"parallel_tool_calls": true})).get("tool_choice"),
            None
        );
        assert_eq!(
            with(json!({"parallel_tool_calls": false})).get("tool_choice"),
            None
        );
    }

    #[test]
    fn sampling_settings_and_limits_are_passed_on() {
        let body = with(json!({
            "max_tokens": 100, "max_completion_tokens": 300, "temperature": 0.2, "top_p": 0.9,
            "stop": ["END", "STOP"], "user": "u-1", "top_k": 40, "service_tier": "auto",
            "response_format": {"type": "text"}, "frequency_penalty": 0, "logprobs": false,
            "n": 1, "unknown_to_anthropic": 1
        }));
        let mut expected = json!({
            "model": MODEL, "stream": true, "max_tokens": 300, "temperature": 0.2, "top_p": 0.9,
            "stop_sequences": ["END", "STOP"], "metadata": {"user_id": "u-1"}, "top_k": 40,
            "service_tier": "auto"
        });
        expected["messages"] =
            json!([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]);
        assert_eq!(body, expected);
        assert_eq!(with(json!({"max_tokens": 7}))["max_tokens"], 7);
        assert_eq!(
            with(json!({"stop": "END"}))["stop_sequences"],
            json!(["END"])
        );
    }

    #[test]
    fn the_client_s_own_metadata_wins_over_user() {
        let cases = [
            (
                json!({"metadata": {"user_id": "mine"}, "user": "u-1"}),
                json!({"user_id": "mine"}),
            ),
            (
                json!({"metadata": {}, "user": "u-1"}),
                json!({"user_id": "u-1"}),
            ),
            (
                json!({"metadata": {"user_id": "mine"}}),
                json!({"user_id": "mine"}),
            ),
            (
                json!({"metadata": null, "user": "u-1"}),
                json!({"user_id": "u-1"}),
            ),
        ];
        for (settings, expected) in cases {
            assert_eq!(with(settings.clone())["metadata"], expected, "{settings}");
        }
        assert_eq!(with(json!({})).get("metadata"), None);
    }

    #[test]
    fn reasoning_effort_becomes_a_thinking_budget_below_max_tokens() {
        let thinking = |budget: u64| json!({"type": "enabled", "budget_tokens": budget});
        let cases = [
            // effort, client limit, thinking, max_tokens sent
            ("low", None, Some(thinking(1024)), DEFAULT),
            ("medium", None, Some(thinking(4096)), 4096 + DEFAULT),
            ("high", None, Some(thinking(16384)), 16384 + DEFAULT),
            ("high", Some(20_000), Some(thinking(16384)), 20_000),
            ("low", Some(1024), Some(thinking(1024)), 2048),
            ("low", Some(1025), Some(thinking(1024)), 1025),
            ("minimal", Some(50), None, 50),
            ("none", None, None, DEFAULT),
        ];
        for (effort, limit, expected, max_tokens) in cases {
            let body = with(json!({"reasoning_effort": effort, "max_tokens": limit}));
            assert_eq!(
                body.get("thinking"),
                expected.as_ref(),
                "{effort} {limit:?}"
            );
            assert_eq!(body["max_tokens"], max_tokens, "{effort} {limit:?}");
        }
    }

    #[test]
    fn a_native_thinking_setting_wins_over_reasoning_effort() {
        let native = json!({"type": "enabled", "budget_tokens": 2000});
        let body =
            with(json!({"thinking": native, "reasoning_effort": "high", "max_tokens": 3000}));
        assert_eq!(body["thinking"], native);
        assert_eq!(body["max_tokens"], 3000);
        let off = json!({"type": "disabled"});
        assert_eq!(
            with(json!({"thinking": off, "reasoning_effort": "low"}))["thinking"],
            off
        );
        let body = with(json!({"thinking": null, "reasoning_effort": "low"}));
        assert_eq!(
            body["thinking"],
            json!({"type": "enabled", "budget_tokens": 1024})
        );
    }

    #[test]
    fn what_the_messages_api_cannot_honour_is_refused_naming_the_field() {
        let cases = [
            (
                json!({"n": 2}),
                "`n` above 1 cannot be served by an anthropic upstream",
            ),
            (
                json!({"response_format": {"type": "json_object"}}),
                "`response_format` json_object and json_schema cannot be sent to an anthropic upstream",
            ),
            (
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}}),
                "`response_format` json_object and json_schema cannot be sent",
            ),
            (
                json!({"seed": 7}),
                "`seed` cannot be sent to an anthropic upstream",
            ),
            (
                json!({"temperature": 1.5}),
                "`temperature` above 1 cannot be sent",
            ),
            (
                json!({"logprobs": true}),
                "`logprobs` cannot be sent to an anthropic upstream",
            ),
            (json!({"top_logprobs": 3}), "`top_logprobs` cannot be sent"),
            (
                json!({"logit_bias": {"50256": -100}}),
                "`logit_bias` cannot be sent",
            ),
            (
                json!({"frequency_penalty": 0.5}),
                "`frequency_penalty` cannot be sent",
            ),
            (
                json!({"presence_penalty": -1}),
                "`presence_penalty` cannot be sent",
            ),
            (
                json!({"audio": {"voice": "alloy", "format": "wav"}}),
                "`audio` cannot be sent",
            ),
            (
                json!({"prediction": {"type": "content", "content": "x"}}),
                "`prediction` cannot be sent",
            ),
        ];
        for (settings, expected) in cases {
            let mut request = json!({"model": "m", "messages": [user("Hi")]});
            for (name, value) in settings.as_object().unwrap() {
                request[name] = value.clone();
            }
            match build(request) {
                Ok(body) => panic!("{settings} should be refused, got {body}"),
                Err(message) => assert!(message.contains(expected), "{settings}: {message}"),
            }
        }
        assert_eq!(with(json!({"temperature": 1}))["temperature"], 1.0);
    }
}
