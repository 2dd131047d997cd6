//! Native upstream dialects (SPEC §10) through the whole proxy: an upstream's
//! `kind` makes tokenrelay speak Anthropic's, Gemini's or the Responses API's
//! own protocol, and every client surface sees the same events whichever
//! kind answered. The fake upstream speaks each dialect for real
//! (`dialects.rs`) and records what it was sent, so these tests check both
//! directions: the request in the provider's shape, with our key only where
//! the provider expects it, and the provider's stream as our events.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::corpus::{Extracted, ToolCall, extract, side_by_side};
use crate::dialects::{End, PROMPT_TOKENS, Speaks, Step};
use crate::fake_upstream::{Chunking, FakeUpstream, Recorded, Reply};
use crate::helpers::{TestApp, Transcript, json_body, spawn_app_with};
use crate::openai::{accumulate, post_v1};
use crate::routing::configured;

/// What every kind is asked to answer: a thought, text in two pieces, and
/// two tool calls, one with its arguments in fragments.
const SCRIPT: [Step; 5] = [
    Step::Thought("Let me think."),
    Step::Text("Hel"),
    Step::Text("lo"),
    Step::Call {
        id: "call_1",
        name: "get_weather",
        arguments: &["{\"city\":", "\"Paris\"}"],
    },
    Step::Call {
        id: "call_2",
        name: "get_time",
        arguments: &["{}"],
    },
];

const KEY: &str = "sk-native-test-key-0123456789abcdef";

/// A proxy whose one upstream speaks `speaks`.
async fn app_speaking(speaks: Speaks) -> TestApp {
    spawn_app_with(&[
        ("UPSTREAM_KIND", speaks.kind()),
        ("UPSTREAM_API_KEY", KEY),
        ("DEFAULT_MODEL", "native-model"),
    ])
    .await
}

/// What a client accumulated from the script's answer.
fn scripted() -> Extracted {
    Extracted {
        content: "Hello".to_owned(),
        reasoning: "Let me think.".to_owned(),
        tool_calls: BTreeMap::from([
            (
                0,
                ToolCall {
                    id: Some("call_1".to_owned()),
                    name: Some("get_weather".to_owned()),
                    arguments: "{\"city\":\"Paris\"}".to_owned(),
                },
            ),
            (
                1,
                ToolCall {
                    id: Some("call_2".to_owned()),
                    name: Some("get_time".to_owned()),
                    arguments: "{}".to_owned(),
                },
            ),
        ]),
        ..Extracted::default()
    }
}

/// The three OpenAI counts of a usage object.
fn counts(usage: &Value) -> Value {
    json!({
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "total_tokens": usage["total_tokens"],
    })
}

fn chat_requests(upstream: &FakeUpstream) -> Vec<Recorded> {
    upstream
        .requests()
        .into_iter()
        .filter(|request| request.method == "POST")
        .collect()
}

#[tokio::test]
async fn every_kind_streams_thinking_text_and_tool_calls_as_the_same_events() {
    for speaks in Speaks::ALL {
        // Arrange
        let app = app_speaking(speaks).await;
        app.upstream
            .push(Reply::answer(speaks, &SCRIPT, End::Done).pace(Duration::from_millis(5)));

        // Act
        let transcript = app
            .chat(&json!({"prompt": "Weather and time in Paris?"}))
            .await;

        // Assert
        let events = transcript.events();
        assert_eq!(events[0]["type"], "start", "{speaks:?}");
        assert_eq!(
            extract(&events).get(&0),
            Some(&scripted()),
            "{speaks:?}: {events:#?}"
        );
        let [finish] = transcript
            .terminal()
            .try_into()
            .unwrap_or_else(|terminal: Vec<Value>| {
                panic!("{speaks:?}: expected one terminal event, got {terminal:?}")
            });
        assert_eq!(
            finish["finish_reason"], "tool_calls",
            "{speaks:?}: {finish}"
        );
        assert_eq!(
            counts(&finish["usage"]),
            json!({"prompt_tokens": PROMPT_TOKENS, "completion_tokens": 5, "total_tokens": PROMPT_TOKENS + 5}),
            "{speaks:?}: {finish}"
        );
        if speaks != Speaks::OpenAi {
            assert!(
                finish["usage"]["raw"].is_object(),
                "{speaks:?}: the provider's own usage is kept under raw: {finish}"
            );
        }
        assert!(transcript.ends_with_done(), "{speaks:?}");
        let sent = chat_requests(&app.upstream);
        assert_eq!(sent.len(), 1, "{speaks:?}");
        assert_eq!(sent[0].path, speaks.chat_path("native-model"), "{speaks:?}");
    }
}

