//! Safe in front of a public chat page: what a caller may ask for (models,
//! answer length, choices, prompt size) on every surface, short-lived
//! signed tokens that a browser may hold instead of a key, and token
//! budgets per caller. Each refusal is checked as the caller sees it (status,
//! code, the limit named) and as the upstream does (it was never asked).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::dialects::{End, Speaks, Step};
use crate::fake_upstream::Reply;
use crate::helpers::{TestApp, Transcript, json_body, spawn_app_with};
use crate::openai::post_v1;

const SECRET: &str = "a-secret-of-at-least-thirty-two-characters";

/// `body` POSTed to `/api/chat`, to `/v1/chat/completions` and, as the AI
/// SDK would send it, to `/api/ui/chat`: the status and error body of each.
async fn every_surface(app: &TestApp, body: &Value) -> [(u16, Value); 3] {
    let ours = app.post_chat(body).await;
    let ours = (ours.status().as_u16(), json_body(ours).await);
    let theirs = post_v1(app, body).await;
    let theirs = (theirs.status().as_u16(), json_body(theirs).await);
    let ui = app
        .client
        .post(app.url("/api/ui/chat"))
        .header("content-type", "application/json")
        .body(as_ui_chat(body).to_string())
        .send()
        .await
        .unwrap_or_else(|error| panic!("POST /api/ui/chat: {error}"));
    let ui = (ui.status().as_u16(), json_body(ui).await);
    [ours, theirs, ui]
}

/// A chat-completions body as `DefaultChatTransport` sends it: UI messages
/// of text parts, the other fields beside them.
fn as_ui_chat(body: &Value) -> Value {
    let mut ui = body.clone();
    let messages: Vec<Value> = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(index, message)| {
            json!({"id": format!("m{index}"), "role": message["role"],
                   "parts": [{"type": "text", "text": message["content"]}]})
        })
        .collect();
    ui["messages"] = json!(messages);
    ui["id"] = json!("chat-1");
    ui["trigger"] = json!("submit-message");
    ui
}

fn chats_sent(app: &TestApp) -> Vec<Value> {
    app.upstream
        .requests()
        .into_iter()
        .filter(|request| request.method == "POST")
        .map(|request| request.body)
        .collect()
}

#[tokio::test]
async fn what_a_caller_may_ask_for_is_held_to_on_every_surface() {
    // Arrange
    let app = spawn_app_with(&[
        ("ALLOWED_MODELS", "fake-*,chat"),
        ("MAX_OUTPUT_TOKENS", "100"),
        ("MAX_CHOICES", "1"),
        ("MAX_PROMPT_MESSAGES", "2"),
        ("MAX_PROMPT_CHARS", "40"),
    ])
    .await;
    let user = |text: &str| json!({"role": "user", "content": text});
    let cases = [
        (
            json!({"model": "gpt-4o", "messages": [user("hi")]}),
            "ALLOWED_MODELS",
        ),
        (
            json!({"messages": [user("hi")], "max_tokens": 101}),
            "above the limit of 100 (MAX_OUTPUT_TOKENS)",
        ),
        (
            json!({"messages": [user("hi")], "max_completion_tokens": 5000}),
            "above the limit of 100 (MAX_OUTPUT_TOKENS)",
        ),
        (json!({"messages": [user("hi")], "n": 2}), "MAX_CHOICES"),
        (
            json!({"messages": [user("a"), {"role": "assistant", "content": "b"}, user("c")]}),
            "MAX_PROMPT_MESSAGES",
        ),
        (
            json!({"messages": [user(&"x".repeat(41))]}),
            "41 characters of text, above the limit of 40 (MAX_PROMPT_CHARS)",
        ),
    ];

    for (body, limit) in cases {
        // Act
        let answers = every_surface(&app, &body).await;

        // Assert
        for (status, error) in answers {
            assert_eq!(status, 400, "{body}: {error}");
            assert_eq!(error["error"]["code"], "invalid_request", "{body}: {error}");
            assert!(
                error["error"]["message"]
                    .as_str()
                    .is_some_and(|text| text.contains(limit)),
                "{body}: {error}"
            );
        }
    }
    assert!(
        chats_sent(&app).is_empty(),
        "a refused request reached the upstream"
    );
}

