//! Overload: a burst larger than the smallest ring buffer. Records the
//! buffer has no room for are counted per probe (`/metrics`, logs), the
//! connections that lost records resynchronise at their next request, no
//! span pairs a request with another request's response, and once the burst
//! is over the agent traces every request again.
use std::time::{Duration, Instant};

use seam_tests::{
    agent::{Agent, http_get},
    otlp::{Kind, Receiver},
    procs::scratch_dir,
    serial,
    servers::Nginx,
    spans::SpanView,
};

/// Each location answers its own status with the request's path as body, so
/// a span's status and body size tell which request its response was for.
const SERVER: &str = r#"listen 127.0.0.1:{port};
location /a/ { return 200 "$uri\n"; }
location /b/ { return 404 "$uri\n"; }
location /c/ { return 201 "$uri\n"; }
location /d/ { return 503 "$uri\n"; }
location /fresh/ { return 200 "$uri\n"; }"#;

/// wrk: every request a path of its own,
/// `/<status class>/<burst>-<thread>-<n>` (`BURST` is replaced).
const WRK_SCRIPT: &str = r#"
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local n = 0
local classes = {"a", "b", "c", "d"}
request = function()
  n = n + 1
  return wrk.format("GET", "/" .. classes[(n % 4) + 1] .. "/BURST-" .. tid .. "-" .. n)
end
"#;

fn expected_status(path: &str) -> Option<i64> {
    match path.split('/').nth(1)? {
        "a" | "fresh" => Some(200),
        "b" => Some(404),
        "c" => Some(201),
        "d" => Some(503),
        _ => None,
    }
}

/// A server span is consistent when its status is the one its path's
/// location answers and its response body is that path (plus a newline).
fn inconsistent(span: &SpanView) -> Option<String> {
    let path = span.attr("url.path")?;
    let status = span.int("http.response.status_code");
    let body = span.int("http.response.body.size");
    if status == expected_status(&path) && body == Some(path.len() as i64 + 1) {
        None
    } else {
        Some(format!("{path}: status {status:?}, body {body:?}"))
    }
}

/// Runs wrk for `secs` with `connections`; returns the requests it completed.
fn wrk(port: u16, secs: u64, connections: u32, burst: u32) -> u64 {
    let script = scratch_dir().join(format!("overload-{burst}.lua"));
    std::fs::write(&script, WRK_SCRIPT.replace("BURST", &burst.to_string())).unwrap();
    let out = std::process::Command::new("wrk")
        .args(["-t2", &format!("-c{connections}"), &format!("-d{secs}s")])
        .arg("-s")
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk: {text}");
    // "  123456 requests in 3.00s, ..."
    text.lines()
        .find_map(|l| {
            let (n, rest) = l.trim().split_once(' ')?;
            rest.starts_with("requests in").then(|| n.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no request count in wrk's output: {text}"))
}

/// Waits until the agent's exported span count stops moving: it has caught up.
async fn caught_up(agent: &Agent, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = agent.metric("seam_spans_created_total").unwrap_or(0);
        if now == last || Instant::now() >= deadline {
            return now;
        }
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_over_the_smallest_ring_buffer_loses_counted_and_resyncs() {
    let _serial = serial().await;
    let secs: u64 = std::env::var("SEAM_OVERLOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let bursts: u32 = std::env::var("SEAM_OVERLOAD_BURSTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let receiver = Receiver::start(Kind::Grpc).await;
    let nginx = Nginx::start(SERVER);
    let mut args = Agent::otlp_args(&receiver);
    args.extend([
        "--port".into(),
        nginx.port.to_string(),
        "--ring-buffer-mib".into(),
        "1".into(),
    ]);
    let mut agent = Agent::start(&args, &[]);

    let mut sent = 0;
    let mut lost = 0;
    for burst in 0..bursts {
        sent += wrk(nginx.port, secs, 64, burst);
        caught_up(&agent, Duration::from_secs(120)).await;
        lost = agent.metric("seam_probe_events_lost_total").unwrap_or(0);
    }
    let resyncs = agent.metric("seam_loss_resyncs_total").unwrap_or(0);
    assert!(lost > 0, "the burst did not overflow the ring buffer");
    assert!(resyncs > 0, "no connection noticed its lost records");

    // After the burst, every request is traced again, exactly.
    const FRESH: usize = 20;
    for i in 0..FRESH {
        let path = format!("/fresh/{i}");
        let (status, body) = http_get(nginx.port, &path).expect("nginx answers");
        assert_eq!((status, body.trim()), (200, path.as_str()));
    }
    let is_fresh = |s: &&SpanView| s.attr("url.path").is_some_and(|p| p.starts_with("/fresh/"));
    let spans = receiver
        .wait_until(Duration::from_secs(30), |s| {
            s.iter().filter(is_fresh).count() >= FRESH
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let spans = if spans.iter().filter(is_fresh).count() >= FRESH {
        receiver.spans()
    } else {
        spans
    };
    let mut fresh: Vec<String> = spans
        .iter()
        .filter(is_fresh)
        .map(|s| s.attr("url.path").unwrap_or_default())
        .collect();
    fresh.sort();
    let mut want: Vec<String> = (0..FRESH).map(|i| format!("/fresh/{i}")).collect();
    want.sort();
    assert_eq!(fresh, want);

    // No span pairs a request with another one's response, and no request
    // makes two spans.
    let servers: Vec<&SpanView> = spans.iter().filter(|s| s.is_server()).collect();
    let bad: Vec<String> = servers.iter().filter_map(|s| inconsistent(s)).collect();
    assert!(
        bad.is_empty(),
        "{} of {} spans inconsistent: {:?}",
        bad.len(),
        servers.len(),
        &bad[..bad.len().min(10)]
    );
    let mut paths: Vec<String> = servers.iter().filter_map(|s| s.attr("url.path")).collect();
    let total = paths.len();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), total, "a request made two spans");
    assert!(total as u64 <= sent + FRESH as u64);

    assert!(agent.stop().success());
    let log = agent.log();
    let stopped = log
        .lines()
        .find(|l| l.contains("seam stopped"))
        .unwrap_or_else(|| panic!("no summary line:\n{log}"));
    assert!(
        !stopped.contains(" lost=0"),
        "the summary must count the losses: {stopped}"
    );
    println!(
        "soak-result overload sent={sent} failed=0 spans={total} lost={lost} resyncs={resyncs} rss_min=0 rss_max=0"
    );
    drop(nginx);
}
