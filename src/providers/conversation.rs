//! A chat request read once into typed parts, for the dialects that do not
//! speak OpenAI's chat completions: they each rebuild the conversation in
//! their own shape (Anthropic's `messages`, Gemini's `contents`, the Responses
//! API's `input` items), and reading the client's fields here keeps the three
//! from disagreeing about what a message, an image or a tool call is.
//!
//! What a native API has no place for is refused with a 400 that names the
//! field, never dropped in silence: a client that asked for `n: 3` or audio
//! input must learn that it will not get it.

use serde_json::{Map, Value};

use crate::error::Error;
use crate::request::ChatRequest;

/// The client's conversation and settings, in the terms every dialect shares.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Conversation {
    /// The `system` and `developer` messages' text, in order, joined by a
    /// blank line: every native API takes one system prompt, apart from the turns.
    pub(crate) system: Option<String>,
    pub(crate) turns: Vec<Turn>,
    pub(crate) tools: Vec<Tool>,
    pub(crate) tool_choice: Option<ToolChoice>,
    pub(crate) parallel_tool_calls: Option<bool>,
    /// `max_completion_tokens`, else `max_tokens`.
    pub(crate) max_tokens: Option<u64>,
    pub(crate) temperature: Option<f64>,
    pub(crate) top_p: Option<f64>,
    pub(crate) stop: Vec<String>,
    pub(crate) reasoning_effort: Option<Effort>,
    pub(crate) response_format: Option<ResponseFormat>,
    /// `n`: how many choices; 1 when not given.
    pub(crate) choices: u32,
    pub(crate) seed: Option<i64>,
    pub(crate) user: Option<String>,
    /// Fields outside OpenAI's chat completions, for a dialect to pass on
    /// those its API knows by the same name (`top_k`, `safetySettings`...).
    pub(crate) extra: Map<String, Value>,
}

/// One turn of the conversation, other than the system prompt.
#[derive(Debug, PartialEq)]
pub(crate) enum Turn {
    User(Vec<Part>),
    Assistant {
        text: String,
        tool_calls: Vec<ToolCall>,
    },
    /// A tool's answer to the call with id `call_id`; `name` is the called
    /// function's (Gemini needs it), found from the call or the message.
    ToolResult {
        call_id: String,
        name: Option<String>,
        content: String,
    },
}

/// A piece of a user message.
#[derive(Debug, PartialEq)]
pub(crate) enum Part {
    Text(String),
    Image(Image),
}

/// An image as the client gave it.
#[derive(Debug, PartialEq)]
pub(crate) enum Image {
    /// A `data:` URL, split into its media type and base64 payload.
    Inline { media_type: String, data: String },
    /// Any other URL, for the upstream to fetch.
    Url(String),
}

/// A tool call an assistant turn made.
#[derive(Debug, PartialEq)]
pub(crate) struct ToolCall {
    pub(crate) id: String,
    pub(crate) name: String,
    /// The JSON text of the arguments, as the model wrote it.
    pub(crate) arguments: String,
    /// The same, parsed: always an object (`{}` for empty arguments).
    pub(crate) input: Value,
}

/// A function the model may call.
#[derive(Debug, PartialEq)]
pub(crate) struct Tool {
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    /// A JSON schema of the arguments; an empty object schema when not given.
    pub(crate) parameters: Value,
    pub(crate) strict: Option<bool>,
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ToolChoice {
    Auto,
    None,
    Required,
    Function(String),
}

/// `reasoning_effort`, from none at all to the most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effort {
    None,
    Minimal,
    Low,
    Medium,
    High,
}

impl Effort {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Minimal => "minimal",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

/// `response_format`.
#[derive(Debug, PartialEq)]
pub(crate) enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        schema: Value,
        strict: Option<bool>,
    },
}

/// Who speaks a turn, in the two roles native APIs have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The user, and tool results, which these APIs file under the user.
    User,
    Model,
}

/// Chat-completion fields read into [`Conversation`]; any other field is
/// kept in `extra`.
const KNOWN: [&str; 16] = [
    "messages",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "reasoning_effort",
    "response_format",
    "n",
    "seed",
    "user",
    "stream",
    "stream_options",
];

