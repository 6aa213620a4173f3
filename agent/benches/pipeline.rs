//! Microbenchmarks of seam's user-space hot path, per request:
//!
//! - `http1/*`: the HTTP/1 stage turning one recorded request and response
//!   into a request-start and an exchange event (directly, and through the
//!   `Parser` trait object the connection stage uses);
//! - `stitch/*`: the stitch stage taking the Start and Done records of a
//!   same-host client and server request pair and making their two spans;
//! - `export/*`: turning a batch of 512 spans into an OTLP export request,
//!   and encoding it to protobuf;
//! - `red/*`: counting 512 spans into the RED metrics, as the pipeline does
//!   for every span, sampled or not.
//!
//! `cargo bench -p seam` runs them; numbers are per request (or per span).
use std::{hint::black_box, net::SocketAddr, sync::Arc};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use seam::{
    clock::Clock,
    conn::{ConnMeta, Record, RequestKey},
    discover::{process::ProcessTable, sockets::Endpoints},
    export::otlp,
    metrics::red::RedMetrics,
    protocol::{
        Direction, Exchange, Parser, ProtoEvent, Request, Role, Timing,
        http1::{Http1Conn, Http1Event},
    },
    span::Span,
    stitch::{StitchConfig, Stitcher, attrs::Shaper},
};

/// What wrk sends and nginx answers (the head; the 256-byte body goes out
/// with sendfile, so the probes report its length only).
const NGINX_REQUEST: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";
const NGINX_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\
Date: Mon, 23 Nov 2026 11:42:30 GMT\r\nContent-Type: text/html\r\nContent-Length: 256\r\n\
Last-Modified: Mon, 23 Nov 2026 11:40:00 GMT\r\nConnection: keep-alive\r\n\
ETag: \"6922f2a0-100\"\r\nAccept-Ranges: bytes\r\n\r\n";

