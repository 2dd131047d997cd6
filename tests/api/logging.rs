//! What clients send never shapes the server's log: a value they chose is
//! written with its control characters escaped, so it cannot end a line and
//! forge the next one.

use serde_json::json;

use crate::cli::{Server, binary, scratch_dir};
use crate::fake_upstream::FakeUpstream;
use crate::helpers::http_client;

#[tokio::test]
async fn a_model_name_with_line_breaks_cannot_forge_a_log_line() {
    // Arrange
    let upstream = FakeUpstream::start().await;
    let dir = scratch_dir("forged-logs");
    let mut server = Server::start(
        binary()
            .current_dir(&dir)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("UPSTREAM_BASE_URL", upstream.base_url())
            .env("LOG_FORMAT", "text"),
    );
    let addr = server.addr();
    let forged = "m\nFORGED INFO stream finished outcome=stop\r\nFORGED\u{1b}[2K\u{2028}FORGED";

    // Act
    let response = http_client()
        .post(format!("http://{addr}/api/chat"))
        .header("content-type", "application/json")
        .body(json!({"prompt": "hi", "model": forged}).to_string())
        .send()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let status = response.status();
    let _ = response.text().await;
    let finished = server.wait_for("stream finished");
    assert!(server.terminate(), "the server stops on SIGTERM");
    let rest = server.logged();

    // Assert
    assert_eq!(status, 200);
    assert!(
        finished.contains("FORGED INFO") && finished.contains("\\u{a}"),
        "the model is logged, escaped, on its own line: {finished}"
    );
    for line in std::iter::once(&finished).chain(&rest) {
        assert!(
            !line.trim_start().starts_with("FORGED")
                && !line.contains('\u{1b}')
                && !line.contains('\u{2028}'),
            "a client shaped the log: {line:?}"
        );
    }
}