#[tokio::test]
async fn a_request_without_a_length_limit_is_sent_with_the_largest_allowed() {
    for speaks in [
        Speaks::OpenAi,
        Speaks::Anthropic,
        Speaks::Gemini,
        Speaks::Responses,
    ] {
        // Arrange
        let app = spawn_app_with(&[
            ("MAX_OUTPUT_TOKENS", "64"),
            ("UPSTREAM_KIND", speaks.kind()),
        ])
        .await;
        app.upstream
            .push(Reply::answer(speaks, &[Step::Text("ok")], End::Done));

        // Act
        let transcript = app.chat(&json!({"prompt": "hi"})).await;

        // Assert
        assert_eq!(transcript.text_of("token"), "ok", "{speaks:?}");
        let sent = chats_sent(&app);
        let limit = match speaks {
            Speaks::OpenAi | Speaks::Anthropic => &sent[0]["max_tokens"],
            Speaks::Gemini => &sent[0]["generationConfig"]["maxOutputTokens"],
            Speaks::Responses => &sent[0]["max_output_tokens"],
        };
        assert_eq!(limit, &json!(64), "{speaks:?}: {}", sent[0]);
    }
}

// ---- Signed tokens --------------------------------------------------------

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// A token for `sub`, valid for `lifetime_secs` (negative: expired), with
/// more `claims`, signed with `key` for `algorithm`.
fn token_with(algorithm: Algorithm, key: &EncodingKey, claims: Value) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), &claims, key)
        .unwrap_or_else(|error| panic!("mint a token: {error}"))
}

fn hs256(claims: Value) -> String {
    token_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        claims,
    )
}

fn valid_for(sub: &str, secs: i64) -> Value {
    json!({"sub": sub, "exp": unix_now() as i64 + secs})
}

async fn chat_as(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/api/chat"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|error| panic!("POST /api/chat: {error}"))
}

#[tokio::test]
async fn a_signed_token_lets_its_user_in_and_a_bad_one_is_refused_saying_why() {
    // Arrange
    let app = spawn_app_with(&[("JWT_SECRET", SECRET), ("PROXY_API_KEYS", "static-key")]).await;
    let cases = [
        (hs256(valid_for("alice", 300)), 200, ""),
        ("static-key".to_owned(), 200, ""),
        (hs256(valid_for("alice", -120)), 401, "expired"),
        (
            token_with(
                Algorithm::HS256,
                &EncodingKey::from_secret(b"another-secret-of-thirty-two-characters!"),
                valid_for("alice", 300),
            ),
            401,
            "signature",
        ),
        (hs256(json!({"sub": "alice"})), 401, "`exp`"),
        (hs256(json!({"exp": unix_now() + 300})), 401, "`sub`"),
        (
            token_with(
                Algorithm::HS384,
                &EncodingKey::from_secret(SECRET.as_bytes()),
                valid_for("alice", 300),
            ),
            401,
            "another algorithm",
        ),
        ("not-a-key".to_owned(), 401, ""),
    ];

    for (token, status, why) in cases {
        // Act
        let response = chat_as(&app, &token, &json!({"prompt": "hi"})).await;

        // Assert
        assert_eq!(response.status(), status, "{token}");
        if status == 200 {
            assert_eq!(
                Transcript::read(response).await.text_of("token"),
                "Hello world"
            );
        } else {
            let error = json_body(response).await;
            assert_eq!(error["error"]["code"], "unauthorized", "{error}");
            let message = error["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(why), "{token}: {message}");
            assert!(!message.contains(&token), "the refusal quotes the token");
        }
    }
}

#[tokio::test]
async fn every_kind_of_public_key_verifies_its_own_tokens() {
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys/");
    let read = |name: &str| {
        std::fs::read(format!("{keys}{name}")).unwrap_or_else(|error| panic!("{name}: {error}"))
    };
    let cases = [
        (
            "rsa",
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&read("rsa-private.pem")),
        ),
        (
            "ec",
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&read("ec-private.pem")),
        ),
        (
            "ed25519",
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(&read("ed25519-private.pem")),
        ),
    ];
    for (name, algorithm, private) in cases {
        // Arrange
        let private = private.unwrap_or_else(|error| panic!("{name}: {error}"));
        let public = format!("{keys}{name}-public.pem");
        let app = spawn_app_with(&[("JWT_PUBLIC_KEY_FILE", public.as_str())]).await;
        let good = token_with(algorithm, &private, valid_for("bob", 300));
        // A public key must never be taken for an HMAC secret.
        let forged = token_with(
            Algorithm::HS256,
            &EncodingKey::from_secret(&read(&format!("{name}-public.pem"))),
            valid_for("bob", 300),
        );

        // Act
        let accepted = chat_as(&app, &good, &json!({"prompt": "hi"})).await;
        let refused = chat_as(&app, &forged, &json!({"prompt": "hi"})).await;

        // Assert
        assert_eq!(accepted.status(), 200, "{name}");
        assert_eq!(
            refused.status(),
            401,
            "{name}: an HS256 token signed with the public key"
        );
    }
}

