//! Sampling, redaction and metrics end to end.
use std::{collections::HashMap, time::Duration};

use opentelemetry_proto::tonic::metrics::v1::metric;
use seam_tests::{
    agent::Agent,
    checkout::Chain,
    otlp::{Kind, Receiver},
    procs::{apps_dir, curl, free_port, gunicorn, scratch_dir},
    serial,
};

/// The OTel TraceIdRatioBased rule, restated independently of the agent:
/// sampled when the low 56 bits of the trace id reach 2^56 * (1 - ratio).
fn ratio_samples(trace_id_hex: &str, ratio: f64) -> bool {
    let low56 = u64::from_str_radix(&trace_id_hex[18..32], 16).unwrap();
    let threshold = ((1u64 << 56) as f64 * (1.0 - ratio)).round() as u64;
    low56 >= threshold
}

/// parentbased_traceidratio 0.25 over 400 orders: every trace is whole or
/// absent, the kept count is within binomial bounds, each kept trace id is
/// one the rule keeps, and the metrics still count all 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_sampling_keeps_whole_traces_at_the_ratio() {
    let _serial = serial().await;
    let receiver = Receiver::start(Kind::Grpc).await;
    let ports = Chain::ports();
    let chain = Chain::start(ports, 2, &[]);
    let mut args = Agent::otlp_args(&receiver);
    args.extend(Chain::port_args(ports));
    let mut agent = Agent::start(
        &args,
        &[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ],
    );
    assert!(
        agent
            .log()
            .contains("sampler ParentBased{root:TraceIdRatioBased{0.25}"),
        "{}",
        agent.log()
    );
    let n = 400;
    for _ in 0..n {
        assert_eq!(curl(&[&chain.order_url()]).0, 200);
    }
    // Unsampled traces never arrive, so wait on the metrics instead.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let count_line = |text: &str| -> u64 {
        text.lines()
            .filter(|l| {
                l.starts_with("http_server_request_duration_seconds_count{service_name=\"order\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    while count_line(&agent.get("/metrics").1) < n && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = agent.get("/metrics").1;
    assert_eq!(
        count_line(&metrics),
        n,
        "metrics count every request, sampled or not"
    );
    let spans = receiver.settle(0, Duration::from_secs(1)).await;
    assert!(agent.stop().success());

    let mut traces: HashMap<String, usize> = HashMap::new();
    for s in &spans {
        *traces.entry(s.trace_id()).or_default() += 1;
    }
    assert!(
        traces.values().all(|c| *c == 7),
        "all spans of a trace or none: {traces:?}"
    );
    let kept = traces.len() as f64;
    // Binomial(400, 0.25): mean 100, sd 8.66; five sd either side.
    assert!((57.0..=143.0).contains(&kept), "kept {kept} of {n} traces");
    for id in traces.keys() {
        assert!(
            ratio_samples(id, 0.25),
            "trace {id} is not one the ratio rule keeps"
        );
    }
}

/// Tail sampling keeps every error trace and every slow trace and drops
/// most of the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_sampling_keeps_errors_and_slow_traces() {
    let _serial = serial().await;
    let receiver = Receiver::start(Kind::Grpc).await;
    let port = free_port();
    let _app = gunicorn(&apps_dir("basic"), "basic", port, 2, &[]);
    let config = scratch_dir().join("tail.yaml");
    std::fs::write(
        &config,
        "sampling:\n  tail:\n    enabled: true\n    decision_wait_ms: 1500\n    latency_threshold_ms: 500\n    keep_ratio: 0.05\n",
    )
    .unwrap();
    let mut args = Agent::otlp_args(&receiver);
    args.extend([
        "--port".into(),
        port.to_string(),
        "--config".into(),
        config.display().to_string(),
    ]);
    let mut agent = Agent::start(&args, &[]);
    let base = format!("http://127.0.0.1:{port}");
    for i in 0..120 {
        let path = match i {
            i if i % 24 == 0 => "/status/500".to_string(),
            i if i % 40 == 1 => "/slow?ms=700".to_string(),
            _ => "/ok".to_string(),
        };
        curl(&[&format!("{base}{path}")]);
    }
    let spans = receiver.settle(8, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spans = if spans.len() < receiver.spans().len() {
        receiver.spans()
    } else {
        spans
    };
    assert!(agent.stop().success());
    let count = |p: &str| {
        spans
            .iter()
            .filter(|s| s.attr("url.path").as_deref() == Some(p))
            .count()
    };
    assert_eq!(count("/status/500"), 5, "every error trace is kept");
    assert_eq!(count("/slow"), 3, "every slow trace is kept");
    let ok = count("/ok");
    // 112 ordinary requests at 5 %: mean 5.6; 20 is far above any plausible draw.
    assert!(ok <= 20, "most ordinary traces are dropped, kept {ok}");
}

/// Secrets in headers, cookies and query values never reach any exported
/// byte, even when a header is allowlisted; allowlisted harmless headers do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_leave_the_agent() {
    let _serial = serial().await;
    let receiver = Receiver::start(Kind::Http).await;
    let port = free_port();
    let _app = gunicorn(&apps_dir("basic"), "basic", port, 1, &[]);
    let config = scratch_dir().join("redact.yaml");
    std::fs::write(
        &config,
        "redaction:\n  header_allowlist: [authorization, cookie, set-cookie, x-request-id, content-type]\n",
    )
    .unwrap();
    let mut args = Agent::otlp_args(&receiver);
    args.extend(["--config".into(), config.display().to_string()]);
    let mut agent = Agent::start(&args, &[("OTEL_METRIC_EXPORT_INTERVAL", "500")]);
    let url =
        format!("http://127.0.0.1:{port}/ok?token=TOKEN-SECRET-55&user=jane.doe%40example.com");
    let (status, _) = curl(&[
        &url,
        "-H",
        "Authorization: Bearer AUTH-SECRET-9f8e",
        "-H",
        "Cookie: session=COOKIE-SECRET-77",
        "-H",
        "X-Request-Id: req-42",
    ]);
    assert_eq!(status, 200);
    let (status, _) = curl(&["-X", "POST", &format!("http://127.0.0.1:{port}/login")]);
    assert_eq!(status, 200);
    let spans = receiver.settle(4, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(agent.stop().success());
    assert!(!receiver.metrics().is_empty(), "metrics were exported too");

    let payloads = receiver.raw_payloads();
    assert!(!payloads.is_empty());
    for secret in [
        "AUTH-SECRET",
        "COOKIE-SECRET",
        "SETCOOKIE-SECRET",
        "TOKEN-SECRET",
        "jane.doe",
        "example.com",
    ] {
        for p in &payloads {
            assert!(
                !p.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} leaked into an exported payload"
            );
        }
    }
    let server = spans
        .iter()
        .find(|s| s.is_server() && s.attr("url.path").as_deref() == Some("/ok"))
        .expect("server span");
    assert_eq!(
        server.attr("url.query").as_deref(),
        Some("token=REDACTED&user=REDACTED")
    );
    assert_eq!(
        server.attr("http.request.header.x-request-id").as_deref(),
        Some("req-42")
    );
    for never in [
        "http.request.header.authorization",
        "http.request.header.cookie",
        "http.response.header.set-cookie",
    ] {
        assert!(
            spans.iter().all(|s| s.attr(never).is_none()),
            "{never} exported"
        );
    }
    let client = spans
        .iter()
        .find(|s| s.is_client() && s.attr("url.path").as_deref() == Some("/ok"))
        .expect("curl's client span");
    assert_eq!(
        client.attr("url.full"),
        Some(format!(
            "http://127.0.0.1:{port}/ok?token=REDACTED&user=REDACTED"
        ))
    );
}

/// /metrics counts exactly the requests sent, the OTLP metrics agree, and the
/// health endpoints answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_every_request() {
    let _serial = serial().await;
    let receiver = Receiver::start(Kind::Grpc).await;
    let port = free_port();
    let _app = gunicorn(&apps_dir("basic"), "basic", port, 2, &[]);
    let mut args = Agent::otlp_args(&receiver);
    args.extend(["--port".into(), port.to_string()]);
    let mut agent = Agent::start(&args, &[("OTEL_METRIC_EXPORT_INTERVAL", "500")]);
    assert_eq!(agent.get("/healthz"), (200, "ok\n".to_string()));
    assert_eq!(agent.get("/readyz").0, 200);
    for i in 0..30 {
        let path = if i % 3 == 0 { "/status/503" } else { "/ok" };
        curl(&[&format!("http://127.0.0.1:{port}{path}")]);
    }
    receiver.settle(30, Duration::from_secs(20)).await;
    let text = agent.get("/metrics").1;
    let series = |status: &str| -> u64 {
        text.lines()
            .filter(|l| {
                l.starts_with("http_server_request_duration_seconds_count{service_name=\"basic\"")
            })
            .filter(|l| l.contains(&format!("http_response_status_code=\"{status}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(series("200"), 20, "{text}");
    assert_eq!(series("503"), 10, "{text}");
    assert!(text.contains("error_type=\"503\""));
    assert!(text.contains("http_route=\"/ok\""));
    assert!(text.contains("seam_probe_events_total{probe=\"recvfrom\"}"));
    let status = agent.get("/status").1;
    assert!(
        status.contains("\"ready\":true") && status.contains("\"requests\":30"),
        "{status}"
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    let last = receiver.metrics().pop().expect("OTLP metrics received");
    let mut total = 0;
    for rm in &last.resource_metrics {
        for sm in &rm.scope_metrics {
            for m in sm
                .metrics
                .iter()
                .filter(|m| m.name == "http.server.request.duration")
            {
                if let Some(metric::Data::Histogram(h)) = &m.data {
                    total += h.data_points.iter().map(|p| p.count).sum::<u64>();
                }
            }
        }
    }
    assert_eq!(total, 30);
    assert!(agent.stop().success());
}
