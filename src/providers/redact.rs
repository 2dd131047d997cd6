//! Keeps our upstream key out of everything an upstream says back.
//!
//! Upstreams quote what they were sent when they complain: the key in an
//! "invalid API key" message, a request dump in a 200 that is not an event
//! stream, an error event in the middle of a stream. Every text that comes
//! from an upstream passes through [`Redactor::clean`] before it can reach a
//! client, a log or a metric label, and it masks before it cuts, so a key
//! that straddles the cut is masked whole instead of left half visible.
//!
//! The key is found however the upstream wrote it: as it is, JSON-escaped
//! (`\u002d`, `\/`), percent-encoded, as an HTML character reference, in
//! base64, or only a long enough run of its characters (an upstream that
//! shows the first forty characters of a key has still leaked them).

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// A run of this many of the key's characters in a row is masked even when
/// the rest of the key is not there; shorter runs are ordinary text.
const MIN_RUN: usize = 12;
/// What a masked key becomes.
const MASK: &str = "***";

/// Masks our keys in upstream text: the upstream's API key, and the values
/// of its configured headers that carry credentials.
///
/// Every upstream stream carries one, so the keys are shared, not copied.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    secrets: Arc<[Key]>,
}

/// One secret, in the forms it is looked for in.
struct Key {
    key: Vec<char>,
    /// The key's base64 forms, at each of the three alignments it can
    /// start at inside a longer encoded text.
    encoded: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor").finish_non_exhaustive()
    }
}

impl Redactor {
    pub(crate) fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            secrets: secrets
                .into_iter()
                .filter(|secret| !secret.is_empty())
                .map(|secret| Key {
                    key: secret.chars().collect(),
                    encoded: base64_forms(secret.as_bytes()),
                })
                .collect(),
        }
    }

    /// `text` with every trace of the key masked, then cut to `max_chars`
    /// characters (the cut marked with `…`).
    pub(crate) fn clean(&self, text: &str, max_chars: usize) -> String {
        // Only what survives the cut needs masking, plus enough beyond it
        // for a key that straddles the cut in its longest spelling (a
        // percent-encoded 4-byte character is 12 characters).
        let longest = self.secrets.iter().map(|secret| secret.key.len()).max();
        let margin = longest.unwrap_or(0).saturating_mul(12);
        let scanned = prefix(text, max_chars.saturating_add(margin));
        let masked = self
            .secrets
            .iter()
            .fold(scanned.to_owned(), |text, secret| secret.mask(&text));
        truncate(masked, max_chars)
    }
}

impl Key {
    fn mask(&self, text: &str) -> String {
        let mut text = self.mask_runs(text);
        for form in &self.encoded {
            if text.contains(form.as_str()) {
                text = text.replace(form.as_str(), MASK);
            }
        }
        text
    }

    fn mask_runs(&self, text: &str) -> String {
        let mut masked = String::with_capacity(text.len());
        let mut copied = 0;
        let mut at = 0;
        while let Some(here) = text.get(at..).and_then(|rest| rest.chars().next()) {
            match self.longest_run(text, at) {
                Some(end) => {
                    masked.push_str(&text[copied..at]);
                    masked.push_str(MASK);
                    copied = end;
                    at = end;
                }
                None => at += here.len_utf8(),
            }
        }
        masked.push_str(&text[copied..]);
        masked
    }

    /// Where the longest run of the key's characters starting at byte `at`
    /// ends, if it is long enough to mask.
    fn longest_run(&self, text: &str, at: usize) -> Option<usize> {
        let needed = self.key.len().min(MIN_RUN);
        let mut longest = None;
        for start in 0..=self.key.len() - needed {
            let mut end = at;
            let mut matched = 0;
            for &wanted in &self.key[start..] {
                match spelled_at(text, end, wanted) {
                    Some(len) => {
                        end += len;
                        matched += 1;
                    }
                    None => break,
                }
            }
            if matched >= needed && longest.is_none_or(|longest| end > longest) {
                longest = Some(end);
            }
        }
        longest
    }
}

