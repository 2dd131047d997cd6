//! Bad input gets a SPEC §3 answer that names the problem, and costs the
//! server nothing: it keeps serving.

use serde_json::json;

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
