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
use crate::helpers::{Transcript, http_client, json_body, parse_frames, stream_id_of};

/// A `redis-server` of our own on a free loopback port, which a test may
/// stop and start again on the same port, or freeze.
struct Redis {
    child: Child,
    port: u16,
    url: String,
}

impl Redis {
    fn start() -> Self {
        // Port 0 means "no TCP listener" to Redis, so pick a free port first.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .unwrap_or_else(|error| panic!("no free port: {error}"));
        Self {
            child: redis_server(port),
            port,
            url: format!("redis://127.0.0.1:{port}/"),
        }
    }

    /// Stops the server; what it held is gone, as after a restart without
    /// persistence.
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port (after [`Redis::stop`]).
    fn start_again(&mut self) {
        self.child = redis_server(self.port);
    }

    /// SIGSTOP: connections stay open, nothing answers; thawed when the
    /// guard is dropped, whatever happens in between.
    fn freeze(&self) -> Frozen {
        signal(&self.child, "-STOP");
        Frozen(self.child.id())
    }

    /// One command, as `redis-cli` would send it; the raw reply.
    fn command(&self, args: &[&str]) -> String {
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))
            .unwrap_or_else(|error| panic!("connect to redis: {error}"));
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        stream
            .write_all(request.as_bytes())
            .unwrap_or_else(|error| panic!("send to redis: {error}"));
        let mut reply = [0u8; 4096];
        let read = stream.read(&mut reply).unwrap_or(0);
        String::from_utf8_lossy(&reply[..read]).into_owned()
    }
}

fn redis_server(port: u16) -> Child {
    redis_server_with(port, &[])
}

