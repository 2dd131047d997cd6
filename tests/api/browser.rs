//! The demo page in a real browser: Debian's Chromium, headless, driven over
//! the DevTools protocol, loading the page from a real proxy in front of a
//! real [`FakeUpstream`](crate::fake_upstream::FakeUpstream). These tests are
//! about what a person sees: the answer growing token by token, multi-byte
//! text arriving intact, Stop, honest errors, model text never becoming HTML,
//! the conversation history and resuming after a dropped connection. The
//! page as a chat application (markdown, actions, settings) is tested in
//! `page.rs`, with this file's browser and page helpers.
//!
//! The page is observed by evaluating JavaScript in it, through its stable
//! `data-testid` hooks and `window.tokenrelayDebug`. Chromium is heavy, so the
//! tests take turns (one browser at a time) and every wait is generous: on a
//! busy 2-core machine slow is fine, wrong is not.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chromiumoxide::browser::{Browser as Chromium, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::emulation::SetDeviceMetricsOverrideParams;
use chromiumoxide::cdp::browser_protocol::input::{
    DispatchMouseEventParams, DispatchMouseEventType, InsertTextParams, MouseButton,
};
use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::handler::viewport::Viewport;
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::{Command, Page};
use futures_util::StreamExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, MutexGuard, Notify};
use tokio::task::JoinHandle;

use crate::fake_upstream::{Chunking, Reply};
use crate::helpers::{TestApp, spawn_app, spawn_app_with};

/// Where Debian's `chromium` package puts the browser.
const CHROMIUM: &str = "/usr/bin/chromium";

/// Every wait on the page or the upstream; generous because CI is noisy.
pub(crate) const WAIT: Duration = Duration::from_secs(15);

/// How often a condition in the page is checked while waiting.
const POLL: Duration = Duration::from_millis(10);

/// The newest assistant message, as a JavaScript expression.
pub(crate) const LAST_ANSWER: &str =
    "[...document.querySelectorAll('[data-testid=message][data-role=assistant]')].at(-1)";

/// How many assistant messages the page shows, as a JavaScript expression.
pub(crate) const ANSWER_COUNT: &str =
    "document.querySelectorAll('[data-testid=message][data-role=assistant]').length";

/// Two browsers at once would slow each other down enough to make timeouts
/// flaky, so each test holds this for as long as its browser lives.
static BROWSER_TURN: Mutex<()> = Mutex::const_new(());

/// Makes each profile directory unique within this test process.
static PROFILES: AtomicUsize = AtomicUsize::new(0);

// ---- The tests ----

#[tokio::test]
async fn a_paced_answer_grows_on_the_page_and_ends_exact() {
    // Arrange
    let app = spawn_app().await;
    let tokens = [
        "Tokens ", "arrive ", "one ", "by ", "one, ", "as ", "the ", "model ", "writes.",
    ];
    let full = tokens.concat();
    app.upstream
        .push(Reply::tokens(&tokens).pace(Duration::from_millis(120)));
    let browser = Browser::launch().await;
    let page = browser.open(&app.url("/")).await;
    page.record().await;

    // Act
    page.send("Show me streaming").await;
    page.wait_for_state("done").await;

    // Assert
    assert_eq!(page.answer_text().await, full);
    let seen = page.recorded().await;
    assert_grew_in_order(&seen.answers, &full);
    let intermediate = seen
        .answers
        .iter()
        .filter(|text| !text.is_empty() && **text != full)
        .count();
    assert!(
        intermediate >= 3,
        "the answer should grow through at least 3 intermediate states, saw {:?}",
        seen.answers
    );
    let count: String = page
        .eval(&format!(
            "{LAST_ANSWER}.querySelector('[data-testid=token-count]').textContent"
        ))
        .await;
    assert_eq!(count, tokens.len().to_string(), "the token count shown");
    browser.close().await;
}

