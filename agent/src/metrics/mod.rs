//! Counters of what the pipeline did and, above all, what it dropped. Every
//! place that can lose data increments one of these; they are logged and
//! exported so that nothing is lost silently. [`red`] holds the RED metrics
//! of the traced requests; [`serve`] the agent's HTTP endpoint.
pub mod red;
pub mod serve;
pub mod status_line;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Process-wide pipeline counters.
        #[derive(Debug, Default)]
        pub struct Counters {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        impl Counters {
            /// `(name, value)` of every counter, for logs and metrics.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Relaxed)),)*]
            }
        }
    };
}

counters! {
    /// Ring buffer records read.
    events_read,
    /// Ring buffer records that could not be decoded.
    events_malformed,
    /// HTTP requests whose head was parsed.
    requests_seen,
    /// Request/response pairs completed.
    exchanges,
    /// Requests that never got a response (connection closed, framing lost, timeout).
    requests_abandoned,
    /// Times a connection's byte stream lost HTTP framing and resynchronised.
    stream_desyncs,
    /// Times a connection's records were lost (ring buffer full): its
    /// requests in flight were abandoned and its stream resynchronised.
    loss_resyncs,
    /// Responses with no request to pair with.
    orphan_responses,
    /// Connections whose addresses could not be found.
    tuple_unknown,
    /// Connections tracked now.
    connections_open,
    /// Spans produced.
    spans_created,
    /// Spans not exported because head sampling dropped their trace.
    spans_unsampled,
    /// Spans dropped because the export queue was full.
    spans_dropped_queue_full,
    /// Spans dropped after export failed: the backend refused the batch for
    /// good (HTTP 4xx, a permanent gRPC status), retries ran out, or the
    /// agent stopped before delivering them.
    spans_dropped_export_failed,
    /// Spans the backend accepted the request of but rejected (OTLP partial
    /// success `rejected_spans`); not retried.
    spans_rejected,
    /// Spans delivered to the backend (or printed).
    spans_exported,
    /// Export requests that failed (each may be retried).
    export_errors,
    /// Export requests that got no answer within the export timeout.
    export_timeouts,
    /// Spans waiting to be exported now (queued, in flight or awaiting a retry).
    export_queue_spans,
    /// Estimated memory held by the spans waiting to be exported, in bytes.
    export_queue_bytes,
}

/// Counters that are levels, not totals.
pub const GAUGES: &[&str] = &[
    "connections_open",
    "export_queue_spans",
    "export_queue_bytes",
];

/// Spans lost after they were made, for every reason the exporter has.
pub fn spans_dropped(c: &Counters) -> u64 {
    get(&c.spans_dropped_queue_full) + get(&c.spans_dropped_export_failed) + get(&c.spans_rejected)
}

/// Adds `n` to a counter.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}

/// Adds one to a counter.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

/// Reads a counter.
pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Relaxed)
}
