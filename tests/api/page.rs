//! The demo page as a chat application, in the same headless Chromium as
//! `browser.rs` and with its helpers: markdown rendered while it streams and
//! never trusted as HTML, copying, regenerating, editing and retrying,
//! conversations that survive a reload (a streaming answer included),
//! settings and the API key, scrolling that leaves a reader alone, and
//! screenshots in light and dark under `target/screenshots/`.
//!
//! Each test checks what a person sees or what the upstream was sent, never
//! how fast: every wait is `browser.rs`'s generous `WAIT`.

use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::browser::{
    PermissionDescriptor, PermissionSetting, SetPermissionParams,
};
use chromiumoxide::cdp::browser_protocol::emulation::{
    MediaFeature, SetEmulatedMediaParams, SetFocusEmulationEnabledParams,
};
use chromiumoxide::cdp::browser_protocol::input::{
    DispatchMouseEventParams, DispatchMouseEventType,
};
use serde_json::{Value, json};

use crate::browser::{
    ANSWER_COUNT, Browser, ChatPage, LAST_ANSWER, Screen, answered, chat_requests, numbered_answer,
};
use crate::fake_upstream::Reply;
use crate::helpers::{spawn_app, spawn_app_with};

/// An answer with one of each thing a model writes in markdown.
const MARKDOWN: &str = "## Streaming markdown\n\n\
    Here is a list:\n\n\
    - first item\n\
    - second item with `inline code`\n\n\
    | Name | Value |\n\
    |------|-------|\n\
    | alpha | 1 |\n\
    | beta | 2 |\n\n\
    > Quoted **bold** and *emphasis*.\n\n\
    ```rust\n\
    fn main() {\n    println!(\"hi\");\n}\n\
    ```\n\n\
    See [the docs](https://example.com/docs) for more.\n";

/// The code of the block in [`MARKDOWN`], as a reader copies it.
const CODE: &str = "fn main() {\n    println!(\"hi\");\n}";

/// The scroller of the conversation, as a JavaScript expression.
const SCROLLER: &str = "document.getElementById('conversation')";

#[tokio::test]
async fn markdown_streamed_in_small_pieces_renders_code_table_list_and_link() {
    // Arrange
    let app = spawn_app().await;
    let pieces = pieces_of(MARKDOWN, 3);
    let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
    app.upstream
        .push(Reply::tokens(&pieces).pace(Duration::from_millis(25)));
    let browser = Browser::launch().await;
    let page = browser.open(&app.url("/")).await;
    // Notes whether the code block was on the page before its closing fence arrived.
    let _: bool = page
        .eval(&format!(
            "(() => {{ window.__openFence = false;
                new MutationObserver(() => {{
                    const code = {LAST_ANSWER}?.querySelector('pre code');
                    if (code && code.textContent.includes('fn main') && !code.textContent.includes({code}))
                        window.__openFence = true;
                }}).observe(document.body, {{ subtree: true, childList: true, characterData: true }});
                return true; }})()",
            code = json!(CODE)
        ))
        .await;

    // Act
    page.send("Show me markdown").await;
    // A reader selects the heading while the rest still streams in.
    let _: bool = page
        .wait_for(
            "the list to start",
            &format!(
                "(() => {{ const answer = {LAST_ANSWER}; const h2 = answer.querySelector('h2');
                    if (!answer.querySelector('li') || !h2) return null;
                    window.__heading = h2;
                    const range = document.createRange(); range.selectNodeContents(h2);
                    getSelection().removeAllRanges(); getSelection().addRange(range);
                    return true; }})()"
            ),
        )
        .await;
    page.wait_for_state("done").await;

    // Assert
    let shown: Value = page
        .eval(&format!(
            "(() => {{ const a = {LAST_ANSWER}.querySelector('[data-testid=answer]');
                const texts = (selector) => [...a.querySelectorAll(selector)].map((e) => e.textContent);
                const link = a.querySelector('a');
                return {{
                    heading: texts('h2'),
                    items: texts('li'),
                    inline: texts('li code'),
                    headers: texts('th'),
                    cells: texts('td'),
                    quote: texts('blockquote strong, blockquote em'),
                    code: texts('pre code'),
                    language: texts('[data-testid=code-lang]'),
                    copyButtons: a.querySelectorAll('[data-testid=copy-code]').length,
                    codeFont: getComputedStyle(a.querySelector('pre code')).fontFamily,
                    link: {{ text: link.textContent, href: link.getAttribute('href'),
                             target: link.target, rel: link.rel }},
                    selection: getSelection().toString(),
                    sameHeading: window.__heading === a.querySelector('h2'),
                    openFence: window.__openFence,
                }}; }})()"
        ))
        .await;
    assert_eq!(shown["heading"], json!(["Streaming markdown"]), "{shown}");
    assert_eq!(
        shown["items"],
        json!(["first item", "second item with inline code"]),
        "{shown}"
    );
    assert_eq!(shown["inline"], json!(["inline code"]), "{shown}");
    assert_eq!(shown["headers"], json!(["Name", "Value"]), "{shown}");
    assert_eq!(
        shown["cells"],
        json!(["alpha", "1", "beta", "2"]),
        "{shown}"
    );
    assert_eq!(shown["quote"], json!(["bold", "emphasis"]), "{shown}");
    assert_eq!(shown["code"], json!([CODE]), "{shown}");
    assert_eq!(shown["language"], json!(["rust"]), "{shown}");
    assert_eq!(shown["copyButtons"], 1, "{shown}");
    let font = shown["codeFont"].as_str().unwrap_or_default();
    assert!(
        font.contains("monospace"),
        "code in a monospace font: {font}"
    );
    assert_eq!(
        shown["link"],
        json!({ "text": "the docs", "href": "https://example.com/docs",
                "target": "_blank", "rel": "noopener noreferrer" }),
        "{shown}"
    );
    assert_eq!(
        shown["openFence"], true,
        "an unfinished code block shows as code while it streams: {shown}"
    );
    assert_eq!(
        shown["selection"], "Streaming markdown",
        "re-rendering kept the reader's selection: {shown}"
    );
    assert_eq!(
        shown["sameHeading"], true,
        "a finished block is not rebuilt: {shown}"
    );
    browser.close().await;
}