#[tokio::test]
async fn an_event_source_left_open_reads_the_answer_once_and_stops() {
    // Arrange: a page that opens an `EventSource` and never closes it.
    let app = spawn_app_with(&[("RESUME_GRACE_SECS", "5")]).await;
    app.upstream.push(Reply::tokens(&["once ", "and ", "done"]));
    let browser = Browser::launch().await;
    let page = browser.open(&app.url("/")).await;

    // Act
    let _: Value = page
        .eval(
            "(() => { window.seen = { tokens: '', opens: 0, done: 0 };
               const source = new EventSource('/api/chat?prompt=hi');
               window.source = source;
               source.onopen = () => { window.seen.opens += 1; };
               source.onmessage = (message) => {
                 if (message.data === '[DONE]') { window.seen.done += 1; return; }
                 const event = JSON.parse(message.data);
                 if (event.type === 'token') window.seen.tokens += event.token;
               };
               return null; })()",
        )
        .await;
    // `EventSource` reconnects a second after the stream ends (`retry: 1000`)
    // and gives up for good when the answer is 204: CLOSED is 2.
    let state: u32 = page
        .wait_for(
            "the EventSource to close",
            "window.source.readyState === 2 ? 2 : null",
        )
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen: Value = page.eval("window.seen").await;

    // Assert
    assert_eq!(state, 2);
    assert_eq!(seen["tokens"], "once and done", "{seen}");
    assert_eq!(
        seen["done"], 1,
        "[DONE] arrived once, not every second: {seen}"
    );
    assert_eq!(seen["opens"], 1, "{seen}");
    assert_eq!(
        chat_requests(&app).len(),
        1,
        "the reconnect never started another generation"
    );
    browser.close().await;
}

#[tokio::test]
async fn cjk_and_emoji_in_one_byte_pieces_arrive_intact() {
    // Arrange
    let app = spawn_app().await;
    let tokens = ["你好，", "世界！", " Grüße ", "🎉🚀", " 👩‍💻 ", "こんにちは"];
    app.upstream
        .push(Reply::tokens(&tokens).chunked(Chunking::Bytes(1)));
    let browser = Browser::launch().await;
    let page = browser.open(&app.url("/")).await;
    let prompt = "用一句话打招呼 👋";

    // Act
    page.send(prompt).await;
    page.wait_for_state("done").await;

    // Assert
    assert_eq!(page.answer_text().await, tokens.concat());
    let sent: Value = page
        .eval("window.tokenrelayDebug.lastRequestBody.messages")
        .await;
    assert_eq!(sent, json!([{ "role": "user", "content": prompt }]));
    browser.close().await;
}

#[tokio::test]
async fn stop_drops_the_upstream_request_and_shows_the_answer_stopped() {
    // Arrange
    let app = spawn_app().await;
    let (reply, full) = numbered_answer(60, Duration::from_millis(150));
    app.upstream.push(reply);
    let browser = Browser::launch().await;
    let page = browser.open(&app.url("/")).await;
    page.send("Count slowly").await;
    page.wait_for_answer_containing("w1 ").await;

    // Act
    page.click("[data-testid=stop]").await;

    // Assert
    assert!(
        app.upstream.wait_dropped(1, WAIT).await,
        "Stop should drop the upstream request"
    );
    page.wait_for_state("stopped").await;
    let shown = page.answer_text().await;
    assert!(
        full.starts_with(&shown) && shown.len() < full.len(),
        "a stopped answer keeps what arrived and no more, got {shown:?}"
    );
    browser.close().await;
}

#[tokio::test]
async fn an_upstream_500_shows_a_clear_error() {
    let message = "The server had an error while processing your request";
    let reply = Reply::status(
        500,
        json!({ "error": { "message": message, "type": "server_error" } }),
    );

    let (answer, error) = shown_failure(reply).await;

    assert_eq!(answer, "", "nothing was generated");
    for part in ["Error 502", "500", message] {
        assert!(
            error.contains(part),
            "the error should mention {part:?}, got {error:?}"
        );
    }
}

