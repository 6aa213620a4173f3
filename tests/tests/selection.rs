//! Which processes are traced: everything (but seam and its local backend),
//! `--pid` with the workers a pre-fork server already has, `--exe-name`
//! matched when a process execs after the agent started, and connections
//! that were open before the agent started.
use std::{
    io::{BufRead as _, Write as _},
    process::Command,
    time::Duration,
};

use seam_tests::{
    agent::Agent,
    otlp::{Kind, Receiver},
    procs::{Proc, apps_dir, curl, free_port, gunicorn, gunicorn_with, scratch_dir, wait_port},
    serial,
    spans::SpanView,
};

fn paths(spans: &[SpanView]) -> Vec<String> {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} {:?} {}",
                s.service(),
                s.kind(),
                s.attr("url.path").unwrap_or_default()
            )
        })
        .collect()
}

/// With no selection flag every process is traced, except seam itself and
/// the local OTLP receiver it exports to (or its exports would be traced).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_traces_all_but_self_and_local_backend() {
    let _serial = serial().await;
    let receiver = Receiver::start(Kind::Http).await;
    let port = free_port();
    let _app = gunicorn(&apps_dir("basic"), "basic", port, 1, &[]);
    let mut agent = Agent::start(&Agent::otlp_args(&receiver), &[]);
    assert!(
        agent.log().contains("not tracing the local OTLP backend"),
        "{}",
        agent.log()
    );
    for _ in 0..3 {
        assert_eq!(curl(&[&format!("http://127.0.0.1:{port}/ok")]).0, 200);
    }
    let spans = receiver.settle(6, Duration::from_secs(20)).await;
    let ours: Vec<&SpanView> = spans
        .iter()
        .filter(|s| s.attr("url.path").as_deref() == Some("/ok"))
        .collect();
    assert_eq!(
        ours.iter()
            .filter(|s| s.is_server() && s.service() == "basic")
            .count(),
        3,
        "{:?}",
        paths(&spans)
    );
    assert_eq!(
        ours.iter()
            .filter(|s| s.is_client() && s.service() == "curl")
            .count(),
        3,
        "{:?}",
        paths(&spans)
    );
    assert!(
        spans
            .iter()
            .all(|s| s.attr("url.path").as_deref() != Some("/v1/traces")),
        "seam traced its own exports: {:?}",
        paths(&spans)
    );
    assert!(agent.stop().success());
}

/// `--pid` of a pre-fork server's master also covers the workers it forked
/// before the agent started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pid_selection_covers_existing_workers() {
    let _serial = serial().await;
    let receiver = Receiver::start(Kind::Grpc).await;
    let port = free_port();
    let app = gunicorn(&apps_dir("basic"), "basic", port, 2, &[]);
    let mut args = Agent::otlp_args(&receiver);
    args.extend(["--pid".to_string(), app.pid().to_string()]);
    let mut agent = Agent::start(&args, &[]);
    for _ in 0..4 {
        assert_eq!(curl(&[&format!("http://127.0.0.1:{port}/ok")]).0, 200);
    }
    let spans = receiver.settle(4, Duration::from_secs(20)).await;
    assert_eq!(spans.len(), 4, "{:?}", paths(&spans));
    assert!(
        spans
            .iter()
            .all(|s| s.is_server() && s.service() == "basic")
    );
    assert!(agent.stop().success());
}

/// `--exe-name` matches a process that execs after the agent started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exe_name_matches_processes_started_later() {
    let _serial = serial().await;
    let receiver = Receiver::start(Kind::Grpc).await;
    let python = String::from_utf8(
        Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let link = scratch_dir().join("seam-test-srv");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(python.trim(), &link).unwrap();

    let mut args = Agent::otlp_args(&receiver);
    args.extend(["--exe-name".to_string(), "seam-test-srv".to_string()]);
    let mut agent = Agent::start(&args, &[]);
    let port = free_port();
    let mut cmd = Command::new(&link);
    cmd.args([
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
    ])
    .current_dir(scratch_dir());
    let mut server = Proc::spawn("seam-test-srv", cmd);
    assert!(wait_port(port, Duration::from_secs(10)), "{}", server.log());
    assert!(
        agent.log().contains("tracing new process"),
        "{}",
        agent.log()
    );
    // Also a process with another name, which must not be traced.
    let other_port = free_port();
    let _other = gunicorn(&apps_dir("basic"), "basic", other_port, 1, &[]);
    assert_eq!(curl(&[&format!("http://127.0.0.1:{port}/")]).0, 200);
    assert_eq!(curl(&[&format!("http://127.0.0.1:{other_port}/ok")]).0, 200);
    let spans = receiver.settle(1, Duration::from_secs(20)).await;
    assert_eq!(spans.len(), 1, "{:?}", paths(&spans));
    assert!(spans[0].is_server());
    assert_eq!(spans[0].service(), "server");
    assert_eq!(spans[0].attr("url.path").as_deref(), Some("/"));
    server.stop();
    assert!(agent.stop().success());
}

