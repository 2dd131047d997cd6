//! A real OpenAI-compatible upstream for the integration tests. The proxy's
//! job is to survive what real providers do on the wire (slow first bytes,
//! events split at arbitrary bytes, dropped connections, clients that leave),
//! so this fake speaks genuine HTTP on a loopback port with real timing rather
//! than being a mock behind a trait, and it reports what it saw: the requests
//! it received and whether anyone hung up on its response bodies.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Requests bigger than this are a broken test, not something to buffer.
const MAX_REQUEST_BODY: usize = 16 * 1024 * 1024;

/// `prompt_tokens` reported by [`Reply::tokens`]; the fake never tokenizes.
const FAKE_PROMPT_TOKENS: usize = 10;

/// A running fake upstream; the server stops when this is dropped.
#[derive(Debug)]
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<io::Result<()>>,
}

#[derive(Debug)]
struct Shared {
    replies: Mutex<Replies>,
    // Everything tests observe sits in one watch: reads are consistent
    // snapshots, and waiters are woken on each change instead of polling.
    observed: watch::Sender<Observed>,
}

#[derive(Debug)]
struct Replies {
    queue: VecDeque<Reply>,
    default: Reply,
    /// The answer to `GET /v1/models`, when a test scripts one.
    models: Option<Reply>,
}

#[derive(Debug, Default)]
struct Observed {
    requests: Vec<Recorded>,
    bodies_open: usize,
    bodies_dropped: usize,
}

impl FakeUpstream {
    /// Binds 127.0.0.1 on a free port and serves from a background task.
    #[allow(
        clippy::expect_used,
        reason = "failing to bind loopback is a broken test environment"
    )]
    pub async fn start() -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake upstream on 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("read the fake upstream's bound address");
        let shared = Arc::new(Shared {
            replies: Mutex::new(Replies {
                queue: VecDeque::new(),
                default: Reply::tokens(&["Hello", " world"]),
                models: None,
            }),
            observed: watch::Sender::new(Observed::default()),
        });
        // Every path goes through one handler so that unknown routes are
        // recorded too: a test asserting "the proxy never called X" must see X.
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        FakeUpstream {
            addr,
            shared,
            server,
        }
    }

    /// The OpenAI-style base URL, e.g. `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues the reply for the next chat request, on any dialect's path.
    pub fn push(&self, reply: Reply) {
        lock(&self.shared.replies).queue.push_back(reply);
    }

    /// The reply used whenever the queue is empty (initially a short
    /// "Hello world" token stream).
    pub fn set_default(&self, reply: Reply) {
        lock(&self.shared.replies).default = reply;
    }

    /// The answer to every later `GET /v1/models`, instead of the
    /// one-model list.
    pub fn set_models(&self, reply: Reply) {
        lock(&self.shared.replies).models = Some(reply);
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.observed.borrow().requests.clone()
    }

    /// Waits until at least `n` requests have arrived; false on timeout.
    pub async fn wait_for_requests(&self, n: usize, within: Duration) -> bool {
        self.wait_until(within, |o| o.requests.len() >= n).await
    }

    /// Response bodies the client abandoned before they were fully sent.
    /// A [`Reply::cut_after`] is the server's own doing and is not counted.
    pub fn bodies_dropped(&self) -> usize {
        self.shared.observed.borrow().bodies_dropped
    }

    /// Response bodies still being streamed right now.
    pub fn bodies_open(&self) -> usize {
        self.shared.observed.borrow().bodies_open
    }

    /// Waits until `bodies_dropped() >= n`; false on timeout.
    pub async fn wait_dropped(&self, n: usize, within: Duration) -> bool {
        self.wait_until(within, |o| o.bodies_dropped >= n).await
    }

    async fn wait_until(&self, within: Duration, done: impl FnMut(&Observed) -> bool) -> bool {
        let mut rx = self.shared.observed.subscribe();
        // `wait_for` only errs once the sender is gone, and `self` owns it.
        matches!(
            tokio::time::timeout(within, rx.wait_for(done)).await,
            Ok(Ok(_))
        )
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        // Stops accepting; connections already open finish on their own.
        self.server.abort();
    }
}

/// One request as the fake upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The query string, without the `?`.
    pub query: Option<String>,
    pub headers: HeaderMap,
    /// The parsed JSON body, or `Null` if it was empty or not JSON.
    pub body: Value,
}

