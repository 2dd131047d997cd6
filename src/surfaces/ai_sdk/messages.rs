//! The body `DefaultChatTransport` posts — `{id, messages, trigger,
//! messageId, ...}` with UI messages made of parts — turned into the chat
//! request every upstream dialect is built from (`docs/PROTOCOL.md` §8).
//!
//! What reaches the upstream is what the model needs to go on: text, images,
//! and each tool call with its result. What only the page shows (reasoning,
//! step boundaries, sources, data parts) stays behind. Every refusal names
//! the field at fault, as `messages[2].parts[0].mediaType`.

use serde_json::{Map, Value, json};

use crate::error::Error;
use crate::request::ChatRequest;
use crate::streams::Chat;

/// The longest chat id we keep: it is part of a key in the shared store.
const MAX_CHAT_ID_BYTES: usize = 256;

/// The fields of the body that are the transport's, not the model's.
const TRANSPORT_FIELDS: [&str; 4] = ["id", "messages", "trigger", "messageId"];

/// A posted body: the upstream request, and the chat it answers.
#[derive(Debug)]
pub(super) struct UiChat {
    pub(super) request: ChatRequest,
    pub(super) chat: Chat,
}

/// Parses the body of `POST /api/ui/chat`.
pub(super) fn parse(body: &[u8]) -> Result<UiChat, Error> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| invalid(format!("the body is not valid JSON: {error}")))?;
    let Value::Object(mut fields) = value else {
        return Err(invalid("the body must be a JSON object"));
    };
    let id = chat_id(fields.get("id"))?;
    let regenerate = match fields.get("trigger") {
        None | Some(Value::Null) => false,
        Some(Value::String(trigger)) if trigger == "submit-message" => false,
        Some(Value::String(trigger)) if trigger == "regenerate-message" => true,
        Some(_) => {
            return Err(invalid(
                "`trigger` must be `submit-message` or `regenerate-message`",
            ));
        }
    };
    let asked_message_id = match fields.get("messageId") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if !id.is_empty() => Some(id.clone()),
        Some(_) => return Err(invalid("`messageId` must be a non-empty string")),
    };
    let ui_messages = match fields.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => messages.as_slice(),
        Some(Value::Array(_)) => return Err(invalid("`messages` must not be empty")),
        Some(_) => return Err(invalid("`messages` must be an array of UI messages")),
        None => return Err(invalid("`messages` is required")),
    };
    let mut ui_messages: Vec<(usize, &Value)> = ui_messages.iter().enumerate().collect();
    // Regenerating replaces the last answer: it must not be sent as context.
    let mut replaced = None;
    if regenerate {
        if let Some(&(index, message)) = ui_messages.last() {
            if role(index, message)? == "assistant" {
                replaced = message_id(message);
                ui_messages.pop();
            }
        }
    }
    let mut messages = Vec::new();
    for &(index, message) in &ui_messages {
        convert(index, message, &mut messages)?;
    }
    // After tool results the answer continues the assistant message they
    // belong to, as the SDK itself does; a regenerated answer keeps the id
    // of the one it replaces.
    let continued = ui_messages
        .last()
        .filter(|&&(index, message)| role(index, message).ok() == Some("assistant"))
        .and_then(|&(_, message)| message_id(message));
    let message_id = if regenerate {
        asked_message_id.or(replaced)
    } else {
        continued
    };
    for name in TRANSPORT_FIELDS {
        fields.remove(name);
    }
    fields.insert("messages".to_owned(), Value::Array(messages));
    Ok(UiChat {
        request: ChatRequest::from_object(fields)?,
        chat: Chat { id, message_id },
    })
}

fn chat_id(value: Option<&Value>) -> Result<String, Error> {
    match value {
        Some(Value::String(id))
            if !id.is_empty()
                && id.len() <= MAX_CHAT_ID_BYTES
                && !id.chars().any(char::is_control) =>
        {
            Ok(id.clone())
        }
        Some(Value::String(_)) => Err(invalid(format!(
            "`id` must be 1 to {MAX_CHAT_ID_BYTES} bytes of text without control characters"
        ))),
        Some(_) => Err(invalid("`id` (the chat id) must be a string")),
        None => Err(invalid("`id` (the chat id) is required")),
    }
}

fn role(index: usize, message: &Value) -> Result<&str, Error> {
    match message.get("role") {
        Some(Value::String(role)) if ["system", "user", "assistant"].contains(&role.as_str()) => {
            Ok(role)
        }
        Some(_) => Err(invalid(format!(
            "`messages[{index}].role` must be `system`, `user` or `assistant`"
        ))),
        None => Err(invalid(format!("`messages[{index}].role` is required"))),
    }
}

