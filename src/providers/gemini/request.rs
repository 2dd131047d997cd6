//! The body of a `streamGenerateContent` request, rebuilt from the client's
//! chat conversation in Gemini's terms: `contents` of alternating `user` and
//! `model` turns made of parts, the system prompt apart as
//! `systemInstruction`, functions as `functionDeclarations`, and every
//! sampling setting under `generationConfig`. The model is named in the path,
//! never in the body.
//!
//! What Gemini has no field for is either harmless to leave out or refused:
//! `parallel_tool_calls` (Gemini decides how many calls to make in one
//! turn), `user` (no end-user field), a tool's `strict` and a JSON schema's
//! `strict` (Gemini constrains to the schema it is given either way) are left
//! out; a tool result whose function cannot be named is refused. Of the
//! fields outside the ones `Conversation` reads, only those with a Gemini
//! twin are sent ([`NATIVE_FIELDS`], [`GENERATION_FIELDS`]).

use serde_json::{Map, Value, json};

use crate::error::Error;
use crate::providers::conversation::{
    Conversation, Effort, Image, Part, ResponseFormat, Side, Tool, ToolChoice, Turn, alternating,
};

/// Gemini's own request fields a client may put beside the chat fields;
/// they are passed on at the top level under the same name.
const NATIVE_FIELDS: [&str; 3] = ["safetySettings", "cachedContent", "labels"];

/// Fields outside OpenAI's chat completions, or OpenAI fields that
/// `Conversation` leaves in `extra`, that have a `generationConfig` twin of
/// the same meaning: (client's name, Gemini's name).
const GENERATION_FIELDS: [(&str, &str); 3] = [
    ("top_k", "topK"),
    ("presence_penalty", "presencePenalty"),
    ("frequency_penalty", "frequencyPenalty"),
];

/// Gemini 3 refuses a replayed `functionCall` without the `thoughtSignature`
/// it came with, and OpenAI-style clients never keep one. Google documents
/// this value for calls whose signature is lost, and 2.5 models accept it too.
const LOST_SIGNATURE: &str = "skip_thought_signature_validator";

/// The request body for `conversation`.
pub(super) fn body(mut conversation: Conversation) -> Result<Value, Error> {
    let mut body = Map::new();
    let tool_config = tool_config(conversation.tool_choice.take(), &conversation.tools)?;
    body.insert(
        "contents".to_owned(),
        Value::Array(contents(std::mem::take(&mut conversation.turns))?),
    );
    if let Some(system) = conversation.system.take().filter(|text| !text.is_empty()) {
        body.insert(
            "systemInstruction".to_owned(),
            json!({"parts": [{"text": system}]}),
        );
    }
    if !conversation.tools.is_empty() {
        let declarations: Vec<Value> = std::mem::take(&mut conversation.tools)
            .into_iter()
            .map(declaration)
            .collect();
        body.insert(
            "tools".to_owned(),
            json!([{"functionDeclarations": declarations}]),
        );
    }
    if let Some(config) = tool_config {
        body.insert("toolConfig".to_owned(), config);
    }
    let generation = generation_config(&mut conversation);
    if !generation.is_empty() {
        body.insert("generationConfig".to_owned(), Value::Object(generation));
    }
    for name in NATIVE_FIELDS {
        if let Some(value) = conversation
            .extra
            .remove(name)
            .filter(|value| !value.is_null())
        {
            body.insert(name.to_owned(), value);
        }
    }
    Ok(Value::Object(body))
}

/// The turns as `contents`: the user's parts and tool results speak as
/// `user`, the assistant as `model`, consecutive pieces of one side merged
/// because Gemini wants the roles to alternate and the results of parallel
/// calls in one turn.
fn contents(turns: Vec<Turn>) -> Result<Vec<Value>, Error> {
    let mut pieces = Vec::new();
    for turn in turns {
        match turn {
            Turn::User(parts) => {
                pieces.extend(
                    parts
                        .into_iter()
                        .filter_map(user_part)
                        .map(|part| (Side::User, part)),
                );
            }
            Turn::Assistant { text, tool_calls } => {
                if !text.is_empty() {
                    pieces.push((Side::Model, json!({"text": text})));
                }
                for (position, call) in tool_calls.into_iter().enumerate() {
                    let mut part = json!({"functionCall": {"name": call.name, "args": call.input}});
                    // Only the first call of a step carries a signature.
                    if position == 0 {
                        part["thoughtSignature"] = Value::from(LOST_SIGNATURE);
                    }
                    pieces.push((Side::Model, part));
                }
            }
            Turn::ToolResult {
                call_id,
                name,
                content,
            } => {
                let name = name.ok_or_else(|| {
                    Error::InvalidRequest(format!(
                        "the tool message answering `{call_id}` needs a `name`: a gemini upstream \
                         names the function a result answers, and no earlier assistant message \
                         made the call `{call_id}`"
                    ))
                })?;
                pieces.push((
                    Side::User,
                    json!({"functionResponse": {"name": name, "response": response(content)}}),
                ));
            }
        }
    }
    Ok(alternating(pieces)
        .into_iter()
        .map(|(side, parts)| {
            let role = match side {
                Side::User => "user",
                Side::Model => "model",
            };
            json!({"role": role, "parts": parts})
        })
        .collect())
}

