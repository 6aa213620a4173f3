//! Trace context end to end: incoming W3C and B3 headers on the entry
//! request, and gap attribution: the demo's slow log write, a handler that
//! sleeps and one that waits for its CPU.
use std::{process::Command, time::Duration};

use seam_tests::{
    agent::Agent,
    bpf::linked_programs,
    checkout::Chain,
    otlp::{Kind, Receiver},
    procs::{Proc, curl, free_port, scratch_dir, wait_port},
    serial,
    slowfs::SlowFs,
    spans::{SpanView, of},
};

/// The entry request's context comes from whichever header it carries, and
/// the whole chain joins that trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_headers_set_trace_and_parent() {
    let _serial = serial().await;
    let receiver = Receiver::start(Kind::Grpc).await;
    let ports = Chain::ports();
    let chain = Chain::start(ports, 1, &[]);
    let mut args = Agent::otlp_args(&receiver);
    args.extend(Chain::port_args(ports));
    let mut agent = Agent::start(&args, &[]);

    // (headers, expected trace id, expected parent id)
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            vec![
                "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "tracestate: congo=t61rcWkgMzE",
            ],
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "00f067aa0ba902b7",
        ),
        (
            vec!["b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"],
            "80f198ee56343ba864fe8b2a57d3eff7",
            "e457b5a2e4d86bd1",
        ),
        (
            vec![
                "X-B3-TraceId: 463ac35c9f6413ad",
                "X-B3-SpanId: a2fb4a1d1a96d312",
                "X-B3-Sampled: 1",
            ],
            "0000000000000000463ac35c9f6413ad",
            "a2fb4a1d1a96d312",
        ),
        // Invalid: upper-case hex and an all-zero trace id are ignored.
        (
            vec!["traceparent: 00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"],
            "",
            "",
        ),
        (
            vec!["traceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01"],
            "",
            "",
        ),
    ];
    for (headers, _, _) in &cases {
        let mut argv = vec![chain.order_url()];
        for h in headers {
            argv.push("-H".into());
            argv.push(h.to_string());
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        assert_eq!(curl(&argv).0, 200);
    }
    let n = cases.len();
    let spans = receiver.settle(7 * n, Duration::from_secs(30)).await;
    assert!(agent.stop().success());
    assert_eq!(spans.len(), 7 * n);
    let mut roots: Vec<&SpanView> = of(&spans, "order", true);
    roots.sort_by_key(|s| s.span.start_time_unix_nano);
    assert_eq!(roots.len(), n);
    for (root, (_, trace, parent)) in roots.iter().zip(&cases) {
        if trace.is_empty() {
            assert!(
                root.parent_id().is_empty(),
                "invalid header must start a new trace"
            );
            assert_ne!(root.trace_id(), "00000000000000000000000000000000");
        } else {
            assert_eq!(root.trace_id(), *trace);
            assert_eq!(root.parent_id(), *parent);
        }
        let members = spans
            .iter()
            .filter(|s| s.trace_id() == root.trace_id())
            .count();
        assert_eq!(members, 7, "the chain joins the entry request's trace");
    }
    assert_eq!(roots[0].span.trace_state, "congo=t61rcWkgMzE");
}

