//! Retries happen only before any byte reached a client: connect errors, 429
//! and 5xx are tried again; a generation that started streaming never is.

use std::time::Duration;

use serde_json::json;

use crate::fake_upstream::Reply;
use crate::helpers::{json_body, spawn_app_with};

fn overloaded() -> serde_json::Value {
    json!({"error": {"message": "overloaded, try later", "type": "server_error"}})
}

#[tokio::test]
async fn server_errors_and_429_are_retried_until_the_upstream_answers() {
    let app = spawn_app_with(&[("UPSTREAM_RETRIES", "2")]).await;
    app.upstream.push(Reply::status(503, overloaded()));
    app.upstream
        .push(Reply::status(429, overloaded()).retry_after(0));
    app.upstream.push(Reply::tokens(&["third", " time"]));

    let transcript = app.chat(&json!({"prompt": "hi"})).await;

    assert_eq!(transcript.status, 200);
    assert_eq!(transcript.text_of("token"), "third time");
    let requests = app.upstream.requests();
    assert_eq!(requests.len(), 3);
    assert!(
        requests
            .iter()
            .all(|request| request.method == "POST" && request.body == requests[0].body)
    );
}

#[tokio::test]
async fn retries_are_capped_and_then_the_upstream_error_is_reported() {
    let app = spawn_app_with(&[("UPSTREAM_RETRIES", "1")]).await;
    app.upstream.set_default(Reply::status(500, overloaded()));

    let response = app.post_chat(&json!({"prompt": "hi"})).await;

    assert_eq!(response.status(), 502);
    let body = json_body(response).await;
    assert_eq!(body["error"]["upstream_status"], 500);
    assert!(
        app.upstream
            .wait_for_requests(2, Duration::from_secs(1))
            .await
    );
    assert!(
        !app.upstream
            .wait_for_requests(3, Duration::from_millis(600))
            .await,
        "one retry only"
    );
}

#[tokio::test]
async fn a_retry_after_beyond_the_cap_is_reported_at_once() {
    let app = spawn_app_with(&[("UPSTREAM_RETRIES", "2")]).await;
    app.upstream
        .push(Reply::status(429, overloaded()).retry_after(3600));

    let response = app.post_chat(&json!({"prompt": "hi"})).await;

    assert_eq!(response.status(), 502);
    assert_eq!(app.upstream.requests().len(), 1);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let app = spawn_app_with(&[("UPSTREAM_RETRIES", "2")]).await;
    app.upstream.push(Reply::status(
        400,
        json!({"error": {"message": "bad model"}}),
    ));

    let response = app.post_chat(&json!({"prompt": "hi"})).await;

    assert_eq!(response.status(), 502);
    assert_eq!(app.upstream.requests().len(), 1);
}

#[tokio::test]
async fn a_generation_that_started_streaming_is_never_sent_again() {
    let app = spawn_app_with(&[("UPSTREAM_RETRIES", "2")]).await;
    app.upstream
        .push(Reply::tokens(&["partial", " answer", " cut"]).cut_after(2));

    let transcript = app.chat(&json!({"prompt": "hi"})).await;

    assert_eq!(transcript.terminal()[0]["code"], "upstream_disconnected");
    assert_eq!(app.upstream.requests().len(), 1, "never re-POSTed");
    assert_eq!(
        app.upstream.bodies_dropped(),
        0,
        "the upstream ended it, not us"
    );
}