impl Conversation {
    /// Reads `request`; `upstream` names the API in refusals ("an anthropic
    /// upstream"). Fields the native APIs cannot honour are refused here.
    pub(crate) fn read(request: ChatRequest, upstream: &str) -> Result<Self, Error> {
        let mut fields = request.into_fields();
        let mut conversation = Self {
            choices: 1,
            ..Self::default()
        };
        let messages = match fields.remove("messages") {
            Some(Value::Array(messages)) => messages,
            _ => Vec::new(),
        };
        let mut system = Vec::new();
        for (index, message) in messages.iter().enumerate() {
            let at = format!("messages[{index}]");
            let role = message["role"].as_str().unwrap_or_default();
            match role {
                "system" | "developer" => system.push(text_of(&message["content"], &at)?),
                "user" => conversation.turns.push(Turn::User(parts_of(
                    &message["content"],
                    &at,
                    upstream,
                )?)),
                "assistant" => conversation.turns.push(assistant_turn(message, &at)?),
                _ => {
                    let call_id = match (&message["tool_call_id"], &message["name"]) {
                        (Value::String(id), _) | (Value::Null, Value::String(id)) => id.clone(),
                        _ => {
                            return Err(invalid(format!(
                                "`{at}.tool_call_id` is required for a `{role}` message"
                            )));
                        }
                    };
                    let name = message["name"]
                        .as_str()
                        .map(str::to_owned)
                        .or_else(|| conversation.called(&call_id));
                    conversation.turns.push(Turn::ToolResult {
                        call_id,
                        name,
                        content: text_of(&message["content"], &at)?,
                    });
                }
            }
        }
        conversation.system = (!system.is_empty()).then(|| system.join("\n\n"));
        if let Some(tools) = fields.get("tools") {
            conversation.tools = tools_of(tools)?;
        }
        conversation.tool_choice = fields.get("tool_choice").map(tool_choice_of).transpose()?;
        conversation.parallel_tool_calls = flag(&fields, "parallel_tool_calls")?;
        conversation.max_tokens = match count(&fields, "max_completion_tokens")? {
            Some(max) => Some(max),
            None => count(&fields, "max_tokens")?,
        };
        conversation.temperature = number(&fields, "temperature")?;
        conversation.top_p = number(&fields, "top_p")?;
        conversation.stop = match fields.get("stop") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(stop)) => vec![stop.clone()],
            Some(Value::Array(stops)) => stops
                .iter()
                .map(|stop| stop.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| invalid("`stop` must be a string or an array of strings"))?,
            Some(_) => return Err(invalid("`stop` must be a string or an array of strings")),
        };
        conversation.reasoning_effort = match fields.get("reasoning_effort") {
            None | Some(Value::Null) => None,
            Some(Value::String(effort)) => Some(match effort.as_str() {
                "none" => Effort::None,
                "minimal" => Effort::Minimal,
                "low" => Effort::Low,
                "medium" => Effort::Medium,
                "high" | "xhigh" => Effort::High,
                other => {
                    return Err(invalid(format!(
                        "`reasoning_effort` must be none, minimal, low, medium or high, not `{other}`"
                    )));
                }
            }),
            Some(_) => return Err(invalid("`reasoning_effort` must be a string")),
        };
        conversation.response_format = fields
            .get("response_format")
            .filter(|format| !format.is_null())
            .map(response_format_of)
            .transpose()?;
        conversation.choices = match count(&fields, "n")? {
            None => 1,
            Some(n) => u32::try_from(n).map_err(|_| invalid("`n` is too large"))?,
        };
        conversation.seed = match fields.get("seed") {
            None | Some(Value::Null) => None,
            Some(seed) => Some(
                seed.as_i64()
                    .ok_or_else(|| invalid("`seed` must be an integer"))?,
            ),
        };
        conversation.user = match fields.get("user") {
            None | Some(Value::Null) => None,
            Some(Value::String(user)) => Some(user.clone()),
            Some(_) => return Err(invalid("`user` must be a string")),
        };
        fields.retain(|name, _| !KNOWN.contains(&name.as_str()));
        conversation.extra = fields;
        Ok(conversation)
    }

    /// Refuses `n` above 1 for an API that answers with one choice.
    pub(crate) fn one_choice(&self, upstream: &str) -> Result<(), Error> {
        if self.choices > 1 {
            return Err(invalid(format!(
                "`n` above 1 cannot be served by {upstream}, which answers with one choice"
            )));
        }
        Ok(())
    }

    /// The name of the function called with `call_id` in an earlier turn.
    fn called(&self, call_id: &str) -> Option<String> {
        self.turns.iter().rev().find_map(|turn| match turn {
            Turn::Assistant { tool_calls, .. } => tool_calls
                .iter()
                .find(|call| call.id == call_id)
                .map(|call| call.name.clone()),
            _ => None,
        })
    }
}