#[tokio::test]
async fn xss_through_markdown_renders_inert() {
    // Arrange
    let app = spawn_app().await;
    let tokens = [
        "[click me](javascript:window.__pwned=1) ",
        "[shout](JaVaScRiPt:window.__pwned=2) ",
        "<img src=x onerror=\"window.__pwned=3\"> ",
        "![pic](x\" onerror=\"window.__pwned=4) ",
        "<a href=\"javascript:window.__pwned=5\">raw link</a> ",
        "<svg onload=\"window.__pwned=6\"></svg>\n\n",
        "<script>window.__pwned=7</script>\n",
    ];
    app.upstream.push(Reply::tokens(&tokens));
    let browser = Browser::launch().await;
    let page = browser.open(&app.url("/")).await;

    // Act
    page.send("Try to break out").await;
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
    let found: Value = page
        .eval(&format!(
            "(() => {{ const a = {LAST_ANSWER}.querySelector('[data-testid=answer]');
                const all = [...a.querySelectorAll('*')];
                return {{
                    scriptHrefs: [...a.querySelectorAll('a')].map((l) => l.getAttribute('href') ?? '')
                        .filter((href) => /^\\s*javascript:/i.test(href)),
                    handlers: all.flatMap((e) => [...e.attributes].map((at) => at.name))
                        .filter((name) => name.startsWith('on')),
                    dangerous: all.filter((e) => ['IMG', 'SVG', 'SCRIPT', 'svg'].includes(e.tagName)).length,
                    text: a.textContent,
                }}; }})()"
        ))
        .await;
    assert_eq!(found["scriptHrefs"], json!([]), "{found}");
    assert_eq!(found["handlers"], json!([]), "{found}");
    assert_eq!(found["dangerous"], 0, "{found}");
    let text = found["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("<img src=x onerror=\"window.__pwned=3\">") && text.contains("<script>"),
        "raw HTML from the model is shown as the text it is: {text:?}"
    );
    let pwned: Value = page.eval("window.__pwned ?? null").await;
    assert_eq!(pwned, Value::Null, "no script from the answer may run");
    browser.close().await;
}

#[tokio::test]
async fn copy_puts_the_answer_and_the_code_on_the_clipboard() {
    // Arrange
    let app = spawn_app().await;
    app.upstream.push(Reply::tokens(&[MARKDOWN]));
    let browser = Browser::launch().await;
    let page = browser.open(&app.url("/")).await;
    allow_clipboard(&page, &app.url("")).await;
    page.send("Give me code").await;
    page.wait_for_state("done").await;

    // Act
    page.click("[data-testid=copy-answer]").await;
    let answer = read_clipboard(&page, MARKDOWN).await;
    page.click("[data-testid=copy-code]").await;
    let code = read_clipboard(&page, CODE).await;

    // Assert
    assert_eq!(answer, MARKDOWN, "Copy on the answer copies its markdown");
    assert_eq!(code, CODE, "Copy on the block copies its code");
    browser.close().await;
}

