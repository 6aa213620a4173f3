//! The agent's own HTTP endpoint: `/metrics` (Prometheus text format),
//! `/healthz`, `/readyz` and `/status` (JSON).
use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::Instant,
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};

use super::{
    Counters,
    red::{BUCKETS, RedMetrics},
};
use crate::{capture::ProbeStats, policy::tail::TailStats};

/// What the endpoint reports, shared with the pipeline.
#[derive(Default)]
pub struct Observed {
    pub red: Mutex<RedMetrics>,
    pub counters: Arc<Counters>,
    pub probes: Mutex<ProbeStats>,
    pub tail: Mutex<Option<TailStats>>,
    /// Probes attached and the pipeline running.
    pub ready: AtomicBool,
    pub traced_processes: AtomicU64,
    /// Kubernetes containers in the kernel filter.
    pub traced_cgroups: AtomicU64,
    /// Libraries and executables whose TLS functions are hooked.
    pub tls_attached: AtomicU64,
    /// Files defining TLS functions that could not be hooked.
    pub tls_failures: AtomicU64,
    pub routes_overflowed: AtomicU64,
    pub started: Mutex<Option<Instant>>,
}

impl Observed {
    pub fn new(counters: Arc<Counters>) -> Self {
        Self {
            counters,
            started: Mutex::new(Some(Instant::now())),
            ..Default::default()
        }
    }
}

/// `http.server.request.duration` → `http_server_request_duration_seconds`.
fn prom_name(metric: &str) -> String {
    format!("{}_seconds", metric.replace('.', "_"))
}

fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}=\"{}\"", k.replace('.', "_"), label_value(v)))
        .collect::<Vec<_>>()
        .join(",")
}

fn fmt_f64(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

/// The Prometheus text exposition of everything.
pub fn render(o: &Observed) -> String {
    let mut out = String::new();
    let red = o.red.lock().expect("not poisoned");
    let mut last_metric = "";
    for (key, h) in &red.series {
        let name = prom_name(key.metric);
        if key.metric != last_metric {
            let what = if key.metric.contains("server") {
                "server"
            } else {
                "client"
            };
            let _ = writeln!(out, "# HELP {name} Duration of HTTP {what} requests.");
            let _ = writeln!(out, "# TYPE {name} histogram");
            last_metric = key.metric;
        }
        let mut base = vec![("service.name".to_string(), key.service.clone())];
        base.extend(
            key.attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone())),
        );
        let base = labels(&base);
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += h.buckets[i];
            let _ = writeln!(out, "{name}_bucket{{{base},le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{base},le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum{{{base}}} {}", fmt_f64(h.sum));
        let _ = writeln!(out, "{name}_count{{{base}}} {}", h.count);
    }
    drop(red);

    let probes = o.probes.lock().expect("not poisoned").clone();
    for (metric, help, pick) in [
        (
            "seam_probe_events_total",
            "Records the probes wrote to the ring buffer.",
            1usize,
        ),
        (
            "seam_probe_events_lost_total",
            "Records lost because the ring buffer was full.",
            2,
        ),
        (
            "seam_probe_read_failures_total",
            "Payload reads from user memory that failed.",
            3,
        ),
    ] {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
        for p in &probes.per_probe {
            let v = match pick {
                1 => p.1,
                2 => p.2,
                _ => p.3,
            };
            let _ = writeln!(out, "{metric}{{probe=\"{}\"}} {v}", p.0.name());
        }
    }
    for (name, value) in o.counters.snapshot() {
        let (metric, kind) = if super::GAUGES.contains(&name) {
            (format!("seam_{name}"), "gauge")
        } else {
            (format!("seam_{name}_total"), "counter")
        };
        let _ = writeln!(out, "# TYPE {metric} {kind}\n{metric} {value}");
    }
    let _ = writeln!(
        out,
        "# TYPE seam_traced_processes gauge\nseam_traced_processes {}",
        o.traced_processes.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# TYPE seam_traced_cgroups gauge\nseam_traced_cgroups {}",
        o.traced_cgroups.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# TYPE seam_tls_hooked_files gauge\nseam_tls_hooked_files {}\n# TYPE seam_tls_hook_failures_total counter\nseam_tls_hook_failures_total {}",
        o.tls_attached.load(Relaxed),
        o.tls_failures.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# TYPE seam_routes_overflowed_total counter\nseam_routes_overflowed_total {}",
        o.routes_overflowed.load(Relaxed)
    );
    if let Some(t) = o.tail.lock().expect("not poisoned").as_ref() {
        for (name, v) in [
            ("seam_tail_buffered_spans", t.buffered_spans as u64),
            ("seam_tail_buffered_traces", t.buffered_traces as u64),
        ] {
            let _ = writeln!(out, "# TYPE {name} gauge\n{name} {v}");
        }
        for (name, v) in [
            ("seam_tail_dropped_spans_total", t.dropped_spans),
            ("seam_tail_kept_traces_total", t.kept_traces),
            ("seam_tail_dropped_traces_total", t.dropped_traces),
            ("seam_tail_rate_limited_traces_total", t.rate_limited_traces),
        ] {
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {v}");
        }
    }
    out
}

