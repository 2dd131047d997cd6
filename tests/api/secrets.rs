//! Our upstream key never reaches a client or a log, however an upstream
//! quotes it back: escaped, encoded, or next to where a long message is cut,
//! on every route that passes an upstream's words on.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::cli::{Server, binary, scratch_dir};
use crate::failures::content_chunk;
use crate::fake_upstream::{FakeUpstream, Reply};
use crate::helpers::{TestApp, Transcript, http_client, spawn_app_with};

/// The key the proxy sends upstream in these tests: long, with the
/// characters that escaping and percent-encoding change.
const KEY: &str = "sk-proj-Qx7_Zr-Vw9/Kq2Mn+Lp8Yt4Hd";

/// The ways an upstream may write our key back.
fn spellings() -> Vec<(&'static str, String)> {
    vec![
        ("as it is", KEY.to_owned()),
        ("with JSON-escaped dashes", KEY.replace('-', "\\u002d")),
        (
            "fully JSON-escaped",
            KEY.chars()
                .map(|c| format!("\\u{:04x}", u32::from(c)))
                .collect(),
        ),
        (
            "percent-encoded",
            KEY.bytes().map(|byte| format!("%{byte:02X}")).collect(),
        ),
        (
            "as a base64 header",
            STANDARD.encode(format!("Bearer {KEY}")),
        ),
        ("only its first 20 characters", KEY[..20].to_owned()),
    ]
}

/// Nothing of the key is in `text`: no run of 12 of its characters, as
/// such or in any of the spellings above.
fn assert_no_key(text: &str, context: &str) {
    for run in KEY.as_bytes().windows(12) {
        let run = String::from_utf8_lossy(run);
        assert!(!text.contains(&*run), "{context}: `{run}` leaked in {text}");
    }
    for (name, spelling) in spellings() {
        let sample = &spelling[spelling.len() / 4..spelling.len() * 3 / 4];
        assert!(
            !text.contains(sample),
            "{context}: the key {name} leaked in {text}"
        );
    }
}

async fn post_json(url: &str, body: &Value) -> reqwest::Response {
    http_client()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|error| panic!("POST {url}: {error}"))
}

async fn app() -> TestApp {
    spawn_app_with(&[("UPSTREAM_API_KEY", KEY)]).await
}

/// The routes that pass an upstream refusal on, each as the client sees it.
async fn every_route(app: &TestApp, reply: &Reply) -> Vec<(&'static str, Transcript)> {
    let mut seen = Vec::new();
    app.upstream.push(reply.clone());
    seen.push(("/api/chat", app.chat(&json!({"prompt": "hi"})).await));
    for (name, stream) in [("/v1 streaming", true), ("/v1", false)] {
        app.upstream.push(reply.clone());
        let body = json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
        let response = post_json(&app.url("/v1/chat/completions"), &body).await;
        seen.push((name, Transcript::read(response).await));
    }
    app.upstream.set_models(reply.clone());
    seen.push((
        "/v1/models",
        Transcript::read(app.get("/v1/models").await).await,
    ));
    seen
}

#[tokio::test]
async fn a_refusal_that_quotes_our_key_in_any_spelling_never_shows_it() {
    let app = app().await;
    for (spelling_name, spelling) in spellings() {
        let complaint = format!("Incorrect API key provided: {spelling}. Check your key.");
        let replies = [
            (
                "a 401 in JSON",
                Reply::status(401, json!({"error": {"message": complaint}})),
            ),
            (
                "a 403 in plain text",
                Reply::sse(complaint.clone())
                    .with_status(403)
                    .content_type("text/plain")
                    .chunked(crate::fake_upstream::Chunking::Whole),
            ),
            (
                "a 200 that is not an event stream",
                Reply::status(200, json!({"detail": complaint})),
            ),
        ];
        for (reply_name, reply) in replies {
            for (route, transcript) in every_route(&app, &reply).await {
                if route == "/v1/models" && reply_name.contains("200") {
                    // There a 200 with JSON is the model list, not a refusal.
                    continue;
                }
                let context = format!("{reply_name} quoting the key {spelling_name}, on {route}");
                assert_eq!(transcript.status, 502, "{context}: {}", transcript.text);
                let body: Value = serde_json::from_str(&transcript.text)
                    .unwrap_or_else(|error| panic!("{context}: {error}: {}", transcript.text));
                let message = body["error"]["message"].as_str().unwrap_or_default();
                assert!(
                    message.contains("Incorrect API key provided") && message.contains("***"),
                    "{context}: the complaint is passed on, masked: {message}"
                );
                assert_no_key(&transcript.text, &context);
            }
        }
    }
}

