//! The AI SDK surface, `/api/ui/chat`: first as the SDK itself uses it
//! (`AbstractChat`, the state machine under `useChat`, with
//! `DefaultChatTransport`, from `tests/sdk/ui_chat_client.mjs`), asserting on
//! what its user would see; then over plain HTTP for what the SDK does not
//! show: headers, status codes, 204s, and chats scoped by key.

use std::time::Duration;

use serde_json::{Value, json};

use crate::failures::{content_chunk, finish_chunk};
use crate::fake_upstream::Reply;
use crate::helpers::{TestApp, Transcript, json_body, spawn_app, spawn_app_with, stream_id_of};
use crate::sdk::{Script, node_script};

/// Long enough that a client that dropped comes back in time on a noisy
/// machine; the tests that rely on it never wait for it to pass.
const GRACE: (&str, &str) = ("RESUME_GRACE_SECS", "30");

async fn run(app: &TestApp, scenario: &str) -> Script {
    let api = app.url("/api/ui/chat");
    Script::spawn(
        format!("ui_chat {scenario}"),
        node_script("ui_chat_client.mjs"),
        &api,
        scenario,
    )
    .await
}

/// Runs `scenario` to its end and returns what the SDK reported, after
/// checking what every scenario must hold: every response a UI message
/// stream with no field beyond the SDK's schema on any part.
async fn sdk(app: &TestApp, scenario: &str) -> Value {
    let script = run(app, scenario).await;
    let result = script.result.clone();
    script.finish().await;
    for response in result["responses"].as_array().into_iter().flatten() {
        if response["status"] == 200 {
            assert_eq!(response["ui_stream_header"], "v1", "{response}");
        }
        assert_eq!(response["extra_fields"], json!([]), "{response}");
    }
    result
}

fn last_message(result: &Value) -> Value {
    result["messages"]
        .as_array()
        .and_then(|messages| messages.last())
        .cloned()
        .unwrap_or(Value::Null)
}

