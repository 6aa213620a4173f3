use std::sync::Arc;

use super::*;
use crate::{
    discover::{process::ProcessTable, sockets::Endpoints},
    protocol::{
        Exchange, Request, Timing,
        http1::{self, RequestHead, ResponseHead},
    },
    span::SpanKind,
};

struct World {
    st: Stitcher,
    procs: ProcessTable,
    spans: Vec<Span>,
}

fn t(enter: u64, exit: u64) -> Timing {
    Timing {
        enter_ns: enter,
        exit_ns: exit,
    }
}

impl World {
    fn new() -> Self {
        Self {
            st: Stitcher::new(
                StitchConfig::default(),
                Clock::new(),
                super::attrs::Shaper::default(),
            ),
            procs: ProcessTable::new("/nonexistent"),
            spans: Vec::new(),
        }
    }

    fn conn(&mut self, sock: u64, pid: u32, role: Role, local: &str, peer: &str) -> Arc<ConnMeta> {
        Arc::new(ConnMeta {
            sock,
            pid,
            process: self.procs.get(pid, Some(&format!("svc{pid}"))),
            role,
            endpoints: Some(Endpoints {
                local: local.parse().unwrap(),
                peer: peer.parse().unwrap(),
            }),
            tls: false,
        })
    }

    fn start(&mut self, conn: &Arc<ConnMeta>, tid: u32, timing: Timing, headers: &[(&str, &str)]) {
        self.start_with(conn, tid, timing, headers, None);
    }

    fn start_with(
        &mut self,
        conn: &Arc<ConnMeta>,
        tid: u32,
        timing: Timing,
        headers: &[(&str, &str)],
        kernel_ctx: Option<KernelCtx>,
    ) {
        self.st.push(Record::Start {
            key: RequestKey {
                sock: conn.sock,
                seq: 0,
            },
            conn: conn.clone(),
            tid,
            request: Request::Http(head(headers)),
            timing,
            kernel_ctx,
        });
    }

    fn done(&mut self, conn: &Arc<ConnMeta>, start: Timing, end: Timing) {
        self.st.push(Record::Done {
            key: RequestKey {
                sock: conn.sock,
                seq: 0,
            },
            conn: conn.clone(),
            exchange: Exchange::Http(http1::Exchange {
                seq: 0,
                request: head(&[]),
                response: ResponseHead {
                    status: 200,
                    version: "1.1",
                    headers: Default::default(),
                },
                request_start: start,
                request_end: start,
                response_start: end,
                response_end: end,
                request_body_len: 0,
                response_body_len: 0,
                end_inferred: false,
            }),
        });
    }

    fn run(&mut self) {
        self.st.flush(&mut self.spans);
    }

    fn span_of(&self, pid: u32, kind: SpanKind) -> &Span {
        self.spans
            .iter()
            .find(|s| s.kind == kind && s.resource.service_name() == format!("svc{pid}"))
            .expect("span")
    }
}

fn head(headers: &[(&str, &str)]) -> Arc<RequestHead> {
    Arc::new(RequestHead::for_test("GET", "/", headers))
}

/// order (pid 1, thread 11) serves a request and calls inventory (pid 2)
/// on the same thread; records arrive in an order causality forbids.
#[test]
fn links_thread_and_tuple_despite_arrival_order() {
    let mut w = World::new();
    let order_srv = w.conn(10, 1, Role::Server, "127.0.0.1:8000", "127.0.0.1:50000");
    let order_cli = w.conn(11, 1, Role::Client, "127.0.0.1:50001", "127.0.0.1:8001");
    let inv_srv = w.conn(12, 2, Role::Server, "127.0.0.1:8001", "127.0.0.1:50001");
    w.start(&order_srv, 11, t(100, 110), &[]);
    // inventory's read returned before order's send did.
    w.start(&inv_srv, 21, t(150, 210), &[]);
    w.start(&order_cli, 11, t(200, 205), &[]);
    w.done(&inv_srv, t(150, 210), t(300, 310));
    w.done(&order_cli, t(200, 205), t(320, 330));
    w.done(&order_srv, t(100, 110), t(400, 410));
    w.run();
    assert_eq!(w.spans.len(), 3);
    let root = w.span_of(1, SpanKind::Server).clone();
    let client = w.span_of(1, SpanKind::Client).clone();
    let inv = w.span_of(2, SpanKind::Server).clone();
    assert_eq!(root.parent_span_id, None);
    assert_eq!(client.parent_span_id, Some(root.span_id));
    assert_eq!(inv.parent_span_id, Some(client.span_id));
    assert!(root.trace_id == client.trace_id && client.trace_id == inv.trace_id);
    assert_eq!(w.st.inflight(), 0);
    assert!(w.st.serving.is_empty() && w.st.clients.is_empty());
}