impl Recorded {
    /// A header's value, if present and valid UTF-8 (names are case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// How a reply body is split into network writes.
#[derive(Clone, Copy, Debug)]
pub enum Chunking {
    /// The whole body in one piece.
    Whole,
    /// Fixed-size pieces of this many bytes (the last may be shorter).
    Bytes(usize),
    /// Pieces of 1..=max bytes from a seeded xorshift, so failures replay.
    Random { seed: u64, max: usize },
    /// One SSE event (through its terminating blank line) per piece.
    Events,
}

/// What happens after the last piece (or after the piece limit).
#[derive(Clone, Copy, Debug)]
enum Ending {
    Complete,
    Cut { after: usize },
    Hang { after: usize },
}

#[derive(Clone, Debug)]
enum Content {
    Once(Bytes),
    Endless(Bytes),
}

/// A scripted answer to `POST /v1/chat/completions`, built fluently:
/// `Reply::tokens(&["a", "b"]).pace(ms(20)).cut_after(2)`.
#[derive(Clone, Debug)]
pub struct Reply {
    status: StatusCode,
    content_type: HeaderValue,
    retry_after: Option<u64>,
    /// More response headers, set last (so they may override the others).
    headers: HeaderMap,
    content: Content,
    chunking: Chunking,
    pace: Duration,
    first_byte_after: Duration,
    headers_after: Duration,
    ending: Ending,
}

impl Reply {
    /// 200 `text/event-stream` with exactly this raw body, one event per piece.
    pub fn sse(body: impl Into<Bytes>) -> Reply {
        Reply {
            status: StatusCode::OK,
            content_type: HeaderValue::from_static("text/event-stream"),
            retry_after: None,
            headers: HeaderMap::new(),
            content: Content::Once(body.into()),
            chunking: Chunking::Events,
            pace: Duration::ZERO,
            first_byte_after: Duration::ZERO,
            headers_after: Duration::ZERO,
            ending: Ending::Complete,
        }
    }