#[tokio::test]
async fn regenerate_and_edit_send_the_right_history() {
    // Arrange
    let app = spawn_app().await;
    for answer in [
        "First answer.",
        "Second answer.",
        "Second, again.",
        "Edited answer.",
    ] {
        app.upstream.push(Reply::tokens(&[answer]));
    }
    let browser = Browser::launch().await;
    let page = browser.open(&app.url("/")).await;
    page.send("First question").await;
    page.wait_for_state("done").await;
    page.send("Second question").await;
    page.wait_for_state("done").await;

    // Act: regenerate the last answer, then edit the first question.
    page.click(&format!("{LAST_ANSWER_SELECTOR} [data-testid=regenerate]"))
        .await;
    page.wait_for_answer_containing("Second, again.").await;
    page.wait_for_state("done").await;
    let after_regenerate = shown_turns(&page).await;
    page.click("[data-role=user] [data-testid=edit]").await;
    let _: bool = page
        .eval("(() => { document.querySelector('[data-testid=edit-input]').value = ''; return true; })()")
        .await;
    page.click("[data-testid=edit-input]").await;
    page.type_text("First question, edited").await;
    page.click("[data-testid=edit-send]").await;
    page.wait_for_answer_containing("Edited answer.").await;
    page.wait_for_state("done").await;

    // Assert
    let chats = chat_requests(&app);
    assert_eq!(chats.len(), 4, "one upstream request per answer");
    assert_eq!(
        chats[2]["messages"],
        json!([
            { "role": "user", "content": "First question" },
            { "role": "assistant", "content": "First answer." },
            { "role": "user", "content": "Second question" },
        ]),
        "Regenerate sends the history without the answer it replaces"
    );
    assert_eq!(
        after_regenerate,
        json!([
            "First question",
            "First answer.",
            "Second question",
            "Second, again."
        ]),
        "the regenerated answer takes the old one's place"
    );
    assert_eq!(
        chats[3]["messages"],
        json!([{ "role": "user", "content": "First question, edited" }]),
        "an edited message replaces itself and everything after it"
    );
    assert_eq!(
        shown_turns(&page).await,
        json!(["First question, edited", "Edited answer."])
    );
    browser.close().await;
}

#[tokio::test]
async fn retry_after_an_error_sends_the_same_turn_again() {
    // Arrange
    let app = spawn_app().await;
    app.upstream.push(Reply::status(
        500,
        json!({ "error": { "message": "overloaded", "type": "server_error" } }),
    ));
    app.upstream.push(Reply::tokens(&["Better ", "now."]));
    let browser = Browser::launch().await;
    let page = browser.open(&app.url("/")).await;
    page.send("Are you there?").await;
    page.wait_for_state("error").await;

    // Act
    page.click(&format!("{LAST_ANSWER_SELECTOR} [data-testid=retry]"))
        .await;
    page.wait_for_answer_containing("Better now.").await;
    page.wait_for_state("done").await;

    // Assert
    let chats = chat_requests(&app);
    assert_eq!(chats.len(), 2);
    assert_eq!(chats[0]["messages"], chats[1]["messages"], "the same turn");
    assert_eq!(
        shown_turns(&page).await,
        json!(["Are you there?", "Better now."]),
        "the failed answer gave way to the retried one"
    );
    browser.close().await;
}

