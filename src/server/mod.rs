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
//! Without TLS, whether a connection speaks HTTP/1 or HTTP/2 (with prior
//! knowledge) is decided by peeking at its first bytes, not by reading them:
//! hyper-util's own detection reads 24 bytes and hands them to hyper apart
//! from the rest, and hyper's read buffer then doubled to 16 KiB on every
//! connection (README, Performance). With TLS ([`tls`]) the handshake must
//! end within the head's deadline, and ALPN decides; every limit above
//! applies the same. hyper removes connection-specific headers
//! (`Connection`, `Keep-Alive`, `Transfer-Encoding`) from HTTP/2 responses,
//! and the app sets none of them.

mod activity;
mod head;
pub(crate) mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::error::Error;
use crate::woken::WhenWoken;
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
    /// Requests open at once on one HTTP/2 connection.
    pub http2_max_streams: u32,
    /// Silence on an HTTP/2 connection before it is pinged, and how long the
    /// peer has to answer before it is taken for dead and closed.
    pub http2_ping_interval: Duration,
    pub http2_ping_timeout: Duration,
}

/// Connections the kernel may queue for us before `accept`. tokio's own
/// `bind` asks for 1024, which overflowed when thousands of clients came at
/// once (every open page reconnecting after a restart): the kernel then
/// drops their SYNs, and resets a connection whose SYN cookie fails. The
/// kernel caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 8192;

/// A listener on `addr` with room for [`LISTEN_BACKLOG`] connections.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As tokio's `bind` does, so a restart need not wait out TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A TLS record carrying a handshake starts with this byte; a client that
/// sends anything else first is not speaking TLS.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Serves `router` on `listener` (over TLS when `tls` is given) until
/// `shutdown` resolves, then stops accepting and waits for open connections,
/// at most `shutdown_grace` + [`SHUTDOWN_DRAIN`]; `on_shutdown` runs at that
/// moment (it starts the grace period of open streams).
pub(crate) async fn run(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<Arc<tls::Tls>>,
    shutdown: impl Future<Output = ()>,
    on_shutdown: impl FnOnce(),
) -> std::io::Result<()> {
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .max_buf_size(head::HARD_MAX_HEAD_BYTES)
        .max_headers(head::HARD_MAX_HEADERS);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_header_list_size(head::HARD_MAX_HEADER_LIST_BYTES)
        .max_concurrent_streams(limits.http2_max_streams)
        .keep_alive_interval(limits.http2_ping_interval)
        .keep_alive_timeout(limits.http2_ping_timeout);
    let builders = Arc::new((http1, http2));
    let places = Arc::new(Semaphore::new(limits.max_connections));
    // Graceful: connections finish their requests and close; connections
    // still waiting for their first bytes close at once.
    let stopping = CancellationToken::new();
    let acceptor = tls.map(|tls| {
        let acceptor = tls.acceptor();
        // No connection is accepted after shutdown begins, so no later
        // handshake needs a renewed certificate.
        tokio::spawn(Arc::clone(&tls).watch(stopping.clone()));
        acceptor
    });
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
            // A TLS client cannot read a plain answer, and a handshake is
            // what an overloaded server should not spend on: just close.
            if acceptor.is_none() {
                tokio::spawn(refuse(tcp));
            }
            continue;
        };
        let connection = Connection {
            acceptor: acceptor.clone(),
            router: router.clone(),
            limits,
            builders: Arc::clone(&builders),
            stopping: stopping.clone(),
            closing: closing.clone(),
        };
        let open = open.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.serve(tcp, peer).await {
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

/// What an accepted connection needs to be served.
struct Connection {
    acceptor: Option<TlsAcceptor>,
    router: Router,
    limits: Limits,
    builders: Arc<(http1::Builder, http2::Builder<TokioExecutor>)>,
    stopping: CancellationToken,
    closing: CancellationToken,
}

impl Connection {
    async fn serve(
        self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let deadline = Instant::now() + self.limits.request_timeout;
        match self.acceptor.clone() {
            None => {
                let Some(is_http2) = self.opening(deadline, speaks_http2(&tcp)).await else {
                    return Ok(());
                };
                self.http(tcp, is_http2, deadline, peer).await
            }
            // A TLS session and its handshake take three times the room of
            // a plain connection's state; boxed, so that a plain connection's
            // task, which every open stream holds, does not carry that room
            // too (README, Performance).
            Some(acceptor) => Box::pin(self.tls(acceptor, tcp, deadline, peer)).await,
        }
    }

    async fn tls(
        self,
        acceptor: TlsAcceptor,
        tcp: TcpStream,
        deadline: Instant,
        peer: SocketAddr,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let Some(tls) = self.opening(deadline, handshake(acceptor, tcp)).await else {
            return Ok(());
        };
        let is_http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        self.http(tls, is_http2, deadline, peer).await
    }

    /// What `opened` yields, unless the connection stays silent (or does
    /// not finish its handshake) until `deadline`, fails, or shutdown
    /// begins first: then there is nothing to serve.
    async fn opening<T>(
        &self,
        deadline: Instant,
        opened: impl Future<Output = io::Result<T>>,
    ) -> Option<T> {
        let opened = tokio::select! {
            opened = tokio::time::timeout_at(deadline, opened) => opened.ok()?,
            () = self.stopping.cancelled() => return None,
        };
        // A failed handshake is the client's business (an untrusted
        // certificate, no common cipher), but worth seeing when debugging.
        opened
            .inspect_err(|error| tracing::debug!(%error, "connection closed before HTTP"))
            .ok()
    }

    /// Serves HTTP on `io` until it closes, goes idle, or shutdown ends it.
    async fn http<I>(
        self,
        io: I,
        is_http2: bool,
        deadline: Instant,
        peer: SocketAddr,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            router,
            limits,
            builders,
            stopping,
            closing,
            ..
        } = self;
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
        let io = TokioIo::new(head::OwnRefusals::new(io));
        let service = TowerToHyperService::new(service);
        let idle = activity.idle(deadline, limits.request_timeout);
        let (http1, http2) = &*builders;
        if is_http2 {
            // Rare (prior knowledge, or ALPN), and its state is larger: boxed,
            // so that HTTP/1 connections do not carry its room.
            let connection = http2.serve_connection(io, service);
            let shutdown = http2::Connection::graceful_shutdown;
            return Box::pin(async move {
                drive(pin!(connection), pin!(idle), &stopping, &closing, shutdown).await
            })
            .await;
        }
        // hyper's own HTTP/1 connection, not hyper-util's `auto` one: that
        // holds room for HTTP/2 and wraps every read and write in another
        // layer, in the task of every open stream (README, Performance).
        let mut http1 = http1.clone();
        // The head's deadline counts from the connection, not from its first
        // byte.
        http1.header_read_timeout(deadline.saturating_duration_since(Instant::now()));
        let connection = http1.serve_connection(io, service);
        let shutdown = http1::Connection::graceful_shutdown;
        drive(pin!(connection), pin!(idle), &stopping, &closing, shutdown).await
    }
}

