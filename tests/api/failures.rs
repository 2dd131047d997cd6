//! Upstream failures as a client sees them: before the stream (SPEC §3, a
//! status and an OpenAI-shaped JSON error, never a stream) and after it began
//! (SPEC §2, one `error` event and then `[DONE]`, never a finish).

use std::time::Duration;

use serde_json::{Value, json};

use crate::fake_upstream::{Chunking, Reply};
use crate::helpers::{TestApp, Transcript, spawn_app, spawn_app_with};

// ---- before the stream: a status and a JSON error ------------------------

#[tokio::test]
async fn upstream_error_statuses_become_502_with_the_upstreams_status_and_message() {
    let app = spawn_app().await;
    let cases = [
        (
            400,
            "Invalid value for 'temperature'",
            "invalid_request_error",
        ),
        (401, "Incorrect API key provided", "invalid_request_error"),
        (
            404,
            "The model `gpt-nine` does not exist",
            "invalid_request_error",
        ),
        (429, "Rate limit reached for requests", "requests"),
        (
            500,
            "The server had an error while processing your request",
            "server_error",
        ),
        (503, "The engine is currently overloaded", "server_error"),
    ];
    for (status, message, kind) in cases {
        // Arrange
        app.upstream.push(Reply::status(
            status,
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}}),
        ));

        // Act
        let transcript = app.chat(&json!({"prompt": "hi"})).await;

        // Assert
        let context = format!("upstream {status}");
        let error = assert_refused(&transcript, 502, "upstream_error", &context);
        let ours = error["message"].as_str().unwrap_or_default();
        assert!(
            ours.contains(message) && ours.contains(&status.to_string()),
            "{context}: our message should carry the upstream's message and status, got {ours:?}"
        );
        assert_eq!(error["upstream_status"], json!(status), "{context}");
        assert_still_serves(&app, &context).await;
    }
}

#[tokio::test]
async fn an_upstream_401_that_quotes_our_key_never_shows_the_key() {
    // Arrange
    let app = spawn_app_with(&[("UPSTREAM_API_KEY", UPSTREAM_KEY)]).await;
    app.upstream.push(Reply::status(
        401,
        json!({"error": {
            "message": format!("Incorrect API key provided: {UPSTREAM_KEY}. You can find your API key at https://platform.openai.com/account/api-keys."),
            "type": "invalid_request_error", "param": null, "code": "invalid_api_key"
        }}),
    ));

    // Act
    let transcript = app.chat(&json!({"prompt": "hi"})).await;

    // Assert
    let error = assert_refused(&transcript, 502, "upstream_error", "401 quoting the key");
    assert_eq!(error["upstream_status"], json!(401));
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Incorrect API key provided"),
        "the upstream's explanation is still passed on: {error}"
    );
    assert_key_never_shown(&transcript);
    assert_still_serves(&app, "after a 401").await;
}

#[tokio::test]
async fn a_200_that_is_not_an_event_stream_is_a_502_naming_the_content_type() {
    let app = spawn_app().await;
    let cases = [
        (
            "text/html",
            Reply::sse("<html><body>Bad gateway</body></html>")
                .content_type("text/html; charset=utf-8"),
            "Bad gateway",
        ),
        (
            "application/json",
            Reply::status(
                200,
                json!({"id": "chatcmpl-1", "object": "chat.completion", "choices": []}),
            ),
            "chat.completion",
        ),
        (
            "application/json",
            Reply::status(200, json!({"error": {"message": "monthly quota used up"}})),
            "monthly quota used up",
        ),
    ];
    for (content_type, reply, complaint) in cases {
        // Arrange
        app.upstream.push(reply);

        // Act
        let transcript = app.chat(&json!({"prompt": "hi"})).await;

        // Assert
        let context = format!("a 200 with {content_type}");
        let error = assert_refused(&transcript, 502, "upstream_error", &context);
        assert!(
            error["message"]
                .as_str()
                .unwrap_or_default()
                .contains(content_type),
            "{context}: the message should name the content type, got {error}"
        );
        assert!(
            error["message"]
                .as_str()
                .unwrap_or_default()
                .contains(complaint),
            "{context}: the message should carry the upstream's complaint, got {error}"
        );
        assert_still_serves(&app, &context).await;
    }
}

