//! RED metrics (rate, errors, duration) of every HTTP request seam sees,
//! sampled or not: the `http.server.request.duration` and
//! `http.client.request.duration` histograms of the OpenTelemetry HTTP
//! semantic conventions, with their bucket boundaries and attributes.
use std::{collections::BTreeMap, fmt::Write as _};

use crate::span::{Span, SpanKind, Value};

/// Seconds; the boundaries the HTTP conventions recommend.
pub const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

pub const SERVER: &str = "http.server.request.duration";
pub const CLIENT: &str = "http.client.request.duration";

/// Span attributes that become metric attributes (bounded cardinality:
/// routes are capped, no paths, ids or addresses of clients), in the order
/// they take in a series key. The method comes first: a span without one is
/// not an HTTP span.
const KEYS: [&str; 8] = [
    "http.request.method",
    "http.response.status_code",
    "http.route",
    "server.address",
    "server.port",
    "url.scheme",
    "network.protocol.version",
    "error.type",
];

/// Where span attribute `key` goes in [`KEYS`], if it is one of `kind`'s:
/// server series have routes, client series the server's address and port.
/// A `match` on the key looks at each of a span's ~25 attributes once,
/// where looking each of these keys up went through all of them seven times.
fn slot_of(key: &str, kind: SpanKind) -> Option<usize> {
    let server = kind == SpanKind::Server;
    Some(match key {
        "http.request.method" => 0,
        "http.response.status_code" => 1,
        "http.route" if server => 2,
        "server.address" if !server => 3,
        "server.port" if !server => 4,
        "url.scheme" => 5,
        "network.protocol.version" => 6,
        "error.type" => 7,
        _ => return None,
    })
}

