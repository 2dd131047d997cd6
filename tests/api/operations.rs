//! What an operator watches: `/metrics`, `/readyz` and `/healthz`.

use std::time::Duration;

use serde_json::json;

use crate::fake_upstream::{FakeUpstream, Reply};
use crate::helpers::{
    TestApp, Transcript, json_body, spawn_app, spawn_app_in_front_of, spawn_app_with,
};

async fn metrics(app: &TestApp) -> String {
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("text/plain; version=0.0.4"))
    );
    response.text().await.unwrap_or_default()
}

/// How many `/api/chat` requests were counted with `outcome`.
fn chat_requests(text: &str, outcome: &str) -> f64 {
    value(
        text,
        &format!(r#"tokenrelay_requests_total{{route="/api/chat",outcome="{outcome}"}}"#),
    )
}

/// The value of one series, `name{labels}` exactly as rendered.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

#[tokio::test]
async fn requests_the_access_check_refuses_are_counted_with_the_rest() {
    let app = spawn_app_with(&[("PROXY_API_KEYS", "right-key")]).await;
    app.upstream.push(Reply::tokens(&["a"]));
    let post = |key: Option<&'static str>| {
        let mut request = app
            .client
            .post(app.url("/api/chat"))
            .header("content-type", "application/json")
            .body(json!({"prompt": "hi"}).to_string());
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        async move {
            request
                .send()
                .await
                .unwrap_or_else(|error| panic!("{error}"))
        }
    };
    assert_eq!(post(None).await.status(), 401);
    assert_eq!(post(Some("wrong-key")).await.status(), 401);
    let answered = Transcript::read(post(Some("right-key")).await).await;
    assert_eq!(answered.text_of("token"), "a");

    let text = metrics(&app).await;
    assert_eq!(chat_requests(&text, "client_error"), 2.0);
    assert_eq!(chat_requests(&text, "ok"), 1.0);
}

#[tokio::test]
async fn metrics_count_requests_tokens_and_time_to_first_token() {
    let app = spawn_app().await;
    app.upstream.push(Reply::tokens(&["a", "b", "c"]));
    app.upstream
        .push(Reply::status(500, json!({"error": {"message": "down"}})));

    app.chat(&json!({"prompt": "x"})).await;
    app.post_chat(&json!({"prompt": "y"})).await;
    app.post_raw("application/json", "{").await;

    let text = metrics(&app).await;
    assert_eq!(chat_requests(&text, "ok"), 1.0);
    assert_eq!(chat_requests(&text, "upstream_error"), 1.0);
    assert_eq!(chat_requests(&text, "client_error"), 1.0);
    assert_eq!(value(&text, "tokenrelay_tokens_relayed_total"), 3.0);
    assert_eq!(
        value(&text, r#"tokenrelay_upstream_errors_total{kind="status"}"#),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"tokenrelay_time_to_first_token_seconds_count{part="upstream"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"tokenrelay_time_to_first_token_seconds_count{part="proxy"}"#
        ),
        1.0
    );
    assert_eq!(value(&text, "tokenrelay_active_streams"), 0.0);
}

#[tokio::test]
async fn metrics_count_active_streams_cancellations_and_in_stream_failures() {
    let app = spawn_app().await;
    app.upstream
        .push(Reply::tokens(&["slow", " one"]).pace(Duration::from_millis(300)));
    app.upstream
        .push(Reply::tokens(&["cut", " short"]).cut_after(2));

    let open = app.post_chat_and_wait(&json!({"prompt": "x"})).await;
    let during = metrics(&app).await;
    drop(open);
    assert!(app.upstream.wait_dropped(1, Duration::from_secs(2)).await);
    app.chat(&json!({"prompt": "y"})).await;
    let after = metrics(&app).await;

    assert_eq!(value(&during, "tokenrelay_active_streams"), 1.0);
    assert_eq!(value(&after, "tokenrelay_active_streams"), 0.0);
    assert_eq!(
        value(
            &after,
            r#"tokenrelay_cancellations_total{cause="client_gone"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            r#"tokenrelay_upstream_errors_total{kind="upstream_disconnected"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn readiness_follows_the_upstream() {
    let app = spawn_app().await;
    let dead = {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|error| panic!("{error}"));
        let port = listener
            .local_addr()
            .map(|addr| addr.port())
            .unwrap_or_default();
        format!("http://127.0.0.1:{port}/v1")
    };
    let orphan = spawn_app_in_front_of(
        FakeUpstream::start().await,
        &[("UPSTREAM_BASE_URL", dead.as_str())],
    )
    .await;

    let ready = app.get("/readyz").await;
    let not_ready = orphan.get("/readyz").await;

    assert_eq!(ready.status(), 200);
    assert_eq!(not_ready.status(), 503);
    assert_eq!(json_body(not_ready).await["error"]["code"], "not_ready");
    assert_eq!(
        orphan.get("/healthz").await.status(),
        200,
        "alive even when not ready"
    );
}