/// Consecutive pieces of the same side as one turn: native APIs want the
/// roles to alternate, and the results of parallel tool calls in one turn.
pub(crate) fn alternating<T>(pieces: impl IntoIterator<Item = (Side, T)>) -> Vec<(Side, Vec<T>)> {
    let mut turns: Vec<(Side, Vec<T>)> = Vec::new();
    for (side, piece) in pieces {
        match turns.last_mut() {
            Some((last, items)) if *last == side => items.push(piece),
            _ => turns.push((side, vec![piece])),
        }
    }
    turns
}

fn assistant_turn(message: &Value, at: &str) -> Result<Turn, Error> {
    let text = match &message["content"] {
        Value::Null => String::new(),
        content => text_of(content, at)?,
    };
    let mut tool_calls = Vec::new();
    for (index, call) in message["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("{at}.tool_calls[{index}]");
        let function = &call["function"];
        let name = function["name"]
            .as_str()
            .filter(|name| !name.is_empty())
            .ok_or_else(|| invalid(format!("`{at}.function.name` is required")))?;
        let id = call["id"]
            .as_str()
            .ok_or_else(|| invalid(format!("`{at}.id` is required")))?;
        let arguments = match &function["arguments"] {
            Value::Null => String::new(),
            Value::String(arguments) => arguments.clone(),
            _ => {
                return Err(invalid(format!(
                    "`{at}.function.arguments` must be a string of JSON"
                )));
            }
        };
        let input = if arguments.trim().is_empty() {
            Value::Object(Map::new())
        } else {
            match serde_json::from_str::<Value>(&arguments) {
                Ok(input @ Value::Object(_)) => input,
                _ => {
                    return Err(invalid(format!(
                        "`{at}.function.arguments` must be a JSON object"
                    )));
                }
            }
        };
        tool_calls.push(ToolCall {
            id: id.to_owned(),
            name: name.to_owned(),
            arguments,
            input,
        });
    }
    Ok(Turn::Assistant { text, tool_calls })
}

/// The text of a content that must be text: a string, or text parts joined.
fn text_of(content: &Value, at: &str) -> Result<String, Error> {
    match content {
        Value::String(text) => Ok(text.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut text = String::new();
            for (index, part) in parts.iter().enumerate() {
                match (part["type"].as_str(), &part["text"], &part["refusal"]) {
                    (Some("text"), Value::String(piece), _)
                    | (Some("refusal"), _, Value::String(piece)) => text.push_str(piece),
                    _ => {
                        return Err(invalid(format!(
                            "`{at}.content[{index}]` must be a text part here"
                        )));
                    }
                }
            }
            Ok(text)
        }
        _ => Err(invalid(format!(
            "`{at}.content` must be a string or an array of content parts"
        ))),
    }
}

fn parts_of(content: &Value, at: &str, upstream: &str) -> Result<Vec<Part>, Error> {
    let Value::Array(parts) = content else {
        return Ok(vec![Part::Text(text_of(content, at)?)]);
    };
    parts
        .iter()
        .enumerate()
        .map(|(index, part)| {
            let at = format!("{at}.content[{index}]");
            match part["type"].as_str() {
                Some("text") => match &part["text"] {
                    Value::String(text) => Ok(Part::Text(text.clone())),
                    _ => Err(invalid(format!("`{at}.text` must be a string"))),
                },
                Some("image_url") => {
                    let url = part["image_url"]["url"]
                        .as_str()
                        .or_else(|| part["image_url"].as_str())
                        .ok_or_else(|| invalid(format!("`{at}.image_url.url` is required")))?;
                    image(url, &at).map(Part::Image)
                }
                Some(other) => Err(invalid(format!(
                    "`{at}`: `{other}` parts cannot be sent to {upstream}; use text and image_url parts"
                ))),
                None => Err(invalid(format!("`{at}.type` is required"))),
            }
        })
        .collect()
}