/// How many bytes of `text` from `at` spell `wanted`, in any of the ways an
/// upstream may have written it, if they do.
fn spelled_at(text: &str, at: usize, wanted: char) -> Option<usize> {
    let rest = text.get(at..)?;
    if rest.starts_with(wanted) {
        return Some(wanted.len_utf8());
    }
    let bytes = rest.as_bytes();
    match bytes.first()? {
        b'\\' => json_escape(bytes, wanted),
        b'%' => percent_encoded(bytes, wanted),
        b'&' => character_reference(rest, wanted),
        _ => None,
    }
}

/// `\u002d`, `\/`, and the same escaped again (`\\u002d`): a JSON
/// text quoted inside another JSON string.
fn json_escape(bytes: &[u8], wanted: char) -> Option<usize> {
    let slashes = bytes.iter().take_while(|&&byte| byte == b'\\').count();
    let escaped = &bytes[slashes..];
    match escaped.first()? {
        b'u' => {
            let code = hex_value(escaped.get(1..5)?)?;
            (char::from_u32(code) == Some(wanted)).then_some(slashes + 5)
        }
        &byte if matches!(byte, b'/' | b'"') => (char::from(byte) == wanted).then_some(slashes + 1),
        _ if wanted == '\\' && slashes >= 2 => Some(2),
        _ => None,
    }
}

/// `%2D`, or `%252D` for a URL encoded twice.
fn percent_encoded(bytes: &[u8], wanted: char) -> Option<usize> {
    let mut utf8 = [0u8; 4];
    let mut len = 0;
    for &byte in wanted.encode_utf8(&mut utf8).as_bytes() {
        let rest = bytes.get(len..)?;
        let once = rest.strip_prefix(b"%")?;
        let digits = once
            .strip_prefix(b"25")
            .filter(|twice| twice.len() >= 2 && hex_value(&twice[..2]) == Some(u32::from(byte)));
        let (digits, taken) = match digits {
            Some(twice) => (&twice[..2], 5),
            None => (once.get(..2)?, 3),
        };
        if hex_value(digits)? != u32::from(byte) {
            return None;
        }
        len += taken;
    }
    Some(len)
}

/// `&#45;` or `&#x2d;`.
fn character_reference(rest: &str, wanted: char) -> Option<usize> {
    let body = rest.strip_prefix("&#")?;
    let end = body.find(';').filter(|&end| end <= 8)?;
    let number = &body[..end];
    let code = match number.strip_prefix(['x', 'X']) {
        Some(hex) => hex_value(hex.as_bytes())?,
        None => number.parse().ok()?,
    };
    (char::from_u32(code) == Some(wanted)).then_some(2 + end + 1)
}

fn hex_value(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 6 {
        return None;
    }
    let text = std::str::from_utf8(digits).ok()?;
    u32::from_str_radix(text, 16).ok()
}

/// The parts of the key's base64 encoding that depend on the key alone, at
/// each alignment: an encoder that saw bytes before the key writes
/// different characters only where those bytes and the key's share one.
fn base64_forms(key: &[u8]) -> Vec<String> {
    if key.len() < MIN_RUN {
        return Vec::new();
    }
    let mut forms = Vec::new();
    for offset in 0..3 {
        let mut padded = vec![0u8; offset];
        padded.extend_from_slice(key);
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(&padded);
            // Characters cover 6 bits each; skip those that hold bits of the
            // padding, and the last one, which may hold bits of what follows.
            let first = (offset * 8).div_ceil(6);
            let last = ((offset + key.len()) * 8) / 6;
            if let Some(form) = encoded.get(first..last) {
                if !forms.iter().any(|known| known == form) {
                    forms.push(form.to_owned());
                }
            }
        }
    }
    forms
}

