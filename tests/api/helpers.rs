//! `spawn_app()` and the client side of the tests: a real tokenrelay on
//! 127.0.0.1 port 0 in front of a real [`FakeUpstream`], and a reader that
//! sees the response exactly as a browser would, frame by frame.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokenrelay::{AppState, Config};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::fake_upstream::FakeUpstream;

/// A running proxy and the fake upstream behind it.
pub struct TestApp {
    pub addr: SocketAddr,
    /// `https` when the settings name TLS files.
    pub scheme: &'static str,
    pub client: reqwest::Client,
    pub upstream: FakeUpstream,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

/// A proxy with default settings, short grace (0 s) so that a client leaving
/// stops the upstream at once.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// A proxy with `settings` over the test defaults.
pub async fn spawn_app_with(settings: &[(&str, &str)]) -> TestApp {
    let upstream = FakeUpstream::start().await;
    let base_url = upstream.base_url();
    spawn_app_in_front_of(
        upstream,
        &[&[("UPSTREAM_BASE_URL", base_url.as_str())], settings].concat(),
    )
    .await
}

/// A proxy serving the built-in demo model (no upstream configured).
pub async fn spawn_demo_app() -> TestApp {
    spawn_app_in_front_of(FakeUpstream::start().await, &[("DEFAULT_MODEL", "")]).await
}

/// A proxy in front of `upstream` (or the demo model, when the settings name no upstream).
pub async fn spawn_app_in_front_of(upstream: FakeUpstream, settings: &[(&str, &str)]) -> TestApp {
    let defaults = [
        ("LISTEN_ADDR", "127.0.0.1:0"),
        ("DEFAULT_MODEL", "fake-model"),
        ("RESUME_GRACE_SECS", "0"),
        ("UPSTREAM_RETRIES", "0"),
    ];
    let config = Config::from_lookup(|name| {
        settings
            .iter()
            .rev()
            .chain(defaults.iter())
            .find(|(key, _)| *key == name)
            .map(|(_, value)| (*value).to_owned())
    })
    .unwrap_or_else(|error| panic!("test config: {error}"));
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .unwrap_or_else(|error| panic!("bind: {error}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|error| panic!("addr: {error}"));
    let state = AppState::new(config)
        .await
        .unwrap_or_else(|error| panic!("state: {error}"));
    let (shutdown, signal) = oneshot::channel::<()>();
    let server = tokio::spawn(tokenrelay::serve(listener, state, async {
        let _ = signal.await;
    }));
    TestApp {
        addr,
        scheme,
        client: http_client(),
        upstream,
        shutdown: Some(shutdown),
        server: Some(server),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// `POST /api/chat` with a JSON body.
    pub async fn post_chat(&self, body: &Value) -> reqwest::Response {
        self.post_raw("application/json", body.to_string()).await
    }

    /// `POST /api/chat` with a raw body and content type.
    pub async fn post_raw(
        &self,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(self.url("/api/chat"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|error| panic!("POST /api/chat: {error}"))
    }

    /// Posts a chat and returns the response once its headers arrived.
    pub async fn post_chat_and_wait(&self, body: &Value) -> reqwest::Response {
        let response = self.post_chat(body).await;
        assert_eq!(response.status(), 200, "the chat should start");
        response
    }

    /// Posts a chat and reads the whole stream.
    pub async fn chat(&self, body: &Value) -> Transcript {
        Transcript::read(self.post_chat(body).await).await
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET {path}: {error}"))
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.client
            .delete(self.url(path))
            .send()
            .await
            .unwrap_or_else(|error| panic!("DELETE {path}: {error}"))
    }

    /// Starts a graceful shutdown, as SIGTERM does.
    pub fn begin_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Waits for the server to stop after [`TestApp::begin_shutdown`].
    pub async fn stopped(&mut self, within: Duration) -> bool {
        match self.server.take() {
            Some(server) => matches!(tokio::time::timeout(within, server).await, Ok(Ok(Ok(())))),
            None => true,
        }
    }
}

/// A plain HTTP client for the tests. reqwest needs a TLS crypto provider
/// even for `http://`, and tokenrelay uses ring's.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// The `X-Stream-Id` of a streaming response.
pub fn stream_id_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-stream-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Reads a JSON body, failing the test with the text when it is not JSON.
pub async fn json_body(response: reqwest::Response) -> Value {
    let text = response.text().await.unwrap_or_default();
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("not JSON ({error}): {text}"))
}

/// One SSE frame as a client parses it (WHATWG rules, enough for our output).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frame {
    pub id: Option<String>,
    pub data: Option<String>,
    pub retry: Option<String>,
    pub event: Option<String>,
    pub comments: Vec<String>,
}

impl Frame {
    /// The data as JSON, or `None` for `[DONE]` and non-JSON.
    pub fn json(&self) -> Option<Value> {
        self.data
            .as_deref()
            .and_then(|data| serde_json::from_str(data).ok())
    }

    /// A keep-alive comment frame.
    pub fn is_ping(&self) -> bool {
        self.comments.iter().any(|comment| comment == "ping")
    }

    pub fn kind(&self) -> Option<String> {
        self.json()
            .and_then(|json| json.get("type").and_then(Value::as_str).map(str::to_owned))
    }
}

/// A whole response as the client saw it.
#[derive(Debug)]
pub struct Transcript {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub frames: Vec<Frame>,
}

impl Transcript {
    pub async fn read(response: reqwest::Response) -> Self {
        Self::read_observing(response, |_| {}).await
    }

    /// Reads a stream and tells whether `upstream` was still sending when
    /// the first token reached the client: anything holding the answer back
    /// until its end (a buffering proxy, a missed flush) makes it false.
    pub async fn read_as_it_streams(
        response: reqwest::Response,
        upstream: &FakeUpstream,
    ) -> (Self, bool) {
        let mut upstream_still_sending = None;
        let transcript = Self::read_observing(response, |body| {
            let token: &[u8] = br#""type":"token""#;
            if upstream_still_sending.is_none() && body.windows(token.len()).any(|at| at == token) {
                upstream_still_sending = Some(upstream.bodies_open() > 0);
            }
        })
        .await;
        (transcript, upstream_still_sending == Some(true))
    }

    /// Reads the whole stream, showing `observe` the bytes so far after
    /// each piece.
    async fn read_observing(response: reqwest::Response, mut observe: impl FnMut(&[u8])) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        let reading = async {
            while let Some(Ok(piece)) = stream.next().await {
                body.extend_from_slice(&piece);
                observe(&body);
            }
        };
        if tokio::time::timeout(Duration::from_secs(30), reading)
            .await
            .is_err()
        {
            panic!("the response did not end within 30 s");
        }
        let text = String::from_utf8(body).unwrap_or_else(|error| panic!("not UTF-8: {error}"));
        let frames = parse_frames(&text);
        Self {
            status,
            headers,
            text,
            frames,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The JSON events, in order, without the retry frame and `[DONE]`.
    pub fn events(&self) -> Vec<Value> {
        self.frames.iter().filter_map(Frame::json).collect()
    }

    /// The concatenated `token` text (first choice).
    pub fn text_of(&self, kind: &str) -> String {
        self.events()
            .iter()
            .filter(|event| event["type"] == kind && event.get("choice").is_none())
            .filter_map(|event| event["token"].as_str().map(str::to_owned))
            .collect()
    }

    pub fn terminal(&self) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|event| event["type"] == "finish" || event["type"] == "error")
            .collect()
    }

    /// Whether the stream closed with `data: [DONE]` as its last frame.
    pub fn ends_with_done(&self) -> bool {
        self.frames
            .iter()
            .rev()
            .find(|frame| frame.data.is_some())
            .and_then(|frame| frame.data.as_deref())
            == Some("[DONE]")
    }
}

/// Splits an event stream into frames; comment-only frames are kept so tests
/// can see keep-alives.
pub fn parse_frames(text: &str) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut frame = Frame::default();
    let mut open = false;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            if open {
                frames.push(std::mem::take(&mut frame));
                open = false;
            }
            continue;
        }
        open = true;
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        let value = value.to_owned();
        match field {
            "" => frame.comments.push(value),
            "id" => frame.id = Some(value),
            "retry" => frame.retry = Some(value),
            "event" => frame.event = Some(value),
            "data" => {
                frame.data = Some(match frame.data.take() {
                    Some(previous) => format!("{previous}\n{value}"),
                    None => value,
                });
            }
            _ => {}
        }
    }
    frames
}
