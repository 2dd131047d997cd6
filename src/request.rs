//! A chat request as a client sends it, validated once, with errors that
//! name the offending field; every surface produces one and every provider
//! dialect builds its upstream body from it.
//!
//! Fields we do not know are kept and forwarded untouched (`temperature`,
//! `tools`, vendor extras...); the proxy owns only `stream` and
//! `stream_options`, because it must always stream and always get usage.

use serde_json::{Map, Value, json};

use crate::error::Error;

const ROLES: [&str; 6] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// A validated chat request.
#[derive(Debug, Clone)]
pub(crate) struct ChatRequest {
    fields: Map<String, Value>,
    model: Option<String>,
}

impl ChatRequest {
    /// Parses a JSON body: `{"messages": [...]}` or `{"prompt": "..."}`.
    pub(crate) fn from_json(body: &[u8]) -> Result<Self, Error> {
        let value: Value = serde_json::from_slice(body).map_err(|error| {
            Error::InvalidRequest(format!("the body is not valid JSON: {error}"))
        })?;
        let Value::Object(fields) = value else {
            return Err(invalid("the body must be a JSON object"));
        };
        Self::from_fields(fields)
    }

    /// A body another surface has already turned into chat-completions
    /// fields (the AI SDK's UI messages).
    pub(crate) fn from_object(fields: Map<String, Value>) -> Result<Self, Error> {
        Self::from_fields(fields)
    }

    /// The `GET /api/chat?prompt=...&model=...` form.
    pub(crate) fn from_prompt(
        prompt: Option<String>,
        model: Option<String>,
    ) -> Result<Self, Error> {
        let mut fields = Map::new();
        if let Some(prompt) = prompt {
            fields.insert("prompt".to_owned(), Value::String(prompt));
        }
        if let Some(model) = model {
            fields.insert("model".to_owned(), Value::String(model));
        }
        Self::from_fields(fields)
    }

    fn from_fields(mut fields: Map<String, Value>) -> Result<Self, Error> {
        // Messages are checked where they are, not copied: they are most of
        // a long conversation's body.
        match (fields.remove("prompt"), fields.get("messages")) {
            (Some(_), Some(_)) => {
                return Err(invalid("give either `messages` or `prompt`, not both"));
            }
            (Some(Value::String(prompt)), None) if !prompt.trim().is_empty() => {
                let messages = json!([{"role": "user", "content": prompt}]);
                fields.insert("messages".to_owned(), messages);
            }
            (Some(Value::String(_)), None) => return Err(invalid("`prompt` must not be empty")),
            (Some(_), None) => return Err(invalid("`prompt` must be a string")),
            (None, Some(messages)) => validate_messages(messages)?,
            (None, None) => return Err(invalid("`messages` is required (or `prompt`)")),
        }
        let model = match fields.remove("model") {
            None | Some(Value::Null) => None,
            Some(Value::String(model)) if !model.trim().is_empty() => Some(model),
            Some(_) => return Err(invalid("`model` must be a non-empty string")),
        };
        match fields.get("stream") {
            None | Some(Value::Bool(_)) | Some(Value::Null) => {}
            Some(_) => return Err(invalid("`stream` must be a boolean")),
        }
        Ok(Self { fields, model })
    }

    /// The model the client asked for, if any.
    pub(crate) fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// How the client asked to be answered. `/v1` answers in kind, so this is
    /// read before a dialect builds the upstream body, which overwrites both.
    pub(crate) fn delivery(&self) -> Delivery {
        Delivery {
            stream: self.fields.get("stream") == Some(&Value::Bool(true)),
            include_usage: self
                .fields
                .get("stream_options")
                .and_then(|options| options.get("include_usage"))
                == Some(&Value::Bool(true)),
        }
    }

    /// The messages, validated (`prompt` became one).
    pub(crate) fn messages(&self) -> &[Value] {
        self.fields
            .get("messages")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// The answer's length limit the client set: the larger of
    /// `max_completion_tokens` and `max_tokens`, since an upstream may honour either.
    pub(crate) fn output_limit(&self) -> Result<Option<u64>, Error> {
        let mut limit = None;
        for name in ["max_completion_tokens", "max_tokens"] {
            match self.fields.get(name) {
                None | Some(Value::Null) => {}
                Some(value) => {
                    let value = value
                        .as_u64()
                        .ok_or_else(|| invalid(format!("`{name}` must be a whole number")))?;
                    limit = limit.max(Some(value));
                }
            }
        }
        Ok(limit)
    }

    /// Sets the answer's length limit of a request that has none, as
    /// `max_tokens`, which every dialect reads.
    pub(crate) fn set_output_limit(&mut self, limit: u64) {
        self.fields
            .insert("max_tokens".to_owned(), Value::from(limit));
    }

    /// `n`: how many choices the client asked for; 1 when it did not say.
    pub(crate) fn choices(&self) -> Result<u64, Error> {
        match self.fields.get("n") {
            None | Some(Value::Null) => Ok(1),
            Some(value) => value
                .as_u64()
                .ok_or_else(|| invalid("`n` must be a whole number")),
        }
    }

    /// The fields as the client sent them, for a dialect to build its
    /// upstream body from.
    pub(crate) fn into_fields(self) -> Map<String, Value> {
        self.fields
    }
}

/// What the client itself asked for in `stream` and `stream_options`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// Server-sent chunks rather than one JSON answer.
    pub stream: bool,
    /// A final usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
}