fn image(url: &str, at: &str) -> Result<Image, Error> {
    let Some(rest) = url.strip_prefix("data:") else {
        return Ok(Image::Url(url.to_owned()));
    };
    let Some((meta, data)) = rest.split_once(',') else {
        return Err(invalid(format!(
            "`{at}.image_url.url` is a data URL without data"
        )));
    };
    match meta.strip_suffix(";base64") {
        Some(media_type) if !media_type.is_empty() => Ok(Image::Inline {
            media_type: media_type.to_owned(),
            data: data.to_owned(),
        }),
        _ => Err(invalid(format!(
            "`{at}.image_url.url` must be a base64 data URL with a media type (data:image/png;base64,...)"
        ))),
    }
}

fn tools_of(tools: &Value) -> Result<Vec<Tool>, Error> {
    let Value::Array(tools) = tools else {
        return Err(invalid("`tools` must be an array"));
    };
    tools
        .iter()
        .enumerate()
        .map(|(index, tool)| {
            let at = format!("tools[{index}]");
            if tool["type"].as_str().is_some_and(|kind| kind != "function") {
                return Err(invalid(format!("`{at}.type` must be `function`")));
            }
            let function = &tool["function"];
            let name = function["name"]
                .as_str()
                .filter(|name| !name.is_empty())
                .ok_or_else(|| invalid(format!("`{at}.function.name` is required")))?;
            let parameters = match &function["parameters"] {
                Value::Null => serde_json::json!({"type": "object", "properties": {}}),
                parameters @ Value::Object(_) => parameters.clone(),
                _ => {
                    return Err(invalid(format!(
                        "`{at}.function.parameters` must be a JSON schema object"
                    )));
                }
            };
            Ok(Tool {
                name: name.to_owned(),
                description: function["description"].as_str().map(str::to_owned),
                parameters,
                strict: function["strict"].as_bool(),
            })
        })
        .collect()
}

fn tool_choice_of(choice: &Value) -> Result<ToolChoice, Error> {
    match choice {
        Value::String(choice) => match choice.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            other => Err(invalid(format!(
                "`tool_choice` must be auto, none, required or a function, not `{other}`"
            ))),
        },
        _ => choice["function"]["name"]
            .as_str()
            .map(|name| ToolChoice::Function(name.to_owned()))
            .ok_or_else(|| invalid("`tool_choice.function.name` is required")),
    }
}

fn response_format_of(format: &Value) -> Result<ResponseFormat, Error> {
    match format["type"].as_str() {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let spec = &format["json_schema"];
            Ok(ResponseFormat::JsonSchema {
                name: spec["name"].as_str().unwrap_or("response").to_owned(),
                schema: match &spec["schema"] {
                    schema @ Value::Object(_) => schema.clone(),
                    _ => return Err(invalid("`response_format.json_schema.schema` is required")),
                },
                strict: spec["strict"].as_bool(),
            })
        }
        _ => Err(invalid(
            "`response_format.type` must be text, json_object or json_schema",
        )),
    }
}

fn count(fields: &Map<String, Value>, name: &str) -> Result<Option<u64>, Error> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or_else(|| invalid(format!("`{name}` must be a whole number"))),
    }
}

fn number(fields: &Map<String, Value>, name: &str) -> Result<Option<f64>, Error> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_f64()
            .map(Some)
            .ok_or_else(|| invalid(format!("`{name}` must be a number"))),
    }
}

