//! Bad clients and bad upstreams cannot hurt the server: every loop here is
//! bounded, targets 127.0.0.1 only, and stops by itself.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::fake_upstream::Reply;
use crate::helpers::{TestApp, json_body, spawn_app, spawn_app_with};

/// A long answer in many small chunks, paced so clients can leave mid-way.
fn long_answer(gap: Duration) -> Reply {
    let tokens: Vec<String> = (0..100).map(|n| format!("t{n} ")).collect();
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    Reply::tokens(&tokens).pace(gap)
}

async fn active_streams(app: &TestApp) -> String {
    let text = app.get("/metrics").await.text().await.unwrap_or_default();
    text.lines()
        .find(|line| line.starts_with("tokenrelay_active_streams "))
        .unwrap_or_default()
        .to_owned()
}

async fn assert_still_serving(app: &TestApp) {
    app.upstream.push(Reply::tokens(&["still", " here"]));
    let transcript = app.chat(&json!({"prompt": "ok?"})).await;
    assert_eq!(transcript.text_of("token"), "still here");
}

/// A raw HTTP/1.1 request on its own connection.
async fn raw_connection(app: &TestApp, head: &str) -> TcpStream {
    let mut stream = TcpStream::connect(app.addr)
        .await
        .unwrap_or_else(|error| panic!("connect: {error}"));
    stream
        .write_all(head.as_bytes())
        .await
        .unwrap_or_else(|error| panic!("write: {error}"));
    stream
}

async fn read_status_line(stream: &mut TcpStream) -> String {
    let mut buffer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
        .await
        .unwrap_or_else(|_| panic!("no answer within 10 s"))
        .unwrap_or_else(|error| panic!("read: {error}"));
    String::from_utf8_lossy(&buffer[..read])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_thousand_clients_leaving_at_random_points_leave_nothing_open() {
    let app = spawn_app().await;
    app.upstream
        .set_default(long_answer(Duration::from_millis(5)));
    let clients = 1_000;

    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let cut_points: Vec<usize> = (0..clients)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 4_000) as usize
        })
        .collect();
    let body = json!({"prompt": "x"}).to_string();
    let runs = cut_points.into_iter().map(|cut| {
        let client = app.client.clone();
        let url = app.url("/api/chat");
        let body = body.clone();
        async move {
            let Ok(mut response) = client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
            else {
                return;
            };
            let mut seen = 0;
            while seen < cut {
                match response.chunk().await {
                    Ok(Some(piece)) => seen += piece.len(),
                    _ => break,
                }
            }
        }
    });
    futures_util::stream::iter(runs)
        .buffer_unordered(250)
        .collect::<Vec<()>>()
        .await;

    for _ in 0..100 {
        if app.upstream.bodies_open() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        app.upstream.bodies_open(),
        0,
        "no upstream request may stay open"
    );
    assert_eq!(active_streams(&app).await, "tokenrelay_active_streams 0");
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_client_that_never_reads_costs_bounded_memory_and_releases_the_upstream() {
    let app = spawn_app_with(&[
        ("RESUME_MAX_STREAM_BYTES", "65536"),
        ("RESUME_GRACE_SECS", "0.3"),
    ])
    .await;
    let token = format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {"content": "x".repeat(200)}}]})
    );
    app.upstream.push(Reply::endless(token));

    let _stuck = raw_connection(
        &app,
        &format!(
            "POST /api/chat HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
            r#"{"prompt":"x"}"#.len(),
            r#"{"prompt":"x"}"#
        ),
    )
    .await;

    assert!(
        app.upstream.wait_dropped(1, Duration::from_secs(20)).await,
        "once the log outgrew what the stuck client could ever read, the grace period ran and the upstream was dropped"
    );
    assert_eq!(active_streams(&app).await, "tokenrelay_active_streams 0");
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn an_event_that_never_ends_is_invalid_upstream_data() {
    let app = spawn_app_with(&[("UPSTREAM_MAX_LINE_BYTES", "65536")]).await;
    app.upstream.push(Reply::endless("data: more and more\n"));

    let transcript = app.chat(&json!({"prompt": "x"})).await;

    assert_eq!(transcript.terminal()[0]["code"], "invalid_upstream_data");
    assert!(transcript.ends_with_done());
    assert!(app.upstream.wait_dropped(1, Duration::from_secs(2)).await);
}

