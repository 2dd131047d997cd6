//! What tokenrelay adds to a token stream, measured: the same load run
//! straight against a fake upstream, through the real release binary, and
//! through two reference relays — a naive one and a byte pipe, or for
//! fan-out the pipe's counterpart, a broadcast — side by side, each relay
//! alone on the same core.
//!
//! ```sh
//! cargo bench --bench relay                  # every scenario, a few minutes
//! cargo bench --bench relay -- burst --quick # one scenario, smaller
//! ```
//!
//! Everything it needs is here — the fake upstream (`upstream`), the load
//! generator (`client`), the child process and its `/proc` figures (`proxy`),
//! the reference relays (`references`), the Redis server of the `redis`
//! scenario (`redis_server`), and the table, JSON and SVG (`report`) — so
//! the numbers in the README can be reproduced with no outside tool.
//! `TOKENRELAY_BIN` measures another build (an older one, for a
//! before/after); `TOKENRELAY_WRAPPER` runs it under a profiler
//! (`valgrind --tool=callgrind`).

mod client;
mod proxy;
mod redis_server;
mod references;
mod report;
mod upstream;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use client::{Attach, Expect, Outcome, Request, Via};
use proxy::{Launch, Proxy};
use references::Relay;
use report::{Row, Targets};
use upstream::{Script, Scripts};

const SCENARIOS: [&str; 7] = [
    "single", "burst", "paced", "hold", "parser", "fanout", "redis",
];

