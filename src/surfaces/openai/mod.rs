//! The OpenAI-compatible face of tokenrelay: `POST /v1/chat/completions` and
//! `GET /v1/models`, so that code written for an OpenAI SDK only changes its
//! base URL and gains the key hiding, timeouts, cancellation and metrics of
//! `/api/chat`.
//!
//! It is a second framing of the same generations, not a second relay: a
//! request starts a generation exactly as `/api/chat` does
//! (`routing`), and what its follower reads — events already
//! normalized from whichever dialect the upstream spoke — is re-encoded as
//! `chat.completion.chunk`s, or assembled into one `chat.completion` for a
//! client that did not ask to stream.
//!
//! Where OpenAI has no word for ours, this module decides:
//! - a generation stopped on request (`cancelled`) finishes with `stop`, the
//!   only reason every SDK's enum accepts that describes it;
//! - a failure after the stream began is one `{"error": {...}}` chunk, the
//!   shape the SDKs raise as an error, and no `[DONE]` follows it, so that
//!   nothing can take the answer for complete;
//! - no OpenAI client can resume, so a generation is stopped the moment its
//!   client goes away rather than after the resume grace period;
//! - a tool call whose upstream sent no id gets one (`call_<stream>_<choice>_<index>`),
//!   because clients need it to send the tool's result back.

mod assemble;
mod encode;
mod error;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures_util::{StreamExt, stream};

use self::assemble::assemble;
use self::encode::ChunkEncoder;
use self::error::OpenAiError;
use super::sse;
use crate::error::Error;
use crate::event::{ErrorCode, FinishReason};
use crate::http::extract::JsonBody;
use crate::policy::Grant;
use crate::request::ChatRequest;
use crate::state::AppState;
use crate::streams::{Caller, Follower, Generation, StreamId};

/// Sent if one of our own chunks ever failed to serialize (a bug): the
/// client is told, rather than shown a silent gap.
const ENCODING_FAILED: &str = r#"{"error":{"code":"internal_error","message":"a chunk could not be encoded","type":"server_error"}}"#;

/// The `/v1` routes; `http` puts them behind the same layers as `/api`.
pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/v1/models", get(models))
}

/// `POST /v1/chat/completions`: chunks when the client asked to stream,
/// else one `chat.completion` once the generation is over.
async fn completions(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(grant): Extension<Grant>,
    JsonBody(body): JsonBody,
) -> Result<Response, OpenAiError> {
    let request = ChatRequest::from_json(&body)?;
    let delivery = request.delivery();
    let (id, follower) = state
        .routes
        .open(&state.generations, &state.metrics, caller, &grant, request)
        .await?;
    let answer = Answer {
        stream_id: id,
        id: format!("chatcmpl-{id}"),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs()),
        _stop: StopWhenGone(state.generations.find(id, caller)),
    };
    if delivery.stream {
        let encoder = ChunkEncoder {
            answer,
            model: String::new(),
            include_usage: delivery.include_usage,
            choices: Vec::new(),
            calls: Vec::new(),
            failed: false,
            json: Vec::new(),
        };
        return Ok(stream_response(
            id,
            follower,
            encoder,
            state.config.keepalive,
        ));
    }
    let assembled = assemble(follower, state.config.resume.max_stream_bytes).await?;
    Ok(Json(assembled.completion(&answer)?).into_response())
}

/// `GET /v1/models`: the upstream's list (the demo model's, with the demo).
async fn models(State(state): State<AppState>) -> Result<Response, OpenAiError> {
    let list = state.routes.models().await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        list,
    )
        .into_response())
}

/// What every chunk of one answer, or its completion, repeats.
#[derive(Debug)]
struct Answer {
    stream_id: StreamId,
    /// `chatcmpl-<stream_id>`.
    id: String,
    /// Unix seconds.
    created: u64,
    _stop: StopWhenGone,
}

impl Answer {
    /// The id of a tool call whose upstream sent none.
    fn call_id(&self, choice: u32, index: u32) -> String {
        format!("call_{}_{choice}_{index}", self.stream_id)
    }
}

/// Stops the generation once its `/v1` client is gone. OpenAI clients never
/// resume, so the grace period `/api/chat` gives a reconnect would only keep
/// the upstream generating, and billing, for nobody. Stopping a generation
/// that already finished does nothing.
#[derive(Debug)]
struct StopWhenGone(Option<Arc<Generation>>);

impl Drop for StopWhenGone {
    fn drop(&mut self) {
        if let Some(generation) = &self.0 {
            generation.abandon();
        }
    }
}

// ---- streaming: chat.completion.chunk -------------------------------------

fn stream_response(
    id: StreamId,
    follower: Follower,
    mut encoder: ChunkEncoder,
    keepalive: Duration,
) -> Response {
    let events =
        follower.flat_map(move |entry| stream::iter(encoder.encode(&entry).into_iter().flatten()));
    sse::sse(id, events, keepalive)
}

// ---- shared ----------------------------------------------------------------

/// OpenAI's spelling of a finish reason. A generation stopped on request has
/// none; `stop` describes it and is accepted by every SDK's enum, where
/// `cancelled` would fail strictly typed clients.
fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Cancelled => FinishReason::Stop.as_str(),
        reason => reason.as_str(),
    }
}

