//! Prometheus metrics, kept in atomics and rendered as text on `/metrics`.
//!
//! Counting is lock-free on the hot path: one relaxed atomic add per token.
//! The label sets are small and fixed, so every series is a plain field or a
//! small array rather than a map.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::wire::ErrorCode;

/// Upper bounds (seconds) of the time-to-first-token histograms.
const TTFT_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How a request to the API ended, by who is to blame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    ClientError,
    UpstreamError,
    ServerError,
}

const OUTCOMES: [(Outcome, &str); 4] = [
    (Outcome::Ok, "ok"),
    (Outcome::ClientError, "client_error"),
    (Outcome::UpstreamError, "upstream_error"),
    (Outcome::ServerError, "server_error"),
];

/// The routes requests are counted by.
pub const ROUTES: [&str; 6] = [
    "/api/chat",
    "/api/chat/{stream_id}/events",
    "/api/chat/{stream_id}",
    "/v1/chat/completions",
    "/v1/models",
    "other",
];

/// Why a generation was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancellation {
    /// `DELETE`.
    Stopped,
    /// Nobody attached for the grace period.
    Abandoned,
    Shutdown,
}

const CANCELLATIONS: [(Cancellation, &str); 3] = [
    (Cancellation::Stopped, "delete"),
    (Cancellation::Abandoned, "client_gone"),
    (Cancellation::Shutdown, "shutdown"),
];

/// Upstream failures, by kind: refusals before the stream and in-stream errors.
const UPSTREAM_ERRORS: [&str; 7] = [
    "status",
    "connect",
    "headers_timeout",
    "upstream_error",
    "upstream_disconnected",
    "upstream_timeout",
    "invalid_upstream_data",
];

/// All counters of one process.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [[AtomicU64; 4]; ROUTES.len()],
    tokens: AtomicU64,
    resumes: AtomicU64,
    cancellations: [AtomicU64; 3],
    upstream_errors: [AtomicU64; UPSTREAM_ERRORS.len()],
    ttft_upstream: Histogram,
    ttft_proxy: Histogram,
}

impl Metrics {
    pub fn request(&self, route: &str, outcome: Outcome) {
        let route = ROUTES
            .iter()
            .position(|known| *known == route)
            .unwrap_or(ROUTES.len() - 1);
        let outcome = OUTCOMES
            .iter()
            .position(|(known, _)| *known == outcome)
            .unwrap_or(0);
        self.requests[route][outcome].fetch_add(1, Ordering::Relaxed);
    }

    pub fn tokens(&self, count: u64) {
        self.tokens.fetch_add(count, Ordering::Relaxed);
    }

    pub fn resume(&self) {
        self.resumes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn cancellation(&self, cause: Cancellation) {
        if let Some(index) = CANCELLATIONS.iter().position(|(known, _)| *known == cause) {
            self.cancellations[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a refusal before the stream (`status`, `connect`, `headers_timeout`).
    pub fn upstream_refusal(&self, kind: &'static str) {
        self.upstream_error_named(kind);
    }

    /// Counts an in-stream failure by its error code.
    pub fn upstream_failure(&self, code: ErrorCode) {
        self.upstream_error_named(code.as_str());
    }

    fn upstream_error_named(&self, kind: &str) {
        if let Some(index) = UPSTREAM_ERRORS.iter().position(|known| *known == kind) {
            self.upstream_errors[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Time from sending the request to the upstream's first token.
    pub fn upstream_ttft(&self, elapsed: Duration) {
        self.ttft_upstream.observe(elapsed);
    }

    /// Time from the upstream's first token reaching us to it leaving for the client.
    pub fn proxy_ttft(&self, elapsed: Duration) {
        self.ttft_proxy.observe(elapsed);
    }

    /// The Prometheus text exposition of everything, with `active` streams.
    pub fn render(&self, active: usize) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        };
        counter(
            &mut out,
            "tokenrelay_requests_total",
            "API requests by route and outcome.",
        );
        for (route, by_outcome) in ROUTES.iter().zip(&self.requests) {
            for ((_, outcome), count) in OUTCOMES.iter().zip(by_outcome) {
                let _ = writeln!(
                    out,
                    "tokenrelay_requests_total{{route=\"{route}\",outcome=\"{outcome}\"}} {}",
                    count.load(Ordering::Relaxed)
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
        for ((_, cause), count) in CANCELLATIONS.iter().zip(&self.cancellations) {
            let _ = writeln!(
                out,
                "tokenrelay_cancellations_total{{cause=\"{cause}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        counter(
            &mut out,
            "tokenrelay_upstream_errors_total",
            "Upstream failures, by kind.",
        );
        for (kind, count) in UPSTREAM_ERRORS.iter().zip(&self.upstream_errors) {
            let _ = writeln!(
                out,
                "tokenrelay_upstream_errors_total{{kind=\"{kind}\"}} {}",
                count.load(Ordering::Relaxed)
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
    fn unknown_routes_count_as_other() {
        let metrics = Metrics::default();
        metrics.request("/api/chat", Outcome::Ok);
        metrics.request("/secret/path", Outcome::ClientError);
        let text = metrics.render(3);
        assert!(text.contains("tokenrelay_requests_total{route=\"/api/chat\",outcome=\"ok\"} 1"));
        assert!(
            text.contains("tokenrelay_requests_total{route=\"other\",outcome=\"client_error\"} 1")
        );
        assert!(text.contains("tokenrelay_active_streams 3"));
    }
}