#[tokio::test]
async fn a_stream_cut_mid_answer_shows_a_clear_error() {
    // The role chunk is the first piece, so two tokens get through.
    let reply = Reply::tokens(&["Half ", "an ", "answer ", "and more"]).cut_after(3);

    let (answer, error) = shown_failure(reply).await;

    assert_eq!(answer, "Half an ", "what arrived stays visible");
    for part in ["The generation failed", "upstream_disconnected"] {
        assert!(
            error.contains(part),
            "the error should mention {part:?}, got {error:?}"
        );
    }
}

#[tokio::test]
async fn an_xss_token_renders_as_text_and_runs_nothing() {
    // Arrange
    let app = spawn_app().await;
    let tokens = [
        "<img src=x onerror=\"window.__pwned=1\">",
        "<script>window.__pwned=2</script>",
        "<b>bold?</b>",
    ];
    app.upstream.push(Reply::tokens(&tokens));
    let browser = Browser::launch().await;
    let page = browser.open(&app.url("/")).await;

    // Act
    page.send("Say something nasty").await;
    page.wait_for_state("done").await;
    // An injected <img src=x> would fail to load at about the time this one
    // does, so once this one has failed its handler would already have run.
    let _: bool = page
        .eval(
            "new Promise((done) => { const probe = new Image(); \
             probe.onerror = probe.onload = () => done(true); probe.src = 'x'; })",
        )
        .await;

    // Assert
    assert_eq!(page.answer_text().await, tokens.concat());
    // The answer is markdown, so it is a paragraph; nothing inside it may be
    // an element the model wrote.
    let elements: usize = page
        .eval(&format!(
            "{LAST_ANSWER}.querySelectorAll('[data-testid=answer] :not(p)').length"
        ))
        .await;
    assert_eq!(elements, 0, "model text must never become elements");
    let pwned: Value = page.eval("window.__pwned ?? null").await;
    assert_eq!(pwned, Value::Null, "no script from the answer may run");
    browser.close().await;
}

#[tokio::test]
async fn the_second_turn_sends_the_first_question_and_answer_as_history() {
    // Arrange
    let app = spawn_app().await;
    app.upstream
        .push(Reply::tokens(&["Paris ", "is the capital."]));
    app.upstream
        .push(Reply::tokens(&["About ", "two million."]));
    let browser = Browser::launch().await;
    let page = browser.open(&app.url("/")).await;
    page.send("What is the capital of France?").await;
    page.wait_for_state("done").await;

    // Act
    page.send("How many people live there?").await;
    page.wait_for_state("done").await;

    // Assert
    let expected = json!([
        { "role": "user", "content": "What is the capital of France?" },
        { "role": "assistant", "content": "Paris is the capital." },
        { "role": "user", "content": "How many people live there?" },
    ]);
    let sent: Value = page
        .eval("window.tokenrelayDebug.lastRequestBody.messages")
        .await;
    assert_eq!(sent, expected, "the page's second request");
    let chats = chat_requests(&app);
    assert_eq!(chats.len(), 2, "one upstream request per turn");
    assert_eq!(
        chats[1]["messages"], expected,
        "the upstream's second request"
    );
    browser.close().await;
}

#[tokio::test]
async fn a_dropped_connection_resumes_with_nothing_missing_or_doubled() {
    // Arrange
    let app = spawn_app_with(&[("RESUME_GRACE_SECS", "5")]).await;
    let (reply, full) = numbered_answer(20, Duration::from_millis(100));
    app.upstream.push(reply);
    let relay = CuttingRelay::start(app.addr).await;
    let browser = Browser::launch().await;
    let page = browser.open(&relay.url("/")).await;
    page.record().await;
    page.send("Count for me").await;
    page.wait_for_answer_containing("w2 ").await;

    // Act
    relay.cut();
    page.wait_for_state("done").await;

    // Assert
    assert!(
        relay.has_cut(),
        "the relay should have cut the chat connection"
    );
    let seen = page.recorded().await;
    assert!(
        seen.reconnecting
            .iter()
            .any(|notice| notice.contains("Reconnecting")),
        "the page should say it is reconnecting, saw {:?}",
        seen.reconnecting
    );
    assert_eq!(page.answer_text().await, full);
    assert_grew_in_order(&seen.answers, &full);
    assert_eq!(
        chat_requests(&app).len(),
        1,
        "resuming must not start a second generation"
    );
    browser.close().await;
}

