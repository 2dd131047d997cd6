//! The built-in demo model: a tiny OpenAI-compatible server that tokenrelay
//! starts on a loopback port when no upstream is configured.
//!
//! It is served over real HTTP so that the whole path — reqwest, SSE
//! parsing, translation, the relay — runs exactly as it would against a real
//! API, on a machine with no key and no network.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};

/// The model name the demo answers to.
pub(crate) const MODEL: &str = "tokenrelay-demo";

/// About 30 tokens per second, like a brisk hosted model.
const TOKEN_GAP: Duration = Duration::from_millis(33);

/// Longest part of the prompt quoted back.
const MAX_QUOTE_CHARS: usize = 120;

/// Starts the demo server on `127.0.0.1:0` and returns its base URL.
pub(crate) async fn spawn() -> std::io::Result<String> {
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let addr = listener.local_addr()?;
    let router = Router::new()
        .route("/v1/chat/completions", post(complete))
        .route("/v1/models", get(models));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "the demo model stopped");
        }
    });
    Ok(format!("http://{addr}/v1"))
}

async fn models() -> Response {
    axum::Json(json!({
        "object": "list",
        "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "tokenrelay"}]
    }))
    .into_response()
}

async fn complete(body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let prompt = last_user_text(&request);
    let limit = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|field| request.get(field).and_then(Value::as_u64))
        .map_or(usize::MAX, |limit| limit as usize);
    let include_usage = request
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let answer = answer(&prompt);
    let tokens: Vec<String> = tokenize(&answer).take(limit).collect();
    let finish_reason = if tokenize(&answer).count() > tokens.len() {
        "length"
    } else {
        "stop"
    };
    let usage = json!({
        "prompt_tokens": tokenize(&prompt).count(),
        "completion_tokens": tokens.len(),
        "total_tokens": tokenize(&prompt).count() + tokens.len(),
    });

    let role = chunk(json!({"role": "assistant", "content": ""}), None);
    let finish = chunk(json!({}), Some(finish_reason));
    let usage_chunk = include_usage.then(|| {
        let mut usage_chunk = chunk(json!({}), None);
        usage_chunk["choices"] = json!([]);
        usage_chunk["usage"] = usage;
        usage_chunk
    });
    let paced = stream::iter(tokens).then(|token| async move {
        tokio::time::sleep(TOKEN_GAP).await;
        chunk(json!({"content": token}), None)
    });
    let events = stream::once(async { role })
        .chain(paced)
        .chain(stream::iter(std::iter::once(finish).chain(usage_chunk)))
        .map(|value| Event::default().json_data(value))
        .chain(stream::once(async { Ok(Event::default().data("[DONE]")) }))
        .map(|event| Ok::<_, Infallible>(event.unwrap_or_default()));
    Sse::new(events).into_response()
}

fn chunk(delta: Value, finish_reason: Option<&str>) -> Value {
    json!({
        "id": "chatcmpl-demo",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    })
}

/// The text of the last user message, whether a string or content parts.
fn last_user_text(request: &Value) -> String {
    let message = request
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|messages| {
            messages
                .iter()
                .rev()
                .find(|message| message.get("role").and_then(Value::as_str) == Some("user"))
        });
    match message.and_then(|message| message.get("content")) {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn answer(prompt: &str) -> String {
    let prompt = prompt.split_whitespace().collect::<Vec<_>>().join(" ");
    let quote = match prompt.char_indices().nth(MAX_QUOTE_CHARS) {
        Some((cut, _)) => format!("{}…", &prompt[..cut]),
        None => prompt,
    };
    format!(
        "You said: \"{quote}\". I am the tokenrelay demo model, so this answer is written \
         locally instead of by a real language model. Each word you see travelled over real \
         HTTP as a Server-Sent Event, was parsed by the proxy and was sent on to you as a \
         token event. Set UPSTREAM_BASE_URL to any OpenAI-compatible API to talk to a real model."
    )
}

/// Words with the space that follows them, roughly as real tokenizers split English.
fn tokenize(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split_inclusive(' ').map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_quotes_the_prompt() {
        let request = json!({"messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "what is   SSE?"}]}
        ]});
        let text = answer(&last_user_text(&request));
        assert!(text.starts_with("You said: \"what is SSE?\"."), "{text}");
    }

    #[test]
    fn tokens_rebuild_the_text() {
        let text = answer("hello");
        assert_eq!(tokenize(&text).collect::<String>(), text);
        assert!(tokenize(&text).count() > 30);
    }

    #[test]
    fn long_prompts_are_shortened() {
        let text = answer(&"é".repeat(500));
        assert!(text.contains(&format!("{}…", "é".repeat(MAX_QUOTE_CHARS))));
    }
}
