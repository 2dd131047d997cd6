//! Several upstreams behind one tokenrelay (`TOKENRELAY_CONFIG`): requests
//! go where their model name says, with each upstream's own key, headers
//! and query, and a refusal moves on to the next target before anything
//! reaches the client.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::cli::{binary, scratch_dir};
use crate::failures::assert_refused;
use crate::fake_upstream::{FakeUpstream, Reply};
use crate::helpers::{TestApp, Transcript, json_body, spawn_app_in_front_of};

/// Three fake upstreams, `a`, `b` and `c`, and a proxy configured with
/// them and with `models`: top-level keys, then `[models]` tables.
async fn three_upstreams(models: &str) -> (TestApp, FakeUpstream, FakeUpstream) {
    three_upstreams_with(models, &[]).await
}

/// [`three_upstreams`] with more `settings`.
async fn three_upstreams_with(
    models: &str,
    settings: &[(&str, &str)],
) -> (TestApp, FakeUpstream, FakeUpstream) {
    // Top-level keys must come before the first table.
    let (top, models) = match models.find('[') {
        Some(at) => models.split_at(at),
        None => (models, ""),
    };
    let (a, b, c) = (
        FakeUpstream::start().await,
        FakeUpstream::start().await,
        FakeUpstream::start().await,
    );
    let file = format!(
        r#"
{top}
[upstreams.a]
base_url = "{}"
api_key = "${{KEY_A}}"
headers = {{ "x-tenant" = "t-a", "api-key" = "${{KEY_A}}-as-a-header" }}
query = {{ "api-version" = "2024-10-21" }}

[upstreams.b]
base_url = "{}"
api_key = "key-b"

[upstreams.c]
base_url = "{}"

{models}
"#,
        a.base_url(),
        b.base_url(),
        c.base_url()
    );
    let app = configured(
        a,
        "three",
        &file,
        &[&[("KEY_A", "key-a")], settings].concat(),
    )
    .await;
    (app, b, c)
}

/// A proxy in front of `front` (whose replies `app.upstream` scripts),
/// configured with the TOML `file` and `settings`.
pub(crate) async fn configured(
    front: FakeUpstream,
    name: &str,
    file: &str,
    settings: &[(&str, &str)],
) -> TestApp {
    let path = write_config(name, file);
    let path = path.to_string_lossy().into_owned();
    let base = [("TOKENRELAY_CONFIG", path.as_str()), ("DEFAULT_MODEL", "")];
    spawn_app_in_front_of(front, &[&base[..], settings].concat()).await
}

/// Writes a config file in a directory of its own: tests run in parallel.
fn write_config(name: &str, text: &str) -> PathBuf {
    static FILES: AtomicUsize = AtomicUsize::new(0);
    let unique = FILES.fetch_add(1, Ordering::Relaxed);
    let path = scratch_dir(&format!("routing-{name}-{unique}")).join("tokenrelay.toml");
    std::fs::write(&path, text).unwrap_or_else(|error| panic!("{error}"));
    path
}

async fn chat(app: &TestApp, model: &str) -> Transcript {
    app.chat(&json!({"model": model, "prompt": "hi"})).await
}

fn models_sent(upstream: &FakeUpstream) -> Vec<Value> {
    upstream
        .requests()
        .iter()
        .filter(|request| request.path == "/v1/chat/completions")
        .map(|request| request.body["model"].clone())
        .collect()
}

