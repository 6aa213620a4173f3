//! The agent's life cycle around running applications: stopping (SIGTERM in
//! each attach/detach cycle, SIGKILL before a restart) leaves no BPF program, map, link, cgroup attachment or pin
//! behind; traced applications keep serving through repeated attach and
//! detach; a keep-alive connection is traced again by an agent started after
//! one was killed; and short-lived processes get their own pid and service,
//! with per-process state freed once they exit.
//!
//! Knobs for `cargo xtask soak`: `SEAM_CYCLES` (attach/detach cycles),
//! `SEAM_CHURN_CLIENTS` (curl processes), `SEAM_CHURN_MINUTES` (keep
//! churning this long, sampling memory every 10 s).
use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead as _, Write as _},
    process::Command,
    time::{Duration, Instant},
};

use seam_tests::{
    agent::Agent,
    bpf::BpfObjects,
    otlp::{Kind, Receiver},
    procs::{Proc, apps_dir, gunicorn_with},
    serial,
    servers::Nginx,
    spans::SpanView,
};

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Waits until nothing `created` is still loaded; returns what is left.
fn leftovers(created: &BpfObjects, timeout: Duration) -> BpfObjects {
    let deadline = Instant::now() + timeout;
    loop {
        // Programs and maps are freed after an RCU grace period.
        let left = BpfObjects::snapshot().common(created);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Snapshots around one agent's life: what it created, and what is left
/// once it stopped.
struct BpfWatch {
    before: BpfObjects,
    during: BpfObjects,
    created: BpfObjects,
}

impl BpfWatch {
    fn before() -> BpfObjects {
        BpfObjects::snapshot()
    }

    /// With the agent running: it must have loaded programs, maps and links,
    /// attached to a cgroup when injecting, and pinned nothing.
    fn during(before: BpfObjects, cgroup: bool) -> BpfWatch {
        let during = BpfObjects::snapshot();
        let created = during.minus(&before);
        let [progs, maps, links, cgroups, pins] = created.counts();
        assert!(progs > 10 && maps > 10 && links > 10, "{created:?}");
        assert_eq!(cgroups >= 1, cgroup, "cgroup attachments: {created:?}");
        assert_eq!(pins, 0, "the agent pins nothing: {created:?}");
        BpfWatch {
            before,
            during,
            created,
        }
    }

    /// After the agent stopped: none of what it created is left, and no pin
    /// appeared. Returns a line of figures for the report.
    fn after(&self, how: &str) -> String {
        let left = leftovers(&self.created, Duration::from_secs(10));
        assert!(left.is_empty(), "left behind after {how}: {left:?}");
        let after = BpfObjects::snapshot();
        assert!(after.minus(&self.before).pins.is_empty());
        format!(
            "{how}: bpf (progs, maps, links, cgroup attachments, pins) before {:?} during {:?} \
             after {:?}; created {:?}, left {:?}",
            self.before.counts(),
            self.during.counts(),
            after.counts(),
            self.created.counts(),
            left.counts()
        )
    }
}

/// A traced client (with traceparent injection) and its server go on
/// without one failed request while agents start and stop around them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applications_keep_serving_through_attach_and_detach() {
    let _serial = serial().await;
    let cycles = knob("SEAM_CYCLES", 3);
    let port = seam_tests::procs::free_port();
    let _app = gunicorn_with(
        &apps_dir("basic"),
        "basic",
        port,
        &["-w", "1", "--threads", "4", "--keep-alive", "120"],
        &[],
    );
    let mut cmd = Command::new("python3");
    cmd.arg(apps_dir("clients").join("steady.py"))
        .arg(format!("http://127.0.0.1:{port}/ok"));
    let (client, to_client, mut from_client) = Proc::spawn_interactive("steady", cmd);
    let mut line = String::new();
    from_client.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "{}", client.log());

    let receiver = Receiver::start(Kind::Grpc).await;
    let mut args = Agent::otlp_args(&receiver);
    args.extend([
        "--port".into(),
        port.to_string(),
        "--pid".into(),
        client.pid().to_string(),
        "--inject-traceparent".into(),
    ]);
    let mut traced = Vec::new();
    for cycle in 0..cycles {
        let seen = receiver.spans().len();
        let before = BpfWatch::before();
        let mut agent = Agent::start(&args, &[]);
        assert!(
            agent.log().contains("traceparent injection on"),
            "{}",
            agent.log()
        );
        let watch = BpfWatch::during(before, true);
        // Each agent traces the traffic: client and server spans arrive.
        let spans = receiver
            .wait_until(Duration::from_secs(20), |s| {
                let new = &s[seen.min(s.len())..];
                new.iter().any(SpanView::is_client) && new.iter().any(SpanView::is_server)
            })
            .await;
        let new = spans.len() - seen;
        assert!(new >= 2, "cycle {cycle}: no spans\n{}", agent.log());
        assert!(agent.stop().success(), "cycle {cycle}: {}", agent.log());
        println!("{}", watch.after(&format!("cycle {cycle}, SIGTERM")));
        traced.push(new);
        // The applications run untraced for a moment between agents.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(to_client);
    let mut line = String::new();
    from_client.read_line(&mut line).unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    let (sent, failed): (u64, u64) = match words[..] {
        ["sent", s, "failed", f] => (s.parse().unwrap(), f.parse().unwrap()),
        _ => panic!("client said {line:?}: {}", client.log()),
    };
    println!(
        "attach/detach: {cycles} cycles, spans per cycle {traced:?}, requests sent {sent}, failed {failed}"
    );
    println!(
        "soak-result cycles sent={sent} failed={failed} spans={} lost=0 resyncs=0 rss_min=0 rss_max=0",
        traced.iter().sum::<usize>()
    );
    assert_eq!(failed, 0, "{}", client.log());
    assert!(sent > 100 * cycles, "only {sent} requests");
}

/// A keep-alive connection used before an agent was killed, while no agent
/// ran, and after a new one started: the new agent traces it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connection_is_traced_after_sigkill_and_restart() {
    let _serial = serial().await;
    let port = seam_tests::procs::free_port();
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
    let args = |receiver: &Receiver| {
        let mut args = Agent::otlp_args(receiver);
        args.extend([
            "--port".to_string(),
            port.to_string(),
            "--pid".to_string(),
            client.pid().to_string(),
        ]);
        args
    };

    let first = Receiver::start(Kind::Grpc).await;
    let objects = BpfWatch::before();
    let mut agent = Agent::start(&args(&first), &[]);
    let watch = BpfWatch::during(objects, false);
    ask(2);
    let before = first.settle(4, Duration::from_secs(20)).await;
    assert_eq!(before.len(), 4);
    agent.proc.stop_with(libc::SIGKILL, Duration::from_secs(10));
    // The kernel frees fd-based links, programs and maps with the process.
    println!("{}", watch.after("SIGKILL"));
    // No agent: the connection carries on untraced.
    ask(2);

    let second = Receiver::start(Kind::Grpc).await;
    let mut agent = Agent::start(&args(&second), &[]);
    ask(3);
    let after = second.settle(6, Duration::from_secs(20)).await;
    assert_eq!(after.len(), 6, "{}", agent.log());
    let port_of = |spans: &[SpanView]| -> BTreeSet<Option<i64>> {
        spans
            .iter()
            .filter(|s| s.is_client())
            .map(|s| s.int("network.local.port"))
            .collect()
    };
    let one_connection = port_of(&before);
    assert_eq!(one_connection.len(), 1);
    assert!(one_connection.iter().all(Option::is_some));
    assert_eq!(port_of(&after), one_connection, "not the same connection");
    let clients: Vec<&SpanView> = after.iter().filter(|s| s.is_client()).collect();
    let servers: Vec<&SpanView> = after.iter().filter(|s| s.is_server()).collect();
    assert_eq!((clients.len(), servers.len()), (3, 3));
    for s in &servers {
        assert_eq!(s.attr("url.path").as_deref(), Some("/ok"));
        assert_eq!(s.int("http.response.status_code"), Some(200));
        assert!(clients.iter().any(|c| c.span_id() == s.parent_id()));
    }
    drop(to_client);
    assert!(agent.stop().success());
}