#[tokio::test]
async fn a_token_s_claims_narrow_the_models_and_the_answer_length() {
    // Arrange
    let app = spawn_app_with(&[("JWT_SECRET", SECRET), ("MAX_OUTPUT_TOKENS", "500")]).await;
    let token = hs256(
        json!({"sub": "carol", "exp": unix_now() + 300, "models": ["fake-*"], "max_tokens": 50}),
    );

    // Act
    let other_model = chat_as(&app, &token, &json!({"prompt": "hi", "model": "gpt-4o"})).await;
    let too_long = chat_as(&app, &token, &json!({"prompt": "hi", "max_tokens": 80})).await;
    let fine = chat_as(&app, &token, &json!({"prompt": "hi"})).await;

    // Assert
    assert_eq!(other_model.status(), 400);
    let refusal = json_body(other_model).await;
    assert!(
        refusal["error"]["message"]
            .as_str()
            .is_some_and(|text| text.contains("`models` claim")),
        "{refusal}"
    );
    assert_eq!(too_long.status(), 400);
    let refusal = json_body(too_long).await;
    assert!(
        refusal["error"]["message"]
            .as_str()
            .is_some_and(|text| text.contains("limit of 50")),
        "{refusal}"
    );
    assert_eq!(Transcript::read(fine).await.text_of("token"), "Hello world");
    assert_eq!(chats_sent(&app)[0]["max_tokens"], 50);
}

#[tokio::test]
async fn a_stream_belongs_to_the_token_s_subject_across_its_tokens() {
    // Arrange
    let app = spawn_app_with(&[("JWT_SECRET", SECRET)]).await;
    let tokens: Vec<String> = (0..40).map(|n| format!("t{n} ")).collect();
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    app.upstream
        .push(Reply::tokens(&tokens).pace(Duration::from_millis(25)));
    let first = hs256(valid_for("dave", 300));
    let started = chat_as(&app, &first, &json!({"prompt": "hi"})).await;
    let id = crate::helpers::stream_id_of(&started);
    let events = format!("/api/chat/{id}/events?last_event_id={id}:0");

    // Act: a newer token for the same user, and another user's.
    let again = hs256(json!({"sub": "dave", "exp": unix_now() + 600, "iat": unix_now()}));
    let own = app
        .client
        .get(app.url(&events))
        .bearer_auth(&again)
        .send()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let stranger = app
        .client
        .get(app.url(&events))
        .bearer_auth(hs256(valid_for("erin", 300)))
        .send()
        .await
        .unwrap_or_else(|error| panic!("{error}"));

    // Assert
    assert_eq!(stranger.status(), 404);
    // Everything after `start` (event 0).
    assert_eq!(
        Transcript::read(own).await.text_of("token"),
        tokens.concat()
    );
    assert_eq!(
        Transcript::read(started).await.text_of("token"),
        tokens.concat()
    );
}

#[tokio::test]
async fn event_source_clients_pass_the_token_in_the_query() {
    // Arrange
    let app = spawn_app_with(&[("JWT_SECRET", SECRET)]).await;
    let token = hs256(valid_for("frank", 300));

    // Act
    let with_token = app
        .get(&format!("/api/chat?prompt=hi&access_token={token}"))
        .await;
    let without = app.get("/api/chat?prompt=hi").await;

    // Assert
    assert_eq!(with_token.status(), 200);
    assert_eq!(
        Transcript::read(with_token).await.text_of("token"),
        "Hello world"
    );
    assert_eq!(without.status(), 401);
    assert_eq!(chats_sent(&app).len(), 1);
}

