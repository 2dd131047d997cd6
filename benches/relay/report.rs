//! The benchmark's results three ways: a table for the terminal, JSON for
//! tools, and a hand-written SVG chart for the README — each figure next to
//! the target it is held to, so a missed target is as visible as a met one,
//! and tokenrelay's cost next to the reference relays' of the same run.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::references::Relay;
use crate::{Run, Side, Spent};

/// Where and how the figures were taken.
#[derive(Debug)]
pub struct Environment {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub pinned: bool,
    pub quick: bool,
    pub binary: String,
    pub wrapper: String,
    pub load_average: String,
    pub unix_time: u64,
}

impl Environment {
    pub fn now(binary: &Path, cores: usize, pinned: bool, quick: bool, wrapper: &[String]) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map_or_else(
                || "unknown CPU".to_owned(),
                |(_, name)| name.trim().to_owned(),
            );
        Self {
            cpu,
            cores,
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            pinned,
            quick,
            binary: binary.display().to_string(),
            wrapper: wrapper.join(" "),
            load_average: read_trimmed("/proc/loadavg")
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            unix_time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_secs()),
        }
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_owned())
        .unwrap_or_default()
}

/// The targets for one scenario; `None` where there is none.
#[derive(Debug, Default, Clone, Copy)]
pub struct Targets {
    pub added_p50_ms: Option<f64>,
    pub added_p99_ms: Option<f64>,
    pub cpu_us: Option<f64>,
    pub min_ratio: Option<f64>,
    pub max_kib: Option<f64>,
    /// At most this multiple of the naive relay's CPU per token.
    pub cpu_vs_naive: Option<f64>,
    /// No more added time to first token (p50 and p99) than the naive relay adds.
    pub ttft_vs_naive: bool,
    /// No more memory per open stream than the naive relay.
    pub memory_vs_naive: bool,
}

/// One target and how the run did against it.
#[derive(Debug, Clone)]
pub struct Check {
    pub what: String,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

/// Time to first token, p50 and p99, in ms.
#[derive(Debug, Clone, Copy)]
pub struct Ttft {
    pub p50: f64,
    pub p99: f64,
}

/// A reference relay's figures for one load.
#[derive(Debug, Clone)]
pub struct Reference {
    pub name: &'static str,
    pub streams: usize,
    pub failures: usize,
    pub ttft: Option<Ttft>,
    pub tps: f64,
    pub cpu_us: Option<f64>,
    pub kib_per_stream: Option<f64>,
}

/// CPU time per complete token.
fn cpu_per_token(spent: &Spent, tokens: u64) -> Option<f64> {
    spent
        .cpu
        .filter(|_| tokens > 0)
        .map(|cpu| cpu.as_secs_f64() * 1e6 / tokens as f64)
}

/// Resident memory per open stream at the fullest, over the baseline.
fn kib_per_stream(spent: &Spent) -> Option<f64> {
    let (baseline, (open, peak)) = spent.baseline_kib.zip(spent.peak)?;
    Some(peak.saturating_sub(baseline) as f64 / open as f64)
}

/// One scenario's figures.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub what: String,
    /// Streams and complete tokens through tokenrelay.
    pub streams: usize,
    pub tokens: u64,
    pub failures: usize,
    pub direct_failures: usize,
    pub failure_examples: Vec<String>,
    pub ttft_direct: Option<Ttft>,
    pub ttft_proxy: Option<Ttft>,
    pub tps_direct: f64,
    pub tps_proxy: f64,
    pub cpu_us: Option<f64>,
    /// The part of tokenrelay's CPU time spent in the kernel.
    pub kernel_share: Option<f64>,
    /// The load generator's CPU per token when it ran the load directly.
    pub direct_load_cpu_us: Option<f64>,
    pub kib_per_stream: Option<f64>,
    /// tokenrelay's write system calls per relayed token (reads on sockets
    /// are `recv`, which `/proc/PID/io` does not count).
    pub writes_per_token: Option<f64>,
    pub memory: Option<Value>,
    /// The reference relays' figures for the same load; none where the
    /// scenario is tokenrelay's alone (Redis).
    pub references: Vec<Reference>,
    /// Figures only this scenario has: name, value, unit.
    pub extra: Vec<(String, f64, &'static str)>,
    pub targets: Targets,
    pub checks: Vec<Check>,
}

impl Row {
    /// A token-stream scenario: tokenrelay's figures from `run`, and the
    /// reference relays' if it has them; `memory` says whether memory per
    /// open stream means anything here (enough streams open at once).
    pub fn new(name: &str, what: &str, run: &Run, memory: bool, targets: Targets) -> Self {
        let empty = (Side::default(), Spent::default());
        let (proxy, spent) = run
            .relayed
            .iter()
            .find(|(relay, _, _)| *relay == Relay::Tokenrelay)
            .map_or((&empty.0, &empty.1), |(_, side, spent)| (side, spent));
        let direct = &run.direct;
        let tokens = proxy.tokens();
        let mut failure_examples = proxy.failure_examples();
        let mut references = Vec::new();
        for (relay, side, spent) in &run.relayed {
            if *relay == Relay::Tokenrelay {
                continue;
            }
            failure_examples.extend(
                side.failure_examples()
                    .into_iter()
                    .map(|f| format!("{}: {f}", relay.name())),
            );
            references.push(Reference {
                name: relay.name(),
                streams: side.outcomes.len(),
                failures: side.failures(),
                ttft: ttft(side),
                tps: side.tokens_per_second(),
                cpu_us: cpu_per_token(spent, side.tokens()),
                kib_per_stream: kib_per_stream(spent).filter(|_| memory),
            });
        }
        failure_examples.extend(
            direct
                .failure_examples()
                .into_iter()
                .map(|f| format!("direct: {f}")),
        );
        let mut row = Self {
            name: name.to_owned(),
            what: what.to_owned(),
            streams: proxy.outcomes.len(),
            tokens,
            failures: proxy.failures(),
            direct_failures: direct.failures(),
            failure_examples,
            ttft_direct: ttft(direct),
            ttft_proxy: ttft(proxy),
            tps_direct: direct.tokens_per_second(),
            tps_proxy: proxy.tokens_per_second(),
            cpu_us: cpu_per_token(spent, tokens),
            kernel_share: spent
                .ticks
                .filter(|(user, system)| user + system > 0)
                .map(|(user, system)| system as f64 / (user + system) as f64),
            direct_load_cpu_us: spent
                .direct_load_cpu
                .filter(|_| direct.tokens() > 0)
                .map(|cpu| cpu.as_secs_f64() * 1e6 / direct.tokens() as f64),
            kib_per_stream: None,
            writes_per_token: spent
                .syscalls
                .filter(|_| tokens > 0)
                .map(|(_, writes)| writes as f64 / tokens as f64),
            memory: None,
            references,
            extra: Vec::new(),
            targets,
            checks: Vec::new(),
        };
        if memory {
            if let (Some(baseline), Some((open, peak))) = (spent.baseline_kib, spent.peak) {
                row.kib_per_stream = kib_per_stream(spent);
                row.memory = Some(json!({
                    "baseline_kib": baseline,
                    "peak_kib": peak,
                    "open_streams": open,
                }));
            }
        }
        row.check();
        row
    }

