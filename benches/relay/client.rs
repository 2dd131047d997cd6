//! The load generator's client: one streaming request over a fresh TCP
//! connection, read with a tiny HTTP/1.1 + SSE reader that checks every
//! token arrives, in order, and that the stream ends the way a complete
//! answer does.
//!
//! It speaks raw TCP rather than through an HTTP client library so that its
//! cost per token is a read and a scan — small next to what it measures —
//! and so that the time to first token is taken at the byte that carries it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::upstream::find;

/// Each read takes at most this much; a 200-token burst is ~45 KiB.
const READ_BYTES: usize = 8 * 1024;
/// Longest response head we accept.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The protocol the client speaks, which decides the request and how
/// tokens look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `POST /v1/chat/completions`, OpenAI chunks: the fake upstream itself,
    /// and the reference relays, which pass its chunks on.
    OpenAi,
    /// tokenrelay: `POST /api/chat`, our event protocol.
    Tokenrelay,
}

/// How a follower names where it attaches, both of which tokenrelay takes.
#[derive(Debug, Clone, Copy)]
pub enum Attach {
    Header,
    Query,
}

/// What a complete stream holds.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    pub tokens: u32,
    /// The one token's length, for a stream of one long token.
    pub token_len: Option<usize>,
}

/// One prepared request, shared by every stream of a run.
#[derive(Debug, Clone)]
pub struct Request {
    addr: SocketAddr,
    via: Via,
    bytes: Bytes,
    expect: Expect,
    timeout: Duration,
}

impl Request {
    pub fn new(addr: SocketAddr, via: Via, model: &str, expect: Expect, timeout: Duration) -> Self {
        let (path, body) = match via {
            Via::OpenAi => (
                "/v1/chat/completions",
                format!(
                    r#"{{"model":"{model}","messages":[{{"role":"user","content":"Say hi"}}],"stream":true,"stream_options":{{"include_usage":true}}}}"#
                ),
            ),
            Via::Tokenrelay => (
                "/api/chat",
                format!(
                    r#"{{"model":"{model}","messages":[{{"role":"user","content":"Say hi"}}]}}"#
                ),
            ),
        };
        let bytes = format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\naccept: text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        Self {
            addr,
            via,
            bytes: Bytes::from(bytes),
            expect,
            timeout,
        }
    }

    /// A follower of `stream_id` from its first token on, speaking `via`:
    /// for tokenrelay's generation after event 0, the `start`, which only its
    /// first client reads; the broadcast takes any id and sends every chunk.
    pub fn follow(
        addr: SocketAddr,
        stream_id: &str,
        attach: Attach,
        via: Via,
        expect: Expect,
        timeout: Duration,
    ) -> Self {
        let (query, header) = match attach {
            Attach::Header => (String::new(), format!("last-event-id: {stream_id}:0\r\n")),
            Attach::Query => (format!("?last_event_id={stream_id}:0"), String::new()),
        };
        let bytes = format!(
            "GET /api/chat/{stream_id}/events{query} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n{header}connection: close\r\n\r\n"
        );
        Self {
            addr,
            via,
            bytes: Bytes::from(bytes),
            expect,
            timeout,
        }
    }
}

/// How one stream went.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// From the request's first byte leaving to the first token's last byte arriving.
    pub ttft: Option<Duration>,
    pub tokens: u32,
    /// From the request to `[DONE]` (or the failure).
    pub elapsed: Duration,
    pub failure: Option<String>,
}

/// Runs one stream; `open` counts streams whose response has begun and not
/// yet ended, which is what memory per open stream divides by.
pub async fn stream(request: &Request, open: &Arc<AtomicUsize>) -> Outcome {
    lead(request, open, None).await
}