#[tokio::test]
async fn oversized_headers_are_refused_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let huge = "x".repeat(1024 * 1024);

    let mut stream = raw_connection(
        &app,
        &format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {huge}\r\n\r\n"),
    )
    .await;
    let status = read_status_line(&mut stream).await;

    assert!(status.starts_with("HTTP/1.1 431"), "{status:?}");
    let (status, body) = crate::input::raw_exchange(
        app.addr,
        format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {huge}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status, 431);
    assert_eq!(body["error"]["code"], "headers_too_large", "{body}");
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_body_that_trickles_in_gets_408() {
    let app = spawn_app_with(&[("REQUEST_TIMEOUT_SECS", "0.5")]).await;

    let mut stream = raw_connection(
        &app,
        "POST /api/chat HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"pro",
    )
    .await;
    let status = read_status_line(&mut stream).await;

    assert!(status.starts_with("HTTP/1.1 408"), "{status:?}");
    assert_eq!(app.upstream.requests().len(), 0);
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn headers_that_trickle_in_get_the_connection_closed() {
    let app = spawn_app_with(&[("REQUEST_TIMEOUT_SECS", "0.5")]).await;

    let mut stream = raw_connection(&app, "GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ").await;
    let mut buffer = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await;

    assert!(
        matches!(closed, Ok(Ok(_)) | Ok(Err(_))),
        "the server should close a connection whose headers never finish"
    );
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_request_timeout() {
    let app = spawn_app_with(&[("REQUEST_TIMEOUT_SECS", "0.5")]).await;

    let mut silent = TcpStream::connect(app.addr)
        .await
        .unwrap_or_else(|error| panic!("connect: {error}"));
    let mut buffer = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buffer)).await;

    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the server should close a connection that never sends a request: {closed:?}"
    );
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn connections_over_the_cap_get_503_and_are_closed() {
    let app = spawn_app_with(&[("MAX_CONNECTIONS", "8")]).await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(
            TcpStream::connect(app.addr)
                .await
                .unwrap_or_else(|error| panic!("{error}")),
        );
    }

    let mut extra = TcpStream::connect(app.addr)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let mut answer = String::new();
    let read =
        tokio::time::timeout(Duration::from_secs(10), extra.read_to_string(&mut answer)).await;

    assert!(
        read.is_ok(),
        "the refused connection is answered and closed"
    );
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(answer.contains(r#""code":"overloaded""#), "{answer:?}");
    drop(idle);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_flood_of_idle_connections_does_not_stop_others_being_served() {
    let app = spawn_app().await;

    let mut idle = Vec::new();
    for _ in 0..500 {
        if let Ok(stream) = TcpStream::connect(app.addr).await {
            idle.push(stream);
        }
    }

    assert_eq!(idle.len(), 500);
    assert_still_serving(&app).await;
    let health = json_body(app.get("/healthz").await).await;
    assert_eq!(health["status"], "ok");
}

/// Reads until the server closes `stream`; false if it is still open after 10 s.
async fn closed_by_the_server(stream: &mut TcpStream) -> bool {
    let mut buffer = vec![0u8; 16 * 1024];
    let reading = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), reading)
        .await
        .is_ok()
}

/// The HTTP/2 preface and an empty SETTINGS frame: a client that then never
/// opens a stream.
const HTTP2_HELLO: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[tokio::test]
async fn idle_http2_connections_are_closed_and_give_their_places_back() {
    let app = spawn_app_with(&[("REQUEST_TIMEOUT_SECS", "0.5"), ("MAX_CONNECTIONS", "4")]).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(app.addr)
            .await
            .unwrap_or_else(|error| panic!("connect: {error}"));
        stream
            .write_all(HTTP2_HELLO)
            .await
            .unwrap_or_else(|error| panic!("write: {error}"));
        idle.push(stream);
    }

    for stream in &mut idle {
        assert!(
            closed_by_the_server(stream).await,
            "an HTTP/2 connection with no request should be closed after REQUEST_TIMEOUT_SECS"
        );
    }
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn an_http2_stream_longer_than_the_request_timeout_is_not_cut() {
    let app = spawn_app_with(&[("REQUEST_TIMEOUT_SECS", "0.5")]).await;
    app.upstream
        .push(Reply::tokens(&["a", "b", "c", "d"]).pace(Duration::from_millis(400)));
    let http2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap_or_else(|error| panic!("{error}"));

    let response = http2
        .post(app.url("/api/chat"))
        .header("content-type", "application/json")
        .body(json!({"prompt": "slow"}).to_string())
        .send()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let transcript = crate::helpers::Transcript::read(response).await;

    assert_eq!(transcript.text_of("token"), "abcd");
    assert!(transcript.ends_with_done());
}

#[tokio::test]
async fn an_http1_connection_idle_between_requests_is_closed() {
    let app = spawn_app_with(&[("REQUEST_TIMEOUT_SECS", "0.5")]).await;

    let mut stream = raw_connection(&app, "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let status = read_status_line(&mut stream).await;

    assert!(status.starts_with("HTTP/1.1 200"), "{status:?}");
    assert!(
        closed_by_the_server(&mut stream).await,
        "a keep-alive connection with no next request should be closed"
    );
}
