//! The body of a streaming Responses API request, built from the client's
//! chat conversation: the system prompt becomes `instructions`, every turn one
//! or more `input` items (a message, a `function_call` per tool call, a
//! `function_call_output` per tool result), and the chat settings the fields
//! this API spells its own way. What it cannot honour is refused with a 400
//! naming the field rather than dropped.

use serde_json::{Map, Value, json};

use super::UPSTREAM;
use crate::error::Error;
use crate::providers::conversation::{
    Conversation, Effort, Image, Part, ResponseFormat, Tool, ToolCall, ToolChoice, Turn,
};

/// Fields of the client's request that the Responses API knows under the
/// same name, passed on as given: `store` (which overrides our `false`),
/// `metadata`, `previous_response_id`, `include`, `truncation`,
/// `service_tier`, `prompt_cache_key`, `prompt_cache_retention`,
/// `safety_identifier` and `max_tool_calls`. Other fields the client sends
/// for other providers (`top_k`...) are not sent: this API refuses fields it
/// does not know.
const PASSED_ON: [&str; 10] = [
    "store",
    "metadata",
    "previous_response_id",
    "include",
    "truncation",
    "service_tier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "max_tool_calls",
];

pub(super) fn body(conversation: Conversation, model: &str) -> Result<Value, Error> {
    conversation.one_choice(UPSTREAM)?;
    if !conversation.stop.is_empty() {
        return Err(refusal("stop", "which has no stop sequences"));
    }
    if conversation.seed.is_some() {
        return Err(refusal("seed", "which has no seed"));
    }
    let Conversation {
        system,
        turns,
        tools,
        tool_choice,
        parallel_tool_calls,
        max_tokens,
        temperature,
        top_p,
        reasoning_effort,
        response_format,
        user,
        mut extra,
        ..
    } = conversation;
    refuse_chat_only_fields(&extra)?;

    let mut body = Map::new();
    body.insert("model".to_owned(), Value::from(model));
    body.insert("stream".to_owned(), Value::Bool(true));
    // A relay has no use for OpenAI keeping every conversation it passes on.
    body.insert("store".to_owned(), Value::Bool(false));
    let mut set = |name: &str, value: Option<Value>| {
        if let Some(value) = value {
            body.insert(name.to_owned(), value);
        }
    };
    set("instructions", system.map(Value::from));
    set("input", Some(Value::Array(input(turns))));
    set(
        "tools",
        (!tools.is_empty()).then(|| tools.into_iter().map(tool).collect()),
    );
    set("tool_choice", tool_choice.map(choice));
    set("parallel_tool_calls", parallel_tool_calls.map(Value::from));
    set("max_output_tokens", max_tokens.map(Value::from));
    set("temperature", temperature.map(Value::from));
    set("top_p", top_p.map(Value::from));
    set("reasoning", reasoning_effort.map(reasoning));
    set("text", text(response_format, extra.remove("verbosity")));
    set("user", user.map(Value::from));
    for name in PASSED_ON {
        set(name, extra.remove(name).filter(|value| !value.is_null()));
    }
    Ok(Value::Object(body))
}

/// Chat-completion fields this API has no place for are refused, unless they
/// hold the value that asks for nothing, which some clients send with every
/// request (`frequency_penalty: 0`, `logprobs: false`...). `background` is
/// refused too: a relayed stream ends with its client, a background response
/// would go on generating, and billing, after a cancel.
fn refuse_chat_only_fields(extra: &Map<String, Value>) -> Result<(), Error> {
    const NO_SUCH: &str = "which has no such setting";
    for (name, value) in extra {
        if value.is_null() {
            continue;
        }
        let (asks_nothing, why) = match name.as_str() {
            "frequency_penalty" | "presence_penalty" => (value.as_f64() == Some(0.0), NO_SUCH),
            "logprobs" => (*value == Value::Bool(false), NO_SUCH),
            "top_logprobs" => (value.as_u64() == Some(0), NO_SUCH),
            "logit_bias" => (value.as_object().is_some_and(Map::is_empty), NO_SUCH),
            "modalities" => (*value == json!(["text"]), "which answers in text only"),
            "audio" | "prediction" | "web_search_options" => (false, NO_SUCH),
            "functions" | "function_call" => (false, "which takes functions as `tools` only"),
            "background" => (
                *value == Value::Bool(false),
                "as a relayed response streams to its client and ends with it",
            ),
            _ => continue,
        };
        if !asks_nothing {
            return Err(refusal(name, why));
        }
    }
    Ok(())
}

