//! Counters, served as Prometheus text on `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use steadfast_core::Stats;

macro_rules! counters {
    ($($name:ident : $kind:literal, $help:literal;)*) => {
        /// The server's counters. All are monotonic except the gauges
        /// `connections_open`, `sessions`, `store_sessions` and `fd_limit`.
        #[derive(Debug, Default)]
        #[non_exhaustive]
        pub struct Metrics {
            $(#[doc = $help] pub $name: AtomicU64,)*
            /// Session store commit latency, in seconds.
            pub store_commit_seconds: Histogram,
        }

        impl Metrics {
            /// Prometheus text exposition format (version 0.0.4).
            pub fn render(&self) -> String {
                let mut out = String::new();
                $(
                    // Writing to a String cannot fail.
                    let _ = writeln!(
                        out,
                        "# HELP steadfast_{name} {help}\n# TYPE steadfast_{name} {kind}\nsteadfast_{name} {value}",
                        name = stringify!($name),
                        help = $help,
                        kind = $kind,
                        value = self.$name.load(Ordering::Relaxed),
                    );
                )*
                self.store_commit_seconds.render(
                    &mut out,
                    "store_commit_seconds",
                    "Session store commit latency (one transaction and its fsync).",
                );
                out
            }

            /// A counter's current value, by its name without the prefix.
            pub fn get(&self, name: &str) -> Option<u64> {
                match name {
                    $(stringify!($name) => Some(self.$name.load(Ordering::Relaxed)),)*
                    _ => None,
                }
            }
        }
    };
}

counters! {
    connections_total: "counter", "WebSocket connections accepted.";
    connections_open: "gauge", "WebSocket connections open now.";
    sockets_open: "gauge", "TCP connections accepted and not yet closed, at any stage (TLS, HTTP head, upgrade, WebSocket): what --max-connections bounds.";
    fd_limit: "gauge", "This process's open-file limit at start (each connection takes one; 0: unknown).";
    accept_errors: "counter", "Accepts that failed (out of file descriptors and the like; each retried after 50 ms).";
    connections_refused: "counter", "Connections refused: overload (1013), bad or missing token, fault injection.";
    tls_handshake_failures: "counter", "TLS handshakes that failed (bad or missing client certificate, protocol mismatch, timeout).";
    handler_panics: "counter", "Handler callbacks that panicked (the connection was closed 1011; the server went on).";
    resumes_refused: "counter", "HELLOs that named a session without the secret it is bound to (each got a new session).";
    plain_idle_closed: "counter", "Plain connections closed because nothing was heard from them, or nothing they were sent went out, within --plain-idle-timeout.";
    memory_accounted: "gauge", "Bytes the sessions hold (queued, reassembling, being handed over), as of the last check.";
    memory_budget: "gauge", "--max-memory in bytes (0: no budget).";
    sessions_shed: "counter", "Sessions dropped (closed 1013, record kept) because the server was over its memory budget.";
    http_requests: "counter", "Plain HTTP requests (/healthz, /metrics, others).";
    sessions: "gauge", "Sessions held now (attached or within their TTL).";
    sessions_created: "counter", "Sessions created.";
    sessions_expired: "counter", "Sessions dropped after their TTL.";
    frames_in: "counter", "WebSocket messages received.";
    frames_out: "counter", "WebSocket messages sent.";
    bytes_in: "counter", "Bytes of WebSocket messages received.";
    bytes_out: "counter", "Bytes of WebSocket messages sent.";
    messages_in: "counter", "Application messages delivered to the handler (exactly once each).";
    messages_out: "counter", "Application messages sent for the first time.";
    resends: "counter", "Messages sent again after a reconnect.";
    acks_in: "counter", "ACK frames received.";
    acks_out: "counter", "ACK frames sent.";
    resumes: "counter", "Handshakes that resumed a known session.";
    resyncs: "counter", "Handshakes naming an unknown session (answered with a new one).";
    dedups: "counter", "DATA/SKIP frames dropped as duplicates.";
    chunks_in: "counter", "Chunk frames received.";
    chunks_out: "counter", "Chunk frames sent.";
    protocol_errors: "counter", "Connections closed for a protocol or limit violation.";
    faults_injected: "counter", "Faults injected (dropped connections, delays, refusals, forgotten sessions).";
    store_commits: "counter", "Commits to the session store (each carries the changes of every connection waiting).";
    store_changes: "counter", "Session changes committed to the session store.";
    store_commit_micros: "counter", "Microseconds spent committing to the session store (÷ store_commits: the mean commit).";
    store_errors: "counter", "Session store commits that failed (retried; no ACK until one succeeds).";
    store_fenced: "counter", "Sessions let go because the store refused their changes (another node claimed them, or the store lost them).";
    store_claims: "counter", "Sessions claimed from the store (resumed after a restart or from another node).";
    store_sessions: "gauge", "Sessions in the store, with the records of expired ones (counted at each store sweep).";
    mail_hints: "counter", "Pub/Sub hints heard that another node posted to a session held here (a shared store).";
    mail_by_check: "counter", "Sessions the periodic inbox check found with mail (its hint lost, or not yet acted on).";
}

/// Upper bounds of the commit latency buckets, in microseconds.
const BUCKETS_US: [u64; 10] = [
    250, 500, 1_000, 2_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000,
];

/// A Prometheus histogram with fixed buckets (cumulative when rendered).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative), then above the last.
    counts: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    /// Count one observation of `us` microseconds.
    pub(crate) fn observe(&self, us: u64) {
        let bucket = BUCKETS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(BUCKETS_US.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "# HELP steadfast_{name} {help}\n# TYPE steadfast_{name} histogram"
        );
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = BUCKETS_US
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |us| format!("{}", *us as f64 / 1e6));
            let _ = writeln!(out, "steadfast_{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "steadfast_{name}_sum {sum}\nsteadfast_{name}_count {cumulative}"
        );
    }
}