/// Appends `v` as text; strings and integers without the formatter.
fn push_value(out: &mut String, v: &Value) {
    match v {
        Value::Str(s) => out.push_str(s),
        Value::Int(i) => {
            if *i < 0 {
                out.push('-');
            }
            let mut n = i.unsigned_abs();
            let mut digits = [0u8; 20];
            let mut at = digits.len();
            loop {
                at -= 1;
                digits[at] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            for &d in &digits[at..] {
                out.push(char::from(d));
            }
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// One time series: a histogram for one metric, service and attribute set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Count per bucket; the last counts values above every boundary.
    pub buckets: [u64; BUCKETS.len() + 1],
    pub count: u64,
    pub sum: f64,
    /// Unix nanoseconds of the first value (start of the cumulative series).
    pub start_unix_ns: u64,
}

impl Histogram {
    pub fn record(&mut self, seconds: f64, now_unix_ns: u64) {
        if self.count == 0 {
            self.start_unix_ns = now_unix_ns;
        }
        let i = BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i] += 1;
        self.count += 1;
        self.sum += seconds;
    }
}

/// Identity of a series.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    pub metric: &'static str,
    pub service: String,
    pub attributes: Vec<(&'static str, String)>,
}

/// Every series; a `BTreeMap` so output is stable.
#[derive(Debug, Default)]
pub struct RedMetrics {
    pub series: BTreeMap<SeriesKey, Histogram>,
    /// The key of the span being recorded, written into the strings of the
    /// previous one: a span of a known series allocates nothing.
    scratch: SeriesKey,
}

impl RedMetrics {
    /// Records one HTTP span (others are ignored).
    pub fn record(&mut self, span: &Span) {
        let metric = match span.kind {
            SpanKind::Server => SERVER,
            SpanKind::Client => CLIENT,
            SpanKind::Internal => return,
        };
        let mut found: [Option<&Value>; KEYS.len()] = [None; KEYS.len()];
        for (k, v) in span.attributes.iter() {
            if let Some(i) = slot_of(k, span.kind) {
                // The first of a repeated key counts, as `Attributes::get` has it.
                found[i].get_or_insert(v);
            }
        }
        if found[0].is_none() {
            return;
        }
        let key = &mut self.scratch;
        key.metric = metric;
        key.service.clear();
        key.service.push_str(span.resource.service_name());
        let mut n = 0;
        for (k, v) in KEYS.iter().zip(found) {
            let Some(v) = v else {
                continue;
            };
            if n == key.attributes.len() {
                key.attributes.push((k, String::new()));
            }
            let slot = &mut key.attributes[n];
            slot.0 = k;
            slot.1.clear();
            push_value(&mut slot.1, v);
            n += 1;
        }
        key.attributes.truncate(n);
        let seconds = span.duration_ns() as f64 / 1e9;
        match self.series.get_mut(&self.scratch) {
            Some(h) => h.record(seconds, span.end_unix_ns),
            None => self
                .series
                .entry(self.scratch.clone())
                .or_default()
                .record(seconds, span.end_unix_ns),
        }
    }

    /// Requests counted in every series of `metric`.
    pub fn total(&self, metric: &str) -> u64 {
        self.series
            .iter()
            .filter(|(k, _)| k.metric == metric)
            .map(|(_, h)| h.count)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::{Attributes, Resource, Status};
    use std::sync::Arc;

    fn span(kind: SpanKind, status: i64, ms: u64) -> Span {
        let mut a = Attributes::default();
        a.set("http.request.method", "GET");
        a.set("http.response.status_code", status);
        a.set("http.route", "/users/{id}");
        a.set("url.path", "/users/42");
        a.set("server.address", "inventory");
        let mut r = Attributes::default();
        r.set("service.name", "order");
        Span {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
            trace_state: String::new(),
            flags: 0,
            name: "GET".into(),
            kind,
            start_unix_ns: 1_000,
            end_unix_ns: 1_000 + ms * 1_000_000,
            attributes: a,
            status: Status::Unset,
            resource: Arc::new(Resource { attributes: r }),
        }
    }

    #[test]
    fn buckets_and_series() {
        let mut m = RedMetrics::default();
        m.record(&span(SpanKind::Server, 200, 3));
        m.record(&span(SpanKind::Server, 200, 30));
        m.record(&span(SpanKind::Server, 500, 20_000));
        m.record(&span(SpanKind::Client, 200, 100));
        m.record(&span(SpanKind::Internal, 200, 1));
        assert_eq!(m.total(SERVER), 3);
        assert_eq!(m.total(CLIENT), 1);
        assert_eq!(m.series.len(), 3);
        let ok = m
            .series
            .iter()
            .find(|(k, _)| {
                k.metric == SERVER
                    && k.attributes
                        .contains(&("http.response.status_code", "200".into()))
            })
            .unwrap();
        assert_eq!(ok.1.count, 2);
        assert_eq!(ok.1.buckets[0], 1, "3 ms <= 5 ms");
        assert_eq!(ok.1.buckets[3], 1, "30 ms in (25, 50]");
        assert!((ok.1.sum - 0.033).abs() < 1e-9);
        // Paths are not metric attributes; routes are.
        assert!(ok.0.attributes.iter().all(|(k, _)| *k != "url.path"));
        assert!(
            ok.0.attributes
                .iter()
                .any(|(k, v)| *k == "http.route" && v == "/users/{id}")
        );
        let slow = m
            .series
            .iter()
            .find(|(k, _)| {
                k.attributes
                    .contains(&("http.response.status_code", "500".into()))
            })
            .unwrap();
        assert_eq!(
            slow.1.buckets[BUCKETS.len()],
            1,
            "20 s is past the last boundary"
        );
    }

    /// The key is rebuilt in the previous span's strings: a span with fewer
    /// attributes, another service or kind must not keep any of them.
    #[test]
    fn series_key_carries_nothing_over() {
        let mut m = RedMetrics::default();
        let mut failed = span(SpanKind::Server, 500, 3);
        failed.attributes.set("error.type", "500");
        m.record(&failed);
        m.record(&span(SpanKind::Server, 500, 3));
        let mut other = span(SpanKind::Server, 500, 3);
        other.resource = Arc::new(Resource {
            attributes: {
                let mut r = Attributes::default();
                r.set("service.name", "payment");
                r
            },
        });
        m.record(&other);
        m.record(&span(SpanKind::Server, 500, 3));
        let keys: Vec<_> = m.series.iter().map(|(k, h)| (k, h.count)).collect();
        assert_eq!(keys.len(), 3, "{keys:?}");
        let with_error = keys
            .iter()
            .filter(|(k, _)| k.attributes.iter().any(|(n, _)| *n == "error.type"))
            .collect::<Vec<_>>();
        assert_eq!(with_error.len(), 1);
        assert_eq!(with_error[0].1, 1);
        let plain = keys
            .iter()
            .find(|(k, _)| k.service == "order" && k.attributes.len() == 3)
            .unwrap();
        assert_eq!(plain.1, 2);
        assert!(keys.iter().any(|(k, n)| k.service == "payment" && *n == 1));
    }

    #[test]
    fn values_are_written_like_display_does() {
        for i in [0, 7, 10, 200, 65_535, -1, -42, i64::MIN, i64::MAX] {
            let mut out = String::from("x");
            push_value(&mut out, &Value::Int(i));
            assert_eq!(out, format!("x{i}"));
        }
        for v in [Value::word("GET"), Value::Bool(true), Value::F64(1.5)] {
            let mut out = String::new();
            push_value(&mut out, &v);
            assert_eq!(out, v.to_string());
        }
    }

    /// Each kind has its own attributes, always in `KEYS` order whatever the
    /// span's order; a span without a method is not counted.
    #[test]
    fn series_attributes_by_kind_in_a_fixed_order() {
        let mut m = RedMetrics::default();
        let mut client = span(SpanKind::Client, 503, 3);
        client.attributes.set("error.type", "503");
        client.attributes.set("server.port", 8080i64);
        client.attributes.set("url.scheme", "http");
        m.record(&client);
        let mut server = span(SpanKind::Server, 200, 3);
        server.attributes.set("network.protocol.version", "1.1");
        server.attributes.set("url.scheme", "http");
        m.record(&server);
        let mut no_method = span(SpanKind::Server, 200, 3);
        no_method
            .attributes
            .0
            .retain(|(k, _)| k != "http.request.method");
        m.record(&no_method);
        let series: Vec<Vec<(&str, &str)>> = m
            .series
            .keys()
            .map(|k| k.attributes.iter().map(|(n, v)| (*n, v.as_str())).collect())
            .collect();
        assert_eq!(
            series,
            [
                vec![
                    ("http.request.method", "GET"),
                    ("http.response.status_code", "503"),
                    ("server.address", "inventory"),
                    ("server.port", "8080"),
                    ("url.scheme", "http"),
                    ("error.type", "503"),
                ],
                vec![
                    ("http.request.method", "GET"),
                    ("http.response.status_code", "200"),
                    ("http.route", "/users/{id}"),
                    ("url.scheme", "http"),
                    ("network.protocol.version", "1.1"),
                ],
            ]
        );
        assert_eq!(m.total(SERVER), 1);
    }
}