    /// The 1 MiB line: how much later than direct it arrives whole.
    pub fn long_line(run: &Run, limit_ms: f64) -> Self {
        let mut row = Self::new(
            "parser-line",
            "one 1 MiB line arriving in 16-byte pieces",
            run,
            false,
            Targets::default(),
        );
        let direct_ms = best_elapsed_ms(&run.direct);
        row.cpu_us = None;
        for reference in &mut row.references {
            reference.cpu_us = None;
        }
        row.extra = vec![("direct_ms".to_owned(), direct_ms, "ms")];
        let mut proxy_ms = f64::NAN;
        for (relay, side, spent) in &run.relayed {
            let ms = best_elapsed_ms(side);
            let lines = side.outcomes.len().max(1) as f64;
            let name = match relay {
                Relay::Tokenrelay => {
                    proxy_ms = ms;
                    "relayed".to_owned()
                }
                other => other.name().to_owned(),
            };
            row.extra.push((format!("{name}_ms"), ms, "ms"));
            row.extra
                .push((format!("{name}_added_ms"), ms - direct_ms, "ms"));
            if let Some(cpu) = spent.cpu {
                row.extra.push((
                    format!("{name}_cpu_ms_per_line"),
                    cpu.as_secs_f64() * 1e3 / lines,
                    "ms",
                ));
            }
        }
        row.checks.push(Check {
            what: "1 MiB line relayed within 50 ms of direct".to_owned(),
            target: format!("≤ {limit_ms} ms later"),
            measured: format!("{:+.1} ms", proxy_ms - direct_ms),
            met: proxy_ms - direct_ms <= limit_ms,
        });
        row
    }

    /// N then 2N small events in one stream each: linear if 2N takes about
    /// twice as long as N.
    pub fn small_events(runs: &[(u32, Run)]) -> Self {
        let mut all = Run::default();
        let mut extra = Vec::new();
        let mut relayed_ms = Vec::new();
        for (count, run) in runs {
            all.absorb(run);
            extra.push((
                format!("direct_ms_{count}"),
                best_elapsed_ms(&run.direct),
                "ms",
            ));
            for (relay, side, _) in &run.relayed {
                let ms = best_elapsed_ms(side);
                let name = match relay {
                    Relay::Tokenrelay => {
                        relayed_ms.push(ms);
                        "relayed"
                    }
                    other => other.name(),
                };
                extra.push((format!("{name}_ms_{count}"), ms, "ms"));
            }
        }
        let small = runs.first().map_or(0, |(count, _)| *count);
        let mut row = Self::new(
            "parser-events",
            &format!("{small} then {} small events in one stream", small * 2),
            &all,
            false,
            Targets::default(),
        );
        let ratio = match relayed_ms.as_slice() {
            [one, two] if *one > 0.0 => two / one,
            _ => f64::NAN,
        };
        extra.push(("time_ratio_2n_over_n".to_owned(), ratio, "×"));
        row.extra = extra;
        row.checks.push(Check {
            what: "twice the events take about twice the time (linear)".to_owned(),
            target: "2N/N ≤ 2.5×".to_owned(),
            measured: format!("{ratio:.2}×"),
            met: ratio <= 2.5,
        });
        row
    }

