//! The built-in demo model, reached through the whole proxy over real HTTP.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{json_body, spawn_demo_app};

#[tokio::test]
async fn the_demo_answers_with_sentences_that_mention_the_prompt() {
    let app = spawn_demo_app().await;

    let transcript = app.chat(&json!({"prompt": "what is a relay?"})).await;

    assert_eq!(transcript.status, 200);
    assert_eq!(transcript.events()[0]["model"], "tokenrelay-demo");
    let text = transcript.text_of("token");
    assert!(text.contains("what is a relay?"), "{text}");
    assert!(text.matches(". ").count() >= 2, "a few sentences: {text}");
    let finish = &transcript.terminal()[0];
    assert_eq!(finish["finish_reason"], "stop");
    assert!(finish["usage"]["completion_tokens"].as_u64().unwrap_or(0) > 20);
    assert!(transcript.ends_with_done());
}

#[tokio::test]
async fn the_demo_honours_max_tokens_at_a_human_pace() {
    let app = spawn_demo_app().await;
    let started = Instant::now();

    let transcript = app.chat(&json!({"prompt": "count", "max_tokens": 9})).await;

    let tokens = transcript
        .events()
        .iter()
        .filter(|event| event["type"] == "token")
        .count();
    assert_eq!(tokens, 9);
    let finish = &transcript.terminal()[0];
    assert_eq!(finish["finish_reason"], "length");
    assert_eq!(finish["usage"]["completion_tokens"], 9);
    // About 30 tokens per second: nine tokens cannot arrive in much under 0.3 s.
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn the_server_says_it_is_the_demo_model() {
    let app = spawn_demo_app().await;

    let info = json_body(app.get("/api/info").await).await;

    assert_eq!(info["demo"], true);
    assert_eq!(info["default_model"], "tokenrelay-demo");
}
