//! Placeholder request.

use serde_json::{Value, json};

use crate::error::Error;
use crate::providers::conversation::Conversation;

pub(super) fn body(_conversation: Conversation, model: &str) -> Result<Value, Error> {
    Ok(json!({"model": model, "stream": true}))
}