/// At most `max_chars` characters of `text`.
fn prefix(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

/// `text` cut to `max_chars` characters at a character boundary, the cut
/// marked with `…` so a reader knows text is missing.
pub(crate) fn truncate(mut text: String, max_chars: usize) -> String {
    if let Some((cut, _)) = text.char_indices().nth(max_chars) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-proj-Ab12_cd34-EF56/gh78+ij90";

    fn redactor() -> Redactor {
        Redactor::new([KEY])
    }

    fn percent(text: &str) -> String {
        text.bytes().map(|byte| format!("%{byte:02X}")).collect()
    }

    fn json_escaped(text: &str) -> String {
        text.chars()
            .map(|c| format!("\\u{:04x}", u32::from(c)))
            .collect()
    }

    #[test]
    fn every_spelling_of_the_key_is_masked() {
        let mixed: String = KEY
            .chars()
            .enumerate()
            .map(|(i, c)| match i % 4 {
                0 => c.to_string(),
                1 => format!("\\u{:04X}", u32::from(c)),
                2 => format!("%{:02x}", u32::from(c)),
                _ => format!("&#{};", u32::from(c)),
            })
            .collect();
        let spellings = [
            KEY.to_owned(),
            KEY.replace('-', "\\u002d"),
            KEY.replace('/', "\\/"),
            json_escaped(KEY),
            json_escaped(KEY).replace('\\', "\\\\"),
            percent(KEY),
            percent(KEY).to_lowercase(),
            percent(KEY).replace('%', "%25"),
            KEY.replace('/', "&#x2F;"),
            mixed,
            STANDARD_NO_PAD.encode(KEY),
            STANDARD_NO_PAD.encode(format!("Bearer {KEY}")),
            URL_SAFE_NO_PAD.encode(format!("x:{KEY}")),
            // Only a long run of the key: still most of it.
            KEY[..20].to_owned(),
            KEY[8..].to_owned(),
        ];
        for spelling in spellings {
            let text = format!("Incorrect API key provided: {spelling}. See the docs.");
            let cleaned = redactor().clean(&text, 1_000);
            assert!(cleaned.contains(MASK), "{spelling} became {cleaned}");
            for run in KEY.as_bytes().windows(MIN_RUN) {
                let run = std::str::from_utf8(run).unwrap_or_default();
                assert!(!cleaned.contains(run), "{spelling} left {run} in {cleaned}");
            }
            assert!(cleaned.starts_with("Incorrect API key provided: "));
            assert!(cleaned.ends_with(". See the docs."), "{cleaned}");
        }
    }

    #[test]
    fn the_key_is_masked_before_the_text_is_cut() {
        for cut in 0..KEY.len() + 8 {
            let text = format!("{}{KEY} and more", "x".repeat(100 - cut.min(100)));
            let cleaned = redactor().clean(&text, 100);
            let visible = cleaned.trim_end_matches('…');
            let leaked = (MIN_RUN.min(4)..=KEY.len())
                .rev()
                .find(|&len| visible.ends_with(&KEY[..len]));
            assert_eq!(leaked, None, "cut {cut}: {cleaned}");
        }
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        let text =
            "model `gpt-4o` does not exist; sk- prefixes are keys, \\u0041 is A, 100% sure &#;";
        assert_eq!(redactor().clean(text, 1_000), text);
        assert_eq!(Redactor::new([]).clean(text, 1_000), text);
        let short_key = Redactor::new(["abc"]);
        assert_eq!(short_key.clean("xabcx ab", 100), "x***x ab");
    }

    #[test]
    fn every_secret_is_masked() {
        let redactor = Redactor::new(["first-key-0123456789", "", "other-token-abcdefghij"]);
        assert_eq!(
            redactor.clean("a first-key-0123456789 b other-token-abcdefghij c", 100),
            "a *** b *** c"
        );
    }

    #[test]
    fn cleaning_is_bounded_by_the_cut() {
        let text = "é".repeat(100_000);
        let cleaned = redactor().clean(&text, 10);
        assert_eq!(cleaned, format!("{}…", "é".repeat(10)));
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("héllo wörld".to_owned(), 4), "héll…");
        assert_eq!(truncate("short".to_owned(), 10), "short");
    }
}
