//! Prometheus metrics, kept in atomics and rendered as text on `/metrics`.
//!
//! Counting is lock-free on the hot path: one relaxed atomic add per token.
//! The label sets are small and fixed, so every series is a plain field or a
//! small array rather than a map.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::Error;
use crate::event::ErrorCode;
use crate::lock::lock;

/// Upper bounds (seconds) of the time-to-first-token histograms.
const TTFT_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How a request to the API ended, by who is to blame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    ClientError,
    UpstreamError,
    ServerError,
}

impl Outcome {
    const ALL: [Self; 4] = [
        Self::Ok,
        Self::ClientError,
        Self::UpstreamError,
        Self::ServerError,
    ];

    /// By the status the client got.
    pub(crate) fn of(status: u16) -> Self {
        match status {
            ..400 => Self::Ok,
            502 | 504 => Self::UpstreamError,
            400..500 => Self::ClientError,
            _ => Self::ServerError,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::ClientError => "client_error",
            Self::UpstreamError => "upstream_error",
            Self::ServerError => "server_error",
        }
    }
}

/// The route a request matched: the router's own template (`/api/chat/{stream_id}`),
/// never the path a client sent, so the label set stays as small as the
/// router.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Route(Box<str>);

impl Route {
    /// What a request that matched no route counts as.
    pub(crate) fn other() -> Self {
        Self("other".into())
    }

    pub(crate) fn matched(path: &axum::extract::MatchedPath) -> Self {
        Self(path.as_str().into())
    }
}

/// Why a generation was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cancellation {
    /// `DELETE`.
    Stopped,
    /// Nobody attached for the grace period.
    Abandoned,
    Shutdown,
}

impl Cancellation {
    const ALL: [Self; 3] = [Self::Stopped, Self::Abandoned, Self::Shutdown];

    fn label(self) -> &'static str {
        match self {
            Self::Stopped => "delete",
            Self::Abandoned => "client_gone",
            Self::Shutdown => "shutdown",
        }
    }
}

/// Why an upstream refused before the stream began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefusalKind {
    /// It answered an error status (or something that is not an event stream).
    Status,
    Connect,
    HeadersTimeout,
}

impl RefusalKind {
    const ALL: [Self; 3] = [Self::Status, Self::Connect, Self::HeadersTimeout];

    /// The kind of refusal `error` reports.
    pub(crate) fn of(error: &Error) -> Self {
        match error {
            Error::Upstream { .. } => Self::Status,
            Error::UpstreamTimeout(_) => Self::HeadersTimeout,
            _ => Self::Connect,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Connect => "connect",
            Self::HeadersTimeout => "headers_timeout",
        }
    }
}

/// The in-stream failures that are the upstream's doing.
const UPSTREAM_FAILURES: [ErrorCode; 4] = [
    ErrorCode::UpstreamError,
    ErrorCode::UpstreamDisconnected,
    ErrorCode::UpstreamTimeout,
    ErrorCode::InvalidUpstreamData,
];

/// All counters of one process.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// By route, then by outcome. Locked once per request, never per token.
    requests: Mutex<BTreeMap<Route, [u64; Outcome::ALL.len()]>>,
    tokens: AtomicU64,
    resumes: AtomicU64,
    cancellations: [AtomicU64; Cancellation::ALL.len()],
    refusals: [AtomicU64; RefusalKind::ALL.len()],
    failures: [AtomicU64; UPSTREAM_FAILURES.len()],
    /// With several upstreams: failures by upstream name, then kind.
    by_upstream: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Moves to the next target: by from, to, and reason (an error code).
    failovers: Mutex<BTreeMap<(String, String, &'static str), u64>>,
    ttft_upstream: Histogram,
    ttft_proxy: Histogram,
}

impl Metrics {
    pub(crate) fn request(&self, route: Route, outcome: Outcome) {
        lock(&self.requests).entry(route).or_default()[outcome as usize] += 1;
    }

    pub(crate) fn tokens(&self, count: u64) {
        self.tokens.fetch_add(count, Ordering::Relaxed);
    }

