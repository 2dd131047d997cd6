//! The accept loop: every connection gets `TCP_NODELAY`, a deadline for its
//! request headers, and a place under `MAX_CONNECTIONS`; shutdown stops
//! accepting, then drains.
//!
//! `axum::serve` has no header timeout and no connection cap, so a client
//! that opens connections and sends nothing (or sends headers a byte at a
//! time) could hold memory and file descriptors forever. hyper's own builder
//! has both knobs; this module drives it.
//!
//! Whether a connection speaks HTTP/1 or HTTP/2 (with prior knowledge) is
//! decided by peeking at its first bytes, not by reading them: hyper-util's
//! own detection reads 24 bytes and hands them to hyper apart from the rest,
//! and hyper's read buffer then doubled to 16 KiB on every connection
//! (README, Performance).

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::error::Error;

/// Limits of the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting and waits for open connections; `on_shutdown` runs at that
/// moment (it starts the grace period of open streams).
pub async fn run(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    on_shutdown: impl FnOnce(),
) -> std::io::Result<()> {
    let mut http1 = auto::Builder::new(TokioExecutor::new()).http1_only();
    http1
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut http2 = auto::Builder::new(TokioExecutor::new()).http2_only();
    http2.http2().timer(TokioTimer::new());
    let builders = Arc::new((http1, http2));
    let places = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    // Connections still waiting for their first bytes when shutdown begins
    // are closed at once, as hyper closes idle ones.
    let stopping = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors or a connection reset before accept:
                    // pause briefly instead of spinning, then go on.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // A small SSE write must not wait for the client's delayed ACK.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let Ok(place) = Arc::clone(&places).try_acquire_owned() else {
            tokio::spawn(refuse(tcp));
            continue;
        };
        // The peer address is what rate limits count when auth is off.
        let service = router
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let builders = Arc::clone(&builders);
        let watcher = graceful.watcher();
        let stopping = stopping.clone();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let deadline = Instant::now() + header_timeout;
            let detected = tokio::select! {
                detected = tokio::time::timeout_at(deadline, speaks_http2(&tcp)) => detected,
                () = stopping.cancelled() => return,
            };
            // Silent until the deadline, or gone: there is nothing to serve.
            let Ok(Ok(is_http2)) = detected else {
                return;
            };
            let (http1_builder, http2_builder) = &*builders;
            let timed;
            let builder = if is_http2 {
                http2_builder
            } else {
                // The head's deadline counts from the connection, not from
                // its first byte.
                let mut builder = http1_builder.clone();
                builder
                    .http1()
                    .header_read_timeout(deadline.saturating_duration_since(Instant::now()));
                timed = builder;
                &timed
            };
            let connection = builder
                .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
                .into_owned();
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
            drop(place);
        });
    }
    drop(listener);
    on_shutdown();
    stopping.cancel();
    graceful.shutdown().await;
    Ok(())
}

/// Whether `tcp` opens with the HTTP/2 connection preface; waits only as
/// long as the bytes so far could still be its beginning.
async fn speaks_http2(tcp: &TcpStream) -> io::Result<bool> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut start = [0u8; PREFACE.len()];
    loop {
        let seen = tcp.peek(&mut start).await?;
        if seen == 0 || start[..seen] != PREFACE[..seen] {
            return Ok(false);
        }
        if seen == PREFACE.len() {
            return Ok(true);
        }
        // A preface cut short: data already waiting makes `peek` return at
        // once, so give the rest a moment to arrive instead of spinning.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Answers a connection over the cap with a 503 in our error shape, then
/// closes it, so the client learns why instead of seeing a reset.
async fn refuse(mut tcp: TcpStream) {
    let error =
        Error::Overloaded("too many connections (MAX_CONNECTIONS); try again shortly".to_owned());
    let body = serde_json::to_string(&error.body()).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        error.status(),
        body.len()
    );
    let _ = tcp.write_all(head.as_bytes()).await;
    let _ = tcp.write_all(body.as_bytes()).await;
    let _ = tcp.shutdown().await;
}
