//! Who may call the API and how often: client keys, stream ownership, CORS,
//! rate limits and the concurrency limit (SPEC §6).

use std::time::Duration;

use serde_json::json;

use crate::fake_upstream::Reply;
use crate::helpers::{TestApp, Transcript, json_body, spawn_app_with, stream_id_of};

async fn post_as(app: &TestApp, key: Option<&str>, path: &str) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url(path))
        .header("content-type", "application/json")
        .body(json!({"prompt": "hi"}).to_string());
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request
        .send()
        .await
        .unwrap_or_else(|error| panic!("{error}"))
}

async fn send_as(
    app: &TestApp,
    method: reqwest::Method,
    key: &str,
    path: &str,
) -> reqwest::Response {
    app.client
        .request(method, app.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap_or_else(|error| panic!("{error}"))
}

#[tokio::test]
async fn with_keys_set_the_api_needs_a_valid_bearer_key() {
    let app = spawn_app_with(&[("PROXY_API_KEYS", "key-one, key-two")]).await;

    let missing = post_as(&app, None, "/api/chat").await;
    let wrong = post_as(&app, Some("key-three"), "/api/chat").await;
    let right = Transcript::read(post_as(&app, Some("key-two"), "/api/chat").await).await;

    assert_eq!(missing.status(), 401);
    assert_eq!(
        missing
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    assert_eq!(json_body(missing).await["error"]["code"], "unauthorized");
    assert_eq!(wrong.status(), 401);
    assert_eq!(right.status, 200);
    assert_eq!(right.text_of("token"), "Hello world");
    assert_eq!(
        app.upstream.requests().len(),
        1,
        "refused callers cost nothing upstream"
    );
}

#[tokio::test]
async fn the_page_and_health_checks_stay_open() {
    let app = spawn_app_with(&[("PROXY_API_KEYS", "key-one")]).await;

    for path in ["/", "/app.js", "/style.css", "/healthz", "/api/info"] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn a_stream_can_be_resumed_or_stopped_only_with_the_key_that_created_it() {
    let app = spawn_app_with(&[
        ("PROXY_API_KEYS", "owner,stranger"),
        ("RESUME_GRACE_SECS", "5"),
    ])
    .await;
    app.upstream
        .push(Reply::tokens(&["mine"]).pace(Duration::from_millis(200)));
    let created = post_as(&app, Some("owner"), "/api/chat").await;
    let stream_id = stream_id_of(&created);
    let events = format!("/api/chat/{stream_id}/events");
    let stop = format!("/api/chat/{stream_id}");

    let peek = send_as(&app, reqwest::Method::GET, "stranger", &events).await;
    let kill = send_as(&app, reqwest::Method::DELETE, "stranger", &stop).await;
    let follow =
        Transcript::read(send_as(&app, reqwest::Method::GET, "owner", &events).await).await;

    assert_eq!(peek.status(), 404);
    assert_eq!(kill.status(), 404);
    assert_eq!(
        follow.text_of("token"),
        "mine",
        "the stranger's DELETE did nothing"
    );
    assert_eq!(Transcript::read(created).await.text_of("token"), "mine");
}

#[tokio::test]
async fn cors_preflight_allows_configured_origins_only() {
    let app = spawn_app_with(&[
        ("CORS_ALLOWED_ORIGINS", "https://chat.example"),
        ("PROXY_API_KEYS", "k"),
    ])
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/chat"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,authorization",
            )
            .send()
    };

    let allowed = preflight("https://chat.example")
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let other = preflight("https://evil.example")
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let actual = app
        .client
        .post(app.url("/api/chat"))
        .header("origin", "https://chat.example")
        .header("content-type", "application/json")
        .bearer_auth("k")
        .body(json!({"prompt": "hi"}).to_string())
        .send()
        .await
        .unwrap_or_else(|error| panic!("{error}"));

    let header = |response: &reqwest::Response, name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_ascii_lowercase)
    };
    assert!(allowed.status().is_success());
    assert_eq!(
        header(&allowed, "access-control-allow-origin").as_deref(),
        Some("https://chat.example")
    );
    let allowed_headers = header(&allowed, "access-control-allow-headers").unwrap_or_default();
    assert!(allowed_headers.contains("authorization") && allowed_headers.contains("content-type"));
    assert_eq!(header(&other, "access-control-allow-origin"), None);
    assert!(
        header(&actual, "access-control-expose-headers")
            .unwrap_or_default()
            .contains("x-stream-id")
    );
}

