//! Resumable streams (SPEC §5): a client that drops comes back with
//! `Last-Event-ID` and continues the same generation, nothing missing and
//! nothing twice, without a second upstream request.

use std::time::Duration;

use serde_json::{Value, json};

use crate::fake_upstream::Reply;
use crate::helpers::{TestApp, Transcript, json_body, parse_frames, spawn_app_with, stream_id_of};

fn numbered_answer(count: usize, gap: Duration) -> (Reply, String) {
    let tokens: Vec<String> = (0..count).map(|n| format!("w{n} ")).collect();
    let text = tokens.concat();
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    (Reply::tokens(&tokens).pace(gap), text)
}

/// Starts a chat, reads until `tokens` token events arrived, then drops the
/// connection. Returns the stream id, the frames seen and the last event id.
async fn start_and_drop_after(app: &TestApp, tokens: usize) -> (String, Vec<Value>, String) {
    let mut response = app.post_chat_and_wait(&json!({"prompt": "count"})).await;
    let stream_id = stream_id_of(&response);
    let mut text = String::new();
    while text.matches(r#""type":"token""#).count() < tokens {
        match tokio::time::timeout(Duration::from_secs(5), response.chunk()).await {
            Ok(Ok(Some(piece))) => text.push_str(&String::from_utf8_lossy(&piece)),
            other => panic!("the stream ended early: {other:?}"),
        }
    }
    drop(response);
    // Only whole frames count: the client saw exactly these.
    let whole = &text[..text.rfind("\n\n").map_or(0, |end| end + 2)];
    let frames = parse_frames(whole);
    let last_id = frames
        .iter()
        .rev()
        .find_map(|frame| frame.id.clone())
        .unwrap_or_else(|| panic!("no id seen"));
    let events = frames.iter().filter_map(|frame| frame.json()).collect();
    (stream_id, events, last_id)
}

fn tokens_of(events: &[Value]) -> String {
    events
        .iter()
        .filter(|event| event["type"] == "token")
        .filter_map(|event| event["token"].as_str())
        .collect()
}

fn seqs(transcript: &Transcript) -> Vec<u64> {
    transcript
        .frames
        .iter()
        .filter_map(|frame| frame.id.as_deref()?.rsplit_once(':')?.1.parse().ok())
        .collect()
}

async fn resume(app: &TestApp, stream_id: &str, last_id: &str) -> Transcript {
    let response = app
        .client
        .get(app.url(&format!("/api/chat/{stream_id}/events")))
        .header("last-event-id", last_id)
        .send()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    Transcript::read(response).await
}

#[tokio::test]
async fn a_dropped_client_resumes_with_nothing_missing_or_doubled() {
    let app = spawn_app_with(&[("RESUME_GRACE_SECS", "5")]).await;
    let (reply, text) = numbered_answer(30, Duration::from_millis(10));
    app.upstream.push(reply);

    let (stream_id, before, last_id) = start_and_drop_after(&app, 5).await;
    let after = resume(&app, &stream_id, &last_id).await;

    assert_eq!(after.status, 200);
    assert_eq!(
        format!("{}{}", tokens_of(&before), after.text_of("token")),
        text
    );
    let last_seq: u64 = last_id
        .rsplit_once(':')
        .and_then(|(_, seq)| seq.parse().ok())
        .unwrap_or(0);
    let resumed = seqs(&after);
    assert_eq!(
        resumed.first(),
        Some(&(last_seq + 1)),
        "replay starts right after Last-Event-ID"
    );
    assert!(
        resumed.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "in order, no gaps: {resumed:?}"
    );
    assert_eq!(after.terminal().len(), 1);
    assert!(after.ends_with_done());
    assert_eq!(
        app.upstream.requests().len(),
        1,
        "the generation was paid for once"
    );
}

#[tokio::test]
async fn last_event_id_works_as_a_query_parameter_and_on_the_chat_routes() {
    let app = spawn_app_with(&[("RESUME_GRACE_SECS", "5")]).await;
    let (reply, text) = numbered_answer(20, Duration::from_millis(10));
    app.upstream.push(reply);
    let (stream_id, before, last_id) = start_and_drop_after(&app, 3).await;

    let by_query = Transcript::read(
        app.get(&format!(
            "/api/chat/{stream_id}/events?last_event_id={last_id}"
        ))
        .await,
    )
    .await;
    let by_post = Transcript::read(
        app.client
            .post(app.url("/api/chat"))
            .header("content-type", "application/json")
            .header("last-event-id", &last_id)
            .body(json!({"prompt": "count"}).to_string())
            .send()
            .await
            .unwrap_or_else(|error| panic!("{error}")),
    )
    .await;
    let by_event_source = Transcript::read(
        app.client
            .get(app.url("/api/chat?prompt=count"))
            .header("last-event-id", &last_id)
            .send()
            .await
            .unwrap_or_else(|error| panic!("{error}")),
    )
    .await;

    for transcript in [&by_query, &by_post, &by_event_source] {
        assert_eq!(
            format!("{}{}", tokens_of(&before), transcript.text_of("token")),
            text
        );
        assert_eq!(transcript.header("x-stream-id"), Some(stream_id.as_str()));
    }
    assert_eq!(
        app.upstream.requests().len(),
        1,
        "no resume started a new generation"
    );
}

