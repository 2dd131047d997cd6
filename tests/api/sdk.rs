//! Real OpenAI clients pointed at tokenrelay: the official Python and Node
//! SDKs and the Vercel AI SDK, installed into `tests/sdk` by
//! `scripts/setup.sh`. Each scenario runs every client's script as a
//! subprocess against its own proxy and fake upstream, and asserts on the
//! JSON line the script prints: what a user of that SDK would see. The AI
//! SDK's chat side, on `/api/ui/chat`, runs through the same [`Script`]
//! from `ui_chat`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::failures::content_chunk;
use crate::fake_upstream::Reply;
use crate::helpers::{TestApp, spawn_app};

/// Longer than any script takes (about a second), short enough that a hung
/// one fails the test with its name.
const SCRIPT_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
enum Client {
    Python,
    Node,
    AiSdk,
}

const CLIENTS: [Client; 3] = [Client::Python, Client::Node, Client::AiSdk];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_text_arrives_exactly_and_without_usage() {
    let tokens = ["Hel", "lo, ", "wörld ", "👋", "\n", "done."];
    for (client, result) in run_all("text", || Reply::tokens(&tokens)).await {
        assert_eq!(result["text"], tokens.concat(), "{client:?}: {result}");
        assert_eq!(
            result["usage"],
            Value::Null,
            "{client:?}: nobody asked for usage"
        );
        assert_eq!(result["finish_reason"], "stop", "{client:?}: {result}");
        assert_eq!(result["error"], Value::Null, "{client:?}: {result}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_are_assembled() {
    let results = run_all("tools", || Reply::fixture("openai-parallel-tool-calls.sse")).await;
    let expected = [
        (
            "call_JMW1whyEaYG438VE1OIflxA2",
            "GetWeatherArgs",
            json!({"city": "Edinburgh", "country": "GB", "units": "c"}),
        ),
        (
            "call_DNYTawLBoN8fj3KN6qU9N1Ou",
            "get_stock_price",
            json!({"ticker": "AAPL", "exchange": "NASDAQ"}),
        ),
    ];
    for (client, result) in results {
        assert_eq!(result["error"], Value::Null, "{client:?}: {result}");
        let calls = result["tool_calls"].as_array().cloned().unwrap_or_default();
        assert_eq!(calls.len(), expected.len(), "{client:?}: {result}");
        for (call, (id, name, arguments)) in calls.iter().zip(&expected) {
            assert_eq!(call["id"], *id, "{client:?}: {call}");
            assert_eq!(call["name"], *name, "{client:?}: {call}");
            let parsed: Value =
                serde_json::from_str(call["arguments"].as_str().unwrap_or_default())
                    .unwrap_or_else(|error| {
                        panic!("{client:?}: arguments are not JSON ({error}): {call}")
                    });
            assert_eq!(parsed, *arguments, "{client:?}: {call}");
        }
        assert_eq!(
            result["finish_reason"], "tool_calls",
            "{client:?}: {result}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_reported_when_asked() {
    for (client, result) in run_all("usage", || Reply::tokens(&["a", "b", "c"])).await {
        assert_eq!(result["text"], "abc", "{client:?}: {result}");
        assert_eq!(
            result["usage"],
            json!({"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}),
            "{client:?}: {result}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_failure_raises_the_sdks_status_error() {
    let failing = || {
        Reply::status(
            500,
            json!({"error": {"message": "The server had an error", "type": "server_error"}}),
        )
    };
    for (client, result) in run_all("failure", failing).await {
        let error = &result["error"];
        assert_eq!(
            error["status"], 502,
            "{client:?}: our 502 reaches the SDK: {result}"
        );
        let (class, family) = match client {
            Client::Python => ("InternalServerError", "APIStatusError"),
            Client::Node => ("InternalServerError", "APIError"),
            Client::AiSdk => ("APICallError", "APICallError"),
        };
        assert_eq!(error["class"], class, "{client:?}: {result}");
        assert!(
            error["classes"]
                .as_array()
                .is_some_and(|classes| classes.contains(&json!(family))),
            "{client:?}: the error should be a {family}: {result}"
        );
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|message| message.contains("The server had an error")),
            "{client:?}: the upstream's explanation reaches the user: {result}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_inside_the_stream_raises_an_sdk_error_after_the_text_so_far() {
    let failing = || {
        let error = json!({"error": {"message": "overloaded midway", "type": "server_error"}});
        Reply::sse([content_chunk("so far"), format!("data: {error}\n\n")].concat())
    };
    for (client, result) in run_all("stream-error", failing).await {
        assert_eq!(result["text"], "so far", "{client:?}: {result}");
        let error = &result["error"];
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|message| message.contains("overloaded midway")),
            "{client:?}: the stream must fail with the upstream's message: {result}"
        );
        match client {
            // The SDKs' own class for an error inside a stream: no status.
            Client::Python | Client::Node => {
                assert_eq!(error["class"], "APIError", "{client:?}: {result}")
            }
            // The AI SDK hands over the chunk's `error` object itself.
            Client::AiSdk => assert_eq!(error["class"], "Object", "{client:?}: {result}"),
        }
        assert_ne!(
            result["finish_reason"], "stop",
            "{client:?}: a failed stream never looks complete"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_stream_early_drops_the_upstream_request() {
    let runs = CLIENTS.map(|client| async move {
        // Arrange: a long answer that would take seconds to complete.
        let app = spawn_app().await;
        let tokens: Vec<String> = (0..200).map(|n| format!("t{n} ")).collect();
        let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
        app.upstream
            .push(Reply::tokens(&tokens).pace(Duration::from_millis(20)));

        // Act: the script closes the stream after the first text, then
        // stays alive, so only the SDK's own close can drop the connection.
        let script = Script::start(client, &app, "early-close").await;

        // Assert
        let result = script.result.clone();
        assert!(
            result["text"]
                .as_str()
                .is_some_and(|text| text.starts_with("t0 ")),
            "{client:?}: {result}"
        );
        assert_eq!(result["error"], Value::Null, "{client:?}: {result}");
        let dropped = app.upstream.wait_dropped(1, Duration::from_secs(5)).await;
        script.finish().await;
        assert!(
            dropped,
            "{client:?}: closing the stream should drop the upstream request"
        );
    });
    join_all(runs).await;
}

// ---- helpers -------------------------------------------------------------

/// Runs `scenario` with every client, each against its own proxy whose
/// upstream answers with `reply()`, and returns what each printed.
async fn run_all(scenario: &str, reply: impl Fn() -> Reply) -> Vec<(Client, Value)> {
    let runs = CLIENTS.map(|client| {
        let reply = reply();
        async move {
            let app = spawn_app().await;
            app.upstream.push(reply);
            let script = Script::start(client, &app, scenario).await;
            let result = script.result.clone();
            script.finish().await;
            (client, result)
        }
    });
    join_all(runs).await
}

/// One client script, running.
pub(crate) struct Script {
    /// What the test calls it in its messages.
    name: String,
    child: Child,
    /// Held open until [`Script::finish`]: the early-close scripts wait for it.
    stdin: Option<ChildStdin>,
    stderr: std::thread::JoinHandle<String>,
    /// The JSON line it printed.
    pub(crate) result: Value,
}

impl Script {
    /// Starts `client`'s script for `scenario` against `app` and waits for
    /// its result line.
    async fn start(client: Client, app: &TestApp, scenario: &str) -> Script {
        let name = format!("{client:?}");
        Script::spawn(name, client.command(), &app.url("/v1"), scenario).await
    }

    /// Starts `command BASE_URL SCENARIO` in `tests/sdk` and waits for its
    /// result line.
    pub(crate) async fn spawn(
        name: String,
        mut command: Command,
        base_url: &str,
        scenario: &str,
    ) -> Script {
        let mut child = command
            .args([base_url, scenario])
            .current_dir(sdk_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("{name}: could not start its script ({error}); {SETUP}")
            });
        let stdin = child.stdin.take();
        let mut stderr_pipe = child.stderr.take();
        // Read on its own thread, so a chatty script never blocks on a full pipe.
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(pipe) = stderr_pipe.as_mut() {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        });
        let stdout = child.stdout.take();
        let line = tokio::time::timeout(
            SCRIPT_LIMIT,
            tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                if let Some(stdout) = stdout {
                    let _ = BufReader::new(stdout).read_line(&mut line);
                }
                line
            }),
        )
        .await;
        let mut script = Script {
            name,
            child,
            stdin,
            stderr,
            result: Value::Null,
        };
        match line {
            Ok(Ok(line)) if !line.trim().is_empty() => {
                script.result = serde_json::from_str(&line).unwrap_or_else(|error| {
                    let name = &script.name;
                    panic!("{name} {scenario}: the result is not JSON ({error}): {line}")
                });
                script
            }
            _ => {
                let stderr = script.stop().await;
                let name = &script.name;
                panic!("{name} {scenario}: the script printed no result\n{stderr}");
            }
        }
    }

    /// Lets the script end (closing its stdin) and checks it ended well.
    pub(crate) async fn finish(mut self) {
        let name = self.name;
        self.stdin.take();
        let mut child = self.child;
        let exited = tokio::time::timeout(
            SCRIPT_LIMIT,
            tokio::task::spawn_blocking(move || {
                let status = child.wait();
                (child, status)
            }),
        )
        .await;
        let stderr = self.stderr;
        match exited {
            Ok(Ok((_, Ok(status)))) if status.success() => {}
            Ok(Ok((_, status))) => {
                let stderr = stderr.join().unwrap_or_default();
                panic!("{name}: the script failed ({status:?})\n{stderr}");
            }
            _ => panic!("{name}: the script did not exit after its stdin closed"),
        }
    }

    /// Kills the script and returns what it wrote to stderr.
    async fn stop(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = std::mem::replace(&mut self.stderr, std::thread::spawn(String::new));
        tokio::task::spawn_blocking(move || stderr.join().unwrap_or_default())
            .await
            .unwrap_or_default()
    }
}

const SETUP: &str = "the SDK tests need the clients that `scripts/setup.sh` installs into tests/sdk: run scripts/setup.sh";

impl Client {
    /// The command that runs this client's script, failing the test when the
    /// client is not installed: a missing SDK must never pass silently.
    fn command(self) -> Command {
        let dir = sdk_dir();
        match self {
            Client::Python => {
                let python = dir.join(".venv/bin/python");
                assert!(
                    python.exists() && has_python_openai(&dir),
                    "{} lacks the openai package; {SETUP}",
                    python.display()
                );
                let mut command = Command::new(python);
                command.arg("python_client.py");
                command
            }
            Client::Node => node_script("node_client.mjs"),
            Client::AiSdk => node_script("ai_sdk_client.mjs"),
        }
    }
}

/// `node script`, failing the test when the Node clients are not installed.
pub(crate) fn node_script(script: &str) -> Command {
    for package in ["openai", "ai", "@ai-sdk/openai-compatible"] {
        let path = sdk_dir().join("node_modules").join(package);
        assert!(path.exists(), "{} is missing; {SETUP}", path.display());
    }
    let mut command = Command::new("node");
    command.arg(script);
    command
}

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk")
}

/// Whether the venv has the openai package, whatever its Python version.
fn has_python_openai(dir: &Path) -> bool {
    std::fs::read_dir(dir.join(".venv/lib"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|python| python.path().join("site-packages/openai").is_dir())
}