// ---- Shared steps and checks ----

/// An answer of `count` numbered words, one token each, `gap` apart.
pub(crate) fn numbered_answer(count: usize, gap: Duration) -> (Reply, String) {
    let tokens: Vec<String> = (0..count).map(|n| format!("w{n} ")).collect();
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    (Reply::tokens(&tokens).pace(gap), tokens.concat())
}

/// Sends a prompt answered by `reply` and returns the answer text and the
/// error text the page shows once it has settled as an error.
async fn shown_failure(reply: Reply) -> (String, String) {
    let app = spawn_app().await;
    app.upstream.push(reply);
    let browser = Browser::launch().await;
    let page = browser.open(&app.url("/")).await;

    page.send("Tell me something").await;
    page.wait_for_state("error").await;

    let answer = page.answer_text().await;
    let error = page.error_text().await;
    let visible: bool = page
        .eval(&format!(
            "{LAST_ANSWER}.querySelector('[data-testid=error]').checkVisibility()"
        ))
        .await;
    assert!(visible, "the error should be visible");
    browser.close().await;
    (answer, error)
}

/// The bodies of the chat requests the fake upstream received.
pub(crate) fn chat_requests(app: &TestApp) -> Vec<Value> {
    app.upstream
        .requests()
        .into_iter()
        .filter(|request| request.path == "/v1/chat/completions")
        .map(|request| request.body)
        .collect()
}

/// Each state the page showed extends the one before and the last is the
/// whole answer: text arrives in order, nothing is lost and nothing repeated.
fn assert_grew_in_order(states: &[String], full: &str) {
    for pair in states.windows(2) {
        assert!(
            pair[1].starts_with(&pair[0]),
            "the answer went from {:?} to {:?}",
            pair[0],
            pair[1]
        );
    }
    assert_eq!(
        states.last().map(String::as_str),
        Some(full),
        "the last state"
    );
}

// ---- The browser ----

/// One headless Chromium with a fresh profile, for one test.
pub(crate) struct Browser {
    pub(crate) chromium: Chromium,
    handler: JoinHandle<()>,
    profile: PathBuf,
    _turn: MutexGuard<'static, ()>,
}

impl Browser {
    pub(crate) async fn launch() -> Browser {
        Self::launch_with(&[]).await
    }

    /// A browser started with more command-line switches (without `--`).
    pub(crate) async fn launch_with(switches: &[&str]) -> Browser {
        let turn = BROWSER_TURN.lock().await;
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: run scripts/setup.sh to install Chromium for the browser tests"
        );
        let profiles = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chromium-profiles");
        sweep_stale_profiles(&profiles);
        let profile = profiles.join(format!(
            "{}-{}",
            std::process::id(),
            PROFILES.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&profile)
            .unwrap_or_else(|error| panic!("create {}: {error}", profile.display()));
        let config = BrowserConfig::builder()
            .chrome_executable(CHROMIUM)
            .no_sandbox()
            .user_data_dir(&profile)
            .viewport(Screen::LAPTOP.viewport())
            .window_size(Screen::LAPTOP.width, Screen::LAPTOP.height)
            .launch_timeout(WAIT)
            .request_timeout(WAIT)
            // Without these the closed network here makes Chromium retry
            // connections forever (see STYLE.md).
            .args([
                "disable-gpu",
                "disable-quic",
                "no-first-run",
                "disable-background-networking",
                "disable-component-update",
                "disable-sync",
            ])
            .args(switches.iter().copied())
            .build()
            .unwrap_or_else(|error| panic!("browser config: {error}"));
        let (chromium, mut handler) = Chromium::launch(config)
            .await
            .unwrap_or_else(|error| panic!("launch {CHROMIUM}: {error}"));
        // The handler is the CDP connection itself: nothing answers unless it
        // is polled, and one bad message must not stop it.
        let handler = tokio::spawn(async move { while handler.next().await.is_some() {} });
        Browser {
            chromium,
            handler,
            profile,
            _turn: turn,
        }
    }