#[tokio::test]
async fn several_followers_each_get_every_event_once_in_order() {
    let app = spawn_app_with(&[("RESUME_GRACE_SECS", "5")]).await;
    let (reply, text) = numbered_answer(25, Duration::from_millis(10));
    app.upstream.push(reply);
    let first = app.post_chat_and_wait(&json!({"prompt": "count"})).await;
    let stream_id = stream_id_of(&first);

    let (first, second, third) = tokio::join!(
        Transcript::read(first),
        async { Transcript::read(app.get(&format!("/api/chat/{stream_id}/events")).await).await },
        async { Transcript::read(app.get(&format!("/api/chat/{stream_id}/events")).await).await },
    );

    for transcript in [&first, &second, &third] {
        assert_eq!(transcript.text_of("token"), text);
        let seqs = seqs(transcript);
        assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
        assert_eq!(transcript.terminal().len(), 1);
        assert!(transcript.ends_with_done());
    }
    assert_eq!(first.events(), second.events());
    assert_eq!(app.upstream.requests().len(), 1);
}

#[tokio::test]
async fn a_finished_stream_stays_resumable_for_the_ttl_then_is_gone() {
    let app = spawn_app_with(&[("RESUME_TTL_SECS", "0.5")]).await;
    app.upstream.push(Reply::tokens(&["kept", " a", " while"]));
    let done = app.chat(&json!({"prompt": "x"})).await;
    let stream_id = done.header("x-stream-id").unwrap_or_default().to_owned();

    let replay = Transcript::read(app.get(&format!("/api/chat/{stream_id}/events")).await).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let expired = app.get(&format!("/api/chat/{stream_id}/events")).await;

    assert_eq!(
        replay.events(),
        done.events(),
        "a full replay within the TTL"
    );
    assert!(replay.ends_with_done());
    assert_eq!(expired.status(), 404);
    assert_eq!(json_body(expired).await["error"]["code"], "not_found");
}

#[tokio::test]
async fn a_resume_from_events_no_longer_kept_gets_a_clear_error() {
    let app = spawn_app_with(&[("RESUME_MAX_STREAM_BYTES", "400")]).await;
    let (reply, _) = numbered_answer(40, Duration::ZERO);
    app.upstream.push(reply);
    let done = app.chat(&json!({"prompt": "x"})).await;
    let stream_id = done.header("x-stream-id").unwrap_or_default().to_owned();

    let replay = Transcript::read(app.get(&format!("/api/chat/{stream_id}/events")).await).await;

    assert_eq!(replay.status, 200);
    let ending = replay.terminal();
    assert_eq!(ending.len(), 1);
    assert_eq!(ending[0]["code"], "resume_gap", "{ending:?}");
    assert!(
        replay.text_of("token").is_empty(),
        "no partial replay with a hole in it"
    );
    assert!(replay.ends_with_done());
    assert!(
        done.text_of("token").starts_with("w0 w1 "),
        "the live client lost nothing"
    );
}

#[tokio::test]
async fn a_new_generation_over_the_total_bound_is_refused_with_503() {
    let app = spawn_app_with(&[("RESUME_MAX_TOTAL_BYTES", "600")]).await;
    let (reply, _) = numbered_answer(20, Duration::ZERO);
    app.upstream.push(reply);
    let kept = app.chat(&json!({"prompt": "x"})).await;
    assert_eq!(kept.status, 200);

    let refused = app.post_chat(&json!({"prompt": "y"})).await;

    assert_eq!(refused.status(), 503);
    assert_eq!(json_body(refused).await["error"]["code"], "overloaded");
    assert_eq!(
        app.upstream.requests().len(),
        1,
        "a refused generation costs nothing upstream"
    );
}

#[tokio::test]
async fn a_last_event_id_for_another_stream_is_refused() {
    let app = spawn_app_with(&[("RESUME_GRACE_SECS", "5")]).await;
    app.upstream.push(Reply::tokens(&["a"]));
    let done = app.chat(&json!({"prompt": "x"})).await;
    let stream_id = done.header("x-stream-id").unwrap_or_default().to_owned();

    let response = app
        .client
        .get(app.url(&format!("/api/chat/{stream_id}/events")))
        .header("last-event-id", format!("{}:3", "12".repeat(16)))
        .send()
        .await
        .unwrap_or_else(|error| panic!("{error}"));

    assert_eq!(response.status(), 400);
}