#[tokio::test]
async fn reasoning_folds_and_tool_calls_show_name_and_arguments() {
    // Arrange
    let app = spawn_app().await;
    app.upstream
        .push(Reply::fixture("groq-gptoss-reasoning-tool-call.sse"));
    let browser = Browser::launch().await;
    let page = browser.open(&app.url("/")).await;
    page.send("Look something up").await;
    page.wait_for_state("done").await;
    let open_before: bool = page
        .eval(&format!(
            "{LAST_ANSWER}.querySelector('[data-testid=thinking]').open"
        ))
        .await;

    // Act
    page.click(&format!(
        "{LAST_ANSWER_SELECTOR} [data-testid=thinking] summary"
    ))
    .await;

    // Assert
    let shown: Value = page
        .eval(&format!(
            "(() => {{ const m = {LAST_ANSWER}; const thinking = m.querySelector('[data-testid=thinking]');
                return {{ open: thinking.open, reasoning: thinking.querySelector('.thinking-text').textContent,
                          name: m.querySelector('.tool-name').textContent,
                          args: m.querySelector('.tool-args').textContent }}; }})()"
        ))
        .await;
    assert_eq!(
        shown["open"], !open_before,
        "the summary folds and unfolds it"
    );
    assert!(
        shown["reasoning"]
            .as_str()
            .is_some_and(|text| text.starts_with("We need")),
        "{shown}"
    );
    assert_eq!(shown["name"], "get_something_by_name");
    assert_eq!(shown["args"], r#"{"name":"example"}"#);
    browser.close().await;
}

#[tokio::test]
async fn a_reload_mid_answer_resumes_in_place_with_nothing_doubled() {
    // Arrange: the answer outlives the page's connection by the grace period.
    let app = spawn_app_with(&[("RESUME_GRACE_SECS", "5")]).await;
    let (reply, full) = numbered_answer(30, Duration::from_millis(100));
    app.upstream.push(reply);
    let browser = Browser::launch().await;
    let page = browser.open(&app.url("/")).await;
    page.send("Count for me").await;
    page.wait_for_answer_containing("w3 ").await;

    // Act
    page.reload().await;
    page.wait_for_state("done").await;

    // Assert
    assert_eq!(
        page.answer_text().await,
        full,
        "nothing lost, nothing doubled"
    );
    assert_eq!(
        shown_turns(&page).await,
        json!(["Count for me", full]),
        "the answer finished in place"
    );
    assert_eq!(
        chat_requests(&app).len(),
        1,
        "the reload must not start a second generation"
    );
    browser.close().await;
}

#[tokio::test]
async fn conversations_are_kept_switched_renamed_and_deleted() {
    // Arrange
    let app = spawn_app().await;
    app.upstream.push(Reply::tokens(&["About cats."]));
    app.upstream.push(Reply::tokens(&["About dogs."]));
    let browser = Browser::launch().await;
    let page = browser.open(&app.url("/")).await;
    page.send("Tell me about cats").await;
    page.wait_for_state("done").await;
    page.click("[data-testid=new-chat]").await;
    page.send("Tell me about dogs").await;
    page.wait_for_state("done").await;

    // Act: reload, open the first one, rename it, delete the second.
    page.reload().await;
    let titles_after_reload = titles(&page).await;
    page.click(&conversation_button(
        "Tell me about cats",
        "conversation-title",
    ))
    .await;
    let cats = shown_turns(&page).await;
    page.click(&conversation_button(
        "Tell me about cats",
        "rename-conversation",
    ))
    .await;
    let _: bool = page
        .eval("(() => { const box = document.querySelector('[data-testid=rename-input]'); box.value = 'Cats'; box.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter' })); return true; })()")
        .await;
    page.click(&conversation_button(
        "Tell me about dogs",
        "conversation-title",
    ))
    .await;
    for _ in 0..2 {
        page.click(&conversation_button(
            "Tell me about dogs",
            "delete-conversation",
        ))
        .await;
    }
    page.reload().await;

    // Assert
    assert_eq!(
        titles_after_reload,
        json!(["Tell me about dogs", "Tell me about cats"]),
        "both conversations survive a reload, newest first"
    );
    assert_eq!(cats, json!(["Tell me about cats", "About cats."]));
    assert_eq!(
        titles(&page).await,
        json!(["Cats"]),
        "renamed, and the other deleted"
    );
    assert_eq!(
        shown_turns(&page).await,
        json!(["Tell me about cats", "About cats."]),
        "deleting the open conversation opens the one left"
    );
    browser.close().await;
}