impl Metrics {
    pub(crate) fn add(&self, counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn inc(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dec(&self, counter: &AtomicU64) {
        // Saturating: a gauge never wraps below zero.
        let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(1))
        });
    }

    /// Add what an engine counted since `seen`, and remember it.
    pub(crate) fn absorb(&self, now: &Stats, seen: &mut Stats) {
        #[rustfmt::skip]
        let deltas = [
            (&self.frames_in, now.frames_in, seen.frames_in),
            (&self.frames_out, now.frames_out, seen.frames_out),
            (&self.bytes_in, now.bytes_in, seen.bytes_in),
            (&self.bytes_out, now.bytes_out, seen.bytes_out),
            (&self.messages_in, now.messages_in, seen.messages_in),
            (&self.messages_out, now.messages_out, seen.messages_out),
            (&self.resends, now.resends, seen.resends),
            (&self.acks_in, now.acks_in, seen.acks_in),
            (&self.acks_out, now.acks_out, seen.acks_out),
            (&self.resumes, now.resumes, seen.resumes),
            (&self.resyncs, now.resyncs, seen.resyncs),
            (&self.dedups, now.duplicates, seen.duplicates),
            (&self.chunks_in, now.chunks_in, seen.chunks_in),
            (&self.chunks_out, now.chunks_out, seen.chunks_out),
            (&self.protocol_errors, now.errors, seen.errors),
        ];
        for (counter, now, seen) in deltas {
            self.add(counter, now.saturating_sub(seen));
        }
        *seen = *now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_histogram_renders_cumulative_prometheus_buckets() {
        let metrics = Metrics::default();
        for us in [100, 400, 400, 3_000, 2_000_000] {
            metrics.store_commit_seconds.observe(us);
        }
        assert_eq!(metrics.store_commit_seconds.count(), 5);
        let text = metrics.render();
        for line in [
            "# TYPE steadfast_store_commit_seconds histogram",
            "steadfast_store_commit_seconds_bucket{le=\"0.00025\"} 1",
            "steadfast_store_commit_seconds_bucket{le=\"0.0005\"} 3",
            "steadfast_store_commit_seconds_bucket{le=\"0.002\"} 3",
            "steadfast_store_commit_seconds_bucket{le=\"0.005\"} 4",
            "steadfast_store_commit_seconds_bucket{le=\"1\"} 4",
            "steadfast_store_commit_seconds_bucket{le=\"+Inf\"} 5",
            "steadfast_store_commit_seconds_sum 2.0039",
            "steadfast_store_commit_seconds_count 5",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
