//! Protocols beyond HTTP/1 with real servers and clients: PostgreSQL and
//! Redis calls of a Flask service, gRPC, and HTTP/2 without TLS.
use std::{
    io::{BufRead as _, Write as _},
    process::Command,
    time::Duration,
};

use seam_tests::{
    agent::Agent,
    otlp::{Kind, Receiver},
    procs::{Proc, apps_dir, curl, free_port, gunicorn, wait_port},
    serial,
    servers::{Nginx, Postgres, Redis},
    spans::SpanView,
};

fn by_id<'a>(spans: &'a [SpanView], id: &str) -> Option<&'a SpanView> {
    spans.iter().find(|s| s.span_id() == id)
}

fn names(spans: &[SpanView]) -> Vec<String> {
    spans
        .iter()
        .map(|s| format!("{} {:?} {}", s.service(), s.kind(), s.span.name))
        .collect()
}

/// A Flask service's SQL queries are client spans under its request spans,
/// with the query text free of literals, and a failing statement is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_queries_under_http_requests() {
    let _serial = serial().await;
    let receiver = Receiver::start(Kind::Grpc).await;
    let pg = Postgres::start();
    let port = free_port();
    let _app = gunicorn(&apps_dir("db"), "dbapp", port, 1, &[("PG_DSN", pg.dsn())]);
    // One request before tracing: the worker's first request imports modules
    // lazily (encodings.idna), and on a loaded machine reading their files
    // is slow enough to become a file-read span of its own.
    assert_eq!(curl(&[&format!("http://127.0.0.1:{port}/pg")]).0, 200);
    let mut args = Agent::otlp_args(&receiver);
    args.extend(["--port".into(), port.to_string()]);
    let mut agent = Agent::start(&args, &[]);
    for _ in 0..3 {
        assert_eq!(curl(&[&format!("http://127.0.0.1:{port}/pg")]).0, 200);
    }
    assert_eq!(curl(&[&format!("http://127.0.0.1:{port}/pg-error")]).0, 500);
    let spans = receiver.settle(8, Duration::from_secs(20)).await;
    assert!(agent.stop().success());
    let db: Vec<&SpanView> = spans
        .iter()
        .filter(|s| s.attr("db.system.name").as_deref() == Some("postgresql"))
        .collect();
    assert_eq!(db.len(), 4, "{:#?}", names(&spans));
    assert_eq!(spans.len(), 8, "{:#?}", names(&spans));
    for s in &db {
        assert!(s.is_client());
        assert_eq!(s.attr("db.namespace").as_deref(), Some("shop"));
        assert_eq!(s.int("server.port"), Some(pg.port as i64));
        let parent = by_id(&spans, &s.parent_id()).expect("db span has a parent");
        assert!(parent.is_server() && parent.service() == "dbapp");
        assert_eq!(parent.trace_id(), s.trace_id());
    }
    let ok: Vec<&&SpanView> = db.iter().filter(|s| !s.is_error()).collect();
    assert_eq!(ok.len(), 3);
    for s in ok {
        assert_eq!(s.span.name, "SELECT shop");
        assert_eq!(s.attr("db.operation.name").as_deref(), Some("SELECT"));
        assert_eq!(
            s.attr("db.query.text").as_deref(),
            Some("SELECT id, name FROM items WHERE name = ? AND id = ?")
        );
        assert_eq!(s.int("db.response.returned_rows"), Some(1));
    }
    let failed = db.iter().find(|s| s.is_error()).expect("failing statement");
    assert_eq!(
        failed.attr("db.response.status_code").as_deref(),
        Some("42P01")
    );
    assert_eq!(failed.attr("error.type").as_deref(), Some("42P01"));
    assert_eq!(
        failed.attr("db.query.text").as_deref(),
        Some("SELECT * FROM missing_table WHERE secret = ?")
    );
    for p in receiver.raw_payloads() {
        assert!(
            !p.windows(12).any(|w| w == b"SQL-SECRET-1"),
            "a literal leaked"
        );
    }
}

/// Redis commands (single and pipelined) are client spans without values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_commands_under_http_requests() {
    let _serial = serial().await;
    let receiver = Receiver::start(Kind::Grpc).await;
    let redis = Redis::start();
    let port = free_port();
    let _app = gunicorn(
        &apps_dir("db"),
        "dbapp",
        port,
        1,
        &[("REDIS_PORT", redis.port.to_string())],
    );
    let mut args = Agent::otlp_args(&receiver);
    args.extend(["--port".into(), port.to_string()]);
    let mut agent = Agent::start(&args, &[]);
    let n = 3;
    for _ in 0..n {
        assert_eq!(curl(&[&format!("http://127.0.0.1:{port}/redis")]).0, 200);
    }
    let spans = receiver
        .wait_until(Duration::from_secs(20), |s| {
            s.iter().filter(|s| s.span.name == "INCRBY").count() >= 2 * n
        })
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spans = if receiver.spans().len() > spans.len() {
        receiver.spans()
    } else {
        spans
    };
    assert!(agent.stop().success());
    let count = |name: &str| spans.iter().filter(|s| s.span.name == name).count();
    assert_eq!(count("SET"), n, "{:#?}", names(&spans));

    assert_eq!(count("GET"), n);
    // redis-py sends INCR as INCRBY.
    assert_eq!(count("INCRBY"), 2 * n);
    for s in spans
        .iter()
        .filter(|s| s.attr("db.system.name").as_deref() == Some("redis"))
    {
        assert!(s.is_client());
        assert_eq!(
            s.attr("db.operation.name").as_deref(),
            Some(s.span.name.as_str())
        );
        assert_eq!(s.int("server.port"), Some(redis.port as i64));
        let parent = by_id(&spans, &s.parent_id()).expect("redis span has a parent");
        assert_eq!(parent.service(), "dbapp");
    }
    for p in receiver.raw_payloads() {
        assert!(
            !p.windows(18).any(|w| w == b"REDIS-SECRET-VALUE"),
            "a value leaked"
        );
    }
}

