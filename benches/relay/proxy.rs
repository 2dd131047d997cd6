//! The relay under test — the real tokenrelay release binary, or a
//! reference relay (`references`) — as a child process pinned to its own
//! core, and what `/proc` says it spent.
//!
//! A child process rather than the library in-process, so that its CPU time
//! and resident memory are its own and nothing of the load generator's is
//! counted against it.

use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::references::{Relay, SERVE};

/// Linux's `USER_HZ`, the unit of utime and stime in `/proc/PID/stat`;
/// 100 on every mainstream architecture.
const TICKS_PER_SECOND: u64 = 100;

/// How to start the proxy.
#[derive(Debug, Clone)]
pub struct Launch {
    pub binary: PathBuf,
    /// Runs the binary under this command (`valgrind --tool=callgrind`, say).
    pub wrapper: Vec<String>,
    /// The core to pin it to with `taskset`, when that exists.
    pub core: Option<usize>,
    /// Where its log lines go (appended).
    pub log: PathBuf,
    /// Its working directory: anywhere without a developer's `.env`.
    pub dir: PathBuf,
    /// Settings beside the benchmark's own (`REDIS_URL`, say).
    pub env: Vec<(String, String)>,
}

/// A running relay; killed when dropped.
#[derive(Debug)]
pub struct Proxy {
    child: Child,
    pub addr: SocketAddr,
    pid: u32,
}

