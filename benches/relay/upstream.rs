//! The fake upstream: an OpenAI-compatible chat-completions server that does
//! nothing but replay pre-rendered `chat.completion.chunk` streams.
//!
//! It has to be cheap, or the benchmark would measure it instead of the
//! proxy: every byte is rendered before the run, requests are parsed just
//! enough to find the model name (which names the script), and each SSE event
//! leaves in its own HTTP chunk with its own `write` — the way an LLM server
//! flushes each token — so "back to back" still means one write per token,
//! the ~1 µs of a bare writer that the proxy's cost is compared with.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Longest request head plus body we accept; ours are a few hundred bytes.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// A keep-alive connection from the proxy serves at most this many streams.
const MAX_REQUESTS_PER_CONNECTION: usize = 1_000_000;
/// A connection that sends nothing for this long is closed.
const IDLE: Duration = Duration::from_secs(120);

/// What one request is answered with: `head` at once, then each of `steps`
/// as its own write, `gap` apart (back to back when zero), then `tail`.
#[derive(Debug)]
pub struct Script {
    head: Bytes,
    steps: Vec<Bytes>,
    gap: Duration,
    tail: Bytes,
}

impl Script {
    /// `tokens` tokens `w0 `, `w1 `... after a role chunk, then a finish
    /// chunk, a usage chunk and `[DONE]`, as OpenAI streams them.
    pub fn tokens(model: &str, tokens: u32, gap: Duration) -> Self {
        let steps = (0..tokens)
            .map(|i| {
                Bytes::from(chunked(
                    sse(&chunk_json(model, &content(&format!("w{i} ")))).as_bytes(),
                ))
            })
            .collect();
        Self {
            head: head(model),
            steps,
            gap,
            tail: tail(model, tokens),
        }
    }

    /// One token of `len` bytes (`w0xxxx...`) whose SSE event is written in
    /// `piece`-byte HTTP chunks, each its own write: the proxy sees the line
    /// arrive in pieces, however fast it reads.
    pub fn long_line(model: &str, len: usize, piece: usize) -> Self {
        let mut token = String::with_capacity(len);
        token.push_str("w0");
        token.extend(std::iter::repeat_n('x', len.saturating_sub(2)));
        let event = sse(&chunk_json(model, &content(&token)));
        let steps = event
            .as_bytes()
            .chunks(piece.max(1))
            .map(|piece| Bytes::from(chunked(piece)))
            .collect();
        Self {
            head: head(model),
            steps,
            gap: Duration::ZERO,
            tail: tail(model, 1),
        }
    }
}

/// The scripts the upstream knows, by model name; the benchmark adds one per
/// scenario before it runs.
#[derive(Debug, Clone, Default)]
pub struct Scripts(Arc<Mutex<HashMap<String, Arc<Script>>>>);

impl Scripts {
    pub fn add(&self, model: &str, script: Script) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(model.to_owned(), Arc::new(script));
    }

    fn get(&self, model: &str) -> Option<Arc<Script>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(model)
            .cloned()
    }
}

/// Serves `scripts` on a free port of 127.0.0.1 until `stop` is cancelled.
pub async fn spawn(scripts: Scripts, stop: CancellationToken) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = stop.cancelled() => return,
            };
            match accepted {
                Ok((tcp, _)) => {
                    tokio::spawn(serve(tcp, scripts.clone()));
                }
                // Out of descriptors: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    });
    Ok(addr)
}

async fn serve(mut tcp: TcpStream, scripts: Scripts) {
    // Without it each small token write would wait for the reader's delayed ACK.
    let _ = tcp.set_nodelay(true);
    let mut buffer = Vec::with_capacity(1024);
    for _ in 0..MAX_REQUESTS_PER_CONNECTION {
        let request = match tokio::time::timeout(IDLE, read_request(&mut tcp, &mut buffer)).await {
            Ok(Ok(Some(request))) => request,
            _ => return,
        };
        let Some(script) = scripts.get(&request.model) else {
            let body = r#"{"error":{"message":"unknown model","type":"invalid_request_error"}}"#;
            let response = format!(
                "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            if tcp.write_all(response.as_bytes()).await.is_err() {
                return;
            }
            continue;
        };
        if play(&mut tcp, &script).await.is_err() || request.close {
            return;
        }
    }
}