#[tokio::test]
async fn an_upstream_that_refuses_connections_is_a_502() {
    // Arrange
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|error| panic!("bind: {error}"));
        listener
            .local_addr()
            .unwrap_or_else(|error| panic!("addr: {error}"))
            .port()
    };
    let dead = format!("http://127.0.0.1:{port}/v1");
    let app = spawn_app_with(&[("UPSTREAM_BASE_URL", dead.as_str())]).await;

    for attempt in ["first", "second"] {
        // Act
        let transcript = app.chat(&json!({"prompt": "hi"})).await;

        // Assert
        let context = format!("{attempt} request to a closed port");
        let error = assert_refused(&transcript, 502, "upstream_error", &context);
        assert!(
            error["message"]
                .as_str()
                .unwrap_or_default()
                .to_lowercase()
                .contains("connect"),
            "{context}: the message should say the upstream could not be reached, got {error}"
        );
    }
    assert_eq!(
        app.get("/healthz").await.status().as_u16(),
        200,
        "the server still answers after failed upstream connections"
    );
}

#[tokio::test]
async fn no_response_headers_in_time_is_a_504() {
    // Arrange
    let app = spawn_app_with(&[("UPSTREAM_HEADERS_TIMEOUT_SECS", "0.3")]).await;
    app.upstream
        .push(Reply::tokens(&["too", " late"]).headers_after(Duration::from_secs(2)));

    // Act
    let transcript = app.chat(&json!({"prompt": "hi"})).await;

    // Assert
    assert_refused(&transcript, 504, "upstream_timeout", "headers after 2 s");
    assert_still_serves(&app, "after a headers timeout").await;
}

#[tokio::test]
async fn a_refusal_whose_body_never_finishes_is_answered_within_the_headers_timeout() {
    // Arrange: error headers at once, then a body that stops short of what
    // its Content-Length promised, or that never comes at all.
    let app = spawn_app_with(&[("UPSTREAM_HEADERS_TIMEOUT_SECS", "1")]).await;
    let stalled = |status: u16| {
        Reply::sse(r#"{"error": {"message": "bad key"#)
            .with_status(status)
            .content_type("application/json")
            .chunked(Chunking::Whole)
            .header("content-length", "5000")
            .hang_after(1)
    };
    let cases = [
        (
            "a 401 that never fills its Content-Length",
            stalled(401),
            502,
        ),
        (
            "a 500 whose body never comes",
            Reply::status(500, json!({})).hang_after(0),
            502,
        ),
        ("a 200 JSON answer that stalls", stalled(200), 502),
    ];
    for (name, reply, status) in cases {
        for route in ["/api/chat", "/v1/chat/completions", "/v1/models"] {
            if route == "/v1/models" {
                app.upstream.set_models(reply.clone());
            } else {
                app.upstream.push(reply.clone());
            }
            let started = std::time::Instant::now();

            // Act
            let transcript = tokio::time::timeout(Duration::from_secs(10), async {
                if route == "/v1/models" {
                    Transcript::read(app.get(route).await).await
                } else {
                    let response = app
                        .client
                        .post(app.url(route))
                        .header("content-type", "application/json")
                        .body(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true}).to_string())
                        .send()
                        .await
                        .unwrap_or_else(|error| panic!("{route}: {error}"));
                    Transcript::read(response).await
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{name} on {route}: no answer within 10 s"));

            // Assert
            let context = format!("{name} on {route}");
            let expected = if route == "/v1/models" && name.contains("200") {
                // For the model list a 200 is the answer, and it did not
                // arrive in time.
                504
            } else {
                status
            };
            assert_eq!(
                transcript.status, expected,
                "{context}: {}",
                transcript.text
            );
            let body: Value = serde_json::from_str(&transcript.text)
                .unwrap_or_else(|error| panic!("{context}: {error}: {}", transcript.text));
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|message| !message.is_empty()),
                "{context}: {body}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{context}: answered only after {:?}",
                started.elapsed()
            );
        }
    }
    assert_still_serves(&app, "after stalled refusals").await;
}

#[tokio::test]
async fn an_upstream_redirect_is_refused_and_names_where_it_pointed() {
    // Arrange
    let app = spawn_app().await;
    for status in [301, 302, 307, 308] {
        app.upstream.push(
            Reply::status(status, json!({}))
                .header("location", "http://elsewhere.invalid/v1/chat/completions"),
        );

        // Act
        let transcript = app.chat(&json!({"prompt": "hi"})).await;

        // Assert
        let context = format!("a {status} redirect");
        let error = assert_refused(&transcript, 502, "upstream_error", &context);
        assert_eq!(error["upstream_status"], json!(status), "{context}");
        assert!(
            error["message"]
                .as_str()
                .unwrap_or_default()
                .contains("http://elsewhere.invalid/v1/chat/completions"),
            "{context}: the message names where it pointed: {error}"
        );
    }
    assert_eq!(
        app.upstream.requests().len(),
        4,
        "the prompt was sent once per chat, never again to where the redirect pointed"
    );
    assert_still_serves(&app, "after redirects").await;
}