#[tokio::test]
async fn a_second_tab_keeps_the_first_tabs_conversations() {
    // Arrange: two tabs of the page, sharing the browser's storage.
    let app = spawn_app().await;
    app.upstream.push(Reply::tokens(&["About cats."]));
    app.upstream.push(Reply::tokens(&["About dogs."]));
    let browser = Browser::launch().await;
    let first = browser.open(&app.url("/")).await;
    let second = browser.open(&app.url("/")).await;

    // Act: a person works in one tab at a time, and Chromium only feeds
    // input to the tab in front.
    in_front(&first).await;
    first.send("Tell me about cats").await;
    first.wait_for_state("done").await;
    let _: bool = second
        .wait_for(
            "the other tab's conversation",
            "[...document.querySelectorAll('[data-testid=conversation-title]')].some((b) => b.textContent === 'Tell me about cats') || null",
        )
        .await;
    in_front(&second).await;
    second.click("[data-testid=new-chat]").await;
    second.send("Tell me about dogs").await;
    second.wait_for_state("done").await;
    in_front(&first).await;
    first.reload().await;

    // Assert
    let mut shown = titles(&first).await;
    let Value::Array(list) = &mut shown else {
        panic!("titles: {shown}");
    };
    list.sort_by_key(ToString::to_string);
    assert_eq!(
        shown,
        json!(["Tell me about cats", "Tell me about dogs"]),
        "neither tab's save undid the other's turns"
    );
    browser.close().await;
}

#[tokio::test]
async fn on_a_phone_the_conversations_are_a_drawer() {
    // Arrange
    let app = spawn_app().await;
    app.upstream.push(Reply::tokens(&["About cats."]));
    app.upstream.push(Reply::tokens(&["About dogs."]));
    let browser = Browser::launch().await;
    let page = browser.open(&app.url("/")).await;
    page.send("Tell me about cats").await;
    page.wait_for_state("done").await;
    page.click("[data-testid=new-chat]").await;
    page.send("Tell me about dogs").await;
    page.wait_for_state("done").await;
    page.show_on(Screen::PHONE).await;
    let closed = sidebar_visible(&page).await;

    // Act
    page.click("[data-testid=sidebar-toggle]").await;
    let opened = sidebar_visible(&page).await;
    page.screenshot(Screen::PHONE, "drawer-phone-light.png")
        .await;
    page.click(&conversation_button(
        "Tell me about cats",
        "conversation-title",
    ))
    .await;

    // Assert
    assert!(!closed, "on a phone the list starts out of the way");
    assert!(opened, "the menu button opens it");
    assert!(
        !sidebar_visible(&page).await,
        "choosing a conversation closes it"
    );
    assert_eq!(
        shown_turns(&page).await,
        json!(["Tell me about cats", "About cats."])
    );
    browser.close().await;
}

#[tokio::test]
async fn a_401_asks_for_the_key_and_the_turn_goes_through_with_it() {
    // Arrange
    let app = spawn_app_with(&[("PROXY_API_KEYS", "the-right-key")]).await;
    app.upstream.push(Reply::tokens(&["Welcome ", "in."]));
    let browser = Browser::launch().await;
    let page = browser.open(&app.url("/")).await;

    // Act
    page.send("Let me in").await;
    page.wait_for_state("error").await;
    let _: bool = page
        .wait_for(
            "the key dialog",
            "document.querySelector('[data-testid=key-dialog]').open || null",
        )
        .await;
    let asked: Value = page
        .eval(
            "(() => { const reason = document.querySelector('[data-testid=key-reason]');
                return { text: reason.textContent, code: [...reason.querySelectorAll('code')].map((c) => c.textContent) }; })()",
        )
        .await;
    let error = page.error_text().await;
    page.click("[data-testid=key-input]").await;
    page.type_text("the-right-key").await;
    page.click("[data-testid=key-save]").await;
    page.wait_for_answer_containing("Welcome in.").await;
    page.wait_for_state("done").await;

    // Assert
    let text = asked["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("Authorization: Bearer <key>") && !text.contains('`'),
        "the server's message, with its code shown as code: {asked}"
    );
    assert_eq!(asked["code"], json!(["Authorization: Bearer <key>"]));
    assert!(
        error.contains("Error 401") && !error.contains('`'),
        "the refused answer says why, without raw backticks: {error:?}"
    );
    let chats: Vec<_> = app
        .upstream
        .requests()
        .into_iter()
        .filter(|request| request.path == "/v1/chat/completions")
        .collect();
    assert_eq!(chats.len(), 1, "the refused request cost nothing upstream");
    let stored: String = page
        .eval("document.querySelector('[data-testid=api-key]').value")
        .await;
    assert_eq!(stored, "the-right-key", "the key is kept in the settings");
    browser.close().await;
}

