//! The two relays tokenrelay is measured against, so that its cost reads as
//! a multiple of what any relay pays on this machine rather than as an
//! absolute figure:
//!
//! - `naive`: the relay a user writes in an afternoon — axum `Sse`, reqwest
//!   and eventsource-stream, `TCP_NODELAY` on both sides, each chunk parsed
//!   into a `serde_json::Value` and written out again as an event;
//! - `pipe`: the floor — a TCP proxy copying bytes both ways without
//!   parsing them (`tokio::io::copy_bidirectional`, `TCP_NODELAY`);
//! - `broadcast`: the floor of fan-out, the pipe for one answer read by
//!   many — the upstream's chunks go to the client that asked, untouched,
//!   and each to every follower in its own `write`.
//!
//! Each runs in a child process, the benchmark binary started again with
//! `--serve-reference <name> <listen> <upstream>`, pinned to tokenrelay's
//! core, so that its `/proc` figures are its own exactly as tokenrelay's are.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::routing::post;
use axum::serve::ListenerExt;
use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::client::Via;
use crate::upstream::{content_length, find};

/// The first argument that makes the benchmark binary a reference relay.
pub const SERVE: &str = "--serve-reference";

/// A relay the load runs through, beside running it directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    Tokenrelay,
    Naive,
    Pipe,
    /// Only in the `fanout` scenario: the others have no followers.
    Broadcast,
}

impl Relay {
    /// Every relay, in the order a scenario runs them.
    pub const ALL: [Self; 3] = [Self::Tokenrelay, Self::Naive, Self::Pipe];
    pub const REFERENCES: [Self; 3] = [Self::Naive, Self::Pipe, Self::Broadcast];

    pub fn name(self) -> &'static str {
        match self {
            Self::Tokenrelay => "tokenrelay",
            Self::Naive => "naive",
            Self::Pipe => "pipe",
            Self::Broadcast => "broadcast",
        }
    }

    /// What the client speaks to it: the references pass the upstream's
    /// OpenAI chunks on.
    pub fn via(self) -> Via {
        match self {
            Self::Tokenrelay => Via::Tokenrelay,
            Self::Naive | Self::Pipe | Self::Broadcast => Via::OpenAi,
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::REFERENCES.into_iter().find(|r| r.name() == name)
    }
}

/// Runs the reference relay `args` name (`<name> <listen> <upstream>`)
/// until the process is killed.
pub fn serve(args: &[String]) -> Result<(), String> {
    let [name, listen, upstream] = args else {
        return Err(format!(
            "usage: {SERVE} naive|pipe|broadcast LISTEN UPSTREAM"
        ));
    };
    let relay = Relay::parse(name).ok_or_else(|| format!("no reference relay `{name}`"))?;
    let parse = |addr: &str| {
        addr.parse::<SocketAddr>()
            .map_err(|error| format!("bad address `{addr}`: {error}"))
    };
    let (listen, upstream) = (parse(listen)?, parse(upstream)?);
    // What `#[tokio::main]` builds: one worker per core it may use, which
    // pinned is one, as for tokenrelay.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("no runtime: {error}"))?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|error| format!("cannot listen on {listen}: {error}"))?;
        match relay {
            Relay::Naive => naive(listener, upstream).await,
            Relay::Broadcast => broadcast(listener, upstream).await,
            Relay::Pipe => pipe(listener, upstream).await,
            // `parse` finds only the references.
            Relay::Tokenrelay => Err("tokenrelay is not a reference relay".to_owned()),
        }
    })
}

#[derive(Clone)]
struct Naive {
    client: reqwest::Client,
    url: String,
}

async fn naive(listener: TcpListener, upstream: SocketAddr) -> Result<(), String> {
    // reqwest is built without a default TLS provider, as in tokenrelay.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .map_err(|error| format!("no HTTP client: {error}"))?;
    let state = Naive {
        client,
        url: format!("http://{upstream}/v1/chat/completions"),
    };
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(naive_chat))
        .with_state(state);
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .await
        .map_err(|error| format!("naive relay: {error}"))
}

async fn naive_chat(
    State(naive): State<Naive>,
    body: Bytes,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, StatusCode> {
    let response = naive
        .client
        .post(&naive.url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|_| StatusCode::BAD_GATEWAY)?;
    let events = response.bytes_stream().eventsource().map(|event| {
        Ok(match event {
            Ok(event) if event.data == "[DONE]" => Event::default().data("[DONE]"),
            Ok(event) => match serde_json::from_str::<serde_json::Value>(&event.data) {
                Ok(chunk) => Event::default().data(chunk.to_string()),
                Err(error) => Event::default().event("error").data(error.to_string()),
            },
            Err(error) => Event::default().event("error").data(error.to_string()),
        })
    });
    Ok(Sse::new(events))
}

async fn pipe(listener: TcpListener, upstream: SocketAddr) -> Result<(), String> {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            // Out of descriptors: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = server.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
    }
}

/// Longest request or response head the broadcast reads; the benchmark's
/// are a few hundred bytes.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest HTTP chunk it passes on; the benchmark's 1 MiB line is bigger
/// than anything the fan-out scenario sends.
const MAX_CHUNK_BYTES: usize = 2 * 1024 * 1024;