/// The server's final write returned after the client's read: the client
/// span is stretched to contain its child.
#[test]
fn client_span_contains_linked_server_span() {
    let mut w = World::new();
    let cli = w.conn(1, 1, Role::Client, "127.0.0.1:5000", "127.0.0.1:80");
    let srv = w.conn(2, 2, Role::Server, "127.0.0.1:80", "127.0.0.1:5000");
    w.start(&cli, 1, t(100, 101), &[]);
    w.start(&srv, 2, t(102, 110), &[]);
    w.done(&srv, t(102, 110), t(200, 260));
    w.done(&cli, t(100, 101), t(240, 250));
    w.run();
    let c = w.span_of(1, SpanKind::Client).clone();
    let s = w.span_of(2, SpanKind::Server).clone();
    assert_eq!(s.parent_span_id, Some(c.span_id));
    assert!(c.end_unix_ns >= s.end_unix_ns);
    assert_eq!(c.end_unix_ns - c.start_unix_ns, 160);
}

#[test]
fn incoming_traceparent_sets_trace_and_parent() {
    let mut w = World::new();
    let srv = w.conn(1, 1, Role::Server, "127.0.0.1:8000", "10.0.0.9:5000");
    w.start(
        &srv,
        1,
        t(1, 2),
        &[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "vendor=x"),
        ],
    );
    w.done(&srv, t(1, 2), t(5, 6));
    w.run();
    let s = &w.spans[0];
    assert_eq!(
        crate::span::hex(&s.trace_id),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(
        s.parent_span_id.map(|p| crate::span::hex(&p)).as_deref(),
        Some("00f067aa0ba902b7")
    );
    assert_eq!(s.trace_state, "vendor=x");
}

#[test]
fn invalid_traceparent_starts_a_new_trace() {
    let mut w = World::new();
    let srv = w.conn(1, 1, Role::Server, "127.0.0.1:8000", "10.0.0.9:5000");
    w.start(
        &srv,
        1,
        t(1, 2),
        &[(
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        )],
    );
    w.done(&srv, t(1, 2), t(5, 6));
    w.run();
    assert_eq!(w.spans[0].parent_span_id, None);
    assert_ne!(w.spans[0].trace_id, [0; 16]);
}

#[test]
fn event_loop_thread_serving_two_requests_links_nothing() {
    let mut w = World::new();
    let a = w.conn(1, 1, Role::Server, "127.0.0.1:80", "127.0.0.1:1000");
    let b = w.conn(2, 1, Role::Server, "127.0.0.1:80", "127.0.0.1:1001");
    let up = w.conn(3, 1, Role::Client, "127.0.0.1:2000", "127.0.0.1:9000");
    w.start(&a, 7, t(1, 2), &[]);
    w.start(&b, 7, t(3, 4), &[]);
    w.start(&up, 7, t(5, 6), &[]);
    w.done(&up, t(5, 6), t(7, 8));
    w.run();
    assert_eq!(w.spans.len(), 1);
    assert_eq!(w.spans[0].parent_span_id, None);
}

#[test]
fn tuple_linking_can_be_switched_off() {
    let mut w = World::new();
    w.st.config.tuple_linking = false;
    let cli = w.conn(1, 1, Role::Client, "127.0.0.1:5000", "127.0.0.1:80");
    let srv = w.conn(2, 2, Role::Server, "127.0.0.1:80", "127.0.0.1:5000");
    w.start(&cli, 1, t(1, 2), &[]);
    w.start(&srv, 2, t(3, 4), &[]);
    w.done(&srv, t(3, 4), t(5, 6));
    w.done(&cli, t(1, 2), t(7, 8));
    w.run();
    let s = w.span_of(2, SpanKind::Server);
    assert_eq!(s.parent_span_id, None);
}

#[test]
fn release_waits_for_the_reorder_window() {
    let mut w = World::new();
    let srv = w.conn(1, 1, Role::Server, "127.0.0.1:80", "127.0.0.1:1000");
    w.start(&srv, 1, t(1_000, 1_000), &[]);
    w.done(&srv, t(1_000, 1_000), t(2_000, 2_000));
    let mut spans = Vec::new();
    w.st.release(2_000 + w.st.config.reorder_ns - 1, &mut spans);
    assert!(spans.is_empty());
    w.st.release(2_000 + w.st.config.reorder_ns, &mut spans);
    assert_eq!(spans.len(), 1);
    assert_eq!(w.st.queued(), 0);
}

#[test]
fn abandoned_requests_free_their_state() {
    let mut w = World::new();
    let srv = w.conn(1, 1, Role::Server, "127.0.0.1:80", "127.0.0.1:1000");
    w.start(&srv, 1, t(1, 2), &[]);
    w.st.push(Record::Abandoned {
        key: RequestKey { sock: 1, seq: 0 },
    });
    w.run();
    assert_eq!(w.st.inflight(), 0);
    assert!(w.st.serving.is_empty());
    assert!(w.spans.is_empty());
}

