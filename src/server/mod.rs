//! The accept loop: every connection gets `TCP_NODELAY`, a deadline for its
//! request headers, a place under `MAX_CONNECTIONS`, and is closed once it
//! has had no open request for `REQUEST_TIMEOUT_SECS`; shutdown stops
//! accepting, drains, and closes whatever is left at a hard deadline.
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

mod activity;
mod head;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::error::Error;
use activity::Activity;

/// How long after the streams' grace at shutdown connections may still
/// drain (the final events of a stream, a response being written) before
/// they are closed, so that shutdown ends in `SHUTDOWN_GRACE_SECS` + 2 s.
pub(crate) const SHUTDOWN_DRAIN: Duration = Duration::from_secs(2);

/// How long a connection closed for idleness may take to say goodbye.
const IDLE_CLOSE_DRAIN: Duration = Duration::from_secs(1);

/// Limits of the accept loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_connections: usize,
    /// For a request head, and for a connection with no open request.
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    /// What open streams get at shutdown before they are ended.
    pub shutdown_grace: Duration,
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting and waits for open connections, at most
/// `shutdown_grace` + [`SHUTDOWN_DRAIN`]; `on_shutdown` runs at that moment
/// (it starts the grace period of open streams).
pub(crate) async fn run(
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
        .max_buf_size(head::HARD_MAX_HEAD_BYTES)
        .max_headers(head::HARD_MAX_HEADERS);
    let mut http2 = auto::Builder::new(TokioExecutor::new()).http2_only();
    http2
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(head::HARD_MAX_HEADER_LIST_BYTES);
    let builders = Arc::new((http1, http2));
    let places = Arc::new(Semaphore::new(limits.max_connections));
    // Graceful: connections finish their requests and close; connections
    // still waiting for their first bytes close at once.
    let stopping = CancellationToken::new();
    // Hard: whatever is still open is dropped.
    let closing = CancellationToken::new();
    // Every connection task holds a receiver; all gone means all closed.
    let (all_closed, open) = watch::channel(());
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
        let connection = Connection {
            tcp,
            router: router.clone(),
            limits,
            builders: Arc::clone(&builders),
            stopping: stopping.clone(),
            closing: closing.clone(),
        };
        let open = open.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.serve(peer).await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
            drop((place, open));
        });
    }
    let deadline = Instant::now() + limits.shutdown_grace + SHUTDOWN_DRAIN;
    drop((listener, open));
    on_shutdown();
    stopping.cancel();
    if tokio::time::timeout_at(deadline, all_closed.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = all_closed.receiver_count(),
            "closing the connections still open at the shutdown deadline"
        );
        closing.cancel();
        // Each task ends at its next poll; a short wait lets them go.
        let _ = tokio::time::timeout(Duration::from_secs(1), all_closed.closed()).await;
    }
    Ok(())
}

/// One accepted connection and what it needs to be served.
struct Connection {
    tcp: TcpStream,
    router: Router,
    limits: Limits,
    builders: Arc<(auto::Builder<TokioExecutor>, auto::Builder<TokioExecutor>)>,
    stopping: CancellationToken,
    closing: CancellationToken,
}

impl Connection {
    async fn serve(
        self,
        peer: std::net::SocketAddr,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let Self {
            tcp,
            router,
            limits,
            builders,
            stopping,
            closing,
        } = self;
        let deadline = Instant::now() + limits.request_timeout;
        let detected = tokio::select! {
            detected = tokio::time::timeout_at(deadline, speaks_http2(&tcp)) => detected,
            () = stopping.cancelled() => return Ok(()),
        };
        // Silent until the deadline, or gone: there is nothing to serve.
        let Ok(Ok(is_http2)) = detected else {
            return Ok(());
        };
        let (http1_builder, http2_builder) = &*builders;
        let timed;
        let builder = if is_http2 {
            http2_builder
        } else {
            // The head's deadline counts from the connection, not from its
            // first byte.
            let mut builder = http1_builder.clone();
            builder
                .http1()
                .header_read_timeout(deadline.saturating_duration_since(Instant::now()));
            timed = builder;
            &timed
        };
        let activity = Activity::new();
        let service = {
            let activity = activity.clone();
            tower::service_fn(move |mut request: Request<Incoming>| {
                // The peer address is what rate limits count when auth is off.
                request.extensions_mut().insert(ConnectInfo(peer));
                let open = activity.open();
                let refusal = head::refusal(&request, limits.max_body_bytes);
                let router = router.clone();
                async move {
                    let response = match refusal {
                        Some(error) => error.into_response(),
                        None => router.oneshot(request).await?,
                    };
                    Ok::<_, Infallible>(response.map(|body| open.around(body)))
                }
            })
        };
        let connection = builder.serve_connection(
            TokioIo::new(head::OwnRefusals::new(tcp)),
            TowerToHyperService::new(service),
        );
        tokio::pin!(connection);
        let idle = activity.idle(deadline, limits.request_timeout);
        tokio::pin!(idle);
        let dropped_at = tokio::time::sleep(Duration::MAX);
        tokio::pin!(dropped_at);
        let mut winding_down = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => return result,
                () = &mut idle, if !winding_down => {
                    winding_down = true;
                    connection.as_mut().graceful_shutdown();
                    // An HTTP/2 close waits for the client to acknowledge it;
                    // a client that never does is not waited for.
                    dropped_at.as_mut().reset(Instant::now() + IDLE_CLOSE_DRAIN);
                }
                () = &mut dropped_at => return Ok(()),
                () = stopping.cancelled(), if !winding_down => {
                    winding_down = true;
                    connection.as_mut().graceful_shutdown();
                }
                // Dropping the connection closes it, whatever it waits for.
                () = closing.cancelled() => return Ok(()),
            }
        }
    }
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
    let _ = tcp.write_all(&head::closing_response(&error)).await;
    let _ = tcp.shutdown().await;
}
