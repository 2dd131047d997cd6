//! The life of a generation: a client that leaves, the Stop button, the
//! resume grace period, and graceful shutdown.

use std::time::Duration;

use serde_json::json;

use crate::fake_upstream::Reply;
use crate::helpers::{
    Transcript, json_body, parse_frames, spawn_app, spawn_app_with, stream_id_of,
};

/// A long, slowly paced answer that is still running when the test acts.
fn long_answer() -> Reply {
    let tokens: Vec<String> = (0..200).map(|n| format!("t{n} ")).collect();
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    Reply::tokens(&tokens).pace(Duration::from_millis(20))
}

/// Reads the response until a `token` event arrived, then hands it back.
async fn read_until_first_token(response: reqwest::Response) -> (String, reqwest::Response) {
    let mut body = response;
    let mut text = String::new();
    while !text.contains(r#""type":"token""#) {
        match tokio::time::timeout(Duration::from_secs(5), body.chunk()).await {
            Ok(Ok(Some(piece))) => text.push_str(&String::from_utf8_lossy(&piece)),
            other => panic!("the stream ended before a token: {other:?}"),
        }
    }
    (text, body)
}

#[tokio::test]
async fn a_client_that_leaves_stops_the_upstream() {
    let app = spawn_app().await;
    app.upstream.push(long_answer());

    let response = app.post_chat_and_wait(&json!({"prompt": "long"})).await;
    let (_, response) = read_until_first_token(response).await;
    drop(response);

    assert!(
        app.upstream.wait_dropped(1, Duration::from_secs(2)).await,
        "the upstream request should be dropped when the only client leaves"
    );
    assert_eq!(app.upstream.bodies_dropped(), 1);
    assert_eq!(app.upstream.bodies_open(), 0);
}

#[tokio::test]
async fn many_clients_leaving_at_once_leave_no_upstream_open() {
    let app = spawn_app().await;
    let clients = 20;
    app.upstream.set_default(long_answer());

    let responses = futures_util::future::join_all((0..clients).map(|_| async {
        read_until_first_token(app.post_chat_and_wait(&json!({"prompt": "x"})).await).await
    }))
    .await;
    drop(responses);

    assert!(
        app.upstream
            .wait_dropped(clients, Duration::from_secs(5))
            .await
    );
    assert_eq!(app.upstream.bodies_open(), 0);
}

#[tokio::test]
async fn the_upstream_waits_out_the_grace_period_before_it_is_dropped() {
    let app = spawn_app_with(&[("RESUME_GRACE_SECS", "0.6")]).await;
    app.upstream.push(long_answer());

    let response = app.post_chat_and_wait(&json!({"prompt": "long"})).await;
    let (_, response) = read_until_first_token(response).await;
    drop(response);

    assert!(
        !app.upstream
            .wait_dropped(1, Duration::from_millis(300))
            .await,
        "within the grace period the generation goes on"
    );
    assert!(
        app.upstream.wait_dropped(1, Duration::from_secs(3)).await,
        "after the grace period the upstream request is dropped"
    );
}

#[tokio::test]
async fn delete_stops_the_generation_and_followers_see_cancelled() {
    let app = spawn_app().await;
    app.upstream.push(long_answer());
    let response = app.post_chat_and_wait(&json!({"prompt": "long"})).await;
    let stream_id = stream_id_of(&response);
    let (seen, mut response) = read_until_first_token(response).await;

    let stopped = app.delete(&format!("/api/chat/{stream_id}")).await;

    assert_eq!(stopped.status(), 204);
    let mut rest = String::new();
    while let Ok(Ok(Some(piece))) =
        tokio::time::timeout(Duration::from_secs(5), response.chunk()).await
    {
        rest.push_str(&String::from_utf8_lossy(&piece));
    }
    let frames = parse_frames(&format!("{seen}{rest}"));
    let finish: Vec<_> = frames
        .iter()
        .filter_map(|frame| frame.json())
        .filter(|event| event["type"] == "finish")
        .collect();
    assert_eq!(
        finish,
        [json!({"type": "finish", "finish_reason": "cancelled", "usage": null})]
    );
    assert_eq!(
        frames.last().and_then(|frame| frame.data.as_deref()),
        Some("[DONE]")
    );
    assert!(app.upstream.wait_dropped(1, Duration::from_secs(2)).await);
}

#[tokio::test]
async fn delete_of_an_unknown_stream_is_404() {
    let app = spawn_app().await;

    let unknown = app.delete(&format!("/api/chat/{}", "ab".repeat(16))).await;
    let malformed = app.delete("/api/chat/not-a-stream").await;

    for response in [unknown, malformed] {
        assert_eq!(response.status(), 404);
        let body = json_body(response).await;
        assert_eq!(body["error"]["code"], "not_found");
    }
}

#[tokio::test]
async fn shutdown_lets_short_streams_finish_and_ends_long_ones_honestly() {
    let mut app = spawn_app_with(&[("SHUTDOWN_GRACE_SECS", "1")]).await;
    app.upstream
        .push(Reply::tokens(&["quick", " answer"]).pace(Duration::from_millis(50)));
    app.upstream.push(long_answer());
    let short = app.post_chat_and_wait(&json!({"prompt": "short"})).await;
    let long = app.post_chat_and_wait(&json!({"prompt": "long"})).await;

    app.begin_shutdown();
    let (short, long) = tokio::join!(Transcript::read(short), Transcript::read(long));

    assert_eq!(
        short.terminal(),
        [json!({"type": "finish", "finish_reason": "stop",
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}})]
    );
    assert_eq!(short.text_of("token"), "quick answer");
    let ending = long.terminal();
    assert_eq!(ending.len(), 1);
    assert_eq!(ending[0]["type"], "error");
    assert_eq!(ending[0]["code"], "shutting_down");
    assert!(long.ends_with_done());
    assert!(
        app.stopped(Duration::from_secs(5)).await,
        "the server should stop after the grace"
    );
    assert!(app.upstream.wait_dropped(1, Duration::from_secs(2)).await);
}

#[tokio::test]
async fn a_stopped_server_accepts_no_new_connections() {
    let mut app = spawn_app().await;

    app.begin_shutdown();
    assert!(app.stopped(Duration::from_secs(5)).await);

    let attempt = app.client.get(app.url("/healthz")).send().await;
    assert!(attempt.is_err(), "nothing should listen after shutdown");
}

#[tokio::test]
async fn keep_alive_flows_while_a_stream_is_idle() {
    let app = spawn_app_with(&[("KEEPALIVE_SECS", "0.1")]).await;
    app.upstream
        .push(Reply::tokens(&["a", "b"]).pace(Duration::from_millis(500)));

    let transcript = app.chat(&json!({"prompt": "slow"})).await;

    let pings = transcript
        .frames
        .iter()
        .filter(|frame| frame.is_ping())
        .count();
    assert!(
        pings >= 3,
        "expected keep-alives between slow tokens, got {pings}"
    );
    assert_eq!(transcript.text_of("token"), "ab");
}
