//! Human-readable output for a terminal, the default when no OTLP endpoint
//! is configured: finished traces as indented waterfalls with bars, or one
//! line per span.
use std::{
    collections::HashMap,
    io::Write,
    time::{Duration, Instant},
};

use crate::span::{Span, SpanKind, Status, TraceId, Value, hex};

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

/// Writes text to stdout; a closed pipe (`seam | head`) is not an error.
pub fn write_out(text: &str) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Columns of the terminal on stdout, else `$COLUMNS`, else 100; kept
/// between 80 and 160.
pub fn terminal_width() -> usize {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills a winsize; failure leaves it zeroed.
    let cols = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    let cols = if cols == 0 && ws.ws_col > 0 {
        ws.ws_col as usize
    } else {
        std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(100)
    };
    cols.clamp(80, 160)
}

struct PendingTrace {
    spans: Vec<Span>,
    first: Instant,
    last: Instant,
}

/// Collects spans per trace and renders a trace once it looks finished: its
/// root arrived and nothing came for a moment, or it went quiet for longer.
pub struct Waterfall {
    traces: HashMap<TraceId, PendingTrace>,
    width: usize,
}

/// Quiet time after the root span before a trace is printed.
const AFTER_ROOT: Duration = Duration::from_millis(200);
/// Quiet time before a trace without a local root is printed anyway.
const WITHOUT_ROOT: Duration = Duration::from_millis(1500);

impl Waterfall {
    pub fn new(width: usize) -> Self {
        Self {
            traces: HashMap::new(),
            width,
        }
    }

    pub fn add(&mut self, spans: Vec<Span>, now: Instant) {
        for s in spans {
            let t = self
                .traces
                .entry(s.trace_id)
                .or_insert_with(|| PendingTrace {
                    spans: Vec::new(),
                    first: now,
                    last: now,
                });
            t.last = now;
            t.spans.push(s);
        }
    }

    /// Renders the traces that are ready at `now`, oldest first.
    pub fn due(&mut self, now: Instant) -> Vec<String> {
        let mut ready: Vec<(Instant, TraceId)> = self
            .traces
            .iter()
            .filter(|(_, t)| {
                let quiet = now.duration_since(t.last);
                let rooted = t.spans.iter().any(|s| s.parent_span_id.is_none());
                (rooted && quiet >= AFTER_ROOT) || quiet >= WITHOUT_ROOT
            })
            .map(|(id, t)| (t.first, *id))
            .collect();
        ready.sort();
        ready
            .into_iter()
            .filter_map(|(_, id)| self.traces.remove(&id))
            .map(|t| render(&t.spans, self.width))
            .collect()
    }

    /// Renders everything left (shutdown).
    pub fn flush(&mut self) -> Vec<String> {
        let mut all: Vec<PendingTrace> = self.traces.drain().map(|(_, t)| t).collect();
        all.sort_by_key(|t| t.first);
        all.iter().map(|t| render(&t.spans, self.width)).collect()
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let keep: String = s.chars().take(max.saturating_sub(1)).collect();
    format!("{keep}…")
}

fn ms(ns: u64) -> String {
    let v = ns as f64 / 1e6;
    if v >= 1000.0 {
        format!("{:.3} s", v / 1000.0)
    } else {
        format!("{v:.1} ms")
    }
}

/// What a span is, in a few words: `GET /check 200` or its name.
fn label(s: &Span) -> String {
    let attr = |k: &str| s.attributes.get(k).map(Value::to_string);
    match (attr("http.request.method"), attr("url.path")) {
        (Some(m), Some(p)) => {
            let status = attr("http.response.status_code").unwrap_or_default();
            let mark = if s.status == Status::Error { "!" } else { "" };
            format!("{m} {p} {status}{mark}")
        }
        _ => s.name.clone(),
    }
}

fn kind_tag(k: SpanKind) -> &'static str {
    match k {
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Internal => "internal",
    }
}