/// Gemini refuses empty text parts, and an empty text says nothing.
fn user_part(part: Part) -> Option<Value> {
    Some(match part {
        Part::Text(text) if text.is_empty() => return None,
        Part::Text(text) => json!({"text": text}),
        Part::Image(Image::Inline { media_type, data }) => {
            json!({"inlineData": {"mimeType": media_type, "data": data}})
        }
        Part::Image(Image::Url(url)) => {
            json!({"fileData": {"mimeType": media_type_of(&url), "fileUri": url}})
        }
    })
}

/// `fileData` must say what it holds, and a URL only hints at it through
/// its file extension; JPEG, the most common kind of photo, when it says
/// nothing Gemini reads.
fn media_type_of(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let file = path.rsplit('/').next().unwrap_or(path);
    let extension = file.rsplit_once('.').map_or("", |(_, extension)| extension);
    match extension.to_ascii_lowercase().as_str() {
        "png" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        _ => "image/jpeg",
    }
}

/// A `functionResponse.response` must be an object: a tool that answered
/// with one is passed on as it is, any other answer as its text.
fn response(content: String) -> Value {
    if content.trim_start().starts_with('{') {
        if let Ok(object @ Value::Object(_)) = serde_json::from_str::<Value>(&content) {
            return object;
        }
    }
    json!({"result": content})
}

/// The schema goes out as `parametersJsonSchema`, Gemini's field for plain
/// JSON Schema, rather than as `parameters`, its OpenAPI subset: the
/// client's schema then needs no rewriting (`additionalProperties`, `anyOf`,
/// `$ref` and type lists, which `parameters` refuses, keep their meaning),
/// and it is the same kind of schema as `responseJsonSchema`.
fn declaration(tool: Tool) -> Value {
    let mut declaration = Map::new();
    declaration.insert("name".to_owned(), Value::String(tool.name));
    if let Some(description) = tool.description {
        declaration.insert("description".to_owned(), Value::String(description));
    }
    declaration.insert("parametersJsonSchema".to_owned(), tool.parameters);
    Value::Object(declaration)
}

/// `tool_choice` as `functionCallingConfig.mode`. Without functions, `auto`
/// and `none` mean the same and need no config, while a call that must be
/// made cannot be: refused, as OpenAI refuses it.
fn tool_config(choice: Option<ToolChoice>, tools: &[Tool]) -> Result<Option<Value>, Error> {
    let config = match choice {
        None => return Ok(None),
        Some(ToolChoice::Auto | ToolChoice::None) if tools.is_empty() => return Ok(None),
        Some(ToolChoice::Required | ToolChoice::Function(_)) if tools.is_empty() => {
            return Err(Error::InvalidRequest(
                "`tool_choice` asks for a function call, but `tools` declares no function"
                    .to_owned(),
            ));
        }
        Some(ToolChoice::Auto) => json!({"mode": "AUTO"}),
        Some(ToolChoice::None) => json!({"mode": "NONE"}),
        Some(ToolChoice::Required) => json!({"mode": "ANY"}),
        Some(ToolChoice::Function(name)) => {
            if !tools.iter().any(|tool| tool.name == name) {
                return Err(Error::InvalidRequest(format!(
                    "`tool_choice.function.name` `{name}` is not among `tools`"
                )));
            }
            json!({"mode": "ANY", "allowedFunctionNames": [name]})
        }
    };
    Ok(Some(json!({"functionCallingConfig": config})))
}

fn generation_config(conversation: &mut Conversation) -> Map<String, Value> {
    let mut config = Map::new();
    let mut set = |name: &str, value: Value| {
        config.insert(name.to_owned(), value);
    };
    if let Some(max) = conversation.max_tokens {
        set("maxOutputTokens", max.into());
    }
    if let Some(temperature) = conversation.temperature {
        set("temperature", temperature.into());
    }
    if let Some(top_p) = conversation.top_p {
        set("topP", top_p.into());
    }
    if !conversation.stop.is_empty() {
        set(
            "stopSequences",
            std::mem::take(&mut conversation.stop).into(),
        );
    }
    if conversation.choices != 1 {
        set("candidateCount", conversation.choices.into());
    }
    if let Some(seed) = conversation.seed {
        set("seed", seed.into());
    }
    match conversation.response_format.take() {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => set("responseMimeType", "application/json".into()),
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            set("responseMimeType", "application/json".into());
            set("responseJsonSchema", schema);
        }
    }
    if let Some(effort) = conversation.reasoning_effort {
        set("thinkingConfig", thinking(effort));
    }
    for (ours, theirs) in GENERATION_FIELDS {
        if let Some(value) = conversation
            .extra
            .remove(ours)
            .filter(|value| !value.is_null())
        {
            set(theirs, value);
        }
    }
    config
}

/// `reasoning_effort` as a thinking budget in tokens; the thoughts are shown
/// (as summaries, all Gemini gives) whenever the model may think at all.
fn thinking(effort: Effort) -> Value {
    let budget = match effort {
        Effort::None | Effort::Minimal => return json!({"thinkingBudget": 0}),
        Effort::Low => 1024,
        Effort::Medium => 8192,
        Effort::High => 24576,
    };
    json!({"thinkingBudget": budget, "includeThoughts": true})
}

#[cfg(test)]
#[expect(
    clippy::unwrap_used,
    reason = "tests fail loudly on broken fixtures and helpers"
)]
mod tests;
