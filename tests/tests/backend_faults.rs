//! The OTLP backend down, refusing, rejecting or slow: the agent keeps
//! tracing, holds what it can in a bounded queue, counts and logs (rate-
//! limited) what it drops, and delivers the rest once the backend is back.
//! Traffic: numbered GETs (`/<phase>/<i>`) on one keep-alive connection to a
//! traced nginx, one server span each, so every outcome is an exact count.
use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use seam_tests::{
    agent::Agent,
    otlp::{Fault, Kind, Receiver},
    serial,
    servers::Nginx,
    spans::SpanView,
};

/// Prints how long a test took once it holds the lock (for the report).
struct Took(Instant);

impl Drop for Took {
    fn drop(&mut self) {
        eprintln!("test took {:.1}s", self.0.elapsed().as_secs_f64());
    }
}

fn nginx() -> Nginx {
    Nginx::start("  listen 127.0.0.1:{port};\n  location / { return 200 \"ok\\n\"; }\n")
}

/// The agent tracing `nginx`, exporting to `receiver` with a short timeout
/// and backoff cap (so an outage's end is noticed within half a second).
fn agent(receiver: &Receiver, nginx: &Nginx, extra: &[&str], env: &[(&str, &str)]) -> Agent {
    let mut args = Agent::otlp_args(receiver);
    args.extend(["--port".into(), nginx.port.to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut all = vec![
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
        ("SEAM_EXPORT_MAX_BACKOFF_MS", "500"),
        ("OTEL_METRICS_EXPORTER", "none"),
        ("SEAM_LOG", "seam=info"),
    ];
    all.extend_from_slice(env);
    Agent::start(&args, &all)
}

/// `n` GETs of `/<phase>/<i>` on one keep-alive connection, each answered 200.
fn drive(port: u16, phase: &str, n: usize) -> Vec<String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut paths = Vec::with_capacity(n);
    for i in 0..n {
        let path = format!("/{phase}/{i}");
        // One write per request: split ones meet Nagle and delayed ACKs.
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        writer.write_all(request.as_bytes()).unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "{path}: {line}");
        let mut length = 0;
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        paths.push(path);
    }
    paths
}

/// A counter or gauge from the agent's /metrics; it must be there.
fn metric(agent: &Agent, name: &str) -> u64 {
    agent
        .metric(name)
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{}", agent.get("/metrics").1))
}