#[tokio::test]
async fn settings_reach_the_upstream_and_the_system_prompt_is_per_conversation() {
    // Arrange
    let app = spawn_app().await;
    app.upstream.set_models(Reply::status(
        200,
        json!({ "object": "list", "data": [
            { "id": "fake-model", "object": "model" },
            { "id": "other-model", "object": "model" },
        ] }),
    ));
    app.upstream.push(Reply::tokens(&["Set."]));
    app.upstream.push(Reply::tokens(&["Fresh."]));
    let browser = Browser::launch().await;
    let page = browser.open(&app.url("/")).await;

    // Act
    let models: Value = page
        .eval("[...document.querySelectorAll('[data-testid=model] option')].map((o) => o.value)")
        .await;
    page.click("[data-testid=settings-toggle]").await;
    let _: bool = page
        .eval(
            "(() => { const set = (id, value) => { const field = document.querySelector(`[data-testid=${id}]`);
                field.value = value; field.dispatchEvent(new Event(field.tagName === 'SELECT' ? 'change' : 'input', { bubbles: true })); };
              set('model', 'other-model'); set('temperature', '0.3'); set('max-tokens', '77'); set('system', 'Be brief.');
              return true; })()",
        )
        .await;
    page.send("Configured?").await;
    page.wait_for_state("done").await;
    page.click("[data-testid=new-chat]").await;
    page.send("And here?").await;
    page.wait_for_state("done").await;

    // Assert
    assert_eq!(
        models,
        json!(["fake-model", "other-model"]),
        "from /v1/models"
    );
    let chats = chat_requests(&app);
    assert_eq!(chats[0]["model"], "other-model");
    assert_eq!(chats[0]["temperature"], 0.3);
    assert_eq!(chats[0]["max_tokens"], 77);
    assert_eq!(
        chats[0]["messages"],
        json!([{ "role": "system", "content": "Be brief." }, { "role": "user", "content": "Configured?" }])
    );
    assert_eq!(
        chats[1]["messages"],
        json!([{ "role": "user", "content": "And here?" }]),
        "a new conversation starts without the other's system prompt"
    );
    assert_eq!(chats[1]["temperature"], 0.3, "the other settings stay");
    browser.close().await;
}

#[tokio::test]
async fn scrolling_up_while_streaming_is_not_pulled_back() {
    // Arrange: an answer long enough to scroll, still streaming for a while.
    let app = spawn_app().await;
    let lines: Vec<String> = (0..120).map(|n| format!("Line {n}\n\n")).collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    app.upstream
        .push(Reply::tokens(&lines).pace(Duration::from_millis(60)));
    let browser = Browser::launch().await;
    let page = browser.open(&app.url("/")).await;
    page.send("Write a lot").await;
    let _: bool = page
        .wait_for(
            "the answer to overflow the window",
            &format!("{SCROLLER}.scrollHeight > {SCROLLER}.clientHeight + 600 || null"),
        )
        .await;

    // Act: the reader scrolls up with the mouse wheel.
    page.execute(
        "scroll up",
        DispatchMouseEventParams::builder()
            .r#type(DispatchMouseEventType::MouseWheel)
            .x(700.0)
            .y(400.0)
            .delta_x(0.0)
            .delta_y(-400.0)
            .build()
            .unwrap_or_else(|error| panic!("wheel event: {error}")),
    )
    .await;
    let _: bool = page
        .wait_for(
            "the wheel to scroll",
            &format!("{SCROLLER}.scrollHeight - {SCROLLER}.scrollTop - {SCROLLER}.clientHeight > 300 || null"),
        )
        .await;
    // Wheel scrolling may be animated: wait for it to come to rest.
    let left_at: f64 = page
        .wait_for(
            "the scrolling to stop",
            &format!(
                "new Promise((done) => {{ const before = {SCROLLER}.scrollTop;
                    setTimeout(() => done({SCROLLER}.scrollTop === before ? before : null), 300); }})"
            ),
        )
        .await;
    let grown_to: usize = page
        .eval(&format!("{LAST_ANSWER}.querySelectorAll('p').length"))
        .await;
    let _: bool = page
        .wait_for(
            "ten more lines",
            &format!(
                "{LAST_ANSWER}.querySelectorAll('p').length >= {} || null",
                grown_to + 10
            ),
        )
        .await;
    let still_at: f64 = page.eval(&format!("{SCROLLER}.scrollTop")).await;
    let jump_visible: bool = page
        .eval("document.querySelector('[data-testid=jump-latest]').checkVisibility()")
        .await;
    page.click("[data-testid=jump-latest]").await;
    let _: bool = page
        .wait_for(
            "the end of the answer",
            &format!("{SCROLLER}.scrollHeight - {SCROLLER}.scrollTop - {SCROLLER}.clientHeight < 5 || null"),
        )
        .await;
    page.wait_for_state("done").await;
    let end_gap: f64 = page
        .eval(&format!(
            "new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(() => done({SCROLLER}.scrollHeight - {SCROLLER}.scrollTop - {SCROLLER}.clientHeight))))"
        ))
        .await;

    // Assert
    assert!(
        (still_at - left_at).abs() < 2.0,
        "the reader stays where they scrolled to: {left_at} then {still_at}"
    );
    assert!(jump_visible, "a way back to the latest text is offered");
    assert!(
        end_gap < 5.0,
        "after jumping it follows again: {end_gap} px from the end"
    );
    browser.close().await;
}

