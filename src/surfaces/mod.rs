//! The ways clients talk to tokenrelay, one folder each: `tokenrelay`
//! (`/api/chat`, our protocol) and `openai` (`/v1`, for OpenAI SDKs). A
//! surface starts generations through `routing` and only encodes what
//! their followers read; `sse` frames the responses they all stream.

mod openai;
mod sse;
mod tokenrelay;

use axum::Router;

use crate::state::AppState;

/// Every surface's routes.
pub(crate) fn router() -> Router<AppState> {
    tokenrelay::router().merge(openai::router())
}
