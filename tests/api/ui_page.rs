//! The `useChat` example in `examples/ai-sdk-chat/`, the AI SDK's own React
//! hook, in headless Chromium against a real proxy: what a person sees when
//! they ask, watch the answer stream, and reload the page halfway through.
//! The example's `serve.mjs` builds the bundle from the pinned npm packages
//! and serves it on one origin with tokenrelay, as its README tells a reader
//! to run it; the page hooks (`data-testid`) are the demo page's, so the demo
//! page's browser helpers drive it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::browser::{
    ANSWER_COUNT, Browser, ChatPage, LAST_ANSWER, Screen, answered, chat_requests, numbered_answer,
};
use crate::helpers::spawn_app_with;

/// Long enough that the reloaded page is back in time on a noisy machine.
const GRACE: (&str, &str) = ("RESUME_GRACE_SECS", "30");

/// Building the bundle and starting Node; generous because CI is noisy.
const SERVER_START: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_reload_mid_answer_resumes_it_to_its_end_once() {
    // Arrange
    let app = spawn_app_with(&[GRACE]).await;
    let (reply, full) = numbered_answer(30, Duration::from_millis(150));
    app.upstream.push(reply);
    let server = ExampleServer::start(&app.url("")).await;
    let browser = Browser::launch().await;
    let page = open(&browser, &server.url).await;
    page.record().await;
    page.send("Count slowly").await;
    page.wait_for_answer_containing("w3 ").await;
    let before = page.recorded().await.answers;

    // Act
    answered("reload the page", page.page.reload()).await;
    wait_until_ready(&page).await;
    page.record().await;
    let _: bool = page
        .wait_for(
            "the resumed answer to reach its end",
            &format!(
                "{LAST_ANSWER}?.querySelector('[data-testid=answer]').textContent === {} || null",
                json!(full)
            ),
        )
        .await;
    page.wait_for_state("done").await;
    let after = page.recorded().await.answers;

    // Assert
    let streamed: Vec<&String> = before.iter().filter(|text| !text.is_empty()).collect();
    assert!(
        streamed.len() >= 2 && streamed.iter().all(|text| full.starts_with(text.as_str())),
        "the answer should grow in order before the reload, saw {before:?}"
    );
    assert_ne!(
        before.last(),
        Some(&full),
        "the reload should come mid-answer"
    );
    assert!(
        after.iter().all(|text| full.starts_with(text.as_str())),
        "after the reload every state is a prefix of the answer, saw {after:?}"
    );
    assert_eq!(page.answer_text().await, full);
    let answers: usize = page.eval(ANSWER_COUNT).await;
    assert_eq!(answers, 1, "one answer on the page");
    let shown: String = page.eval("document.body.innerText").await;
    assert_eq!(
        shown.matches(full.as_str()).count(),
        1,
        "the answer is shown exactly once: {shown:?}"
    );
    assert_eq!(
        chat_requests(&app).len(),
        1,
        "the reload must not start a second generation"
    );
    let screenshot = page
        .screenshot(Screen::LAPTOP, "ai-sdk-chat-resumed.png")
        .await;
    assert!(screenshot.exists(), "{}", screenshot.display());
    browser.close().await;
}

/// Opens the example at `url` and waits until a person could type.
async fn open(browser: &Browser, url: &str) -> ChatPage {
    let page = browser
        .chromium
        .new_page(url)
        .await
        .unwrap_or_else(|error| panic!("open {url}: {error}"));
    let page = ChatPage { page };
    wait_until_ready(&page).await;
    page
}

/// React renders after the bundle loads, so the prompt box comes a moment
/// after the page does.
async fn wait_until_ready(page: &ChatPage) {
    let _: bool = page
        .wait_for(
            "the prompt box",
            "document.querySelector('[data-testid=prompt]') ? true : null",
        )
        .await;
}

/// `node examples/ai-sdk-chat/serve.mjs`: the example built and served on a
/// free port, forwarding `/api/` to the proxy under test.
struct ExampleServer {
    url: String,
    node: Child,
}

impl ExampleServer {
    async fn start(relay: &str) -> ExampleServer {
        let dir = example_dir();
        assert!(
            dir.join("node_modules/@ai-sdk/react").exists(),
            "{} has no node_modules: run scripts/setup.sh",
            dir.display()
        );
        let mut node = Command::new("node")
            .arg("serve.mjs")
            .current_dir(&dir)
            .env("PORT", "0")
            .env("TOKENRELAY_URL", relay)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("start node serve.mjs: {error}"));
        let stdout = node.stdout.take();
        let line = tokio::time::timeout(
            SERVER_START,
            tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                if let Some(stdout) = stdout {
                    let _ = BufReader::new(stdout).read_line(&mut line);
                }
                line
            }),
        )
        .await;
        // Dropping the server on a panic stops Node too.
        let mut server = ExampleServer {
            url: String::new(),
            node,
        };
        server.url = match line {
            Ok(Ok(line)) => line.trim().strip_prefix("listening on ").map(str::to_owned),
            _ => None,
        }
        .unwrap_or_else(|| panic!("serve.mjs did not say where it listens"));
        server
    }
}

impl Drop for ExampleServer {
    fn drop(&mut self) {
        let _ = self.node.kill();
        let _ = self.node.wait();
    }
}

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ai-sdk-chat")
}
