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
            st: Stitcher::new(StitchConfig::default(), Clock::new()),
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
        self.st.push(Record::Start {
            key: RequestKey {
                sock: conn.sock,
                seq: 0,
            },
            conn: conn.clone(),
            tid,
            request: Request::Http(head(headers)),
            timing,
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
                    headers: vec![],
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

fn head(headers: &[(&str, &str)]) -> RequestHead {
    RequestHead {
        method: "GET".into(),
        target: "/".into(),
        version: "1.1",
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
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
