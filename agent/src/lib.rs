//! seam: an eBPF agent that turns the HTTP traffic of a Linux host into
//! OpenTelemetry spans without touching the traced programs.
//!
//! The pipeline, one module per stage, joined by bounded channels:
//! [`capture`] (load probes, read the ring buffer) → [`conn`] (connections,
//! processes) → [`protocol`] (HTTP/1) → [`stitch`] (ids, parents, spans) →
//! [`export`] (OTLP or console). [`discover`] reads /proc; [`config`] holds
//! what the user asked for; [`metrics`] counts everything that is dropped;
//! [`preflight`] checks what the machine offers before anything is loaded.
pub mod capture;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conn;
pub mod discover;
pub mod export;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod preflight;
pub mod protocol;
pub mod span;
pub mod stitch;
pub mod time_order;

/// Hash maps of the per-event path. Their keys are socket addresses, pids
/// and request numbers, not text a peer chooses freely; the standard
/// hasher's SipHash was a few percent of the agent's time. Seeded per
/// process all the same.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