/// The demo's 400 ms synchronous log write becomes a 400 ms INTERNAL child
/// of the order request, and the order span says where its own time went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_log_write_is_its_own_span_and_explains_the_gap() {
    let _serial = serial().await;
    let receiver = Receiver::start(Kind::Grpc).await;
    let fs = SlowFs::mount(&scratch_dir().join("slowlogs"), 400);
    let log = fs.dir.join("orders.log");
    let ports = Chain::ports();
    let chain = Chain::start(ports, 1, &[("ORDER_LOG", log.display().to_string())]);
    let mut args = Agent::otlp_args(&receiver);
    args.extend(Chain::port_args(ports));
    let mut agent = Agent::start(&args, &[]);
    let n = 3;
    for _ in 0..n {
        assert_eq!(curl(&[&chain.order_url()]).0, 200);
    }
    let spans = receiver.settle(8 * n, Duration::from_secs(30)).await;
    assert!(agent.stop().success());
    assert_eq!(
        spans.len(),
        8 * n,
        "7 HTTP spans and one file span per order"
    );
    let by_id = |id: String| spans.iter().find(|s| s.span_id() == id);
    let files: Vec<&SpanView> = spans.iter().filter(|s| s.span.kind == 1).collect();
    assert_eq!(files.len(), n);
    for f in files {
        assert_eq!(f.span.name, format!("file write {}", log.display()));
        assert_eq!(f.attr("file.path"), Some(log.display().to_string()));
        assert_eq!(f.attr("seam.io.operation").as_deref(), Some("write"));
        assert!(f.int("seam.io.bytes").unwrap() > 0);
        let ms = f.duration_ms();
        assert!((360.0..=440.0).contains(&ms), "file write took {ms} ms");
        let parent = by_id(f.parent_id()).expect("file span has a parent");
        assert!(parent.is_server() && parent.service() == "order");
        assert_eq!(parent.trace_id(), f.trace_id());
        let file_io = parent
            .span
            .attributes
            .iter()
            .find(|kv| kv.key == "seam.gap.file_io_ms");
        let file_io = match file_io.and_then(|kv| kv.value.as_ref()?.value.clone()) {
            Some(opentelemetry_proto::tonic::common::v1::any_value::Value::DoubleValue(v)) => v,
            other => panic!("seam.gap.file_io_ms: {other:?}"),
        };
        assert!(
            (360.0..=440.0).contains(&file_io),
            "file I/O gap {file_io} ms"
        );
        assert!(parent.duration_ms() >= ms);
    }
    drop(chain);
    drop(fs);
}

/// Mixed mode: order runs under the OTel Python SDK (it makes and
/// propagates its own spans), the other services are seam's alone. Each
/// order is one tree: the SDK's server and client spans for order, seam's
/// server spans for the leaves under the SDK's client spans, and no seam
/// span duplicating an SDK one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_instrumented_service_in_the_middle_makes_one_tree() {
    let _serial = serial().await;
    let receiver = Receiver::start(Kind::Http).await;
    let ports = Chain::ports();
    let chain = Chain::start_with_sdk_order(ports, &format!("{}/v1/traces", receiver.endpoint()));
    let mut args = Agent::otlp_args(&receiver);
    args.extend(Chain::port_args(ports));
    let mut agent = Agent::start(&args, &[]);
    let n = 3;
    for _ in 0..n {
        assert_eq!(curl(&[&chain.order_url()]).0, 200);
    }
    // Per order: SDK server + 3 SDK clients, seam's 3 leaf servers.
    let spans = receiver.settle(7 * n, Duration::from_secs(30)).await;
    assert!(agent.stop().success());
    let by_seam = |s: &SpanView| s.resource_attr("telemetry.sdk.name").as_deref() == Some("seam");
    let describe: Vec<String> = spans
        .iter()
        .map(|s| {
            format!(
                "{} {:?} {} seam={} trace={} parent={}",
                s.service(),
                s.kind(),
                s.span.name,
                by_seam(s),
                s.trace_id(),
                s.parent_id()
            )
        })
        .collect();
    assert_eq!(spans.len(), 7 * n, "{describe:#?}");
    let roots: Vec<&SpanView> = spans.iter().filter(|s| s.parent_id().is_empty()).collect();
    assert_eq!(roots.len(), n, "{describe:#?}");
    for root in roots {
        assert!(
            !by_seam(root) && root.is_server(),
            "the SDK's order span is the root"
        );
        let tree: Vec<&SpanView> = spans
            .iter()
            .filter(|s| s.trace_id() == root.trace_id())
            .collect();
        assert_eq!(tree.len(), 7, "{describe:#?}");
        let sdk_clients: Vec<&SpanView> = tree
            .iter()
            .copied()
            .filter(|s| !by_seam(s) && s.is_client())
            .collect();
        assert_eq!(sdk_clients.len(), 3);
        for c in &sdk_clients {
            assert_eq!(c.parent_id(), root.span_id());
        }
        let leaves: Vec<&SpanView> = tree.iter().copied().filter(|s| by_seam(s)).collect();
        let mut services: Vec<String> = leaves.iter().map(|s| s.service()).collect();
        services.sort();
        assert_eq!(
            services,
            ["inventory", "payment", "shipping"],
            "{describe:#?}"
        );
        for leaf in leaves {
            assert!(leaf.is_server());
            assert!(
                sdk_clients.iter().any(|c| c.span_id() == leaf.parent_id()),
                "{} hangs under an SDK client span",
                leaf.service()
            );
        }
    }
    drop(chain);
}

/// A one-thread HTTP server: `/sleep` blocks for 300 ms, `/spin` burns the
/// CPU for 300 ms of wall time.
const WAITING_SERVER: &str = r#"
import sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/sleep":
            time.sleep(0.3)
        else:
            end = time.monotonic() + 0.3
            while time.monotonic() < end:
                pass
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

