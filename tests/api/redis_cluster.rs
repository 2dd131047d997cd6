//! Replicas sharing a real Redis Cluster (`REDIS_CLUSTER_URLS`, or a
//! `redis+cluster://` URL): three shards of real `redis-server`s, each with
//! a replica. A stream resumes across replicas through it, and the node
//! holding a stream's log failing over mid-stream never leaves a follower
//! with a silent gap.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::{Server, scratch_dir};
use crate::cluster::{
    assert_cut_off, follow_from_the_start, last_id, log_key, numbered, read_tokens,
    redis_server_with, replica_of, resume_when_known, start_chat, tokens_in,
};
use crate::fake_upstream::FakeUpstream;
use crate::helpers::{Transcript, stream_id_of};

/// How long `redis-cli` may take to form a cluster.
const CLUSTER_FORMS: Duration = Duration::from_secs(60);
/// How long its own meetings may take before the nodes that did not meet
/// are introduced again.
const LOST_MEETING: Duration = Duration::from_secs(5);

/// Three masters and a replica of each, on loopback; killed on drop.
struct RedisCluster {
    nodes: Vec<Node>,
}

struct Node {
    port: u16,
    child: Option<Child>,
}

impl RedisCluster {
    fn start(name: &str) -> Self {
        let dir = scratch_dir(name);
        let nodes: Vec<Node> = (0..6)
            .map(|_| {
                let port = cluster_port();
                Node {
                    port,
                    child: Some(cluster_node(&dir, port)),
                }
            })
            .collect();
        // Owned from here, so that a failure below stops the nodes.
        let cluster = Self { nodes };
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let mut create = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("redis-cli: {error}"));
        let began = Instant::now();
        loop {
            match create.try_wait() {
                Ok(Some(status)) => {
                    assert!(status.success(), "redis-cli --cluster create: {status}");
                    break;
                }
                Ok(None) => {}
                Err(error) => panic!("redis-cli --cluster create: {error}"),
            }
            if began.elapsed() > CLUSTER_FORMS {
                let _ = create.kill();
                let _ = create.wait();
                panic!(
                    "redis-cli --cluster create did not finish within {CLUSTER_FORMS:?}; \
                     nodes known to each node: {:?}",
                    cluster.acquaintances()
                );
            }
            if began.elapsed() > LOST_MEETING {
                cluster.introduce_strangers();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster.is_ok() {
            assert!(Instant::now() < deadline, "the cluster did not form");
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// Two tokenrelay processes sharing this cluster, named by every node.
    fn replicas(&self, names: [&str; 2], upstream: &FakeUpstream) -> [(Server, String); 2] {
        let urls = self.urls().join(",");
        names.map(|name| replica_of(name, upstream, &[("REDIS_CLUSTER_URLS", urls.as_str())]))
    }

    fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| format!("redis://127.0.0.1:{}/", node.port))
            .collect()
    }

    /// The ports each node has heard of, itself included.
    fn acquaintances(&self) -> Vec<(u16, Vec<u16>)> {
        self.nodes
            .iter()
            .map(|node| {
                let known = command(node.port, &["CLUSTER", "NODES"])
                    .lines()
                    .filter_map(|line| {
                        line.split(' ')
                            .nth(1)?
                            .split(['@', ':'])
                            .nth(1)?
                            .parse()
                            .ok()
                    })
                    .collect();
                (node.port, known)
            })
            .collect()
    }

    /// Has each node meet the ones it has not heard of. A node drops a
    /// handshake that takes longer than its node timeout, 1 s here, which a
    /// busy machine can exceed; the nodes are then never introduced again,
    /// and `redis-cli` waits for them to join for ever.
    fn introduce_strangers(&self) {
        let acquaintances = self.acquaintances();
        // Before anyone knows anyone, `redis-cli` has not sent its own
        // meetings yet, and it refuses nodes that already know others.
        if acquaintances.iter().all(|(_, known)| known.len() <= 1) {
            return;
        }
        for (port, known) in &acquaintances {
            for node in &self.nodes {
                if !known.contains(&node.port) {
                    command(
                        *port,
                        &["CLUSTER", "MEET", "127.0.0.1", &node.port.to_string()],
                    );
                }
            }
        }
    }

    /// Whether every live node says the cluster is ok.
    fn is_ok(&self) -> bool {
        self.nodes
            .iter()
            .filter(|node| node.child.is_some())
            .all(|node| command(node.port, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
    }

    /// The node that now serves `key` as a master: the only one that
    /// answers for it rather than redirecting.
    fn master_of(&self, key: &str) -> usize {
        let answering: Vec<usize> = (0..self.nodes.len())
            .filter(|&index| self.nodes[index].child.is_some())
            .filter(|&index| !command(self.nodes[index].port, &["EXISTS", key]).starts_with("-"))
            .filter(|&index| command(self.nodes[index].port, &["ROLE"]).contains("master"))
            .collect();
        assert_eq!(answering.len(), 1, "one master holds {key}");
        answering[0]
    }

    fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            self.kill(index);
        }
    }
}

/// A free port whose cluster bus port (10000 above it) is free too.
fn cluster_port() -> u16 {
    for _ in 0..100 {
        let Ok(listener) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(port) = listener.local_addr().map(|addr| addr.port()) else {
            continue;
        };
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair for a cluster node");
}

fn cluster_node(dir: &std::path::Path, port: u16) -> Child {
    let config: PathBuf = dir.join(format!("nodes-{port}.conf"));
    redis_server_with(
        port,
        &[
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &config.to_string_lossy(),
            "--cluster-node-timeout",
            "1000",
            // A replica takes over however long ago it last heard from its
            // master: this one is idle between tests.
            "--cluster-replica-validity-factor",
            "0",
            "--dir",
            &dir.to_string_lossy(),
        ],
    )
}

/// One command to the node on `port`; its raw reply (an error as `-...`).
fn command(port: u16, args: &[&str]) -> String {
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return "-unreachable".to_owned();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream.write_all(request.as_bytes()).is_err() {
        return "-unreachable".to_owned();
    }
    let mut reply = [0u8; 8192];
    let read = stream.read(&mut reply).unwrap_or(0);
    String::from_utf8_lossy(&reply[..read]).into_owned()
}

#[tokio::test]
async fn a_stream_resumes_on_another_replica_through_a_redis_cluster() {
    let cluster = RedisCluster::start("redis-cluster-1");
    let upstream = FakeUpstream::start().await;
    let (reply, text) = numbered(30, Duration::from_millis(30));
    upstream.push(reply);
    let urls = cluster.urls();
    // One replica lists every node; the other finds the rest from two of
    // them, through the URL form.
    let (_a, on_a) = replica_of(
        "cluster-a1",
        &upstream,
        &[("REDIS_CLUSTER_URLS", &urls.join(","))],
    );
    let cluster_url = format!(
        "redis+cluster://{},{}",
        &urls[1]["redis://".len()..urls[1].len() - 1],
        &urls[2]["redis://".len()..urls[2].len() - 1]
    );
    let (_b, on_b) = replica_of("cluster-b1", &upstream, &[("REDIS_URL", &cluster_url)]);

    let mut first = start_chat(&on_a).await;
    let id = stream_id_of(&first);
    let seen = read_tokens(&mut first, 5).await;
    drop(first);
    let rest = resume_when_known(&on_b, &id, &last_id(&seen)).await;

    assert_eq!(rest.status, 200, "{}", rest.text);
    assert_eq!(
        format!("{}{}", tokens_in(&seen), rest.text_of("token")),
        text,
        "nothing missing, nothing twice"
    );
    assert_eq!(rest.terminal()[0]["type"], "finish");
    assert!(rest.ends_with_done());
    assert_eq!(upstream.requests().len(), 1, "paid for once");
    // The log is on the one master of its slot.
    let holder = cluster.master_of(&log_key(&id));
    assert_eq!(
        command(cluster.nodes[holder].port, &["EXISTS", &log_key(&id)]),
        ":1\r\n"
    );
}

#[tokio::test]
async fn a_node_failing_over_mid_stream_never_leaves_a_follower_a_silent_gap() {
    let (mut cluster, upstream) = (
        RedisCluster::start("redis-cluster-2"),
        FakeUpstream::start().await,
    );
    let (reply, text) = numbered(120, Duration::from_millis(50));
    upstream.push(reply);
    let [(_a, on_a), (_b, on_b)] = cluster.replicas(["cluster-a2", "cluster-b2"], &upstream);
    let mut running = start_chat(&on_a).await;
    let id = stream_id_of(&running);
    let opening = read_tokens(&mut running, 3).await;
    let local = tokio::spawn(Transcript::read(running));
    let follower = tokio::spawn({
        let on_b = on_b.clone();
        let id = id.clone();
        let last = last_id(&opening);
        async move { resume_when_known(&on_b, &id, &last).await }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let holder = cluster.master_of(&log_key(&id));
    cluster.kill(holder);
    let followed = tokio::time::timeout(Duration::from_secs(30), follower)
        .await
        .unwrap_or_else(|_| panic!("the follower hung through the failover"))
        .unwrap_or_else(|error| panic!("{error}"));
    let failed_over = Instant::now() + Duration::from_secs(20);
    while !cluster.is_ok() {
        assert!(
            Instant::now() < failed_over,
            "the replica did not take over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let local = tokio::time::timeout(Duration::from_secs(60), local)
        .await
        .unwrap_or_else(|_| panic!("the runner's own client hung through the failover"))
        .unwrap_or_else(|error| panic!("{error}"));

    assert_eq!(
        format!("{}{}", tokens_in(&opening), local.text_of("token")),
        text,
        "the runner's own client saw it all"
    );
    assert_eq!(followed.status, 200, "{}", followed.text);
    let seen = format!("{}{}", tokens_in(&opening), followed.text_of("token"));
    assert!(followed.ends_with_done());
    if followed.terminal()[0]["type"] == "finish" {
        assert_eq!(seen, text, "it rode out the failover, exactly");
    } else {
        assert_cut_off(&followed, "ended by the failover");
        assert!(text.starts_with(&seen), "what it saw has no gap: {seen}");
        // Once the replica took over, the rest is there, exactly.
        let rest = resume_when_known(&on_b, &id, &last_id(&followed.text)).await;
        assert_eq!(rest.status, 200, "{}", rest.text);
        assert_eq!(format!("{seen}{}", rest.text_of("token")), text);
        assert_eq!(rest.terminal()[0]["type"], "finish");
    }
}

#[tokio::test]
async fn a_follower_whose_log_node_is_gone_for_good_ends_with_a_clear_error() {
    let (mut cluster, upstream) = (
        RedisCluster::start("redis-cluster-3"),
        FakeUpstream::start().await,
    );
    let (reply, text) = numbered(200, Duration::from_millis(30));
    upstream.push(reply);
    let [(_a, on_a), (_b, on_b)] = cluster.replicas(["cluster-a3", "cluster-b3"], &upstream);
    let mut running = start_chat(&on_a).await;
    let id = stream_id_of(&running);
    read_tokens(&mut running, 2).await;
    let follower = follow_from_the_start(&on_b, &id);
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // The master and its replica both: that shard has no one left.
    let holder = cluster.master_of(&log_key(&id));
    let holder_port = cluster.nodes[holder].port.to_string();
    let replica = (0..cluster.nodes.len())
        .find(|&index| {
            index != holder && command(cluster.nodes[index].port, &["ROLE"]).contains(&holder_port)
        })
        .unwrap_or_else(|| panic!("no replica of the holder"));
    cluster.kill(replica);
    cluster.kill(holder);
    let started = Instant::now();
    let followed = tokio::time::timeout(Duration::from_secs(30), follower)
        .await
        .unwrap_or_else(|_| panic!("the follower hung"))
        .unwrap_or_else(|error| panic!("{error}"));

    assert!(
        started.elapsed() < Duration::from_secs(15),
        "ended within seconds, after {:?}",
        started.elapsed()
    );
    assert_cut_off(&followed, "its shard is gone");
    assert!(text.starts_with(&followed.text_of("token")), "no gap");
    let local = Transcript::read(running).await;
    assert_eq!(local.terminal()[0]["type"], "finish", "local streams go on");
}
