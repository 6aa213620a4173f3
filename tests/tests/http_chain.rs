//! The four-service checkout chain under real probes, exported over OTLP
//! gRPC and HTTP/protobuf to a receiver inside the test.
use std::{collections::HashMap, time::Duration};

use seam_tests::{
    agent::Agent,
    checkout::Chain,
    otlp::{Kind, Receiver},
    procs::curl,
    serial,
    spans::{SpanView, of},
};

async fn run_chain(kind: Kind, n: usize, agent_first: bool) {
    let _serial = serial().await;
    let receiver = Receiver::start(kind).await;
    let ports = Chain::ports();
    let mut args = Agent::otlp_args(&receiver);
    args.extend(Chain::port_args(ports));
    let (mut agent, chain) = if agent_first {
        let agent = Agent::start(&args, &[]);
        (agent, Chain::start(ports, 2, &[]))
    } else {
        let chain = Chain::start(ports, 2, &[]);
        (Agent::start(&args, &[]), chain)
    };

    for _ in 0..n {
        let (status, body) = curl(&[&chain.order_url()]);
        assert_eq!(status, 200, "order failed: {body}");
    }
    let spans = receiver.settle(7 * n, Duration::from_secs(30)).await;
    let status = agent.stop();
    assert!(
        status.success(),
        "seam exited with {status}:\n{}",
        agent.log()
    );
    assert!(!agent.log().contains("ERROR"), "{}", agent.log());
    check_chain(&spans, &chain, n);
}

fn attr(s: &SpanView, k: &str) -> String {
    s.attr(k)
        .unwrap_or_else(|| panic!("span {} lacks {k}: {:?}", s.span.name, s.span.attributes))
}

fn check_chain(spans: &[SpanView], chain: &Chain, n: usize) {
    let order_srv = of(spans, "order", true);
    let order_cli = of(spans, "order", false);
    let summary: Vec<String> = spans
        .iter()
        .map(|s| {
            format!(
                "{} {:?} {} {}",
                s.service(),
                s.kind(),
                s.span.name,
                s.attr("url.path").unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(order_srv.len(), n, "order server spans: {summary:#?}");
    assert_eq!(order_cli.len(), 3 * n, "order client spans: {summary:#?}");
    for svc in ["inventory", "payment", "shipping"] {
        assert_eq!(
            of(spans, svc, true).len(),
            n,
            "{svc} server spans: {summary:#?}"
        );
        assert!(of(spans, svc, false).is_empty(), "{svc} made client calls");
    }
    assert_eq!(spans.len(), 7 * n, "no other spans: {summary:#?}");

    for s in &order_srv {
        assert_eq!(s.span.name, "GET /api/order");
        assert_eq!(attr(s, "http.route"), "/api/order");
        assert_eq!(attr(s, "http.request.method"), "GET");
        assert_eq!(attr(s, "url.path"), "/api/order");
        assert_eq!(s.attr("url.query"), None);
        assert_eq!(attr(s, "url.scheme"), "http");
        assert_eq!(s.int("http.response.status_code"), Some(200));
        assert_eq!(attr(s, "server.address"), "127.0.0.1");
        assert_eq!(s.int("server.port"), Some(chain.order as i64));
        assert_eq!(attr(s, "client.address"), "127.0.0.1");
        assert_eq!(attr(s, "network.peer.address"), "127.0.0.1");
        assert_eq!(s.int("client.port"), s.int("network.peer.port"));
        assert!(s.int("client.port").unwrap() > 0);
        assert_eq!(attr(s, "network.protocol.version"), "1.1");
        assert!(attr(s, "user_agent.original").starts_with("curl/"));
        assert!(!s.is_error());
        assert!(
            s.parent_id().is_empty(),
            "curl is not traced, so order is a root"
        );
        assert_eq!(
            s.resource_attr("telemetry.sdk.name").as_deref(),
            Some("seam")
        );
        assert!(s.resource_attr("process.pid").is_some());
        assert!(s.resource_attr("host.name").is_some());
    }

    let expected: HashMap<&str, (&str, &str, Option<&str>, u16)> = HashMap::from([
        (
            "inventory",
            ("GET", "/check", Some("item=REDACTED"), chain.inventory),
        ),
        ("payment", ("POST", "/charge", None, chain.payment)),
        ("shipping", ("POST", "/schedule", None, chain.shipping)),
    ]);
    let by_id: HashMap<String, &SpanView> = spans.iter().map(|s| (s.span_id(), s)).collect();
    for (svc, (method, path, query, port)) in &expected {
        let clients: Vec<&&SpanView> = order_cli
            .iter()
            .filter(|c| c.int("server.port") == Some(*port as i64))
            .collect();
        assert_eq!(clients.len(), n, "order -> {svc} client spans");
        for c in &clients {
            assert_eq!(c.span.name, format!("{method} {path}"));
            assert_eq!(attr(c, "url.template"), *path);
            assert_eq!(attr(c, "http.request.method"), *method);
            assert_eq!(attr(c, "url.path"), *path);
            assert_eq!(c.attr("url.query").as_deref(), *query);
            assert_eq!(attr(c, "server.address"), "127.0.0.1");
            assert_eq!(attr(c, "network.peer.address"), "127.0.0.1");
            assert_eq!(c.int("network.peer.port"), Some(*port as i64));
            let full = format!(
                "http://127.0.0.1:{port}{path}{}",
                query.map(|q| format!("?{q}")).unwrap_or_default()
            );
            assert_eq!(attr(c, "url.full"), full);
            assert_eq!(c.int("http.response.status_code"), Some(200));
            assert!(attr(c, "user_agent.original").starts_with("python-requests/"));
            // Thread linking: the client call is a child of the order request.
            let parent = by_id.get(&c.parent_id()).expect("client span has a parent");
            assert!(parent.is_server() && parent.service() == "order");
            assert_eq!(parent.trace_id(), c.trace_id());
        }
        for s in of(spans, svc, true) {
            assert_eq!(s.span.name, format!("{method} {path}"));
            assert_eq!(attr(s, "http.route"), *path);
            assert_eq!(attr(s, "http.request.method"), *method);
            assert_eq!(attr(s, "url.path"), *path);
            assert_eq!(s.int("server.port"), Some(*port as i64));
            assert_eq!(s.int("http.response.status_code"), Some(200));
            // Tuple linking: the server span's parent is the client span on
            // the same connection, whose local end is the server's peer.
            let client = by_id
                .get(&s.parent_id())
                .expect("downstream server span has a parent");
            assert!(client.is_client() && client.service() == "order");
            assert_eq!(
                s.attr("client.address"),
                client.attr("network.local.address")
            );
            assert_eq!(s.int("client.port"), client.int("network.local.port"));
            assert_eq!(s.trace_id(), client.trace_id());
            assert!(s.span.start_time_unix_nano >= client.span.start_time_unix_nano);
            assert!(s.span.end_time_unix_nano <= client.span.end_time_unix_nano);
        }
    }

    // Each order is one trace of exactly 7 spans.
    let mut traces: HashMap<String, usize> = HashMap::new();
    for s in spans {
        *traces.entry(s.trace_id()).or_default() += 1;
    }
    assert_eq!(traces.len(), n);
    assert!(traces.values().all(|c| *c == 7), "{traces:?}");
}

/// Services started before the agent (found by the start-up scan), gRPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_over_grpc_services_first() {
    run_chain(Kind::Grpc, 20, false).await;
}

/// Agent started before the services (their listen() and forked workers are
/// picked up by the probes), HTTP/protobuf.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_over_http_agent_first() {
    run_chain(Kind::Http, 10, true).await;
}