/// The text parts of a UI message, joined.
fn text_of(message: &Value, kind: &str) -> String {
    message["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|part| part["type"] == kind)
        .filter_map(|part| part["text"].as_str())
        .collect()
}

fn chunk_types(response: &Value) -> Vec<String> {
    response["chunks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|chunk| chunk["type"].as_str().map(str::to_owned))
        .collect()
}

fn words(count: usize) -> (Vec<String>, String) {
    let words: Vec<String> = (0..count).map(|n| format!("w{n} ")).collect();
    let text = words.concat();
    (words, text)
}

fn paced(words: &[String], gap: Duration) -> Reply {
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    Reply::tokens(&words).pace(gap)
}

// ---- with the real SDK -----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_shows_the_exact_text_with_our_metadata() {
    let app = spawn_app().await;
    let tokens = ["Hel", "lo, ", "wörld ", "👋", "\n", "done."];
    app.upstream.push(Reply::tokens(&tokens));

    let result = sdk(&app, "chat").await;

    assert_eq!(result["error"], Value::Null, "{result}");
    assert_eq!(result["status"], "ready", "{result}");
    let answer = last_message(&result);
    assert_eq!(answer["role"], "assistant", "{result}");
    assert_eq!(text_of(&answer, "text"), tokens.concat(), "{result}");
    let response = &result["responses"][0];
    let stream_id = answer["metadata"]["streamId"].as_str().unwrap_or_default();
    assert_eq!(stream_id.len(), 32, "{answer}");
    assert_eq!(
        answer["id"],
        format!("msg-{stream_id}"),
        "a stable message id"
    );
    assert_eq!(
        answer["metadata"],
        json!({"model": "fake-model", "upstream": null, "streamId": stream_id,
               "usage": {"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16}}),
    );
    let types = chunk_types(response);
    assert_eq!(
        types[..3],
        ["start", "start-step", "text-start"],
        "{types:?}"
    );
    assert_eq!(
        types[types.len() - 3..],
        ["text-end", "finish-step", "finish"],
        "{types:?}"
    );
    assert_eq!(response["done"], true, "[DONE] closes the stream");
    let finish = response["chunks"]
        .as_array()
        .and_then(|chunks| chunks.last());
    assert_eq!(
        finish.map(|finish| &finish["finishReason"]),
        Some(&json!("stop"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasoning_reaches_the_sdk_as_its_own_part() {
    let app = spawn_app().await;
    let reasoning = |text: &str| {
        format!(
            "data: {}\n\n",
            json!({"choices": [{"index": 0, "delta": {"reasoning_content": text}, "finish_reason": null}]})
        )
    };
    app.upstream.push(Reply::sse(
        [
            reasoning("Think"),
            reasoning("ing."),
            content_chunk("The answer."),
            finish_chunk("stop"),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat(),
    ));

    let result = sdk(&app, "chat").await;

    assert_eq!(result["error"], Value::Null, "{result}");
    let answer = last_message(&result);
    assert_eq!(text_of(&answer, "reasoning"), "Thinking.", "{answer}");
    assert_eq!(text_of(&answer, "text"), "The answer.", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_calls_input_reaches_the_sdk_parsed() {
    let app = spawn_app().await;
    app.upstream
        .push(Reply::fixture("openai-parallel-tool-calls.sse"));

    let result = sdk(&app, "chat").await;

    assert_eq!(result["error"], Value::Null, "{result}");
    let answer = last_message(&result);
    let calls: Vec<(Value, Value, Value, Value)> = answer["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|part| {
            part["type"]
                .as_str()
                .is_some_and(|kind| kind.starts_with("tool-"))
        })
        .map(|part| {
            (
                part["type"].clone(),
                part["toolCallId"].clone(),
                part["state"].clone(),
                part["input"].clone(),
            )
        })
        .collect();
    assert_eq!(
        calls,
        [
            (
                json!("tool-GetWeatherArgs"),
                json!("call_JMW1whyEaYG438VE1OIflxA2"),
                json!("input-available"),
                json!({"city": "Edinburgh", "country": "GB", "units": "c"}),
            ),
            (
                json!("tool-get_stock_price"),
                json!("call_DNYTawLBoN8fj3KN6qU9N1Ou"),
                json!("input-available"),
                json!({"ticker": "AAPL", "exchange": "NASDAQ"}),
            ),
        ],
        "{answer}"
    );
    let finish = result["responses"][0]["chunks"]
        .as_array()
        .and_then(|chunks| chunks.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(finish["finishReason"], "tool-calls", "{finish}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_results_from_the_page_go_upstream_as_tool_messages() {
    let app = spawn_app().await;
    app.upstream
        .push(Reply::fixture("openai-parallel-tool-calls.sse"));
    app.upstream
        .push(Reply::tokens(&["Sunny, and AAPL is up."]));

    let result = sdk(&app, "tool-results").await;

    assert_eq!(result["error"], Value::Null, "{result}");
    let requests = app.upstream.requests();
    assert_eq!(requests.len(), 2, "the SDK sent the results by itself");
    let messages = requests[1].body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(messages.len(), 4, "{messages:?}");
    assert_eq!(
        messages[0],
        json!({"role": "user", "content": "weather and stock?"})
    );
    let calls: Vec<(Value, Value, Value)> = messages[1]["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|call| {
            let arguments = call["function"]["arguments"].as_str().unwrap_or_default();
            (
                call["id"].clone(),
                call["function"]["name"].clone(),
                serde_json::from_str(arguments).unwrap_or(Value::Null),
            )
        })
        .collect();
    assert_eq!(
        calls,
        [
            (
                json!("call_JMW1whyEaYG438VE1OIflxA2"),
                json!("GetWeatherArgs"),
                json!({"city": "Edinburgh", "country": "GB", "units": "c"}),
            ),
            (
                json!("call_DNYTawLBoN8fj3KN6qU9N1Ou"),
                json!("get_stock_price"),
                json!({"ticker": "AAPL", "exchange": "NASDAQ"}),
            ),
        ]
    );
    assert_eq!(
        messages[2..],
        [
            json!({"role": "tool", "tool_call_id": "call_JMW1whyEaYG438VE1OIflxA2",
                   "content": "{\"answered\":\"GetWeatherArgs\"}"}),
            json!({"role": "tool", "tool_call_id": "call_DNYTawLBoN8fj3KN6qU9N1Ou",
                   "content": "{\"answered\":\"get_stock_price\"}"}),
        ]
    );
    // The answer continues the assistant message that made the calls.
    let shown = result["messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(shown.len(), 2, "{result}");
    assert_eq!(text_of(&shown[1], "text"), "Sunny, and AAPL is up.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_turn_sends_the_first_answer_upstream() {
    let app = spawn_app().await;
    app.upstream.push(Reply::tokens(&["First ", "answer."]));
    app.upstream.push(Reply::tokens(&["Second."]));

    let result = sdk(&app, "two-turns").await;

    assert_eq!(result["error"], Value::Null, "{result}");
    let requests = app.upstream.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].body["messages"],
        json!([
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "First answer."},
            {"role": "user", "content": "second question"}
        ])
    );
    assert_eq!(requests[1].body["stream"], true);
    let texts: Vec<String> = result["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|message| text_of(message, "text"))
        .collect();
    assert_eq!(
        texts,
        [
            "first question",
            "First answer.",
            "second question",
            "Second."
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_goes_upstream_and_a_regenerated_answer_replaces_the_first() {
    let app = spawn_app().await;
    app.upstream.push(Reply::tokens(&["A cat."]));
    app.upstream.push(Reply::tokens(&["A small cat."]));

    let result = sdk(&app, "regenerate").await;

    assert_eq!(result["error"], Value::Null, "{result}");
    let question = json!([{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "text", "text": "what is this?"}
    ]}]);
    let requests = app.upstream.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body["messages"], question);
    assert_eq!(
        requests[1].body["messages"], question,
        "the answer being replaced is not sent"
    );
    let messages = result["messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(messages.len(), 2, "{result}");
    assert_eq!(text_of(&messages[1], "text"), "A small cat.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_ui_message_stream_builds_the_answer() {
    let app = spawn_app().await;
    app.upstream.push(Reply::tokens(&["Read ", "me."]));

    let result = sdk(&app, "read").await;

    assert_eq!(result["error"], Value::Null, "{result}");
    assert_eq!(text_of(&result["read"], "text"), "Read me.", "{result}");
    assert_eq!(result["read"]["role"], "assistant", "{result}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_answer_resumes_whole_without_doubling_on_one_upstream_request() {
    let app = spawn_app_with(&[GRACE]).await;
    let (words, text) = words(40);
    app.upstream.push(paced(&words, Duration::from_millis(25)));

    let result = sdk(&app, "resume").await;

    assert_eq!(result["error"], Value::Null, "{result}");
    assert_eq!(
        result["status_after_break"], "error",
        "the break was seen: {result}"
    );
    assert!(
        text.starts_with(result["text_after_break"].as_str().unwrap_or("-")),
        "{result}"
    );
    let messages = result["messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(messages.len(), 2, "one question, one answer: {result}");
    assert_eq!(
        text_of(&messages[1], "text"),
        text,
        "nothing doubled, nothing lost"
    );
    assert_eq!(result["status"], "ready", "{result}");
    let resumed = &result["responses"][1];
    assert_eq!(resumed["method"], "GET", "{resumed}");
    assert_eq!(resumed["status"], 200, "{resumed}");
    assert_eq!(resumed["done"], true, "{resumed}");
    assert_eq!(
        chunk_types(resumed)[0],
        "start",
        "replayed from the first part"
    );
    assert_eq!(app.upstream.requests().len(), 1, "paid for once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_with_nothing_to_resume_gets_204_and_stays_empty() {
    let app = spawn_app().await;

    let result = sdk(&app, "resume-none").await;

    assert_eq!(result["error"], Value::Null, "{result}");
    assert_eq!(result["status"], "ready", "{result}");
    assert_eq!(result["messages"], json!([]), "{result}");
    assert_eq!(result["responses"][0]["status"], 204, "{result}");
    assert!(app.upstream.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_the_generation_and_drops_the_upstream_request() {
    // A grace long enough that only the DELETE can end the generation.
    let app = spawn_app_with(&[GRACE]).await;
    let (words, _) = words(400);
    app.upstream.push(paced(&words, Duration::from_millis(20)));

    let script = run(&app, "stop").await;
    let result = script.result.clone();

    assert_eq!(result["error"], Value::Null, "{result}");
    assert_eq!(result["delete_status"], 204, "{result}");
    let dropped = app.upstream.wait_dropped(1, Duration::from_secs(10)).await;
    script.finish().await;
    assert!(dropped, "the DELETE should drop the upstream request");
    assert!(
        !text_of(&last_message(&result), "text").is_empty(),
        "{result}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_failure_surfaces_as_the_sdks_error() {
    // Refused before the stream: the transport raises our JSON error.
    let app = spawn_app().await;
    app.upstream.push(Reply::status(
        500,
        json!({"error": {"message": "The server had an error", "type": "server_error"}}),
    ));
    let result = sdk(&app, "chat").await;
    assert_eq!(result["status"], "error", "{result}");
    let message = result["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("The server had an error"), "{result}");

    // Broken off inside the stream: an `error` part, never a finish.
    let app = spawn_app().await;
    let error = json!({"error": {"message": "overloaded midway", "type": "server_error"}});
    app.upstream.push(Reply::sse(
        [content_chunk("so far"), format!("data: {error}\n\n")].concat(),
    ));
    let result = sdk(&app, "chat").await;
    assert_eq!(result["status"], "error", "{result}");
    let message = result["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("overloaded midway"), "{result}");
    assert_eq!(
        text_of(&last_message(&result), "text"),
        "so far",
        "{result}"
    );
    let types = chunk_types(&result["responses"][0]);
    assert_eq!(types.last().map(String::as_str), Some("error"), "{types:?}");
    assert!(!types.iter().any(|kind| kind == "finish"), "{types:?}");
}

// ---- over HTTP -------------------------------------------------------------

fn body(chat_id: &str, text: &str) -> Value {
    json!({
        "id": chat_id,
        "trigger": "submit-message",
        "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}],
    })
}

async fn post(app: &TestApp, body: &Value, key: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/api/ui/chat"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request
        .send()
        .await
        .unwrap_or_else(|error| panic!("POST /api/ui/chat: {error}"))
}

async fn on_stream(
    app: &TestApp,
    method: reqwest::Method,
    chat_id: &str,
    key: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .request(method, app.url(&format!("/api/ui/chat/{chat_id}/stream")));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request
        .send()
        .await
        .unwrap_or_else(|error| panic!("/api/ui/chat/{chat_id}/stream: {error}"))
}

/// The parts of a UI message stream, each as JSON (`[DONE]` as a string).
fn parts(transcript: &Transcript) -> Vec<Value> {
    transcript
        .frames
        .iter()
        .filter_map(|frame| frame.data.as_deref())
        .map(|data| serde_json::from_str(data).unwrap_or_else(|_| json!(data)))
        .collect()
}

/// Reads until `count` text deltas arrived, then drops the connection.
async fn read_deltas_then_drop(mut response: reqwest::Response, count: usize) {
    let mut text = String::new();
    while text.matches(r#""type":"text-delta""#).count() < count {
        match tokio::time::timeout(Duration::from_secs(10), response.chunk()).await {
            Ok(Ok(Some(piece))) => text.push_str(&String::from_utf8_lossy(&piece)),
            other => panic!("the stream ended early: {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_answer_is_a_ui_message_stream_with_its_headers() {
    let app = spawn_app().await;
    app.upstream.push(Reply::tokens(&["Hi", "!"]));

    let transcript = Transcript::read(post(&app, &body("c1", "hello"), None).await).await;

    assert_eq!(transcript.status, 200);
    assert_eq!(
        transcript.header("x-vercel-ai-ui-message-stream"),
        Some("v1")
    );
    assert_eq!(
        transcript.header("content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    assert_eq!(
        transcript.header("cache-control"),
        Some("no-cache, no-transform")
    );
    let stream_id = transcript
        .header("x-stream-id")
        .unwrap_or_default()
        .to_owned();
    let metadata = json!({"model": "fake-model", "upstream": null, "streamId": stream_id});
    let mut finished = metadata.clone();
    finished["usage"] = json!({"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12});
    assert_eq!(
        parts(&transcript),
        [
            json!({"type": "start", "messageId": format!("msg-{stream_id}"), "messageMetadata": metadata}),
            json!({"type": "start-step"}),
            json!({"type": "text-start", "id": "text-0"}),
            json!({"type": "text-delta", "id": "text-0", "delta": "Hi"}),
            json!({"type": "text-delta", "id": "text-0", "delta": "!"}),
            json!({"type": "text-end", "id": "text-0"}),
            json!({"type": "finish-step"}),
            json!({"type": "finish", "finishReason": "stop", "messageMetadata": finished}),
            json!("[DONE]"),
        ]
    );
    assert_eq!(
        app.upstream.requests()[0].body["messages"],
        json!([{"role": "user", "content": "hello"}])
    );
}

#[tokio::test]
async fn bad_bodies_are_400_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        (json!({"messages": []}), "`id`"),
        (
            json!({"id": "c", "messages": [{"role": "user", "parts": [{"type": "text"}]}]}),
            "`messages[0].parts[0].text`",
        ),
        (
            json!({"id": "c", "trigger": "later", "messages": []}),
            "`trigger`",
        ),
    ];
    for (bad, field) in cases {
        let response = post(&app, &bad, None).await;
        assert_eq!(response.status(), 400, "{bad}");
        let error = json_body(response).await;
        assert_eq!(error["error"]["code"], "invalid_request", "{error}");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{bad}: {message}");
    }
    assert!(
        app.upstream.requests().is_empty(),
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn a_resume_replays_from_the_first_part_and_then_there_is_nothing_left() {
    let app = spawn_app_with(&[GRACE]).await;
    let (words, text) = words(30);
    app.upstream.push(paced(&words, Duration::from_millis(20)));

    // Never started: nothing to resume.
    assert_eq!(
        on_stream(&app, reqwest::Method::GET, "c2", None)
            .await
            .status(),
        204
    );
    let first = post(&app, &body("c2", "count"), None).await;
    let stream_id = stream_id_of(&first);
    read_deltas_then_drop(first, 3).await;

    let resumed = Transcript::read(on_stream(&app, reqwest::Method::GET, "c2", None).await).await;

    assert_eq!(resumed.status, 200);
    assert_eq!(resumed.header("x-vercel-ai-ui-message-stream"), Some("v1"));
    let parts = parts(&resumed);
    assert_eq!(
        parts[0]["messageId"],
        format!("msg-{stream_id}"),
        "the same message"
    );
    let replayed: String = parts
        .iter()
        .filter(|part| part["type"] == "text-delta")
        .filter_map(|part| part["delta"].as_str())
        .collect();
    assert_eq!(replayed, text, "from the first part to the last");
    assert_eq!(parts.last(), Some(&json!("[DONE]")));
    // Read to its end: a reloaded page has nothing to resume.
    assert_eq!(
        on_stream(&app, reqwest::Method::GET, "c2", None)
            .await
            .status(),
        204
    );
    assert_eq!(app.upstream.requests().len(), 1, "paid for once");
}

#[tokio::test]
async fn a_finished_answer_nobody_read_to_the_end_is_still_replayed() {
    let app = spawn_app_with(&[GRACE]).await;
    let (words, text) = words(5);
    app.upstream.push(paced(&words, Duration::from_millis(50)));

    let first = post(&app, &body("c3", "count"), None).await;
    let stream_id = stream_id_of(&first);
    read_deltas_then_drop(first, 1).await;
    // The generation goes on without its client, to its finish; reading it
    // on `/api/chat` waits for that without reading the chat's answer.
    let whole = Transcript::read(app.get(&format!("/api/chat/{stream_id}/events")).await).await;
    assert_eq!(whole.terminal()[0]["type"], "finish");

    let resumed = Transcript::read(on_stream(&app, reqwest::Method::GET, "c3", None).await).await;
    let replayed: String = parts(&resumed)
        .iter()
        .filter(|part| part["type"] == "text-delta")
        .filter_map(|part| part["delta"].as_str())
        .collect();
    assert_eq!(replayed, text);
}

#[tokio::test]
async fn chats_are_scoped_by_key() {
    let app = spawn_app_with(&[GRACE, ("PROXY_API_KEYS", "key-a,key-b")]).await;
    let (words, _) = words(400);
    app.upstream.push(paced(&words, Duration::from_millis(20)));
    let first = post(&app, &body("shared-name", "count"), Some("key-a")).await;
    assert_eq!(first.status(), 200);
    read_deltas_then_drop(first, 1).await;

    let other = on_stream(&app, reqwest::Method::GET, "shared-name", Some("key-b")).await;
    assert_eq!(other.status(), 204, "another key has no such chat");
    let other = on_stream(&app, reqwest::Method::DELETE, "shared-name", Some("key-b")).await;
    assert_eq!(other.status(), 404);
    let error = json_body(other).await;
    assert_eq!(error["error"]["code"], "not_found", "{error}");
    let none = on_stream(&app, reqwest::Method::GET, "shared-name", None).await;
    assert_eq!(none.status(), 401);

    let stop = on_stream(&app, reqwest::Method::DELETE, "shared-name", Some("key-a")).await;
    assert_eq!(stop.status(), 204);
    assert!(app.upstream.wait_dropped(1, Duration::from_secs(10)).await);
    let unknown = on_stream(&app, reqwest::Method::DELETE, "never-was", Some("key-a")).await;
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn head_never_attaches_and_unknown_chats_have_nothing_to_stop() {
    let app = spawn_app().await;

    let head = on_stream(&app, reqwest::Method::HEAD, "c4", None).await;
    let stop = on_stream(&app, reqwest::Method::DELETE, "c4", None).await;

    assert_eq!(head.status(), 405);
    assert_eq!(
        head.headers()
            .get("allow")
            .and_then(|value| value.to_str().ok()),
        Some("GET, DELETE")
    );
    assert_eq!(stop.status(), 404);
    let error = json_body(stop).await;
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("chat `c4`")),
        "{error}"
    );
}

#[tokio::test]
async fn a_new_answer_is_the_one_a_chat_resumes() {
    let app = spawn_app_with(&[GRACE]).await;
    app.upstream.push(Reply::tokens(&["first"]));
    let (words, text) = words(10);
    app.upstream.push(paced(&words, Duration::from_millis(20)));

    // The first answer read to its end, then a second one left behind.
    let first = Transcript::read(post(&app, &body("c5", "one"), None).await).await;
    assert_eq!(first.status, 200);
    let second = post(&app, &body("c5", "two"), None).await;
    let second_id = stream_id_of(&second);
    read_deltas_then_drop(second, 1).await;

    let resumed = Transcript::read(on_stream(&app, reqwest::Method::GET, "c5", None).await).await;

    assert_eq!(
        resumed.status, 200,
        "the second answer was not read to its end"
    );
    assert_eq!(resumed.header("x-stream-id"), Some(second_id.as_str()));
    let replayed: String = parts(&resumed)
        .iter()
        .filter(|part| part["type"] == "text-delta")
        .filter_map(|part| part["delta"].as_str())
        .collect();
    assert_eq!(replayed, text);
}