fn gap_ms(span: &SpanView, key: &str) -> f64 {
    let value = span.span.attributes.iter().find(|kv| kv.key == key);
    match value.and_then(|kv| kv.value.as_ref()?.value.clone()) {
        Some(opentelemetry_proto::tonic::common::v1::any_value::Value::DoubleValue(v)) => v,
        other => panic!("{key}: {other:?}"),
    }
}

/// The `sched_switch` probe's two readings of a serving thread's time away
/// from the CPU: asleep (blocked) and runnable but queued behind another
/// task on its CPU (both pinned to CPU 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_and_queued_handlers_explain_their_gaps() {
    let _serial = serial().await;
    let receiver = Receiver::start(Kind::Grpc).await;
    let port = free_port();
    let mut cmd = Command::new("taskset");
    cmd.args([
        "-c",
        "0",
        "python3",
        "-c",
        WAITING_SERVER,
        &port.to_string(),
    ]);
    let server = Proc::spawn("waiting-server", cmd);
    assert!(wait_port(port, Duration::from_secs(10)), "{}", server.log());
    let mut args = Agent::otlp_args(&receiver);
    args.extend(["--port".to_string(), port.to_string()]);
    let mut agent = Agent::start(&args, &[]);
    assert_eq!(curl(&[&format!("http://127.0.0.1:{port}/sleep")]).0, 200);
    let mut hog = Command::new("taskset");
    hog.args(["-c", "0", "sh", "-c", "while :; do :; done"]);
    let mut hog = Proc::spawn("cpu-hog", hog);
    assert_eq!(curl(&[&format!("http://127.0.0.1:{port}/spin")]).0, 200);
    hog.stop();
    let spans = receiver.settle(2, Duration::from_secs(30)).await;
    assert!(agent.stop().success());
    assert_eq!(spans.len(), 2, "one server span per request");
    // (off-CPU, run queue) ms of the request for `path`.
    let waits = |path: &str| {
        let span = spans
            .iter()
            .find(|s| s.attr("url.path").as_deref() == Some(path))
            .unwrap_or_else(|| panic!("no span for {path}"));
        (
            gap_ms(span, "seam.gap.off_cpu_ms"),
            gap_ms(span, "seam.gap.runqueue_ms"),
        )
    };
    let (off_cpu, queued) = waits("/sleep");
    assert!(
        (280.0..=400.0).contains(&off_cpu) && queued < 50.0,
        "/sleep: off-CPU {off_cpu} ms, run queue {queued} ms"
    );
    // Two busy tasks share CPU 0: the handler waits for about half of its
    // 300 ms, in slices of a few milliseconds (above the 1 ms threshold).
    let (off_cpu, queued) = waits("/spin");
    assert!(
        (60.0..=250.0).contains(&queued) && off_cpu < 50.0,
        "/spin: off-CPU {off_cpu} ms, run queue {queued} ms"
    );
    drop(server);
}

/// The `sched_switch` probe runs at every context switch of the node: it is
/// a raw tracepoint, and with `--no-gaps` it is not attached at all, nor are
/// the other programs that only watch serving threads' waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_probes_are_attached_only_with_gaps() {
    let _serial = serial().await;
    let gap_only = ["sched_switch", "enter_openat", "exit_openat", "enter_fsync"];
    let port = free_port().to_string();
    let attached = |extra: &[&str]| {
        let mut args = vec!["--port".to_string(), port.clone()];
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut agent = Agent::start(&args, &[]);
        let linked = linked_programs();
        assert!(agent.stop().success());
        linked
    };
    let with = attached(&[]);
    assert!(
        with.contains(&("sched_switch".into(), "raw_tracepoint".into())),
        "{with:?}"
    );
    for name in gap_only.iter().chain(&["sock_send_length", "exit_read"]) {
        assert!(
            with.iter().any(|(n, _)| n == name),
            "{name} not attached: {with:?}"
        );
    }
    let without = attached(&["--no-gaps"]);
    for name in gap_only {
        assert!(
            !without.iter().any(|(n, _)| n == name),
            "{name} attached: {without:?}"
        );
    }
    for name in ["sock_send_length", "exit_read", "inet_sock_set_state"] {
        assert!(
            without.iter().any(|(n, _)| n == name),
            "{name} not attached: {without:?}"
        );
    }
}