#[tokio::test]
async fn every_kind_reports_its_stop_reasons_as_ours() {
    let cases = [
        (Speaks::OpenAi, "length", "length"),
        (Speaks::OpenAi, "content_filter", "content_filter"),
        (Speaks::Anthropic, "max_tokens", "length"),
        (Speaks::Anthropic, "stop_sequence", "stop"),
        (Speaks::Anthropic, "refusal", "content_filter"),
        (Speaks::Gemini, "MAX_TOKENS", "length"),
        (Speaks::Gemini, "SAFETY", "content_filter"),
        (Speaks::Gemini, "RECITATION", "content_filter"),
        (Speaks::Responses, "max_output_tokens", "length"),
        (Speaks::Responses, "content_filter", "content_filter"),
    ];
    let outcomes = join_all(cases.iter().map(|&(speaks, theirs, _)| async move {
        let app = app_speaking(speaks).await;
        app.upstream.push(Reply::answer(
            speaks,
            &[Step::Text("Partial")],
            End::Stopped(theirs),
        ));
        app.chat(&json!({"prompt": "go"})).await
    }))
    .await;
    for (&(speaks, theirs, ours), transcript) in cases.iter().zip(outcomes) {
        assert_eq!(
            transcript.text_of("token"),
            "Partial",
            "{speaks:?} {theirs}"
        );
        let terminal = transcript.terminal();
        assert_eq!(
            terminal
                .iter()
                .map(|event| event["finish_reason"].clone())
                .collect::<Vec<_>>(),
            [json!(ours)],
            "{speaks:?} {theirs}: {terminal:?}"
        );
    }
}

#[tokio::test]
async fn a_native_stream_that_breaks_off_or_fails_never_looks_complete() {
    let endings = [
        (End::Cut, "upstream_disconnected", ""),
        (
            End::Failed("Overloaded right now"),
            "upstream_error",
            "Overloaded right now",
        ),
    ];
    for speaks in Speaks::ALL {
        for (end, code, message) in endings {
            // Arrange
            let app = app_speaking(speaks).await;
            app.upstream
                .push(Reply::answer(speaks, &[Step::Text("Half an ans")], end));

            // Act
            let transcript = app.chat(&json!({"prompt": "go"})).await;

            // Assert
            assert_eq!(
                transcript.text_of("token"),
                "Half an ans",
                "{speaks:?} {end:?}"
            );
            let terminal = transcript.terminal();
            let [error] = terminal.as_slice() else {
                panic!("{speaks:?} {end:?}: expected one terminal event, got {terminal:?}");
            };
            assert_eq!(error["type"], "error", "{speaks:?} {end:?}: {error}");
            assert_eq!(error["code"], code, "{speaks:?} {end:?}: {error}");
            assert!(
                error["message"]
                    .as_str()
                    .is_some_and(|text| text.contains(message)),
                "{speaks:?} {end:?}: {error}"
            );
            assert!(transcript.ends_with_done(), "{speaks:?} {end:?}");
        }
    }
}

