//! Placeholder request.

use serde_json::{Value, json};

use crate::error::Error;
use crate::providers::conversation::Conversation;

pub(super) fn body(
    _conversation: Conversation,
    model: &str,
    max_tokens: u64,
) -> Result<Value, Error> {
    Ok(json!({"model": model, "max_tokens": max_tokens, "stream": true}))
}
