//! Bad input gets a SPEC §3 answer that names the problem, and costs the
//! server nothing: it keeps serving.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, json_body, spawn_app, spawn_app_with};

/// Asserts the response is `status` with our error shape and a message containing `mentions`.
async fn assert_refused(response: reqwest::Response, status: u16, code: &str, mentions: &str) {
    assert_eq!(response.status(), status);
    let body = json_body(response).await;
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(mentions),
        "message {message:?} should mention {mentions:?}"
    );
    assert!(body["error"]["type"].is_string(), "{body}");
}

/// Sends `request` as raw bytes on a new connection and reads one answer:
/// its status and its body as JSON.
pub(crate) async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|error| panic!("connect: {error}"));
    // The server may answer (and close) before it read everything.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let reading = async {
        loop {
            let text = String::from_utf8_lossy(&answer).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|line| {
                        line.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|n| n.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    let status = head
                        .get(9..12)
                        .and_then(|code| code.parse().ok())
                        .unwrap_or(0);
                    let json = serde_json::from_str(&body[..length])
                        .unwrap_or_else(|error| panic!("not JSON ({error}): {text:?}"));
                    return (status, json);
                }
            }
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => panic!("the connection closed before a whole answer: {text:?}"),
                Ok(read) => answer.extend_from_slice(&buffer[..read]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), reading)
        .await
        .unwrap_or_else(|_| panic!("no whole answer within 10 s"))
}

/// Asserts a raw answer is `status` with our error shape and `code`.
fn assert_raw_refused((status, body): &(u16, Value), expected: u16, code: &str) {
    assert_eq!(*status, expected, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["error"]["type"].is_string(), "{body}");
}

async fn assert_still_serving(app: &TestApp) {
    let transcript = app.chat(&json!({"prompt": "still there?"})).await;
    assert_eq!(transcript.status, 200);
    assert_eq!(transcript.text_of("token"), "Hello world");
}