/// The core each relay gets to itself, one after the other; the load
/// generator, the fake upstream and Redis share the other.
const PROXY_CORE: usize = 1;
const BENCH_CORE: usize = 0;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|first| first == references::SERVE) {
        return match references::serve(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                say(&format!("reference relay: {error}"));
                ExitCode::FAILURE
            }
        };
    }
    let options = match Options::parse(args.into_iter()) {
        Ok(Some(options)) => options,
        Ok(None) => {
            say(USAGE);
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            say(&format!("relay bench: {error}\n\n{USAGE}"));
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            say(&format!("relay bench: no runtime: {error}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        // Missed targets are a result to read, not an error; a lost,
        // cut-short or reordered token is.
        Ok(0) => ExitCode::SUCCESS,
        Ok(failures) => {
            say(&format!("relay bench: {failures} streams failed"));
            ExitCode::FAILURE
        }
        Err(error) => {
            say(&format!("relay bench: {error}"));
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str =
    "usage: cargo bench --bench relay -- [--quick|--long] [single|burst|paced|hold|parser|fanout|redis]...

Runs each named scenario (all by default) directly against a fake upstream,
through tokenrelay and through the naive and byte-pipe reference relays
(fanout: tokenrelay and the broadcast; redis: tokenrelay only; the 1 MiB
line: not the naive relay;
redis needs redis-server on the PATH),
prints a table, and writes target/bench/results.json
and target/bench/chart.svg; a full run of every scenario also updates
docs/benchmark.svg. --quick runs a smaller load for a smoke test; --long
ten times the streams, to attach a profiler to tokenrelay while it runs.

TOKENRELAY_BIN=path      measure this binary instead of this build's
TOKENRELAY_WRAPPER=cmd   run tokenrelay under cmd (e.g. valgrind --tool=callgrind)";

/// Progress and errors go to stderr, so stdout is only the table.
fn say(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

#[derive(Debug)]
struct Options {
    quick: bool,
    /// Ten times the streams: long enough to attach a profiler.
    long: bool,
    scenarios: Vec<&'static str>,
}

impl Options {
    fn parse(args: impl Iterator<Item = String>) -> Result<Option<Self>, String> {
        let mut quick = false;
        let mut long = false;
        let mut scenarios = Vec::new();
        for arg in args {
            match arg.as_str() {
                // `cargo bench` passes `--bench` to every bench binary.
                "--bench" => {}
                "--quick" => quick = true,
                "--long" => long = true,
                "-h" | "--help" => return Ok(None),
                name => match SCENARIOS.iter().find(|known| **known == name) {
                    Some(known) => scenarios.push(*known),
                    None => return Err(format!("unknown argument `{name}`")),
                },
            }
        }
        if scenarios.is_empty() {
            scenarios = SCENARIOS.to_vec();
        }
        Ok(Some(Self {
            quick,
            long,
            scenarios,
        }))
    }
}

/// What every scenario needs.
struct Bench {
    quick: bool,
    long: bool,
    upstream: SocketAddr,
    scripts: Scripts,
    launch: Launch,
}

impl Bench {
    /// Streams per slot: `quick` in a smoke run, `full` normally, ten
    /// times that in a long one.
    fn scaled(&self, quick: usize, full: usize) -> usize {
        if self.quick {
            quick
        } else if self.long {
            full * 10
        } else {
            full
        }
    }
}

/// Runs the scenarios and writes the reports; returns how many streams failed.
async fn run(options: Options) -> Result<usize, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("bench");
    std::fs::create_dir_all(&out)
        .map_err(|error| format!("cannot create {}: {error}", out.display()))?;
    let binary = match std::env::var_os("TOKENRELAY_BIN") {
        Some(path) => proxy::check_binary(&PathBuf::from(path))?,
        None => release_binary(&root)?,
    };
    let wrapper: Vec<String> = std::env::var("TOKENRELAY_WRAPPER")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    // Counted before pinning, which leaves this process one core to see.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let pinned = pin_self(cores);
    let log = out.join("tokenrelay.log");
    let _ = std::fs::remove_file(&log);
    let stop = CancellationToken::new();
    let scripts = Scripts::default();
    let upstream = upstream::spawn(scripts.clone(), stop.clone())
        .await
        .map_err(|error| format!("cannot start the fake upstream: {error}"))?;
    let bench = Bench {
        quick: options.quick,
        long: options.long,
        upstream,
        scripts,
        launch: Launch {
            binary: binary.clone(),
            wrapper: wrapper.clone(),
            core: pinned.then_some(PROXY_CORE),
            log,
            dir: out.clone(),
            env: Vec::new(),
        },
    };
    let environment = report::Environment::now(&binary, cores, pinned, options.quick, &wrapper);
    say(&format!(
        "relay bench: {} ({}), tokenrelay {}; load average {}",
        if options.quick { "quick" } else { "full" },
        if pinned {
            format!("tokenrelay pinned to core {PROXY_CORE}, load on core {BENCH_CORE}")
        } else {
            "not pinned: taskset or a second core is missing".to_owned()
        },
        binary.display(),
        environment.load_average,
    ));
    let mut rows = Vec::new();
    for name in &options.scenarios {
        say(&format!("==> {name}"));
        match *name {
            "single" => rows.push(single(&bench).await?),
            "burst" => rows.push(burst(&bench).await?),
            "paced" => rows.push(paced(&bench).await?),
            "hold" => rows.push(hold(&bench).await?),
            "parser" => rows.extend(parser(&bench).await?),
            "fanout" => rows.push(fanout(&bench).await?),
            _ => rows.extend(redis(&bench).await?),
        }
    }
    stop.cancel();
    let report = report::Report { environment, rows };
    let table = report.table();
    let _ = write!(std::io::stdout(), "{table}");
    let json = out.join("results.json");
    let chart = out.join("chart.svg");
    write_file(&json, &report.json())?;
    let svg = report.svg();
    write_file(&chart, &svg)?;
    write_file(&out.join("results.md"), &report.markdown())?;
    say(&format!("wrote {} and {}", json.display(), chart.display()));
    // Only a full run of this build, as the README says, replaces its chart.
    let standard = !options.quick
        && !options.long
        && wrapper.is_empty()
        && std::env::var_os("TOKENRELAY_BIN").is_none();
    if standard && options.scenarios.len() == SCENARIOS.len() {
        let docs = root.join("docs");
        std::fs::create_dir_all(&docs)
            .map_err(|error| format!("cannot create {}: {error}", docs.display()))?;
        write_file(&docs.join("benchmark.svg"), &svg)?;
        say("updated docs/benchmark.svg");
    }
    Ok(report.failures())
}

/// The binary `cargo build --release` makes, which is what users run. Not
/// `CARGO_BIN_EXE_tokenrelay`: a bench build unifies the dev-dependencies'
/// features into it (tokio's `test-util` puts a mutex behind every clock
/// read), so it is not the binary that ships.
fn release_binary(root: &std::path::Path) -> Result<PathBuf, String> {
    say("building the release binary: cargo build --release --bin tokenrelay");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--bin",
            "tokenrelay",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|error| format!("cannot run cargo: {error}"))?;
    if !output.status.success() {
        return Err("cargo build --release failed".to_owned());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let executable = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["target"]["name"] == "tokenrelay")
        .find_map(|message| message["executable"].as_str().map(PathBuf::from));
    match executable {
        Some(path) => proxy::check_binary(&path),
        None => Err("cargo build --release named no tokenrelay executable".to_owned()),
    }
}

fn write_file(path: &std::path::Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|error| format!("cannot write {}: {error}", path.display()))
}

/// Moves this process to `BENCH_CORE`, so the proxy can have `PROXY_CORE`
/// alone; false when that is not possible here.
fn pin_self(cores: usize) -> bool {
    if cores < 2 {
        return false;
    }
    Command::new("taskset")
        .args([
            "-a",
            "-p",
            "-c",
            &BENCH_CORE.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// One load: `slots` clients, each running `per_slot` streams one after the
/// other, the slots' starts spread over `stagger`.
#[derive(Debug, Clone)]
struct Load {
    model: String,
    expect: Expect,
    slots: usize,
    per_slot: usize,
    stagger: Duration,
    timeout: Duration,
    /// Streams run, one per slot, before measuring (both sides alike).
    warmup: usize,
}

/// The streams of one side of a scenario.
#[derive(Debug, Default)]
struct Side {
    outcomes: Vec<Outcome>,
    wall: Duration,
}

impl Side {
    fn failures(&self) -> usize {
        self.outcomes.iter().filter(|o| o.failure.is_some()).count()
    }

    fn tokens(&self) -> u64 {
        self.outcomes
            .iter()
            .filter(|o| o.failure.is_none())
            .map(|o| u64::from(o.tokens))
            .sum()
    }

    fn ttft_ms(&self) -> Vec<f64> {
        let mut ttft: Vec<f64> = self
            .outcomes
            .iter()
            .filter(|o| o.failure.is_none())
            .filter_map(|o| o.ttft)
            .map(|d| d.as_secs_f64() * 1e3)
            .collect();
        ttft.sort_by(f64::total_cmp);
        ttft
    }

    fn tokens_per_second(&self) -> f64 {
        self.tokens() as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn absorb(&mut self, other: &Side) {
        self.outcomes.extend(other.outcomes.iter().cloned());
        self.wall += other.wall;
    }

    fn failure_examples(&self) -> Vec<String> {
        let mut examples: Vec<String> = self
            .outcomes
            .iter()
            .filter_map(|o| o.failure.clone())
            .take(3)
            .collect();
        examples.dedup();
        examples
    }
}

/// One load, run directly and through one relay or more.
#[derive(Debug, Default)]
struct Run {
    direct: Side,
    relayed: Vec<(Relay, Side, Spent)>,
}

impl Run {
    /// `other`'s streams and spending added to this run's, relay by relay.
    fn absorb(&mut self, other: &Run) {
        self.direct.absorb(&other.direct);
        for (relay, side, spent) in &other.relayed {
            let at = match self.relayed.iter().position(|(r, _, _)| r == relay) {
                Some(at) => at,
                None => {
                    self.relayed
                        .push((*relay, Side::default(), Spent::default()));
                    self.relayed.len() - 1
                }
            };
            let (_, mine, my_spent) = &mut self.relayed[at];
            mine.absorb(side);
            my_spent.absorb(spent);
        }
    }
}

/// What the proxy spent on the measured load.
#[derive(Debug, Default)]
struct Spent {
    cpu: Option<Duration>,
    /// Read and write system calls.
    syscalls: Option<(u64, u64)>,
    /// User and kernel ticks: how `cpu` splits.
    ticks: Option<(u64, u64)>,
    /// The load generator's own CPU time (fake upstream and clients) while
    /// running the load directly: the cost of a bare writer and reader of
    /// the same tokens, the floor the proxy is compared with.
    direct_load_cpu: Option<Duration>,
    /// Resident memory: after warm-up, and when the most streams were open.
    baseline_kib: Option<u64>,
    peak: Option<(usize, u64)>,
    /// Commands Redis ran, and its own CPU time, when tokenrelay used one.
    redis_commands: Option<u64>,
    redis_cpu: Option<Duration>,
}

impl Spent {
    /// What the proxy spent between two readings.
    fn proxy(&mut self, before: &proxy::Cpu, after: &proxy::Cpu) {
        self.cpu = Some(before.until(after));
        self.syscalls = before.syscalls_until(after);
        self.ticks = Some(before.split_until(after));
    }

    /// `other`'s CPU time and system calls added to these.
    fn absorb(&mut self, other: &Spent) {
        fn sum<T: std::ops::Add<Output = T>>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            }
        }
        let pair = |a: Option<(u64, u64)>, b: Option<(u64, u64)>| match (a, b) {
            (Some(a), Some(b)) => Some((a.0 + b.0, a.1 + b.1)),
            (a, b) => a.or(b),
        };
        self.cpu = sum(self.cpu, other.cpu);
        self.syscalls = pair(self.syscalls, other.syscalls);
        self.ticks = pair(self.ticks, other.ticks);
        self.direct_load_cpu = sum(self.direct_load_cpu, other.direct_load_cpu);
    }
}

/// Runs `load` against `addr`, sampling the proxy's memory while it runs.
async fn drive(
    addr: SocketAddr,
    via: Via,
    load: &Load,
    proxy: Option<&Proxy>,
    redis: Option<&redis_server::Server>,
) -> (Side, Spent) {
    let request = Arc::new(Request::new(
        addr,
        via,
        &load.model,
        load.expect,
        load.timeout,
    ));
    let open = Arc::new(AtomicUsize::new(0));
    if load.warmup > 0 {
        let warm = Load {
            slots: load.warmup,
            per_slot: 1,
            stagger: Duration::ZERO,
            ..load.clone()
        };
        streams(&request, &warm, &open).await;
    }
    let mut spent = Spent::default();
    let own_before = proxy::Cpu::read(std::process::id());
    let cpu_before = proxy.and_then(Proxy::cpu);
    spent.baseline_kib = proxy.and_then(Proxy::rss_kib);
    let redis_before = match redis {
        Some(redis) => Some((redis.commands().await, redis.cpu())),
        None => None,
    };
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = proxy.map(|proxy| {
        let pid = proxy.pid();
        let open = Arc::clone(&open);
        let sampling = Arc::clone(&sampling);
        tokio::spawn(async move { sample(pid, &open, &sampling).await })
    });
    let started = Instant::now();
    let outcomes = streams(&request, load, &open).await;
    let wall = started.elapsed();
    if let (Some(before), Some(after)) = (own_before, proxy::Cpu::read(std::process::id())) {
        spent.direct_load_cpu = proxy.is_none().then(|| before.until(&after));
    }
    sampling.store(false, Ordering::Relaxed);
    if let Some(sampler) = sampler {
        spent.peak = sampler.await.ok().flatten();
    }
    if let (Some(before), Some(after)) = (cpu_before, proxy.and_then(Proxy::cpu)) {
        spent.proxy(&before, &after);
    }
    if let (Some(redis), Some((commands, cpu))) = (redis, redis_before) {
        let later = redis.commands().await;
        spent.redis_commands = commands.zip(later).map(|(a, b)| b.saturating_sub(a));
        spent.redis_cpu = cpu.zip(redis.cpu()).map(|(a, b)| a.until(&b));
    }
    (Side { outcomes, wall }, spent)
}

/// Every 100 ms, the open streams and the proxy's memory; returns the
/// latest sample with the most streams open — the fullest state the run
/// reached. Ends when `sampling` is cleared (or after 10 minutes).
async fn sample(pid: u32, open: &AtomicUsize, sampling: &AtomicBool) -> Option<(usize, u64)> {
    let mut best: Option<(usize, u64)> = None;
    for _ in 0..6_000 {
        if !sampling.load(Ordering::Relaxed) {
            break;
        }
        let now = open.load(Ordering::Relaxed);
        if let Some(kib) = proxy::rss_of(pid) {
            if best.is_none_or(|(most, _)| now >= most) && now > 0 {
                best = Some((now, kib));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    best
}

/// Runs the slots of `load` and gathers every stream's outcome.
async fn streams(request: &Arc<Request>, load: &Load, open: &Arc<AtomicUsize>) -> Vec<Outcome> {
    let start = Instant::now();
    let slots = load.slots.max(1);
    let mut tasks = Vec::with_capacity(slots);
    for slot in 0..slots {
        let request = Arc::clone(request);
        let open = Arc::clone(open);
        let at = start + load.stagger.mul_f64(slot as f64 / slots as f64);
        let per_slot = load.per_slot;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let mut outcomes = Vec::with_capacity(per_slot);
            for _ in 0..per_slot {
                outcomes.push(client::stream(&request, &open).await);
            }
            outcomes
        }));
    }
    let mut outcomes = Vec::with_capacity(slots * load.per_slot);
    for task in tasks {
        match task.await {
            Ok(mut done) => outcomes.append(&mut done),
            Err(error) => outcomes.push(client_task_failed(&error)),
        }
    }
    outcomes
}

fn client_task_failed(error: &tokio::task::JoinError) -> Outcome {
    client::failed(Duration::ZERO, format!("client task failed: {error}"))
}

/// A client task's outcome, or why it has none.
fn joined(result: Result<Outcome, tokio::task::JoinError>) -> Outcome {
    result.unwrap_or_else(|error| client_task_failed(&error))
}

/// One load through `relay`, started fresh for it (so that each scenario's
/// CPU and memory are its own) with `launch`; `redis`, when tokenrelay uses
/// one, is watched alike.
async fn through(
    bench: &Bench,
    launch: &Launch,
    relay: Relay,
    load: &Load,
    redis: Option<&redis_server::Server>,
    direct: &Spent,
) -> Result<(Side, Spent), String> {
    say(&format!("    through {}", relay.name()));
    let mut proxy = Proxy::start(launch, relay, bench.upstream).await?;
    let (side, mut spent) = drive(proxy.addr, relay.via(), load, Some(&proxy), redis).await;
    spent.direct_load_cpu = direct.direct_load_cpu;
    proxy.stop();
    Ok((side, spent))
}

/// One load directly, then through each of `relays` in turn.
async fn compare(bench: &Bench, load: &Load, relays: &[Relay]) -> Result<Run, String> {
    say("    direct");
    let (direct, direct_spent) = drive(bench.upstream, Via::OpenAi, load, None, None).await;
    let mut relayed = Vec::new();
    for &relay in relays {
        let (side, spent) = through(bench, &bench.launch, relay, load, None, &direct_spent).await?;
        relayed.push((relay, side, spent));
    }
    Ok(Run { direct, relayed })
}

/// One stream at a time, direct and through each relay by turns, so that
/// whatever else the machine does weighs on all alike: the difference
/// measured here is a tenth of a millisecond, less than the noise between
/// two runs. The load generator's own cost comes from a direct pass first.
async fn interleaved(bench: &Bench, load: &Load) -> Result<Run, String> {
    say("    direct");
    let (_, direct_spent) = drive(bench.upstream, Via::OpenAi, load, None, None).await;
    say("    direct and through each relay, by turns");
    let mut proxies = Vec::new();
    for relay in Relay::ALL {
        proxies.push((
            relay,
            Proxy::start(&bench.launch, relay, bench.upstream).await?,
        ));
    }
    let request = |addr, via| Request::new(addr, via, &load.model, load.expect, load.timeout);
    let direct_request = request(bench.upstream, Via::OpenAi);
    let requests: Vec<Request> = proxies
        .iter()
        .map(|(relay, proxy)| request(proxy.addr, relay.via()))
        .collect();
    let open = Arc::new(AtomicUsize::new(0));
    for _ in 0..load.warmup {
        client::stream(&direct_request, &open).await;
        for request in &requests {
            client::stream(request, &open).await;
        }
    }
    let before: Vec<_> = proxies.iter().map(|(_, proxy)| proxy.cpu()).collect();
    let streams = load.slots.max(1) * load.per_slot;
    let mut direct = Vec::with_capacity(streams);
    let mut relayed: Vec<Vec<Outcome>> = requests.iter().map(|_| Vec::new()).collect();
    for _ in 0..streams {
        direct.push(client::stream(&direct_request, &open).await);
        for (request, outcomes) in requests.iter().zip(&mut relayed) {
            outcomes.push(client::stream(request, &open).await);
        }
    }
    // One at a time, a side's throughput is its tokens over its own streams' time.
    let side = |outcomes: Vec<Outcome>| Side {
        wall: outcomes.iter().map(|o| o.elapsed).sum(),
        outcomes,
    };
    let mut run = Run {
        direct: side(direct),
        relayed: Vec::new(),
    };
    for (((relay, mut proxy), before), outcomes) in proxies.into_iter().zip(before).zip(relayed) {
        let mut spent = Spent {
            direct_load_cpu: direct_spent.direct_load_cpu,
            ..Spent::default()
        };
        if let (Some(before), Some(after)) = (before, proxy.cpu()) {
            spent.proxy(&before, &after);
        }
        proxy.stop();
        run.relayed.push((relay, side(outcomes), spent));
    }
    Ok(run)
}

impl Load {
    /// Streams of `tokens` tokens `gap` apart, from a script of their own
    /// named after the scenario; one stream unless the scenario says more.
    fn tokens(bench: &Bench, name: &str, tokens: u32, gap: Duration) -> Self {
        let model = format!("bench-{name}");
        bench
            .scripts
            .add(&model, Script::tokens(&model, tokens, gap));
        Self {
            model,
            expect: Expect {
                tokens,
                token_len: None,
            },
            slots: 1,
            per_slot: 1,
            stagger: Duration::ZERO,
            timeout: Duration::from_secs(30),
            warmup: 20,
        }
    }
}

async fn single(bench: &Bench) -> Result<Row, String> {
    let load = Load {
        per_slot: bench.scaled(100, 1_000),
        timeout: Duration::from_secs(10),
        ..Load::tokens(bench, "single", 40, Duration::ZERO)
    };
    let run = interleaved(bench, &load).await?;
    Ok(Row::new(
        "single",
        "one stream at a time, 40 tokens back to back",
        &run,
        false,
        Targets {
            ttft_vs_naive: true,
            ..Targets::default()
        },
    ))
}

const BURST: &str = "20 concurrent streams, 200 tokens back to back";

fn burst_load(bench: &Bench) -> Load {
    Load {
        slots: 20,
        per_slot: bench.scaled(10, 100),
        ..Load::tokens(bench, "burst", 200, Duration::ZERO)
    }
}

async fn burst(bench: &Bench) -> Result<Row, String> {
    let run = compare(bench, &burst_load(bench), &Relay::ALL).await?;
    Ok(Row::new(
        "burst",
        BURST,
        &run,
        false,
        Targets {
            min_ratio: Some(0.95),
            cpu_vs_naive: Some(0.4),
            ..Targets::default()
        },
    ))
}

const PACED: &str = "200 concurrent streams, 40 tokens 10 ms apart";

fn paced_load(bench: &Bench) -> Load {
    let gap = Duration::from_millis(10);
    Load {
        slots: 200,
        per_slot: bench.scaled(1, 5),
        // Starts spread over one stream's length: a steady 200 open, not a herd.
        stagger: gap * 40,
        warmup: 200,
        ..Load::tokens(bench, "paced", 40, gap)
    }
}

async fn paced(bench: &Bench) -> Result<Row, String> {
    let run = compare(bench, &paced_load(bench), &Relay::ALL).await?;
    Ok(Row::new(
        "paced",
        PACED,
        &run,
        false,
        Targets {
            ttft_vs_naive: true,
            cpu_vs_naive: Some(0.8),
            ..Targets::default()
        },
    ))
}

async fn hold(bench: &Bench) -> Result<Row, String> {
    let (streams, tokens, ramp) = if bench.quick {
        (1_000, 30, Duration::from_secs(1))
    } else {
        (8_000, 150, Duration::from_secs(8))
    };
    let load = Load {
        slots: streams,
        stagger: ramp,
        timeout: Duration::from_secs(60),
        ..Load::tokens(bench, "hold", tokens, Duration::from_millis(100))
    };
    let run = compare(bench, &load, &Relay::ALL).await?;
    Ok(Row::new(
        "hold",
        &format!("{streams} concurrent streams, a token every 100 ms"),
        &run,
        true,
        Targets {
            cpu_vs_naive: Some(0.8),
            memory_vs_naive: true,
            ..Targets::default()
        },
    ))
}

/// The two parser loads: one 1 MiB line arriving in 16-byte pieces, and
/// N then 2N small events in one stream, which must take about twice as long.
async fn parser(bench: &Bench) -> Result<Vec<Row>, String> {
    let line_model = "bench-line";
    let line_len = 1 << 20;
    bench
        .scripts
        .add(line_model, Script::long_line(line_model, line_len, 16));
    let line = Load {
        model: line_model.to_owned(),
        expect: Expect {
            tokens: 1,
            token_len: Some(line_len),
        },
        slots: 1,
        per_slot: bench.scaled(2, 5),
        stagger: Duration::ZERO,
        timeout: Duration::from_secs(60),
        warmup: 1,
    };
    // Not through the naive relay: eventsource-stream scans its whole
    // buffer again for each piece, so this one line costs it about a minute
    // of CPU and never arrives whole within the timeout.
    let relays = [Relay::Tokenrelay, Relay::Pipe];
    let line_row = Row::long_line(&compare(bench, &line, &relays).await?, 50.0);

    let small: u32 = if bench.quick { 20_000 } else { 100_000 };
    let mut runs = Vec::new();
    for count in [small, small * 2] {
        let load = Load {
            per_slot: bench.scaled(1, 3),
            timeout: Duration::from_secs(120),
            warmup: 0,
            ..Load::tokens(bench, &format!("events-{count}"), count, Duration::ZERO)
        };
        runs.push((count, compare(bench, &load, &Relay::ALL).await?));
    }
    let events_row = Row::small_events(&runs);
    Ok(vec![line_row, events_row])
}

/// One generation read by the client that started it and, from its first
/// token on, by `followers` more attached through
/// `GET /api/chat/{id}/events` (half with `Last-Event-ID`, half with
/// `?last_event_id=`), every one checked token by token: what a shared
/// answer costs per token delivered to a follower. The byte pipe's
/// counterpart for fan-out (`broadcast`) runs the same load beside it: what
/// delivering each token to each follower costs with nothing parsed.
async fn fanout(bench: &Bench) -> Result<Row, String> {
    let followers = bench.scaled(500, 500);
    let load = Load {
        warmup: 0,
        ..Load::tokens(bench, "fanout", 100, Duration::from_millis(20))
    };
    say("    direct");
    let (direct, direct_spent) = drive(bench.upstream, Via::OpenAi, &load, None, None).await;
    let mut run = Run {
        direct,
        relayed: Vec::new(),
    };
    let mut follower_tokens = Vec::new();
    for relay in [Relay::Tokenrelay, Relay::Broadcast] {
        say(&format!(
            "    through {}, {followers} followers",
            relay.name()
        ));
        let (side, mut spent, tokens) = fan_out(bench, relay, &load, followers).await?;
        spent.direct_load_cpu = direct_spent.direct_load_cpu;
        run.relayed.push((relay, side, spent));
        follower_tokens.push((relay, tokens));
    }
    Ok(Row::new(
        "fanout",
        &format!("one generation of 100 tokens 20 ms apart, {followers} followers"),
        &run,
        true,
        Targets::default(),
    )
    .fanout(&run, &follower_tokens, 8.0))
}

/// One generation through `relay`, led by one client and followed by
/// `followers`: their outcomes (the leader's last), what the relay spent,
/// and how many tokens reached the followers.
async fn fan_out(
    bench: &Bench,
    relay: Relay,
    load: &Load,
    followers: usize,
) -> Result<(Side, Spent, u64), String> {
    let mut proxy = Proxy::start(&bench.launch, relay, bench.upstream).await?;
    let leader = Request::new(
        proxy.addr,
        relay.via(),
        &load.model,
        load.expect,
        load.timeout,
    );
    let open = Arc::new(AtomicUsize::new(0));
    // A whole generation first, so that the measured one is not the first.
    client::stream(&leader, &open).await;
    let mut spent = Spent {
        baseline_kib: proxy.rss_kib(),
        ..Spent::default()
    };
    let before = proxy.cpu();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (pid, open, sampling) = (proxy.pid(), Arc::clone(&open), Arc::clone(&sampling));
        tokio::spawn(async move { sample(pid, &open, &sampling).await })
    };
    let started = Instant::now();
    let (id_sender, id) = oneshot::channel();
    let lead = {
        let open = Arc::clone(&open);
        tokio::spawn(async move { client::lead(&leader, &open, Some(id_sender)).await })
    };
    let id = id
        .await
        .map_err(|_| format!("{}'s response named no x-stream-id", relay.name()))?;
    let tasks: Vec<_> = (0..followers)
        .map(|i| {
            let attach = if i % 2 == 0 {
                Attach::Header
            } else {
                Attach::Query
            };
            let request = Request::follow(
                proxy.addr,
                &id,
                attach,
                relay.via(),
                load.expect,
                load.timeout,
            );
            let open = Arc::clone(&open);
            tokio::spawn(async move { client::stream(&request, &open).await })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(followers + 1);
    for task in tasks {
        outcomes.push(joined(task.await));
    }
    let follower_tokens: u64 = outcomes
        .iter()
        .filter(|o| o.failure.is_none())
        .map(|o| u64::from(o.tokens))
        .sum();
    outcomes.push(joined(lead.await));
    let wall = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    spent.peak = sampler.await.ok().flatten();
    if let (Some(before), Some(after)) = (before, proxy.cpu()) {
        spent.proxy(&before, &after);
    }
    proxy.stop();
    Ok((Side { outcomes, wall }, spent, follower_tokens))
}

/// Burst and paced with `REDIS_URL` pointing at a real `redis-server`,
/// beside the same load without it: what sharing streams between replicas
/// costs tokenrelay, and what it asks of Redis per token.
async fn redis(bench: &Bench) -> Result<Vec<Row>, String> {
    let server = redis_server::Server::start(&bench.launch.dir).await?;
    let launch = Launch {
        env: vec![("REDIS_URL".to_owned(), server.url())],
        ..bench.launch.clone()
    };
    let mut rows = Vec::new();
    for (name, what, load) in [
        ("redis-burst", BURST, burst_load(bench)),
        ("redis-paced", PACED, paced_load(bench)),
    ] {
        say(&format!("  {name}"));
        say("    direct");
        let (direct, direct_spent) = drive(bench.upstream, Via::OpenAi, &load, None, None).await;
        let without = through(
            bench,
            &bench.launch,
            Relay::Tokenrelay,
            &load,
            None,
            &direct_spent,
        )
        .await?;
        say("    with REDIS_URL:");
        let (side, spent) = through(
            bench,
            &launch,
            Relay::Tokenrelay,
            &load,
            Some(&server),
            &direct_spent,
        )
        .await?;
        let run = Run {
            direct,
            relayed: vec![(Relay::Tokenrelay, side, spent)],
        };
        rows.push(
            Row::new(
                name,
                &format!("{what}, REDIS_URL"),
                &run,
                false,
                Targets::default(),
            )
            .redis(&run.relayed[0].2, &without, 0.1, 1.2),
        );
    }
    Ok(rows)
}