/// Polls until `cond` holds; false after `timeout`.
async fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn paths(spans: &[SpanView]) -> Vec<String> {
    let mut p: Vec<String> = spans.iter().filter_map(|s| s.attr("url.path")).collect();
    p.sort();
    p
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The agent's rate-limited drop lines, and the spans they add up to.
fn drop_lines(log: &str) -> (usize, u64) {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("dropped ") && l.contains(" spans "))
        .collect();
    let total = lines
        .iter()
        .map(|l| {
            let rest = &l[l.find("dropped ").unwrap() + "dropped ".len()..];
            rest.split_whitespace()
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    (lines.len(), total)
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .unwrap()
}

/// The distinct paths received (a retried request may arrive twice).
fn unique_paths(spans: &[SpanView]) -> BTreeSet<String> {
    paths(spans).into_iter().collect()
}

/// Not listening at start; up; stopped with its connections cut; back;
/// then answering later than the export timeout. Every span made meanwhile
/// arrives, capture never waits on the exporter, and each outage is said
/// once when it starts and once when it ends.
async fn outages_and_slowness(kind: Kind) {
    let _serial = serial().await;
    let _took = Took(Instant::now());
    let mut receiver = Receiver::reserve(kind);
    let nginx = nginx();
    let mut agent = agent(
        &receiver,
        &nginx,
        &[],
        &[("OTEL_EXPORTER_OTLP_TIMEOUT", "500")],
    );
    let created = |agent: &Agent| metric(agent, "seam_spans_created_total");
    let errors = |agent: &Agent| metric(agent, "seam_export_errors_total");
    // Spans reach the export queue in lumps, up to 50 ms after they are made.
    let queued = |agent: &Agent| metric(agent, "seam_export_queue_spans");

    // Not listening yet: connections refused.
    let mut expected = drive(nginx.port, "before", 20);
    assert!(
        wait_for(Duration::from_secs(10), || created(&agent) == 20
            && errors(&agent) >= 2
            && queued(&agent) == 20)
        .await,
        "{}",
        agent.log()
    );
    receiver.listen().await;
    let spans = receiver
        .wait_until(Duration::from_secs(10), |s| s.len() >= 20)
        .await;
    assert_eq!(paths(&spans), sorted(expected.clone()));

    // Up.
    expected.extend(drive(nginx.port, "up", 10));
    receiver
        .wait_until(Duration::from_secs(10), |s| s.len() >= 30)
        .await;

    // Stopped, its open connections cut.
    receiver.stop().await;
    let before = errors(&agent);
    expected.extend(drive(nginx.port, "during", 20));
    assert!(
        wait_for(Duration::from_secs(10), || created(&agent) == 50
            && errors(&agent) >= before + 2
            && queued(&agent) == 20)
        .await,
        "{}",
        agent.log()
    );
    receiver.listen().await;
    receiver
        .wait_until(Duration::from_secs(10), |s| s.len() >= 50)
        .await;

    // Slow: answers after 1.2 s, the export timeout is 0.5 s.
    receiver.set_fault(Fault::Delay(Duration::from_millis(1200)));
    let timeouts_before = metric(&agent, "seam_export_timeouts_total");
    expected.extend(drive(nginx.port, "slow", 20));
    assert!(
        wait_for(Duration::from_secs(10), || {
            metric(&agent, "seam_export_timeouts_total") >= timeouts_before + 2
        })
        .await,
        "{}",
        agent.log()
    );
    // Capture is not held up by the exporter waiting for answers.
    expected.extend(drive(nginx.port, "slower", 20));
    assert!(
        wait_for(Duration::from_secs(10), || created(&agent) == 90
            && queued(&agent) == 40)
        .await,
        "{} queued:\n{}",
        queued(&agent),
        agent.log()
    );
    receiver.set_fault(Fault::None);
    receiver
        .wait_until(Duration::from_secs(10), |s| unique_paths(s).len() >= 90)
        .await;
    let spans = receiver.settle(90, Duration::from_secs(1)).await;
    assert_eq!(
        unique_paths(&spans),
        expected.iter().cloned().collect::<BTreeSet<_>>()
    );
    let timeouts = metric(&agent, "seam_export_timeouts_total");
    assert_eq!(metric(&agent, "seam_spans_exported_total"), 90);
    assert_eq!(metric(&agent, "seam_spans_dropped_queue_full_total"), 0);
    assert_eq!(metric(&agent, "seam_spans_dropped_export_failed_total"), 0);
    assert_eq!(metric(&agent, "seam_export_queue_spans"), 0);
    let failed = errors(&agent);
    assert!(agent.stop().success());
    let log = agent.log();
    let count = |s: &str| log.lines().filter(|l| l.contains(s)).count();
    assert_eq!(count("export failed; retrying"), 3, "{log}");
    assert_eq!(count("export resumed after"), 3, "{log}");
    assert_eq!(drop_lines(&log), (0, 0), "{log}");
    eprintln!(
        "{kind:?}: 40 spans made while down and 40 while slow, all delivered; \
         {failed} failed attempts ({timeouts} timeouts); {} spans received ({} late duplicates)",
        spans.len(),
        spans.len() - 90
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_backend_down_slow_and_back() {
    outages_and_slowness(Kind::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_backend_down_slow_and_back() {
    outages_and_slowness(Kind::Http).await;
}

/// UNAVAILABLE / 503 with a retry delay (over HTTP as an HTTP-date 2 s
/// ahead, so more than 1 s once rounded to its second): the same batch
/// again no sooner than asked (the backoff cap is 0.5 s here), then
/// delivered. A permanent error
/// (INVALID_ARGUMENT / 400): dropped without a retry. A partial success:
/// the rejected spans counted, nothing retried. Export goes on after each.
async fn error_answers(kind: Kind) {
    let _serial = serial().await;
    let _took = Took(Instant::now());
    let receiver = Receiver::start(kind).await;
    receiver.set_fault(match kind {
        Kind::Grpc => Fault::Unavailable {
            retry_after: Some(Duration::from_secs(1)),
            as_date: false,
        },
        Kind::Http => Fault::Unavailable {
            retry_after: Some(Duration::from_secs(2)),
            as_date: true,
        },
    });
    let nginx = nginx();
    let mut agent = agent(&receiver, &nginx, &[], &[]);
    let errors = |agent: &Agent| metric(agent, "seam_export_errors_total");

    let mut expected = drive(nginx.port, "busy", 20);
    assert!(
        wait_for(Duration::from_secs(10), || receiver.faulted().len() >= 2).await,
        "{}",
        agent.log()
    );
    receiver.set_fault(Fault::None);
    receiver
        .wait_until(Duration::from_secs(10), |s| s.len() >= 20)
        .await;
    let unavailable = receiver.faulted();
    for pair in unavailable.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
        assert_eq!(pair[0].spans, pair[1].spans, "the same batch again");
    }
    assert_eq!(errors(&agent), unavailable.len() as u64);

    receiver.set_fault(Fault::BadRequest);
    drive(nginx.port, "refused", 25);
    assert!(
        wait_for(Duration::from_secs(10), || {
            metric(&agent, "seam_spans_dropped_export_failed_total") == 25
        })
        .await,
        "{}",
        agent.log()
    );
    let refused: Vec<_> = receiver
        .faulted()
        .into_iter()
        .filter(|f| f.fault == Fault::BadRequest)
        .collect();
    assert_eq!(
        refused.iter().map(|f| f.spans).sum::<usize>(),
        25,
        "each span sent once"
    );
    assert_eq!(errors(&agent), (unavailable.len() + refused.len()) as u64);

    receiver.set_fault(Fault::Reject(2));
    expected.extend(drive(nginx.port, "rejected", 20));
    receiver
        .wait_until(Duration::from_secs(10), |s| s.len() >= 40)
        .await;
    let rejected = receiver.rejected();
    assert!(rejected >= 2);
    assert_eq!(metric(&agent, "seam_spans_rejected_total"), rejected);

    receiver.set_fault(Fault::None);
    expected.extend(drive(nginx.port, "ok", 5));
    let spans = receiver.settle(45, Duration::from_secs(10)).await;
    assert_eq!(paths(&spans), sorted(expected), "nothing retried or lost");
    assert_eq!(metric(&agent, "seam_spans_exported_total"), 45 - rejected);
    assert_eq!(metric(&agent, "seam_spans_dropped_export_failed_total"), 25);
    assert_eq!(metric(&agent, "seam_spans_rejected_total"), rejected);
    assert_eq!(errors(&agent), (unavailable.len() + refused.len()) as u64);
    assert!(agent.stop().success());
    let log = agent.log();
    let (lines, total) = drop_lines(&log);
    assert_eq!(total, 25 + rejected, "the drop lines add up:\n{log}");
    assert!(lines <= 3, "{lines} drop lines:\n{log}");
    let refusal = match kind {
        Kind::Http => "refused by the backend: HTTP 400 Bad Request",
        Kind::Grpc => "refused by the backend: gRPC InvalidArgument",
    };
    assert!(log.contains(refusal), "{log}");
    assert!(
        log.contains("rejected by the backend (partial success): rejected by the test receiver"),
        "{log}"
    );
    eprintln!(
        "{kind:?}: {} unavailable answers then all 20 delivered; 25 refused in {} requests, \
         not retried; {rejected} of 20 rejected; {lines} drop lines",
        unavailable.len(),
        refused.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_503_400_and_partial_success() {
    error_answers(Kind::Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unavailable_invalid_argument_and_partial_success() {
    error_answers(Kind::Grpc).await;
}

/// A queue of 100 spans and 600 requests while the backend is down: 500
/// dropped and counted, said in a line or two (not one per span), memory
/// flat, and the 100 queued delivered once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_queue_overflow_is_counted_logged_and_bounded() {
    let _serial = serial().await;
    let _took = Took(Instant::now());
    let mut receiver = Receiver::reserve(Kind::Http);
    let nginx = nginx();
    let mut agent = agent(
        &receiver,
        &nginx,
        &[],
        &[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "50"),
        ],
    );
    let pid = agent.proc.pid();
    // Warm up allocations outside the queue (connection state, routes).
    drive(nginx.port, "warm", 20);
    assert!(
        wait_for(Duration::from_secs(10), || {
            metric(&agent, "seam_spans_created_total") == 20
        })
        .await
    );
    let before = vm_rss_kib(pid);
    let started = Instant::now();
    let mut peak = before;
    let mut expected = BTreeSet::new();
    for round in 0..6 {
        expected.extend(drive(nginx.port, &format!("down{round}"), 100));
        peak = peak.max(vm_rss_kib(pid));
    }
    assert!(
        wait_for(Duration::from_secs(10), || {
            peak = peak.max(vm_rss_kib(pid));
            metric(&agent, "seam_spans_created_total") == 620
                && metric(&agent, "seam_spans_dropped_queue_full_total") == 520
        })
        .await,
        "{}",
        agent.log()
    );
    assert_eq!(metric(&agent, "seam_export_queue_spans"), 100);
    let queued_bytes = metric(&agent, "seam_export_queue_bytes");
    assert!(
        queued_bytes > 100 * 100 && queued_bytes < 100 * 8192,
        "{queued_bytes}"
    );
    let down_for = started.elapsed();
    receiver.listen().await;
    let spans = receiver.settle(100, Duration::from_secs(10)).await;
    assert_eq!(spans.len(), 100);
    let got: BTreeSet<String> = paths(&spans).into_iter().collect();
    assert_eq!(got.len(), 100, "no span twice");
    assert!(
        got.iter()
            .all(|p| p.starts_with("/warm/") || expected.contains(p))
    );
    assert_eq!(metric(&agent, "seam_spans_exported_total"), 100);
    assert_eq!(metric(&agent, "seam_spans_dropped_queue_full_total"), 520);
    assert!(agent.stop().success());
    let log = agent.log();
    let (lines, total) = drop_lines(&log);
    assert_eq!(total, 520, "the drop lines add up to the counter:\n{log}");
    let allowed = 2 + (started.elapsed().as_secs() / 10) as usize;
    assert!((1..=allowed).contains(&lines), "{lines} drop lines:\n{log}");
    let grown_mib = (peak.saturating_sub(before)) as f64 / 1024.0;
    eprintln!(
        "620 spans made while down ({down_for:?}), 100 queued and delivered, 520 dropped; \
         {lines} drop lines; RSS {before} kB before, peak {peak} kB while down \
         (+{grown_mib:.1} MiB); queue held {queued_bytes} bytes"
    );
    assert!(grown_mib < 16.0, "RSS grew {grown_mib:.1} MiB while down");
}

/// `--export-queue-mib` bounds the queue by bytes when the span bound is
/// far away: 1 MiB here; `SEAM_FAULTS_QUEUE_MIB=64` (and patience) measures
/// the default bound's real memory cost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_bound_caps_the_queue() {
    let _serial = serial().await;
    let _took = Took(Instant::now());
    let mib: u64 = std::env::var("SEAM_FAULTS_QUEUE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let cap = mib * 1024 * 1024;
    let mut receiver = Receiver::reserve(Kind::Grpc);
    let nginx = nginx();
    let mut agent = agent(
        &receiver,
        &nginx,
        &["--export-queue-mib", &mib.to_string()],
        &[],
    );
    let pid = agent.proc.pid();
    drive(nginx.port, "warm", 20);
    wait_for(Duration::from_secs(5), || {
        metric(&agent, "seam_spans_created_total") == 20
    })
    .await;
    let rss_before = vm_rss_kib(pid);
    let mut peak = rss_before;
    let mut made = 20;
    while metric(&agent, "seam_spans_dropped_queue_full_total") == 0 {
        assert!(
            made < 20_000 * mib,
            "{mib} MiB never filled:\n{}",
            agent.log()
        );
        drive(nginx.port, &format!("d{made}"), 500);
        made += 500;
        wait_for(Duration::from_secs(5), || {
            metric(&agent, "seam_spans_created_total") == made
        })
        .await;
        peak = peak.max(vm_rss_kib(pid));
    }
    assert_eq!(metric(&agent, "seam_spans_created_total"), made);
    // Spans reach the export queue in lumps (at most 50 ms after they are
    // made): every one made is queued or dropped once the last lump is in.
    let in_queue_or_dropped = || {
        metric(&agent, "seam_export_queue_spans")
            + metric(&agent, "seam_spans_dropped_queue_full_total")
    };
    wait_for(Duration::from_secs(5), || in_queue_or_dropped() == made).await;
    let queued = metric(&agent, "seam_export_queue_spans");
    let bytes = metric(&agent, "seam_export_queue_bytes");
    let dropped = metric(&agent, "seam_spans_dropped_queue_full_total");
    assert!(bytes <= cap, "{bytes}");
    assert!(bytes > cap - 8192, "full up to the last span: {bytes}");
    assert_eq!(queued + dropped, made);
    receiver.listen().await;
    let spans = receiver
        .settle(queued as usize, Duration::from_secs(15 * mib))
        .await;
    assert_eq!(spans.len() as u64, queued);
    assert_eq!(metric(&agent, "seam_spans_exported_total"), queued);
    assert!(agent.stop().success());
    let grown = peak.saturating_sub(rss_before) * 1024;
    eprintln!(
        "{made} spans made while down; {mib} MiB held {queued} ({bytes} bytes), \
         {dropped} dropped; RSS {rss_before} kB before, +{:.1} MiB at peak ({:.2}x the bound)",
        grown as f64 / 1048576.0,
        grown as f64 / cap as f64
    );
}