/// The figures of `/status` and of the live status line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatusFigures {
    pub uptime_seconds: f64,
    pub ready: bool,
    pub traced_processes: u64,
    /// HTTP requests seen (server and client sides).
    pub requests: u64,
    pub spans_exported: u64,
    pub spans_dropped: u64,
    pub events_lost: u64,
    pub connections: u64,
    pub export_errors: u64,
}

impl StatusFigures {
    pub fn of(o: &Observed) -> Self {
        let c = &o.counters;
        let probes = o.probes.lock().expect("not poisoned").clone();
        let uptime_seconds = o
            .started
            .lock()
            .expect("not poisoned")
            .map_or(0.0, |s| s.elapsed().as_secs_f64());
        let red = o.red.lock().expect("not poisoned");
        let requests = red.total(super::red::SERVER) + red.total(super::red::CLIENT);
        drop(red);
        Self {
            uptime_seconds,
            ready: o.ready.load(Relaxed),
            traced_processes: o.traced_processes.load(Relaxed),
            requests,
            spans_exported: c.spans_exported.load(Relaxed),
            spans_dropped: super::spans_dropped(c),
            events_lost: probes.lost(),
            connections: c.connections_open.load(Relaxed),
            export_errors: c.export_errors.load(Relaxed),
        }
    }

    pub fn to_json(&self) -> String {
        format!(
            concat!(
                "{{\"uptime_seconds\":{:.1},\"ready\":{},\"traced_processes\":{},",
                "\"requests\":{},\"spans_exported\":{},\"spans_dropped\":{},",
                "\"events_lost\":{},\"connections\":{},\"export_errors\":{}}}"
            ),
            self.uptime_seconds,
            self.ready,
            self.traced_processes,
            self.requests,
            self.spans_exported,
            self.spans_dropped,
            self.events_lost,
            self.connections,
            self.export_errors,
        )
    }
}

/// `/status`: the figures of the live status line, as JSON.
pub fn status_json(o: &Observed) -> String {
    StatusFigures::of(o).to_json()
}

async fn metrics(State(o): State<Arc<Observed>>) -> impl IntoResponse {
    ([("content-type", "text/plain; version=0.0.4")], render(&o))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(o): State<Arc<Observed>>) -> (StatusCode, &'static str) {
    if o.ready.load(Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

async fn status(State(o): State<Arc<Observed>>) -> impl IntoResponse {
    ([("content-type", "application/json")], status_json(&o))
}

/// Binds `addr` and serves until the task is dropped; the bound address is
/// returned (port 0 picks one).
pub async fn serve(
    addr: SocketAddr,
    observed: Arc<Observed>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .with_state(observed);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::{Attributes, Resource, Span, SpanKind, Status};

    #[test]
    fn exposition_has_cumulative_buckets_and_counters() {
        let o = Observed::new(Arc::new(Counters::default()));
        let mut a = Attributes::default();
        a.set("http.request.method", "GET");
        a.set("http.response.status_code", 200i64);
        let mut r = Attributes::default();
        r.set("service.name", "or\"der");
        let span = Span {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
            trace_state: String::new(),
            flags: 1,
            name: "GET".into(),
            kind: SpanKind::Server,
            start_unix_ns: 0,
            end_unix_ns: 30_000_000,
            attributes: a,
            status: Status::Unset,
            resource: Arc::new(Resource { attributes: r }),
        };
        o.red.lock().unwrap().record(&span);
        o.red.lock().unwrap().record(&span);
        let text = render(&o);
        assert!(text.contains("# TYPE http_server_request_duration_seconds histogram"));
        assert!(text.contains(
            "http_server_request_duration_seconds_bucket{service_name=\"or\\\"der\",http_request_method=\"GET\",http_response_status_code=\"200\",le=\"0.025\"} 0"
        ), "{text}");
        assert!(text.contains("le=\"0.05\"} 2"));
        assert!(text.contains("le=\"+Inf\"} 2"));
        assert!(text.contains("_count{service_name=\"or\\\"der\",http_request_method=\"GET\",http_response_status_code=\"200\"} 2"));
        assert!(text.contains("seam_spans_exported_total 0"));
        assert!(text.contains("# TYPE seam_connections_open gauge"));
        let json = status_json(&o);
        assert!(json.contains("\"requests\":2"), "{json}");
    }
}