#[tokio::test]
async fn a_model_name_or_upstream_slash_model_picks_the_upstream() {
    // Arrange
    let (app, b, c) = three_upstreams("[models.chat]\ntargets = [\"b/big-model\"]").await;
    b.push(Reply::tokens(&["from ", "b"]));
    c.push(Reply::tokens(&["from ", "c"]));
    app.upstream.push(Reply::tokens(&["from ", "a"]));

    // Act
    let by_name = chat(&app, "chat").await;
    let direct = chat(&app, "c/vendor/model-x").await;
    let to_a = chat(&app, "a/small").await;
    let unknown = chat(&app, "gpt-4o").await;

    // Assert
    assert_eq!(by_name.text_of("token"), "from b", "{}", by_name.text);
    assert_eq!(direct.text_of("token"), "from c");
    assert_eq!(to_a.text_of("token"), "from a");
    assert_eq!(models_sent(&b), [json!("big-model")]);
    assert_eq!(models_sent(&c), [json!("vendor/model-x")]);
    assert_eq!(models_sent(&app.upstream), [json!("small")]);
    let error = assert_refused(&unknown, 400, "invalid_request", "an unknown model");
    let message = error["message"].as_str().unwrap_or_default();
    for name in ["chat", "a/MODEL", "b/MODEL", "c/MODEL"] {
        assert!(message.contains(name), "the names it knows: {message}");
    }
}

#[tokio::test]
async fn each_upstream_gets_its_own_key_headers_and_query() {
    // Arrange
    let (app, b, _c) = three_upstreams("").await;
    app.upstream.push(Reply::tokens(&["ok"]));
    b.push(Reply::tokens(&["ok"]));

    // Act
    chat(&app, "a/m").await;
    chat(&app, "b/m").await;

    // Assert
    let to_a = &app.upstream.requests()[0];
    assert_eq!(to_a.header("authorization"), Some("Bearer key-a"));
    assert_eq!(to_a.header("x-tenant"), Some("t-a"));
    assert_eq!(to_a.header("api-key"), Some("key-a-as-a-header"));
    assert_eq!(to_a.query.as_deref(), Some("api-version=2024-10-21"));
    let to_b = &b.requests()[0];
    assert_eq!(to_b.header("authorization"), Some("Bearer key-b"));
    assert_eq!(to_b.header("x-tenant"), None);
    assert_eq!(to_b.query, None);
}

#[tokio::test]
async fn a_refusal_before_the_stream_moves_on_to_the_next_target() {
    let (app, b, c) = three_upstreams(
        "cooldown_after = 100\n[models.chat]\ntargets = [\"a/first\", \"b/second\", \"c/third\"]",
    )
    .await;
    let refusals = [
        (
            "401",
            Reply::status(401, json!({"error": {"message": "bad key"}})),
        ),
        (
            "429",
            Reply::status(429, json!({"error": {"message": "slow down"}})),
        ),
        (
            "503",
            Reply::status(503, json!({"error": {"message": "overloaded"}})),
        ),
        (
            "a 200 that is not an event stream",
            Reply::status(200, json!({"object": "chat.completion"})),
        ),
    ];
    for (name, refusal) in refusals {
        // Arrange: a refuses, b answers.
        app.upstream.push(refusal);
        b.push(Reply::tokens(&["b ", "answered"]));
        let (a_before, b_before) = (models_sent(&app.upstream).len(), models_sent(&b).len());

        // Act
        let transcript = chat(&app, "chat").await;

        // Assert
        assert_eq!(transcript.status, 200, "{name}: {}", transcript.text);
        assert_eq!(transcript.text_of("token"), "b answered", "{name}");
        assert!(
            !transcript.text.contains("bad key") && !transcript.text.contains("overloaded"),
            "{name}: nothing of the refused attempt reaches the client"
        );
        assert_eq!(models_sent(&app.upstream).len(), a_before + 1, "{name}");
        assert_eq!(models_sent(&b).len(), b_before + 1, "{name}");
    }
    assert!(models_sent(&c).is_empty(), "c was never needed");

    // Every target refusing: the last refusal is the answer.
    app.upstream
        .push(Reply::status(500, json!({"error": {"message": "a down"}})));
    b.push(Reply::status(500, json!({"error": {"message": "b down"}})));
    c.push(Reply::status(503, json!({"error": {"message": "c down"}})));
    let all_down = chat(&app, "chat").await;
    let error = assert_refused(&all_down, 502, "upstream_error", "every target refused");
    assert_eq!(error["upstream_status"], json!(503));
}