// ---- after the 200: an error event, then [DONE] --------------------------

#[tokio::test]
async fn an_error_inside_the_stream_that_quotes_our_key_never_shows_the_key() {
    // Arrange
    let app = spawn_app_with(&[("UPSTREAM_API_KEY", UPSTREAM_KEY)]).await;
    let error = json!({"error": {
        "message": format!("API key {UPSTREAM_KEY} was revoked during the request"),
        "type": "invalid_request_error"
    }});
    app.upstream.push(Reply::sse(
        [content_chunk("so far"), format!("data: {error}\n\n")].concat(),
    ));

    // Act
    let transcript = app.chat(&json!({"prompt": "hi"})).await;

    // Assert
    let event = assert_failed_after_start(&transcript, "upstream_error", "in-stream key echo");
    assert!(
        event["message"]
            .as_str()
            .unwrap_or_default()
            .contains("was revoked during the request"),
        "the upstream's explanation is still passed on: {event}"
    );
    assert_key_never_shown(&transcript);
}

#[tokio::test]
async fn a_finish_reason_that_is_an_error_or_unknown_never_looks_complete() {
    let app = spawn_app().await;
    for reason in ["error", "insufficient_system_resource", "something_new"] {
        // Arrange
        let body = [
            content_chunk("partial"),
            finish_chunk(reason),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat();
        let v1 = |stream: bool| {
            app.upstream.push(Reply::sse(body.clone()));
            app.client
                .post(app.url("/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}).to_string())
                .send()
        };

        // Act
        app.upstream.push(Reply::sse(body.clone()));
        let ours = app.chat(&json!({"prompt": "hi"})).await;
        let streamed =
            Transcript::read(v1(true).await.unwrap_or_else(|error| panic!("{error}"))).await;
        let whole =
            Transcript::read(v1(false).await.unwrap_or_else(|error| panic!("{error}"))).await;

        // Assert
        let context = format!("finish_reason {reason:?}");
        let event = assert_failed_after_start(&ours, "upstream_error", &context);
        assert!(
            event["message"]
                .as_str()
                .unwrap_or_default()
                .contains(reason),
            "{context}: the error names the reason: {event}"
        );
        assert_eq!(streamed.status, 200, "{context}");
        assert!(
            !streamed.text.contains("[DONE]") && streamed.text.contains("upstream_error"),
            "{context}: a /v1 stream ends with an error chunk and no [DONE]: {}",
            streamed.text
        );
        assert!(
            !streamed.text.contains(r#""finish_reason":"stop""#),
            "{context}: {}",
            streamed.text
        );
        assert_refused(&whole, 502, "upstream_error", &context);
    }
}

#[tokio::test]
async fn an_upstream_cut_before_the_finish_is_upstream_disconnected() {
    // Arrange
    let app = spawn_app().await;
    // Pieces: the role chunk, "one", " two"; then the connection is aborted.
    app.upstream.push(
        Reply::tokens(&["one", " two", " three"])
            .chunked(Chunking::Events)
            .cut_after(3),
    );

    // Act
    let transcript = app.chat(&json!({"prompt": "hi"})).await;

    // Assert
    assert_failed_after_start(&transcript, "upstream_disconnected", "cut after 3 pieces");
    assert_eq!(transcript.text_of("token"), "one two");
}

#[tokio::test]
async fn a_clean_end_without_finish_or_done_is_upstream_disconnected() {
    // Arrange
    let app = spawn_app().await;
    app.upstream.push(Reply::sse(
        [content_chunk("half"), content_chunk(" an answer")].concat(),
    ));

    // Act
    let transcript = app.chat(&json!({"prompt": "hi"})).await;

    // Assert
    assert_failed_after_start(&transcript, "upstream_disconnected", "no finish, no [DONE]");
    assert_eq!(transcript.text_of("token"), "half an answer");
}

#[tokio::test]
async fn an_error_object_inside_the_stream_is_upstream_error() {
    let app = spawn_app().await;
    let error = json!({"error": {"message": "boom", "type": "server_error"}});
    let forms = [
        ("a data chunk", format!("data: {error}\n\n")),
        (
            "an `event: error`",
            format!("event: error\ndata: {error}\n\n"),
        ),
    ];
    for (form, error_event) in forms {
        // Arrange
        app.upstream.push(Reply::sse(
            [
                content_chunk("so far"),
                error_event,
                finish_chunk("stop"),
                "data: [DONE]\n\n".to_owned(),
            ]
            .concat(),
        ));

        // Act
        let transcript = app.chat(&json!({"prompt": "hi"})).await;

        // Assert
        let event = assert_failed_after_start(&transcript, "upstream_error", form);
        assert!(
            event["message"]
                .as_str()
                .unwrap_or_default()
                .contains("boom"),
            "{form}: the upstream's message should be passed on, got {event}"
        );
        assert_eq!(transcript.text_of("token"), "so far", "{form}");
    }
}

#[tokio::test]
async fn an_idle_upstream_is_upstream_timeout_and_is_hung_up_on() {
    // Arrange
    let app = spawn_app_with(&[("UPSTREAM_IDLE_TIMEOUT_SECS", "0.3")]).await;
    // Pieces: the role chunk and "first"; then silence with the connection open.
    app.upstream.push(
        Reply::tokens(&["first", " second"])
            .chunked(Chunking::Events)
            .hang_after(2),
    );

    // Act
    let transcript = app.chat(&json!({"prompt": "hi"})).await;

    // Assert
    assert_failed_after_start(&transcript, "upstream_timeout", "silent upstream");
    assert_eq!(transcript.text_of("token"), "first");
    assert!(
        app.upstream.wait_dropped(1, Duration::from_secs(5)).await,
        "the proxy kept the silent upstream request open"
    );
}

#[tokio::test]
async fn upstream_keep_alive_comments_are_not_idleness() {
    // Arrange: 1.6 s of `: OPENROUTER PROCESSING` every 0.2 s, then the answer.
    let app = spawn_app_with(&[("UPSTREAM_IDLE_TIMEOUT_SECS", "0.5")]).await;
    let body = [
        ": OPENROUTER PROCESSING\n\n".repeat(8),
        content_chunk("worth the wait"),
        finish_chunk("stop"),
        "data: [DONE]\n\n".to_owned(),
    ]
    .concat();
    app.upstream.push(
        Reply::sse(body)
            .chunked(Chunking::Events)
            .pace(Duration::from_millis(200)),
    );

    // Act
    let transcript = app.chat(&json!({"prompt": "think hard"})).await;

    // Assert
    assert_eq!(
        transcript.terminal(),
        [json!({"type": "finish", "finish_reason": "stop", "usage": null})],
        "an upstream that keeps sending comments is not silent"
    );
    assert_eq!(transcript.text_of("token"), "worth the wait");
}

#[tokio::test]
async fn the_optional_total_timeout_ends_a_long_generation() {
    // Arrange
    let app = spawn_app_with(&[("UPSTREAM_TOTAL_TIMEOUT_SECS", "0.5")]).await;
    app.upstream.push(paced_tokens(50));

    // Act
    let transcript = app.chat(&json!({"prompt": "hi"})).await;

    // Assert
    let event = assert_failed_after_start(&transcript, "upstream_timeout", "total limit 0.5 s");
    assert!(
        event["message"]
            .as_str()
            .unwrap_or_default()
            .contains("total"),
        "the message should name the total limit, got {event}"
    );
    assert!(
        !transcript.text_of("token").is_empty(),
        "tokens flowed before the limit"
    );
    assert!(
        app.upstream.wait_dropped(1, Duration::from_secs(5)).await,
        "the proxy kept the upstream request open after the total limit"
    );
}

#[tokio::test]
async fn without_a_total_timeout_a_generation_may_outlast_the_idle_timeout() {
    // Arrange: 1.2 s in all, never more than 0.1 s of silence.
    let app = spawn_app_with(&[("UPSTREAM_IDLE_TIMEOUT_SECS", "0.5")]).await;
    app.upstream.push(paced_tokens(12));

    // Act
    let transcript = app.chat(&json!({"prompt": "hi"})).await;

    // Assert
    assert_eq!(transcript.status, 200);
    assert_eq!(
        transcript.text_of("token"),
        "t0 t1 t2 t3 t4 t5 t6 t7 t8 t9 t10 t11 "
    );
    let terminal = transcript.terminal();
    assert_eq!(terminal.len(), 1, "{terminal:?}");
    assert_eq!(terminal[0]["type"], "finish", "{terminal:?}");
    assert_eq!(terminal[0]["finish_reason"], "stop");
    assert!(transcript.ends_with_done());
}

#[tokio::test]
async fn a_data_chunk_that_is_not_json_is_invalid_upstream_data() {
    // Arrange
    let app = spawn_app().await;
    app.upstream.push(Reply::sse(
        [
            content_chunk("ok"),
            "data: <html>502 Bad Gateway</html>\n\n".to_owned(),
            content_chunk(" never"),
            finish_chunk("stop"),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat(),
    ));

    // Act
    let transcript = app.chat(&json!({"prompt": "hi"})).await;

    // Assert
    assert_failed_after_start(&transcript, "invalid_upstream_data", "a non-JSON chunk");
    assert_eq!(transcript.text_of("token"), "ok");
}

// ---- helpers -------------------------------------------------------------

/// The key the proxy sends upstream in the key-echo tests.
const UPSTREAM_KEY: &str = "sk-proj-Th1sIsTheUpstreamSecret";

/// [`UPSTREAM_KEY`] appears nowhere in what the client received.
fn assert_key_never_shown(transcript: &Transcript) {
    assert!(
        !transcript.text.contains(UPSTREAM_KEY),
        "our upstream key reached a client: {}",
        transcript.text
    );
    assert!(
        transcript
            .headers
            .values()
            .all(|value| !String::from_utf8_lossy(value.as_bytes()).contains(UPSTREAM_KEY)),
        "our upstream key is in a response header"
    );
}

/// Asserts a refusal before any stream: `status`, a JSON body
/// `{"error":{"code","message","type"}}` with `code`, and no event stream.
/// Returns the `error` object.
pub(crate) fn assert_refused(
    transcript: &Transcript,
    status: u16,
    code: &str,
    context: &str,
) -> Value {
    assert_eq!(transcript.status, status, "{context}: {}", transcript.text);
    let content_type = transcript.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{context}: a JSON error, not {content_type:?}"
    );
    let body: Value = serde_json::from_str(&transcript.text)
        .unwrap_or_else(|error| panic!("{context}: not JSON ({error}): {}", transcript.text));
    let error = &body["error"];
    assert_eq!(error["code"], code, "{context}: {body}");
    for field in ["message", "type"] {
        assert!(
            error[field].as_str().is_some_and(|text| !text.is_empty()),
            "{context}: `error.{field}` should be a non-empty string: {body}"
        );
    }
    error.clone()
}

/// Asserts a stream that began and then failed: 200, `start` first, exactly
/// one terminal event which is an `error` with `code`, no `finish`, and
/// `data: [DONE]` last. Returns the `error` event.
pub(crate) fn assert_failed_after_start(
    transcript: &Transcript,
    code: &str,
    context: &str,
) -> Value {
    assert_eq!(transcript.status, 200, "{context}: {}", transcript.text);
    let events = transcript.events();
    assert_eq!(
        events.first().map(|event| &event["type"]),
        Some(&json!("start")),
        "{context}: {events:?}"
    );
    let terminal = transcript.terminal();
    assert_eq!(
        terminal.len(),
        1,
        "{context}: exactly one finish or error, got {terminal:?}"
    );
    let error = &terminal[0];
    assert_eq!(error["type"], "error", "{context}: {error}");
    assert_eq!(error["code"], code, "{context}: {error}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|text| !text.is_empty()),
        "{context}: the error explains itself: {error}"
    );
    assert_eq!(
        events.last(),
        Some(error),
        "{context}: nothing follows the error"
    );
    assert!(
        transcript.ends_with_done(),
        "{context}: the stream ends with data: [DONE]"
    );
    error.clone()
}

/// A normal chat still works on `app`.
async fn assert_still_serves(app: &TestApp, context: &str) {
    app.upstream.push(Reply::tokens(&["still", " here"]));
    let transcript = app.chat(&json!({"prompt": "again"})).await;
    assert_eq!(transcript.status, 200, "{context}: the next chat failed");
    assert_eq!(transcript.text_of("token"), "still here", "{context}");
    let terminal = transcript.terminal();
    assert_eq!(
        terminal.first().map(|event| &event["type"]),
        Some(&json!("finish")),
        "{context}: {terminal:?}"
    );
}

/// `n` tokens, one every 100 ms.
fn paced_tokens(n: usize) -> Reply {
    let tokens: Vec<String> = (0..n).map(|i| format!("t{i} ")).collect();
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    Reply::tokens(&tokens)
        .chunked(Chunking::Events)
        .pace(Duration::from_millis(100))
}

/// One OpenAI chat chunk carrying `text` for choice 0.
pub(crate) fn content_chunk(text: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
    )
}

/// One OpenAI chat chunk ending choice 0 with `reason`.
pub(crate) fn finish_chunk(reason: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
    )
}