fn input(turns: Vec<Turn>) -> Vec<Value> {
    let mut items = Vec::new();
    for turn in turns {
        match turn {
            Turn::User(parts) => {
                let content: Vec<Value> = parts.into_iter().map(user_part).collect();
                items.push(json!({"role": "user", "content": content}));
            }
            Turn::Assistant { text, tool_calls } => {
                if !text.is_empty() {
                    items.push(json!({
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": text}],
                    }));
                }
                items.extend(tool_calls.into_iter().map(function_call));
            }
            Turn::ToolResult {
                call_id, content, ..
            } => items.push(json!({
                "type": "function_call_output",
                "call_id": call_id,
                "output": content,
            })),
        }
    }
    items
}

fn user_part(part: Part) -> Value {
    match part {
        Part::Text(text) => json!({"type": "input_text", "text": text}),
        Part::Image(image) => {
            let url = match image {
                Image::Inline { media_type, data } => format!("data:{media_type};base64,{data}"),
                Image::Url(url) => url,
            };
            // `auto` is what chat completions assume; some servers of this
            // API require the field.
            json!({"type": "input_image", "image_url": url, "detail": "auto"})
        }
    }
}

fn function_call(call: ToolCall) -> Value {
    // The API wants a JSON text; a call the model made without arguments has none.
    let arguments = if call.arguments.trim().is_empty() {
        "{}".to_owned()
    } else {
        call.arguments
    };
    json!({
        "type": "function_call",
        "call_id": call.id,
        "name": call.name,
        "arguments": arguments,
    })
}

fn tool(tool: Tool) -> Value {
    let mut function = json!({
        "type": "function",
        "name": tool.name,
        "parameters": tool.parameters,
        // This API enforces strict schemas unless told otherwise; chat
        // completions do not, and most clients' schemas would be refused.
        "strict": tool.strict.unwrap_or(false),
    });
    if let Some(description) = tool.description {
        function["description"] = Value::from(description);
    }
    function
}

fn choice(choice: ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => Value::from("auto"),
        ToolChoice::None => Value::from("none"),
        ToolChoice::Required => Value::from("required"),
        ToolChoice::Function(name) => json!({"type": "function", "name": name}),
    }
}

/// The effort as asked; with any reasoning at all, its summary is asked for
/// too, or the API streams none and a client sees nothing while it thinks.
fn reasoning(effort: Effort) -> Value {
    match effort {
        Effort::None => json!({"effort": effort.as_str()}),
        _ => json!({"effort": effort.as_str(), "summary": "auto"}),
    }
}

/// `text`: the output format, and the chat field `verbosity`, which this API
/// keeps beside it.
fn text(format: Option<ResponseFormat>, verbosity: Option<Value>) -> Option<Value> {
    let format = format.map(|format| match format {
        ResponseFormat::Text => json!({"type": "text"}),
        ResponseFormat::JsonObject => json!({"type": "json_object"}),
        ResponseFormat::JsonSchema {
            name,
            schema,
            strict,
        } => {
            let mut format = json!({"type": "json_schema", "name": name, "schema": schema});
            if let Some(strict) = strict {
                format["strict"] = Value::Bool(strict);
            }
            format
        }
    });
    let mut text = Map::new();
    if let Some(format) = format {
        text.insert("format".to_owned(), format);
    }
    if let Some(verbosity) = verbosity.filter(|value| !value.is_null()) {
        text.insert("verbosity".to_owned(), verbosity);
    }
    (!text.is_empty()).then_some(Value::Object(text))
}

fn refusal(field: &str, why: &str) -> Error {
    Error::InvalidRequest(format!("`{field}` cannot be sent to {UPSTREAM}, {why}"))
}

#[cfg(test)]
mod tests;