#[tokio::test]
async fn an_origin_that_is_not_allowed_gets_no_cors_headers_at_all() {
    // Arrange
    let app = spawn_app_with(&[("CORS_ALLOWED_ORIGINS", "https://chat.example")]).await;
    let from = |origin: &'static str, method: reqwest::Method| {
        app.client
            .request(method.clone(), app.url("/api/chat"))
            .header("origin", origin)
            .header("content-type", "application/json")
            .header("access-control-request-method", "POST")
            .body(if method == reqwest::Method::POST {
                json!({"prompt": "hi"}).to_string()
            } else {
                String::new()
            })
            .send()
    };

    // Act
    let mut answers = Vec::new();
    for method in [reqwest::Method::POST, reqwest::Method::OPTIONS] {
        answers.push(from("https://evil.example", method.clone()).await);
        answers.push(from("null", method).await);
    }

    // Assert
    for answer in answers {
        let answer = answer.unwrap_or_else(|error| panic!("{error}"));
        let cors: Vec<String> = answer
            .headers()
            .keys()
            .map(|name| name.as_str().to_owned())
            .filter(|name| name.starts_with("access-control-"))
            .collect();
        assert!(cors.is_empty(), "{}: {cors:?}", answer.url());
    }
}

#[tokio::test]
async fn each_key_has_its_own_rate_limit() {
    let app = spawn_app_with(&[("PROXY_API_KEYS", "a,b"), ("RATE_LIMIT_PER_MINUTE", "2")]).await;

    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = post_as(&app, Some("a"), "/api/chat").await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            let retry_after: u64 = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok()?.parse().ok())
                .unwrap_or(0);
            assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
            assert_eq!(json_body(response).await["error"]["code"], "rate_limited");
        } else {
            Transcript::read(response).await;
        }
    }
    let other_key = post_as(&app, Some("b"), "/api/chat").await;

    assert_eq!(statuses, [200, 200, 429]);
    assert_eq!(other_key.status(), 200);
}

#[tokio::test]
async fn over_max_concurrent_streams_is_503_until_one_finishes() {
    let app = spawn_app_with(&[("MAX_CONCURRENT_STREAMS", "1")]).await;
    app.upstream
        .push(Reply::tokens(&["one", " two"]).pace(Duration::from_millis(150)));
    let first = app.post_chat_and_wait(&json!({"prompt": "first"})).await;

    let second = app.post_chat(&json!({"prompt": "second"})).await;
    assert_eq!(second.status(), 503);
    assert_eq!(json_body(second).await["error"]["code"], "overloaded");

    assert_eq!(Transcript::read(first).await.text_of("token"), "one two");
    let third = app.chat(&json!({"prompt": "third"})).await;
    assert_eq!(third.status, 200);
}

#[tokio::test]
async fn without_keys_the_rate_limit_counts_per_client_address() {
    let app = spawn_app_with(&[("RATE_LIMIT_PER_MINUTE", "1")]).await;

    let first = post_as(&app, None, "/api/chat").await;
    let second = post_as(&app, None, "/api/chat").await;

    assert_eq!(first.status(), 200);
    assert_eq!(second.status(), 429);
    assert!(second.headers().contains_key("retry-after"));
    assert_eq!(
        app.get("/healthz").await.status(),
        200,
        "health checks are never limited"
    );
}
