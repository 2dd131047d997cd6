//! Several replicas sharing one real `redis-server` (`REDIS_URL`): a stream
//! started on one replica resumes on another, a `DELETE` anywhere stops it,
//! and a replica that dies does not leave followers elsewhere hanging.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cli::{Server, binary, scratch_dir};
use crate::fake_upstream::{FakeUpstream, Reply};
use crate::helpers::{Transcript, http_client, parse_frames, stream_id_of};

/// A `redis-server` of our own on a free loopback port.
struct Redis {
    child: Child,
    url: String,
}

impl Redis {
    fn start() -> Self {
        // Port 0 means "no TCP listener" to Redis, so pick a free port first.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .unwrap_or_else(|error| panic!("no free port: {error}"));
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("redis-server is missing ({error}): run scripts/setup.sh")
            });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pong(port) {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            url: format!("redis://127.0.0.1:{port}/"),
        }
    }
}

fn pong(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let mut answer = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut answer).is_ok()
        && &answer == b"+PONG\r\n"
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tokenrelay process sharing `redis` in front of `upstream`.
fn replica(name: &str, redis: &Redis, upstream: &FakeUpstream) -> (Server, String) {
    let dir = scratch_dir(name);
    let server = Server::start(
        binary()
            .current_dir(&dir)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("UPSTREAM_BASE_URL", upstream.base_url())
            .env("DEFAULT_MODEL", "m")
            .env("RESUME_GRACE_SECS", "5")
            .env("REDIS_URL", &redis.url),
    );
    let addr = server.addr();
    (server, format!("http://{addr}"))
}

fn numbered(count: usize, gap: Duration) -> (Reply, String) {
    let tokens: Vec<String> = (0..count).map(|n| format!("w{n} ")).collect();
    let text = tokens.concat();
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    (Reply::tokens(&tokens).pace(gap), text)
}

async fn start_chat(base: &str) -> reqwest::Response {
    let response = http_client()
        .post(format!("{base}/api/chat"))
        .header("content-type", "application/json")
        .body(json!({"prompt": "count"}).to_string())
        .send()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(response.status(), 200);
    response
}

/// Reads until `tokens` token events arrived; returns the whole frames seen.
async fn read_tokens(response: &mut reqwest::Response, tokens: usize) -> String {
    let mut text = String::new();
    while text.matches(r#""type":"token""#).count() < tokens {
        match tokio::time::timeout(Duration::from_secs(10), response.chunk()).await {
            Ok(Ok(Some(piece))) => text.push_str(&String::from_utf8_lossy(&piece)),
            other => panic!("the stream ended early: {other:?}"),
        }
    }
    text[..text.rfind("\n\n").map_or(0, |end| end + 2)].to_owned()
}

async fn follow(base: &str, stream_id: &str, last_event_id: Option<&str>) -> Transcript {
    let mut request = http_client().get(format!("{base}/api/chat/{stream_id}/events"));
    if let Some(last) = last_event_id {
        request = request.header("last-event-id", last);
    }
    Transcript::read(
        request
            .send()
            .await
            .unwrap_or_else(|error| panic!("{error}")),
    )
    .await
}

#[tokio::test]
async fn a_stream_started_on_one_replica_resumes_on_another() {
    let redis = Redis::start();
    let upstream = FakeUpstream::start().await;
    let (reply, text) = numbered(30, Duration::from_millis(30));
    upstream.push(reply);
    let (_a, on_a) = replica("replica-a1", &redis, &upstream);
    let (_b, on_b) = replica("replica-b1", &redis, &upstream);

    let mut first = start_chat(&on_a).await;
    let id = stream_id_of(&first);
    let seen = read_tokens(&mut first, 5).await;
    drop(first);
    let frames = parse_frames(&seen);
    let last = frames
        .iter()
        .rev()
        .find_map(|frame| frame.id.clone())
        .unwrap_or_default();
    let rest = follow(&on_b, &id, Some(&last)).await;

    let before: String = frames
        .iter()
        .filter_map(|frame| frame.json())
        .filter(|event| event["type"] == "token")
        .filter_map(|event| event["token"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(rest.status, 200);
    assert_eq!(
        format!("{before}{}", rest.text_of("token")),
        text,
        "nothing missing, nothing twice"
    );
    let seqs: Vec<u64> = rest
        .frames
        .iter()
        .filter_map(|frame| frame.id.as_deref()?.rsplit_once(':')?.1.parse().ok())
        .collect();
    let last_seq: u64 = last
        .rsplit_once(':')
        .and_then(|(_, seq)| seq.parse().ok())
        .unwrap_or(0);
    assert_eq!(
        seqs,
        ((last_seq + 1)..(last_seq + 1 + seqs.len() as u64)).collect::<Vec<_>>()
    );
    assert_eq!(rest.terminal()[0]["type"], "finish");
    assert!(rest.ends_with_done());
    assert_eq!(upstream.requests().len(), 1, "paid for once");
}

#[tokio::test]
async fn delete_on_one_replica_stops_the_upstream_of_another() {
    let redis = Redis::start();
    let upstream = FakeUpstream::start().await;
    let (reply, _) = numbered(200, Duration::from_millis(30));
    upstream.push(reply);
    let (_a, on_a) = replica("replica-a2", &redis, &upstream);
    let (_b, on_b) = replica("replica-b2", &redis, &upstream);
    let mut running = start_chat(&on_a).await;
    let id = stream_id_of(&running);
    read_tokens(&mut running, 2).await;

    let stopped = http_client()
        .delete(format!("{on_b}/api/chat/{id}"))
        .send()
        .await
        .unwrap_or_else(|error| panic!("{error}"));

    assert_eq!(stopped.status(), 204);
    assert!(
        upstream.wait_dropped(1, Duration::from_secs(5)).await,
        "A's upstream request was dropped"
    );
    let rest = Transcript::read(running).await;
    assert_eq!(
        rest.terminal(),
        [json!({"type": "finish", "finish_reason": "cancelled", "usage": null})]
    );
    let unknown = http_client()
        .delete(format!("{on_b}/api/chat/{}", "ab".repeat(16)))
        .send()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn followers_elsewhere_get_an_error_when_the_running_replica_dies() {
    let redis = Redis::start();
    let upstream = FakeUpstream::start().await;
    let (reply, _) = numbered(300, Duration::from_millis(30));
    upstream.push(reply);
    let (mut a, on_a) = replica("replica-a3", &redis, &upstream);
    let (_b, on_b) = replica("replica-b3", &redis, &upstream);
    let mut running = start_chat(&on_a).await;
    let id = stream_id_of(&running);
    read_tokens(&mut running, 2).await;
    let follower = tokio::spawn({
        let on_b = on_b.clone();
        let id = id.clone();
        async move { follow(&on_b, &id, None).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    a.kill();
    let started = Instant::now();
    let transcript = follower.await.unwrap_or_else(|error| panic!("{error}"));

    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the follower must not hang"
    );
    let ending = transcript.terminal();
    assert_eq!(ending.len(), 1, "{ending:?}");
    assert_eq!(ending[0]["type"], "error");
    assert_eq!(ending[0]["code"], "upstream_disconnected");
    assert!(transcript.ends_with_done());
    assert!(
        !transcript.text_of("token").is_empty(),
        "it saw the answer until the crash"
    );
    drop(running);
}