/// Mixed mode: order instruments itself (its calls carry a traceparent seam
/// did not write); inventory is traced by seam only.
#[test]
fn foreign_propagation_suppresses_duplicates_without_orphans() {
    let mut w = World::new();
    let order_srv = w.conn(10, 1, Role::Server, "127.0.0.1:8000", "127.0.0.1:50000");
    let order_cli = w.conn(11, 1, Role::Client, "127.0.0.1:50001", "127.0.0.1:8001");
    let inv_srv = w.conn(12, 2, Role::Server, "127.0.0.1:8001", "127.0.0.1:50001");
    let sdk = "00-11111111111111111111111111111111-2222222222222222-01";
    w.start(&order_srv, 11, t(100, 110), &[]);
    w.start(&order_cli, 11, t(200, 205), &[("traceparent", sdk)]);
    w.start(&inv_srv, 21, t(150, 210), &[("traceparent", sdk)]);
    w.done(&inv_srv, t(150, 210), t(300, 310));
    w.done(&order_cli, t(200, 205), t(320, 330));
    w.done(&order_srv, t(100, 110), t(400, 410));
    w.run();
    // Only inventory's span: order's two are the SDK's to report.
    assert_eq!(w.spans.len(), 1);
    let inv = &w.spans[0];
    assert_eq!(
        crate::span::hex(&inv.trace_id),
        "11111111111111111111111111111111"
    );
    assert_eq!(
        inv.parent_span_id.map(|p| crate::span::hex(&p)).as_deref(),
        Some("2222222222222222")
    );
    // Later server requests of the self-instrumented process are left to it too.
    let again = w.conn(13, 1, Role::Server, "127.0.0.1:8000", "127.0.0.1:50002");
    w.start(&again, 11, t(500, 510), &[]);
    w.done(&again, t(500, 510), t(600, 610));
    w.run();
    assert_eq!(w.spans.len(), 1);
}

/// A server request with one header-carrying call and one seam-only call
/// keeps its span, since seam's client span points at it.
#[test]
fn server_span_kept_when_seam_exports_a_child() {
    let mut w = World::new();
    let srv = w.conn(10, 1, Role::Server, "127.0.0.1:8000", "127.0.0.1:50000");
    let a = w.conn(11, 1, Role::Client, "127.0.0.1:50001", "10.0.0.1:80");
    let b = w.conn(12, 1, Role::Client, "127.0.0.1:50002", "10.0.0.2:80");
    w.start(&srv, 7, t(100, 110), &[]);
    w.start(
        &a,
        7,
        t(120, 121),
        &[(
            "traceparent",
            "00-11111111111111111111111111111111-2222222222222222-01",
        )],
    );
    w.done(&a, t(120, 121), t(130, 131));
    w.start(&b, 7, t(140, 141), &[]);
    w.done(&b, t(140, 141), t(150, 151));
    w.done(&srv, t(100, 110), t(200, 210));
    w.run();
    assert_eq!(w.spans.len(), 2);
    let server = w.span_of(1, SpanKind::Server);
    let client = w.span_of(1, SpanKind::Client);
    assert_eq!(client.parent_span_id, Some(server.span_id));
}

#[test]
fn b3_headers_set_trace_and_parent() {
    let mut w = World::new();
    let srv = w.conn(1, 1, Role::Server, "127.0.0.1:8000", "10.0.0.9:5000");
    w.start(
        &srv,
        1,
        t(1, 2),
        &[
            ("X-B3-TraceId", "463ac35c9f6413ad48485a3953bb6124"),
            ("X-B3-SpanId", "a2fb4a1d1a96d312"),
            ("X-B3-Sampled", "1"),
        ],
    );
    w.done(&srv, t(1, 2), t(5, 6));
    w.run();
    let s = &w.spans[0];
    assert_eq!(
        crate::span::hex(&s.trace_id),
        "463ac35c9f6413ad48485a3953bb6124"
    );
    assert_eq!(
        s.parent_span_id.map(|p| crate::span::hex(&p)).as_deref(),
        Some("a2fb4a1d1a96d312")
    );
    assert_eq!(s.flags, 1);
}