    /// Replays `tests/fixtures/upstream/<name>` byte for byte.
    #[allow(
        clippy::expect_used,
        reason = "a missing fixture is a broken test, not a case to handle"
    )]
    pub fn fixture(name: &str) -> Reply {
        let path = format!(
            "{}/tests/fixtures/upstream/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let body = std::fs::read(&path).expect("read an upstream fixture file");
        Reply::sse(body)
    }

    /// A well-formed OpenAI chat.completion.chunk stream: a role chunk, one
    /// chunk per token, a `stop` finish chunk, a usage chunk with empty
    /// `choices` (prompt_tokens 10, completion_tokens = number of tokens),
    /// then `data: [DONE]`.
    pub fn tokens(tokens: &[&str]) -> Reply {
        let chunk = |choices: Value| {
            json!({
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "fake-model",
                "choices": choices,
            })
        };
        let choice = |delta: Value, finish: Value| json!([{ "index": 0, "delta": delta, "finish_reason": finish }]);

        let mut events = vec![chunk(choice(
            json!({ "role": "assistant", "content": "" }),
            Value::Null,
        ))];
        events.extend(
            tokens
                .iter()
                .map(|t| chunk(choice(json!({ "content": t }), Value::Null))),
        );
        events.push(chunk(choice(json!({}), json!("stop"))));
        let mut usage = chunk(json!([]));
        usage["usage"] = json!({
            "prompt_tokens": FAKE_PROMPT_TOKENS,
            "completion_tokens": tokens.len(),
            "total_tokens": FAKE_PROMPT_TOKENS + tokens.len(),
        });
        events.push(usage);

        let mut body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
        body.push_str("data: [DONE]\n\n");
        Reply::sse(body)
    }

    /// An error answer with a JSON body, sent whole.
    #[allow(
        clippy::expect_used,
        reason = "an impossible status code is a broken test, not a case to handle"
    )]
    pub fn status(code: u16, body: Value) -> Reply {
        Reply {
            status: StatusCode::from_u16(code).expect("a valid HTTP status code"),
            content_type: HeaderValue::from_static("application/json"),
            chunking: Chunking::Whole,
            ..Reply::sse(body.to_string())
        }
    }

    /// Sends `piece` over and over until the client goes away; chunking does
    /// not apply, every write is exactly `piece`.
    pub fn endless(piece: impl Into<Bytes>) -> Reply {
        Reply {
            content: Content::Endless(piece.into()),
            ..Reply::sse(Bytes::new())
        }
    }

    /// The same reply with another status.
    #[allow(
        clippy::expect_used,
        reason = "an impossible status code is a broken test, not a case to handle"
    )]
    pub fn with_status(self, code: u16) -> Reply {
        Reply {
            status: StatusCode::from_u16(code).expect("a valid HTTP status code"),
            ..self
        }
    }

    pub fn chunked(self, how: Chunking) -> Reply {
        Reply {
            chunking: how,
            ..self
        }
    }

    /// Real sleep between consecutive pieces.
    pub fn pace(self, gap: Duration) -> Reply {
        Reply { pace: gap, ..self }
    }

    /// Real sleep after the headers, before the first body piece.
    pub fn first_byte_after(self, delay: Duration) -> Reply {
        Reply {
            first_byte_after: delay,
            ..self
        }
    }

    /// Real sleep before the response headers are sent at all.
    pub fn headers_after(self, delay: Duration) -> Reply {
        Reply {
            headers_after: delay,
            ..self
        }
    }

    #[allow(
        clippy::expect_used,
        reason = "an unsendable content type is a broken test, not a case to handle"
    )]
    pub fn content_type(self, content_type: &str) -> Reply {
        Reply {
            content_type: HeaderValue::from_str(content_type)
                .expect("a content type that is a valid header value"),
            ..self
        }
    }

    /// Aborts the connection mid-body (the client sees an error, not a clean
    /// end) after `pieces` pieces, or after the last piece if there are fewer.
    /// Replaces any earlier `cut_after`/`hang_after`.
    pub fn cut_after(self, pieces: usize) -> Reply {
        Reply {
            ending: Ending::Cut { after: pieces },
            ..self
        }
    }

    /// Stops writing after `pieces` pieces (or after the last piece if there
    /// are fewer) but keeps the connection open until the client leaves.
    /// Replaces any earlier `cut_after`/`hang_after`.
    pub fn hang_after(self, pieces: usize) -> Reply {
        Reply {
            ending: Ending::Hang { after: pieces },
            ..self
        }
    }

    /// Adds a response header: a `Location`, or a `Content-Length` that
    /// the body never fills.
    #[allow(
        clippy::expect_used,
        reason = "an unsendable header is a broken test, not a case to handle"
    )]
    pub fn header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.insert(
            name,
            HeaderValue::from_str(value).expect("a valid header value"),
        );
        self
    }

    pub fn retry_after(self, secs: u64) -> Reply {
        Reply {
            retry_after: Some(secs),
            ..self
        }
    }

    async fn into_response(self, shared: Arc<Shared>) -> Response {
        sleep(self.headers_after).await;
        let pieces: Box<dyn Iterator<Item = Bytes> + Send> = match self.content {
            Content::Once(body) => Box::new(split(body, self.chunking).into_iter()),
            Content::Endless(piece) => Box::new(std::iter::repeat(piece)),
        };
        let feed = Feed {
            pieces,
            sent: 0,
            pace: self.pace,
            first_byte_after: self.first_byte_after,
            ending: self.ending,
            finished: false,
            guard: BodyGuard::open(shared),
        };
        let mut response = Response::new(Body::from_stream(futures_util::stream::unfold(
            feed,
            Feed::next,
        )));
        *response.status_mut() = self.status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, self.content_type);
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response.headers_mut().extend(self.headers);
        response
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // A body that fails to arrive is recorded as Null rather than failing the
    // request: how the proxy behaves afterwards is what the test looks at.
    let body = axum::body::to_bytes(body, MAX_REQUEST_BODY)
        .await
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null);
    let path = parts.uri.path().to_owned();
    shared.observed.send_modify(|o| {
        o.requests.push(Recorded {
            method: parts.method.to_string(),
            path: path.clone(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers,
            body,
        });
    });

    match (parts.method, path.as_str()) {
        (Method::POST, chat) if is_chat_path(chat) => {
            let reply = {
                let mut replies = lock(&shared.replies);
                replies
                    .queue
                    .pop_front()
                    .unwrap_or_else(|| replies.default.clone())
            };
            reply.into_response(shared).await
        }
        (Method::GET, "/v1/models") => {
            let scripted = lock(&shared.replies).models.clone();
            match scripted {
                Some(reply) => reply.into_response(shared).await,
                None => json_response(
                    StatusCode::OK,
                    json!({
                        "object": "list",
                        "data": [{ "id": "fake-model", "object": "model", "created": 0, "owned_by": "fake" }],
                    }),
                ),
            }
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            json!({ "error": { "message": format!("fake upstream has no route {path}"), "type": "invalid_request_error" } }),
        ),
    }
}

/// Where each dialect the proxy speaks sends a chat: OpenAI's chat
/// completions, Anthropic's messages, the Responses API, and Gemini's
/// `models/{model}:streamGenerateContent`.
fn is_chat_path(path: &str) -> bool {
    matches!(
        path,
        "/v1/chat/completions" | "/v1/messages" | "/v1/responses"
    ) || path
        .strip_prefix("/v1/models/")
        .is_some_and(|rest| rest.ends_with(":streamGenerateContent"))
}

