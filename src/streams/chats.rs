//! Chats: a name a client gives a conversation, so that a reloaded page can
//! find the conversation's latest generation again without knowing its
//! stream id (the AI SDK resumes by chat id, `docs/PROTOCOL.md` §8).
//!
//! A chat is scoped by its owner exactly as a stream is: another key naming
//! the same chat finds nothing. The index here holds one record per chat
//! whose generation this process still keeps, and forgets it with the
//! generation; with `REDIS_URL`, `cluster` keeps the same record for every
//! replica.

use super::{Caller, Generations, StreamId};
use crate::lock::lock;

/// The chat a new generation answers, as a surface names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chat {
    /// The client's own id for the conversation.
    pub(crate) id: String,
    /// The id the answer's message goes by, when the client chose it;
    /// else the surface derives one from the stream id.
    pub(crate) message_id: Option<String>,
}

/// A chat's latest generation, and whether a client read it to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChatRecord {
    pub(crate) stream: StreamId,
    pub(crate) message_id: Option<String>,
    /// Some client received the whole answer: nobody needs it replayed.
    pub(crate) seen: bool,
}

/// The key of a chat in the index: its owner and its id.
pub(super) type ChatKey = (Caller, String);

impl Generations {
    /// The chat `id` of `caller`, while this process keeps its latest generation.
    pub(crate) fn chat(&self, caller: Caller, id: &str) -> Option<ChatRecord> {
        let key = (caller, id.to_owned());
        let record = lock(&self.registry.chats).get(&key).cloned()?;
        self.find(record.stream, caller).map(|_| record)
    }

    /// Notes that a client read `stream`, chat `id`'s generation, to its
    /// end; a newer generation of the chat is left as it is.
    pub(crate) fn chat_seen(&self, caller: Caller, id: &str, stream: StreamId) {
        let key = (caller, id.to_owned());
        if let Some(record) = lock(&self.registry.chats).get_mut(&key) {
            if record.stream == stream {
                record.seen = true;
            }
        }
    }
}

/// Makes `stream` the latest generation of `chat`.
pub(super) fn record(registry: &super::Registry, owner: Caller, chat: &Chat, stream: StreamId) {
    let record = ChatRecord {
        stream,
        message_id: chat.message_id.clone(),
        seen: false,
    };
    lock(&registry.chats).insert((owner, chat.id.clone()), record);
}

/// Forgets `chat` with its generation `stream`, unless a newer one took its place.
pub(super) fn forget(registry: &super::Registry, owner: Caller, chat: &Chat, stream: StreamId) {
    let mut chats = lock(&registry.chats);
    let key = (owner, chat.id.clone());
    if chats
        .get(&key)
        .is_some_and(|record| record.stream == stream)
    {
        chats.remove(&key);
    }
}
