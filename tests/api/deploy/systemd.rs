//! `docs/deploy/tokenrelay.service` and `docs/deploy/env.example` as an
//! operator installs them. The unit's essential settings are checked,
//! systemd itself is asked whether it accepts the unit, and the built
//! binary is run the way the unit runs it — the unit's environment, the
//! settings file, the stop signal and the stop timeout — to show that
//! `systemctl stop` of a busy server ends in a clean exit before systemd
//! would kill it.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use tokenrelay::config::SETTINGS;

use crate::cli::{Server, scratch_dir};
use crate::failures::content_chunk;
use crate::fake_upstream::{FakeUpstream, Reply};
use crate::helpers::http_client;

const UNIT: &str = include_str!("../../../docs/deploy/tokenrelay.service");
const ENV_EXAMPLE: &str = include_str!("../../../docs/deploy/env.example");

/// Where the unit expects the binary and its settings.
const INSTALLED_BINARY: &str = "/usr/local/bin/tokenrelay";
const SETTINGS_FILE: &str = "/etc/tokenrelay/env";

/// How long after the grace the server closes every connection
/// (`SHUTDOWN_GRACE_SECS` + 2 s, README: Configuration).
const SHUTDOWN_DRAIN_SECS: f64 = 2.0;

/// A unit file's assignments in order, read as systemd reads them:
/// `[Section]` headers, `Key=Value` lines, `#` and `;` comments.
struct Unit {
    entries: Vec<(String, String, String)>,
}

impl Unit {
    fn parse(text: &str) -> Self {
        let mut section = String::new();
        let mut entries = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line
                .strip_prefix('[')
                .and_then(|rest| rest.strip_suffix(']'))
            {
                name.clone_into(&mut section);
                continue;
            }
            // systemd would join the next line; this reader would not.
            assert!(
                !line.ends_with('\\'),
                "line {number}: a continued line: {line:?}"
            );
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("line {number}: not Key=Value: {line:?}"));
            assert!(
                !section.is_empty(),
                "line {number}: {key} before any section"
            );
            entries.push((
                section.clone(),
                key.trim().to_owned(),
                value.trim().to_owned(),
            ));
        }
        Self { entries }
    }

    /// Every value given to `key` in `section`, in order.
    fn all(&self, section: &str, key: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|(in_section, name, _)| in_section == section && name == key)
            .map(|(_, _, value)| value.as_str())
            .collect()
    }

    /// The value of a key that is set exactly once.
    fn one(&self, section: &str, key: &str) -> &str {
        match self.all(section, key).as_slice() {
            [value] => value,
            values => panic!("[{section}] {key}= should be set once, is set to {values:?}"),
        }
    }

    /// The environment systemd gives the service: the `Environment=`
    /// lines, then `settings` (the `EnvironmentFile=`'s text), whose lines
    /// win, as systemd.exec(5) says.
    fn environment(&self, settings: &str) -> BTreeMap<String, String> {
        let mut environment = BTreeMap::new();
        for line in self.all("Service", "Environment") {
            // An empty assignment resets the list.
            if line.is_empty() {
                environment.clear();
            }
            environment.extend(assignments(line));
        }
        environment.extend(environment_file(settings));
        environment
    }

    /// `TimeoutStopSec=`, the time from `KillSignal` to SIGKILL.
    fn stop_timeout(&self) -> Duration {
        let value = self.one("Service", "TimeoutStopSec");
        let (number, scale) = match value.strip_suffix("min") {
            Some(minutes) => (minutes, 60.0),
            None => (value.strip_suffix('s').unwrap_or(value), 1.0),
        };
        let secs: f64 = number
            .trim()
            .parse()
            .unwrap_or_else(|error| panic!("TimeoutStopSec={value}: {error}"));
        Duration::from_secs_f64(secs * scale)
    }
}