#[tokio::test]
async fn malformed_bodies_get_400_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        ("{\"messages\": [", "not valid JSON"),
        ("\"just a string\"", "JSON object"),
        ("{}", "messages"),
        (r#"{"messages": {"role": "user"}}"#, "messages"),
        (r#"{"messages": []}"#, "messages"),
        (r#"{"messages": [{"role": "user"}]}"#, "messages[0].content"),
        (
            r#"{"messages": [{"role": "user", "content": ""}]}"#,
            "messages[0].content",
        ),
        (
            r#"{"messages": [{"role": "user", "content": 42}]}"#,
            "messages[0].content",
        ),
        (
            r#"{"messages": [{"role": "robot", "content": "hi"}]}"#,
            "messages[0].role",
        ),
        (r#"{"prompt": 1}"#, "prompt"),
        (r#"{"prompt": "hi", "model": ["a"]}"#, "model"),
    ];

    for (body, field) in cases {
        assert_refused(
            app.post_raw("application/json", body).await,
            400,
            "invalid_request",
            field,
        )
        .await;
    }

    assert_eq!(
        app.upstream.requests().len(),
        0,
        "nothing invalid reaches the upstream"
    );
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413() {
    let app = spawn_app_with(&[("MAX_BODY_BYTES", "1024")]).await;
    let big = json!({"prompt": "x".repeat(4096)}).to_string();

    let declared = app.post_raw("application/json", big.clone()).await;
    let streamed = app
        .post_raw(
            "application/json",
            reqwest::Body::wrap_stream(futures_util::stream::iter(
                big.into_bytes()
                    .chunks(100)
                    .map(|piece| Ok::<_, std::io::Error>(piece.to_vec()))
                    .collect::<Vec<_>>(),
            )),
        )
        .await;

    assert_refused(declared, 413, "payload_too_large", "1024").await;
    assert_refused(streamed, 413, "payload_too_large", "1024").await;
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_non_json_content_type_gets_415() {
    let app = spawn_app().await;

    let form = app
        .post_raw("application/x-www-form-urlencoded", "prompt=hi")
        .await;
    let text = app.post_raw("text/plain", r#"{"prompt": "hi"}"#).await;
    let missing = app
        .client
        .post(app.url("/api/chat"))
        .body(r#"{"prompt": "hi"}"#)
        .send()
        .await
        .unwrap_or_else(|error| panic!("{error}"));

    assert_refused(form, 415, "unsupported_media_type", "application/json").await;
    assert_refused(text, 415, "unsupported_media_type", "text/plain").await;
    assert_refused(missing, 415, "unsupported_media_type", "none").await;
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_get_without_a_prompt_gets_400() {
    let app = spawn_app().await;

    assert_refused(
        app.get("/api/chat").await,
        400,
        "invalid_request",
        "messages",
    )
    .await;
    assert_refused(
        app.get("/api/chat?prompt=").await,
        400,
        "invalid_request",
        "prompt",
    )
    .await;
}

#[tokio::test]
async fn unknown_routes_and_streams_get_404_json() {
    let app = spawn_app().await;

    assert_refused(app.get("/nope").await, 404, "not_found", "route").await;
    assert_refused(
        app.get(&format!("/api/chat/{}/events", "0f".repeat(16)))
            .await,
        404,
        "not_found",
        "stream",
    )
    .await;
}

#[tokio::test]
async fn a_request_without_a_model_and_no_default_gets_400() {
    let app = spawn_app_with(&[("DEFAULT_MODEL", "")]).await;

    assert_refused(
        app.post_raw("application/json", r#"{"prompt": "hi"}"#)
            .await,
        400,
        "invalid_request",
        "model",
    )
    .await;
}

#[tokio::test]
async fn bad_query_parameters_and_paths_get_400_json() {
    let app = spawn_app().await;

    assert_refused(
        app.get("/api/chat?prompt=a&prompt=b").await,
        400,
        "invalid_request",
        "prompt",
    )
    .await;
    assert_refused(
        app.get("/api/chat?prompt=%ZZ").await,
        400,
        "invalid_request",
        "percent-encoded",
    )
    .await;
    assert_refused(
        app.get("/api/chat?prompt=%FF").await,
        400,
        "invalid_request",
        "percent-encoded",
    )
    .await;
    assert_refused(
        app.get("/api/chat/%FF%FE/events").await,
        400,
        "invalid_request",
        "path",
    )
    .await;
    assert_eq!(app.upstream.requests().len(), 0);
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_wrong_method_on_a_known_path_gets_405_with_allow() {
    let app = spawn_app().await;

    let put = app
        .client
        .put(app.url("/api/chat"))
        .send()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let post = app
        .client
        .post(app.url("/healthz"))
        .send()
        .await
        .unwrap_or_else(|error| panic!("{error}"));

    for (response, allowed) in [(put, "POST"), (post, "GET")] {
        let allow = response
            .headers()
            .get("allow")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(allow.contains(allowed), "Allow: {allow:?}");
        assert_refused(response, 405, "method_not_allowed", "Allow").await;
    }
}

#[tokio::test]
async fn head_never_starts_or_attaches_to_a_generation() {
    let app = spawn_app().await;
    let done = app.chat(&serde_json::json!({"prompt": "hi"})).await;
    let stream_id = done.header("x-stream-id").unwrap_or_default().to_owned();

    for (path, allowed) in [
        ("/api/chat?prompt=hi".to_owned(), "GET"),
        (format!("/api/chat/{stream_id}/events"), "GET"),
    ] {
        let response = app
            .client
            .head(app.url(&path))
            .send()
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(response.status(), 405, "HEAD {path}");
        let allow = response
            .headers()
            .get("allow")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        assert!(
            allow.contains(allowed) && !allow.contains("HEAD"),
            "HEAD {path}: Allow {allow:?}"
        );
    }
    assert_eq!(
        app.upstream.requests().len(),
        1,
        "only the chat itself reached the upstream"
    );
}

#[tokio::test]
async fn long_uris_get_414_json() {
    let app = spawn_app().await;

    for size in [20 * 1024, 100 * 1024] {
        let request = format!(
            "GET /api/chat?prompt={} HTTP/1.1\r\nhost: x\r\n\r\n",
            "a".repeat(size)
        );
        let answer = raw_exchange(app.addr, request.as_bytes()).await;
        assert_raw_refused(&answer, 414, "uri_too_long");
    }
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn large_or_many_headers_get_431_json() {
    let app = spawn_app().await;
    let big = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "b".repeat(64 * 1024)
    );
    let many = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\n{}\r\n",
        (0..200)
            .map(|n| format!("x-h{n}: v\r\n"))
            .collect::<String>()
    );
    let thousands = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\n{}\r\n",
        (0..2000)
            .map(|n| format!("x-h{n}: v\r\n"))
            .collect::<String>()
    );

    for request in [big, many, thousands] {
        let answer = raw_exchange(app.addr, request.as_bytes()).await;
        assert_raw_refused(&answer, 431, "headers_too_large");
    }
    let http2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    let over_http2 = http2
        .get(app.url("/healthz"))
        .header("x-big", "b".repeat(64 * 1024))
        .send()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert_refused(over_http2, 431, "headers_too_large", "bytes").await;
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_declared_body_over_the_limit_gets_413_before_it_is_sent() {
    let app = spawn_app_with(&[("MAX_BODY_BYTES", "1024"), ("REQUEST_TIMEOUT_SECS", "60")]).await;

    let answer = raw_exchange(
        app.addr,
        b"POST /api/chat HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 5000\r\n\r\n",
    )
    .await;

    assert_raw_refused(&answer, 413, "payload_too_large");
    assert_still_serving(&app).await;
}
