//! Who owns a generation: an identity derived from the client key that
//! created it, the same on every replica (`docs/PROTOCOL.md` §6), and the
//! chat it answers when a surface names one.

use super::Chat;

/// What a caller's identity is derived from, beside its key. Every replica
/// uses the same, so that they agree on who owns a stream whatever order
/// they list `PROXY_API_KEYS` in.
const IDENTITY_CONTEXT: &[u8] = b"tokenrelay stream owner v1";

/// The same for the `sub` of a signed token, kept apart so that no client
/// key can ever be taken for a token's subject, or the other way round.
const SUBJECT_CONTEXT: &[u8] = b"tokenrelay token subject v1";

/// The authenticated caller: an identity derived from its key, or `None`
/// when auth is off. It is what ties a stream to the key that created it,
/// here and in the store replicas share, which therefore never holds a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Caller(Option<KeyId>);

/// A keyed hash (HMAC-SHA-256, cut to 128 bits) of a client key: the same
/// key gives the same identity on every replica, and the identity does not
/// give the key back.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct KeyId([u8; 16]);

impl KeyId {
    pub(crate) fn of(key: &str) -> Self {
        Self::derived(IDENTITY_CONTEXT, key)
    }

    /// The identity of a signed token's subject: the user stays the owner
    /// of its streams across the tokens its app mints for it.
    pub(crate) fn of_subject(subject: &str) -> Self {
        Self::derived(SUBJECT_CONTEXT, subject)
    }

    fn derived(context: &[u8], text: &str) -> Self {
        let hmac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, context);
        let tag = ring::hmac::sign(&hmac, text.as_bytes());
        let mut id = [0u8; 16];
        id.copy_from_slice(&tag.as_ref()[..16]);
        Self(id)
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl Caller {
    /// The caller when `PROXY_API_KEYS` is unset.
    pub(crate) const OPEN: Self = Self(None);

    /// The caller that presented a key with this identity.
    pub(crate) fn keyed(id: KeyId) -> Self {
        Self(Some(id))
    }

    /// Whether auth is on for this caller.
    pub(crate) fn is_keyed(self) -> bool {
        self.0.is_some()
    }
}

/// `key:<identity>`, or `open` when auth is off: how ownership is written
/// down where replicas share it, and what rate limits count by.
impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(id) => write!(f, "key:{id}"),
            None => f.write_str("open"),
        }
    }
}

/// Whose a new generation is: its caller, and the chat it answers, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    pub(crate) caller: Caller,
    pub(crate) chat: Option<Chat>,
}

impl From<Caller> for Owner {
    fn from(caller: Caller) -> Self {
        Self { caller, chat: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_is_a_keyed_hash_of_the_key() {
        let shown = KeyId::of("alpha").to_string();
        assert_eq!(shown.len(), 32);
        assert!(!shown.contains("alpha"));
        // Replicas of every version must agree: this is what they store.
        assert_eq!(shown, "89945de32b76f9e7ba2e917f7cc1c5f1");
        assert_eq!(
            Caller(Some(KeyId::of("alpha"))).to_string(),
            format!("key:{shown}")
        );
        assert_eq!(Caller::OPEN.to_string(), "open");
    }
}
