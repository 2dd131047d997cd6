//! Turns an upstream HTTP body into Server-Sent Events. `eventsource-stream` 0.2.3 parses the
//! fields well, but fed raw network chunks it panics on a leading BOM, re-copies its buffer for
//! every line (quadratic), holds back or loses events that end in a lone CR, and stalls forever
//! after an invalid UTF-8 byte. So a small byte-level framer sits in front of it and hands it
//! only whole, validated, LF-terminated lines: each event's lines together, in one piece, and
//! never more than a few lines at a time.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use eventsource_stream::{EventStream, EventStreamError};
use futures_util::{Stream, StreamExt, future};

pub(super) use eventsource_stream::Event;

/// Why an upstream event stream stopped early.
#[derive(Debug)]
pub(super) enum SseError<E> {
    /// The body stream failed; the cause is available through `source()`.
    Transport(E),
    /// A line was not valid UTF-8.
    InvalidUtf8,
    /// A line, or the event being collected, exceeded the configured limit.
    TooLong {
        /// The limit in bytes.
        limit: usize,
    },
}

impl<E> fmt::Display for SseError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The cause stays behind `source()`: reqwest's message embeds the request URL, and
            // some providers put the API key in its query string.
            Self::Transport(_) => f.write_str("reading the upstream response body failed"),
            Self::InvalidUtf8 => f.write_str("the upstream event stream contained invalid UTF-8"),
            Self::TooLong { limit } => write!(
                f,
                "an upstream event-stream line or event exceeded the {limit}-byte limit"
            ),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for SseError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Transport(err) => Some(err),
            Self::InvalidUtf8 | Self::TooLong { .. } => None,
        }
    }
}

/// Parses `body` into dispatched events. `max_event_bytes` bounds the longest line and the
/// bytes of the lines collected for one pending event (terminators and comment lines are not
/// counted). At end of stream an unterminated last line and an event no blank line completed
/// are discarded, as WHATWG requires. The stream ends after the first error.
pub(super) fn events<S, B, E>(
    body: S,
    max_event_bytes: usize,
) -> impl Stream<Item = Result<Event, SseError<E>>> + Send
where
    S: Stream<Item = Result<B, E>> + Send,
    B: AsRef<[u8]> + Send,
    E: Send,
{
    EventStream::new(Framer::new(body, max_event_bytes)).scan(false, |failed, item| {
        if *failed {
            return future::ready(None);
        }
        let item = item.map_err(|err| match err {
            EventStreamError::Transport(err) => err,
            // Cannot happen: every line the framer hands over is valid UTF-8, LF-terminated and
            // either blank or starting with a field-name character, which the parser always
            // accepts. Should that change, the stream is broken either way.
            EventStreamError::Utf8(_) | EventStreamError::Parser(_) => SseError::InvalidUtf8,
        });
        *failed = item.is_err();
        future::ready(Some(item))
    })
}

const BOM: &[u8] = b"\xEF\xBB\xBF";
const BLANK_LINE: &[u8] = b"\n";
/// The most lines handed over in one piece. Every piece costs eventsource-stream a pass and two
/// allocations, so an event's lines go together; but it re-copies what follows each line it
/// parses, so a piece of `n` lines costs up to `n` times its length, and this bounds that.
const MAX_PIECE_LINES: usize = 8;

/// The framer keeps its buffer for the next piece unless the last one was
/// longer than this.
const KEEP_PIECE_BYTES: usize = 16 * 1024;

/// Splits the body into lines and passes eventsource-stream the lines of each event in one
/// piece, ending with the blank line that dispatches it; an event of more lines than
/// [`MAX_PIECE_LINES`] goes over in several pieces.
struct Framer<S, B> {
    body: Pin<Box<S>>,
    chunk: Option<B>,
    pos: usize,
    lines: Lines,
    primed: bool,
    done: bool,
}

// The chunk is only ever read through `as_ref`, never pinned.
impl<S, B> Unpin for Framer<S, B> {}