    /// Fan-out: each relay's CPU per token delivered to a follower (how
    /// many reached them, relay by relay, in `follower_tokens`), not per
    /// token of every reader; tokenrelay's held to `limit_us`.
    pub fn fanout(mut self, run: &Run, follower_tokens: &[(Relay, u64)], limit_us: f64) -> Self {
        for (relay, tokens) in follower_tokens {
            let Some((_, _, spent)) = run.relayed.iter().find(|(r, _, _)| r == relay) else {
                continue;
            };
            let cpu = cpu_per_token(spent, *tokens);
            if *relay == Relay::Tokenrelay {
                self.cpu_us = cpu;
                self.extra
                    .push(("follower_tokens".to_owned(), *tokens as f64, ""));
            } else if let Some(reference) =
                self.references.iter_mut().find(|r| r.name == relay.name())
            {
                reference.cpu_us = cpu;
            }
        }
        self.targets.cpu_us = Some(limit_us);
        self.check();
        self
    }

    /// With Redis: its commands per relayed token, and tokenrelay's CPU per
    /// token against the same load without Redis (`without`), held to
    /// `max_commands` and `max_ratio`.
    pub fn redis(
        mut self,
        spent: &Spent,
        without: &(Side, Spent),
        max_commands: f64,
        max_ratio: f64,
    ) -> Self {
        let tokens = self.tokens.max(1) as f64;
        let commands = spent.redis_commands.map(|c| c as f64 / tokens);
        let without_us = cpu_per_token(&without.1, without.0.tokens());
        let ratio = self
            .cpu_us
            .zip(without_us)
            .map(|(with, without)| with / without);
        for (name, value, unit) in [
            ("redis_commands_per_token", commands, ""),
            ("cpu_us_without_redis", without_us, "µs"),
            ("cpu_ratio_to_without_redis", ratio, "×"),
            (
                "redis_server_cpu_us_per_token",
                spent.redis_cpu.map(|cpu| cpu.as_secs_f64() * 1e6 / tokens),
                "µs",
            ),
        ] {
            if let Some(value) = value {
                self.extra.push((name.to_owned(), value, unit));
            }
        }
        self.checks.push(Check {
            what: "Redis commands per relayed token".to_owned(),
            target: format!("≤ {max_commands}"),
            measured: opt(commands, 3, ""),
            met: commands.is_some_and(|c| c <= max_commands),
        });
        self.checks.push(Check {
            what: "CPU per token, with Redis ÷ without".to_owned(),
            target: format!("≤ {max_ratio}×"),
            measured: opt(ratio, 2, "×"),
            met: ratio.is_some_and(|r| r <= max_ratio),
        });
        self
    }

    /// tokenrelay's CPU per token as a multiple of a reference relay's.
    fn cpu_multiple(&self, reference: &str) -> Option<f64> {
        let theirs = self.reference(reference)?.cpu_us.filter(|us| *us > 0.0)?;
        Some(self.cpu_us? / theirs)
    }

    fn reference(&self, name: &str) -> Option<&Reference> {
        self.references.iter().find(|r| r.name == name)
    }

    /// The reference that parses nothing: the pipe, or where followers
    /// read one answer, its counterpart the broadcast.
    fn floor(&self) -> &'static str {
        let broadcast = Relay::Broadcast.name();
        if self.reference(broadcast).is_some() {
            broadcast
        } else {
            Relay::Pipe.name()
        }
    }

    fn added(&self) -> Option<Ttft> {
        let (direct, proxy) = (self.ttft_direct?, self.ttft_proxy?);
        Some(Ttft {
            p50: proxy.p50 - direct.p50,
            p99: proxy.p99 - direct.p99,
        })
    }

    fn ratio(&self) -> Option<f64> {
        (self.tps_direct > 0.0).then(|| self.tps_proxy / self.tps_direct)
    }