fn message_id(message: &Value) -> Option<String> {
    message
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

/// Appends the chat-completions messages of UI message `index`.
fn convert(index: usize, message: &Value, out: &mut Vec<Value>) -> Result<(), Error> {
    if !message.is_object() {
        return Err(invalid(format!("`messages[{index}]` must be an object")));
    }
    let role = role(index, message)?;
    let parts = match message.get("parts") {
        Some(Value::Array(parts)) => parts,
        Some(_) => {
            return Err(invalid(format!(
                "`messages[{index}].parts` must be an array"
            )));
        }
        None => return Err(invalid(format!("`messages[{index}].parts` is required"))),
    };
    let mut turn = Turn::default();
    for (at, part) in parts.iter().enumerate() {
        let field = format!("messages[{index}].parts[{at}]");
        let Some(kind) = part.get("type").and_then(Value::as_str) else {
            return Err(invalid(format!("`{field}.type` must be a string")));
        };
        match kind {
            "text" => turn
                .content
                .push(json!({"type": "text", "text": text(part, &field)?})),
            "file" if role == "user" => turn.content.push(image(part, &field)?),
            "step-start" if role == "assistant" => turn.flush(out),
            _ if role == "assistant" && is_tool(kind) => {
                turn.tool(part, kind, &field)?;
            }
            // Only the page shows these.
            "reasoning" | "step-start" | "source-url" | "source-document" => {}
            _ if kind.starts_with("data-") => {}
            _ => {
                return Err(invalid(format!(
                    "`{field}.type` `{}` cannot be sent in a {role} message",
                    shown(kind)
                )));
            }
        }
    }
    match role {
        "assistant" => turn.flush(out),
        _ if turn.content.is_empty() => {
            return Err(invalid(format!(
                "`messages[{index}].parts` has no text{}",
                if role == "user" { " or image" } else { "" }
            )));
        }
        "system" => {
            let text: Vec<&str> = turn
                .content
                .iter()
                .filter_map(|part| part.get("text").and_then(Value::as_str))
                .collect();
            out.push(json!({"role": "system", "content": text.join("\n")}));
        }
        // One text is sent as a string, which every upstream takes.
        _ => match turn.content.as_slice() {
            [Value::Object(part)] if part.get("type") == Some(&json!("text")) => {
                out.push(json!({"role": "user", "content": part.get("text")}));
            }
            _ => out.push(json!({"role": "user", "content": turn.content})),
        },
    }
    Ok(())
}

fn is_tool(kind: &str) -> bool {
    kind == "dynamic-tool" || (kind.len() > "tool-".len() && kind.starts_with("tool-"))
}

/// One step of an assistant message: its text and tool calls, then the
/// tool results that answer them.
#[derive(Default)]
struct Turn {
    content: Vec<Value>,
    calls: Vec<Value>,
    results: Vec<Value>,
}

impl Turn {
    fn tool(&mut self, part: &Value, kind: &str, field: &str) -> Result<(), Error> {
        let name = match kind.strip_prefix("tool-") {
            Some(name) => name,
            None => required_str(part, "toolName", field)?,
        };
        let call_id = required_str(part, "toolCallId", field)?;
        let state = required_str(part, "state", field)?;
        let result = match state {
            // Still being written: there is no call to send yet.
            "input-streaming" => return Ok(()),
            "output-available" => Some(match part.get("output") {
                Some(Value::String(text)) => text.clone(),
                Some(output) => output.to_string(),
                None => "null".to_owned(),
            }),
            "output-error" => Some(
                part.get("errorText")
                    .and_then(Value::as_str)
                    .unwrap_or("the tool failed")
                    .to_owned(),
            ),
            "output-denied" => Some("the user denied this tool call".to_owned()),
            "input-available" | "approval-requested" | "approval-responded" => None,
            _ => {
                return Err(invalid(format!(
                    "`{field}.state` `{}` is not a tool call state",
                    shown(state)
                )));
            }
        };
        let input = part.get("input").cloned().unwrap_or_else(|| json!({}));
        self.calls.push(json!({
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": input.to_string()},
        }));
        if let Some(content) = result {
            self.results.push(json!({
                "role": "tool",
                "tool_call_id": call_id,
                "content": content,
            }));
        }
        Ok(())
    }

    /// The step as an assistant message and its tool results, if it has any.
    fn flush(&mut self, out: &mut Vec<Value>) {
        if self.content.is_empty() && self.calls.is_empty() {
            return;
        }
        let text: String = self
            .content
            .drain(..)
            .filter_map(|part| part.get("text").and_then(Value::as_str).map(str::to_owned))
            .collect();
        let mut message = Map::new();
        message.insert("role".to_owned(), json!("assistant"));
        message.insert(
            "content".to_owned(),
            if text.is_empty() {
                Value::Null
            } else {
                json!(text)
            },
        );
        if !self.calls.is_empty() {
            message.insert(
                "tool_calls".to_owned(),
                Value::Array(self.calls.drain(..).collect()),
            );
        }
        out.push(Value::Object(message));
        out.append(&mut self.results);
    }
}

fn text<'a>(part: &'a Value, field: &str) -> Result<&'a str, Error> {
    required_str(part, "text", field)
}