#[tokio::test]
async fn send_is_disabled_with_nothing_to_send_and_enter_while_streaming_says_why() {
    // Arrange
    let app = spawn_app().await;
    let (reply, _) = numbered_answer(30, Duration::from_millis(100));
    app.upstream.push(reply);
    app.upstream.push(Reply::tokens(&["Next answer."]));
    let browser = Browser::launch().await;
    let page = browser.open(&app.url("/")).await;
    let empty = send_button(&page).await;

    // Act
    page.send("Count slowly").await;
    page.wait_for_answer_containing("w1 ").await;
    page.click("[data-testid=prompt]").await;
    page.type_text("Follow-up").await;
    page.press_enter("[data-testid=prompt]").await;
    let hint: String = page
        .eval("document.querySelector('[data-testid=composer-hint]').checkVisibility() ? document.querySelector('[data-testid=composer-hint]').textContent : ''")
        .await;
    let answers_while_streaming: usize = page.eval(ANSWER_COUNT).await;
    let kept: String = page
        .eval("document.querySelector('[data-testid=prompt]').value")
        .await;
    page.wait_for_state("done").await;
    let typed = send_button(&page).await;

    // Assert
    assert_eq!(
        empty,
        json!({ "disabled": true, "aria": "true" }),
        "nothing to send"
    );
    assert_eq!(
        typed,
        json!({ "disabled": false, "aria": "false" }),
        "something to send"
    );
    assert!(
        hint.contains("still streaming"),
        "Enter while streaming says why it did nothing: {hint:?}"
    );
    assert_eq!(answers_while_streaming, 1, "nothing was queued");
    assert_eq!(kept, "Follow-up", "the typed message waits in the box");
    assert_eq!(chat_requests(&app).len(), 1);
    browser.close().await;
}

#[tokio::test]
async fn the_theme_toggle_overrides_the_system_setting() {
    // Arrange: a system that prefers dark.
    let app = spawn_app().await;
    let browser = Browser::launch().await;
    let page = browser.open(&app.url("/")).await;
    prefer_dark(&page).await;
    let system = background(&page).await;

    // Act
    set_theme(&page, "Light").await;
    let light = background(&page).await;
    page.reload().await;
    let after_reload = background(&page).await;
    set_theme(&page, "Dark").await;
    let dark = background(&page).await;

    // Assert
    assert_eq!(system, "rgb(23, 24, 27)", "the system's dark");
    assert_eq!(
        light, "rgb(255, 255, 255)",
        "light chosen over the system's dark"
    );
    assert_eq!(after_reload, light, "the choice is remembered");
    assert_eq!(dark, system);
    browser.close().await;
}

#[tokio::test]
async fn screenshots_of_a_finished_answer_are_saved_under_target() {
    // Arrange
    let app = spawn_app().await;
    app.upstream.push(Reply::tokens(&["About cats."]));
    let answer = [
        "**Server-Sent Events** let a server push a stream of text events ",
        "to the browser over one long-lived HTTP response:\n\n",
        "- each event is a few `data:` lines\n- the browser reads them as they arrive\n\n",
        "```js\nconst source = new EventSource(\"/api/chat?prompt=hi\");\n",
        "source.onmessage = (event) => console.log(event.data);\n```\n\n",
        "| | SSE | WebSocket |\n|---|---|---|\n| direction | server → client | both |\n",
        "| reconnects | built in | by hand |\n",
    ];
    // Paced like a real model, so the figures in the picture look like one.
    app.upstream
        .push(Reply::tokens(&answer).pace(Duration::from_millis(40)));
    let browser = Browser::launch().await;
    let page = browser.open(&app.url("/")).await;
    page.send("Tell me about cats").await;
    page.wait_for_state("done").await;
    page.click("[data-testid=new-chat]").await;
    page.send("Explain Server-Sent Events in two sentences")
        .await;
    page.wait_for_state("done").await;

    // Act
    let mut shots = Vec::new();
    for theme in ["Light", "Dark"] {
        set_theme(&page, theme).await;
        let theme = theme.to_lowercase();
        for (screen, name) in [(Screen::LAPTOP, "laptop"), (Screen::PHONE, "phone")] {
            shots.push(
                page.screenshot(screen, &format!("answer-{name}-{theme}.png"))
                    .await,
            );
        }
    }

    // Assert
    for path in shots {
        let png =
            std::fs::read(&path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
            "{} should be a real PNG picture",
            path.display()
        );
    }
    browser.close().await;
}