impl<S, B> Framer<S, B> {
    fn new(body: S, limit: usize) -> Self {
        Self {
            body: Box::pin(body),
            chunk: None,
            pos: 0,
            lines: Lines {
                piece: BytesMut::new(),
                line_start: 0,
                piece_lines: 0,
                event_bytes: 0,
                limit,
                bom_seen: Some(0),
                after_cr: false,
                in_comment: false,
            },
            primed: false,
            done: false,
        }
    }
}

impl<S, B, E> Stream for Framer<S, B>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
{
    type Item = Result<Bytes, SseError<E>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if !this.primed {
            this.primed = true;
            // eventsource-stream strips a BOM from the first non-empty string it receives with
            // `&s[1..]`, which panics on the 3-byte U+FEFF. The real BOM never reaches it, but a
            // second one is data and may open the first line; a blank line with nothing pending
            // dispatches nothing and makes sure that check only ever sees '\n'.
            return Poll::Ready(Some(Ok(Bytes::from_static(BLANK_LINE))));
        }
        while !this.done {
            if let Some(chunk) = &this.chunk {
                let bytes = chunk.as_ref();
                let item = this.lines.next_piece(bytes, &mut this.pos);
                if this.pos >= bytes.len() {
                    this.chunk = None;
                }
                if let Some(item) = item {
                    this.done = item.is_err();
                    return Poll::Ready(Some(item));
                }
            }
            match ready!(this.body.as_mut().poll_next(cx)) {
                Some(Ok(chunk)) => {
                    this.chunk = Some(chunk);
                    this.pos = 0;
                }
                Some(Err(err)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(SseError::Transport(err))));
                }
                // Dropping the unterminated last line and the lines of an event no blank line
                // completed is the WHATWG rule for a stream that ends.
                None => this.done = true,
            }
        }
        Poll::Ready(None)
    }
}

struct Lines {
    /// The complete lines not handed over yet, then the start of the current line. Pieces are
    /// split off it, and it takes its memory back once eventsource-stream has copied a piece,
    /// so a steady stream allocates nothing here.
    piece: BytesMut,
    /// Where the current line starts in `piece`.
    line_start: usize,
    /// Complete lines in `piece`.
    piece_lines: usize,
    /// Bytes of the lines collected for the event not dispatched yet.
    event_bytes: usize,
    limit: usize,
    /// How many bytes of a leading BOM arrived so far, until the stream start is settled.
    bom_seen: Option<usize>,
    /// The last line ended in CR, so an LF right after it belongs to that terminator.
    after_cr: bool,
    /// The current line is a comment; it is skipped without being buffered.
    in_comment: bool,
}

impl Lines {
    /// Advances `pos` through `bytes` until a piece for the parser is ready or an error occurs;
    /// `None` means `bytes` is used up.
    fn next_piece<E>(
        &mut self,
        bytes: &[u8],
        pos: &mut usize,
    ) -> Option<Result<Bytes, SseError<E>>> {
        if let Some(seen) = self.bom_seen {
            self.skip_bom(&bytes[*pos..], seen, pos);
        }
        // Each byte is looked at once, so the cost stays linear however the body is chunked.
        while *pos < bytes.len() {
            let rest = &bytes[*pos..];
            if std::mem::take(&mut self.after_cr) && rest[0] == b'\n' {
                *pos += 1;
                continue;
            }
            let line_so_far = self.piece.len() - self.line_start;
            if rest[0] == b':' && line_so_far == 0 && !self.in_comment {
                self.in_comment = true;
            }
            // CR and LF never occur inside a multi-byte UTF-8 sequence, so splitting bytes
            // before decoding is safe.
            let Some(end) = line_end(rest) else {
                *pos = bytes.len();
                if self.in_comment {
                    return None;
                }
                if self.event_bytes + line_so_far + rest.len() > self.limit {
                    return Some(Err(SseError::TooLong { limit: self.limit }));
                }
                self.piece.extend_from_slice(rest);
                return None;
            };
            *pos += end + 1;
            self.after_cr = rest[end] == b'\r';
            // Comments are never decoded: they carry nothing, and keep-alive floods must not
            // cost memory.
            if std::mem::take(&mut self.in_comment) {
                continue;
            }
            if let Some(item) = self.finish(&rest[..end]) {
                return Some(item);
            }
        }
        None
    }

