//! The `tokenrelay` binary as an operator meets it: `--help`, `.env`, flags
//! over the environment, refusing bad values, the demo notice, and a clean
//! exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;
use tokenrelay::config::SETTINGS;

use crate::helpers::{Transcript, http_client};

pub(crate) fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tokenrelay"));
    for setting in SETTINGS {
        command.env_remove(setting.name);
    }
    command.env("RUST_LOG", "info");
    command
}

/// A fresh directory, so that no `.env` from elsewhere is picked up.
pub(crate) fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tokenrelay-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|error| panic!("{error}"));
    dir
}

fn output(command: &mut Command) -> (bool, String) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("run tokenrelay: {error}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// A running server and the lines it has logged so far.
pub(crate) struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Server {
    pub(crate) fn start(command: &mut Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("spawn tokenrelay: {error}"));
        let (sender, lines) = mpsc::channel();
        let stdout = child
            .stdout
            .take()
            .map(|out| Box::new(out) as Box<dyn std::io::Read + Send>);
        let stderr = child
            .stderr
            .take()
            .map(|err| Box::new(err) as Box<dyn std::io::Read + Send>);
        for pipe in [stdout, stderr].into_iter().flatten() {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = sender.send(line);
                }
            });
        }
        Self { child, lines }
    }

    /// Waits for a logged line containing `needle`.
    pub(crate) fn wait_for(&self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(10)) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(error) => panic!("no log line with {needle:?}: {error}"),
            }
        }
    }

    /// The address from the "listening" log line (text format).
    pub(crate) fn addr(&self) -> String {
        let line = self.wait_for("listening");
        line.split_whitespace()
            .find_map(|word| word.strip_prefix("addr="))
            .unwrap_or_else(|| panic!("no addr in {line:?}"))
            .to_owned()
    }

    /// Every line logged and not yet read by [`Server::wait_for`].
    pub(crate) fn logged(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// Kills the process outright, as a crash would.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(
            sent.is_ok_and(|status| status.success()),
            "could not send SIGTERM"
        );
        for _ in 0..100 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn help_documents_every_setting() {
    let (ok, text) = output(binary().arg("--help"));

    assert!(ok);
    for setting in SETTINGS {
        let flag = format!("--{}", setting.name.to_ascii_lowercase().replace('_', "-"));
        assert!(text.contains(&flag), "--help lacks {flag}");
        assert!(text.contains(setting.name), "--help lacks {}", setting.name);
    }
}

#[test]
fn an_invalid_value_stops_the_server_naming_the_variable() {
    let dir = scratch_dir("invalid");

    let (env_ok, env_text) = output(
        binary()
            .current_dir(&dir)
            .env("UPSTREAM_IDLE_TIMEOUT_SECS", "soon"),
    );
    let (flag_ok, flag_text) = output(
        binary()
            .current_dir(&dir)
            .args(["--listen-addr", "nowhere"]),
    );

    assert!(
        !env_ok && env_text.contains("UPSTREAM_IDLE_TIMEOUT_SECS"),
        "{env_text}"
    );
    assert!(!flag_ok && flag_text.contains("LISTEN_ADDR"), "{flag_text}");
}

#[test]
fn dot_env_is_read_and_flags_win_over_it() {
    let dir = scratch_dir("dotenv");
    std::fs::write(
        dir.join(".env"),
        "KEEPALIVE_SECS=never\nLISTEN_ADDR=127.0.0.1:0\n",
    )
    .unwrap_or_else(|error| panic!("{error}"));

    let (ok, text) = output(binary().current_dir(&dir));
    assert!(
        !ok && text.contains("KEEPALIVE_SECS"),
        ".env should be read: {text}"
    );

    let mut server = Server::start(binary().current_dir(&dir).args(["--keepalive-secs", "5"]));
    server.wait_for("listening");
    assert!(
        server.terminate(),
        "the flag should override .env and the server run"
    );
}

#[tokio::test]
async fn the_binary_announces_the_demo_model_serves_it_and_stops_on_sigterm() {
    let dir = scratch_dir("demo");
    let mut server = Server::start(binary().current_dir(&dir).env("LISTEN_ADDR", "127.0.0.1:0"));

    server.wait_for("demo model");
    let addr = server.addr();
    let response = http_client()
        .post(format!("http://{addr}/api/chat"))
        .header("content-type", "application/json")
        .body(json!({"prompt": "hello binary", "max_tokens": 5}).to_string())
        .send()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let transcript = Transcript::read(response).await;

    assert_eq!(transcript.status, 200);
    assert!(transcript.text_of("token").starts_with("You said"));
    assert!(server.terminate(), "SIGTERM should stop the server cleanly");
}

#[tokio::test]
async fn logs_have_one_line_per_stream_and_no_secrets_or_prompts() {
    let upstream = crate::fake_upstream::FakeUpstream::start().await;
    upstream.push(crate::fake_upstream::Reply::status(
        401,
        json!({"error": {"message": "key sk-upstream-hush rejected"}}),
    ));
    let dir = scratch_dir("logs");
    let base_url = upstream.base_url();
    let mut server = Server::start(
        binary()
            .current_dir(&dir)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("UPSTREAM_BASE_URL", &base_url)
            .env("UPSTREAM_API_KEY", "sk-upstream-hush")
            .env("PROXY_API_KEYS", "client-hush")
            .env("DEFAULT_MODEL", "m")
            .env("LOG_FORMAT", "json"),
    );
    let line = server.wait_for("listening");
    let addr = serde_json::from_str::<serde_json::Value>(&line)
        .ok()
        .and_then(|entry| entry["addr"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no addr in {line:?}"));
    let send = |prompt: &'static str| {
        http_client()
            .post(format!("http://{addr}/api/chat"))
            .header("content-type", "application/json")
            .bearer_auth("client-hush")
            .body(json!({"prompt": prompt}).to_string())
            .send()
    };

    let refused = send("purple elephant one")
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let served = Transcript::read(
        send("purple elephant two")
            .await
            .unwrap_or_else(|error| panic!("{error}")),
    )
    .await;
    let finished = server.wait_for("stream finished");
    assert!(server.terminate());
    let rest: Vec<String> = server.lines.try_iter().collect();

    assert_eq!(refused.status(), 502);
    assert!(
        !refused
            .text()
            .await
            .unwrap_or_default()
            .contains("sk-upstream-hush")
    );
    assert_eq!(served.text_of("token"), "Hello world");
    let entry: serde_json::Value =
        serde_json::from_str(&finished).unwrap_or_else(|error| panic!("{error}: {finished}"));
    assert_eq!(entry["stream_id"].as_str().map(str::len), Some(32));
    assert_eq!(entry["model"], "m");
    assert_eq!(entry["outcome"], "stop");
    assert_eq!(entry["tokens"], 2);
    assert!(entry["ttft_ms"].is_number() && entry["duration_ms"].is_number());
    for line in std::iter::once(&finished).chain(&rest) {
        for secret in ["sk-upstream-hush", "client-hush", "purple elephant"] {
            assert!(
                !line.contains(secret),
                "{secret:?} leaked into the log: {line}"
            );
        }
    }
}