fn json_response(status: StatusCode, body: Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The state of one streaming body, advanced by `stream::unfold`.
struct Feed {
    pieces: Box<dyn Iterator<Item = Bytes> + Send>,
    sent: usize,
    pace: Duration,
    first_byte_after: Duration,
    ending: Ending,
    /// Set once a cut error has been yielded, so a re-poll ends the stream.
    finished: bool,
    guard: BodyGuard,
}

impl Feed {
    async fn next(mut self) -> Option<(io::Result<Bytes>, Feed)> {
        if self.finished {
            return None;
        }
        let limit = match self.ending {
            Ending::Complete => None,
            Ending::Cut { after } | Ending::Hang { after } => Some(after),
        };
        let piece = match limit {
            Some(after) if self.sent >= after => None,
            _ => self.pieces.next(),
        };
        let Some(piece) = piece else {
            return self.end().await;
        };

        let gap = if self.sent == 0 {
            self.first_byte_after
        } else {
            self.pace
        };
        if gap.is_zero() {
            // Returning Pending once makes hyper flush what it has, so each
            // piece leaves as its own write instead of being coalesced.
            tokio::task::yield_now().await;
        } else {
            sleep(gap).await;
        }
        self.sent += 1;
        Some((Ok(piece), self))
    }

    async fn end(mut self) -> Option<(io::Result<Bytes>, Feed)> {
        match self.ending {
            Ending::Complete => {
                self.guard.completed = true;
                None
            }
            Ending::Cut { .. } => {
                // hyper drops its unflushed buffer on a body error; returning
                // Pending once first lets it flush the pieces already yielded.
                tokio::task::yield_now().await;
                // Our own abort, not the client leaving: count it as completed.
                self.guard.completed = true;
                self.finished = true;
                let cut = io::Error::new(io::ErrorKind::ConnectionAborted, "fake upstream cut");
                Some((Err(cut), self))
            }
            // Holding `self` keeps the guard alive until hyper drops the body,
            // which is exactly when the client goes away.
            Ending::Hang { .. } => std::future::pending().await,
        }
    }
}

/// Counts a body as open while it exists, and as dropped if it is destroyed
/// before the stream finished: that is how a client hanging up shows.
#[derive(Debug)]
struct BodyGuard {
    shared: Arc<Shared>,
    completed: bool,
}

impl BodyGuard {
    fn open(shared: Arc<Shared>) -> BodyGuard {
        shared.observed.send_modify(|o| o.bodies_open += 1);
        BodyGuard {
            shared,
            completed: false,
        }
    }
}

impl Drop for BodyGuard {
    fn drop(&mut self) {
        let completed = self.completed;
        self.shared.observed.send_modify(|o| {
            o.bodies_open -= 1;
            if !completed {
                o.bodies_dropped += 1;
            }
        });
    }
}

fn split(body: Bytes, how: Chunking) -> Vec<Bytes> {
    match how {
        Chunking::Whole => vec![body],
        Chunking::Events => split_events(body),
        Chunking::Bytes(size) => split_sizes(body, || size.max(1)),
        Chunking::Random { seed, max } => {
            let mut rng = XorShift::new(seed);
            split_sizes(body, || 1 + rng.below(max.max(1)))
        }
    }
}

fn split_sizes(mut body: Bytes, mut next_size: impl FnMut() -> usize) -> Vec<Bytes> {
    let mut pieces = Vec::new();
    while !body.is_empty() {
        let size = next_size().min(body.len());
        pieces.push(body.split_to(size));
    }
    pieces
}

/// Splits after each blank line, accepting LF, CRLF and CR line endings as
/// the SSE spec does, so that recorded CRLF streams split per event too.
/// Trailing bytes without a final blank line become the last piece.
fn split_events(body: Bytes) -> Vec<Bytes> {
    let mut cuts = Vec::new();
    let mut line_start = 0;
    let mut i = 0;
    while i < body.len() {
        let terminator = match (body[i], body.get(i + 1)) {
            (b'\r', Some(b'\n')) => 2,
            (b'\r' | b'\n', _) => 1,
            _ => {
                i += 1;
                continue;
            }
        };
        let line_is_empty = i == line_start;
        i += terminator;
        line_start = i;
        if line_is_empty {
            cuts.push(i);
        }
    }
    let mut pieces = Vec::new();
    let mut from = 0;
    for cut in cuts {
        pieces.push(body.slice(from..cut));
        from = cut;
    }
    if from < body.len() {
        pieces.push(body.slice(from..));
    }
    pieces
}

/// xorshift64: tiny, deterministic and good enough to vary piece sizes.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        // Zero is xorshift's fixed point; any other constant would do.
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    fn below(&mut self, bound: usize) -> usize {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        // `bound` fits in u64 and the remainder is below it, so both casts are lossless.
        (x % bound as u64) as usize
    }
}

async fn sleep(duration: Duration) {
    // A zero sleep still waits for the next timer tick (about 1ms).
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}

/// Locks a mutex, ignoring poisoning: a panicked test thread must not turn
/// every later assertion into a second, misleading panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