    fn skip_bom(&mut self, bytes: &[u8], seen: usize, pos: &mut usize) {
        let n = (BOM.len() - seen).min(bytes.len());
        if bytes[..n] == BOM[seen..seen + n] {
            *pos += n;
            self.bom_seen = Some(seen + n).filter(|&seen| seen < BOM.len());
        } else {
            // What looked like the start of a BOM was the start of the first line.
            self.piece.extend_from_slice(&BOM[..seen]);
            self.bom_seen = None;
        }
    }

    /// Ends the current line with `tail`; a piece when the line dispatches an event or fills
    /// the piece.
    fn finish<E>(&mut self, tail: &[u8]) -> Option<Result<Bytes, SseError<E>>> {
        let len = self.piece.len() - self.line_start + tail.len();
        if len == 0 {
            // With nothing pending a blank line would dispatch nothing.
            if self.event_bytes == 0 {
                return None;
            }
            self.event_bytes = 0;
            if self.piece.is_empty() {
                return Some(Ok(Bytes::from_static(BLANK_LINE)));
            }
            self.piece.extend_from_slice(BLANK_LINE);
            return Some(Ok(self.split_piece()));
        }
        self.event_bytes += len;
        if self.event_bytes > self.limit {
            return Some(Err(SseError::TooLong { limit: self.limit }));
        }
        self.piece.extend_from_slice(tail);
        // Only whole lines are decoded, so characters split across chunks are fine. A bad byte
        // ends the stream instead of turning into U+FFFD: a corrupt answer must not look
        // complete.
        if std::str::from_utf8(&self.piece[self.line_start..]).is_err() {
            return Some(Err(SseError::InvalidUtf8));
        }
        self.piece.extend_from_slice(b"\n");
        self.line_start = self.piece.len();
        self.piece_lines += 1;
        (self.piece_lines == MAX_PIECE_LINES).then(|| Ok(self.split_piece()))
    }

    fn split_piece(&mut self) -> Bytes {
        self.line_start = 0;
        self.piece_lines = 0;
        let piece = self.piece.split().freeze();
        // A rare long event must not keep its memory for the rest of the stream.
        if piece.len() > KEEP_PIECE_BYTES {
            self.piece = BytesMut::new();
        }
        piece
    }
}

/// Where the first CR or LF in `bytes` is. Eight bytes at a time: looking for the end of each
/// line was the parser's largest cost when it went byte by byte.
fn line_end(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const LF: u64 = u64::from_ne_bytes([b'\n'; 8]);
    const CR: u64 = u64::from_ne_bytes([b'\r'; 8]);
    // The lowest flagged byte of a word is exactly its first zero byte (a borrow only runs
    // towards higher bytes), and little-endian order makes the lowest byte the first.
    let zero_bytes = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS;
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let found = zero_bytes(word ^ LF) | zero_bytes(word ^ CR);
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .map(|i| at + i)
}