/// `stream`, sending tokenrelay's `x-stream-id` to `started` as soon as the
/// response head arrives, so that followers can attach while it runs.
pub async fn lead(
    request: &Request,
    open: &Arc<AtomicUsize>,
    mut started: Option<oneshot::Sender<String>>,
) -> Outcome {
    let mut reader = Reader::new(request.via, request.expect);
    let connected = tokio::time::timeout(request.timeout, TcpStream::connect(request.addr)).await;
    let mut tcp = match connected {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(error)) => return failed(Duration::ZERO, format!("connect: {error}")),
        Err(_) => return failed(Duration::ZERO, "connect: timed out".to_owned()),
    };
    let _ = tcp.set_nodelay(true);
    let sent = Instant::now();
    let deadline = sent + request.timeout;
    let mut counted = Counted {
        open,
        counted: false,
    };
    let result = tokio::time::timeout_at(deadline, async {
        tcp.write_all(&request.bytes)
            .await
            .map_err(|error| format!("write: {error}"))?;
        let mut buffer = vec![0u8; READ_BYTES];
        // Bounded by the deadline around it and by the stream's own end.
        loop {
            let n = tcp
                .read(&mut buffer)
                .await
                .map_err(|error| format!("read: {error}"))?;
            if n == 0 {
                return Err(reader.unfinished("the connection closed"));
            }
            reader.feed(&buffer[..n], sent)?;
            if reader.streaming && !counted.counted {
                counted.open.fetch_add(1, Ordering::Relaxed);
                counted.counted = true;
                if let (Some(started), Some(id)) = (started.take(), reader.stream_id.take()) {
                    let _ = started.send(id);
                }
            }
            if reader.done {
                return Ok(());
            }
        }
    })
    .await;
    let failure = match result {
        Ok(Ok(())) => reader.check(),
        Ok(Err(failure)) => Some(failure),
        Err(_) => Some(reader.unfinished("timed out")),
    };
    Outcome {
        ttft: reader.ttft,
        tokens: reader.tokens,
        elapsed: reader.done_at.unwrap_or_else(Instant::now) - sent,
        failure,
    }
}

pub fn failed(elapsed: Duration, failure: String) -> Outcome {
    Outcome {
        ttft: None,
        tokens: 0,
        elapsed,
        failure: Some(failure),
    }
}