fn resume_gap() -> Error {
    Error::Interrupted {
        code: ErrorCode::ResumeGap,
        message: "this client fell further behind the generation than RESUME_MAX_STREAM_BYTES \
                  keeps; the answer is incomplete"
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::assemble::Assembled;
    use super::*;
    use crate::event::StreamEvent;

    fn answer() -> Answer {
        let stream_id = StreamId::parse(&"ab".repeat(16)).unwrap_or_else(|| panic!("an id"));
        Answer {
            stream_id,
            id: format!("chatcmpl-{stream_id}"),
            created: 7,
            _stop: StopWhenGone(None),
        }
    }

    fn token(text: &str, refusal: bool, choice: Option<u32>) -> StreamEvent {
        StreamEvent::Token {
            token: text.to_owned(),
            refusal,
            choice,
        }
    }

    fn call(index: u32, id: Option<&str>, name: Option<&str>, arguments: &str) -> StreamEvent {
        StreamEvent::ToolCall {
            index,
            id: id.map(str::to_owned),
            name: name.map(str::to_owned),
            arguments: Some(arguments.to_owned()),
            choice: None,
        }
    }

    fn assemble_all(events: Vec<StreamEvent>) -> Result<serde_json::Value, Error> {
        let mut assembled = Assembled::default();
        for event in &events {
            assembled.apply(event)?;
        }
        let answer = answer();
        let completion = assembled.completion(&answer)?;
        serde_json::to_value(&completion).map_err(|error| Error::Internal(error.to_string()))
    }

    #[test]
    fn a_whole_answer_is_assembled_per_choice_with_usage() {
        let usage = RawValue::from_string(r#"{"prompt_tokens":1,"vendor":{"x":2}}"#.to_owned())
            .unwrap_or_else(|error| panic!("{error}"));
        let completion = assemble_all(vec![
            StreamEvent::Start {
                stream_id: "s".to_owned(),
                model: "m".to_owned(),
                upstream: None,
            },
            StreamEvent::Reasoning {
                token: "hm".to_owned(),
                choice: None,
            },
            token("Hel", false, None),
            token("lo", false, None),
            token("No", false, Some(1)),
            token("sorry", true, Some(2)),
            call(1, Some("c1"), Some("second"), "{}"),
            call(0, None, Some("first"), "{\"a\""),
            call(0, None, None, ":1}"),
            StreamEvent::Finish {
                finish_reason: FinishReason::ToolCalls,
                usage: Some(usage),
            },
        ])
        .unwrap_or_else(|error| panic!("{error}"));
        let stream_id = "ab".repeat(16);
        assert_eq!(
            completion,
            serde_json::json!({
                "id": format!("chatcmpl-{stream_id}"),
                "object": "chat.completion",
                "created": 7,
                "model": "m",
                "choices": [
                    {"index": 0, "finish_reason": "tool_calls", "message": {
                        "role": "assistant", "content": "Hello", "refusal": null,
                        "reasoning_content": "hm",
                        "tool_calls": [
                            {"id": format!("call_{stream_id}_0_0"), "type": "function",
                             "function": {"name": "first", "arguments": "{\"a\":1}"}},
                            {"id": "c1", "type": "function",
                             "function": {"name": "second", "arguments": "{}"}}
                        ]}},
                    {"index": 1, "finish_reason": "tool_calls", "message": {
                        "role": "assistant", "content": "No", "refusal": null}},
                    {"index": 2, "finish_reason": "tool_calls", "message": {
                        "role": "assistant", "content": null, "refusal": "sorry"}}
                ],
                "usage": {"prompt_tokens": 1, "vendor": {"x": 2}}
            })
        );
    }

    #[test]
    fn an_in_stream_error_fails_the_whole_answer_with_its_status() {
        let cases = [
            (ErrorCode::UpstreamError, 502, "upstream_error"),
            (ErrorCode::UpstreamDisconnected, 502, "upstream_error"),
            (ErrorCode::InvalidUpstreamData, 502, "upstream_error"),
            (ErrorCode::UpstreamTimeout, 504, "upstream_error"),
            (ErrorCode::ShuttingDown, 503, "server_error"),
        ];
        for (code, status, kind) in cases {
            let error = assemble_all(vec![
                token("partial", false, None),
                StreamEvent::error(code, "it broke"),
            ])
            .err()
            .unwrap_or_else(|| panic!("{code:?} should fail the answer"));
            assert_eq!(error.status().as_u16(), status, "{code:?}");
            let body = serde_json::to_value(error.body()).unwrap_or_default();
            assert_eq!(
                body,
                serde_json::json!({"error": {"code": code.as_str(), "message": "it broke", "type": kind}}),
                "{code:?}"
            );
        }
    }

    #[test]
    fn cancelled_is_spelled_stop() {
        assert_eq!(finish_reason(FinishReason::Cancelled), "stop");
        assert_eq!(finish_reason(FinishReason::Length), "length");
        assert_eq!(finish_reason(FinishReason::ToolCalls), "tool_calls");
    }
}
