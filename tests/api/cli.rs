//! The `tokenrelay` binary as an operator meets it: `--help`, `.env`, flags
//! over the environment, refusing bad values, the demo notice, and a clean
//! exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use serde_json::json;
use tokenrelay::config::SETTINGS;

use crate::fake_upstream::{FakeUpstream, Reply};
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

/// How long a run of tokenrelay that should stop by itself (`--help`, a
/// refused setting) may take: one that serves instead fails the test.
const EXITS_WITHIN: Duration = Duration::from_secs(30);

/// Runs tokenrelay to its exit: whether it succeeded, and its stdout and
/// stderr.
pub(crate) fn output(command: &mut Command) -> (bool, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("run tokenrelay: {error}"));
    // Read on their own threads, so that a full pipe cannot stall the exit.
    let readers = [
        child.stdout.take().map(read_all),
        child.stderr.take().map(read_all),
    ];
    let Some(status) = exited_within(&mut child, EXITS_WITHIN) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("tokenrelay did not exit within {EXITS_WITHIN:?}");
    };
    let text = readers
        .into_iter()
        .flatten()
        .map(|reader| reader.join().unwrap_or_default())
        .collect();
    (status.success(), text)
}

fn read_all(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
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
        self.terminate_within(Duration::from_secs(5))
    }

    /// Sends SIGTERM; true if the process then exited successfully within `bound`.
    pub(crate) fn terminate_within(&mut self, bound: Duration) -> bool {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(
            sent.is_ok_and(|status| status.success()),
            "could not send SIGTERM"
        );
        self.exited_within(bound).is_some_and(|success| success)
    }

    /// Whether the process exited successfully, if it exited within `bound`.
    fn exited_within(&mut self, bound: Duration) -> Option<bool> {
        exited_within(&mut self.child, bound).map(|status| status.success())
    }
}