async fn play(tcp: &mut TcpStream, script: &Script) -> io::Result<()> {
    tcp.write_all(&script.head).await?;
    let start = Instant::now();
    for (i, step) in script.steps.iter().enumerate() {
        if !script.gap.is_zero() && i > 0 {
            // Absolute times, so pacing does not drift with the writes' cost.
            tokio::time::sleep_until(start + script.gap * i as u32).await;
        }
        tcp.write_all(step).await?;
    }
    tcp.write_all(&script.tail).await
}

struct Request {
    model: String,
    close: bool,
}

/// Reads one request (head and `content-length` body) from `tcp`; `None` at
/// a clean end of the connection. Bytes of a pipelined next request stay in
/// `buffer`.
async fn read_request(tcp: &mut TcpStream, buffer: &mut Vec<u8>) -> io::Result<Option<Request>> {
    let mut piece = [0u8; 4096];
    let mut head_end = None;
    let mut needed = usize::MAX;
    while buffer.len() < MAX_REQUEST_BYTES {
        if head_end.is_none() {
            if let Some(end) = find(buffer, b"\r\n\r\n") {
                let end = end + 4;
                head_end = Some(end);
                needed = end + content_length(&buffer[..end]);
            }
        }
        if buffer.len() >= needed {
            break;
        }
        let n = tcp.read(&mut piece).await?;
        if n == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&piece[..n]);
    }
    let Some(head_end) = head_end.filter(|_| buffer.len() >= needed) else {
        return Err(io::Error::other("request too large"));
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let body = &buffer[head_end..needed];
    let model = find(body, br#""model":""#)
        .map(|at| {
            let rest = &body[at + 9..];
            let end = rest.iter().position(|&b| b == b'"').unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end]).into_owned()
        })
        .unwrap_or_default();
    let request = Request {
        model,
        close: head.contains("\r\nconnection: close"),
    };
    buffer.drain(..needed);
    Ok(Some(request))
}

pub fn content_length(head: &[u8]) -> usize {
    let head = String::from_utf8_lossy(head).to_ascii_lowercase();
    head.split("\r\n")
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// Where `needle` first occurs in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn head(model: &str) -> Bytes {
    let role = chunk_json(model, r#"{"role":"assistant","content":""}"#);
    let head = String::from(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n",
    );
    let mut head = head.into_bytes();
    head.extend(chunked(sse(&role).as_bytes()));
    Bytes::from(head)
}

fn tail(model: &str, tokens: u32) -> Bytes {
    let finish = format!(
        r#"{{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"{model}","system_fingerprint":"fp_bench","choices":[{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"stop"}}]}}"#
    );
    let usage = format!(
        r#"{{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"{model}","system_fingerprint":"fp_bench","choices":[],"usage":{{"prompt_tokens":9,"completion_tokens":{tokens},"total_tokens":{}}}}}"#,
        tokens + 9
    );
    let mut tail = chunked(sse(&finish).as_bytes());
    tail.extend(chunked(sse(&usage).as_bytes()));
    tail.extend(chunked(b"data: [DONE]\n\n"));
    tail.extend_from_slice(b"0\r\n\r\n");
    Bytes::from(tail)
}

/// `{"content":"<text>"}`; benchmark tokens need no escaping.
fn content(text: &str) -> String {
    format!(r#"{{"content":"{text}"}}"#)
}

/// A chunk as OpenAI sends it, with every field a real one has.
fn chunk_json(model: &str, delta: &str) -> String {
    format!(
        r#"{{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"{model}","system_fingerprint":"fp_bench","choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":null}}]}}"#
    )
}

fn sse(data: &str) -> String {
    format!("data: {data}\n\n")
}

/// `payload` as one HTTP/1.1 chunk.
fn chunked(payload: &[u8]) -> Vec<u8> {
    let mut chunk = format!("{:x}\r\n", payload.len()).into_bytes();
    chunk.extend_from_slice(payload);
    chunk.extend_from_slice(b"\r\n");
    chunk
}