/// A keep-alive connection opened before the agent started is traced, with
/// its addresses from the start-up /proc scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_older_than_the_agent_is_traced() {
    let _serial = serial().await;
    let receiver = Receiver::start(Kind::Grpc).await;
    let port = free_port();
    let _app = gunicorn_with(
        &apps_dir("basic"),
        "basic",
        port,
        &["-w", "1", "--threads", "4", "--keep-alive", "120"],
        &[],
    );
    let mut cmd = Command::new("python3");
    cmd.arg(apps_dir("clients").join("keepalive.py"))
        .arg(format!("http://127.0.0.1:{port}/ok"));
    let (client, mut to_client, mut from_client) = Proc::spawn_interactive("keepalive", cmd);
    let mut ask = |n: u32| {
        writeln!(to_client, "{n}").unwrap();
        let mut line = String::new();
        from_client.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "done 200");
    };
    ask(1);

    let mut args = Agent::otlp_args(&receiver);
    args.extend([
        "--port".to_string(),
        port.to_string(),
        "--pid".to_string(),
        client.pid().to_string(),
    ]);
    let mut agent = Agent::start(&args, &[]);
    ask(3);
    let spans = receiver.settle(6, Duration::from_secs(20)).await;
    assert_eq!(spans.len(), 6, "{:?}", paths(&spans));
    let servers: Vec<&SpanView> = spans.iter().filter(|s| s.is_server()).collect();
    let clients: Vec<&SpanView> = spans.iter().filter(|s| s.is_client()).collect();
    assert_eq!((servers.len(), clients.len()), (3, 3));
    // All three on the one connection, addresses known on both ends.
    let client_port = clients[0]
        .int("network.local.port")
        .expect("client local port");
    for c in &clients {
        assert_eq!(c.service(), "keepalive");
        assert_eq!(c.int("network.local.port"), Some(client_port));
        assert_eq!(c.int("server.port"), Some(port as i64));
    }
    for s in &servers {
        assert_eq!(s.int("client.port"), Some(client_port));
        assert_eq!(s.int("server.port"), Some(port as i64));
        // Same-host linking works for old connections too.
        assert!(clients.iter().any(|c| c.span_id() == s.parent_id()));
    }
    drop(to_client);
    assert!(agent.stop().success());
}

/// With a selection, every exec on the host is still reported (to match
/// `--exe-name`) and read; exits must free that too, or the agent grows with
/// every short-lived process of the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untraced_short_lived_processes_leave_nothing_behind() {
    let _serial = serial().await;
    let receiver = Receiver::start(Kind::Grpc).await;
    let mut args = Agent::otlp_args(&receiver);
    args.extend(["--port".to_string(), free_port().to_string()]);
    let mut agent = Agent::start(&args, &[]);
    let metric = |agent: &Agent, name: &str| -> u64 {
        let (_, text) = agent.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} on /metrics:\n{text}"))
    };
    // Per-probe counters appear once the agent first reads them from the
    // kernel; until then none have been counted.
    let events = |agent: &Agent| {
        let (_, text) = agent.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix("seam_probe_events_total{probe=\"process\"} "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    const EXECS: u64 = 300;
    let seen_before = events(&agent);
    let status = Command::new("sh")
        .args([
            "-c",
            &format!("for i in $(seq {EXECS}); do /bin/true; done"),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    // Wait until the probes reported every exec, then for two refreshes of
    // the gauge (the connection stage updates it every second).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while events(&agent) < seen_before + EXECS {
        assert!(
            std::time::Instant::now() < deadline,
            "the probes reported {} of {EXECS} execs",
            events(&agent) - seen_before
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let held = metric(&agent, "seam_traced_processes");
    assert!(
        held < EXECS / 2,
        "{held} processes still held after {EXECS} short-lived ones exited"
    );
    assert!(receiver.spans().is_empty());
    assert!(agent.stop().success());
}