/// Takes the stream off the open count however it ends.
struct Counted<'a> {
    open: &'a Arc<AtomicUsize>,
    counted: bool,
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        if self.counted {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// HTTP/1.1 response head, chunked body, SSE lines, tokens: one pass.
struct Reader {
    via: Via,
    expect: Expect,
    head: Vec<u8>,
    /// The head said 200 and an event stream follows.
    streaming: bool,
    /// tokenrelay's `x-stream-id`, from the head.
    stream_id: Option<String>,
    chunked: bool,
    chunk: Chunk,
    line: Vec<u8>,
    tokens: u32,
    ttft: Option<Duration>,
    finished: bool,
    done: bool,
    done_at: Option<Instant>,
}

/// Where the chunked-transfer decoder is.
enum Chunk {
    /// Reading a size line; `digits` false once an extension began.
    Size {
        size: usize,
        digits: bool,
    },
    Data(usize),
    /// The CRLF after a chunk's data: this many bytes to skip.
    DataEnd(u8),
    /// After the last chunk.
    End,
}

impl Reader {
    fn new(via: Via, expect: Expect) -> Self {
        Self {
            via,
            expect,
            head: Vec::new(),
            streaming: false,
            stream_id: None,
            chunked: false,
            chunk: Chunk::Size {
                size: 0,
                digits: true,
            },
            line: Vec::new(),
            tokens: 0,
            ttft: None,
            finished: false,
            done: false,
            done_at: None,
        }
    }

    fn feed(&mut self, mut bytes: &[u8], sent: Instant) -> Result<(), String> {
        if !self.streaming {
            let before = self.head.len();
            self.head.extend_from_slice(bytes);
            let Some(end) = find(&self.head, b"\r\n\r\n") else {
                if self.head.len() > MAX_HEAD_BYTES {
                    return Err("response head too long".to_owned());
                }
                return Ok(());
            };
            let head = String::from_utf8_lossy(&self.head[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                let rest = String::from_utf8_lossy(&self.head);
                return Err(format!(
                    "refused: {}",
                    rest.chars().take(300).collect::<String>()
                ));
            }
            self.chunked = head.contains("\r\ntransfer-encoding: chunked");
            self.stream_id = head
                .split("\r\n")
                .find_map(|line| line.strip_prefix("x-stream-id:"))
                .map(|id| id.trim().to_owned());
            self.streaming = true;
            bytes = &bytes[end + 4 - before..];
            self.head = Vec::new();
        }
        if !self.chunked {
            return self.body(bytes, sent);
        }
        while !bytes.is_empty() && !self.done {
            match &mut self.chunk {
                Chunk::Size { size, digits } => {
                    let byte = bytes[0];
                    bytes = &bytes[1..];
                    match byte {
                        b'\n' => {
                            self.chunk = if *size == 0 {
                                Chunk::End
                            } else {
                                Chunk::Data(*size)
                            };
                        }
                        b'\r' => {}
                        _ if *digits => match (byte as char).to_digit(16) {
                            Some(digit) => *size = *size * 16 + digit as usize,
                            None => *digits = false,
                        },
                        _ => {}
                    }
                }
                Chunk::Data(left) => {
                    let take = (*left).min(bytes.len());
                    let (data, rest) = bytes.split_at(take);
                    *left -= take;
                    if *left == 0 {
                        self.chunk = Chunk::DataEnd(2);
                    }
                    bytes = rest;
                    self.body(data, sent)?;
                }
                Chunk::DataEnd(left) => {
                    bytes = &bytes[1..];
                    *left -= 1;
                    if *left == 0 {
                        self.chunk = Chunk::Size {
                            size: 0,
                            digits: true,
                        };
                    }
                }
                Chunk::End => return Err(self.unfinished("the body ended")),
            }
        }
        Ok(())
    }

    /// Splits body bytes into lines; a line within one piece is not copied.
    fn body(&mut self, mut bytes: &[u8], sent: Instant) -> Result<(), String> {
        while !bytes.is_empty() && !self.done {
            let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
                self.line.extend_from_slice(bytes);
                return Ok(());
            };
            if self.line.is_empty() {
                self.line_done(&bytes[..end], sent)?;
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&bytes[..end]);
                self.line_done(&line, sent)?;
                line.clear();
                self.line = line;
            }
            bytes = &bytes[end + 1..];
        }
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], sent: Instant) -> Result<(), String> {
        let Some(data) = line.strip_prefix(b"data: ") else {
            return Ok(());
        };
        if data == b"[DONE]" {
            self.done = true;
            self.done_at = Some(Instant::now());
            return Ok(());
        }
        // OpenAI's usage chunk follows the finish; nothing follows ours.
        if self.finished && self.via == Via::Tokenrelay {
            return Err("an event after the finish".to_owned());
        }
        let key: &[u8] = match self.via {
            Via::OpenAi => br#""content":""#,
            Via::Tokenrelay => br#""token":""#,
        };
        if let Some(at) = find_early(data, key) {
            let value = &data[at + key.len()..];
            let end = value
                .iter()
                .position(|&b| b == b'"')
                .ok_or_else(|| "a token without its closing quote".to_owned())?;
            let token = &value[..end];
            if token.is_empty() {
                return Ok(());
            }
            self.token(token, sent)?;
            return Ok(());
        }
        let finish = match self.via {
            Via::OpenAi => find(data, br#""finish_reason":"stop""#).is_some(),
            Via::Tokenrelay => data.starts_with(br#"{"type":"finish""#),
        };
        if finish {
            self.finished = true;
        } else if data.starts_with(br#"{"type":"error""#) {
            return Err(format!(
                "error event: {}",
                String::from_utf8_lossy(&data[..data.len().min(300)])
            ));
        }
        Ok(())
    }

    fn token(&mut self, token: &[u8], sent: Instant) -> Result<(), String> {
        if self.finished {
            return Err("a token after the finish".to_owned());
        }
        let number: u32 = token
            .strip_prefix(b"w")
            .map(|rest| {
                rest.iter()
                    .take_while(|b| b.is_ascii_digit())
                    .fold(0u32, |n, b| {
                        n.wrapping_mul(10).wrapping_add(u32::from(b - b'0'))
                    })
            })
            .ok_or_else(|| format!("unexpected token {:?}", String::from_utf8_lossy(token)))?;
        if number != self.tokens {
            return Err(format!(
                "token w{number} where w{} was due: lost or reordered",
                self.tokens
            ));
        }
        if let Some(len) = self.expect.token_len {
            if token.len() != len {
                return Err(format!("a token of {} bytes, not {len}", token.len()));
            }
        }
        if self.ttft.is_none() {
            self.ttft = Some(sent.elapsed());
        }
        self.tokens += 1;
        Ok(())
    }

    /// Why a stream that ended is not a complete answer, if it is not.
    fn check(&self) -> Option<String> {
        if !self.done {
            return Some(self.unfinished("no [DONE]"));
        }
        if !self.finished {
            return Some("[DONE] without a finish".to_owned());
        }
        (self.tokens != self.expect.tokens)
            .then(|| format!("{} tokens of {}", self.tokens, self.expect.tokens))
    }

    fn unfinished(&self, why: &str) -> String {
        format!(
            "{why} after {} of {} tokens",
            self.tokens, self.expect.tokens
        )
    }
}

/// `find` for keys near the start of a line: a long token's bytes are
/// scanned once for its closing quote, not once per key byte.
fn find_early(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    find(&haystack[..haystack.len().min(512)], needle)
}
