//! Human-readable span lines for a terminal, the default when no OTLP
//! endpoint is configured.
use std::io::Write;

use crate::span::{Span, SpanKind, Status, hex};

/// One line per span: service, kind, method, path, status, duration, ids.
pub fn format_span(s: &Span) -> String {
    let attr = |k: &str| s.attributes.get(k).map(|v| v.to_string());
    let method = attr("http.request.method").unwrap_or_else(|| s.name.clone());
    let target = match (attr("url.path"), attr("url.query")) {
        (Some(p), Some(q)) => format!("{p}?{q}"),
        (Some(p), None) => p,
        _ => String::new(),
    };
    let status = attr("http.response.status_code").unwrap_or_else(|| "-".into());
    let peer = match s.kind {
        SpanKind::Client => attr("server.address")
            .map(|h| format!(" -> {h}:{}", attr("server.port").unwrap_or_default()))
            .unwrap_or_default(),
        _ => String::new(),
    };
    let mark = if s.status == Status::Error { " !" } else { "" };
    let parent = s
        .parent_span_id
        .map(|p| hex(&p))
        .unwrap_or_else(|| "-".repeat(16));
    format!(
        "{service:<16} {kind:<6} {method:<7} {target:<32}{peer} {status}{mark} {dur:>9.3}ms  trace={trace} span={span} parent={parent}",
        service = s.resource.service_name(),
        kind = s.kind.as_str(),
        dur = s.duration_ns() as f64 / 1e6,
        trace = hex(&s.trace_id),
        span = hex(&s.span_id),
    )
}

/// Prints spans to stdout.
pub fn print(spans: &[Span]) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for s in spans {
        // A closed pipe (`seam | head`) is not worth a panic.
        if writeln!(out, "{}", format_span(s)).is_err() {
            return;
        }
    }
    let _ = out.flush();
}