// ---- Token budgets ---------------------------------------------------------

/// Posts chats as `key` until one is refused with 429, within a deadline;
/// how many were answered, and the refusal.
async fn spend_until_refused(app: &TestApp, key: &str) -> (usize, reqwest::Response) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut answered = 0;
    loop {
        let response = chat_as(app, key, &json!({"prompt": "hi"})).await;
        if response.status() == 429 {
            return (answered, response);
        }
        assert_eq!(response.status(), 200);
        Transcript::read(response).await;
        answered += 1;
        assert!(
            tokio::time::Instant::now() < deadline && answered < 10,
            "still answered after {answered} chats"
        );
        // The generation's cost is counted when it ends, just after [DONE].
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_caller_s_tokens_per_minute_are_counted_from_usage_and_refused_when_spent() {
    // Arrange: every answer reports 10 prompt and 2 completion tokens.
    let app = spawn_app_with(&[("PROXY_API_KEYS", "a,b"), ("TOKENS_PER_MINUTE", "30")]).await;

    // Act
    let (answered, refusal) = spend_until_refused(&app, "a").await;
    let other = chat_as(&app, "b", &json!({"prompt": "hi"})).await;

    // Assert: 12 + 12 + 12 = 36 ≥ 30 after three answers.
    assert_eq!(answered, 3);
    let retry_after: u64 = refusal
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or_default();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    let error = json_body(refusal).await;
    assert_eq!(error["error"]["code"], "rate_limited");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|text| text.contains("TOKENS_PER_MINUTE")),
        "{error}"
    );
    assert_eq!(other.status(), 200, "another caller has its own budget");
}

#[tokio::test]
async fn without_usage_the_cost_is_estimated_from_the_text() {
    // Arrange: no usage, 400 characters of answer: about 100 tokens.
    let app = spawn_app_with(&[("PROXY_API_KEYS", "a"), ("TOKENS_PER_MINUTE", "150")]).await;
    let chunk = |delta: Value, finish: Value| json!({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    let body = format!(
        "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
        chunk(json!({"content": "x".repeat(400)}), Value::Null),
        chunk(json!({}), json!("stop"))
    );
    app.upstream.set_default(Reply::sse(body));

    // Act
    let (answered, refusal) = spend_until_refused(&app, "a").await;

    // Assert: about 101 tokens each, so the second spends the budget.
    assert_eq!(answered, 2);
    assert_eq!(refusal.status(), 429);
}

#[tokio::test]
async fn a_token_in_the_query_never_reaches_a_log_line_at_any_level() {
    // Arrange: the binary at the most verbose level.
    use crate::cli::{Server, binary, scratch_dir};
    let upstream = crate::fake_upstream::FakeUpstream::start().await;
    let dir = scratch_dir("token-logs");
    let mut server = Server::start(
        binary()
            .current_dir(&dir)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("UPSTREAM_BASE_URL", upstream.base_url())
            .env("DEFAULT_MODEL", "m")
            .env("JWT_SECRET", SECRET)
            .env("RUST_LOG", "trace"),
    );
    let addr = server.addr();
    let token = hs256(valid_for("grace", 300));
    let client = crate::helpers::http_client();

    // Act
    let answer = client
        .get(format!(
            "http://{addr}/api/chat?prompt=hi&access_token={token}"
        ))
        .send()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let transcript = Transcript::read(answer).await;
    let finished = server.wait_for("stream finished");
    assert!(server.terminate(), "the server stops on SIGTERM");
    let lines = server.logged();

    // Assert
    assert_eq!(transcript.text_of("token"), "Hello world");
    let signature = token.rsplit('.').next().unwrap_or_default();
    let leaks: Vec<&String> = lines
        .iter()
        .filter(|line| line.contains(signature))
        .collect();
    assert!(leaks.is_empty(), "{leaks:#?}");
    assert!(
        finished.contains("caller=key:") && !finished.contains("grace"),
        "the line names the subject by its keyed hash: {finished}"
    );
}