/// Runs one curl per path, `parallel` at a time; returns each path's pid.
fn curls(port: u16, paths: &[String], parallel: usize) -> Vec<(String, u32)> {
    let mut pids = Vec::new();
    for batch in paths.chunks(parallel) {
        let children: Vec<_> = batch
            .iter()
            .map(|p| {
                let child = Command::new("curl")
                    .args([
                        "-s",
                        "-o",
                        "/dev/null",
                        "--max-time",
                        "10",
                        "-w",
                        "%{http_code}",
                    ])
                    .arg(format!("http://127.0.0.1:{port}{p}"))
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .expect("curl runs");
                (p.clone(), child)
            })
            .collect();
        for (p, child) in children {
            let pid = child.id();
            let out = child.wait_with_output().unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "curl {p}");
            pids.push((p, pid));
        }
    }
    pids
}

/// Spawns `program` with pid `pid` if it can (by setting the kernel's last
/// pid just below it); `None` if another process took it first.
fn spawn_with_pid(pid: u32, cmd: &mut Command) -> Option<std::process::Child> {
    std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).ok()?;
    let mut child = cmd.spawn().ok()?;
    if child.id() == pid {
        Some(child)
    } else {
        let _ = child.wait();
        None
    }
}

/// Waits until `metric` reads `want` (it is refreshed every second).
async fn gauge_returns(agent: &Agent, metric: &str, want: u64) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = agent.metric(metric);
        if now == Some(want) || Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Hundreds of short-lived curls (and one process given the pid of an exited
/// curl): each client span names its own process, and per-process state and
/// memory return to where they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_churn_keeps_pids_right_and_frees_state() {
    let _serial = serial().await;
    let clients = knob("SEAM_CHURN_CLIENTS", 300) as usize;
    let minutes = knob("SEAM_CHURN_MINUTES", 0);
    let nginx = Nginx::start(r#"listen 127.0.0.1:{port}; location / { return 200 "$uri\n"; }"#);
    let receiver = Receiver::start(Kind::Grpc).await;
    let mut args = Agent::otlp_args(&receiver);
    args.extend([
        "--port".into(),
        nginx.port.to_string(),
        "--exe-name".into(),
        "curl,wget".into(),
    ]);
    let agent = Agent::start(&args, &[]);

    // Warm-up: caches, allocator and channels reach their working size.
    let warm: Vec<String> = (0..40).map(|i| format!("/warm/{i}")).collect();
    curls(nginx.port, &warm, 4);
    receiver
        .wait_until(Duration::from_secs(30), |s| s.len() >= 80)
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let processes = agent.metric("seam_traced_processes").expect("gauge");
    let connections = agent.metric("seam_connections_open").expect("gauge");
    let rss_warm = agent.rss_kib();
    let mut rss = vec![rss_warm];

    let mut round = 0;
    let started = Instant::now();
    let mut last_sample = Instant::now();
    let mut expected: BTreeMap<String, u32> = BTreeMap::new();
    loop {
        let paths: Vec<String> = (0..clients)
            .map(|i| format!("/churn/{round}/{i}"))
            .collect();
        for chunk in paths.chunks(50) {
            expected.extend(curls(nginx.port, chunk, 4));
            if last_sample.elapsed() >= Duration::from_secs(10) {
                rss.push(agent.rss_kib());
                last_sample = Instant::now();
            }
        }
        round += 1;
        if started.elapsed() >= Duration::from_secs(minutes * 60) {
            break;
        }
    }

    // A new process given the pid of an exited curl is not taken for it.
    let reused = expected.values().rev().copied().find_map(|pid| {
        let mut cmd = Command::new("wget");
        cmd.args(["-q", "-O", "/dev/null"])
            .arg(format!("http://127.0.0.1:{}/reuse/{pid}", nginx.port));
        spawn_with_pid(pid, &mut cmd).map(|mut child| {
            assert!(child.wait().unwrap().success());
            pid
        })
    });
    let reused = reused.expect("no curl pid could be reused");

    let want = 2 * (expected.len() + 1) + 80;
    let spans = receiver.settle(want, Duration::from_secs(120)).await;
    let ours = |prefix: &str, server: bool| -> Vec<&SpanView> {
        spans
            .iter()
            .filter(|s| s.is_server() == server)
            .filter(|s| s.attr("url.path").is_some_and(|p| p.starts_with(prefix)))
            .collect()
    };
    let client_spans = ours("/churn/", false);
    let server_spans = ours("/churn/", true);
    assert_eq!(client_spans.len(), expected.len());
    assert_eq!(server_spans.len(), expected.len());
    let mut wrong = Vec::new();
    for s in &client_spans {
        let path = s.attr("url.path").unwrap();
        let pid = s.resource_attr("process.pid");
        if pid != expected.get(&path).map(u32::to_string)
            || s.service() != "curl"
            || s.resource_attr("process.executable.name").as_deref() != Some("curl")
        {
            wrong.push(format!("{path}: pid {pid:?} service {}", s.service()));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    let curl_pids: BTreeSet<String> = expected.values().map(u32::to_string).collect();
    for s in &server_spans {
        assert_eq!(s.service(), "nginx");
        assert!(!curl_pids.contains(&s.resource_attr("process.pid").unwrap_or_default()));
    }
    let reuse = ours("/reuse/", false);
    assert_eq!(reuse.len(), 1);
    assert_eq!(
        reuse[0].resource_attr("process.pid"),
        Some(reused.to_string())
    );
    assert_eq!(reuse[0].service(), "wget");

    // Per-process state is freed: back to the warm-up figures.
    let processes_after = gauge_returns(&agent, "seam_traced_processes", processes).await;
    let connections_after = gauge_returns(&agent, "seam_connections_open", connections).await;
    let rss_after = agent.rss_kib();
    rss.push(rss_after);
    let (rss_min, rss_max) = (
        rss.iter().min().copied().unwrap_or(0),
        rss.iter().max().copied().unwrap_or(0),
    );
    println!(
        "churn: {} curls in {:.0?}; traced processes {processes} -> {processes_after:?}, \
         connections {connections} -> {connections_after:?}; RSS KiB warm {rss_warm}, after {rss_after}, min {rss_min}, max {rss_max}",
        expected.len(),
        started.elapsed()
    );
    // One sample a minute (every 6th), to see a trend in long runs.
    let by_minute: Vec<String> = rss
        .iter()
        .step_by(6)
        .map(|k| (k / 1024).to_string())
        .collect();
    println!("churn: RSS MiB by minute: {}", by_minute.join(" "));
    println!(
        "soak-result churn sent={} failed=0 spans={} lost={} resyncs=0 rss_min={rss_min} rss_max={rss_max}",
        expected.len(),
        client_spans.len() + server_spans.len(),
        agent.metric("seam_probe_events_lost_total").unwrap_or(0)
    );
    assert_eq!(processes_after, Some(processes));
    assert_eq!(connections_after, Some(connections));
    // Memory settles after warm-up: no growth with the number of processes.
    assert!(
        rss_max <= rss_warm + 16 * 1024,
        "RSS grew from {rss_warm} KiB to {rss_max} KiB"
    );
}