/// Serves `connection` until it closes, goes `idle`, or shutdown ends it;
/// `graceful_shutdown` is its own. Both are pinned where the caller keeps
/// them: taken by value, a future's arguments keep their own room in it
/// beside the pinned copies.
async fn drive<C, F>(
    mut connection: Pin<&mut C>,
    mut idle: Pin<&mut F>,
    stopping: &CancellationToken,
    closing: &CancellationToken,
    graceful_shutdown: fn(Pin<&mut C>),
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    C: Future<Output = Result<(), hyper::Error>>,
    F: Future<Output = ()>,
{
    // Polled only when one of them fired, not every time a token wakes
    // the connection (README, Performance).
    let ending = WhenWoken::new(async {
        tokio::select! {
            biased;
            // Dropping the connection closes it, whatever it waits for.
            () = closing.cancelled() => Ending::Now,
            () = idle.as_mut() => Ending::Idle,
            () = stopping.cancelled() => Ending::Stopping,
        }
    });
    tokio::pin!(ending);
    let ending = tokio::select! {
        biased;
        result = connection.as_mut() => return result.map_err(Into::into),
        ending = &mut ending => ending,
    };
    let drain = match ending {
        Ending::Now => return Ok(()),
        // An HTTP/2 close waits for the client to acknowledge it; a client
        // that never does is not waited for.
        Ending::Idle => Some(Instant::now() + IDLE_CLOSE_DRAIN),
        // Open streams may finish within the shutdown grace.
        Ending::Stopping => None,
    };
    graceful_shutdown(connection.as_mut());
    let drained = async {
        match drain {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = connection.as_mut() => result.map_err(Into::into),
        () = drained => Ok(()),
        () = closing.cancelled() => Ok(()),
    }
}

/// Why a connection stops being served as usual.
enum Ending {
    /// Shutdown's grace is over.
    Now,
    /// No request for `REQUEST_TIMEOUT_SECS`.
    Idle,
    /// Shutdown began: no new requests, open ones finish.
    Stopping,
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

/// The TLS session on `tcp`. A client speaking plain HTTP to this port is
/// told so in our error shape before the connection closes, instead of
/// meeting a handshake failure it cannot read.
async fn handshake(
    acceptor: TlsAcceptor,
    mut tcp: TcpStream,
) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 1 && first[0] != TLS_HANDSHAKE_RECORD {
        let error = Error::InvalidRequest(
            "this port serves HTTPS (TLS_CERT_FILE is set): use an https:// URL".to_owned(),
        );
        let _ = tcp.write_all(&head::closing_response(&error)).await;
        let _ = tcp.shutdown().await;
        // Closing with the request still unread would reset the connection
        // and could discard the answer before the client reads it.
        let mut unread = [0u8; 4096];
        let _ = tokio::time::timeout(IDLE_CLOSE_DRAIN, async {
            while matches!(tcp.read(&mut unread).await, Ok(read) if read > 0) {}
        })
        .await;
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "plain HTTP on the HTTPS port",
        ));
    }
    acceptor.accept(tcp).await
}

/// Answers a connection over the cap with a 503 in our error shape, then
/// closes it, so the client learns why instead of seeing a reset.
async fn refuse(mut tcp: TcpStream) {
    let error =
        Error::Overloaded("too many connections (MAX_CONNECTIONS); try again shortly".to_owned());
    let _ = tcp.write_all(&head::closing_response(&error)).await;
    let _ = tcp.shutdown().await;
}