/// One trace as an indented tree with time bars. In a server span's bar,
/// `█` is time its children cover and `░` its own time (the gaps).
pub fn render(spans: &[Span], width: usize) -> String {
    let t0 = spans.iter().map(|s| s.start_unix_ns).min().unwrap_or(0);
    let t1 = spans.iter().map(|s| s.end_unix_ns).max().unwrap_or(t0);
    let total = (t1 - t0).max(1);
    let ids: HashMap<[u8; 8], usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id, i))
        .collect();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        match s.parent_span_id.and_then(|p| ids.get(&p)) {
            Some(&p) => children.entry(p).or_default().push(i),
            None => roots.push(i),
        }
    }
    let by_start = |v: &mut Vec<usize>| {
        v.sort_by_key(|&i| (spans[i].start_unix_ns, spans[i].kind != SpanKind::Server))
    };
    by_start(&mut roots);
    for v in children.values_mut() {
        by_start(v);
    }
    let mut order: Vec<(usize, usize)> = Vec::new();
    let mut stack: Vec<(usize, usize)> = roots.iter().rev().map(|&r| (r, 0)).collect();
    while let Some((i, depth)) = stack.pop() {
        order.push((i, depth));
        if let Some(c) = children.get(&i) {
            stack.extend(c.iter().rev().map(|&c| (c, depth + 1)));
        }
    }

    let bar_w = (width / 3).clamp(24, 60);
    let dur_w = 11;
    let label_w = width - bar_w - dur_w - 4;
    let root = &spans[roots[0]];
    let mut out = String::new();
    let title = format!(
        "── trace {} · {} {} · {} ",
        hex(&root.trace_id),
        root.resource.service_name(),
        label(root),
        ms(total)
    );
    let pad = width.saturating_sub(title.chars().count());
    out.push_str(&truncate(&title, width));
    out.push_str(&"─".repeat(pad));
    out.push('\n');
    let mut gap_notes = Vec::new();
    for (i, depth) in order {
        let s = &spans[i];
        let indent = "  ".repeat(depth.min(8));
        let text = format!(
            "{indent}{} {} {}",
            s.resource.service_name(),
            kind_tag(s.kind),
            label(s)
        );
        let cell = |c: usize| -> (u64, u64) {
            (
                t0 + total * c as u64 / bar_w as u64,
                t0 + total * (c as u64 + 1) / bar_w as u64,
            )
        };
        let kids: Vec<&Span> = children
            .get(&i)
            .map(|c| c.iter().map(|&k| &spans[k]).collect())
            .unwrap_or_default();
        let mut bar = String::with_capacity(bar_w * 3);
        for c in 0..bar_w {
            let (a, b) = cell(c);
            let mid = (a + b) / 2;
            let inside = s.start_unix_ns < b && s.end_unix_ns > a;
            let ch = if !inside {
                ' '
            } else if s.kind == SpanKind::Server
                && !kids.is_empty()
                && !kids
                    .iter()
                    .any(|k| k.start_unix_ns <= mid && k.end_unix_ns >= mid)
            {
                '░'
            } else {
                '█'
            };
            bar.push(ch);
        }
        out.push_str(&format!(
            "{:<label_w$} │{bar}│ {:>dur_w$}\n",
            truncate(&text, label_w),
            ms(s.duration_ns()),
        ));
        if s.kind == SpanKind::Server
            && let Some(self_ms) = s.attributes.get("seam.gap.self_ms")
        {
            let get = |k: &str| match s.attributes.get(k) {
                Some(Value::F64(v)) => *v,
                _ => 0.0,
            };
            let self_ms = match self_ms {
                Value::F64(v) => *v,
                _ => 0.0,
            };
            // Only gaps that matter for this trace are spelled out.
            if self_ms >= 1.0 && self_ms * 1e6 >= total as f64 * 0.05 {
                let what = s
                    .attributes
                    .get("url.path")
                    .map(Value::to_string)
                    .unwrap_or_else(|| s.name.clone());
                // Parts under 0.05 ms are left out so the line fits.
                let parts: Vec<String> = [
                    ("file I/O", "seam.gap.file_io_ms"),
                    ("off-CPU", "seam.gap.off_cpu_ms"),
                    ("CPU wait", "seam.gap.runqueue_ms"),
                    ("unexplained", "seam.gap.unexplained_ms"),
                ]
                .iter()
                .filter(|(_, key)| get(key) >= 0.05)
                .map(|(label, key)| format!("{label} {:.1}", get(key)))
                .collect();
                gap_notes.push(format!(
                    "  ░ {} {what}: own {self_ms:.1} ms = {}",
                    s.resource.service_name(),
                    parts.join(" · "),
                ));
            }
        }
    }
    for note in gap_notes {
        out.push_str(&truncate(&note, width));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::{Attributes, Resource};
    use std::sync::Arc;

    fn span(
        svc: &str,
        kind: SpanKind,
        id: u8,
        parent: Option<u8>,
        start: u64,
        end: u64,
        path: &str,
    ) -> Span {
        let mut attributes = Attributes::default();
        attributes.set("http.request.method", "GET");
        attributes.set("url.path", path);
        attributes.set("http.response.status_code", 200i64);
        let mut r = Attributes::default();
        r.set("service.name", svc);
        Span {
            trace_id: [7; 16],
            span_id: [id; 8],
            parent_span_id: parent.map(|p| [p; 8]),
            trace_state: String::new(),
            flags: 1,
            name: "GET".into(),
            kind,
            start_unix_ns: start,
            end_unix_ns: end,
            attributes,
            status: Status::Unset,
            resource: Arc::new(Resource { attributes: r }),
        }
    }

    #[test]
    fn renders_tree_bars_and_gaps() {
        let mut root = span(
            "order",
            SpanKind::Server,
            1,
            None,
            0,
            1_000_000_000,
            "/api/order",
        );
        root.attributes.set("seam.gap.self_ms", Value::F64(500.0));
        root.attributes
            .set("seam.gap.file_io_ms", Value::F64(400.0));
        root.attributes.set("seam.gap.off_cpu_ms", Value::F64(0.0));
        root.attributes.set("seam.gap.runqueue_ms", Value::F64(0.0));
        root.attributes
            .set("seam.gap.unexplained_ms", Value::F64(100.0));
        let client = span(
            "order",
            SpanKind::Client,
            2,
            Some(1),
            0,
            500_000_000,
            "/check",
        );
        let inv = span(
            "inventory",
            SpanKind::Server,
            3,
            Some(2),
            10_000_000,
            490_000_000,
            "/check",
        );
        let text = render(&[inv, client, root], 100);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with(
            "── trace 07070707070707070707070707070707 · order GET /api/order 200 · 1.000 s"
        ));
        assert!(lines[1].starts_with("order server GET /api/order 200"));
        assert!(lines[2].starts_with("  order client GET /check 200"));
        assert!(lines[3].starts_with("    inventory server GET /check 200"));
        // The root's bar: children cover its first half, its own time the rest.
        let bar: String = lines[1].split('│').nth(1).unwrap().to_string();
        assert!(bar.starts_with('█') && bar.ends_with('░'), "{bar}");
        assert!(
            lines[4]
                .contains("░ order /api/order: own 500.0 ms = file I/O 400.0 · unexplained 100.0"),
            "{}",
            lines[4]
        );
        for l in &lines {
            assert!(l.chars().count() <= 100, "{l}");
        }
    }

    #[test]
    fn waterfall_waits_for_the_root_then_quiet() {
        let mut w = Waterfall::new(100);
        let t = Instant::now();
        w.add(vec![span("b", SpanKind::Server, 3, Some(2), 1, 2, "/")], t);
        assert!(w.due(t + Duration::from_millis(300)).is_empty());
        w.add(
            vec![span("a", SpanKind::Server, 2, None, 0, 3, "/")],
            t + Duration::from_millis(300),
        );
        assert!(w.due(t + Duration::from_millis(400)).is_empty());
        assert_eq!(w.due(t + Duration::from_millis(600)).len(), 1);
        w.add(vec![span("c", SpanKind::Server, 4, Some(9), 0, 3, "/")], t);
        assert_eq!(w.due(t + Duration::from_millis(1600)).len(), 1);
        assert!(w.flush().is_empty());
    }
}
