//! seam's spans in a real backend: Arize Phoenix receives the four-service
//! checkout chain over OTLP gRPC and over HTTP/protobuf, and its REST API
//! gives each order back as one trace of 7 spans, parented as seam stitched
//! them. `cargo xtask setup` installs Phoenix (about a minute, once); the
//! test takes about 35 s, most of it Phoenix starting.
//!
//! Phoenix files spans under a project: the `x-project-name` header of an
//! OTLP/HTTP request, else the `openinference.project.name` resource
//! attribute, else `default`. It keeps no other resource attribute, so the
//! service a span belongs to is checked by its `server.port` here.
use std::{collections::HashMap, time::Duration};

use seam_tests::{
    agent::Agent,
    checkout::Chain,
    phoenix::{Phoenix, StoredSpan},
    procs::curl,
    serial,
};

/// Orders per protocol.
const N: usize = 10;

/// How one run reaches Phoenix and which project it lands in.
struct Run<'a> {
    protocol: &'a str,
    endpoint: String,
    /// Environment of the agent.
    agent_env: Vec<(&'a str, &'a str)>,
    /// Environment of the four services.
    service_env: Vec<(&'a str, String)>,
    project: &'a str,
}

fn drive(phoenix: &Phoenix, run: Run) {
    let ports = Chain::ports();
    let chain = Chain::start_with_env(ports, 1, &run.service_env, &[]);
    let mut args = vec![
        "--otlp-endpoint".to_string(),
        run.endpoint,
        "--otlp-protocol".into(),
        run.protocol.into(),
        // File reads of a first request (lazy imports) on a busy machine
        // would otherwise become spans of their own; this test is about the
        // HTTP spans.
        "--gap-threshold-ms".into(),
        "1000".into(),
    ];
    args.extend(Chain::port_args(ports));
    let mut agent = Agent::start(&args, &run.agent_env);
    for _ in 0..N {
        let (status, body) = curl(&[&chain.order_url()]);
        assert_eq!(status, 200, "order failed: {body}");
    }
    // A clean stop flushes every finished trace.
    let status = agent.stop();
    assert!(
        status.success(),
        "seam exited with {status}:\n{}",
        agent.log()
    );
    assert!(!agent.log().contains("ERROR"), "{}", agent.log());
    let spans = phoenix.settle(run.project, 7 * N, Duration::from_secs(60));
    check(&spans, &chain, run.protocol);
}

fn summary(spans: &[StoredSpan]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} {} <- {} {} :{}",
                &s.trace_id[..8.min(s.trace_id.len())],
                s.span_id,
                s.parent_id,
                s.name,
                s.int("server.port").unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn check(spans: &[StoredSpan], chain: &Chain, protocol: &str) {
    let all = summary(spans);
    assert_eq!(spans.len(), 7 * N, "{protocol}: spans in Phoenix:\n{all}");
    let by_id: HashMap<&str, &StoredSpan> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    assert_eq!(by_id.len(), spans.len(), "span ids are unique:\n{all}");
    let mut traces: HashMap<&str, Vec<&StoredSpan>> = HashMap::new();
    for s in spans {
        traces.entry(&s.trace_id).or_default().push(s);
    }
    assert_eq!(traces.len(), N, "{protocol}: one trace per order:\n{all}");

    // Downstream service, its port, method and path.
    let downstream = [
        ("inventory", chain.inventory, "GET", "/check"),
        ("payment", chain.payment, "POST", "/charge"),
        ("shipping", chain.shipping, "POST", "/schedule"),
    ];
    for (trace_id, members) in &traces {
        assert_eq!(members.len(), 7, "trace {trace_id}:\n{all}");
        let children = |parent: &str| -> Vec<&StoredSpan> {
            members
                .iter()
                .filter(|s| s.parent_id == parent)
                .copied()
                .collect()
        };
        let roots = children("");
        assert_eq!(roots.len(), 1, "trace {trace_id} has one root:\n{all}");
        let root = roots[0];
        assert_eq!(root.name, "GET /api/order");
        assert_eq!(root.str("http.request.method"), Some("GET"));
        assert_eq!(root.str("url.path"), Some("/api/order"));
        assert_eq!(root.str("http.route"), Some("/api/order"));
        assert_eq!(root.int("http.response.status_code"), Some(200));
        assert_eq!(root.int("server.port"), Some(chain.order as i64));

        let calls = children(&root.span_id);
        assert_eq!(calls.len(), 3, "order makes three calls:\n{all}");
        for (service, port, method, path) in downstream {
            let call: Vec<&&StoredSpan> = calls
                .iter()
                .filter(|c| c.int("server.port") == Some(port as i64))
                .collect();
            assert_eq!(call.len(), 1, "order -> {service} in {trace_id}:\n{all}");
            let call = call[0];
            // The client side of the call, in order's process.
            assert_eq!(call.name, format!("{method} {path}"));
            assert_eq!(call.str("http.request.method"), Some(method));
            assert_eq!(call.str("url.path"), Some(path));
            assert_eq!(call.int("http.response.status_code"), Some(200));
            assert!(
                call.str("url.full")
                    .is_some_and(|u| u.starts_with(&format!("http://127.0.0.1:{port}{path}"))),
                "{call:?}"
            );
            assert!(call.str("http.route").is_none(), "a client span: {call:?}");

            // The server side, in the downstream service: a child of the
            // client span on the same connection.
            let served = children(&call.span_id);
            assert_eq!(served.len(), 1, "{service} serves the call:\n{all}");
            let s = served[0];
            assert_eq!(s.name, format!("{method} {path}"));
            assert_eq!(s.str("http.request.method"), Some(method));
            assert_eq!(s.str("url.path"), Some(path));
            assert_eq!(s.str("http.route"), Some(path));
            assert_eq!(s.int("http.response.status_code"), Some(200));
            assert_eq!(s.int("server.port"), Some(port as i64));
            assert_eq!(s.int("client.port"), call.int("network.local.port"));
            assert!(children(&s.span_id).is_empty(), "{service} calls no one");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_chain_in_phoenix_over_grpc_and_http() {
    let _serial = serial().await;
    let phoenix = Phoenix::start();

    // gRPC; the services name the project in their own environment, which
    // seam reads into each process's resource.
    drive(
        &phoenix,
        Run {
            protocol: "grpc",
            endpoint: phoenix.grpc_endpoint(),
            agent_env: vec![],
            service_env: vec![(
                "OTEL_RESOURCE_ATTRIBUTES",
                "openinference.project.name=seam-grpc".into(),
            )],
            project: "seam-grpc",
        },
    );
    // HTTP/protobuf to /v1/traces; the agent names the project in a header
    // from OTEL_EXPORTER_OTLP_HEADERS.
    drive(
        &phoenix,
        Run {
            protocol: "http/protobuf",
            endpoint: phoenix.http_endpoint(),
            agent_env: vec![("OTEL_EXPORTER_OTLP_HEADERS", "x-project-name=seam-http")],
            service_env: vec![],
            project: "seam-http",
        },
    );
    // Nothing went anywhere else.
    let stray = phoenix.spans("default");
    assert!(stray.is_empty(), "spans in `default`:\n{}", summary(&stray));
    assert_eq!(phoenix.spans("seam-grpc").len(), 7 * N);
}