/// What python-requests sends from order to inventory, and gunicorn answers.
const CHAIN_REQUEST: &[u8] = b"GET /check?item=123 HTTP/1.1\r\nHost: 127.0.0.1:8001\r\n\
User-Agent: python-requests/2.34.2\r\nAccept-Encoding: gzip, deflate\r\nAccept: */*\r\n\
Connection: keep-alive\r\n\r\n";
const CHAIN_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: gunicorn\r\n\
Date: Mon, 23 Nov 2026 11:42:30 GMT\r\nConnection: close\r\nContent-Type: application/json\r\n\
Content-Length: 32\r\n\r\n{\"available\":true,\"item\":\"123\"}\n";

fn t(ns: u64) -> Timing {
    Timing {
        enter_ns: ns,
        exit_ns: ns + 1_000,
    }
}

fn http1(c: &mut Criterion) {
    let mut g = c.benchmark_group("http1");
    g.throughput(Throughput::Elements(1));
    g.bench_function("nginx_server_exchange", |b| {
        let mut conn = Http1Conn::new();
        let mut out: Vec<Http1Event> = Vec::new();
        let mut ns = 1_000_000;
        b.iter(|| {
            ns += 100_000;
            conn.feed(
                Direction::Ingress,
                NGINX_REQUEST,
                NGINX_REQUEST.len() as u64,
                t(ns),
                &mut out,
            );
            conn.feed(
                Direction::Egress,
                NGINX_RESPONSE,
                NGINX_RESPONSE.len() as u64,
                t(ns + 10_000),
                &mut out,
            );
            conn.feed(Direction::Egress, &[], 256, t(ns + 20_000), &mut out);
            assert_eq!(out.len(), 2);
            black_box(out.drain(..));
        });
    });
    // gunicorn closes each connection: one parser per request.
    g.bench_function("chain_client_exchange", |b| {
        let mut out: Vec<Http1Event> = Vec::new();
        b.iter(|| {
            let mut conn = Http1Conn::new();
            conn.feed(
                Direction::Egress,
                CHAIN_REQUEST,
                CHAIN_REQUEST.len() as u64,
                t(0),
                &mut out,
            );
            conn.feed(
                Direction::Ingress,
                CHAIN_RESPONSE,
                CHAIN_RESPONSE.len() as u64,
                t(10_000),
                &mut out,
            );
            assert_eq!(out.len(), 2);
            black_box(out.drain(..));
        });
    });
    // As the connection stage calls it.
    g.bench_function("nginx_server_exchange_dyn_parser", |b| {
        let mut conn: Box<dyn Parser> = Box::new(Http1Conn::new());
        let mut out: Vec<ProtoEvent> = Vec::new();
        let mut ns = 1_000_000;
        b.iter(|| {
            ns += 100_000;
            conn.feed(
                Direction::Ingress,
                NGINX_REQUEST,
                NGINX_REQUEST.len() as u64,
                t(ns),
                &mut out,
            );
            conn.feed(
                Direction::Egress,
                NGINX_RESPONSE,
                NGINX_RESPONSE.len() as u64,
                t(ns + 10_000),
                &mut out,
            );
            conn.feed(Direction::Egress, &[], 256, t(ns + 20_000), &mut out);
            assert_eq!(out.len(), 2);
            black_box(out.drain(..));
        });
    });
    g.finish();
}

/// The request and exchange the HTTP/1 stage makes of one chain hop.
fn chain_hop() -> (Request, Exchange) {
    let mut conn = Http1Conn::new();
    let mut out = Vec::new();
    conn.feed(
        Direction::Egress,
        CHAIN_REQUEST,
        CHAIN_REQUEST.len() as u64,
        t(0),
        &mut out,
    );
    conn.feed(
        Direction::Ingress,
        CHAIN_RESPONSE,
        CHAIN_RESPONSE.len() as u64,
        t(10_000),
        &mut out,
    );
    let mut it = out.into_iter();
    let (Some(Http1Event::RequestHead { head, .. }), Some(Http1Event::Exchange(x))) =
        (it.next(), it.next())
    else {
        panic!("the HTTP/1 stage made no exchange");
    };
    (Request::Http(head), Exchange::Http(x))
}

/// A client (order, pid 100) and a server (inventory, pid 200) on both ends
/// of one loopback connection.
struct Pair {
    client: Arc<ConnMeta>,
    server: Arc<ConnMeta>,
    request: Request,
    exchange: Exchange,
}

impl Pair {
    fn new() -> Self {
        let mut procs = ProcessTable::new("/nonexistent");
        let a: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:8001".parse().unwrap();
        let meta = |sock, pid, role, local, peer, procs: &mut ProcessTable, name: &str| {
            Arc::new(ConnMeta {
                sock,
                pid,
                process: procs.get(pid, Some(name)),
                role,
                endpoints: Some(Endpoints { local, peer }),
                tls: false,
            })
        };
        let (request, exchange) = chain_hop();
        Pair {
            client: meta(1, 100, Role::Client, a, b, &mut procs, "order"),
            server: meta(2, 200, Role::Server, b, a, &mut procs, "inventory"),
            request,
            exchange,
        }
    }

    /// The four records of request `i`, timed after request `i - 1`.
    fn records(&self, i: u64) -> [Record; 4] {
        let base = 1_000_000_000 + i * 1_000_000;
        let with = |x: &Exchange, start: u64, end: u64| {
            let Exchange::Http(mut x) = x.clone() else {
                unreachable!("the bench builds HTTP/1 exchanges")
            };
            x.seq = i;
            x.request_start = t(start);
            x.request_end = t(start);
            x.response_start = t(end);
            x.response_end = t(end);
            Exchange::Http(x)
        };
        [
            Record::Start {
                key: RequestKey { sock: 1, seq: i },
                conn: self.client.clone(),
                tid: 100,
                request: self.request.clone(),
                timing: t(base),
                kernel_ctx: None,
            },
            Record::Start {
                key: RequestKey { sock: 2, seq: i },
                conn: self.server.clone(),
                tid: 200,
                request: self.request.clone(),
                timing: t(base + 20_000),
                kernel_ctx: None,
            },
            Record::Done {
                key: RequestKey { sock: 2, seq: i },
                conn: self.server.clone(),
                exchange: with(&self.exchange, base + 20_000, base + 50_000),
            },
            Record::Done {
                key: RequestKey { sock: 1, seq: i },
                conn: self.client.clone(),
                exchange: with(&self.exchange, base, base + 60_000),
            },
        ]
    }
}

fn stitcher() -> Stitcher {
    Stitcher::new(StitchConfig::default(), Clock::new(), Shaper::default())
}

fn stitch(c: &mut Criterion) {
    let pair = Pair::new();
    let mut g = c.benchmark_group("stitch");
    g.throughput(Throughput::Elements(1));
    g.bench_function("client_server_pair", |b| {
        let mut st = stitcher();
        let mut spans: Vec<Span> = Vec::new();
        let mut i = 0u64;
        b.iter_batched(
            || {
                i += 1;
                (i, pair.records(i))
            },
            |(i, records)| {
                for r in records {
                    st.push(r);
                }
                st.release(1_000_000_000 + i * 1_000_000 + 100_000_000, &mut spans);
                assert_eq!(spans.len(), 2);
                spans.clear();
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

/// 512 spans as the stitch stage makes them (256 client/server pairs).
fn batch() -> Vec<Span> {
    let pair = Pair::new();
    let mut st = stitcher();
    let mut spans = Vec::new();
    for i in 0..256 {
        for r in pair.records(i) {
            st.push(r);
        }
    }
    st.flush(&mut spans);
    assert_eq!(spans.len(), 512);
    spans
}

fn export(c: &mut Criterion) {
    let spans = batch();
    let mut g = c.benchmark_group("export");
    g.throughput(Throughput::Elements(spans.len() as u64));
    g.bench_function("otlp_request_512", |b| {
        b.iter(|| black_box(otlp::request(spans.clone())))
    });
    g.bench_function("otlp_request_encode_512", |b| {
        b.iter(|| black_box(otlp::Batch::encode(spans.clone())))
    });
    g.finish();
}

fn red(c: &mut Criterion) {
    let spans = batch();
    let mut g = c.benchmark_group("red");
    g.throughput(Throughput::Elements(spans.len() as u64));
    g.bench_function("record_512", |b| {
        let mut red = RedMetrics::default();
        b.iter(|| {
            for s in &spans {
                red.record(black_box(s));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, http1, stitch, export, red);
criterion_main!(benches);