    fn check(&mut self) {
        let mut checks = vec![Check {
            what: "no stream lost, cut short or reordered".to_owned(),
            target: "0 failed".to_owned(),
            measured: format!("{} failed of {}", self.failures, self.streams),
            met: self.failures == 0 && self.streams > 0,
        }];
        let t = self.targets;
        let added = self.added();
        for (limit, value, what) in [
            (
                t.added_p50_ms,
                added.map(|a| a.p50),
                "added time to first token, p50",
            ),
            (
                t.added_p99_ms,
                added.map(|a| a.p99),
                "added time to first token, p99",
            ),
        ] {
            if let Some(limit) = limit {
                checks.push(Check {
                    what: what.to_owned(),
                    target: format!("≤ {limit} ms"),
                    measured: value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.3} ms")),
                    met: value.is_some_and(|v| v <= limit),
                });
            }
        }
        if let Some(limit) = t.cpu_us {
            checks.push(Check {
                what: "CPU per relayed token".to_owned(),
                target: format!("≤ {limit} µs"),
                measured: opt(self.cpu_us, 2, " µs"),
                met: self.cpu_us.is_some_and(|v| v <= limit),
            });
        }
        if let Some(limit) = t.min_ratio {
            let ratio = self.ratio();
            checks.push(Check {
                what: "tokens per second, relayed ÷ direct".to_owned(),
                target: format!("≥ {limit}×"),
                measured: opt(ratio, 3, "×"),
                met: ratio.is_some_and(|v| v >= limit),
            });
        }
        if let Some(limit) = t.max_kib {
            checks.push(Check {
                what: "memory per open stream".to_owned(),
                target: format!("≤ {limit} KiB"),
                measured: opt(self.kib_per_stream, 1, " KiB"),
                met: self.kib_per_stream.is_some_and(|v| v <= limit),
            });
        }
        checks.extend(self.against_naive());
        self.checks = checks;
    }

    /// The targets set as multiples of what the naive relay does in the
    /// same run.
    fn against_naive(&self) -> Vec<Check> {
        let t = self.targets;
        let Some(naive) = self.references.iter().find(|r| r.name == "naive") else {
            return Vec::new();
        };
        let mut checks = Vec::new();
        if let Some(limit) = t.cpu_vs_naive {
            let ratio = self.cpu_us.zip(naive.cpu_us).map(|(ours, its)| ours / its);
            checks.push(Check {
                what: "CPU per token ÷ the naive relay's".to_owned(),
                target: format!("≤ {limit}×"),
                measured: opt(ratio, 2, "×"),
                met: ratio.is_some_and(|v| v <= limit),
            });
        }
        if t.ttft_vs_naive {
            let its = self
                .ttft_direct
                .zip(naive.ttft)
                .map(|(direct, naive)| Ttft {
                    p50: naive.p50 - direct.p50,
                    p99: naive.p99 - direct.p99,
                });
            for (what, ours, its) in [
                ("p50", self.added().map(|a| a.p50), its.map(|a| a.p50)),
                ("p99", self.added().map(|a| a.p99), its.map(|a| a.p99)),
            ] {
                checks.push(Check {
                    what: format!("added time to first token, {what}, beside the naive relay's"),
                    target: its.map_or_else(|| "n/a".to_owned(), |v| format!("≤ {v:.3} ms")),
                    measured: opt(ours, 3, " ms"),
                    met: ours.zip(its).is_some_and(|(ours, its)| ours <= its),
                });
            }
        }
        if t.memory_vs_naive {
            checks.push(Check {
                what: "memory per open stream beside the naive relay's".to_owned(),
                target: format!("≤ {}", opt(naive.kib_per_stream, 1, " KiB")),
                measured: opt(self.kib_per_stream, 1, " KiB"),
                met: self
                    .kib_per_stream
                    .zip(naive.kib_per_stream)
                    .is_some_and(|(ours, its)| ours <= its),
            });
        }
        checks
    }
}

fn ttft(side: &Side) -> Option<Ttft> {
    let ttft = side.ttft_ms();
    Some(Ttft {
        p50: percentile(&ttft, 0.50)?,
        p99: percentile(&ttft, 0.99)?,
    })
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// The quickest of a side's runs: what else the machine did can only ever
/// make a run slower, so the best of a few is the steadiest figure.
fn best_elapsed_ms(side: &Side) -> f64 {
    side.outcomes
        .iter()
        .filter(|o| o.failure.is_none())
        .map(|o| o.elapsed.as_secs_f64() * 1e3)
        .min_by(f64::total_cmp)
        .unwrap_or(f64::NAN)
}

fn opt(value: Option<f64>, decimals: usize, unit: &str) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.decimals$}{unit}"))
}

/// Every scenario of one run.
#[derive(Debug)]
pub struct Report {
    pub environment: Environment,
    pub rows: Vec<Row>,
}

impl Report {
    /// Streams that failed, direct or relayed.
    pub fn failures(&self) -> usize {
        self.rows
            .iter()
            .map(|row| {
                row.failures
                    + row.direct_failures
                    + row.references.iter().map(|r| r.failures).sum::<usize>()
            })
            .sum()
    }