/// The assignments of one `Environment=` value: `A=1 "B=two words"`.
fn assignments(value: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in value.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => words.push(std::mem::take(&mut word)),
            c => word.push(c),
        }
    }
    words.push(word);
    words
        .into_iter()
        .filter(|word| !word.is_empty())
        .map(|word| {
            let (name, value) = word
                .split_once('=')
                .unwrap_or_else(|| panic!("Environment={value}: {word:?} is not NAME=value"));
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

/// The lines of an `EnvironmentFile=`: `NAME=value`, optionally quoted,
/// `#` and `;` comments; a later line wins over an earlier one.
fn environment_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#') && !line.starts_with(';'))
        .map(|line| {
            assert!(!line.ends_with('\\'), "a continued line: {line:?}");
            let (name, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not NAME=value: {line:?}"));
            let value = value.trim();
            let unquoted = ['"', '\'']
                .into_iter()
                .find_map(|quote| value.strip_prefix(quote)?.strip_suffix(quote))
                .unwrap_or(value);
            (name.trim().to_owned(), unquoted.to_owned())
        })
        .collect()
}

/// A setting's value in `environment`, else its default.
fn setting(environment: &BTreeMap<String, String>, name: &str) -> String {
    environment
        .get(name)
        .filter(|value| !value.is_empty())
        .cloned()
        .or_else(|| {
            SETTINGS
                .iter()
                .find(|setting| setting.name == name)
                .and_then(|setting| setting.default)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("{name} is neither set nor has a default"))
}

fn number(environment: &BTreeMap<String, String>, name: &str) -> f64 {
    let value = setting(environment, name);
    value
        .parse()
        .unwrap_or_else(|error| panic!("{name}={value}: {error}"))
}

#[test]
fn the_unit_runs_the_installed_binary_as_a_dynamic_user_with_no_privileges() {
    let unit = Unit::parse(UNIT);
    let expected = [
        ("ExecStart", INSTALLED_BINARY),
        ("EnvironmentFile", SETTINGS_FILE),
        ("DynamicUser", "yes"),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallFilter", "@system-service"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
    ];

    for (key, value) in expected {
        assert_eq!(unit.one("Service", key), value, "[Service] {key}=");
    }
    assert_eq!(unit.one("Install", "WantedBy"), "multi-user.target");
}

#[test]
fn the_unit_leaves_room_for_every_connection_and_for_the_graceful_shutdown() {
    let unit = Unit::parse(UNIT);
    let environment = unit.environment(ENV_EXAMPLE);

    // A client socket and an upstream socket for each connection.
    let max_connections = number(&environment, "MAX_CONNECTIONS");
    let open_files: f64 = unit
        .one("Service", "LimitNOFILE")
        .parse()
        .unwrap_or_else(|error| panic!("LimitNOFILE: {error}"));
    assert!(
        open_files >= 2.0 * max_connections,
        "LimitNOFILE={open_files} cannot hold MAX_CONNECTIONS={max_connections} streams"
    );
    let shutdown = number(&environment, "SHUTDOWN_GRACE_SECS") + SHUTDOWN_DRAIN_SECS;
    let stop_timeout = unit.stop_timeout().as_secs_f64();
    assert!(
        stop_timeout > shutdown,
        "TimeoutStopSec={stop_timeout} would SIGKILL a shutdown that may take {shutdown} s"
    );
}

#[test]
fn every_name_in_the_example_settings_is_a_setting() {
    // Set or commented out: an operator uncomments the latter as they are.
    let names: Vec<&str> = ENV_EXAMPLE
        .lines()
        .map(|line| line.trim_start_matches(['#', ' ']))
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .filter(|name| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();

    assert!(names.contains(&"UPSTREAM_BASE_URL"), "{names:?}");
    for name in names {
        assert!(
            SETTINGS.iter().any(|setting| setting.name == name),
            "docs/deploy/env.example names {name}, which tokenrelay does not read"
        );
    }
}

#[test]
fn systemd_accepts_the_unit() {
    let dir = scratch_dir("systemd-verify");
    // `verify` checks that ExecStart= exists: point it at the built binary.
    let unit: String = UNIT
        .lines()
        .map(|line| match line.strip_prefix("ExecStart=") {
            Some(_) => format!("ExecStart={}\n", env!("CARGO_BIN_EXE_tokenrelay")),
            None => format!("{line}\n"),
        })
        .collect();
    let path = dir.join("tokenrelay.service");
    std::fs::write(&path, unit).unwrap_or_else(|error| panic!("{error}"));

    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run systemd-analyze ({error}); scripts/setup.sh installs it")
        });

    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{said}");
    // A value systemd cannot parse is only warned about, then ignored.
    assert!(
        !said.contains("tokenrelay.service"),
        "systemd has objections to the unit:\n{said}"
    );
}

#[tokio::test]
async fn systemctl_stop_ends_a_busy_server_cleanly_before_systemd_would_kill_it() {
    // Arrange: the example settings file, then this test's own lines, which
    // win as later lines do; a stream that never ends by itself.
    let unit = Unit::parse(UNIT);
    let upstream = FakeUpstream::start().await;
    upstream.push(Reply::endless(content_chunk("more ")).pace(Duration::from_millis(100)));
    let settings = format!(
        "{ENV_EXAMPLE}\nLISTEN_ADDR=127.0.0.1:0\nUPSTREAM_BASE_URL={}\n",
        upstream.base_url()
    );
    let dir = scratch_dir("systemd-run");
    let exec_start = unit.one("Service", "ExecStart");
    let arguments: Vec<&str> = exec_start
        .strip_prefix(INSTALLED_BINARY)
        .unwrap_or_else(|| panic!("ExecStart={exec_start}"))
        .split_whitespace()
        .collect();
    // systemd starts a service with nothing but what the unit gives it, in
    // a working directory with no `.env`.
    let mut server = Server::start(
        Command::new(env!("CARGO_BIN_EXE_tokenrelay"))
            .env_clear()
            .envs(unit.environment(&settings))
            .args(arguments)
            .current_dir(&dir),
    );
    let addr = listening_addr(&server);
    let client = http_client();
    let healthy = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = client.get(format!("http://{addr}/healthz")).send().await;
        if answer.is_ok_and(|answer| answer.status() == 200) {
            break;
        }
        assert!(Instant::now() < healthy, "/healthz never answered 200");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut stream = client
        .post(format!("http://{addr}/api/chat"))
        .header("content-type", "application/json")
        .body(json!({"prompt": "go on"}).to_string())
        .send()
        .await
        .unwrap_or_else(|error| panic!("POST /api/chat: {error}"));
    assert_eq!(stream.status(), 200);
    let first = stream
        .chunk()
        .await
        .unwrap_or_else(|error| panic!("read the stream: {error}"));
    assert!(first.is_some(), "the stream should have begun");

    // Act and assert: `systemctl stop` sends KillSignal and waits
    // TimeoutStopSec before SIGKILL.
    assert_eq!(unit.one("Service", "KillSignal"), "SIGTERM");
    // The upstream goes on sending while the server shuts down.
    let stop_timeout = unit.stop_timeout();
    let stopped = tokio::task::spawn_blocking(move || server.terminate_within(stop_timeout))
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(
        stopped,
        "tokenrelay should exit successfully within TimeoutStopSec ({stop_timeout:?})"
    );
    drop(stream);
}

/// The address the server logged it listens on, in either log format.
fn listening_addr(server: &Server) -> String {
    let line = server.wait_for("listening");
    serde_json::from_str::<serde_json::Value>(&line)
        .ok()
        .and_then(|entry| entry["addr"].as_str().map(str::to_owned))
        .or_else(|| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix("addr="))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}
