//! The ways clients talk to tokenrelay, one folder each: `tokenrelay`
//! (`/api/chat`, our protocol), `openai` (`/v1`, for OpenAI SDKs) and
//! `ai_sdk` (`/api/ui/chat`, for the Vercel AI SDK's `useChat`). A surface
//! starts generations through `routing` and only encodes what their
//! followers read; `sse` frames the responses they all stream, and
//! `attach` finds a generation again to resume or stop it.

mod ai_sdk;
mod attach;
mod openai;
mod sse;
mod tokenrelay;

use axum::Router;

use crate::state::AppState;

/// Every surface's routes.
pub(crate) fn router() -> Router<AppState> {
    tokenrelay::router()
        .merge(openai::router())
        .merge(ai_sdk::router())
}