/// gRPC client and server: names, rpc attributes, status codes, error
/// status by side, and one trace per call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_have_rpc_attributes() {
    let _serial = serial().await;
    let receiver = Receiver::start(Kind::Grpc).await;
    let port = free_port();
    let mut serve = Command::new("python3");
    serve
        .arg(apps_dir("grpc").join("greeter.py"))
        .args(["serve", &port.to_string()]);
    let mut server = Proc::spawn("greeter", serve);
    assert!(wait_port(port, Duration::from_secs(20)), "{}", server.log());
    let mut client_cmd = Command::new("python3");
    client_cmd
        .arg(apps_dir("grpc").join("greeter.py"))
        .args(["client", &port.to_string()]);
    let (client, mut to, mut from) = Proc::spawn_interactive("greeter-client", client_cmd);
    let mut args = Agent::otlp_args(&receiver);
    args.extend([
        "--port".into(),
        port.to_string(),
        "--pid".into(),
        client.pid().to_string(),
    ]);
    let mut agent = Agent::start(&args, &[]);
    for name in ["ada", "bob", "cy", "missing"] {
        writeln!(to, "{name}").unwrap();
        let mut line = String::new();
        from.read_line(&mut line).unwrap();
        assert_eq!(
            line.trim(),
            if name == "missing" { "NOT_FOUND" } else { "ok" }
        );
    }
    let spans = receiver.settle(8, Duration::from_secs(20)).await;
    assert!(agent.stop().success());
    server.stop();
    assert_eq!(spans.len(), 8, "{:#?}", names(&spans));
    for s in &spans {
        assert_eq!(s.span.name, "demo.Greeter/SayHello");
        assert_eq!(s.attr("rpc.system").as_deref(), Some("grpc"));
        assert_eq!(s.attr("rpc.service").as_deref(), Some("demo.Greeter"));
        assert_eq!(s.attr("rpc.method").as_deref(), Some("SayHello"));
        assert_eq!(s.attr("network.protocol.version").as_deref(), Some("2"));
    }
    let status = |s: &SpanView| s.int("rpc.grpc.status_code");
    let clients: Vec<&SpanView> = spans.iter().filter(|s| s.is_client()).collect();
    let servers: Vec<&SpanView> = spans.iter().filter(|s| s.is_server()).collect();
    assert_eq!((clients.len(), servers.len()), (4, 4));
    assert_eq!(clients.iter().filter(|s| status(s) == Some(0)).count(), 3);
    assert_eq!(
        clients
            .iter()
            .filter(|s| status(s) == Some(5) && s.is_error())
            .count(),
        1
    );
    // NOT_FOUND is the caller's problem: not a server error.
    assert!(servers.iter().all(|s| !s.is_error()));
    assert_eq!(servers.iter().filter(|s| status(s) == Some(5)).count(), 1);
    for s in &servers {
        let parent = by_id(&spans, &s.parent_id()).expect("server span linked to its client span");
        assert!(parent.is_client());
        assert_eq!(status(parent), status(s));
    }
}

/// HTTP/2 with prior knowledge (h2c): curl against nginx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_requests_are_spans_with_version_2() {
    let _serial = serial().await;
    let receiver = Receiver::start(Kind::Grpc).await;
    let nginx = Nginx::start(
        "  listen 127.0.0.1:{port} http2;\n  location /hello { return 200 \"hello\\n\"; }\n  location /teapot { return 418; }\n",
    );
    let mut args = Agent::otlp_args(&receiver);
    args.extend([
        "--port".into(),
        nginx.port.to_string(),
        "--exe-name".into(),
        "curl".into(),
    ]);
    let mut agent = Agent::start(&args, &[]);
    let url = |p: &str| format!("http://127.0.0.1:{}{p}", nginx.port);
    assert_eq!(
        curl(&["--http2-prior-knowledge", &url("/hello")]),
        (200, "hello\n".to_string())
    );
    assert_eq!(curl(&["--http2-prior-knowledge", &url("/teapot")]).0, 418);
    let spans = receiver.settle(4, Duration::from_secs(20)).await;
    assert!(agent.stop().success());
    assert_eq!(spans.len(), 4, "{:#?}", names(&spans));
    for s in &spans {
        assert_eq!(s.attr("network.protocol.version").as_deref(), Some("2"));
        assert_eq!(s.attr("http.request.method").as_deref(), Some("GET"));
    }
    let server = |path: &str| {
        spans
            .iter()
            .find(|s| s.is_server() && s.attr("url.path").as_deref() == Some(path))
            .unwrap()
    };
    let client = |path: &str| {
        spans
            .iter()
            .find(|s| s.is_client() && s.attr("url.path").as_deref() == Some(path))
            .unwrap()
    };
    assert_eq!(server("/hello").int("http.response.status_code"), Some(200));
    assert_eq!(server("/hello").service(), "nginx");
    assert_eq!(client("/hello").service(), "curl");
    assert_eq!(server("/hello").parent_id(), client("/hello").span_id());
    assert_eq!(
        client("/teapot").int("http.response.status_code"),
        Some(418)
    );
    assert!(client("/teapot").is_error() && !server("/teapot").is_error());
}