#[cfg(test)]
#[expect(
    clippy::unwrap_used,
    reason = "tests fail loudly on malformed fixtures"
)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures_util::stream;
    use serde_json::Value;
    use std::convert::Infallible;
    use std::pin::pin;
    use std::task::Waker;

    const LIMIT: usize = 1 << 20;

    struct Parsed<E> {
        events: Vec<Event>,
        error: Option<SseError<E>>,
        /// The body was still open (returned `Pending`) when polling stopped.
        pending: bool,
    }

    /// Polls to completion without a runtime: test bodies are either always ready or end in
    /// `pending()`, so a no-op waker suffices.
    fn drive<E>(events: impl Stream<Item = Result<Event, SseError<E>>>) -> Parsed<E> {
        let mut events = pin!(events);
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = Vec::new();
        loop {
            match events.as_mut().poll_next(&mut cx) {
                Poll::Ready(Some(Ok(event))) => out.push(event),
                Poll::Ready(Some(Err(error))) => {
                    assert!(
                        matches!(events.as_mut().poll_next(&mut cx), Poll::Ready(None)),
                        "the stream must end after an error"
                    );
                    return Parsed {
                        events: out,
                        error: Some(error),
                        pending: false,
                    };
                }
                Poll::Ready(None) => {
                    return Parsed {
                        events: out,
                        error: None,
                        pending: false,
                    };
                }
                Poll::Pending => {
                    return Parsed {
                        events: out,
                        error: None,
                        pending: true,
                    };
                }
            }
        }
    }

    fn parse(chunks: Vec<Vec<u8>>, limit: usize) -> Parsed<Infallible> {
        let body = stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c))));
        drive(events(body, limit))
    }

    fn whole(bytes: &[u8]) -> Vec<Vec<u8>> {
        vec![bytes.to_vec()]
    }

    fn bytewise(bytes: &[u8]) -> Vec<Vec<u8>> {
        bytes.iter().map(|&b| vec![b]).collect()
    }

    fn pieces(bytes: &[u8], size: usize) -> Vec<Vec<u8>> {
        bytes.chunks(size).map(<[u8]>::to_vec).collect()
    }

    /// Deterministic piece sizes from 1 to 64 bytes (xorshift32).
    fn random_pieces(bytes: &[u8], mut seed: u32) -> Vec<Vec<u8>> {
        let mut rest = bytes;
        let mut out = Vec::new();
        while !rest.is_empty() {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let (head, tail) = rest.split_at((seed as usize % 64 + 1).min(rest.len()));
            out.push(head.to_vec());
            rest = tail;
        }
        out
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    fn data(events: &[Event]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn conformance_cases() {
        let cases: Value = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/sse-conformance.json"
        )))
        .unwrap();
        let cases = cases.as_array().unwrap();
        assert_eq!(cases.len(), 42);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let bytes = match case["stream_hex"].as_str() {
                Some(h) => hex(h),
                None => case["stream"].as_str().unwrap().as_bytes().to_vec(),
            };
            let expected: Vec<(&str, &str, &str)> = case["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    let field = |k: &str| e[k].as_str().unwrap();
                    (field("event"), field("data"), field("id"))
                })
                .collect();
            let mut feeds = vec![("whole", whole(&bytes)), ("bytewise", bytewise(&bytes))];
            if let Some(chunks) = case["chunks_hex"].as_array() {
                let chunks = chunks.iter().map(|c| hex(c.as_str().unwrap())).collect();
                feeds.push(("chunks_hex", chunks));
            }
            for (feed, chunks) in feeds {
                let outcome = parse(chunks, LIMIT);
                assert!(!outcome.pending, "{name} ({feed})");
                let got: Vec<(&str, &str, &str)> = outcome
                    .events
                    .iter()
                    .map(|e| (e.event.as_str(), e.data.as_str(), e.id.as_str()))
                    .collect();
                if name == "utf8-invalid-byte-replaced" {
                    // Deliberate deviation: WHATWG turns the 0xFF into U+FFFD, but a proxy that
                    // substituted characters would make a corrupt answer look complete, so
                    // invalid UTF-8 from an upstream is a broken stream: everything before the
                    // bad line is delivered, then the stream fails.
                    let before: Vec<_> = expected
                        .iter()
                        .copied()
                        .take_while(|e| !e.1.contains('\u{FFFD}'))
                        .collect();
                    assert_eq!(got, before, "{name} ({feed})");
                    assert!(
                        matches!(outcome.error, Some(SseError::InvalidUtf8)),
                        "{name} ({feed})"
                    );
                    continue;
                }
                assert!(outcome.error.is_none(), "{name} ({feed})");
                assert_eq!(got, expected, "{name} ({feed})");
                let retry = outcome.events.iter().filter_map(|e| e.retry).next_back();
                assert_eq!(
                    retry.map(|r| r.as_millis()),
                    case["retry"].as_u64().map(u128::from),
                    "{name} ({feed}): retry"
                );
                if let Some(after) = case["last_event_id_after"].as_str() {
                    let last = outcome.events.last().map_or("", |e| e.id.as_str());
                    assert_eq!(last, after, "{name} ({feed}): last event id");
                }
            }
        }
    }

    #[test]
    fn upstream_recordings() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/upstream");
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{dir}/expected.json")).unwrap())
                .unwrap();
        let mut files = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|ext| ext != "sse") {
                continue;
            }
            files += 1;
            let name = path.file_name().unwrap().to_str().unwrap();
            let want = expected[name]["sse_events_dispatched_strict"]
                .as_u64()
                .unwrap();
            let bytes = std::fs::read(&path).unwrap();
            let reference = parse(whole(&bytes), LIMIT);
            assert!(reference.error.is_none() && !reference.pending, "{name}");
            assert_eq!(reference.events.len() as u64, want, "{name}");
            for (feed, chunks) in [
                ("bytewise", bytewise(&bytes)),
                ("random", random_pieces(&bytes, files)),
            ] {
                let outcome = parse(chunks, LIMIT);
                assert!(
                    outcome.error.is_none() && !outcome.pending,
                    "{name} ({feed})"
                );
                assert_eq!(outcome.events, reference.events, "{name} ({feed})");
            }
        }
        assert_eq!(files, 25);
    }

    #[test]
    fn line_ends_are_found_wherever_they_are() {
        // Bytes one bit away from CR or LF, and bytes with the high bit set, are where a
        // word-at-a-time search would go wrong if it did.
        let alphabet = [
            b'a', 0x09, 0x0b, 0x0c, 0x0e, 0x8a, 0x8d, 0xff, 0x00, b'\n', b'\r',
        ];
        let mut seed = 7u32;
        for len in 0..70 {
            for _ in 0..50 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 17;
                        seed ^= seed << 5;
                        // Mostly plain bytes, so that line ends fall anywhere, or nowhere.
                        let pick = seed as usize % (alphabet.len() * 8);
                        alphabet.get(pick).copied().unwrap_or(b'x')
                    })
                    .collect();
                let naive = bytes.iter().position(|&b| b == b'\n' || b == b'\r');
                assert_eq!(line_end(&bytes), naive, "{bytes:?}");
            }
        }
    }

    #[test]
    fn bom_split_anywhere_is_stripped() {
        let bytes = b"\xEF\xBB\xBFdata: x\n\n";
        for i in 0..=4 {
            for j in i..=5 {
                let chunks = vec![
                    bytes[..i].to_vec(),
                    bytes[i..j].to_vec(),
                    bytes[j..].to_vec(),
                ];
                let outcome = parse(chunks, LIMIT);
                assert!(outcome.error.is_none(), "split at {i}, {j}");
                assert_eq!(data(&outcome.events), ["x"], "split at {i}, {j}");
            }
        }
    }

    #[test]
    fn bom_alone_then_eof() {
        for chunks in [
            whole(b"\xEF\xBB\xBF"),
            bytewise(b"\xEF\xBB\xBF"),
            whole(b"\xEF\xBB"),
            vec![b"\xEF".to_vec(), Vec::new()],
            Vec::new(),
        ] {
            let outcome = parse(chunks, LIMIT);
            assert!(outcome.events.is_empty() && outcome.error.is_none() && !outcome.pending);
        }
    }

    #[test]
    fn partial_bom_is_kept_as_data() {
        // EF BB followed by 'd' is not UTF-8; the stray bytes must not be silently dropped.
        for chunks in [
            whole(b"\xEF\xBBdata: x\n\n"),
            bytewise(b"\xEF\xBBdata: x\n\n"),
        ] {
            let outcome = parse(chunks, LIMIT);
            assert!(outcome.events.is_empty());
            assert!(matches!(outcome.error, Some(SseError::InvalidUtf8)));
        }
    }

    #[test]
    fn cr_only_stream_dispatches_every_event() {
        let bytes = b"data: a\rdata: b\r\rdata: c\r\r";
        for chunks in [whole(bytes), bytewise(bytes)] {
            let outcome = parse(chunks.clone(), LIMIT);
            assert!(outcome.error.is_none());
            assert_eq!(data(&outcome.events), ["a\nb", "c"]);

            // The last event must not wait for a byte after its final CR.
            let open =
                stream::iter(chunks.into_iter().map(Ok::<_, Infallible>)).chain(stream::pending());
            let outcome = drive(events(open, LIMIT));
            assert!(outcome.pending);
            assert_eq!(data(&outcome.events), ["a\nb", "c"]);
        }
    }

    #[test]
    fn one_mib_line_in_16_byte_pieces() {
        // Multi-byte characters make the 16-byte pieces split them.
        let value = "aé€😊".repeat((1 << 20) / 10);
        let bytes = format!("data: {value}\n\n").into_bytes();
        let outcome = parse(pieces(&bytes, 16), 2 << 20);
        assert!(outcome.error.is_none());
        assert_eq!(data(&outcome.events), [value.as_str()]);
    }

    #[test]
    fn invalid_utf8_ends_the_stream_after_earlier_events() {
        let bytes = b"data: a\n\ndata: b\xC3(\n\ndata: c\n\n";
        for chunks in [whole(bytes), bytewise(bytes)] {
            // The body stays open: the error must come at the bad line, not at end of stream.
            let open =
                stream::iter(chunks.into_iter().map(Ok::<_, Infallible>)).chain(stream::pending());
            let outcome = drive(events(open, LIMIT));
            assert_eq!(data(&outcome.events), ["a"]);
            assert!(matches!(outcome.error, Some(SseError::InvalidUtf8)));
        }
    }

    #[test]
    fn line_over_the_limit() {
        let at_limit = format!("data: {}\n\n", "x".repeat(26));
        let over = format!("data: {}\n\n", "x".repeat(27));
        let unterminated = format!("data: {}", "x".repeat(100));
        for chunks in [whole, bytewise] {
            let outcome = parse(chunks(at_limit.as_bytes()), 32);
            assert!(outcome.error.is_none());
            assert_eq!(outcome.events.len(), 1);
            for bytes in [&over, &unterminated] {
                let outcome = parse(chunks(bytes.as_bytes()), 32);
                assert!(matches!(
                    outcome.error,
                    Some(SseError::TooLong { limit: 32 })
                ));
            }
        }
    }

    #[test]
    fn event_over_the_limit() {
        let bytes = format!("data: first\n\n{}\n", "data: abc\n".repeat(20));
        for chunks in [whole(bytes.as_bytes()), bytewise(bytes.as_bytes())] {
            let outcome = parse(chunks, 64);
            assert_eq!(data(&outcome.events), ["first"]);
            assert!(matches!(
                outcome.error,
                Some(SseError::TooLong { limit: 64 })
            ));
        }
    }

    #[test]
    fn limit_applies_per_event() {
        let bytes = "data: 0123456789\n\n".repeat(1000);
        let outcome = parse(whole(bytes.as_bytes()), 64);
        assert!(outcome.error.is_none());
        assert_eq!(outcome.events.len(), 1000);
    }

    #[test]
    fn endless_comments_buffer_nothing() {
        let comment = format!(":{}\n", "k".repeat(200));
        let keep_alive = format!("{comment}\n");
        let mut bytes = keep_alive.repeat(5_000);
        bytes.push_str(&format!(
            "data: x\n{}\n{}",
            comment.repeat(100),
            keep_alive.repeat(100)
        ));
        for chunks in [
            whole(bytes.as_bytes()),
            pieces(bytes.as_bytes(), 7),
            random_pieces(bytes.as_bytes(), 1),
        ] {
            // Comments far beyond the limit: they are skipped, not buffered.
            let outcome = parse(chunks.clone(), 64);
            assert!(outcome.error.is_none());
            assert_eq!(data(&outcome.events), ["x"]);

            // What reaches eventsource-stream: the priming blank line, then the data line with
            // the blank line ending it; nothing of the comments or of the blank lines after
            // them, and the framer holds nothing back.
            let handed = handed(chunks, 64);
            assert_eq!(handed.pieces, [&b"\n"[..], b"data: x\n\n"]);
            assert_eq!(handed.held, 0);
            assert!(handed.capacity < 64, "{}", handed.capacity);
        }
    }

    struct Handed {
        pieces: Vec<Vec<u8>>,
        /// Bytes the framer still holds at the end.
        held: usize,
        /// What its buffer can hold without allocating.
        capacity: usize,
    }

    /// The pieces the framer hands eventsource-stream for `chunks`.
    fn handed(chunks: Vec<Vec<u8>>, limit: usize) -> Handed {
        let body = stream::iter(chunks.into_iter().map(Ok::<_, Infallible>));
        let mut framer = Framer::new(body, limit);
        let mut cx = Context::from_waker(Waker::noop());
        let mut pieces = Vec::new();
        while let Poll::Ready(Some(item)) = Pin::new(&mut framer).poll_next(&mut cx) {
            pieces.push(item.unwrap().to_vec());
        }
        Handed {
            pieces,
            held: framer.lines.piece.len(),
            capacity: framer.lines.piece.capacity(),
        }
    }

    #[test]
    fn each_event_goes_over_in_one_piece_of_at_most_max_piece_lines() {
        // Two events of many lines: one whose blank line comes alone, one whose does not.
        let long = format!(
            "event: e\n{}\n",
            "data: d\n".repeat(MAX_PIECE_LINES * 2 - 1)
        );
        let longer = format!(
            "event: e\n{}\n",
            "data: d\n".repeat(MAX_PIECE_LINES * 2 + 2)
        );
        let text = format!(": hi\n\ndata: a\r\nid: 1\r\n\r\n{long}{longer}data: b\rdata: c\r\r");
        for chunks in [
            whole(text.as_bytes()),
            bytewise(text.as_bytes()),
            random_pieces(text.as_bytes(), 3),
        ] {
            let events = parse(chunks.clone(), LIMIT).events;
            let d = |n| vec!["d"; n].join("\n");
            assert_eq!(
                data(&events),
                [
                    "a",
                    &d(MAX_PIECE_LINES * 2 - 1),
                    &d(MAX_PIECE_LINES * 2 + 2),
                    "b\nc"
                ]
            );
            assert_eq!(events[1].event, "e");
            let handed = handed(chunks, LIMIT);
            let mut want: Vec<Vec<u8>> = vec![b"\n".to_vec(), b"data: a\nid: 1\n\n".to_vec()];
            for event in [&long, &longer] {
                // Full pieces, then the rest of the lines with the blank line ending the event.
                let lines: Vec<&str> = event.split_inclusive('\n').collect();
                let full = (lines.len() - 1) / MAX_PIECE_LINES * MAX_PIECE_LINES;
                for piece in lines[..full].chunks(MAX_PIECE_LINES) {
                    want.push(piece.concat().into_bytes());
                }
                want.push(lines[full..].concat().into_bytes());
            }
            want.push(b"data: b\ndata: c\n\n".to_vec());
            assert_eq!(handed.pieces, want);
            assert_eq!(handed.held, 0);
        }
    }

    #[test]
    fn a_steady_stream_reuses_the_framer_buffer() {
        // Each piece is dropped before the next is made, as eventsource-stream does after
        // copying it, so the buffer keeps the one allocation it grew to.
        let event = format!("data: {}\n\n", "t".repeat(40));
        let body = stream::iter((0..100).map(|_| Ok::<_, Infallible>(event.clone().into_bytes())));
        let mut framer = Framer::new(body, LIMIT);
        let mut cx = Context::from_waker(Waker::noop());
        let mut addresses = std::collections::HashSet::new();
        let mut count = 0;
        while let Poll::Ready(Some(item)) = Pin::new(&mut framer).poll_next(&mut cx) {
            let piece = item.unwrap();
            if piece.len() > 1 {
                assert_eq!(piece, event.trim_end_matches('\n').to_owned() + "\n\n");
                addresses.insert(piece.as_ptr());
                count += 1;
            }
        }
        assert_eq!(count, 100);
        assert_eq!(
            addresses.len(),
            1,
            "every piece should reuse the same memory"
        );
    }

    #[test]
    fn a_long_event_does_not_keep_its_memory() {
        // The short event after it would otherwise take back the long one's buffer.
        let long = format!("data: {}\n\n", "x".repeat(KEEP_PIECE_BYTES * 4));
        let text = format!("{long}data: y\n\n");
        let handed = handed(whole(text.as_bytes()), LIMIT);
        assert_eq!(handed.pieces.len(), 3);
        assert_eq!(handed.pieces[2], b"data: y\n\n");
        assert!(handed.capacity < KEEP_PIECE_BYTES, "{}", handed.capacity);
    }

    #[derive(Debug)]
    struct Broken;

    impl fmt::Display for Broken {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("https://upstream.example/v1?key=SECRET")
        }
    }

    impl std::error::Error for Broken {}

    #[test]
    fn transport_error_passes_through_and_ends_the_stream() {
        let body = stream::iter([
            Ok(Bytes::from_static(b"data: a\n\ndata: pend")),
            Err(Broken),
            Ok(Bytes::from_static(b"ing\n\ndata: b\n\n")),
        ]);
        let outcome = drive(events(body, LIMIT));
        assert_eq!(data(&outcome.events), ["a"]);
        assert!(matches!(outcome.error, Some(SseError::Transport(Broken))));
    }

    #[test]
    fn messages_carry_no_upstream_content() {
        let err = SseError::Transport(Broken);
        assert!(!err.to_string().contains("SECRET"));
        assert!(std::error::Error::source(&err).is_some());
        let too_long = SseError::<Broken>::TooLong { limit: 4096 }.to_string();
        assert!(too_long.contains("4096"), "{too_long}");
        assert!(!SseError::<Broken>::InvalidUtf8.to_string().is_empty());
    }

    /// Property tests: what no hand-picked case can promise.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Splits `bytes` at the given cut points (taken modulo the length).
        fn split(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
            let mut points: Vec<usize> = cuts.iter().map(|cut| cut % (bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut out = Vec::new();
            let mut start = 0;
            for point in points.into_iter().chain([bytes.len()]) {
                out.push(bytes[start..point].to_vec());
                start = point;
            }
            out
        }

        fn line_ending() -> impl Strategy<Value = &'static str> {
            prop_oneof![Just("\n"), Just("\r\n"), Just("\r")]
        }

        /// One event: optional comment and name, one or more data lines.
        fn event() -> impl Strategy<Value = String> {
            (
                proptest::option::of("[a-z]{1,8}"),
                proptest::collection::vec("[^\r\n]{0,40}", 1..4),
                any::<bool>(),
                line_ending(),
            )
                .prop_map(|(name, lines, comment, eol)| {
                    let mut text = String::new();
                    if comment {
                        text.push_str(&format!(": keep-alive{eol}"));
                    }
                    if let Some(name) = name {
                        text.push_str(&format!("event: {name}{eol}"));
                    }
                    for line in lines {
                        text.push_str(&format!("data: {line}{eol}"));
                    }
                    text.push_str(eol);
                    text
                })
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_in_arbitrary_pieces_never_panic(
                bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                cuts in proptest::collection::vec(any::<usize>(), 0..64),
            ) {
                let outcome = parse(split(&bytes, &cuts), 256);
                prop_assert!(!outcome.pending, "a finite body always ends the stream");
            }

            #[test]
            fn a_valid_stream_gives_the_same_events_however_it_is_chunked(
                events in proptest::collection::vec(event(), 1..20),
                cuts in proptest::collection::vec(any::<usize>(), 0..64),
            ) {
                let text = events.concat();
                let expected = parse(whole(text.as_bytes()), LIMIT);
                let chunked = parse(split(text.as_bytes(), &cuts), LIMIT);
                prop_assert!(expected.error.is_none() && chunked.error.is_none());
                prop_assert_eq!(expected.events.len(), events.len());
                prop_assert_eq!(chunked.events, expected.events);
            }
        }
    }
}