#[tokio::test]
async fn the_openai_surface_serves_every_kind_streaming_and_not() {
    for speaks in Speaks::ALL {
        // Arrange
        let app = app_speaking(speaks).await;
        app.upstream.push(Reply::answer(speaks, &SCRIPT, End::Done));
        app.upstream.push(Reply::answer(speaks, &SCRIPT, End::Done));
        let request =
            json!({"model": "native-model", "messages": [{"role": "user", "content": "hi"}]});

        // Act
        let streamed = Transcript::read(
            post_v1(
                &app,
                &json!({"model": "native-model", "messages": request["messages"], "stream": true,
                        "stream_options": {"include_usage": true}}),
            )
            .await,
        )
        .await;
        let whole = post_v1(&app, &request).await;
        let status = whole.status();
        let whole = json_body(whole).await;

        // Assert
        let (choices, finish_reasons, usage) = accumulate(&streamed.events());
        let want = scripted();
        let got = choices.get(&0);
        assert_eq!(
            got.map(|choice| &choice.content),
            Some(&want.content),
            "{speaks:?}"
        );
        assert_eq!(
            got.map(|choice| &choice.tool_calls),
            Some(&want.tool_calls),
            "{speaks:?}"
        );
        assert_eq!(
            finish_reasons.get(&0).map(String::as_str),
            Some("tool_calls"),
            "{speaks:?}"
        );
        assert_eq!(
            usage.last().map(counts),
            Some(
                json!({"prompt_tokens": PROMPT_TOKENS, "completion_tokens": 5, "total_tokens": PROMPT_TOKENS + 5})
            ),
            "{speaks:?}: {usage:?}"
        );
        assert!(streamed.ends_with_done(), "{speaks:?}");

        assert_eq!(status, 200, "{speaks:?}: {whole}");
        let message = &whole["choices"][0]["message"];
        assert_eq!(message["content"], "Hello", "{speaks:?}: {whole}");
        assert_eq!(
            whole["choices"][0]["finish_reason"], "tool_calls",
            "{speaks:?}"
        );
        let calls: Vec<(Value, Value, Value)> = message["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|call| {
                (
                    call["id"].clone(),
                    call["function"]["name"].clone(),
                    call["function"]["arguments"].clone(),
                )
            })
            .collect();
        assert_eq!(
            calls,
            [
                (
                    json!("call_1"),
                    json!("get_weather"),
                    json!("{\"city\":\"Paris\"}")
                ),
                (json!("call_2"), json!("get_time"), json!("{}")),
            ],
            "{speaks:?}: {whole}"
        );
        assert_eq!(whole["usage"]["prompt_tokens"], PROMPT_TOKENS, "{speaks:?}");
    }
}

/// A conversation with everything a request can hold: a system prompt, an
/// image, an earlier tool call answered by a tool, tools and their choice,
/// and the sampling settings.
fn rich_request() -> Value {
    json!({
        "model": "native-model",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this picture, and the weather there?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_7", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_7", "content": "{\"sky\":\"clear\"}"},
            {"role": "user", "content": "And tomorrow?"}
        ],
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        }}],
        "tool_choice": "auto",
        "max_tokens": 300,
        "temperature": 0.3,
        "top_p": 0.9,
    })
}

#[tokio::test]
async fn each_kind_is_sent_the_request_in_its_own_shape_with_the_key_only_where_it_belongs() {
    for speaks in Speaks::ALL {
        // Arrange
        let app = app_speaking(speaks).await;
        app.upstream
            .push(Reply::answer(speaks, &[Step::Text("ok")], End::Done));
        let mut request = rich_request();
        if speaks != Speaks::Responses {
            // The Responses API has no stop sequences (a request with them is refused).
            request["stop"] = json!(["END"]);
        }

        // Act
        let transcript = app.chat(&request).await;

        // Assert
        assert_eq!(
            transcript.text_of("token"),
            "ok",
            "{speaks:?}: {:?}",
            transcript.events()
        );
        let sent = chat_requests(&app.upstream);
        let [sent] = sent.as_slice() else {
            panic!("{speaks:?}: expected one request, got {sent:?}");
        };
        let body = &sent.body;
        let (auth_header, auth_value) = match speaks {
            Speaks::OpenAi | Speaks::Responses => ("authorization", format!("Bearer {KEY}")),
            Speaks::Anthropic => ("x-api-key", KEY.to_owned()),
            Speaks::Gemini => ("x-goog-api-key", KEY.to_owned()),
        };
        assert_eq!(
            sent.header(auth_header),
            Some(auth_value.as_str()),
            "{speaks:?}"
        );
        for (name, value) in &sent.headers {
            if name.as_str() != auth_header {
                assert!(
                    !String::from_utf8_lossy(value.as_bytes()).contains(KEY),
                    "{speaks:?}: the key is in header {name}"
                );
            }
        }
        assert!(
            !body.to_string().contains(KEY),
            "{speaks:?}: the key is in the body"
        );
        assert!(
            !sent.query.as_deref().unwrap_or_default().contains(KEY),
            "{speaks:?}: the key is in the query"
        );
        match speaks {
            Speaks::OpenAi => {
                assert_eq!(body["messages"], rich_request()["messages"], "{body}");
                assert_eq!(body["stream"], true);
            }
            Speaks::Anthropic => assert_anthropic_shape(sent),
            Speaks::Gemini => assert_gemini_shape(sent),
            Speaks::Responses => assert_responses_shape(sent),
        }
    }
}

