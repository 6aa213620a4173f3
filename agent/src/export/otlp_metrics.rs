//! RED histograms and the agent's own counters as OTLP metrics, cumulative,
//! sent every `OTEL_METRIC_EXPORT_INTERVAL` (default 60 s) to the same
//! backend as the spans. `OTEL_METRICS_EXPORTER=none` turns this off.
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    metrics::v1::{
        AggregationTemporality, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
        ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
    },
    resource::v1::Resource,
};

use super::otlp::OtlpClient;
use crate::{
    capture::ProbeStats,
    metrics::{
        Counters,
        red::{BUCKETS, RedMetrics},
        serve::Observed,
    },
};

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.to_string())),
        }),
        ..Default::default()
    }
}

fn sum(name: &str, unit: &str, description: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        description: description.into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn point(attributes: Vec<KeyValue>, value: u64, start: u64, now: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(number_data_point::Value::AsInt(value as i64)),
        ..Default::default()
    }
}

/// One request: a resource per traced service with its RED histograms, and
/// one for the agent with its counters.
pub fn request(
    red: &RedMetrics,
    counters: &Counters,
    probes: &ProbeStats,
    host: &str,
    agent_start_unix_ns: u64,
    now_unix_ns: u64,
) -> ExportMetricsServiceRequest {
    let scope = || {
        Some(InstrumentationScope {
            name: "seam".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    };
    let mut by_service: BTreeMap<&str, BTreeMap<&'static str, Vec<HistogramDataPoint>>> =
        BTreeMap::new();
    for (key, h) in &red.series {
        let mut bucket_counts = h.buckets.to_vec();
        bucket_counts.truncate(BUCKETS.len() + 1);
        by_service
            .entry(key.service.as_str())
            .or_default()
            .entry(key.metric)
            .or_default()
            .push(HistogramDataPoint {
                attributes: key.attributes.iter().map(|(k, v)| kv(k, v)).collect(),
                start_time_unix_nano: h.start_unix_ns,
                time_unix_nano: now_unix_ns,
                count: h.count,
                sum: Some(h.sum),
                bucket_counts,
                explicit_bounds: BUCKETS.to_vec(),
                ..Default::default()
            });
    }
    let mut resource_metrics: Vec<ResourceMetrics> = by_service
        .into_iter()
        .map(|(service, metrics)| ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", service),
                    kv("host.name", host),
                    kv("telemetry.sdk.name", "seam"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: scope(),
                metrics: metrics
                    .into_iter()
                    .map(|(name, points)| Metric {
                        name: name.into(),
                        unit: "s".into(),
                        description: format!(
                            "Duration of HTTP {} requests.",
                            if name.contains("server") {
                                "server"
                            } else {
                                "client"
                            }
                        ),
                        data: Some(metric::Data::Histogram(Histogram {
                            data_points: points,
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        })),
                        ..Default::default()
                    })
                    .collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        })
        .collect();

    let start = agent_start_unix_ns;
    let per_probe = |pick: fn(&(seam_common::Probe, u64, u64, u64)) -> u64| {
        probes
            .per_probe
            .iter()
            .map(|p| point(vec![kv("probe", p.0.name())], pick(p), start, now_unix_ns))
            .collect()
    };
    let mut own = vec![
        sum(
            "seam.probe.events",
            "{event}",
            "Records the probes wrote to the ring buffer.",
            per_probe(|p| p.1),
        ),
        sum(
            "seam.probe.events.lost",
            "{event}",
            "Records lost because the ring buffer was full.",
            per_probe(|p| p.2),
        ),
    ];
    for (name, value) in counters.snapshot() {
        if crate::metrics::GAUGES.contains(&name) {
            continue;
        }
        own.push(sum(
            &format!("seam.{name}"),
            "1",
            "",
            vec![point(vec![], value, start, now_unix_ns)],
        ));
    }
    resource_metrics.push(ResourceMetrics {
        resource: Some(Resource {
            attributes: vec![kv("service.name", "seam"), kv("host.name", host)],
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            scope: scope(),
            metrics: own,
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    });
    ExportMetricsServiceRequest { resource_metrics }
}

/// The export interval from `OTEL_METRIC_EXPORT_INTERVAL` (ms); `None` when
/// `OTEL_METRICS_EXPORTER` is `none`.
pub fn interval(get: &dyn Fn(&str) -> Option<String>) -> Result<Option<Duration>, String> {
    if get("OTEL_METRICS_EXPORTER").is_some_and(|v| v.trim() == "none") {
        return Ok(None);
    }
    match get("OTEL_METRIC_EXPORT_INTERVAL").map(|v| v.trim().to_string()) {
        Some(v) if !v.is_empty() => v
            .parse::<u64>()
            .map(|ms| Some(Duration::from_millis(ms.max(100))))
            .map_err(|_| {
                format!("OTEL_METRIC_EXPORT_INTERVAL: `{v}` is not a whole number of milliseconds")
            }),
        _ => Ok(Some(Duration::from_secs(60))),
    }
}

/// Sends the metrics every `every` until the task is dropped.
pub async fn run(
    mut client: OtlpClient,
    observed: Arc<Observed>,
    every: Duration,
    clock: crate::clock::Clock,
) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let start = clock.unix_ns(crate::clock::Clock::monotonic_now());
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = clock.unix_ns(crate::clock::Clock::monotonic_now());
        let req = {
            let red = observed.red.lock().expect("not poisoned");
            let probes = observed.probes.lock().expect("not poisoned");
            request(&red, &observed.counters, &probes, &host, start, now)
        };
        if let Err(e) = client.export_metrics(req).await {
            tracing::debug!(error = %e, "metrics export failed; the next one carries the same totals");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::{Attributes, Resource as SpanResource, Span, SpanKind, Status};

    #[test]
    fn histograms_per_service_and_own_counters() {
        let mut red = RedMetrics::default();
        let mut a = Attributes::default();
        a.set("http.request.method", "GET");
        a.set("http.response.status_code", 200i64);
        let mut r = Attributes::default();
        r.set("service.name", "order");
        red.record(&Span {
            trace_id: [1; 16],
            span_id: [1; 8],
            parent_span_id: None,
            trace_state: String::new(),
            flags: 1,
            name: "GET".into(),
            kind: SpanKind::Server,
            start_unix_ns: 0,
            end_unix_ns: 7_000_000,
            attributes: a,
            status: Status::Unset,
            resource: Arc::new(SpanResource { attributes: r }),
        });
        let counters = Counters::default();
        let req = request(&red, &counters, &ProbeStats::default(), "h", 1, 2);
        assert_eq!(req.resource_metrics.len(), 2);
        let m = &req.resource_metrics[0].scope_metrics[0].metrics[0];
        assert_eq!(m.name, "http.server.request.duration");
        assert_eq!(m.unit, "s");
        let Some(metric::Data::Histogram(h)) = &m.data else {
            panic!("histogram")
        };
        let p = &h.data_points[0];
        assert_eq!(
            (p.count, p.bucket_counts.len(), p.explicit_bounds.len()),
            (1, 15, 14)
        );
        assert_eq!(p.bucket_counts[1], 1, "7 ms in (5, 10] ms");
        let own: Vec<&str> = req.resource_metrics[1].scope_metrics[0]
            .metrics
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert!(own.contains(&"seam.spans_exported"));
        assert!(own.contains(&"seam.probe.events.lost"));
    }

    #[test]
    fn interval_from_environment() {
        assert_eq!(interval(&|_| None), Ok(Some(Duration::from_secs(60))));
        assert_eq!(
            interval(&|k| (k == "OTEL_METRIC_EXPORT_INTERVAL").then(|| "1500".into())),
            Ok(Some(Duration::from_millis(1500)))
        );
        assert_eq!(
            interval(&|k| (k == "OTEL_METRICS_EXPORTER").then(|| "none".into())),
            Ok(None)
        );
        assert!(
            interval(&|k| (k == "OTEL_METRIC_EXPORT_INTERVAL").then(|| "soon".into())).is_err()
        );
    }
}