/// An image file part as a chat-completions `image_url` part; its `url` is
/// a URL or a `data:` URL, which every vision API takes.
fn image(part: &Value, field: &str) -> Result<Value, Error> {
    let media_type = required_str(part, "mediaType", field)?;
    if !media_type.starts_with("image/") {
        return Err(invalid(format!(
            "`{field}.mediaType` `{}`: only images can be sent to the model",
            shown(media_type)
        )));
    }
    let url = required_str(part, "url", field)?;
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn required_str<'a>(part: &'a Value, name: &str, field: &str) -> Result<&'a str, Error> {
    part.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("`{field}.{name}` must be a string")))
}

/// A client's string, cut short for an error message.
fn shown(text: &str) -> String {
    text.chars().take(64).collect()
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidRequest(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The upstream request's fields (with its `model`, which the request
    /// keeps apart), and the chat.
    fn parsed(body: Value) -> (Value, Chat) {
        let UiChat { request, chat } = parse(body.to_string().as_bytes())
            .unwrap_or_else(|error| panic!("{body}: {}", error.message()));
        let model = request.model().map(str::to_owned);
        let mut fields = request.into_fields();
        if let Some(model) = model {
            fields.insert("model".to_owned(), Value::String(model));
        }
        (Value::Object(fields), chat)
    }

    fn user(id: &str, text: &str) -> Value {
        json!({"id": id, "role": "user", "parts": [{"type": "text", "text": text}]})
    }

    #[test]
    fn ui_messages_become_chat_messages() {
        let (request, chat) = parsed(json!({
            "id": "chat-1",
            "trigger": "submit-message",
            "model": "m",
            "temperature": 0.5,
            "messages": [
                {"id": "s", "role": "system", "parts": [{"type": "text", "text": "be brief"}]},
                {"id": "u1", "role": "user", "parts": [
                    {"type": "file", "mediaType": "image/png", "url": "data:image/png;base64,AAAA"},
                    {"type": "text", "text": "what is this?"}
                ]},
                {"id": "a1", "role": "assistant", "parts": [
                    {"type": "step-start"},
                    {"type": "reasoning", "text": "hmm"},
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool-weather", "toolCallId": "c1", "state": "output-available",
                     "input": {"city": "Paris"}, "output": {"sky": "clear"}},
                    {"type": "dynamic-tool", "toolName": "clock", "toolCallId": "c2",
                     "state": "output-error", "input": {}, "errorText": "no clock"},
                    {"type": "step-start"},
                    {"type": "data-weather", "data": {"x": 1}},
                    {"type": "text", "text": "Clear in Paris."}
                ]},
                user("u2", "thanks")
            ]
        }));
        assert_eq!(
            request,
            json!({
                "model": "m",
                "temperature": 0.5,
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                        {"type": "text", "text": "what is this?"}
                    ]},
                    {"role": "assistant", "content": "Let me look.", "tool_calls": [
                        {"id": "c1", "type": "function",
                         "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                        {"id": "c2", "type": "function",
                         "function": {"name": "clock", "arguments": "{}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "c1", "content": "{\"sky\":\"clear\"}"},
                    {"role": "tool", "tool_call_id": "c2", "content": "no clock"},
                    {"role": "assistant", "content": "Clear in Paris."},
                    {"role": "user", "content": "thanks"}
                ]
            })
        );
        assert_eq!(
            chat,
            Chat {
                id: "chat-1".to_owned(),
                message_id: None
            }
        );
    }

    #[test]
    fn regenerating_drops_the_answer_it_replaces_and_keeps_its_id() {
        let answer =
            json!({"id": "a1", "role": "assistant", "parts": [{"type": "text", "text": "old"}]});
        let (request, chat) = parsed(json!({
            "id": "c", "trigger": "regenerate-message",
            "messages": [user("u1", "hi"), answer.clone()]
        }));
        assert_eq!(
            request["messages"],
            json!([{"role": "user", "content": "hi"}])
        );
        assert_eq!(chat.message_id.as_deref(), Some("a1"));
        let (_, chat) = parsed(json!({
            "id": "c", "trigger": "regenerate-message", "messageId": "a0",
            "messages": [user("u1", "hi"), answer.clone()]
        }));
        assert_eq!(chat.message_id.as_deref(), Some("a0"));
        // Sending tool results continues the assistant message they belong to.
        let (_, chat) = parsed(json!({
            "id": "c", "trigger": "submit-message",
            "messages": [user("u1", "hi"), answer]
        }));
        assert_eq!(chat.message_id.as_deref(), Some("a1"));
        // Editing a user message (its id in `messageId`) answers anew.
        let (_, chat) = parsed(json!({
            "id": "c", "trigger": "submit-message", "messageId": "u1",
            "messages": [user("u1", "hi")]
        }));
        assert_eq!(chat.message_id, None);
    }

    #[test]
    fn bad_bodies_are_refused_naming_the_field() {
        let hi = user("u", "hi");
        let cases = [
            (json!([]), "JSON object"),
            (json!({"messages": [hi]}), "`id` (the chat id) is required"),
            (
                json!({"id": 5, "messages": [hi]}),
                "`id` (the chat id) must be a string",
            ),
            (
                json!({"id": "", "messages": [hi]}),
                "`id` must be 1 to 256 bytes",
            ),
            (json!({"id": "c"}), "`messages` is required"),
            (
                json!({"id": "c", "messages": []}),
                "`messages` must not be empty",
            ),
            (
                json!({"id": "c", "messages": {}}),
                "`messages` must be an array",
            ),
            (
                json!({"id": "c", "messages": [hi], "trigger": "resume"}),
                "`trigger` must be",
            ),
            (
                json!({"id": "c", "messages": [hi], "messageId": 3}),
                "`messageId` must be",
            ),
            (
                json!({"id": "c", "messages": [7]}),
                "`messages[0]` must be an object",
            ),
            (
                json!({"id": "c", "messages": [{"role": "tool", "parts": []}]}),
                "`messages[0].role` must be",
            ),
            (
                json!({"id": "c", "messages": [{"role": "user"}]}),
                "`messages[0].parts` is required",
            ),
            (
                json!({"id": "c", "messages": [{"role": "user", "parts": []}]}),
                "`messages[0].parts` has no text or image",
            ),
            (
                json!({"id": "c", "messages": [{"role": "user", "parts": [{"text": "x"}]}]}),
                "`messages[0].parts[0].type` must be a string",
            ),
            (
                json!({"id": "c", "messages": [{"role": "user", "parts": [{"type": "text"}]}]}),
                "`messages[0].parts[0].text` must be a string",
            ),
            (
                json!({"id": "c", "messages": [{"role": "user", "parts": [{"type": "file", "mediaType": "application/pdf", "url": "u"}]}]}),
                "`messages[0].parts[0].mediaType` `application/pdf`: only images",
            ),
            (
                json!({"id": "c", "messages": [{"role": "user", "parts": [{"type": "tool-x", "toolCallId": "c", "state": "input-available"}]}]}),
                "`messages[0].parts[0].type` `tool-x` cannot be sent in a user message",
            ),
            (
                json!({"id": "c", "messages": [hi, {"role": "assistant", "parts": [{"type": "tool-x", "state": "output-available"}]}]}),
                "`messages[1].parts[0].toolCallId` must be a string",
            ),
            (
                json!({"id": "c", "messages": [hi, {"role": "assistant", "parts": [{"type": "tool-x", "toolCallId": "c", "state": "done"}]}]}),
                "`messages[1].parts[0].state` `done` is not a tool call state",
            ),
            (
                json!({"id": "c", "messages": [hi], "model": 4}),
                "`model` must be a non-empty string",
            ),
        ];
        for (body, expected) in cases {
            let message = match parse(body.to_string().as_bytes()) {
                Ok(_) => panic!("{body} should be refused"),
                Err(error) => error.message(),
            };
            assert!(
                message.contains(expected),
                "{body}: got {message:?}, wanted {expected:?}"
            );
        }
    }
}