// ---- Steps and checks ----

/// The newest assistant message, as a CSS selector.
const LAST_ANSWER_SELECTOR: &str = "[data-testid=message][data-role=assistant]:last-child";

/// `text` in pieces of `size` characters, as a model streams it.
fn pieces_of(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(size)
        .map(|piece| piece.iter().collect())
        .collect()
}

/// The text of every message of the open conversation, in order.
async fn shown_turns(page: &ChatPage) -> Value {
    page.eval(
        "[...document.querySelectorAll('[data-testid=message]')].map((m) =>
            (m.querySelector('[data-testid=user-text]') ?? m.querySelector('[data-testid=answer]')).textContent)",
    )
    .await
}

/// The conversation titles in the sidebar, top first.
async fn titles(page: &ChatPage) -> Value {
    page.eval(
        "[...document.querySelectorAll('[data-testid=conversation-title]')].map((b) => b.textContent)",
    )
    .await
}

/// A button of the sidebar entry titled `title`, as a selector.
fn conversation_button(title: &str, testid: &str) -> String {
    format!(
        "[data-testid=conversation]:has([data-testid=conversation-title][title={title}]) [data-testid={testid}]",
        title = json!(title)
    )
}

async fn in_front(page: &ChatPage) {
    answered("bring the tab to the front", page.page.bring_to_front()).await;
}

async fn sidebar_visible(page: &ChatPage) -> bool {
    page.eval("document.querySelector('[data-testid=sidebar]').checkVisibility({ visibilityProperty: true })")
        .await
}

async fn send_button(page: &ChatPage) -> Value {
    page.eval(
        "(() => { const b = document.querySelector('[data-testid=send]');
            return { disabled: b.disabled, aria: b.getAttribute('aria-disabled') }; })()",
    )
    .await
}

/// Lets the page write to and read from the clipboard, as a person who
/// allowed it would, and keeps it focused (clipboard calls need focus).
async fn allow_clipboard(page: &ChatPage, origin: &str) {
    for name in ["clipboard-read", "clipboard-write"] {
        let mut permission = PermissionDescriptor::new(name);
        permission.allow_without_sanitization = Some(true);
        page.execute(
            &format!("grant {name}"),
            SetPermissionParams::builder()
                .permission(permission)
                .setting(PermissionSetting::Granted)
                .origin(origin.trim_end_matches('/'))
                .build()
                .unwrap_or_else(|error| panic!("permission: {error}")),
        )
        .await;
    }
    page.execute("focus emulation", SetFocusEmulationEnabledParams::new(true))
        .await;
}

/// Waits for the clipboard to hold `expected` (the copy is asynchronous)
/// and returns what it last held.
async fn read_clipboard(page: &ChatPage, expected: &str) -> String {
    page.wait_for(
        "the clipboard",
        &format!(
            "navigator.clipboard.readText().then((text) => text === {} ? text : null, () => null)",
            json!(expected)
        ),
    )
    .await
}

async fn prefer_dark(page: &ChatPage) {
    let feature = MediaFeature::new("prefers-color-scheme", "dark");
    page.execute(
        "emulate dark",
        SetEmulatedMediaParams::builder()
            .features(vec![feature])
            .build(),
    )
    .await;
}

async fn background(page: &ChatPage) -> String {
    page.eval("getComputedStyle(document.body).backgroundColor")
        .await
}

/// Clicks the theme button until it shows `theme`.
async fn set_theme(page: &ChatPage, theme: &str) {
    for _ in 0..3 {
        let shown: String = page
            .eval("document.getElementById('theme-label').textContent")
            .await;
        if shown == theme {
            return;
        }
        page.click("[data-testid=theme]").await;
    }
    panic!("the theme button never showed {theme:?}");
}