    pub fn all_met(&self) -> bool {
        self.rows.iter().flat_map(|row| &row.checks).all(|c| c.met)
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n{:<14} {:>7} {:>9} {:>17} {:>17} {:>10} {:>10} {:>6} {:>8} {:>6} {:>9} {:>11} {:>9} {:>8} {:>8}",
            "scenario",
            "streams",
            "fail d/r",
            "TTFT direct ms",
            "TTFT added ms",
            "direct t/s",
            "relay t/s",
            "ratio",
            "CPU µs/t",
            "kernel",
            "bare µs/t",
            "syscalls/t",
            "KiB/strm",
            "× naive",
            "× pipe"
        );
        let _ = writeln!(
            out,
            "{:<14} {:>7} {:>9} {:>17} {:>17} {:>10} {:>10} {:>6} {:>8} {:>6} {:>9} {:>11} {:>9} {:>8} {:>8}",
            "",
            "",
            "",
            "p50 / p99",
            "p50 / p99",
            "",
            "",
            "",
            "",
            "",
            "",
            "writes",
            "",
            "CPU/t",
            "CPU/t"
        );
        let pair = |t: Option<Ttft>| {
            t.map_or_else(
                || "n/a".to_owned(),
                |t| format!("{:.3} / {:.3}", t.p50, t.p99),
            )
        };
        for row in &self.rows {
            // No reference has Redis: those rows have no multiple. Fan-out's
            // floor is the broadcast, in the pipe's column.
            let multiple = |name| match row.reference(name) {
                Some(_) => opt(row.cpu_multiple(name), 2, "×"),
                None => "—".to_owned(),
            };
            let _ = writeln!(
                out,
                "{:<14} {:>7} {:>9} {:>17} {:>17} {:>10.0} {:>10.0} {:>6} {:>8} {:>6} {:>9} {:>11} {:>9} {:>8} {:>8}",
                row.name,
                row.streams,
                format!("{}/{}", row.direct_failures, row.failures),
                pair(row.ttft_direct),
                pair(row.added()),
                row.tps_direct,
                row.tps_proxy,
                opt(row.ratio(), 3, ""),
                opt(row.cpu_us, 2, ""),
                opt(row.kernel_share.map(|share| share * 100.0), 0, "%"),
                opt(row.direct_load_cpu_us, 2, ""),
                opt(row.writes_per_token, 2, ""),
                opt(row.kib_per_stream, 1, ""),
                multiple("naive"),
                multiple(row.floor()),
            );
        }
        let _ = writeln!(
            out,
            "\n{:<14} {:<10} {:>7} {:>9} {:>17} {:>10} {:>6} {:>8} {:>9}",
            "scenario",
            "relay",
            "streams",
            "fail",
            "TTFT added ms",
            "relay t/s",
            "ratio",
            "CPU µs/t",
            "KiB/strm"
        );
        for row in &self.rows {
            let tokenrelay = Reference {
                name: "tokenrelay",
                streams: row.streams,
                failures: row.failures,
                ttft: row.ttft_proxy,
                tps: row.tps_proxy,
                cpu_us: row.cpu_us,
                kib_per_stream: row.kib_per_stream,
            };
            let references: Vec<&Reference> = row.references.iter().collect();
            if references.is_empty() {
                let _ = writeln!(
                    out,
                    "{:<14} {:<10} {:>7} {:>9} {:>17} {:>10} {:>6} {:>8} {:>9}",
                    row.name, "naive/pipe", "—", "—", "—", "—", "—", "—", "—"
                );
                continue;
            }
            for relay in std::iter::once(&tokenrelay).chain(references) {
                let added = row.ttft_direct.zip(relay.ttft).map(|(d, r)| Ttft {
                    p50: r.p50 - d.p50,
                    p99: r.p99 - d.p99,
                });
                let _ = writeln!(
                    out,
                    "{:<14} {:<10} {:>7} {:>9} {:>17} {:>10.0} {:>6} {:>8} {:>9}",
                    row.name,
                    relay.name,
                    relay.streams,
                    relay.failures,
                    pair(added),
                    relay.tps,
                    opt(
                        (row.tps_direct > 0.0).then(|| relay.tps / row.tps_direct),
                        3,
                        ""
                    ),
                    opt(relay.cpu_us, 2, ""),
                    opt(relay.kib_per_stream, 1, ""),
                );
            }
        }
        let _ = writeln!(out, "\ntargets:");
        for row in &self.rows {
            for check in &row.checks {
                let _ = writeln!(
                    out,
                    "  [{}] {:<14} {:<55} {:<14} {}",
                    if check.met { " met " } else { "MISSED" },
                    row.name,
                    check.what,
                    check.target,
                    check.measured
                );
            }
        }
        for row in &self.rows {
            if !row.extra.is_empty() {
                let extra: Vec<String> = row
                    .extra
                    .iter()
                    .map(|(name, value, unit)| format!("{name} {value:.2}{unit}"))
                    .collect();
                let _ = writeln!(out, "  {}: {}", row.name, extra.join(", "));
            }
            for example in &row.failure_examples {
                let _ = writeln!(out, "  {} failure: {example}", row.name);
            }
        }
        out
    }

    pub fn json(&self) -> String {
        let env = &self.environment;
        let scenarios: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let ttft = |t: Option<Ttft>| t.map(|t| json!({"p50": t.p50, "p99": t.p99}));
                json!({
                    "name": row.name,
                    "what": row.what,
                    "streams": row.streams,
                    "tokens": row.tokens,
                    "failures": row.failures,
                    "direct_failures": row.direct_failures,
                    "failure_examples": row.failure_examples,
                    "ttft_ms": {
                        "direct": ttft(row.ttft_direct),
                        "relayed": ttft(row.ttft_proxy),
                        "added": ttft(row.added()),
                    },
                    "tokens_per_second": {
                        "direct": row.tps_direct,
                        "relayed": row.tps_proxy,
                        "ratio": row.ratio(),
                    },
                    "cpu_us_per_token": row.cpu_us,
                    "cpu_kernel_share": row.kernel_share,
                    "direct_load_generator_cpu_us_per_token": row.direct_load_cpu_us,
                    "write_syscalls_per_token": row.writes_per_token,
                    "kib_per_open_stream": row.kib_per_stream,
                    "memory": row.memory,
                    // Absent (null) where no reference runs the scenario.
                    "cpu_multiple_of": (!row.references.is_empty()).then(|| {
                        row.references
                            .iter()
                            .map(|r| (r.name.to_owned(), json!(row.cpu_multiple(r.name))))
                            .collect::<serde_json::Map<String, Value>>()
                    }),
                    "references": row.references.iter().map(|r| {
                        (r.name.to_owned(), json!({
                            "streams": r.streams,
                            "failures": r.failures,
                            "ttft_ms": ttft(r.ttft),
                            "tokens_per_second": r.tps,
                            "cpu_us_per_token": r.cpu_us,
                            "kib_per_open_stream": r.kib_per_stream,
                        }))
                    }).collect::<serde_json::Map<String, Value>>(),
                    "extra": row.extra.iter().map(|(name, value, unit)| {
                        (name.clone(), json!({"value": value, "unit": unit}))
                    }).collect::<serde_json::Map<String, Value>>(),
                    "checks": row.checks.iter().map(|c| json!({
                        "what": c.what, "target": c.target, "measured": c.measured, "met": c.met,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let value = json!({
            "command": "cargo bench --bench relay",
            "environment": {
                "cpu": env.cpu,
                "cores": env.cores,
                "kernel": env.kernel,
                "tokenrelay_pinned_to_one_core": env.pinned,
                "quick": env.quick,
                "binary": env.binary,
                "wrapper": env.wrapper,
                "load_average_at_start": env.load_average,
                "unix_time": env.unix_time,
                "version": env!("CARGO_PKG_VERSION"),
            },
            "all_targets_met": self.all_met(),
            "scenarios": scenarios,
        });
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }

    /// The figures as a Markdown table against the targets, for the README.
    pub fn markdown(&self) -> String {
        let mut out = String::from("| scenario | target | measured | met |\n|---|---|---|---|\n");
        for row in &self.rows {
            for check in &row.checks {
                let _ = writeln!(
                    out,
                    "| {} | {}: {} | {} | {} |",
                    row.name,
                    check.what,
                    check.target,
                    check.measured,
                    if check.met { "yes" } else { "**no**" }
                );
            }
        }
        out
    }

    pub fn svg(&self) -> String {
        let find = |name: &str| self.rows.iter().find(|row| row.name == name);
        let short = |name: &str| name.trim_start_matches("parser-").to_owned();
        let mut cpu = Vec::new();
        let mut ratio = Vec::new();
        let mut ttft = Vec::new();
        let mut memory = Vec::new();
        for row in &self.rows {
            let group = short(&row.name);
            if row.cpu_us.is_some() {
                cpu.push(Bar::new(
                    &group,
                    "relay",
                    row.cpu_us,
                    row.targets.cpu_us,
                    false,
                ));
                for reference in &row.references {
                    cpu.push(Bar::reference(&group, reference.name, reference.cpu_us));
                }
                // Fan-out's direct load is one stream, not 500: nothing to set beside it.
                if row.name != "fanout" {
                    cpu.push(Bar::reference(&group, "bare", row.direct_load_cpu_us));
                }
            }
            if row.name != "parser-line" && row.name != "fanout" {
                ratio.push(Bar::new(
                    &group,
                    "",
                    row.ratio(),
                    row.targets.min_ratio,
                    true,
                ));
            }
            if let Some(added) = row.added().filter(|_| !row.name.starts_with("parser")) {
                ttft.push(Bar::new(
                    &group,
                    "p50",
                    Some(added.p50),
                    row.targets.added_p50_ms,
                    false,
                ));
                ttft.push(Bar::new(
                    &group,
                    "p99",
                    Some(added.p99),
                    row.targets.added_p99_ms,
                    false,
                ));
            }
            if row.kib_per_stream.is_some() {
                memory.push(Bar::new(
                    &group,
                    "relay",
                    row.kib_per_stream,
                    row.targets.max_kib,
                    false,
                ));
                for reference in &row.references {
                    memory.push(Bar::reference(
                        &group,
                        reference.name,
                        reference.kib_per_stream,
                    ));
                }
            }
        }
        let mut notes = Vec::new();
        if let Some(line) = find("parser-line") {
            if let Some((_, added, _)) = line.extra.iter().find(|(n, _, _)| n == "added_ms") {
                notes.push(format!(
                    "1 MiB line in 16-byte pieces: {added:+.1} ms vs direct (target ≤ 50 ms)"
                ));
            }
        }
        if let Some(events) = find("parser-events") {
            if let Some((_, r, _)) = events
                .extra
                .iter()
                .find(|(n, _, _)| n == "time_ratio_2n_over_n")
            {
                notes.push(format!(
                    "small events: 2N take {r:.2}× the time of N (linear ≈ 2×)"
                ));
            }
        }
        let multiples: Vec<String> = self
            .rows
            .iter()
            .filter_map(|row| {
                Some(format!(
                    "{} {:.2}× / {:.2}×",
                    short(&row.name),
                    row.cpu_multiple("pipe")?,
                    row.cpu_multiple("naive")?
                ))
            })
            .collect();
        if !multiples.is_empty() {
            notes.push(format!(
                "tokenrelay's CPU per token ÷ the byte pipe's / ÷ the naive relay's: {}",
                multiples.join(", ")
            ));
        }
        for row in self.rows.iter().filter(|row| row.references.is_empty()) {
            let figure = |name: &str| {
                row.extra
                    .iter()
                    .find(|(n, _, _)| n == name)
                    .map(|(_, value, _)| *value)
            };
            if let Some(commands) = figure("redis_commands_per_token") {
                notes.push(format!(
                    "{}: {commands:.2} Redis commands per token, {} the CPU per token without Redis",
                    row.name,
                    opt(figure("cpu_ratio_to_without_redis"), 2, "×"),
                ));
            } else if row.name == "fanout" {
                notes.push(format!(
                    "fanout: {} per token delivered to a follower ({}), {} the broadcast's {}",
                    opt(row.cpu_us, 1, " µs"),
                    row.what,
                    opt(row.cpu_multiple("broadcast"), 2, "×"),
                    opt(row.reference("broadcast").and_then(|r| r.cpu_us), 1, " µs"),
                ));
            }
        }
        let failures: usize = self.rows.iter().map(|row| row.failures).sum();
        notes.push(format!("failed streams through tokenrelay: {failures}"));
        let panels = [
            Panel {
                title: "CPU per relayed token (µs)",
                log: false,
                bars: cpu,
            },
            Panel {
                title: "Added time to first token (ms)",
                log: true,
                bars: ttft,
            },
            Panel {
                title: "Tokens/s relayed ÷ direct",
                log: false,
                bars: ratio,
            },
            Panel {
                title: "Memory per open stream (KiB)",
                log: false,
                bars: memory,
            },
        ];
        svg(&panels, &notes, &self.environment)
    }
}

/// One bar of the chart, with the target it is held to.
struct Bar {
    group: String,
    sub: String,
    value: Option<f64>,
    target: Option<f64>,
    /// The target is a floor (throughput), not a ceiling.
    at_least: bool,
    /// Not tokenrelay's figure, for comparison.
    reference: bool,
}

impl Bar {
    fn new(
        group: &str,
        sub: &str,
        value: Option<f64>,
        target: Option<f64>,
        at_least: bool,
    ) -> Self {
        Self {
            group: group.to_owned(),
            sub: sub.to_owned(),
            value,
            target,
            at_least,
            reference: false,
        }
    }

    /// Not tokenrelay's figure but another's (a reference relay's, or the
    /// load generator's alone), for comparison.
    fn reference(group: &str, sub: &str, value: Option<f64>) -> Self {
        Self {
            reference: true,
            ..Self::new(group, sub, value, None, false)
        }
    }

    fn met(&self) -> Option<bool> {
        let (value, target) = (self.value?, self.target?);
        Some(if self.at_least {
            value >= target
        } else {
            value <= target
        })
    }
}

struct Panel {
    title: &'static str,
    log: bool,
    bars: Vec<Bar>,
}

const PANEL_W: f64 = 290.0;
const PLOT_W: f64 = 230.0;
const PLOT_H: f64 = 220.0;
const TOP: f64 = 84.0;
const LEFT: f64 = 48.0;

fn svg(panels: &[Panel], notes: &[String], env: &Environment) -> String {
    let width = PANEL_W * panels.len() as f64 + 20.0;
    let height = TOP + PLOT_H + 60.0 + 18.0 * notes.len() as f64 + 30.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        out,
        r##"<text x="12" y="24" font-size="16" font-weight="bold" fill="#222">What tokenrelay adds to a token stream</text>"##
    );
    let _ = writeln!(
        out,
        r##"<text x="12" y="44" fill="#555">{}</text>"##,
        escape(&format!(
            "tokenrelay {} · {} · {} cores, tokenrelay {} · {} · cargo bench --bench relay",
            env!("CARGO_PKG_VERSION"),
            env.cpu,
            env.cores,
            if env.pinned {
                "pinned to one core"
            } else {
                "not pinned"
            },
            date(env.unix_time),
        ))
    );
    for (i, panel) in panels.iter().enumerate() {
        let x0 = 10.0 + PANEL_W * i as f64;
        draw_panel(&mut out, panel, x0);
    }
    let legend_y = TOP + PLOT_H + 52.0;
    let _ = writeln!(
        out,
        r##"<rect x="12" y="{}" width="10" height="10" fill="#2e7d32"/><text x="26" y="{}" fill="#333">meets its target</text><rect x="130" y="{}" width="10" height="10" fill="#e65100"/><text x="144" y="{}" fill="#333">misses it</text><rect x="220" y="{}" width="10" height="10" fill="#78909c"/><text x="234" y="{}" fill="#333">no target</text><line x1="310" y1="{}" x2="340" y2="{}" stroke="#c62828" stroke-width="2" stroke-dasharray="5,3"/><text x="346" y="{}" fill="#333">target</text><rect x="410" y="{}" width="10" height="10" fill="#cfd8dc"/><text x="424" y="{}" fill="#333">naive relay, byte pipe, and bare: the fake upstream and clients alone, run directly</text>"##,
        legend_y - 9.0,
        legend_y,
        legend_y - 9.0,
        legend_y,
        legend_y - 9.0,
        legend_y,
        legend_y - 4.0,
        legend_y - 4.0,
        legend_y,
        legend_y - 9.0,
        legend_y,
    );
    for (i, note) in notes.iter().enumerate() {
        let _ = writeln!(
            out,
            r##"<text x="12" y="{}" fill="#333">{}</text>"##,
            legend_y + 22.0 + 18.0 * i as f64,
            escape(note)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn draw_panel(out: &mut String, panel: &Panel, x0: f64) {
    let left = x0 + LEFT;
    let bottom = TOP + PLOT_H;
    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" font-weight="bold" fill="#222">{}</text>"##,
        x0 + 4.0,
        TOP - 14.0,
        escape(panel.title)
    );
    let values = panel
        .bars
        .iter()
        .flat_map(|bar| [bar.value, bar.target])
        .flatten()
        .filter(|v| v.is_finite());
    let (low, high) = if panel.log {
        let positive: Vec<f64> = values.filter(|v| *v > 0.0).collect();
        let min = positive.iter().copied().fold(f64::INFINITY, f64::min);
        let max = positive.iter().copied().fold(0.0, f64::max);
        let low = if min.is_finite() {
            10f64.powf(min.log10().floor()).min(0.01)
        } else {
            0.01
        };
        let high = if max > 0.0 {
            10f64.powf((max * 1.5).log10().ceil())
        } else {
            10.0
        };
        (low, high.max(low * 10.0))
    } else {
        let max = values.fold(0.0, f64::max);
        (0.0, nice(max * 1.2))
    };
    let y = |v: f64| -> f64 {
        let fraction = if panel.log {
            (v.max(low).log10() - low.log10()) / (high.log10() - low.log10())
        } else {
            (v.max(0.0) - low) / (high - low)
        };
        bottom - PLOT_H * fraction.clamp(0.0, 1.0)
    };
    let ticks: Vec<f64> = if panel.log {
        let decades = (high.log10() - low.log10()).round() as i32;
        (0..=decades).map(|d| low * 10f64.powi(d)).collect()
    } else {
        (0..=4).map(|i| high * f64::from(i) / 4.0).collect()
    };
    for tick in ticks {
        let ty = y(tick);
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{ty:.1}" x2="{}" y2="{ty:.1}" stroke="#e0e0e0"/><text x="{}" y="{:.1}" text-anchor="end" fill="#666" font-size="11">{}</text>"##,
            left + PLOT_W,
            left - 6.0,
            ty + 4.0,
            number(tick)
        );
    }
    let _ = writeln!(
        out,
        r##"<line x1="{left}" y1="{bottom}" x2="{}" y2="{bottom}" stroke="#999"/>"##,
        left + PLOT_W
    );
    if panel.bars.is_empty() {
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#999">not measured in this run</text>"##,
            left + PLOT_W / 2.0,
            bottom - PLOT_H / 2.0
        );
        return;
    }
    let slot = PLOT_W / panel.bars.len() as f64;
    let bar_w = (slot * 0.62).min(36.0);
    let mut group_start = 0;
    for (i, bar) in panel.bars.iter().enumerate() {
        let cx = left + slot * (i as f64 + 0.5);
        let colour = match bar.met() {
            _ if bar.reference => "#cfd8dc",
            Some(true) => "#2e7d32",
            Some(false) => "#e65100",
            None => "#78909c",
        };
        if let Some(value) = bar.value.filter(|v| v.is_finite()) {
            let top = y(value);
            let _ = writeln!(
                out,
                r##"<rect x="{:.1}" y="{top:.1}" width="{bar_w:.1}" height="{:.1}" fill="{colour}"/><text x="{cx:.1}" y="{:.1}" text-anchor="middle" fill="#222" font-size="11">{}</text>"##,
                cx - bar_w / 2.0,
                (bottom - top).max(0.5),
                top - 4.0,
                number(value)
            );
        }
        if let Some(target) = bar.target {
            let ty = y(target);
            let _ = writeln!(
                out,
                r##"<line x1="{:.1}" y1="{ty:.1}" x2="{:.1}" y2="{ty:.1}" stroke="#c62828" stroke-width="2" stroke-dasharray="5,3"/>"##,
                cx - slot / 2.0 + 2.0,
                cx + slot / 2.0 - 2.0,
            );
        }
        if !bar.sub.is_empty() {
            let _ = writeln!(
                out,
                r##"<text x="{cx:.1}" y="{}" text-anchor="middle" fill="#666" font-size="10">{}</text>"##,
                bottom + 13.0,
                escape(&bar.sub)
            );
        }
        let last_of_group = panel
            .bars
            .get(i + 1)
            .is_none_or(|next| next.group != bar.group);
        if last_of_group {
            let first = left + slot * (group_start as f64 + 0.5);
            let label_x = (first + cx) / 2.0;
            let label_y = if bar.sub.is_empty() {
                bottom + 15.0
            } else {
                bottom + 27.0
            };
            let _ = writeln!(
                out,
                r##"<text x="{label_x:.1}" y="{label_y}" text-anchor="middle" fill="#333">{}</text>"##,
                escape(&bar.group)
            );
            group_start = i + 1;
        }
    }
}

/// A round axis maximum at or above `max`.
fn nice(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|step| step * magnitude)
        .find(|candidate| *candidate >= max)
        .unwrap_or(10.0 * magnitude)
}

/// Three significant figures, without trailing noise.
fn number(value: f64) -> String {
    let abs = value.abs();
    if abs == 0.0 {
        "0".to_owned()
    } else if abs >= 100.0 {
        format!("{value:.0}")
    } else if abs >= 10.0 {
        format!("{value:.1}")
    } else if abs >= 1.0 {
        format!("{value:.2}")
    } else if abs >= 0.01 {
        format!("{value:.3}")
    } else {
        format!("{value:.4}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `YYYY-MM-DD` (UTC) of a Unix time, without a date library.
fn date(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