    pub(crate) fn resume(&self) {
        self.resumes.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn cancellation(&self, cause: Cancellation) {
        self.cancellations[cause as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refusal before the stream, by the configured `upstream`
    /// that refused when there are several.
    pub(crate) fn upstream_refusal(&self, upstream: Option<&str>, refusal: RefusalKind) {
        match upstream {
            Some(name) => self.count_by_upstream(name, refusal.label()),
            None => {
                self.refusals[refusal as usize].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts an in-stream failure by its error code, when the upstream
    /// caused it.
    pub(crate) fn upstream_failure(&self, upstream: Option<&str>, code: ErrorCode) {
        let Some(index) = UPSTREAM_FAILURES.iter().position(|known| *known == code) else {
            return;
        };
        match upstream {
            Some(name) => self.count_by_upstream(name, code.as_str()),
            None => {
                self.failures[index].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn count_by_upstream(&self, upstream: &str, kind: &'static str) {
        *lock(&self.by_upstream)
            .entry((upstream.to_owned(), kind))
            .or_default() += 1;
    }

    /// Counts a move from one upstream to the next before the first token.
    pub(crate) fn failover(&self, from: &str, to: &str, reason: &'static str) {
        *lock(&self.failovers)
            .entry((from.to_owned(), to.to_owned(), reason))
            .or_default() += 1;
    }

    /// Time from sending the request to the upstream's first token.
    pub(crate) fn upstream_ttft(&self, elapsed: Duration) {
        self.ttft_upstream.observe(elapsed);
    }

    /// Time from the upstream's first token reaching us to it leaving for the client.
    pub(crate) fn proxy_ttft(&self, elapsed: Duration) {
        self.ttft_proxy.observe(elapsed);
    }

    /// The Prometheus text exposition of everything, with `active` streams.
    pub(crate) fn render(&self, active: usize) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        };
        counter(
            &mut out,
            "tokenrelay_requests_total",
            "API requests by route and outcome.",
        );
        for (Route(route), by_outcome) in lock(&self.requests).iter() {
            for (outcome, count) in Outcome::ALL.iter().zip(by_outcome) {
                let _ = writeln!(
                    out,
                    "tokenrelay_requests_total{{route=\"{route}\",outcome=\"{}\"}} {count}",
                    outcome.label()
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP tokenrelay_active_streams Generations whose upstream request is open.\n\
             # TYPE tokenrelay_active_streams gauge\ntokenrelay_active_streams {active}"
        );
        counter(
            &mut out,
            "tokenrelay_tokens_relayed_total",
            "Token events relayed.",
        );
        let _ = writeln!(
            out,
            "tokenrelay_tokens_relayed_total {}",
            self.tokens.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            "tokenrelay_resumes_total",
            "Clients that re-attached to a generation.",
        );
        let _ = writeln!(
            out,
            "tokenrelay_resumes_total {}",
            self.resumes.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            "tokenrelay_cancellations_total",
            "Generations cancelled, by cause.",
        );
        for (cause, count) in Cancellation::ALL.iter().zip(&self.cancellations) {
            let _ = writeln!(
                out,
                "tokenrelay_cancellations_total{{cause=\"{}\"}} {}",
                cause.label(),
                count.load(Ordering::Relaxed)
            );
        }
        counter(
            &mut out,
            "tokenrelay_upstream_errors_total",
            "Upstream failures, by kind.",
        );
        let refusals = RefusalKind::ALL.iter().map(|refusal| refusal.label());
        let failures = UPSTREAM_FAILURES.iter().map(|code| code.as_str());
        let counts = self.refusals.iter().chain(&self.failures);
        for (kind, count) in refusals.chain(failures).zip(counts) {
            let _ = writeln!(
                out,
                "tokenrelay_upstream_errors_total{{kind=\"{kind}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        for ((upstream, kind), count) in lock(&self.by_upstream).iter() {
            let _ = writeln!(
                out,
                "tokenrelay_upstream_errors_total{{upstream=\"{upstream}\",kind=\"{kind}\"}} {count}"
            );
        }
        counter(
            &mut out,
            "tokenrelay_failovers_total",
            "Moves to the next target before the first token, by upstream and reason.",
        );
        for ((from, to, reason), count) in lock(&self.failovers).iter() {
            let _ = writeln!(
                out,
                "tokenrelay_failovers_total{{from=\"{from}\",to=\"{to}\",reason=\"{reason}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP tokenrelay_time_to_first_token_seconds Time to first token: the upstream's part and the part tokenrelay adds.\n\
             # TYPE tokenrelay_time_to_first_token_seconds histogram"
        );
        self.ttft_upstream.render(&mut out, "upstream");
        self.ttft_proxy.render(&mut out, "proxy");
        out
    }
}

/// A fixed-bucket histogram; sums are kept in microseconds.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; TTFT_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(index) = TTFT_BUCKETS.iter().position(|bound| secs <= *bound) {
            self.buckets[index].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn render(&self, out: &mut String, part: &str) {
        let name = "tokenrelay_time_to_first_token_seconds";
        let mut cumulative = 0;
        for (bound, count) in TTFT_BUCKETS.iter().zip(&self.buckets) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{part=\"{part}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{part=\"{part}\",le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{{part=\"{part}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{part=\"{part}\"}} {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let metrics = Metrics::default();
        metrics.upstream_ttft(Duration::from_millis(3));
        metrics.upstream_ttft(Duration::from_millis(30));
        let text = metrics.render(0);
        assert!(text.contains(
            "tokenrelay_time_to_first_token_seconds_bucket{part=\"upstream\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "tokenrelay_time_to_first_token_seconds_bucket{part=\"upstream\",le=\"0.05\"} 2"
        ));
        assert!(text.contains("tokenrelay_time_to_first_token_seconds_count{part=\"upstream\"} 2"));
        assert!(text.contains("tokenrelay_time_to_first_token_seconds_count{part=\"proxy\"} 0"));
    }

    #[test]
    fn requests_count_by_route_and_outcome() {
        let metrics = Metrics::default();
        metrics.request(Route("/api/chat".into()), Outcome::Ok);
        metrics.request(Route::other(), Outcome::ClientError);
        let text = metrics.render(3);
        assert!(text.contains("tokenrelay_requests_total{route=\"/api/chat\",outcome=\"ok\"} 1"));
        assert!(
            text.contains("tokenrelay_requests_total{route=\"other\",outcome=\"client_error\"} 1")
        );
        assert!(text.contains("tokenrelay_active_streams 3"));
    }
}