/// A `redis-server` on `port`, keeping nothing on disk, with `extra`
/// settings; returns once it answers.
pub(crate) fn redis_server_with(port: u16, extra: &[&str]) -> Child {
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
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("redis-server is missing ({error}): run scripts/setup.sh"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pong(port) {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

pub(crate) fn signal(child: &Child, signal: &str) {
    let sent = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
    assert!(
        sent.is_ok_and(|status| status.success()),
        "could not send {signal}"
    );
}

/// A frozen `redis-server`, by process id; SIGCONT on drop.
struct Frozen(u32);

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
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
        self.stop();
    }
}

/// A tokenrelay process sharing `redis` in front of `upstream`.
fn replica(name: &str, redis: &Redis, upstream: &FakeUpstream) -> (Server, String) {
    replica_with(name, redis, upstream, &[])
}

fn replica_with(
    name: &str,
    redis: &Redis,
    upstream: &FakeUpstream,
    settings: &[(&str, &str)],
) -> (Server, String) {
    let mut settings = settings.to_vec();
    settings.push(("REDIS_URL", &redis.url));
    replica_of(name, upstream, &settings)
}

/// A tokenrelay process in front of `upstream`; `settings` say where Redis is.
pub(crate) fn replica_of(
    name: &str,
    upstream: &FakeUpstream,
    settings: &[(&str, &str)],
) -> (Server, String) {
    let dir = scratch_dir(name);
    let mut command = binary();
    command
        .current_dir(&dir)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("UPSTREAM_BASE_URL", upstream.base_url())
        .env("DEFAULT_MODEL", "m")
        .env("RESUME_GRACE_SECS", "5")
        .envs(settings.iter().copied());
    let server = Server::start(&mut command);
    let addr = server.addr();
    (server, format!("http://{addr}"))
}

pub(crate) fn numbered(count: usize, gap: Duration) -> (Reply, String) {
    let tokens: Vec<String> = (0..count).map(|n| format!("w{n} ")).collect();
    let text = tokens.concat();
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    (Reply::tokens(&tokens).pace(gap), text)
}

pub(crate) async fn start_chat(base: &str) -> reqwest::Response {
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
pub(crate) async fn read_tokens(response: &mut reqwest::Response, tokens: usize) -> String {
    let mut text = String::new();
    while text.matches(r#""type":"token""#).count() < tokens {
        match tokio::time::timeout(Duration::from_secs(10), response.chunk()).await {
            Ok(Ok(Some(piece))) => text.push_str(&String::from_utf8_lossy(&piece)),
            other => panic!("the stream ended early: {other:?}"),
        }
    }
    text[..text.rfind("\n\n").map_or(0, |end| end + 2)].to_owned()
}

/// Follows `stream_id` on `base` from its start, in the background.
pub(crate) fn follow_from_the_start(
    base: &str,
    stream_id: &str,
) -> tokio::task::JoinHandle<Transcript> {
    let (base, stream_id) = (base.to_owned(), stream_id.to_owned());
    tokio::spawn(async move { follow(&base, &stream_id, None).await })
}

pub(crate) async fn follow(base: &str, stream_id: &str, last_event_id: Option<&str>) -> Transcript {
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
async fn a_follower_elsewhere_gets_the_tokens_as_they_come_not_in_bursts() {
    let redis = Redis::start();
    let upstream = FakeUpstream::start().await;
    let (reply, text) = numbered(24, Duration::from_millis(100));
    upstream.push(reply);
    let (_a, on_a) = replica("replica-a10", &redis, &upstream);
    let (_b, on_b) = replica("replica-b10", &redis, &upstream);
    let mut running = start_chat(&on_a).await;
    let id = stream_id_of(&running);
    let opening = read_tokens(&mut running, 1).await;

    let mut response = http_client()
        .get(format!("{on_b}/api/chat/{id}/events"))
        .header("last-event-id", last_id(&opening))
        .send()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let mut seen = String::new();
    let mut arrivals = 0;
    while let Ok(Ok(Some(piece))) =
        tokio::time::timeout(Duration::from_secs(10), response.chunk()).await
    {
        let piece = String::from_utf8_lossy(&piece).into_owned();
        if piece.contains(r#""type":"token""#) {
            arrivals += 1;
        }
        seen.push_str(&piece);
    }

    assert_eq!(format!("{}{}", tokens_in(&opening), tokens_in(&seen)), text);
    // 23 tokens 100 ms apart: written a second at a time, they would come
    // in three or four bursts.
    assert!(
        arrivals >= 12,
        "the tokens came in {arrivals} bursts: {seen}"
    );
    drop(running);
}

#[tokio::test]
async fn a_generation_costs_redis_a_few_commands_not_one_per_token() {
    let redis = Redis::start();
    let upstream = FakeUpstream::start().await;
    let (reply, text) = numbered(100, Duration::from_millis(5));
    upstream.push(reply);
    let (_a, on_a) = replica("replica-a11", &redis, &upstream);
    assert_eq!(redis.command(&["CONFIG", "RESETSTAT"]), "+OK\r\n");

    let response = start_chat(&on_a).await;
    let id = stream_id_of(&response);
    let whole = Transcript::read(response).await;
    let top = finished_log(&redis, &id).await;
    let stats = redis.command(&["INFO", "commandstats"]);

    assert_eq!(whole.text_of("token"), text);
    assert!(top.contains(r#""token":"w99 ""#), "{top}");
    // `cmdstat_xadd:calls=3,...`: the count of each command Redis ran.
    let calls = |command: &str| -> u64 {
        stats
            .lines()
            .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .and_then(|calls| calls.parse().ok())
            .unwrap_or(0)
    };
    let written = calls("xadd") + calls("pexpire");
    assert!(
        (2..=6).contains(&written),
        "102 events cost {written} writes: {stats}"
    );
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
    let follower = follow_from_the_start(&on_b, &id);
    tokio::time::sleep(Duration::from_millis(500)).await;

    a.kill();
    let started = Instant::now();
    let transcript = follower.await.unwrap_or_else(|error| panic!("{error}"));

    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the follower must not hang"
    );
    assert_cut_off(&transcript, "it saw the answer until the crash");
    drop(running);
}

/// The `id:` of the last frame in `text` that has one.
/// A follower that saw part of the answer and then an honest end: one
/// `upstream_disconnected` error, then `[DONE]`.
pub(crate) fn assert_cut_off(transcript: &Transcript, context: &str) {
    let ending = transcript.terminal();
    assert_eq!(ending.len(), 1, "{context}: {ending:?}");
    assert_eq!(ending[0]["type"], "error", "{context}");
    assert_eq!(ending[0]["code"], "upstream_disconnected", "{context}");
    assert!(transcript.ends_with_done(), "{context}");
    assert!(!transcript.text_of("token").is_empty(), "{context}");
}

pub(crate) fn last_id(text: &str) -> String {
    parse_frames(text)
        .iter()
        .rev()
        .find_map(|frame| frame.id.clone())
        .unwrap_or_default()
}

pub(crate) fn tokens_in(text: &str) -> String {
    parse_frames(text)
        .iter()
        .filter_map(|frame| frame.json())
        .filter(|event| event["type"] == "token")
        .filter_map(|event| event["token"].as_str().map(str::to_owned))
        .collect()
}

/// Resumes `stream_id` on `base` after `last`, retrying (within 10 s)
/// while the replica cannot tell yet: 404 or 503.
pub(crate) async fn resume_when_known(base: &str, stream_id: &str, last: &str) -> Transcript {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = http_client()
            .get(format!("{base}/api/chat/{stream_id}/events"))
            .header("last-event-id", last)
            .send()
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        if response.status() == 200 || Instant::now() > deadline {
            return Transcript::read(response).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn readyz(base: &str) -> (u16, serde_json::Value) {
    let response = http_client()
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let status = response.status().as_u16();
    (status, json_body(response).await)
}

#[tokio::test]
async fn replicas_recover_by_themselves_when_redis_restarts() {
    let mut redis = Redis::start();
    let upstream = FakeUpstream::start().await;
    let (running, running_text) = numbered(60, Duration::from_millis(50));
    upstream.push(running);
    let (meanwhile, meanwhile_text) = numbered(5, Duration::from_millis(1));
    upstream.push(meanwhile);
    let (stoppable, stoppable_text) = numbered(300, Duration::from_millis(30));
    upstream.push(stoppable);
    let (_a, on_a) = replica("replica-a4", &redis, &upstream);
    let (_b, on_b) = replica("replica-b4", &redis, &upstream);
    assert_eq!(
        readyz(&on_a).await,
        (200, json!({"status": "ready", "redis": "ok"}))
    );
    let mut first = start_chat(&on_a).await;
    let id = stream_id_of(&first);
    let seen = read_tokens(&mut first, 3).await;

    redis.stop();
    let (status, ready) = readyz(&on_a).await;
    let local = Transcript::read(start_chat(&on_a).await).await;
    redis.start_again();

    assert_eq!(status, 200, "local streams still work: {ready}");
    assert_eq!(ready["status"], "degraded");
    assert_eq!(ready["redis"], "unreachable");
    assert_eq!(local.text_of("token"), meanwhile_text, "untouched by Redis");
    assert_eq!(local.terminal()[0]["type"], "finish");
    // The generation that ran through the restart is mirrored again.
    let rest = resume_when_known(&on_b, &id, &last_id(&seen)).await;
    assert_eq!(rest.status, 200, "{}", rest.text);
    assert_eq!(
        format!("{}{}", tokens_in(&seen), rest.text_of("token")),
        running_text
    );
    assert_eq!(rest.terminal()[0]["type"], "finish");
    assert!(rest.ends_with_done());
    let here = Transcript::read(first).await;
    assert_eq!(
        format!("{}{}", tokens_in(&seen), here.text_of("token")),
        running_text
    );
    // A new generation is mirrored, and a stop from elsewhere reaches it
    // once its replica has subscribed again.
    let mut stopped = start_chat(&on_a).await;
    let stopped_id = stream_id_of(&stopped);
    let opening = read_tokens(&mut stopped, 2).await;
    let follower = tokio::spawn({
        let on_b = on_b.clone();
        let stopped_id = stopped_id.clone();
        let last = last_id(&opening);
        async move { resume_when_known(&on_b, &stopped_id, &last).await }
    });
    let subscribed = Instant::now() + Duration::from_secs(5);
    // The reply ends with the number of subscribers: one per replica.
    while !redis
        .command(&["PUBSUB", "NUMSUB", "tokenrelay:stop"])
        .ends_with(":2\r\n")
    {
        assert!(
            Instant::now() < subscribed,
            "the replicas did not subscribe again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deleted = http_client()
        .delete(format!("{on_b}/api/chat/{stopped_id}"))
        .send()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(deleted.status(), 204);
    let cancelled = json!({"type": "finish", "finish_reason": "cancelled", "usage": null});
    assert_eq!(
        Transcript::read(stopped).await.terminal(),
        std::slice::from_ref(&cancelled)
    );
    let elsewhere = follower.await.unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(elsewhere.status, 200);
    assert_eq!(elsewhere.terminal(), [cancelled]);
    // How much it saw before the stop depends on timing; what it saw
    // continues the opening exactly.
    let followed = format!("{}{}", tokens_in(&opening), elsewhere.text_of("token"));
    assert!(stoppable_text.starts_with(&followed), "{followed}");
}

#[tokio::test]
async fn a_frozen_redis_ends_remote_followers_within_seconds() {
    let redis = Redis::start();
    let upstream = FakeUpstream::start().await;
    let (reply, text) = numbered(150, Duration::from_millis(30));
    upstream.push(reply);
    let (_a, on_a) = replica("replica-a5", &redis, &upstream);
    let (_b, on_b) = replica("replica-b5", &redis, &upstream);
    let running = start_chat(&on_a).await;
    let id = stream_id_of(&running);
    let local = tokio::spawn(Transcript::read(running));
    let follower = follow_from_the_start(&on_b, &id);
    tokio::time::sleep(Duration::from_millis(700)).await;

    let frozen = redis.freeze();
    let started = Instant::now();
    let transcript = tokio::time::timeout(Duration::from_secs(15), follower)
        .await
        .unwrap_or_else(|_| panic!("the follower was not ended while Redis was frozen"))
        .unwrap_or_else(|error| panic!("{error}"));
    let ended_after = started.elapsed();
    let (ready_status, ready) = readyz(&on_b).await;
    drop(frozen);

    assert!(
        ended_after < Duration::from_secs(10),
        "took {ended_after:?}"
    );
    assert_cut_off(&transcript, "it followed until the freeze");
    assert_eq!((ready_status, &ready["status"]), (200, &json!("degraded")));
    let local = local.await.unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        local.text_of("token"),
        text,
        "the runner's own client saw it all"
    );
    assert_eq!(local.terminal()[0]["type"], "finish");
}

#[tokio::test]
async fn remote_followers_never_see_a_clean_end_with_events_missing() {
    let redis = Redis::start();
    let upstream = FakeUpstream::start().await;
    let (reply, text) = numbered(10, Duration::from_millis(5));
    upstream.push(reply);
    let (_a, on_a) = replica("replica-a6", &redis, &upstream);
    let (_b, on_b) = replica("replica-b6", &redis, &upstream);
    let response = start_chat(&on_a).await;
    let id = stream_id_of(&response);
    let whole = Transcript::read(response).await;
    assert_eq!(whole.text_of("token"), text);
    let log = log_key(&id);
    finished_log(&redis, &id).await;
    // start, 10 tokens, finish: the last event is number 11.
    // It had every event already: 204 stops an `EventSource` reconnecting.
    let at_end = follow(&on_b, &id, Some(&format!("{id}:11"))).await;
    assert_eq!((at_end.status, at_end.text.as_str()), (204, ""));
    let reconnect = http_client()
        .get(format!("{on_b}/api/chat?prompt=count"))
        .header("last-event-id", format!("{id}:11"))
        .send()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(reconnect.status(), 204, "EventSource is told to stop");

    for past_the_end in ["12", "500", "18446744073709551615"] {
        let response = http_client()
            .get(format!("{on_b}/api/chat/{id}/events"))
            .header("last-event-id", format!("{id}:{past_the_end}"))
            .send()
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(response.status(), 400, "from {past_the_end}");
        assert_eq!(
            json_body(response).await["error"]["code"],
            "invalid_request"
        );
    }

    // Trimmed past the follower's position: only the last entry remains,
    // and the start event is not in it.
    assert_ne!(redis.command(&["XTRIM", &log, "MAXLEN", "1"]), ":0\r\n");
    let trimmed = follow(&on_b, &id, None).await;
    assert_eq!(trimmed.status, 200);
    assert_eq!(trimmed.terminal().len(), 1, "{}", trimmed.text);
    assert_eq!(trimmed.terminal()[0]["code"], "resume_gap");
    assert!(trimmed.ends_with_done());
}

#[tokio::test]
async fn a_remote_follower_whose_log_lost_its_end_is_told_so() {
    let redis = Redis::start();
    let upstream = FakeUpstream::start().await;
    let (reply, text) = numbered(10, Duration::from_millis(150));
    upstream.push(reply);
    let (_a, on_a) = replica("replica-a9", &redis, &upstream);
    let (_b, on_b) = replica("replica-b9", &redis, &upstream);
    let response = start_chat(&on_a).await;
    let id = stream_id_of(&response);
    let whole = Transcript::read(response).await;
    assert_eq!(whole.text_of("token"), text);
    let log = log_key(&id);
    let last = finished_log(&redis, &id).await;
    // The reply's first bulk string is the last entry's id.
    let last_entry = last
        .split("\r\n")
        .find(|line| line.contains('-') && !line.starts_with('$') && !line.starts_with('*'))
        .unwrap_or_else(|| panic!("no entry id in {last:?}"))
        .to_owned();

    // As after a failover to a node that had not yet received the end.
    assert_eq!(redis.command(&["XDEL", &log, &last_entry]), ":1\r\n");
    let started = Instant::now();
    let cut = follow(&on_b, &id, None).await;

    assert_eq!(cut.status, 200);
    assert!(
        text.starts_with(&cut.text_of("token")),
        "what it saw is the answer's beginning: {}",
        cut.text
    );
    assert_cut_off(&cut, "the end of the log is gone");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the follower must not hang"
    );
}

/// The last entry of stream `id`'s log in Redis, as `XREVRANGE` answers,
/// once the mirror has written it: the last entry of a finished log
/// carries the field `d`.
async fn finished_log(redis: &Redis, id: &str) -> String {
    let mirrored = Instant::now() + Duration::from_secs(5);
    loop {
        let top = redis.command(&["XREVRANGE", &log_key(id), "+", "-", "COUNT", "1"]);
        if top.contains("$1\r\nd\r\n") {
            return top;
        }
        assert!(Instant::now() < mirrored, "the log was not mirrored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where tokenrelay keeps stream `id`'s events in Redis.
pub(crate) fn log_key(id: &str) -> String {
    format!("tokenrelay:{{{id}}}:log")
}

#[tokio::test]
async fn a_remote_follower_ends_with_shutting_down_when_its_replica_stops() {
    let redis = Redis::start();
    let upstream = FakeUpstream::start().await;
    let (reply, _) = numbered(300, Duration::from_millis(30));
    upstream.push(reply);
    let (_a, on_a) = replica("replica-a7", &redis, &upstream);
    let (mut b, on_b) = replica_with(
        "replica-b7",
        &redis,
        &upstream,
        &[("SHUTDOWN_GRACE_SECS", "1")],
    );
    let mut running = start_chat(&on_a).await;
    let id = stream_id_of(&running);
    read_tokens(&mut running, 2).await;
    let follower = follow_from_the_start(&on_b, &id);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let exited = tokio::task::spawn_blocking(move || b.terminate())
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let transcript = follower.await.unwrap_or_else(|error| panic!("{error}"));

    assert!(exited, "B exits within its grace and a few seconds");
    assert_eq!(transcript.status, 200);
    assert!(!transcript.text_of("token").is_empty());
    let ending = transcript.terminal();
    assert_eq!(ending.len(), 1, "{ending:?}");
    assert_eq!(ending[0]["type"], "error");
    assert_eq!(ending[0]["code"], "shutting_down");
    assert!(transcript.ends_with_done());
    drop(running);
}

#[tokio::test]
async fn ownership_follows_the_key_whatever_order_replicas_list_keys_in() {
    // Arrange: the same two keys, listed in opposite orders.
    let redis = Redis::start();
    let upstream = FakeUpstream::start().await;
    let (reply, text) = numbered(40, Duration::from_millis(20));
    upstream.push(reply);
    let (_a, on_a) = replica_with(
        "owner-a",
        &redis,
        &upstream,
        &[("PROXY_API_KEYS", "alice-key,bob-key")],
    );
    let (_b, on_b) = replica_with(
        "owner-b",
        &redis,
        &upstream,
        &[("PROXY_API_KEYS", "bob-key,alice-key")],
    );
    let response = http_client()
        .post(format!("{on_a}/api/chat"))
        .header("content-type", "application/json")
        .bearer_auth("alice-key")
        .body(json!({"prompt": "count"}).to_string())
        .send()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(response.status(), 200);
    let id = stream_id_of(&response);
    let as_key = |key: &'static str, method: reqwest::Method, path: String| {
        http_client()
            .request(method, format!("{on_b}{path}"))
            .bearer_auth(key)
            .send()
    };
    let events = format!("/api/chat/{id}/events");

    // Act
    let mut by_bob = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let by_alice = loop {
        let attempt = as_key("alice-key", reqwest::Method::GET, events.clone())
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        if attempt.status() == 200 || Instant::now() > deadline {
            break Transcript::read(attempt).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (method, path) in [
        (reqwest::Method::GET, events.clone()),
        (reqwest::Method::DELETE, format!("/api/chat/{id}")),
    ] {
        let response = as_key("bob-key", method.clone(), path)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        by_bob.push((method, response.status().as_u16()));
    }
    let original = Transcript::read(response).await;

    // Assert
    assert_eq!(
        by_alice.status, 200,
        "the owner follows on the other replica"
    );
    assert_eq!(by_alice.text_of("token"), text);
    assert_eq!(
        by_bob,
        [(reqwest::Method::GET, 404), (reqwest::Method::DELETE, 404)],
        "another key can neither read nor stop it"
    );
    assert_eq!(original.text_of("token"), text, "and did not stop it");
    let owner = redis.command(&["XREVRANGE", &log_key(&id), "+", "-", "COUNT", "1"]);
    assert!(
        !owner.contains("alice-key") && owner.contains("key:"),
        "the store holds an identity, not the key: {owner:?}"
    );
}

#[tokio::test]
async fn a_token_budget_is_shared_by_every_replica() {
    // Arrange: every answer costs 12 tokens; the budget is 20 a minute.
    let redis = Redis::start();
    let upstream = FakeUpstream::start().await;
    let settings = [("PROXY_API_KEYS", "k"), ("TOKENS_PER_MINUTE", "20")];
    let (_a, on_a) = replica_with("budget-a", &redis, &upstream, &settings);
    let (_b, on_b) = replica_with("budget-b", &redis, &upstream, &settings);
    let chat = |base: &str| {
        http_client()
            .post(format!("{base}/api/chat"))
            .bearer_auth("k")
            .header("content-type", "application/json")
            .body(json!({"prompt": "hi"}).to_string())
            .send()
    };

    // Act: two answers on A spend the minute; budgets count per minute of
    // the clock, so all of it happens within one.
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() % 60);
    if second >= 45 {
        tokio::time::sleep(Duration::from_secs(61 - second)).await;
    }
    for _ in 0..2 {
        let answer = chat(&on_a).await.unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(answer.status(), 200);
        Transcript::read(answer).await;
    }
    // The cost reaches Redis just after each generation ends.
    let deadline = Instant::now() + Duration::from_secs(10);
    let spent = loop {
        let spent: u64 = budget_keys(&redis)
            .iter()
            .map(|key| {
                let reply = redis.command(&["GET", key]);
                reply
                    .lines()
                    .nth(1)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0)
            })
            .sum();
        if spent >= 24 || Instant::now() > deadline {
            break spent;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let refused = chat(&on_b).await.unwrap_or_else(|error| panic!("{error}"));

    // Assert
    assert_eq!(spent, 24, "Redis holds what A's two answers cost");
    assert_eq!(
        refused.status(),
        429,
        "replica B, which served nothing, refuses what A spent"
    );
    let error = json_body(refused).await;
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|text| text.contains("TOKENS_PER_MINUTE")),
        "{error}"
    );
}

/// The token-budget counts Redis holds.
fn budget_keys(redis: &Redis) -> Vec<String> {
    redis
        .command(&["KEYS", "tokenrelay:{budget:*"])
        .split("\r\n")
        .filter(|entry| entry.starts_with("tokenrelay:"))
        .map(str::to_owned)
        .collect()
}

/// `POST /api/ui/chat` on `base` for chat `chat_id`, answered 200.
async fn start_ui_chat(base: &str, chat_id: &str) -> reqwest::Response {
    let body = json!({
        "id": chat_id,
        "trigger": "submit-message",
        "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "count"}]}],
    });
    let response = http_client()
        .post(format!("{base}/api/ui/chat"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(response.status(), 200);
    response
}

async fn ui_chat_stream(base: &str, method: reqwest::Method, chat_id: &str) -> reqwest::Response {
    http_client()
        .request(method, format!("{base}/api/ui/chat/{chat_id}/stream"))
        .send()
        .await
        .unwrap_or_else(|error| panic!("{error}"))
}

#[tokio::test]
async fn a_chat_resumes_by_its_id_on_another_replica_and_stops_from_any() {
    let redis = Redis::start();
    let upstream = FakeUpstream::start().await;
    let (reply, text) = numbered(30, Duration::from_millis(30));
    upstream.push(reply);
    let (_a, on_a) = replica("ui-chat-a", &redis, &upstream);
    let (_b, on_b) = replica("ui-chat-b", &redis, &upstream);

    // Started on A, dropped after a few words, resumed by chat id on B.
    let mut first = start_ui_chat(&on_a, "chat-1").await;
    let stream_id = stream_id_of(&first);
    let mut seen = String::new();
    while seen.matches(r#""type":"text-delta""#).count() < 3 {
        match tokio::time::timeout(Duration::from_secs(10), first.chunk()).await {
            Ok(Ok(Some(piece))) => seen.push_str(&String::from_utf8_lossy(&piece)),
            other => panic!("the stream ended early: {other:?}"),
        }
    }
    drop(first);
    let resumed =
        Transcript::read(ui_chat_stream(&on_b, reqwest::Method::GET, "chat-1").await).await;

    assert_eq!(resumed.status, 200);
    assert_eq!(resumed.header("x-vercel-ai-ui-message-stream"), Some("v1"));
    let parts: Vec<serde_json::Value> = resumed.events();
    assert_eq!(parts[0]["type"], "start");
    assert_eq!(parts[0]["messageId"], format!("msg-{stream_id}"));
    let replayed: String = parts
        .iter()
        .filter(|part| part["type"] == "text-delta")
        .filter_map(|part| part["delta"].as_str())
        .collect();
    assert_eq!(replayed, text, "from the first part, nothing twice");
    assert!(resumed.ends_with_done());
    assert_eq!(upstream.requests().len(), 1, "paid for once");
    // Read to its end on B: A has nothing left to resume either.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = ui_chat_stream(&on_a, reqwest::Method::GET, "chat-1")
            .await
            .status();
        if status == 204 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A still resumes a chat read to its end"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Started on A, stopped through B.
    let (reply, _) = numbered(300, Duration::from_millis(30));
    upstream.push(reply);
    let running = start_ui_chat(&on_a, "chat-2").await;
    let running_id = stream_id_of(&running);
    // A names the chat in the store as it starts mirroring, moments after
    // its answer began.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = ui_chat_stream(&on_b, reqwest::Method::DELETE, "chat-2")
            .await
            .status();
        if status == 204 {
            break;
        }
        assert_eq!(status, 404);
        assert!(Instant::now() < deadline, "B never found chat-2");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        upstream.wait_dropped(1, Duration::from_secs(5)).await,
        "A's upstream request was dropped"
    );
    let rest = Transcript::read(running).await;
    let finish = rest
        .events()
        .into_iter()
        .rev()
        .find(|part| part["type"] == "finish");
    assert_eq!(
        finish.map(|part| part["finishReason"].clone()),
        Some(json!("other"))
    );
    let chat = redis.command(&["HGET", "tokenrelay:chat:open:chat-2", "stream"]);
    assert!(
        chat.contains(&running_id),
        "the store names the chat's stream: {chat:?}"
    );
}