fn assert_anthropic_shape(sent: &Recorded) {
    let body = &sent.body;
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(body["model"], "native-model", "{body}");
    assert_eq!(body["stream"], true, "{body}");
    assert_eq!(body["max_tokens"], 300, "{body}");
    assert_eq!(body["system"], "You are terse.", "{body}");
    assert_eq!(body["temperature"], 0.3, "{body}");
    assert_eq!(body["top_p"], 0.9, "{body}");
    assert_eq!(body["stop_sequences"], json!(["END"]), "{body}");
    let roles: Vec<&str> = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|message| message["role"].as_str())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user"], "{body}");
    let blocks = |index: usize| {
        body["messages"][index]["content"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    assert!(
        blocks(0).iter().any(|block| block["type"] == "image"
            && block["source"]
                == json!({"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="})),
        "{body}"
    );
    assert!(
        blocks(1).iter().any(|block| block["type"] == "tool_use"
            && block["id"] == "call_7"
            && block["input"] == json!({"city": "Oslo"})),
        "{body}"
    );
    assert!(
        blocks(2)
            .iter()
            .any(|block| block["type"] == "tool_result" && block["tool_use_id"] == "call_7"),
        "{body}"
    );
    assert_eq!(body["tools"][0]["name"], "get_weather", "{body}");
    assert_eq!(
        body["tools"][0]["input_schema"]["properties"]["city"]["type"], "string",
        "{body}"
    );
    assert!(
        body.get("messages").is_some() && body.get("tool_choice").is_some(),
        "{body}"
    );
}

fn assert_gemini_shape(sent: &Recorded) {
    let body = &sent.body;
    assert_eq!(sent.query.as_deref(), Some("alt=sse"));
    assert_eq!(
        body["systemInstruction"]["parts"][0]["text"], "You are terse.",
        "{body}"
    );
    let roles: Vec<&str> = body["contents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|content| content["role"].as_str())
        .collect();
    assert_eq!(roles, ["user", "model", "user"], "{body}");
    let parts = |index: usize| {
        body["contents"][index]["parts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    assert!(
        parts(0)
            .iter()
            .any(|part| part["inlineData"]
                == json!({"mimeType": "image/png", "data": "iVBORw0KGgo="})),
        "{body}"
    );
    assert!(
        parts(1)
            .iter()
            .any(|part| part["functionCall"]["name"] == "get_weather"
                && part["functionCall"]["args"] == json!({"city": "Oslo"})),
        "{body}"
    );
    assert!(
        parts(2)
            .iter()
            .any(|part| part["functionResponse"]["name"] == "get_weather"),
        "{body}"
    );
    assert_eq!(
        body["tools"][0]["functionDeclarations"][0]["name"], "get_weather",
        "{body}"
    );
    let config = &body["generationConfig"];
    assert_eq!(config["maxOutputTokens"], 300, "{body}");
    assert_eq!(config["temperature"], 0.3, "{body}");
    assert_eq!(config["topP"], 0.9, "{body}");
    assert_eq!(config["stopSequences"], json!(["END"]), "{body}");
    assert!(
        body.get("model").is_none(),
        "the model is in the path: {body}"
    );
}

fn assert_responses_shape(sent: &Recorded) {
    let body = &sent.body;
    assert_eq!(body["model"], "native-model", "{body}");
    assert_eq!(body["stream"], true, "{body}");
    assert_eq!(body["instructions"], "You are terse.", "{body}");
    assert_eq!(body["max_output_tokens"], 300, "{body}");
    assert_eq!(body["temperature"], 0.3, "{body}");
    let items = body["input"].as_array().cloned().unwrap_or_default();
    assert!(
        items.iter().any(|item| item["role"] == "user"
            && item["content"]
                .as_array()
                .is_some_and(|parts| parts.iter().any(|part| part["type"] == "input_image"))),
        "{body}"
    );
    assert!(
        items.iter().any(|item| item["type"] == "function_call"
            && item["call_id"] == "call_7"
            && item["name"] == "get_weather"),
        "{body}"
    );
    assert!(
        items
            .iter()
            .any(|item| item["type"] == "function_call_output"
                && item["call_id"] == "call_7"
                && item["output"] == "{\"sky\":\"clear\"}"),
        "{body}"
    );
    assert_eq!(body["tools"][0]["type"], "function", "{body}");
    assert_eq!(body["tools"][0]["name"], "get_weather", "{body}");
    assert!(body.get("messages").is_none(), "{body}");
}

#[tokio::test]
async fn provider_error_bodies_are_answered_with_the_provider_s_message() {
    let cases = [
        (
            Speaks::Anthropic,
            529,
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            "Overloaded",
        ),
        (
            Speaks::Anthropic,
            401,
            json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}),
            "invalid x-api-key",
        ),
        (
            Speaks::Gemini,
            400,
            json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT"}}),
            "API key not valid",
        ),
        (
            Speaks::Gemini,
            503,
            json!([{"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}]),
            "The model is overloaded.",
        ),
        (
            Speaks::Responses,
            429,
            json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}),
            "Rate limit reached",
        ),
    ];
    for (speaks, status, body, message) in cases {
        // Arrange
        let app = app_speaking(speaks).await;
        app.upstream.push(Reply::status(status, body.clone()));

        // Act
        let response = app.post_chat(&json!({"prompt": "hi"})).await;
        let answered = response.status();
        let error = json_body(response).await;

        // Assert
        assert_eq!(answered, 502, "{speaks:?} {status}: {error}");
        assert_eq!(
            error["error"]["code"], "upstream_error",
            "{speaks:?} {status}: {error}"
        );
        let text = error["error"]["message"].as_str().unwrap_or_default();
        assert!(
            text.contains(message) && text.contains(&status.to_string()),
            "{speaks:?} {status}: {error}"
        );
    }
}

#[tokio::test]
async fn failover_moves_from_a_refusing_native_upstream_to_another_kind() {
    // Arrange
    let gemini = FakeUpstream::start().await;
    gemini.push(Reply::answer(
        Speaks::Gemini,
        &[Step::Text("from gemini")],
        End::Done,
    ));
    let claude = FakeUpstream::start().await;
    let file = format!(
        "[upstreams.claude]\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key = \"a-key\"\n\n\
         [upstreams.gem]\nkind = \"gemini\"\nbase_url = \"{}\"\napi_key = \"g-key\"\n\n\
         [models.chat]\ntargets = [\"claude/claude-x\", \"gem/gemini-x\"]\n",
        claude.base_url(),
        gemini.base_url()
    );
    let app = configured(claude, "native-failover", &file, &[]).await;
    app.upstream.push(Reply::status(
        529,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ));

    // Act
    let transcript = app.chat(&json!({"model": "chat", "prompt": "hi"})).await;

    // Assert
    assert_eq!(transcript.text_of("token"), "from gemini");
    let events = transcript.events();
    assert_eq!(events[0]["upstream"], "gem", "{events:?}");
    assert_eq!(events[0]["model"], "gemini-x", "{events:?}");
    assert_eq!(chat_requests(&app.upstream)[0].path, "/v1/messages");
    assert_eq!(
        chat_requests(&gemini)[0].path,
        "/v1/models/gemini-x:streamGenerateContent"
    );
}

#[tokio::test]
async fn v1_models_lists_what_native_upstreams_list() {
    let cases = [
        (
            Speaks::Anthropic,
            json!({"data": [{"type": "model", "id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5", "created_at": "2025-09-29T00:00:00Z"}], "has_more": false}),
            "claude-sonnet-4-5",
        ),
        (
            Speaks::Gemini,
            json!({"models": [
                {"name": "models/gemini-2.5-flash", "supportedGenerationMethods": ["generateContent"]},
                {"name": "models/embedding-001", "supportedGenerationMethods": ["embedContent"]}
            ]}),
            "gemini-2.5-flash",
        ),
    ];
    for (speaks, list, id) in cases {
        // Arrange
        let app = app_speaking(speaks).await;
        app.upstream.set_models(Reply::status(200, list));

        // Act
        let response = app.get("/v1/models").await;
        let status = response.status();
        let models = json_body(response).await;

        // Assert
        assert_eq!(status, 200, "{speaks:?}: {models}");
        let ids: Vec<&str> = models["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|model| model["id"].as_str())
            .collect();
        assert_eq!(ids, [id], "{speaks:?}: {models}");
        assert_eq!(models["object"], "list", "{speaks:?}");
        let asked = app.upstream.requests();
        assert!(
            asked.iter().any(|request| request.method == "GET"
                && request.path == "/v1/models"
                && request.header(match speaks {
                    Speaks::Anthropic => "x-api-key",
                    _ => "x-goog-api-key",
                }) == Some(KEY)),
            "{speaks:?}: {asked:?}"
        );
    }
}

// ---- The recorded native streams ------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_recordings_come_out_right_whole_in_one_byte_pieces_and_in_random_pieces() {
    let chunkings = [
        Chunking::Whole,
        Chunking::Bytes(1),
        Chunking::Random { seed: 5, max: 9 },
        Chunking::Random { seed: 17, max: 300 },
    ];
    let recordings = native_recordings();
    assert_eq!(recordings.len(), 8, "the eight native recordings");
    let replays = side_by_side(recordings.iter().flat_map(|(file, speaks, entry)| {
        chunkings.iter().map(move |&chunking| async move {
            let app = app_speaking(*speaks).await;
            app.upstream.push(Reply::fixture(file).chunked(chunking));
            let transcript = tokio::time::timeout(
                crate::corpus::REPLAY_LIMIT,
                app.chat(&json!({"prompt": "replay"})),
            )
            .await
            .unwrap_or_else(|_| panic!("{file} ({chunking:?}): the stream did not end"));
            (file, chunking, entry, transcript)
        })
    }))
    .await;
    let mut problems = Vec::new();
    for (file, chunking, entry, transcript) in replays {
        let (want, finish, usage) = expected_of(entry);
        let events = transcript.events();
        let got = extract(&events).remove(&0).unwrap_or_default();
        if got != want {
            problems.push(format!(
                "{file} ({chunking:?}): expected {want:#?}\n  but the client saw {got:#?}"
            ));
        }
        let terminal = transcript.terminal();
        let seen = terminal
            .first()
            .map(|last| (last["finish_reason"].clone(), counts(&last["usage"])));
        if terminal.len() != 1 || seen != Some((json!(finish), usage.clone())) {
            problems.push(format!(
                "{file} ({chunking:?}): expected finish {finish} with {usage}, got {terminal:?}"
            ));
        }
        if !transcript.ends_with_done() {
            problems.push(format!("{file} ({chunking:?}): no [DONE]"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The Anthropic, Gemini and Responses-API recordings, each with the kind
/// that speaks it and its entry in expected.json.
fn native_recordings() -> Vec<(String, Speaks, Value)> {
    let all: BTreeMap<String, Value> =
        serde_json::from_str(crate::corpus::EXPECTED).unwrap_or_else(|error| panic!("{error}"));
    all.into_iter()
        .filter_map(|(file, entry)| {
            let speaks = match entry["format"].as_str() {
                Some("anthropic") => Speaks::Anthropic,
                Some("gemini") => Speaks::Gemini,
                Some("responses") => Speaks::Responses,
                _ => return None,
            };
            Some((file, speaks, entry))
        })
        .collect()
}

/// What a client must accumulate from a native recording, its finish
/// reason and its usage counts, read from expected.json in the recording's
/// own terms.
fn expected_of(entry: &Value) -> (Extracted, &'static str, Value) {
    let expected = &entry["expected"];
    let number = |value: &Value| value.as_u64().unwrap_or(0);
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    let usage = |prompt: u64, completion: u64| json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion});
    match entry["format"].as_str() {
        Some("anthropic") => {
            let mut want = Extracted::default();
            let mut calls = 0;
            for block in expected["blocks"].as_array().into_iter().flatten() {
                match block["type"].as_str() {
                    Some("text") => want.content += &text(&block["text"]),
                    Some("thinking") => want.reasoning += &text(&block["thinking"]),
                    Some("tool_use") => {
                        want.tool_calls.insert(
                            calls,
                            ToolCall {
                                id: block["id"].as_str().map(str::to_owned),
                                name: block["name"].as_str().map(str::to_owned),
                                arguments: text(&block["input_json"]),
                            },
                        );
                        calls += 1;
                    }
                    _ => {}
                }
            }
            let finish = match expected["stop_reason"].as_str() {
                Some("tool_use") => "tool_calls",
                Some("max_tokens") => "length",
                _ => "stop",
            };
            let start = &expected["usage_message_start"];
            let prompt = number(&start["input_tokens"])
                + number(&start["cache_creation_input_tokens"])
                + number(&start["cache_read_input_tokens"]);
            let completion = number(&expected["usage_message_delta"]["output_tokens"]);
            (want, finish, usage(prompt, completion))
        }
        Some("gemini") => {
            let metadata = &expected["usageMetadata"];
            let want = Extracted {
                content: text(&expected["text"]),
                reasoning: text(&expected["thought_text"]),
                ..Extracted::default()
            };
            let completion =
                number(&metadata["candidatesTokenCount"]) + number(&metadata["thoughtsTokenCount"]);
            (
                want,
                "stop",
                usage(number(&metadata["promptTokenCount"]), completion),
            )
        }
        _ => {
            let mut want = Extracted {
                content: text(&expected["output_text"]),
                ..Extracted::default()
            };
            for item in expected["output_items_done"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if item["type"] == "function_call" {
                    let index = want.tool_calls.len() as u64;
                    want.tool_calls.insert(
                        index,
                        ToolCall {
                            id: item["call_id"].as_str().map(str::to_owned),
                            name: item["name"].as_str().map(str::to_owned),
                            arguments: text(&item["arguments"]),
                        },
                    );
                }
            }
            let finish = if want.tool_calls.is_empty() {
                "stop"
            } else {
                "tool_calls"
            };
            let used = &expected["usage"];
            (
                want,
                finish,
                usage(
                    number(&used["input_tokens"]),
                    number(&used["output_tokens"]),
                ),
            )
        }
    }
}

#[tokio::test]
async fn the_demo_page_shows_every_kind_s_thinking_text_and_tool_calls_alike() {
    use crate::browser::{Browser, LAST_ANSWER};
    let browser = Browser::launch().await;
    for speaks in Speaks::ALL {
        // Arrange
        let app = app_speaking(speaks).await;
        app.upstream
            .push(Reply::answer(speaks, &SCRIPT, End::Done).pace(Duration::from_millis(20)));
        let page = browser.open(&app.url("/")).await;

        // Act
        page.send("Weather and time in Paris?").await;
        page.wait_for_state("done").await;

        // Assert
        let shown: Value = page
            .eval(&format!(
                "(() => {{ const m = {LAST_ANSWER};
                    return {{ reasoning: m.querySelector('[data-testid=thinking] .thinking-text')?.textContent ?? null,
                              names: [...m.querySelectorAll('.tool-name')].map(e => e.textContent),
                              args: [...m.querySelectorAll('.tool-args')].map(e => e.textContent) }}; }})()"
            ))
            .await;
        assert_eq!(
            page.answer_text().await.trim(),
            "Hello",
            "{speaks:?}: {shown}"
        );
        assert_eq!(shown["reasoning"], "Let me think.", "{speaks:?}: {shown}");
        assert_eq!(
            shown["names"],
            json!(["get_weather", "get_time"]),
            "{speaks:?}: {shown}"
        );
        assert_eq!(
            shown["args"],
            json!(["{\"city\":\"Paris\"}", "{}"]),
            "{speaks:?}: {shown}"
        );
    }
    browser.close().await;
}