/// Sends `last_event_id` to each way of resuming, as each client would.
async fn reconnect(
    app: &TestApp,
    stream_id: &str,
    last_event_id: &str,
) -> [(&'static str, reqwest::Response); 3] {
    let send = |request: reqwest::RequestBuilder| async move {
        request
            .header("last-event-id", last_event_id)
            .send()
            .await
            .unwrap_or_else(|error| panic!("{error}"))
    };
    [
        (
            "EventSource on GET /api/chat",
            send(app.client.get(app.url("/api/chat?prompt=count"))).await,
        ),
        (
            "POST /api/chat",
            send(
                app.client
                    .post(app.url("/api/chat"))
                    .header("content-type", "application/json")
                    .body(json!({"prompt": "count"}).to_string()),
            )
            .await,
        ),
        (
            "GET /events",
            send(
                app.client
                    .get(app.url(&format!("/api/chat/{stream_id}/events"))),
            )
            .await,
        ),
    ]
}

#[tokio::test]
async fn a_position_past_the_end_or_beyond_any_number_is_refused_not_replayed() {
    let app = spawn_app_with(&[("RESUME_GRACE_SECS", "5")]).await;
    app.upstream.push(Reply::tokens(&["a", "b"]));
    let done = app.chat(&json!({"prompt": "x"})).await;
    let stream_id = done.header("x-stream-id").unwrap_or_default().to_owned();
    let last_seq = *seqs(&done).last().unwrap_or_else(|| panic!("no ids"));

    for seq in [
        (last_seq + 1).to_string(),
        (last_seq + 1_000).to_string(),
        u64::MAX.to_string(),
        (u64::MAX - 1).to_string(),
    ] {
        for (route, response) in reconnect(&app, &stream_id, &format!("{stream_id}:{seq}")).await {
            let context = format!("{route} after event {seq}");
            assert_eq!(response.status(), 400, "{context}");
            let body = json_body(response).await;
            assert_eq!(
                body["error"]["code"], "invalid_request",
                "{context}: {body}"
            );
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|message| message.contains("Last-Event-ID")),
                "{context}: {body}"
            );
        }
    }
    for malformed in [
        "garbage",
        &format!("{stream_id}:-1"),
        &format!("{stream_id}:1x"),
    ] {
        for (route, response) in reconnect(&app, &stream_id, malformed).await {
            assert_eq!(response.status(), 400, "{route} with `{malformed}`");
        }
    }
    assert_eq!(
        app.upstream.requests().len(),
        1,
        "no reconnect started a generation"
    );
}

#[tokio::test]
async fn a_reconnect_that_has_seen_everything_is_told_to_stop_with_204() {
    let app = spawn_app_with(&[("RESUME_GRACE_SECS", "5")]).await;
    app.upstream.push(Reply::tokens(&["all", " of", " it"]));
    let done = app.chat(&json!({"prompt": "x"})).await;
    let stream_id = done.header("x-stream-id").unwrap_or_default().to_owned();
    let last_id = done
        .frames
        .iter()
        .rev()
        .find_map(|frame| frame.id.clone())
        .unwrap_or_else(|| panic!("no ids"));

    for (route, response) in reconnect(&app, &stream_id, &last_id).await {
        assert_eq!(response.status(), 204, "{route}");
        assert!(
            response.text().await.unwrap_or_default().is_empty(),
            "{route}: 204 has no body"
        );
    }
    assert_eq!(
        app.upstream.requests().len(),
        1,
        "nothing was sent upstream again"
    );
}

#[tokio::test]
async fn a_reconnect_naming_an_unknown_or_expired_stream_never_starts_a_generation() {
    let app = spawn_app_with(&[("RESUME_TTL_SECS", "0.3")]).await;
    app.upstream.push(Reply::tokens(&["gone", " soon"]));
    let done = app.chat(&json!({"prompt": "x"})).await;
    let expired = done.header("x-stream-id").unwrap_or_default().to_owned();
    tokio::time::sleep(Duration::from_millis(700)).await;

    for stream_id in [expired, "ab".repeat(16)] {
        let [(_, event_source), (_, post), (_, events)] =
            reconnect(&app, &stream_id, &format!("{stream_id}:2")).await;
        assert_eq!(event_source.status(), 204, "EventSource is told to stop");
        assert_eq!(post.status(), 404, "POST names the problem");
        assert_eq!(json_body(post).await["error"]["code"], "not_found");
        assert_eq!(events.status(), 404);
    }
    assert_eq!(
        app.upstream.requests().len(),
        1,
        "no reconnect started a new, billed generation"
    );
}