#[tokio::test]
async fn a_key_where_a_long_message_is_cut_is_masked_whole() {
    let app = app().await;
    // Messages are cut at 1,000 characters: put the key across that point.
    for before in [980, 990, 995, 999, 1_000] {
        let complaint = format!("{}{KEY} trailing words", "x".repeat(before));
        let reply = Reply::status(401, json!({"error": {"message": complaint}}));
        for (route, transcript) in every_route(&app, &reply).await {
            let context = format!("the key after {before} characters, on {route}");
            assert_eq!(transcript.status, 502, "{context}");
            for run in KEY.as_bytes().windows(6) {
                let run = String::from_utf8_lossy(run);
                assert!(
                    !transcript.text.contains(&*run),
                    "{context}: `{run}` leaked in {}",
                    transcript.text
                );
            }
        }
    }
}

#[tokio::test]
async fn an_error_inside_the_stream_that_quotes_our_key_in_any_spelling_never_shows_it() {
    let app = app().await;
    for (spelling_name, spelling) in spellings() {
        let error = json!({"error": {"message": format!("key {spelling} was revoked")}});
        let bodies = [
            format!("{}data: {error}\n\n", content_chunk("so far")),
            format!(
                "{}event: error\ndata: key {spelling} was revoked\n\n",
                content_chunk("so far")
            ),
        ];
        for body in bodies {
            app.upstream.push(Reply::sse(body.clone()));
            let ours = app.chat(&json!({"prompt": "hi"})).await;
            app.upstream.push(Reply::sse(body));
            let request = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
            let response = post_json(&app.url("/v1/chat/completions"), &request).await;
            let openai = Transcript::read(response).await;
            for (route, transcript) in [("/api/chat", ours), ("/v1", openai)] {
                let context =
                    format!("an in-stream error quoting the key {spelling_name}, on {route}");
                assert_eq!(transcript.status, 200, "{context}");
                assert!(
                    transcript.text.contains("was revoked") && transcript.text.contains("***"),
                    "{context}: the error is passed on, masked: {}",
                    transcript.text
                );
                assert_no_key(&transcript.text, &context);
            }
        }
    }
}

#[tokio::test]
async fn no_log_line_at_any_level_holds_our_key() {
    // Arrange: the binary at the most verbose level, in front of an upstream
    // that quotes the key in a refusal and in a stream.
    let upstream = FakeUpstream::start().await;
    upstream.push(Reply::status(
        401,
        json!({"error": {"message": format!("key {KEY} rejected")}}),
    ));
    upstream.push(Reply::sse(format!(
        "{}data: {}\n\n",
        content_chunk("so far"),
        json!({"error": {"message": format!("key {} revoked", KEY.replace('-', "\\u002d"))}})
    )));
    upstream.push(Reply::tokens(&["fine"]));
    let dir = scratch_dir("secret-logs");
    let mut server = Server::start(
        binary()
            .current_dir(&dir)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("UPSTREAM_BASE_URL", upstream.base_url())
            .env("UPSTREAM_API_KEY", KEY)
            .env("DEFAULT_MODEL", "m")
            .env("RUST_LOG", "trace"),
    );
    let addr = server.addr();

    // Act
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response =
            post_json(&format!("http://{addr}/api/chat"), &json!({"prompt": "hi"})).await;
        statuses.push(response.status().as_u16());
        let _ = response.text().await;
    }
    server.wait_for("stream finished");
    assert!(server.terminate(), "the server stops on SIGTERM");
    let lines = server.logged();

    // Assert
    assert_eq!(statuses, [502, 200, 200]);
    assert!(
        upstream
            .requests()
            .iter()
            .all(|request| request.header("authorization") == Some(&format!("Bearer {KEY}"))),
        "the key was sent upstream"
    );
    assert!(
        !lines.is_empty(),
        "the server logged something at trace level"
    );
    assert_no_key(&lines.join("\n"), "the log");
}