    /// Opens the chat page at `url` and waits until it is ready to send.
    pub(crate) async fn open(&self, url: &str) -> ChatPage {
        let page = answered(&format!("open {url}"), self.chromium.new_page(url)).await;
        let page = ChatPage { page };
        page.ready().await;
        page
    }

    /// Lets Chromium shut down cleanly; a dropped browser is killed instead.
    pub(crate) async fn close(mut self) {
        let _ = tokio::time::timeout(WAIT, self.chromium.close()).await;
        // One that has not exited by then is killed when dropped.
        let _ = tokio::time::timeout(WAIT, self.chromium.wait()).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Also runs when a test fails midway; Chromium itself is killed when
        // `chromium` is dropped.
        self.handler.abort();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// What `call` answers, or a failure naming `what` if it fails or takes
/// longer than [`WAIT`]: a call Chromium never answers would otherwise hold
/// the whole suite until CI's own limit, where every wait here has a
/// deadline.
pub(crate) async fn answered<T, E: std::fmt::Display>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> T {
    match tokio::time::timeout(WAIT, call).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) => panic!("{what}: {error}"),
        Err(_) => panic!("{what}: Chromium did not answer within {WAIT:?}"),
    }
}

/// Removes the profiles of earlier browsers: Chromium's helper processes
/// may still write to a profile just after the browser exits, so removing it
/// at close is not always final. Profiles of other live test processes stay.
fn sweep_stale_profiles(profiles: &Path) {
    let Ok(entries) = std::fs::read_dir(profiles) else {
        return;
    };
    let ours = std::process::id().to_string();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.split('-').next().unwrap_or_default();
        // Holding BROWSER_TURN, no other browser of this process is running.
        if pid == ours || !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A viewport to look at the page in.
#[derive(Clone, Copy)]
pub(crate) struct Screen {
    width: u32,
    height: u32,
    scale: f64,
    mobile: bool,
}

impl Screen {
    pub(crate) const LAPTOP: Screen = Screen {
        width: 1440,
        height: 900,
        scale: 1.0,
        mobile: false,
    };
    pub(crate) const PHONE: Screen = Screen {
        width: 390,
        height: 844,
        scale: 2.0,
        mobile: true,
    };

    fn viewport(self) -> Viewport {
        Viewport {
            width: self.width,
            height: self.height,
            device_scale_factor: Some(self.scale),
            emulating_mobile: self.mobile,
            has_touch: self.mobile,
            is_landscape: false,
        }
    }
}

/// What [`ChatPage::record`] saw.
#[derive(Debug, Deserialize)]
pub(crate) struct Seen {
    /// Each distinct text of the newest answer, in order.
    pub(crate) answers: Vec<String>,
    /// Each distinct text of the reconnecting notice.
    reconnecting: Vec<String>,
}

/// The demo chat page, seen through its `data-testid` hooks.
pub(crate) struct ChatPage {
    pub(crate) page: Page,
}

impl ChatPage {
    /// Evaluates a JavaScript expression (awaiting a promise) and returns its
    /// JSON value.
    pub(crate) async fn eval<T: DeserializeOwned>(&self, js: &str) -> T {
        let result = answered(
            &format!("evaluate `{js}`"),
            self.page.evaluate_expression(js),
        )
        .await;
        // CDP leaves the value out for null and undefined.
        let value = result.value().cloned().unwrap_or(Value::Null);
        serde_json::from_value(value).unwrap_or_else(|error| panic!("the value of `{js}`: {error}"))
    }

    /// Polls `js` until it is not null, and returns that value.
    pub(crate) async fn wait_for<T: DeserializeOwned>(&self, what: &str, js: &str) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let value: Value = self.eval(js).await;
            if !value.is_null() {
                return serde_json::from_value(value)
                    .unwrap_or_else(|error| panic!("waiting for {what}: {error}"));
            }
            if Instant::now() > deadline {
                panic!(
                    "waited {WAIT:?} for {what}; the answer is {:?}, the error {:?}; {}",
                    self.answer_text().await,
                    self.error_text().await,
                    self.circumstances().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Reloads the page, as a person pressing F5 does, and waits until it
    /// is ready to send again.
    pub(crate) async fn reload(&self) {
        answered("reload", self.page.reload()).await;
        self.ready().await;
    }

    /// Waits for the model list: it loads asynchronously, and a prompt sent
    /// before it would go without a model, unlike what a person does.
    async fn ready(&self) {
        let _: bool = self
            .wait_for(
                "the page to load its models",
                "window.tokenrelayDebug && document.querySelector('[data-testid=model]').value !== '' || null",
            )
            .await;
    }

    /// Types `prompt` as a person does (click, text input, Enter) and waits
    /// for the answer to appear.
    pub(crate) async fn send(&self, prompt: &str) {
        let answers: usize = self.eval(ANSWER_COUNT).await;
        self.click("[data-testid=prompt]").await;
        self.type_text(prompt).await;
        self.press_enter("[data-testid=prompt]").await;
        let _: bool = self
            .wait_for(
                &format!("the answer to {prompt:?} to appear"),
                &format!("{ANSWER_COUNT} > {answers} || null"),
            )
            .await;
    }

    /// Clicks the middle of `selector`, as a person does: the button goes
    /// down and up there, after the element is scrolled into view if it is
    /// not wholly in it.
    ///
    /// Each step answers without waiting for a frame to be drawn: the usual
    /// way (an `IntersectionObserver` to see whether to scroll, a mouse move
    /// first) waits for the renderer's next frame, and on a busy machine
    /// headless Chromium can go longer than [`WAIT`] without one.
    pub(crate) async fn click(&self, selector: &str) {
        let js = format!(
            "(() => {{
                const element = document.querySelector({});
                if (!element) return null;
                const box = () => element.getBoundingClientRect();
                const {{ top, left, bottom, right }} = box();
                if (top < 0 || left < 0 || bottom > innerHeight || right > innerWidth)
                    element.scrollIntoView({{ block: 'center', inline: 'center', behavior: 'instant' }});
                const {{ x, y, width, height }} = box();
                return width > 0 && height > 0 ? [x + width / 2, y + height / 2] : null;
            }})()",
            json!(selector)
        );
        let Some([x, y]): Option<[f64; 2]> = self.eval(&js).await else {
            panic!("click {selector}: there is no such element, or it is not shown");
        };
        for (event, step) in [
            (DispatchMouseEventType::MousePressed, "press"),
            (DispatchMouseEventType::MouseReleased, "release"),
        ] {
            let params = DispatchMouseEventParams::builder()
                .r#type(event)
                .x(x)
                .y(y)
                .button(MouseButton::Left)
                .click_count(1)
                .build()
                .unwrap_or_else(|error| panic!("mouse event: {error}"));
            self.execute(&format!("{step} the mouse button on {selector}"), params)
                .await;
        }
    }

    /// Types `text` where the focus is. insertText is what an IME or a
    /// paste does: one input event with any text, where key events only
    /// cover what a keyboard layout has.
    pub(crate) async fn type_text(&self, text: &str) {
        self.execute(&format!("type {text:?}"), InsertTextParams::new(text))
            .await;
    }

    pub(crate) async fn press_enter(&self, selector: &str) {
        let element = self.element(selector).await;
        answered(
            &format!("press Enter in {selector}"),
            element.press_key("Enter"),
        )
        .await;
    }

    /// Sends one CDP command, `what` naming it if it fails.
    pub(crate) async fn execute<C: Command>(&self, what: &str, command: C) -> C::Response {
        answered(what, self.page.execute(command)).await.result
    }

    pub(crate) async fn element(&self, selector: &str) -> chromiumoxide::Element {
        answered(
            &format!("find {selector}"),
            self.page.find_element(selector),
        )
        .await
    }

    /// Waits until the newest answer has settled, and fails at once if it
    /// settled in another state than `state`.
    pub(crate) async fn wait_for_state(&self, state: &str) {
        let settled: String = self
            .wait_for(
                &format!("the answer to settle as {state:?}"),
                &format!(
                    "[{LAST_ANSWER}?.dataset.state].find((s) => s && s !== 'streaming') ?? null"
                ),
            )
            .await;
        assert_eq!(
            settled,
            state,
            "the answer settled as {settled:?}; it reads {:?}, the error {:?}",
            self.answer_text().await,
            self.error_text().await
        );
    }

    pub(crate) async fn wait_for_answer_containing(&self, text: &str) {
        let js = format!(
            "{LAST_ANSWER}?.querySelector('[data-testid=answer]').textContent.includes({}) || null",
            json!(text)
        );
        let _: bool = self
            .wait_for(&format!("the answer to contain {text:?}"), &js)
            .await;
    }

    /// The text of the newest answer ("" before there is one).
    pub(crate) async fn answer_text(&self) -> String {
        self.eval(&format!(
            "{LAST_ANSWER}?.querySelector('[data-testid=answer]').textContent ?? ''"
        ))
        .await
    }

    /// What a wait that ran out needs said beside the answer: whether the
    /// tab is shown and focused, the newest answer's state, and when each
    /// request to `/api/` started, answered and ended in the page's own
    /// clock (a request still open has no entry yet).
    async fn circumstances(&self) -> String {
        self.eval(&format!(
            "JSON.stringify({{
                now: Math.round(performance.now()),
                visibility: document.visibilityState,
                focused: document.hasFocus(),
                state: {LAST_ANSWER}?.dataset.state ?? null,
                requests: performance.getEntriesByType('resource')
                    .filter((entry) => entry.name.includes('/api/'))
                    .map((entry) => [new URL(entry.name).pathname, Math.round(entry.startTime), Math.round(entry.responseStart), Math.round(entry.responseEnd)]),
            }})"
        ))
        .await
    }

    /// The error shown on the newest answer ("" when there is none).
    pub(crate) async fn error_text(&self) -> String {
        self.eval(&format!(
            "{LAST_ANSWER}?.querySelector('[data-testid=error]')?.textContent ?? ''"
        ))
        .await
    }

    /// Starts recording every state of the newest answer and of the
    /// reconnecting notice. A mutation observer sees each change, where
    /// polling from here could miss a short-lived one on a busy machine.
    pub(crate) async fn record(&self) {
        let js = format!(
            "(() => {{
                const seen = {{ answers: [], reconnecting: [] }};
                const note = (list, text) => {{ if (list.at(-1) !== text) list.push(text); }};
                new MutationObserver(() => {{
                    const last = {LAST_ANSWER};
                    if (!last) return;
                    note(seen.answers, last.querySelector('[data-testid=answer]').textContent);
                    const notice = last.querySelector('[data-testid=reconnecting]');
                    if (notice) note(seen.reconnecting, notice.textContent);
                }}).observe(document.body, {{ subtree: true, childList: true, characterData: true }});
                window.__seen = seen;
                return true;
            }})()"
        );
        let _: bool = self.eval(&js).await;
    }

    pub(crate) async fn recorded(&self) -> Seen {
        self.eval("window.__seen").await
    }

    /// Lays the page out on `screen`, as if it were opened there.
    pub(crate) async fn show_on(&self, screen: Screen) {
        let metrics = SetDeviceMetricsOverrideParams::builder()
            .width(screen.width)
            .height(screen.height)
            .device_scale_factor(screen.scale)
            .mobile(screen.mobile)
            .build()
            .unwrap_or_else(|error| panic!("device metrics: {error}"));
        self.execute(
            &format!("resize to {}x{}", screen.width, screen.height),
            metrics,
        )
        .await;
        // Two frames: one to lay out at the new size, one to paint it.
        let _: bool = self
            .eval("new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(() => done(true))))")
            .await;
    }

    /// Shows the page on `screen` and saves a screenshot as
    /// `target/screenshots/<name>`.
    pub(crate) async fn screenshot(&self, screen: Screen, name: &str) -> PathBuf {
        self.show_on(screen).await;
        let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap_or_else(|| panic!("CARGO_TARGET_TMPDIR has no parent"));
        let dir = target.join("screenshots");
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|error| panic!("create {}: {error}", dir.display()));
        let path = dir.join(name);
        let params = ScreenshotParams::builder()
            .format(CaptureScreenshotFormat::Png)
            .build();
        answered(
            &format!("screenshot {}", path.display()),
            self.page.save_screenshot(params, &path),
        )
        .await;
        path
    }
}