#[tokio::test]
async fn a_400_is_the_requests_fault_and_is_not_tried_elsewhere() {
    // Arrange
    let (app, b, _c) =
        three_upstreams("[models.chat]\ntargets = [\"a/first\", \"b/second\"]").await;
    app.upstream.push(Reply::status(
        400,
        json!({"error": {"message": "bad temperature"}}),
    ));
    b.push(Reply::tokens(&["never"]));

    // Act
    let transcript = chat(&app, "chat").await;

    // Assert
    let error = assert_refused(&transcript, 502, "upstream_error", "a 400");
    assert_eq!(error["upstream_status"], json!(400));
    assert!(models_sent(&b).is_empty(), "the next target was not asked");
}

#[tokio::test]
async fn v1_models_lists_the_names_and_every_upstreams_models() {
    // Arrange
    let (app, _b, _c) = three_upstreams("[models.chat]\ntargets = [\"b/x\"]").await;

    // Act
    let response = app.get("/v1/models").await;
    let status = response.status();
    let body = json_body(response).await;

    // Assert
    assert_eq!(status, 200);
    let ids: Vec<&str> = body["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|model| model["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        ["chat", "a/fake-model", "b/fake-model", "c/fake-model"]
    );
}

#[test]
fn a_broken_config_file_stops_the_server_naming_the_problem() {
    let missing_var = write_config(
        "missing-var",
        "[upstreams.a]\nbase_url = \"http://127.0.0.1:9/v1\"\napi_key = \"${NOT_SET_ANYWHERE}\"\n",
    );
    let broken = write_config("broken", "[upstreams.a]\nbase_url = \n");
    for (path, expected) in [
        (missing_var, "`${NOT_SET_ANYWHERE}` is not set"),
        (broken, "line 2"),
    ] {
        let output = binary()
            .env("TOKENRELAY_CONFIG", &path)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .output()
            .unwrap_or_else(|error| panic!("{error}"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{path:?} was accepted");
        assert!(
            stderr.contains("TOKENRELAY_CONFIG") && stderr.contains(expected),
            "{path:?}: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_key_sent_in_a_configured_header_is_masked_when_quoted_back() {
    // Arrange
    let (app, _b, _c) = three_upstreams("").await;
    app.upstream.push(Reply::status(
        401,
        json!({"error": {"message": "api-key key-a-as-a-header is revoked"}}),
    ));

    // Act
    let transcript = chat(&app, "a/m").await;

    // Assert
    let error = assert_refused(&transcript, 502, "upstream_error", "a quoted header key");
    assert!(
        !transcript.text.contains("as-a-header"),
        "{}",
        transcript.text
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("is revoked")
    );
}

#[tokio::test]
async fn an_error_or_silence_before_the_first_token_moves_on_and_start_names_the_upstream() {
    // Arrange: a's attempts fail after their 200, b answers.
    let (app, b, _c) = three_upstreams(
        "[models.chat]\ntargets = [\"a/first\", \"b/second\"]\nttft_timeout_secs = 0.5",
    )
    .await;
    let in_stream_error = format!(
        "data: {}\n\n",
        json!({"error": {"message": "overloaded before the first token"}})
    );
    let attempts = [
        ("an error before any content", Reply::sse(in_stream_error)),
        (
            "no first token within ttft_timeout_secs",
            Reply::tokens(&["too", " late"]).first_byte_after(Duration::from_secs(3)),
        ),
        (
            "a stream that ends before its first token",
            Reply::sse(": keep-alive\n\n"),
        ),
    ];
    for (name, attempt) in attempts {
        app.upstream.push(attempt);
        b.push(Reply::tokens(&["b ", "answered"]));
        let dropped_before = app.upstream.bodies_dropped();

        // Act
        let transcript = chat(&app, "chat").await;

        // Assert
        assert_eq!(transcript.status, 200, "{name}");
        assert_eq!(transcript.text_of("token"), "b answered", "{name}");
        let events = transcript.events();
        assert_eq!(events[0]["type"], "start", "{name}");
        assert_eq!(
            events[0]["upstream"], "b",
            "{name}: start names who answers"
        );
        assert_eq!(events[0]["model"], "second", "{name}");
        assert!(
            !transcript.text.contains("overloaded") && !transcript.text.contains("too"),
            "{name}: nothing of the abandoned attempt reaches the client"
        );
        if name.starts_with("no first token") {
            assert!(
                app.upstream
                    .wait_dropped(dropped_before + 1, Duration::from_secs(5))
                    .await,
                "{name}: the abandoned request is dropped"
            );
        }
    }
    // Each failed after its 200, and counts as the in-stream failure it was.
    let metrics = app.get("/metrics").await.text().await.unwrap_or_default();
    for kind in [
        "upstream_error",
        "upstream_timeout",
        "upstream_disconnected",
    ] {
        let series = format!(r#"tokenrelay_upstream_errors_total{{upstream="a",kind="{kind}"}} 1"#);
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }
}

#[tokio::test]
async fn a_failure_after_the_first_token_is_never_sent_elsewhere() {
    // Arrange
    let (app, b, _c) =
        three_upstreams("[models.chat]\ntargets = [\"a/first\", \"b/second\"]").await;
    app.upstream
        .push(Reply::sse(crate::failures::content_chunk("started")).cut_after(1));
    b.push(Reply::tokens(&["never"]));

    // Act
    let transcript = chat(&app, "chat").await;

    // Assert
    let error = crate::failures::assert_failed_after_start(
        &transcript,
        "upstream_disconnected",
        "a cut after the first token",
    );
    assert!(error["message"].is_string());
    assert_eq!(transcript.text_of("token"), "started");
    assert_eq!(transcript.events()[0]["upstream"], "a");
    assert!(models_sent(&b).is_empty(), "nothing is sent twice");
}

#[tokio::test]
async fn the_last_target_is_never_cut_by_the_ttft_deadline() {
    // Arrange
    let (app, b, _c) = three_upstreams(
        "[models.chat]\ntargets = [\"a/first\", \"b/second\"]\nttft_timeout_secs = 0.3",
    )
    .await;
    app.upstream
        .push(Reply::status(503, json!({"error": {"message": "down"}})));
    b.push(Reply::tokens(&["slow", " but", " fine"]).first_byte_after(Duration::from_secs(1)));

    // Act
    let transcript = chat(&app, "chat").await;

    // Assert
    assert_eq!(transcript.status, 200);
    assert_eq!(transcript.text_of("token"), "slow but fine");
}

#[tokio::test]
async fn an_upstream_that_keeps_failing_is_skipped_for_the_cooldown() {
    // Arrange: a fails every time, b answers.
    let (app, b, _c) = three_upstreams(
        "cooldown_after = 2\ncooldown_secs = 60\n[models.chat]\ntargets = [\"a/first\", \"b/second\"]",
    )
    .await;
    app.upstream
        .set_default(Reply::status(503, json!({"error": {"message": "down"}})));
    b.set_default(Reply::tokens(&["b"]));

    // Act
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(chat(&app, "chat").await.text_of("token"));
    }

    // Assert
    assert!(answers.iter().all(|answer| answer == "b"), "{answers:?}");
    assert_eq!(
        models_sent(&app.upstream).len(),
        2,
        "after 2 failures in a row, a is skipped"
    );
    assert_eq!(models_sent(&b).len(), 5);
}

#[tokio::test]
async fn weighted_targets_share_the_traffic_by_weight() {
    // Arrange
    let (app, b, _c) = three_upstreams(
        "[models.chat]\nstrategy = \"weighted\"\ntargets = [{ target = \"a/x\", weight = 3 }, { target = \"b/y\", weight = 1 }]",
    )
    .await;
    app.upstream.set_default(Reply::tokens(&["a"]));
    b.set_default(Reply::tokens(&["b"]));

    // Act
    for _ in 0..80 {
        chat(&app, "chat").await;
    }

    // Assert: 60 expected on a; far outside chance either way fails.
    let to_a = models_sent(&app.upstream).len();
    assert_eq!(to_a + models_sent(&b).len(), 80);
    assert!((45..=75).contains(&to_a), "a got {to_a} of 80");
}

#[tokio::test]
async fn an_unreachable_or_silent_upstream_moves_on_too() {
    // Arrange: a closed port first, then an upstream that sends no headers
    // within its own headers timeout, then b.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|error| panic!("bind: {error}"));
        listener
            .local_addr()
            .unwrap_or_else(|error| panic!("{error}"))
            .port()
    };
    let (silent, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    silent.set_default(Reply::tokens(&["late"]).headers_after(Duration::from_secs(5)));
    b.set_default(Reply::tokens(&["b ", "answered"]));
    let file = format!(
        "[upstreams.dead]\nbase_url = \"http://127.0.0.1:{dead}/v1\"\nretries = 0\n\
         [upstreams.silent]\nbase_url = \"{}\"\nheaders_timeout_secs = 0.3\nretries = 0\n\
         [upstreams.b]\nbase_url = \"{}\"\n\
         [models.chat]\ntargets = [\"dead/m\", \"silent/m\", \"b/m\"]\n",
        silent.base_url(),
        b.base_url()
    );
    let app = configured(FakeUpstream::start().await, "unreachable", &file, &[]).await;

    // Act
    let transcript = chat(&app, "chat").await;
    let metrics = app.get("/metrics").await.text().await.unwrap_or_default();

    // Assert
    assert_eq!(transcript.status, 200, "{}", transcript.text);
    assert_eq!(transcript.text_of("token"), "b answered");
    assert_eq!(transcript.events()[0]["upstream"], "b");
    assert!(
        metrics.contains(
            r#"tokenrelay_failovers_total{from="dead",to="silent",reason="upstream_error"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"tokenrelay_failovers_total{from="silent",to="b",reason="upstream_timeout"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"tokenrelay_upstream_errors_total{upstream="dead",kind="connect"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn readyz_gives_each_upstreams_state() {
    // Arrange: a's model list answers, b's port is closed.
    let a = FakeUpstream::start().await;
    let file = format!(
        "cooldown_after = 1\n\
         [upstreams.a]\nbase_url = \"{}\"\n\
         [upstreams.b]\nbase_url = \"http://127.0.0.1:9/v1\"\nretries = 0\n\
         [models.chat]\ntargets = [\"b/m\", \"a/m\"]\n",
        a.base_url()
    );
    let app = configured(a, "readyz", &file, &[]).await;

    // Act
    let before = json_body(app.get("/readyz").await).await;
    chat(&app, "chat").await;
    let response = app.get("/readyz").await;
    let status = response.status();
    let after = json_body(response).await;

    // Assert
    assert_eq!(before["upstreams"], json!({"a": "ok", "b": "unreachable"}));
    assert_eq!(status, 200, "ready while any upstream is usable");
    assert_eq!(after["upstreams"], json!({"a": "ok", "b": "cooling"}));
}

#[tokio::test]
async fn the_latency_strategy_moves_traffic_to_the_quicker_upstream_and_back() {
    // Arrange: a is slow to its first token, b quick.
    let (app, b, _c) = three_upstreams(
        "[models.chat]\nstrategy = \"latency\"\nttft_timeout_secs = 30\ntargets = [\"a/x\", \"b/y\"]",
    )
    .await;
    app.upstream
        .set_default(Reply::tokens(&["a"]).first_byte_after(Duration::from_millis(300)));
    b.set_default(Reply::tokens(&["b"]));

    // Act: both get measured, then the quicker one is preferred.
    let mut served = Vec::new();
    for _ in 0..8 {
        served.push(chat(&app, "chat").await.events()[0]["upstream"].clone());
    }
    // a recovers and b slows down: the traffic goes back.
    app.upstream.set_default(Reply::tokens(&["a"]));
    b.set_default(Reply::tokens(&["b"]).first_byte_after(Duration::from_millis(300)));
    let mut after = Vec::new();
    for _ in 0..12 {
        after.push(chat(&app, "chat").await.events()[0]["upstream"].clone());
    }

    // Assert
    let count = |list: &[Value], name: &str| list.iter().filter(|served| **served == name).count();
    assert!(
        count(&served[2..], "b") >= 5,
        "b, the quicker, is preferred: {served:?}"
    );
    assert!(
        count(&after[6..], "a") >= 5,
        "a wins its traffic back: {after:?}"
    );
}

#[tokio::test]
async fn an_upstream_at_its_max_concurrent_is_skipped_and_the_next_retries_for_it() {
    // Arrange: a takes one request at a time and has retries of its own.
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let file = format!(
        "[upstreams.a]\nbase_url = \"{}\"\nmax_concurrent = 1\nretries = 2\n\
         [upstreams.b]\nbase_url = \"{}\"\n\
         [models.chat]\ntargets = [\"a/m\", \"b/m\"]\n",
        a.base_url(),
        b.base_url()
    );
    let app = configured(a, "max-concurrent", &file, &[("RESUME_GRACE_SECS", "0")]).await;
    app.upstream
        .push(Reply::tokens(&["long ", "answer"]).pace(Duration::from_millis(400)));
    b.set_default(Reply::tokens(&["b"]));

    // Act
    let holding = app
        .post_chat_and_wait(&json!({"model": "chat", "prompt": "hi"}))
        .await;
    let skipped = chat(&app, "chat").await;
    let direct = chat(&app, "a/m").await;
    drop(holding);
    assert!(app.upstream.wait_dropped(1, Duration::from_secs(5)).await);
    // A refusal is not retried on a target with another after it.
    app.upstream
        .push(Reply::status(503, json!({"error": {"message": "busy"}})));
    let moved_on = chat(&app, "chat").await;

    // Assert
    assert_eq!(
        skipped.text_of("token"),
        "b",
        "a was full: {}",
        skipped.text
    );
    let error = assert_refused(&direct, 503, "overloaded", "a alone, full");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("max_concurrent")
    );
    assert_eq!(moved_on.text_of("token"), "b");
    assert_eq!(
        models_sent(&app.upstream).len(),
        2,
        "a got the long answer and one try of the refused one, no retries"
    );
}

#[tokio::test]
async fn a_resumed_generation_keeps_its_upstream() {
    // Arrange: a grace period, so that the generation waits for the resume.
    let (app, b, _c) = three_upstreams_with(
        "[models.chat]\nstrategy = \"weighted\"\ntargets = [\"a/x\", \"b/y\"]",
        &[("RESUME_GRACE_SECS", "5")],
    )
    .await;
    let tokens: Vec<String> = (0..20).map(|n| format!("t{n} ")).collect();
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let answer = Reply::tokens(&tokens).pace(Duration::from_millis(20));
    app.upstream.set_default(answer.clone());
    b.set_default(answer);
    let mut response = app
        .client
        .post(app.url("/api/chat"))
        .header("content-type", "application/json")
        .body(json!({"model": "chat", "prompt": "count"}).to_string())
        .send()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let stream_id = response
        .headers()
        .get("x-stream-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut seen = String::new();
    while !seen.contains(&format!("{stream_id}:3")) {
        let piece = tokio::time::timeout(Duration::from_secs(5), response.chunk())
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
            .unwrap_or_else(|| panic!("the stream ended early: {seen}"));
        seen.push_str(&String::from_utf8_lossy(&piece));
    }
    drop(response);

    // Act
    let resumed = Transcript::read(
        app.client
            .get(app.url(&format!("/api/chat/{stream_id}/events")))
            .header("last-event-id", format!("{stream_id}:3"))
            .send()
            .await
            .unwrap_or_else(|error| panic!("{error}")),
    )
    .await;

    // Assert
    assert_eq!(resumed.status, 200);
    assert!(
        resumed.text_of("token").ends_with("t19 "),
        "{}",
        resumed.text
    );
    let asked = models_sent(&app.upstream).len() + models_sent(&b).len();
    assert_eq!(asked, 1, "the resume was not routed again");
}