fn flag(fields: &Map<String, Value>, name: &str) -> Result<Option<bool>, Error> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_bool()
            .map(Some)
            .ok_or_else(|| invalid(format!("`{name}` must be a boolean"))),
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidRequest(message.into())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn read(body: Value) -> Result<Conversation, String> {
        let request = ChatRequest::from_json(body.to_string().as_bytes())
            .unwrap_or_else(|error| panic!("{error}"));
        Conversation::read(request, "an example upstream").map_err(|error| error.message())
    }

    #[test]
    fn a_whole_conversation_is_read_into_turns() {
        let conversation = read(json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "look", "arguments": "{\"x\":1}"}},
                    {"id": "c2", "type": "function", "function": {"name": "peek", "arguments": ""}}
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": "a cat"},
                {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "tabby"}]},
                {"role": "assistant", "content": "A tabby cat."}
            ],
            "tools": [{"type": "function", "function": {"name": "look", "description": "Looks", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "look"}},
            "max_tokens": 50, "max_completion_tokens": 70, "temperature": 0.5, "top_p": 0.9,
            "stop": "END", "reasoning_effort": "low", "seed": 7, "user": "u1", "top_k": 3
        }))
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            conversation.system.as_deref(),
            Some("Be brief.\n\nUse metric.")
        );
        assert_eq!(
            conversation.turns,
            vec![
                Turn::User(vec![
                    Part::Text("What is this?".to_owned()),
                    Part::Image(Image::Inline {
                        media_type: "image/png".to_owned(),
                        data: "iVBO".to_owned()
                    }),
                    Part::Image(Image::Url("https://example.com/a.jpg".to_owned())),
                ]),
                Turn::Assistant {
                    text: String::new(),
                    tool_calls: vec![
                        ToolCall {
                            id: "c1".to_owned(),
                            name: "look".to_owned(),
                            arguments: "{\"x\":1}".to_owned(),
                            input: json!({"x": 1})
                        },
                        ToolCall {
                            id: "c2".to_owned(),
                            name: "peek".to_owned(),
                            arguments: String::new(),
                            input: json!({})
                        },
                    ]
                },
                Turn::ToolResult {
                    call_id: "c1".to_owned(),
                    name: Some("look".to_owned()),
                    content: "a cat".to_owned()
                },
                Turn::ToolResult {
                    call_id: "c2".to_owned(),
                    name: Some("peek".to_owned()),
                    content: "tabby".to_owned()
                },
                Turn::Assistant {
                    text: "A tabby cat.".to_owned(),
                    tool_calls: Vec::new()
                },
            ]
        );
        assert_eq!(conversation.tools.len(), 1);
        assert_eq!(
            conversation.tool_choice,
            Some(ToolChoice::Function("look".to_owned()))
        );
        assert_eq!(conversation.max_tokens, Some(70));
        assert_eq!(conversation.stop, vec!["END".to_owned()]);
        assert_eq!(conversation.reasoning_effort, Some(Effort::Low));
        assert_eq!(conversation.seed, Some(7));
        assert_eq!(
            conversation.extra,
            json!({"top_k": 3}).as_object().cloned().unwrap_or_default()
        );
    }

    #[test]
    fn what_cannot_be_sent_is_refused_naming_the_field() {
        let user = |content: Value| json!({"messages": [{"role": "user", "content": content}]});
        let cases = [
            (
                user(json!([{"type": "input_audio", "input_audio": {}}])),
                "`messages[0].content[0]`: `input_audio` parts cannot be sent to an example upstream",
            ),
            (
                user(json!([{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}])),
                "must be a base64 data URL",
            ),
            (
                json!({"messages": [{"role": "assistant", "content": "x", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}]}]}),
                "`messages[0].tool_calls[0].function.arguments` must be a JSON object",
            ),
            (
                json!({"messages": [{"role": "tool", "content": "x"}]}),
                "`messages[0].tool_call_id` is required",
            ),
            (
                json!({"prompt": "x", "tools": [{"type": "function", "function": {}}]}),
                "`tools[0].function.name` is required",
            ),
            (
                json!({"prompt": "x", "reasoning_effort": "max"}),
                "`reasoning_effort` must be",
            ),
            (
                json!({"prompt": "x", "max_tokens": -1}),
                "`max_tokens` must be a whole number",
            ),
            (
                json!({"prompt": "x", "stop": [1]}),
                "`stop` must be a string or an array",
            ),
            (
                json!({"prompt": "x", "tool_choice": "maybe"}),
                "`tool_choice` must be",
            ),
        ];
        for (body, expected) in cases {
            let message = match read(body.clone()) {
                Ok(_) => panic!("{body} should be refused"),
                Err(message) => message,
            };
            assert!(message.contains(expected), "{body}: {message}");
        }
        let three = read(json!({"prompt": "x", "n": 3})).unwrap_or_else(|error| panic!("{error}"));
        let refusal = three
            .one_choice("an example upstream")
            .map_err(|error| error.message());
        assert!(
            refusal.is_err_and(|message| message.contains("`n` above 1")),
            "n = 3 must be refused"
        );
    }

    #[test]
    fn consecutive_pieces_of_one_side_make_one_turn() {
        let turns = alternating([
            (Side::User, 1),
            (Side::User, 2),
            (Side::Model, 3),
            (Side::User, 4),
            (Side::Model, 5),
            (Side::Model, 6),
        ]);
        assert_eq!(
            turns,
            vec![
                (Side::User, vec![1, 2]),
                (Side::Model, vec![3]),
                (Side::User, vec![4]),
                (Side::Model, vec![5, 6]),
            ]
        );
    }
}
