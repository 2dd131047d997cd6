//! `/v1`, the OpenAI-compatible face, as an OpenAI client sees it on the
//! wire: every recorded upstream dialect re-encoded as clean
//! `chat.completion.chunk`s or assembled into one `chat.completion`, usage
//! only when asked, errors in OpenAI's shape with the right status, and an
//! upstream that stops the moment its client leaves.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::corpus::{
    Extracted, REPLAY_LIMIT, ToolCall, compare_choices, openai_chat_recordings, side_by_side,
    upstream_errors,
};
use crate::failures::{assert_refused, content_chunk};
use crate::fake_upstream::{Chunking, Reply};
use crate::helpers::{
    TestApp, Transcript, json_body, spawn_app, spawn_app_with, spawn_demo_app, stream_id_of,
};

// ---- the corpus, streamed and not ----------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_openai_chat_recording_streams_as_clean_chunks() {
    // Arrange
    let chunkings = [Chunking::Whole, Chunking::Random { seed: 29, max: 40 }];
    let recordings = openai_chat_recordings();

    // Act
    let replays = side_by_side(recordings.iter().flat_map(|(file, entry)| {
        chunkings.iter().map(move |&chunking| async move {
            let app = spawn_app().await;
            app.upstream.push(Reply::fixture(file).chunked(chunking));
            let transcript = tokio::time::timeout(
                REPLAY_LIMIT,
                stream(&app, json!({"stream_options": {"include_usage": true}})),
            )
            .await
            .unwrap_or_else(|_| panic!("{file} ({chunking:?}): the stream did not end"));
            (file, entry, chunking, transcript)
        })
    }))
    .await;

    // Assert
    let problems: Vec<String> = replays
        .iter()
        .flat_map(|(file, entry, chunking, transcript)| {
            check_streamed(&entry["expected"], transcript)
                .into_iter()
                .map(move |problem| format!("{file} ({chunking:?}): {problem}"))
        })
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_openai_chat_recording_assembles_into_one_completion() {
    // Arrange
    let recordings = openai_chat_recordings();

    // Act
    let answers = side_by_side(recordings.iter().map(|(file, entry)| async move {
        let app = spawn_app().await;
        app.upstream.push(Reply::fixture(file));
        let response = post_v1(&app, &request(json!({}))).await;
        (file, entry, Transcript::read(response).await)
    }))
    .await;

    // Assert
    let problems: Vec<String> = answers
        .iter()
        .flat_map(|(file, entry, transcript)| {
            check_assembled(&entry["expected"], transcript)
                .into_iter()
                .map(move |problem| format!("{file}: {problem}"))
        })
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---- the shape of an answer ----------------------------------------------

#[tokio::test]
async fn a_stream_opens_with_the_role_and_ends_with_the_finish_and_done() {
    // Arrange
    let app = spawn_app().await;
    app.upstream
        .push(Reply::tokens(&["Hel", "lo"]).pace(Duration::from_millis(5)));

    // Act
    let transcript = stream(&app, json!({"model": "my-model"})).await;

    // Assert
    assert_eq!(transcript.status, 200);
    assert_eq!(
        transcript.header("content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    assert_eq!(
        transcript.header("cache-control"),
        Some("no-cache, no-transform")
    );
    let stream_id = transcript.header("x-stream-id").unwrap_or_default();
    let chunks = transcript.events();
    let id = format!("chatcmpl-{stream_id}");
    let created = &chunks[0]["created"];
    assert!(created.as_u64().is_some_and(|secs| secs > 1_700_000_000));
    let chunk = |delta: Value, finish_reason: Value| {
        json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": "my-model",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})
    };
    assert_eq!(
        chunks,
        [
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": "Hel"}), Value::Null),
            chunk(json!({"content": "lo"}), Value::Null),
            chunk(json!({}), json!("stop")),
        ]
    );
    assert!(transcript.text.ends_with("data: [DONE]\n\n"));
    assert_eq!(
        app.upstream.requests()[0].body["model"],
        "my-model",
        "the client's model goes upstream"
    );
}

#[tokio::test]
async fn usage_is_sent_only_when_the_client_asks_but_always_asked_for_upstream() {
    let app = spawn_app().await;
    let cases = [
        (json!({}), false),
        (json!({"stream_options": {"include_usage": false}}), false),
        (json!({"stream_options": {"include_usage": true}}), true),
    ];
    for (extra, asked) in cases {
        // Arrange
        app.upstream.push(Reply::tokens(&["a", "b", "c"]));

        // Act
        let transcript = stream(&app, extra.clone()).await;

        // Assert
        let usage: Vec<Value> = transcript
            .events()
            .into_iter()
            .filter(|chunk| chunk.get("usage").is_some())
            .collect();
        if asked {
            let [usage_chunk] = usage.as_slice() else {
                panic!("{extra}: one usage chunk, got {usage:?}");
            };
            assert_eq!(usage_chunk["choices"], json!([]), "{extra}");
            assert_eq!(
                usage_chunk["usage"],
                json!({"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}),
                "{extra}"
            );
            let events = transcript.events();
            assert_eq!(
                events.last(),
                Some(usage_chunk),
                "{extra}: usage comes last"
            );
        } else {
            assert!(
                usage.is_empty(),
                "{extra}: no usage was asked for: {usage:?}"
            );
        }
        assert!(transcript.ends_with_done(), "{extra}");
    }
    for upstream in app.upstream.requests() {
        assert_eq!(upstream.body["stream"], true);
        assert_eq!(
            upstream.body["stream_options"],
            json!({"include_usage": true})
        );
    }
}

#[tokio::test]
async fn without_stream_the_answer_is_one_completion_with_usage() {
    let app = spawn_app().await;
    for extra in [json!({}), json!({"stream": false})] {
        // Arrange
        app.upstream.push(Reply::tokens(&["Hel", "lo"]));

        // Act
        let response = post_v1(&app, &request(extra.clone())).await;

        // Assert
        assert_eq!(response.status(), 200, "{extra}");
        assert!(
            response
                .headers()
                .get("content-type")
                .is_some_and(|value| value.as_bytes().starts_with(b"application/json")),
            "{extra}"
        );
        let completion = json_body(response).await;
        assert_eq!(completion["object"], "chat.completion", "{extra}");
        assert!(
            completion["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("chatcmpl-")),
            "{extra}"
        );
        assert_eq!(completion["model"], "fake-model", "{extra}");
        assert_eq!(
            completion["choices"],
            json!([{"index": 0, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "Hello", "refusal": null}}]),
            "{extra}"
        );
        assert_eq!(
            completion["usage"],
            json!({"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}),
            "{extra}"
        );
    }
}

// ---- errors ----------------------------------------------------------------

#[tokio::test]
async fn refusals_before_the_stream_have_openais_shape_and_status() {
    let app = spawn_app().await;
    for stream in [false, true] {
        // Arrange
        app.upstream.push(Reply::status(
            500,
            json!({"error": {"message": "The server had an error", "type": "server_error"}}),
        ));

        // Act
        let failed =
            Transcript::read(post_v1(&app, &request(json!({"stream": stream}))).await).await;
        let invalid =
            Transcript::read(post_v1(&app, &json!({"messages": [], "stream": stream})).await).await;

        // Assert
        let context = format!("stream: {stream}");
        let error = assert_refused(&failed, 502, "upstream_error", &context);
        assert_eq!(error["upstream_status"], 500, "{context}");
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|message| message.contains("The server had an error")),
            "{context}: {error}"
        );
        let error = assert_refused(&invalid, 400, "invalid_request", &context);
        assert_eq!(error["type"], "invalid_request_error", "{context}");
    }
    let wrong_type = app
        .client
        .post(app.url("/v1/chat/completions"))
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap_or_else(|error| panic!("POST: {error}"));
    assert_refused(
        &Transcript::read(wrong_type).await,
        415,
        "unsupported_media_type",
        "text/plain",
    );
}

#[tokio::test]
async fn a_failure_after_the_stream_began_is_an_error_chunk_and_no_done() {
    let app = spawn_app_with(&[("UPSTREAM_IDLE_TIMEOUT_SECS", "0.3")]).await;
    let upstream_error = json!({"error": {"message": "overloaded midway", "type": "server_error"}});
    let cases = [
        (
            Reply::sse(
                [
                    content_chunk("so far"),
                    format!("data: {upstream_error}\n\n"),
                ]
                .concat(),
            ),
            "upstream_error",
            "overloaded midway",
        ),
        (
            Reply::sse(content_chunk("so far")).cut_after(1),
            "upstream_disconnected",
            "before the generation finished",
        ),
        (
            Reply::sse(content_chunk("so far")).hang_after(1),
            "upstream_timeout",
            "sent nothing for 0.3 s",
        ),
    ];
    for (reply, code, message) in cases {
        // Arrange
        app.upstream.push(reply);

        // Act
        let transcript = stream(&app, json!({})).await;

        // Assert
        assert_eq!(transcript.status, 200, "{code}");
        let chunks = transcript.events();
        let (last, before) = chunks
            .split_last()
            .unwrap_or_else(|| panic!("{code}: no chunks"));
        assert_eq!(last["error"]["code"], code, "{code}: {last}");
        assert_eq!(last["error"]["type"], "upstream_error", "{code}: {last}");
        assert!(
            last["error"]["message"]
                .as_str()
                .is_some_and(|text| text.contains(message)),
            "{code}: {last}"
        );
        assert_eq!(accumulate(before).0[&0].content, "so far", "{code}");
        assert!(
            before
                .iter()
                .all(|chunk| chunk["choices"][0]["finish_reason"].is_null()),
            "{code}: a failed stream never finishes: {before:?}"
        );
        assert!(
            !transcript.text.contains("[DONE]"),
            "{code}: a failed stream must not look complete"
        );
    }
}

#[tokio::test]
async fn a_failure_after_the_upstream_answered_is_a_status_when_not_streaming() {
    let app = spawn_app_with(&[("UPSTREAM_IDLE_TIMEOUT_SECS", "0.3")]).await;
    let cases = [
        (
            Reply::sse(content_chunk("so far")).cut_after(1),
            502,
            "upstream_disconnected",
        ),
        (
            Reply::sse(content_chunk("so far")).hang_after(1),
            504,
            "upstream_timeout",
        ),
    ];
    for (reply, status, code) in cases {
        // Arrange
        app.upstream.push(reply);

        // Act
        let transcript = Transcript::read(post_v1(&app, &request(json!({}))).await).await;

        // Assert
        let error = assert_refused(&transcript, status, code, code);
        assert_eq!(error["type"], "upstream_error", "{code}");
    }
}

// ---- cancellation ----------------------------------------------------------

#[tokio::test]
async fn a_client_that_leaves_stops_the_upstream_without_waiting_for_the_grace() {
    // Arrange: a grace long enough that only an immediate stop passes.
    let app = spawn_app_with(&[("RESUME_GRACE_SECS", "60")]).await;
    app.upstream.push(long_answer());

    // Act
    let response = post_v1(&app, &request(json!({"stream": true}))).await;
    assert_eq!(response.status(), 200);
    let (seen, response) = read_until(response, r#""content":"t0 ""#).await;
    drop(response);

    // Assert
    assert!(seen.contains("chat.completion.chunk"));
    assert!(
        app.upstream.wait_dropped(1, Duration::from_secs(5)).await,
        "the upstream request should be dropped as soon as the /v1 client leaves"
    );
    let metrics = app.get("/metrics").await.text().await.unwrap_or_default();
    assert!(
        metrics.contains("tokenrelay_cancellations_total{cause=\"client_gone\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_client_that_stops_waiting_for_a_whole_answer_stops_the_upstream() {
    // Arrange
    let app = spawn_app_with(&[("RESUME_GRACE_SECS", "60")]).await;
    app.upstream.push(long_answer());

    // Act
    let impatient = v1_request(&app, &request(json!({})))
        .timeout(Duration::from_millis(300))
        .send()
        .await;

    // Assert
    assert!(
        impatient.is_err(),
        "the answer takes seconds, the client waits 0.3 s"
    );
    assert!(
        app.upstream.wait_dropped(1, Duration::from_secs(5)).await,
        "the upstream request should be dropped when the client gives up"
    );
}

#[tokio::test]
async fn a_stream_stopped_with_delete_finishes_with_stop() {
    // Arrange
    let app = spawn_app().await;
    app.upstream.push(long_answer());
    let response = post_v1(&app, &request(json!({"stream": true}))).await;
    let stream_id = stream_id_of(&response);
    let (seen, response) = read_until(response, r#""content":"t0 ""#).await;

    // Act
    let stopped = app.delete(&format!("/api/chat/{stream_id}")).await;
    let rest = Transcript::read(response).await;

    // Assert
    assert_eq!(stopped.status(), 204);
    let chunks: Vec<Value> = crate::helpers::parse_frames(&format!("{seen}{}", rest.text))
        .iter()
        .filter_map(crate::helpers::Frame::json)
        .collect();
    let finish_reasons: Vec<&Value> = chunks
        .iter()
        .map(|chunk| &chunk["choices"][0]["finish_reason"])
        .filter(|reason| !reason.is_null())
        .collect();
    assert_eq!(finish_reasons, [&json!("stop")]);
    assert!(rest.ends_with_done());
    assert!(app.upstream.wait_dropped(1, Duration::from_secs(2)).await);
}

// ---- the demo, models, access ------------------------------------------------

#[tokio::test]
async fn the_demo_model_answers_through_v1() {
    // Arrange
    let app = spawn_demo_app().await;

    // Act
    let streamed = stream(&app, json!({"max_tokens": 4})).await;
    let whole = json_body(post_v1(&app, &request(json!({"max_tokens": 4}))).await).await;
    let models = json_body(app.get("/v1/models").await).await;

    // Assert
    let (choices, finish_reasons, _) = accumulate(&streamed.events());
    assert_eq!(choices[&0].content, "You said: \"hi\". I ");
    assert_eq!(finish_reasons[&0], "length");
    assert!(streamed.ends_with_done());
    assert_eq!(whole["model"], "tokenrelay-demo");
    assert_eq!(
        whole["choices"][0]["message"]["content"],
        "You said: \"hi\". I "
    );
    assert_eq!(whole["usage"]["completion_tokens"], 4);
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "tokenrelay-demo");
}

#[tokio::test]
async fn models_are_the_upstreams_list_or_an_openai_shaped_502() {
    // Arrange
    let app = spawn_app().await;
    let dead = spawn_app_with(&[("UPSTREAM_BASE_URL", "http://127.0.0.1:1/v1")]).await;

    // Act
    let models = app.get("/v1/models").await;
    let unreachable = Transcript::read(dead.get("/v1/models").await).await;

    // Assert
    assert_eq!(models.status(), 200);
    let models = json_body(models).await;
    assert_eq!(models["data"][0]["id"], "fake-model");
    assert_eq!(app.upstream.requests()[0].path, "/v1/models");
    assert_refused(
        &unreachable,
        502,
        "upstream_error",
        "an unreachable upstream",
    );
}

#[tokio::test]
async fn v1_is_behind_the_same_key_check_as_api() {
    // Arrange
    let app = spawn_app_with(&[("PROXY_API_KEYS", "client-key")]).await;

    // Act
    let anonymous = Transcript::read(post_v1(&app, &request(json!({}))).await).await;
    let models = Transcript::read(app.get("/v1/models").await).await;
    let allowed = app
        .client
        .get(app.url("/v1/models"))
        .bearer_auth("client-key")
        .send()
        .await
        .unwrap_or_else(|error| panic!("GET /v1/models: {error}"));

    // Assert
    let error = assert_refused(&anonymous, 401, "unauthorized", "no key");
    assert_eq!(error["type"], "authentication_error");
    assert_refused(&models, 401, "unauthorized", "no key for the models");
    assert_eq!(allowed.status(), 200);
    assert!(
        app.upstream
            .requests()
            .iter()
            .all(|seen| seen.path == "/v1/models")
    );
}

// ---- helpers -------------------------------------------------------------

/// A chat request for `/v1` with `extra` fields on top.
fn request(extra: Value) -> Value {
    let mut body = json!({"messages": [{"role": "user", "content": "hi"}]});
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    body
}

pub(crate) async fn post_v1(app: &TestApp, body: &Value) -> reqwest::Response {
    v1_request(app, body)
        .send()
        .await
        .unwrap_or_else(|error| panic!("POST /v1/chat/completions: {error}"))
}

fn v1_request(app: &TestApp, body: &Value) -> reqwest::RequestBuilder {
    app.client
        .post(app.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body.to_string())
}

/// A streaming request with `extra` fields, read to its end.
async fn stream(app: &TestApp, extra: Value) -> Transcript {
    let mut body = request(extra);
    body["stream"] = json!(true);
    Transcript::read(post_v1(app, &body).await).await
}

/// A long, slowly paced answer that is still running when the test acts.
fn long_answer() -> Reply {
    let tokens: Vec<String> = (0..200).map(|n| format!("t{n} ")).collect();
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    Reply::tokens(&tokens).pace(Duration::from_millis(20))
}

/// Reads the response until `marker` arrived, then hands it back.
async fn read_until(mut response: reqwest::Response, marker: &str) -> (String, reqwest::Response) {
    let mut text = String::new();
    while !text.contains(marker) {
        match tokio::time::timeout(Duration::from_secs(5), response.chunk()).await {
            Ok(Ok(Some(piece))) => text.push_str(&String::from_utf8_lossy(&piece)),
            other => panic!("the stream ended before {marker}: {other:?}\n{text}"),
        }
    }
    (text, response)
}

/// What an SDK accumulates from chunks: each choice's message, each
/// choice's finish reason, and the usage chunks.
pub(crate) fn accumulate(
    chunks: &[Value],
) -> (BTreeMap<u64, Extracted>, BTreeMap<u64, String>, Vec<Value>) {
    let mut choices: BTreeMap<u64, Extracted> = BTreeMap::new();
    let mut finish_reasons = BTreeMap::new();
    let mut usage = Vec::new();
    for chunk in chunks {
        if let Some(value) = chunk.get("usage") {
            usage.push(value.clone());
        }
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            let index = choice["index"].as_u64().unwrap_or(u64::MAX);
            if let Some(reason) = choice["finish_reason"].as_str() {
                finish_reasons.insert(index, reason.to_owned());
            }
            let delta = &choice["delta"];
            let text = |key: &str| delta[key].as_str().unwrap_or_default().to_owned();
            let message = choices.entry(index).or_default();
            message.content += &text("content");
            message.refusal += &text("refusal");
            message.reasoning += &text("reasoning_content");
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                let entry = message
                    .tool_calls
                    .entry(call["index"].as_u64().unwrap_or(u64::MAX))
                    .or_default();
                entry.id = entry
                    .id
                    .take()
                    .or_else(|| call["id"].as_str().map(str::to_owned));
                entry.name = entry
                    .name
                    .take()
                    .or_else(|| call["function"]["name"].as_str().map(str::to_owned));
                entry.arguments += call["function"]["arguments"].as_str().unwrap_or_default();
            }
        }
    }
    choices.retain(|_, choice| *choice != Extracted::default());
    (choices, finish_reasons, usage)
}

/// Every way a streamed recording differs from expected.json, or from a
/// clean OpenAI stream.
fn check_streamed(expected: &Value, transcript: &Transcript) -> Vec<String> {
    let mut problems = Vec::new();
    if transcript.status != 200 {
        problems.push(format!("status {}: {}", transcript.status, transcript.text));
        return problems;
    }
    let chunks = transcript.events();
    let failure = chunks.last().filter(|chunk| chunk.get("error").is_some());
    let answer = match failure {
        Some(_) => &chunks[..chunks.len() - 1],
        None => &chunks[..],
    };
    check_chunk_shapes(answer, &mut problems);
    let (choices, finish_reasons, usage) = accumulate(answer);
    compare_choices(expected, &choices, &mut problems);

    let upstream_errors = upstream_errors(expected);
    if upstream_errors.is_empty() {
        for choice in expected["choices"].as_array().into_iter().flatten() {
            let index = choice["index"].as_u64().unwrap_or(0);
            let got = finish_reasons.get(&index).map(String::as_str);
            if choice["finish_reason"].as_str() != got {
                problems.push(format!(
                    "choice {index}: finish_reason {} but the client saw {got:?}",
                    choice["finish_reason"]
                ));
            }
        }
        if usage != [expected["usage"].clone()] {
            problems.push(format!(
                "usage {} but the client saw {usage:?}",
                expected["usage"]
            ));
        }
        if !transcript.ends_with_done() {
            problems.push("the stream does not end with data: [DONE]".to_owned());
        }
    } else {
        let error = failure.map(|chunk| &chunk["error"]);
        let message = error
            .and_then(|error| error["message"].as_str())
            .unwrap_or_default();
        if error.map(|error| &error["code"]) != Some(&json!("upstream_error"))
            || !upstream_errors
                .iter()
                .all(|wanted| message.contains(wanted))
        {
            problems.push(format!(
                "expected an error chunk carrying {upstream_errors:?}, got {:?}",
                chunks.last()
            ));
        }
        if transcript.text.contains("[DONE]") || !finish_reasons.is_empty() {
            problems.push("a failed stream looks complete".to_owned());
        }
    }
    problems
}

/// Every chunk is a `chat.completion.chunk` of the same answer, the first
/// says who speaks, and deltas hold only what OpenAI's do.
fn check_chunk_shapes(chunks: &[Value], problems: &mut Vec<String>) {
    let id = chunks.first().map(|chunk| chunk["id"].clone());
    if !id
        .as_ref()
        .and_then(Value::as_str)
        .is_some_and(|id| id.starts_with("chatcmpl-"))
    {
        problems.push(format!(
            "the first chunk has no chatcmpl- id: {:?}",
            chunks.first()
        ));
    }
    if chunks
        .first()
        .map(|chunk| &chunk["choices"][0]["delta"]["role"])
        != Some(&json!("assistant"))
    {
        problems.push(format!(
            "the first chunk does not carry the role: {:?}",
            chunks.first()
        ));
    }
    let keys = |value: &Value| -> Vec<String> {
        value
            .as_object()
            .map(|object| object.keys().cloned().collect())
            .unwrap_or_default()
    };
    let only = |value: &Value, allowed: &[&str]| {
        keys(value)
            .iter()
            .all(|key| allowed.contains(&key.as_str()))
    };
    for chunk in chunks {
        let fine = Some(&chunk["id"]) == id.as_ref()
            && chunk["object"] == "chat.completion.chunk"
            && chunk["created"].is_u64()
            && chunk["model"] == "fake-model"
            && only(
                chunk,
                &["id", "object", "created", "model", "choices", "usage"],
            )
            && chunk["choices"].as_array().is_some_and(|choices| {
                choices.iter().all(|choice| {
                    let delta = &choice["delta"];
                    choice["index"].is_u64()
                        && only(choice, &["index", "delta", "finish_reason"])
                        && (choice["finish_reason"].is_null()
                            || choice["finish_reason"].is_string())
                        && only(
                            delta,
                            &[
                                "role",
                                "content",
                                "refusal",
                                "reasoning_content",
                                "tool_calls",
                            ],
                        )
                        && delta["tool_calls"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .all(|call| {
                                call["index"].is_u64()
                                    && only(call, &["index", "id", "type", "function"])
                                    && only(&call["function"], &["name", "arguments"])
                                    && call["function"]["arguments"].is_string()
                                    && call["id"].is_string() == (call["type"] == "function")
                            })
                })
            });
        if !fine {
            problems.push(format!("not a clean chat.completion.chunk: {chunk}"));
        }
    }
}

/// Every way a non-streamed recording differs from expected.json.
fn check_assembled(expected: &Value, transcript: &Transcript) -> Vec<String> {
    let mut problems = Vec::new();
    let upstream_errors = upstream_errors(expected);
    let body: Value = serde_json::from_str(&transcript.text).unwrap_or_default();
    if !upstream_errors.is_empty() {
        let message = body["error"]["message"].as_str().unwrap_or_default();
        if transcript.status != 502
            || body["error"]["code"] != "upstream_error"
            || !upstream_errors
                .iter()
                .all(|wanted| message.contains(wanted))
        {
            problems.push(format!(
                "expected a 502 carrying {upstream_errors:?}, got {}: {}",
                transcript.status, transcript.text
            ));
        }
        return problems;
    }
    if transcript.status != 200 || body["object"] != "chat.completion" {
        problems.push(format!(
            "not a completion: {}: {}",
            transcript.status, transcript.text
        ));
        return problems;
    }
    let mut seen = BTreeMap::new();
    for choice in body["choices"].as_array().into_iter().flatten() {
        let index = choice["index"].as_u64().unwrap_or(u64::MAX);
        let message = &choice["message"];
        let text = |key: &str| message[key].as_str().unwrap_or_default().to_owned();
        let wanted = &expected["choices"][index as usize];
        if choice["finish_reason"] != wanted["finish_reason"] {
            problems.push(format!(
                "choice {index}: finish_reason {} but got {}",
                wanted["finish_reason"], choice["finish_reason"]
            ));
        }
        let tool_calls = message["tool_calls"].as_array().into_iter().flatten();
        seen.insert(
            index,
            Extracted {
                content: text("content"),
                refusal: text("refusal"),
                reasoning: text("reasoning_content"),
                // A whole message lists its calls in order, without indices.
                tool_calls: expected_indices(wanted)
                    .zip(tool_calls)
                    .map(|(call_index, call)| {
                        let field = |key: &str| call["function"][key].as_str().map(str::to_owned);
                        (
                            call_index,
                            ToolCall {
                                id: call["id"].as_str().map(str::to_owned),
                                name: field("name"),
                                arguments: field("arguments").unwrap_or_default(),
                            },
                        )
                    })
                    .collect(),
            },
        );
    }
    seen.retain(|_, choice| *choice != Extracted::default());
    compare_choices(expected, &seen, &mut problems);
    if body["usage"] != expected["usage"] {
        problems.push(format!(
            "usage {} but got {}",
            expected["usage"], body["usage"]
        ));
    }
    problems
}

/// The tool-call indices of one expected choice, in order.
fn expected_indices(choice: &Value) -> impl Iterator<Item = u64> + '_ {
    choice["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|call| call["index"].as_u64().unwrap_or(u64::MAX))
}