fn validate_messages(messages: &Value) -> Result<(), Error> {
    let Value::Array(messages) = messages else {
        return Err(invalid("`messages` must be an array"));
    };
    if messages.is_empty() {
        return Err(invalid("`messages` must not be empty"));
    }
    for (index, message) in messages.iter().enumerate() {
        let Value::Object(message) = message else {
            return Err(invalid(format!("`messages[{index}]` must be an object")));
        };
        let role = match message.get("role") {
            Some(Value::String(role)) if ROLES.contains(&role.as_str()) => role.as_str(),
            Some(Value::String(role)) => {
                return Err(invalid(format!(
                    "`messages[{index}].role` must be one of {}, not `{role}`",
                    ROLES.join(", ")
                )));
            }
            Some(_) => {
                return Err(invalid(format!(
                    "`messages[{index}].role` must be a string"
                )));
            }
            None => return Err(invalid(format!("`messages[{index}].role` is required"))),
        };
        // An assistant turn that only calls tools legitimately has no text.
        let may_be_empty = role == "assistant" && message.contains_key("tool_calls");
        let empty = match message.get("content") {
            Some(Value::String(text)) => text.trim().is_empty(),
            Some(Value::Array(parts)) => parts.is_empty(),
            None | Some(Value::Null) => true,
            Some(_) => {
                return Err(invalid(format!(
                    "`messages[{index}].content` must be a string or an array of content parts"
                )));
            }
        };
        if empty && !may_be_empty {
            return Err(invalid(format!(
                "`messages[{index}].content` must not be empty"
            )));
        }
    }
    Ok(())
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidRequest(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(body: &str) -> String {
        match ChatRequest::from_json(body.as_bytes()) {
            Ok(_) => panic!("{body} should be refused"),
            Err(error) => error.message(),
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("{", "not valid JSON"),
            ("[]", "JSON object"),
            ("{}", "`messages` is required"),
            (r#"{"messages": "hi"}"#, "`messages` must be an array"),
            (r#"{"messages": []}"#, "`messages` must not be empty"),
            (r#"{"messages": [1]}"#, "`messages[0]` must be an object"),
            (
                r#"{"messages": [{"content": "x"}]}"#,
                "`messages[0].role` is required",
            ),
            (
                r#"{"messages": [{"role": "wizard", "content": "x"}]}"#,
                "`messages[0].role` must be one of",
            ),
            (
                r#"{"messages": [{"role": 7, "content": "x"}]}"#,
                "`messages[0].role` must be a string",
            ),
            (
                r#"{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": ""}]}"#,
                "`messages[1].content` must not be empty",
            ),
            (
                r#"{"messages": [{"role": "user", "content": 5}]}"#,
                "`messages[0].content` must be a string",
            ),
            (r#"{"prompt": ""}"#, "`prompt` must not be empty"),
            (r#"{"prompt": 3}"#, "`prompt` must be a string"),
            (r#"{"prompt": "a", "messages": []}"#, "not both"),
            (
                r#"{"prompt": "a", "model": 4}"#,
                "`model` must be a non-empty string",
            ),
            (
                r#"{"prompt": "a", "stream": "yes"}"#,
                "`stream` must be a boolean",
            ),
        ];
        for (body, expected) in cases {
            let message = refusal(body);
            assert!(
                message.contains(expected),
                "{body}: got {message:?}, wanted {expected:?}"
            );
        }
    }

    #[test]
    fn delivery_is_what_the_client_asked_for_not_what_goes_upstream() {
        let cases = [
            (r#"{"prompt": "hi"}"#, false, false),
            (r#"{"prompt": "hi", "stream": false}"#, false, false),
            (r#"{"prompt": "hi", "stream": true}"#, true, false),
            (
                r#"{"prompt": "hi", "stream": true, "stream_options": {"include_usage": true}}"#,
                true,
                true,
            ),
            (
                r#"{"prompt": "hi", "stream": true, "stream_options": {"include_usage": false}}"#,
                true,
                false,
            ),
        ];
        for (body, stream, include_usage) in cases {
            let request =
                ChatRequest::from_json(body.as_bytes()).unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(
                request.delivery(),
                Delivery {
                    stream,
                    include_usage
                },
                "{body}"
            );
        }
    }

    #[test]
    fn tool_only_assistant_turns_and_content_parts_are_valid() {
        let body = br#"{"model": "m", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
        ]}"#;
        let request = ChatRequest::from_json(body).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(request.model(), Some("m"));
    }
}