/// The answer being fanned out: every HTTP chunk of it so far, as it came
/// from the upstream, and whether the last one has.
#[derive(Default)]
struct Answer {
    chunks: Mutex<(Vec<Bytes>, bool)>,
    grew: Notify,
}

impl Answer {
    fn push(&self, chunk: Bytes, last: bool) {
        let mut chunks = self.chunks.lock().unwrap_or_else(PoisonError::into_inner);
        chunks.0.push(chunk);
        chunks.1 |= last;
        drop(chunks);
        self.grew.notify_waiters();
    }
}

/// One answer at a time, as the scenario asks: a `POST` starts it, any
/// `GET` follows the newest from its first chunk.
async fn broadcast(listener: TcpListener, upstream: SocketAddr) -> Result<(), String> {
    let newest: Arc<Mutex<Arc<Answer>>> = Arc::default();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let newest = Arc::clone(&newest);
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            let _ = fan_out(client, upstream, &newest).await;
        });
    }
}

async fn fan_out(
    mut client: TcpStream,
    upstream: SocketAddr,
    newest: &Mutex<Arc<Answer>>,
) -> io::Result<()> {
    let mut request = Vec::new();
    let end = read_head(&mut client, &mut request).await?;
    if request.starts_with(b"GET ") {
        let answer = Arc::clone(&newest.lock().unwrap_or_else(PoisonError::into_inner));
        return follow(client, &answer).await;
    }
    let whole = end + content_length(&request[..end]);
    while request.len() < whole {
        read_some(&mut client, &mut request, MAX_HEAD_BYTES * 2).await?;
    }
    let mut server = TcpStream::connect(upstream).await?;
    server.set_nodelay(true)?;
    server.write_all(&request).await?;
    let answer = Arc::new(Answer::default());
    *newest.lock().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&answer);
    let mut body = Vec::new();
    let end = read_head(&mut server, &mut body).await?;
    // The id a follower names, as tokenrelay's `x-stream-id`; any will do.
    let status_line = find(&body, b"\r\n").map_or(end, |at| at + 2);
    let head = [
        &body[..status_line],
        b"x-stream-id: fan\r\n",
        &body[status_line..end],
    ];
    client.write_all(&head.concat()).await?;
    body.drain(..end);
    loop {
        while let Some((chunk, last)) = next_chunk(&mut body)? {
            client.write_all(&chunk).await?;
            answer.push(chunk, last);
            if last {
                return Ok(());
            }
        }
        read_some(&mut server, &mut body, MAX_CHUNK_BYTES + MAX_HEAD_BYTES).await?;
    }
}

/// Every chunk of `answer`, each in its own `write` as tokenrelay writes
/// each event, until the last.
async fn follow(mut client: TcpStream, answer: &Answer) -> io::Result<()> {
    client
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
        .await?;
    let mut next = 0;
    loop {
        let grew = answer.grew.notified();
        tokio::pin!(grew);
        // Listening before looking, so that a chunk pushed in between wakes it.
        grew.as_mut().enable();
        let (new, ended) = {
            let chunks = answer.chunks.lock().unwrap_or_else(PoisonError::into_inner);
            (chunks.0[next..].to_vec(), chunks.1)
        };
        next += new.len();
        for chunk in new {
            client.write_all(&chunk).await?;
        }
        if ended {
            return Ok(());
        }
        grew.await;
    }
}

/// Reads from `from` into `buffer` until it holds a whole HTTP head, and
/// says where the head ends.
async fn read_head(from: &mut TcpStream, buffer: &mut Vec<u8>) -> io::Result<usize> {
    loop {
        if let Some(end) = find(buffer, b"\r\n\r\n") {
            return Ok(end + 4);
        }
        read_some(from, buffer, MAX_HEAD_BYTES).await?;
    }
}

/// One `read` onto the end of `buffer`, which may not grow past `limit`.
async fn read_some(from: &mut TcpStream, buffer: &mut Vec<u8>, limit: usize) -> io::Result<()> {
    let mut piece = [0u8; 16 * 1024];
    let n = from.read(&mut piece).await?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if buffer.len() + n > limit {
        return Err(io::Error::other("more than the broadcast holds"));
    }
    buffer.extend_from_slice(&piece[..n]);
    Ok(())
}

/// Takes the first whole HTTP/1.1 chunk, framing and all, off `body`, with
/// whether it is the last (a last chunk without trailers, as the upstream
/// sends).
fn next_chunk(body: &mut Vec<u8>) -> io::Result<Option<(Bytes, bool)>> {
    let Some(line) = find(body, b"\r\n") else {
        return Ok(None);
    };
    let size = std::str::from_utf8(&body[..line])
        .ok()
        .and_then(|line| line.split(';').next())
        .and_then(|size| usize::from_str_radix(size.trim(), 16).ok())
        .filter(|size| *size <= MAX_CHUNK_BYTES)
        .ok_or_else(|| io::Error::other("a chunk size line the broadcast cannot read"))?;
    let end = line + 2 + size + 2;
    if body.len() < end {
        return Ok(None);
    }
    let chunk = Bytes::copy_from_slice(&body[..end]);
    body.drain(..end);
    Ok(Some((chunk, size == 0)))
}
