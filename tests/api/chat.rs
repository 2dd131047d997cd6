//! `POST /api/chat` and `GET /api/chat`: the event protocol of SPEC §2 as a
//! client sees it on the wire.

use std::time::Duration;

use serde_json::json;

use crate::fake_upstream::{Chunking, Reply};
use crate::helpers::{Transcript, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_chat_streams_start_tokens_finish_and_done() {
    let app = spawn_app().await;
    app.upstream
        .push(Reply::tokens(&["Hel", "lo", " there"]).pace(Duration::from_millis(5)));

    let transcript = app.chat(&json!({"prompt": "hi"})).await;

    assert_eq!(transcript.status, 200);
    assert_eq!(
        transcript.header("content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    assert_eq!(
        transcript.header("cache-control"),
        Some("no-cache, no-transform")
    );
    assert_eq!(transcript.header("x-accel-buffering"), Some("no"));
    let stream_id = transcript
        .header("x-stream-id")
        .unwrap_or_default()
        .to_owned();
    assert_eq!(stream_id.len(), 32, "a 128-bit id in hex");

    assert_eq!(
        transcript.frames[0].retry.as_deref(),
        Some("1000"),
        "the stream opens with retry: 1000"
    );
    let events = transcript.events();
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|event| event["type"].as_str())
        .collect();
    assert_eq!(kinds, ["start", "token", "token", "token", "finish"]);
    assert_eq!(
        events[0],
        json!({"type": "start", "stream_id": stream_id, "model": "fake-model"})
    );
    assert_eq!(events[1], json!({"type": "token", "token": "Hel"}));
    assert_eq!(
        events[4],
        json!({"type": "finish", "finish_reason": "stop",
               "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}})
    );
    assert!(transcript.ends_with_done());
    assert!(transcript.text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn every_event_has_a_sequential_id_and_no_event_field() {
    let app = spawn_app().await;
    app.upstream.push(Reply::tokens(&["a", "b", "c", "d"]));

    let transcript = app.chat(&json!({"prompt": "hi"})).await;

    let stream_id = transcript
        .header("x-stream-id")
        .unwrap_or_default()
        .to_owned();
    let with_data: Vec<_> = transcript
        .frames
        .iter()
        .filter(|frame| frame.data.is_some())
        .collect();
    let (done, events) = with_data
        .split_last()
        .unwrap_or_else(|| panic!("no frames"));
    for (seq, frame) in events.iter().enumerate() {
        assert_eq!(
            frame.id.as_deref(),
            Some(format!("{stream_id}:{seq}").as_str())
        );
        assert_eq!(frame.event, None);
    }
    assert_eq!(done.data.as_deref(), Some("[DONE]"));
    assert_eq!(done.id, None, "[DONE] is not a numbered event");
}

#[tokio::test]
async fn the_upstream_gets_our_key_streaming_usage_and_the_clients_extras() {
    let app = spawn_app_with(&[("UPSTREAM_API_KEY", "sk-upstream-secret")]).await;

    let transcript = app
        .chat(&json!({
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            "model": "gpt-test",
            "temperature": 0.3,
            "stream": false,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            "x_vendor_extra": {"keep": true}
        }))
        .await;

    assert_eq!(transcript.status, 200);
    let requests = app.upstream.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(
        sent.header("authorization"),
        Some("Bearer sk-upstream-secret")
    );
    assert_eq!(sent.body["stream"], json!(true));
    assert_eq!(sent.body["stream_options"], json!({"include_usage": true}));
    assert_eq!(sent.body["model"], json!("gpt-test"));
    assert_eq!(sent.body["temperature"], json!(0.3));
    assert_eq!(sent.body["x_vendor_extra"], json!({"keep": true}));
    assert_eq!(sent.body["tools"][0]["function"]["name"], json!("f"));
    assert_eq!(
        sent.body["messages"][0],
        json!({"role": "system", "content": "be brief"})
    );
    assert!(!transcript.text.contains("sk-upstream-secret"));
}

#[tokio::test]
async fn empty_and_null_deltas_are_not_events() {
    let app = spawn_app().await;
    let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
        format!(
            "data: {}\n\n",
            json!({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    let body = [
        chunk(json!({"role": "assistant", "content": ""}), json!(null)),
        chunk(
            json!({"content": null, "reasoning_content": null}),
            json!(null),
        ),
        chunk(json!({}), json!(null)),
        chunk(json!({"content": "x"}), json!(null)),
        chunk(json!({"tool_calls": []}), json!(null)),
        chunk(json!({}), json!("stop")),
        "data: [DONE]\n\n".to_owned(),
    ]
    .concat();
    app.upstream.push(Reply::sse(body));

    let transcript = app.chat(&json!({"prompt": "hi"})).await;

    let kinds: Vec<String> = transcript
        .frames
        .iter()
        .filter_map(|frame| frame.kind())
        .collect();
    assert_eq!(kinds, ["start", "token", "finish"]);
    assert_eq!(transcript.terminal()[0]["usage"], json!(null));
}

#[tokio::test]
async fn reasoning_tool_calls_and_other_choices_are_typed_events() {
    let app = spawn_app().await;
    app.upstream
        .push(Reply::fixture("groq-gptoss-reasoning-tool-call.sse"));

    let transcript = app.chat(&json!({"prompt": "call the tool"})).await;

    let events = transcript.events();
    assert!(
        transcript
            .text_of("reasoning")
            .starts_with("We need to call the function")
    );
    let call = events
        .iter()
        .find(|event| event["type"] == "tool_call")
        .unwrap_or_else(|| panic!("no tool_call in {events:?}"));
    assert_eq!(call["index"], json!(0));
    assert_eq!(call["name"], json!("get_something_by_name"));
    assert_eq!(call["id"], json!("fc_bfb39741-3748-4def-9886-a93fc9c64a90"));
    assert_eq!(
        transcript.terminal()[0]["finish_reason"],
        json!("tool_calls")
    );

    app.upstream
        .push(Reply::fixture("openai-n3-multiple-choices.sse"));
    let transcript = app.chat(&json!({"prompt": "three answers"})).await;
    let choices: Vec<i64> = transcript
        .events()
        .iter()
        .filter(|event| event["type"] == "token")
        .map(|event| {
            event
                .get("choice")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(0)
        })
        .collect();
    assert!(choices.contains(&0) && choices.contains(&1) && choices.contains(&2));
}

#[tokio::test]
async fn get_with_a_prompt_streams_for_event_source_clients() {
    let app = spawn_app().await;
    app.upstream.push(Reply::tokens(&["from ", "GET"]));

    let transcript =
        Transcript::read(app.get("/api/chat?prompt=hello%20there&model=m2").await).await;

    assert_eq!(transcript.status, 200);
    assert_eq!(transcript.text_of("token"), "from GET");
    let sent = &app.upstream.requests()[0];
    assert_eq!(
        sent.body["messages"],
        json!([{"role": "user", "content": "hello there"}])
    );
    assert_eq!(sent.body["model"], json!("m2"));
}

#[tokio::test]
async fn keep_alive_comments_flow_before_the_first_token() {
    let app = spawn_app_with(&[("KEEPALIVE_SECS", "0.1")]).await;
    app.upstream
        .push(Reply::tokens(&["late"]).first_byte_after(Duration::from_millis(600)));

    let transcript = app.chat(&json!({"prompt": "think hard"})).await;

    let first_token = transcript
        .frames
        .iter()
        .position(|frame| frame.kind().as_deref() == Some("token"))
        .unwrap_or_else(|| panic!("no token"));
    let pings_before = transcript.frames[..first_token]
        .iter()
        .filter(|frame| frame.is_ping())
        .count();
    assert!(
        pings_before >= 2,
        "expected keep-alives before the first token, got {pings_before}"
    );
    assert_eq!(transcript.text_of("token"), "late");
}

#[tokio::test]
async fn every_chunking_of_the_upstream_gives_the_same_events() {
    let app = spawn_app().await;
    let whole = {
        app.upstream
            .push(Reply::fixture("openai-content-usage.sse").chunked(Chunking::Whole));
        app.chat(&json!({"prompt": "x"})).await
    };
    for chunking in [
        Chunking::Bytes(1),
        Chunking::Random { seed: 7, max: 9 },
        Chunking::Events,
    ] {
        app.upstream
            .push(Reply::fixture("openai-content-usage.sse").chunked(chunking));
        let transcript = app.chat(&json!({"prompt": "x"})).await;
        let strip = |events: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
            events
                .into_iter()
                .filter(|event| event["type"] != "start")
                .collect()
        };
        assert_eq!(
            strip(transcript.events()),
            strip(whole.events()),
            "{chunking:?}"
        );
    }
}

#[tokio::test]
async fn a_client_speaking_http2_with_prior_knowledge_gets_the_same_stream() {
    let app = spawn_app().await;
    app.upstream.push(Reply::tokens(&["over", " h2"]));
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap_or_else(|error| panic!("{error}"));

    let response = client
        .post(app.url("/api/chat"))
        .header("content-type", "application/json")
        .body(json!({"prompt": "hi"}).to_string())
        .send()
        .await
        .unwrap_or_else(|error| panic!("POST over HTTP/2: {error}"));
    let version = response.version();
    let transcript = Transcript::read(response).await;

    assert_eq!(version, reqwest::Version::HTTP_2);
    assert_eq!(transcript.status, 200);
    assert_eq!(transcript.text_of("token"), "over h2");
    assert!(transcript.text.ends_with("data: [DONE]\n\n"));
}