/// A proxy that forwards the incoming traceparent unchanged is not
/// self-instrumented: its spans stay, linked as usual.
#[test]
fn forwarded_header_is_not_self_instrumentation() {
    let mut w = World::new();
    let tp = "00-11111111111111111111111111111111-2222222222222222-01";
    let proxy_srv = w.conn(10, 1, Role::Server, "127.0.0.1:8000", "10.0.0.5:50000");
    let proxy_cli = w.conn(11, 1, Role::Client, "127.0.0.1:50001", "127.0.0.1:8001");
    let up_srv = w.conn(12, 2, Role::Server, "127.0.0.1:8001", "127.0.0.1:50001");
    w.start(&proxy_srv, 3, t(100, 110), &[("traceparent", tp)]);
    w.start(&proxy_cli, 3, t(200, 205), &[("traceparent", tp)]);
    w.start(&up_srv, 9, t(206, 210), &[("traceparent", tp)]);
    w.done(&up_srv, t(206, 210), t(300, 310));
    w.done(&proxy_cli, t(200, 205), t(320, 330));
    w.done(&proxy_srv, t(100, 110), t(400, 410));
    w.run();
    assert_eq!(w.spans.len(), 3);
    let srv = w.span_of(1, SpanKind::Server).clone();
    let cli = w.span_of(1, SpanKind::Client).clone();
    let up = w.span_of(2, SpanKind::Server).clone();
    assert_eq!(
        crate::span::hex(&srv.parent_span_id.unwrap()),
        "2222222222222222"
    );
    assert_eq!(cli.parent_span_id, Some(srv.span_id));
    assert_eq!(up.parent_span_id, Some(cli.span_id));
    assert!(srv.trace_id == cli.trace_id && cli.trace_id == up.trace_id);
}

/// With injection on, the probes decide ids: the server span gets the ids
/// its thread's injected requests named as parent, the client span exactly
/// the ids written into its request, and the downstream server (which read
/// them from the header) points at it.
#[test]
fn ids_decided_by_the_probes_win() {
    let mut w = World::new();
    let order_srv = w.conn(10, 1, Role::Server, "127.0.0.1:8000", "127.0.0.1:50000");
    let order_cli = w.conn(11, 1, Role::Client, "127.0.0.1:50001", "127.0.0.1:8001");
    let inv_srv = w.conn(12, 2, Role::Server, "127.0.0.1:8001", "127.0.0.1:50001");
    let trace = [7u8; 16];
    let server = KernelCtx {
        trace_id: trace,
        span_id: [1; 8],
        parent_id: None,
        flags: 1,
        continued: false,
    };
    let client = KernelCtx {
        trace_id: trace,
        span_id: [2; 8],
        parent_id: Some([1; 8]),
        flags: 1,
        continued: false,
    };
    let downstream = KernelCtx {
        trace_id: trace,
        span_id: [3; 8],
        parent_id: Some([2; 8]),
        flags: 1,
        continued: false,
    };
    w.start_with(&order_srv, 11, t(100, 110), &[], Some(server));
    w.start_with(&order_cli, 11, t(200, 205), &[], Some(client));
    w.start_with(&inv_srv, 21, t(150, 210), &[], Some(downstream));
    w.done(&inv_srv, t(150, 210), t(300, 310));
    w.done(&order_cli, t(200, 205), t(320, 330));
    w.done(&order_srv, t(100, 110), t(400, 410));
    w.run();
    assert_eq!(w.spans.len(), 3);
    let root = w.span_of(1, SpanKind::Server);
    let cli = w.span_of(1, SpanKind::Client);
    let inv = w.span_of(2, SpanKind::Server);
    assert_eq!(
        (root.trace_id, root.span_id, root.parent_span_id),
        (trace, [1; 8], None)
    );
    assert_eq!((cli.span_id, cli.parent_span_id), ([2; 8], Some([1; 8])));
    assert_eq!((inv.span_id, inv.parent_span_id), ([3; 8], Some([2; 8])));
    // The linked server span still stretches its client span.
    assert_eq!(cli.end_unix_ns, w.st.clock.unix_ns(330));
    assert_eq!(w.st.inflight(), 0);
}

/// A client span the probes started as a root (its thread served several
/// requests at once) is not counted as a child of the served request, and
/// keeps its own trace.
#[test]
fn probe_root_client_is_not_a_child() {
    let mut w = World::new();
    let srv = w.conn(10, 1, Role::Server, "127.0.0.1:8000", "127.0.0.1:50000");
    let cli = w.conn(11, 1, Role::Client, "127.0.0.1:50001", "10.0.0.9:80");
    w.start(&srv, 11, t(100, 110), &[]);
    let root = KernelCtx {
        trace_id: [9; 16],
        span_id: [4; 8],
        parent_id: None,
        flags: 1,
        continued: false,
    };
    w.start_with(&cli, 11, t(200, 205), &[], Some(root));
    w.done(&cli, t(200, 205), t(320, 330));
    w.done(&srv, t(100, 110), t(400, 410));
    w.run();
    let client = w.span_of(1, SpanKind::Client);
    assert_eq!((client.trace_id, client.parent_span_id), ([9; 16], None));
    let server = w.span_of(1, SpanKind::Server);
    assert_ne!(server.trace_id, [9; 16]);
}
