//! The two relays tokenrelay is measured against, so that its cost reads as
//! a multiple of what any relay pays on this machine rather than as an
//! absolute figure:
//!
//! - `naive`: the relay a user writes in an afternoon — axum `Sse`, reqwest
//!   and eventsource-stream, `TCP_NODELAY` on both sides, each chunk parsed
//!   into a `serde_json::Value` and written out again as an event;
//! - `pipe`: the floor — a TCP proxy copying bytes both ways without
//!   parsing them (`tokio::io::copy_bidirectional`, `TCP_NODELAY`).
//!
//! Each runs in a child process, the benchmark binary started again with
//! `--serve-reference <name> <listen> <upstream>`, pinned to tokenrelay's
//! core, so that its `/proc` figures are its own exactly as tokenrelay's are.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::routing::post;
use axum::serve::ListenerExt;
use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use tokio::net::{TcpListener, TcpStream};

use crate::client::Via;

/// The first argument that makes the benchmark binary a reference relay.
pub const SERVE: &str = "--serve-reference";

/// A relay the load runs through, beside running it directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    Tokenrelay,
    Naive,
    Pipe,
}

impl Relay {
    /// Every relay, in the order a scenario runs them.
    pub const ALL: [Self; 3] = [Self::Tokenrelay, Self::Naive, Self::Pipe];
    pub const REFERENCES: [Self; 2] = [Self::Naive, Self::Pipe];

    pub fn name(self) -> &'static str {
        match self {
            Self::Tokenrelay => "tokenrelay",
            Self::Naive => "naive",
            Self::Pipe => "pipe",
        }
    }

    /// What the client speaks to it: the references pass the upstream's
    /// OpenAI chunks on.
    pub fn via(self) -> Via {
        match self {
            Self::Tokenrelay => Via::Tokenrelay,
            Self::Naive | Self::Pipe => Via::OpenAi,
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
        return Err(format!("usage: {SERVE} naive|pipe LISTEN UPSTREAM"));
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
            _ => pipe(listener, upstream).await,
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