/// How `child` exited, if it did within `bound`.
fn exited_within(child: &mut Child, bound: Duration) -> Option<ExitStatus> {
    let started = std::time::Instant::now();
    while started.elapsed() < bound {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
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

#[test]
fn a_dot_env_line_that_does_not_parse_stops_the_server_naming_the_file_and_line() {
    let dir = scratch_dir("dotenv-broken");
    let path = dir.join(".env");
    std::fs::write(
        &path,
        "LISTEN_ADDR=127.0.0.1:0\nDEFAULT_MODEL=\"never closed\nKEEPALIVE_SECS=5\n",
    )
    .unwrap_or_else(|error| panic!("{error}"));

    let (ok, text) = output(binary().current_dir(&dir));

    assert!(!ok, "a broken .env must stop the server: {text}");
    assert!(
        text.contains(&path.display().to_string()) && text.contains("line 2"),
        "{text}"
    );
}

#[test]
fn a_misspelt_setting_stops_the_server_naming_the_setting_it_resembles() {
    let dir = scratch_dir("misspelt");
    std::fs::write(dir.join(".env"), "LISTEN_ADR=127.0.0.1:0\n")
        .unwrap_or_else(|error| panic!("{error}"));

    let (file_ok, file_text) = output(binary().current_dir(&dir));
    std::fs::remove_file(dir.join(".env")).unwrap_or_else(|error| panic!("{error}"));
    let (env_ok, env_text) = output(binary().current_dir(&dir).env("PROXY_API_KEY", "k"));

    assert!(
        !file_ok && file_text.contains("LISTEN_ADR") && file_text.contains("LISTEN_ADDR"),
        "{file_text}"
    );
    assert!(
        !env_ok && env_text.contains("PROXY_API_KEY") && env_text.contains("PROXY_API_KEYS"),
        "{env_text}"
    );
}

#[test]
fn a_negative_flag_value_is_refused_naming_the_setting_in_either_spelling() {
    let dir = scratch_dir("negative");

    let (apart_ok, apart) = output(binary().current_dir(&dir).args(["--keepalive-secs", "-1"]));
    let (joined_ok, joined) = output(binary().current_dir(&dir).args(["--keepalive-secs=-1"]));

    assert!(
        !apart_ok && apart.contains("invalid KEEPALIVE_SECS"),
        "{apart}"
    );
    assert!(
        !joined_ok && joined.contains("invalid KEEPALIVE_SECS"),
        "{joined}"
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

#[test]
fn values_outside_a_sane_range_stop_the_server_naming_the_variable() {
    let dir = scratch_dir("ranges");
    let cases = [
        ("MAX_CONNECTIONS", "2305843009213693952"),
        ("MAX_CONNECTIONS", "0"),
        ("UPSTREAM_TOTAL_TIMEOUT_SECS", "1e15"),
        ("SHUTDOWN_GRACE_SECS", "inf"),
        ("KEEPALIVE_SECS", "NaN"),
        ("REQUEST_TIMEOUT_SECS", "-1"),
        ("UPSTREAM_RETRIES", "4294967295"),
        ("MAX_BODY_BYTES", "18446744073709551615"),
    ];

    for (variable, value) in cases {
        let mut server = Server::start(
            binary()
                .current_dir(&dir)
                .env("LISTEN_ADDR", "127.0.0.1:0")
                .env(variable, value),
        );
        let exit = server.exited_within(Duration::from_secs(10));
        // The pipes close with the process; what it said is all there then.
        let said: Vec<String> =
            std::iter::from_fn(|| server.lines.recv_timeout(Duration::from_secs(5)).ok())
                .take(1_000)
                .collect();
        assert_eq!(
            exit,
            Some(false),
            "{variable}={value} should stop the server: {said:?}"
        );
        assert!(
            said.iter()
                .any(|line| line.contains(&format!("invalid {variable}"))),
            "{variable}={value}: {said:?}"
        );
        assert!(
            !said.iter().any(|line| line.contains("panicked")),
            "{variable}={value}: {said:?}"
        );
    }
}

/// The grace streams get in the shutdown tests, and the bound the process
/// must exit within after SIGTERM: the grace, the 2 s drain, and slack for
/// a busy machine.
const TEST_GRACE_SECS: u64 = 1;
const EXIT_BOUND: Duration = Duration::from_secs(TEST_GRACE_SECS + 2 + 3);

/// A binary in front of `upstream` whose own timeouts would never end
/// anything during a test, so that only the shutdown deadline can.
fn patient_server(name: &str, upstream: &FakeUpstream) -> (Server, String) {
    let dir = scratch_dir(name);
    let server = Server::start(
        binary()
            .current_dir(&dir)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("UPSTREAM_BASE_URL", upstream.base_url())
            .env("DEFAULT_MODEL", "m")
            .env("SHUTDOWN_GRACE_SECS", TEST_GRACE_SECS.to_string())
            .env("REQUEST_TIMEOUT_SECS", "600")
            .env("UPSTREAM_HEADERS_TIMEOUT_SECS", "600")
            .env("UPSTREAM_RETRIES", "0"),
    );
    let addr = server.addr();
    (server, addr)
}

async fn send_raw(addr: &str, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|error| panic!("connect: {error}"));
    stream
        .write_all(bytes)
        .await
        .unwrap_or_else(|error| panic!("write: {error}"));
    stream
}

fn chat_request(body: &str, declared: usize) -> Vec<u8> {
    format!(
        "POST /api/chat HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {declared}\r\n\r\n{body}"
    )
    .into_bytes()
}

#[tokio::test]
async fn shutdown_ends_in_time_with_a_client_that_stopped_reading() {
    let upstream = FakeUpstream::start().await;
    let token = format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {"content": "x".repeat(500)}}]})
    );
    upstream.push(Reply::endless(token));
    let (mut server, addr) = patient_server("stuck-reader", &upstream);
    let body = r#"{"prompt":"x"}"#;

    let _never_read = send_raw(&addr, &chat_request(body, body.len())).await;
    assert!(upstream.wait_for_requests(1, Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert!(
        server.terminate_within(EXIT_BOUND),
        "the server should exit within {EXIT_BOUND:?}"
    );
}

#[tokio::test]
async fn shutdown_ends_in_time_with_a_request_waiting_for_upstream_headers() {
    let upstream = FakeUpstream::start().await;
    upstream.push(Reply::tokens(&["late"]).headers_after(Duration::from_secs(600)));
    let (mut server, addr) = patient_server("waiting", &upstream);
    let body = r#"{"prompt":"x"}"#;

    let _waiting = send_raw(&addr, &chat_request(body, body.len())).await;
    assert!(upstream.wait_for_requests(1, Duration::from_secs(10)).await);

    assert!(
        server.terminate_within(EXIT_BOUND),
        "the server should exit within {EXIT_BOUND:?}"
    );
}

#[tokio::test]
async fn shutdown_ends_in_time_with_clients_trickling_a_body_and_headers() {
    let upstream = FakeUpstream::start().await;
    let (mut server, addr) = patient_server("trickle", &upstream);

    let mut body = send_raw(&addr, &chat_request("{", 100)).await;
    let mut head = send_raw(&addr, b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ").await;
    let trickling = tokio::spawn(async move {
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if body.write_all(b" ").await.is_err() || head.write_all(b"a").await.is_err() {
                return;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert!(
        server.terminate_within(EXIT_BOUND),
        "the server should exit within {EXIT_BOUND:?}"
    );
    trickling.abort();
}
