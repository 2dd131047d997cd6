//! A real `redis-server` for the `redis` scenario, started on a free
//! loopback port and stopped when dropped, and what it did: the commands it
//! ran (from `INFO commandstats`) and its own CPU time.
//!
//! A real server rather than a fake, because what is measured is what
//! tokenrelay asks of Redis and what that costs both sides; no persistence,
//! so that disk writes are not part of it.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::proxy::{self, Cpu};

/// A running `redis-server`; killed when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    url: String,
    client: redis::Client,
}

impl Server {
    /// Starts `redis-server` with `dir` as its working directory and waits
    /// until it answers `PING`.
    pub async fn start(dir: &std::path::Path) -> Result<Self, String> {
        let addr = proxy::free_port().map_err(|error| format!("no free port: {error}"))?;
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &addr.port().to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("cannot start redis-server (is it installed?): {error}"))?;
        let url = format!("redis://{addr}");
        let client =
            redis::Client::open(url.as_str()).map_err(|error| format!("bad Redis URL: {error}"))?;
        let mut server = Self { child, url, client };
        for _ in 0..100 {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("redis-server exited at start ({status})"));
            }
            if server.ping().await {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("redis-server did not answer PING within 5 s".to_owned())
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn cpu(&self) -> Option<Cpu> {
        Cpu::read(self.child.id())
    }

    async fn ping(&self) -> bool {
        let Ok(mut connection) = self.client.get_multiplexed_async_connection().await else {
            return false;
        };
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .is_ok()
    }

    /// The commands it has run so far, but for those of the benchmark's
    /// own connections (`INFO`, `PING` and a new connection's `HELLO` and
    /// `CLIENT SETINFO`).
    pub async fn commands(&self) -> Option<u64> {
        let mut connection = self.client.get_multiplexed_async_connection().await.ok()?;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut connection)
            .await
            .ok()?;
        Some(
            info.lines()
                .filter_map(|line| line.strip_prefix("cmdstat_"))
                .filter_map(|line| line.split_once(':'))
                .filter(|(name, _)| !matches!(*name, "info" | "ping" | "hello" | "client|setinfo"))
                .filter_map(|(_, stats)| {
                    stats
                        .split(',')
                        .find_map(|field| field.strip_prefix("calls="))
                        .and_then(|calls| calls.parse::<u64>().ok())
                })
                .sum(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