impl Proxy {
    /// Starts `relay` in front of `upstream` and waits until it answers.
    pub async fn start(
        launch: &Launch,
        relay: Relay,
        upstream: SocketAddr,
    ) -> Result<Self, String> {
        let addr = free_port().map_err(|error| format!("no free port: {error}"))?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&launch.log)
            .map_err(|error| format!("cannot open {}: {error}", launch.log.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|error| format!("cannot open {}: {error}", launch.log.display()))?;
        let mut argv: Vec<String> = Vec::new();
        if let Some(core) = launch.core {
            argv.extend(["taskset".to_owned(), "-c".to_owned(), core.to_string()]);
        }
        if relay == Relay::Tokenrelay {
            argv.extend(launch.wrapper.iter().cloned());
            argv.push(launch.binary.display().to_string());
        } else {
            let own = std::env::current_exe()
                .map_err(|error| format!("cannot find the benchmark binary: {error}"))?;
            argv.extend([
                own.display().to_string(),
                SERVE.to_owned(),
                relay.name().to_owned(),
                addr.to_string(),
                upstream.to_string(),
            ]);
        }
        let mut command = Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .current_dir(&launch.dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LISTEN_ADDR", addr.to_string())
            .env("UPSTREAM_BASE_URL", format!("http://{upstream}/v1"))
            .env("DEFAULT_MODEL", "bench")
            .env("RESUME_GRACE_SECS", "0")
            .env("MAX_CONCURRENT_STREAMS", "0")
            .env("MAX_CONNECTIONS", "18000")
            .env("RATE_LIMIT_PER_MINUTE", "0")
            .env("UPSTREAM_RETRIES", "0")
            .env("RUST_LOG", "info")
            .envs(launch.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group, so that signals reach the relay under
            // a wrapper that forks it (`perf record`) and not only the wrapper.
            .process_group(0);
        let name = relay.name();
        let child = command
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", argv.join(" ")))?;
        let pid = child.id();
        let mut proxy = Self { child, addr, pid };
        // Valgrind takes seconds to start a Rust binary; a plain start takes milliseconds.
        for _ in 0..600 {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                return Err(format!(
                    "{name} exited at start ({status}); see {}",
                    launch.log.display()
                ));
            }
            if ready(relay, addr).await {
                return Ok(proxy);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        proxy.stop();
        Err(format!(
            "{name} did not answer within 30 s; see {}",
            launch.log.display()
        ))
    }

    /// CPU time so far.
    pub fn cpu(&self) -> Option<Cpu> {
        Cpu::read(self.pid)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Resident memory now, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_of(self.pid)
    }

    /// Ends it with SIGTERM, as a supervisor would, so a wrapper such as
    /// callgrind gets to write its profile; SIGKILL after 20 s.
    pub fn stop(&mut self) {
        self.signal("TERM");
        for _ in 0..400 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                // A wrapper may end before the relay it forked.
                self.signal("KILL");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }

    /// Sends SIGKILL to its whole process group and reaps it.
    fn kill(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    /// Sends `signal` to every process of its group (the relay, and the
    /// wrapper around it if any).
    fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), "--", &format!("-{}", self.pid)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// A process's CPU time: per-thread nanoseconds from `schedstat`, and the
/// whole process's utime + stime in ticks, which also counts threads that
/// have exited but only to 10 ms.
#[derive(Debug, Clone)]
pub struct Cpu {
    threads: Vec<(u32, u64)>,
    ticks: u64,
    /// Of `ticks`, those spent in the kernel.
    system_ticks: u64,
    /// Read and write system calls so far (`/proc/PID/io`).
    syscalls: Option<(u64, u64)>,
}

impl Cpu {
    pub fn read(pid: u32) -> Option<Self> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces; the fields after it do not.
        let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
        let user_ticks = fields.get(11)?.parse::<u64>().ok()?;
        let system_ticks = fields.get(12)?.parse::<u64>().ok()?;
        let mut threads = Vec::new();
        for entry in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            let schedstat = fs::read_to_string(entry.path().join("schedstat")).ok()?;
            threads.push((tid, schedstat.split_whitespace().next()?.parse().ok()?));
        }
        threads.sort_unstable();
        let io = fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
        let field = |name: &str| {
            io.lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|value| value.trim().parse::<u64>().ok())
        };
        let syscalls = field("syscr:").zip(field("syscw:"));
        Some(Self {
            threads,
            ticks: user_ticks + system_ticks,
            system_ticks,
            syscalls,
        })
    }

    /// Read and write system calls from `self` to `later`.
    pub fn syscalls_until(&self, later: &Self) -> Option<(u64, u64)> {
        let ((r0, w0), (r1, w1)) = (self.syscalls?, later.syscalls?);
        Some((r1.saturating_sub(r0), w1.saturating_sub(w0)))
    }

    /// User and kernel ticks from `self` to `later`: how the CPU time splits.
    pub fn split_until(&self, later: &Self) -> (u64, u64) {
        let system = later.system_ticks.saturating_sub(self.system_ticks);
        let total = later.ticks.saturating_sub(self.ticks);
        (total.saturating_sub(system), system)
    }

    /// CPU time from `self` to `later`: exact when the same threads lived
    /// throughout, else from the ticks.
    pub fn until(&self, later: &Self) -> Duration {
        let same = self.threads.len() == later.threads.len()
            && self
                .threads
                .iter()
                .zip(&later.threads)
                .all(|(a, b)| a.0 == b.0);
        if same {
            let ns: u64 = self
                .threads
                .iter()
                .zip(&later.threads)
                .map(|(a, b)| b.1.saturating_sub(a.1))
                .sum();
            Duration::from_nanos(ns)
        } else {
            Duration::from_millis(later.ticks.saturating_sub(self.ticks) * 1000 / TICKS_PER_SECOND)
        }
    }
}

/// The resident memory of process `pid`, in KiB.
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A port nobody listens on now. Another process could take it before
/// the child binds it; on a benchmark machine nobody does.
pub fn free_port() -> io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// tokenrelay is ready when `/healthz` says so; a reference relay, whose
/// every request goes upstream, as soon as it accepts a connection.
async fn ready(relay: Relay, addr: SocketAddr) -> bool {
    if relay != Relay::Tokenrelay {
        return TcpStream::connect(addr).await.is_ok();
    }
    let check = async {
        let mut tcp = TcpStream::connect(addr).await.ok()?;
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.ok()?;
        Some(answer.starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), check).await,
        Ok(Some(true))
    )
}

/// `path`, or why it cannot be the binary under test.
pub fn check_binary(path: &Path) -> Result<PathBuf, String> {
    if path.is_file() {
        Ok(path.to_path_buf())
    } else {
        Err(format!("no tokenrelay binary at {}", path.display()))
    }
}