// ---- A connection that breaks on demand ----

/// A TCP relay in front of the proxy that can break the connection carrying
/// the first `POST /api/chat` while the generation goes on: what a train
/// tunnel does to a phone. The proxy has no fault injection of its own, and
/// should not need any.
struct CuttingRelay {
    addr: SocketAddr,
    shared: Arc<RelayShared>,
    accept: JoinHandle<()>,
}

#[derive(Default)]
struct RelayShared {
    /// Set once a connection carried `POST /api/chat`: that one is the victim.
    claimed: AtomicBool,
    cut: Notify,
    has_cut: AtomicBool,
}

impl CuttingRelay {
    async fn start(proxy: SocketAddr) -> CuttingRelay {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|error| panic!("bind the relay: {error}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("relay address: {error}"));
        let shared = Arc::new(RelayShared::default());
        let accept = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(proxy).await else {
                        continue;
                    };
                    tokio::spawn(relay(client, server, Arc::clone(&shared)));
                }
            }
        });
        CuttingRelay {
            addr,
            shared,
            accept,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Closes the chat connection now (or as soon as there is one).
    fn cut(&self) {
        self.shared.cut.notify_one();
    }

    fn has_cut(&self) -> bool {
        self.shared.has_cut.load(Ordering::SeqCst)
    }
}

impl Drop for CuttingRelay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies bytes both ways until either side closes or, on the victim
/// connection, a cut is asked for; returning drops (closes) both sockets.
async fn relay(client: TcpStream, server: TcpStream, shared: Arc<RelayShared>) {
    let (mut client_in, mut client_out) = client.into_split();
    let (mut server_in, mut server_out) = server.into_split();
    let mut victim = false;
    let mut up = vec![0_u8; 16 * 1024];
    let mut down = vec![0_u8; 16 * 1024];
    loop {
        tokio::select! {
            read = client_in.read(&mut up) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let request = &up[..n];
                if !victim
                    && request.windows(15).any(|w| w == b"POST /api/chat ")
                    && !shared.claimed.swap(true, Ordering::SeqCst)
                {
                    victim = true;
                }
                if server_out.write_all(request).await.is_err() {
                    return;
                }
            }
            read = server_in.read(&mut down) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if client_out.write_all(&down[..n]).await.is_err() {
                    return;
                }
            }
            () = shared.cut.notified(), if victim => {
                shared.has_cut.store(true, Ordering::SeqCst);
                return;
            }
        }
    }
}
