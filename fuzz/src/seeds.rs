//! The seed corpus, built here so that it always matches the input formats
//! the targets decode. `fuzz/corpus/<target>/<name>` holds the files; the test
//! below checks them, and rewrites them when `SEAM_FUZZ_WRITE_SEEDS=1`:
//!
//! ```sh
//! SEAM_FUZZ_WRITE_SEEDS=1 cargo test --manifest-path fuzz/Cargo.toml --lib seeds
//! ```
use seam_common::{
    CloseEvent, DataHeader, IoEvent, PATH_LEN, PathEvent, ProcEvent, Tuple, flag, io_op, kind,
    proc_op, record_bytes,
};

use crate::script::{FLAG_HUGE, Op, encode, whole};

/// `(target, file name, contents)` of every seed.
pub fn all() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, bytes) in http1() {
        out.push(("http1_stream", name, bytes));
    }
    for (name, bytes) in conn() {
        out.push(("conn_tracker", name, bytes));
    }
    for (name, bytes) in trace_context() {
        out.push(("trace_context", name, bytes.as_bytes().to_vec()));
    }
    for (name, bytes) in decode() {
        out.push(("decode", name, bytes));
    }
    for (name, bytes) in policy() {
        out.push(("policy", name, bytes));
    }
    for (name, bytes) in http2() {
        out.push(("http2_stream", name, bytes));
    }
    for (name, bytes) in postgres() {
        out.push(("postgres_stream", name, bytes));
    }
    for (name, bytes) in redis() {
        out.push(("redis_stream", name, bytes));
    }
    out
}

const EGRESS: u8 = 0;
const INGRESS: u8 = 1;
const CLOSE_FIRST: u8 = 2;

/// A script of whole transfers: `(flags, bytes)` in order.
fn transfers(parts: &[(u8, &[u8])]) -> Vec<u8> {
    let ops: Vec<Op> = parts.iter().map(|(f, b)| whole(*f, b.len())).collect();
    let payload: Vec<u8> = parts.iter().flat_map(|(_, b)| b.iter().copied()).collect();
    encode(&ops, &payload)
}

/// An HTTP/2 frame: 24-bit length, type, flags, stream id.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn http2() -> Vec<(&'static str, Vec<u8>)> {
    const HEADERS: u8 = 1;
    const SETTINGS: u8 = 4;
    const DATA: u8 = 0;
    const END_STREAM: u8 = 1;
    const END_HEADERS: u8 = 4;
    let mut client = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    client.extend(h2_frame(SETTINGS, 0, 0, &[]));
    // :method GET, :scheme http, :path /, :authority "a" (HPACK static table).
    client.extend(h2_frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &[0x82, 0x86, 0x84, 0x41, 0x01, b'a'],
    ));
    let mut server = h2_frame(SETTINGS, 0, 0, &[]);
    // :status 200, then a body.
    server.extend(h2_frame(HEADERS, END_HEADERS, 1, &[0x88]));
    server.extend(h2_frame(DATA, END_STREAM, 1, b"hello"));
    // gRPC: POST with content-type application/grpc, trailers with grpc-status.
    let mut grpc_req = h2_frame(
        HEADERS,
        END_HEADERS,
        3,
        &[
            0x83, 0x86, 0x44, 0x0b, b'/', b'p', b'k', b'g', b'.', b'S', b'v', b'c', b'/', b'M',
            b'e', 0x5f, 0x10, b'a', b'p', b'p', b'l', b'i', b'c', b'a', b't', b'i', b'o', b'n',
            b'/', b'g', b'r', b'p', b'c',
        ],
    );
    grpc_req.extend(h2_frame(DATA, END_STREAM, 3, &[0, 0, 0, 0, 0]));
    let mut grpc_resp = h2_frame(HEADERS, END_HEADERS, 3, &[0x88]);
    grpc_resp.extend(h2_frame(DATA, 0, 3, &[0, 0, 0, 0, 0]));
    grpc_resp.extend(h2_frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        3,
        &[
            0x40, 0x0b, b'g', b'r', b'p', b'c', b'-', b's', b't', b'a', b't', b'u', b's', 0x01,
            b'0',
        ],
    ));
    vec![
        ("get", transfers(&[(EGRESS, &client), (INGRESS, &server)])),
        (
            "grpc",
            transfers(&[
                (EGRESS, &client),
                (INGRESS, &server),
                (EGRESS, &grpc_req),
                (INGRESS, &grpc_resp),
            ]),
        ),
    ]
}

/// A PostgreSQL message: type byte, then a 32-bit length that counts itself.
fn pg_msg(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn postgres() -> Vec<(&'static str, Vec<u8>)> {
    let params = b"\x00\x03\x00\x00user\x00app\x00database\x00shop\x00\x00";
    let mut startup = (params.len() as u32 + 4).to_be_bytes().to_vec();
    startup.extend_from_slice(params);
    let mut ready = pg_msg(b'R', &[0, 0, 0, 0]);
    ready.extend(pg_msg(b'Z', b"I"));
    let query = pg_msg(b'Q', b"select name from items where id = 7\0");
    let mut rows = pg_msg(
        b'T',
        b"\x00\x01name\x00\x00\x00\x40\x01\x00\x02\x00\x00\x00\x19\xff\xff\xff\xff\xff\xff\x00\x00",
    );
    rows.extend(pg_msg(b'D', b"\x00\x01\x00\x00\x00\x05apple"));
    rows.extend(pg_msg(b'C', b"SELECT 1\0"));
    rows.extend(pg_msg(b'Z', b"I"));
    let bad = pg_msg(b'Q', b"selec 1\0");
    let mut error = pg_msg(b'E', b"SERROR\0C42601\0Msyntax error\0\0");
    error.extend(pg_msg(b'Z', b"I"));
    // Extended query: Parse, Bind, Execute, Sync.
    let mut ext = pg_msg(b'P', b"\0select $1\0\0\0");
    ext.extend(pg_msg(b'B', b"\0\0\0\0\0\x01\x00\x00\x00\x012\0\0"));
    ext.extend(pg_msg(b'E', b"\0\0\0\0\0"));
    ext.extend(pg_msg(b'S', b""));
    let mut ext_resp = pg_msg(b'1', b"");
    ext_resp.extend(pg_msg(b'2', b""));
    ext_resp.extend(pg_msg(b'C', b"SELECT 1\0"));
    ext_resp.extend(pg_msg(b'Z', b"I"));
    vec![
        (
            "simple",
            transfers(&[
                (EGRESS, &startup),
                (INGRESS, &ready),
                (EGRESS, &query),
                (INGRESS, &rows),
                (EGRESS, &bad),
                (INGRESS, &error),
            ]),
        ),
        (
            "extended",
            transfers(&[
                (EGRESS, &startup),
                (INGRESS, &ready),
                (EGRESS, &ext),
                (INGRESS, &ext_resp),
            ]),
        ),
    ]
}

fn redis() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "set_get",
            transfers(&[
                (EGRESS, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"),
                (INGRESS, b"+OK\r\n"),
                (EGRESS, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
                (INGRESS, b"$1\r\nv\r\n"),
            ]),
        ),
        (
            "pipelined_resp3",
            transfers(&[
                (EGRESS, b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n*2\r\n$3\r\nGET\r\n$4\r\nnone\r\n"),
                (INGRESS, b"%1\r\n+server\r\n+redis\r\n:1\r\n_\r\n"),
                (EGRESS, b"*1\r\n$4\r\nPING\r\n"),
                (INGRESS, b"-ERR oops\r\n"),
            ]),
        ),
    ]
}

fn http1() -> Vec<(&'static str, Vec<u8>)> {
    let mut seeds = vec![
        (
            "server_get",
            transfers(&[
                (
                    INGRESS,
                    b"GET /users/7?x=1 HTTP/1.1\r\nHost: api:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
                ),
                (
                    EGRESS,
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
                ),
            ]),
        ),
        (
            "client_post_split",
            transfers(&[
                (EGRESS, b"PO"),
                (EGRESS, b"ST /orders HTTP/1.1\r\nHost: orders\r\nContent-Type: application/json\r\nContent-Length: 15\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r"),
                (EGRESS, b"\n{\"item\": \"a1\"}"),
                (INGRESS, b"HTTP/1.1 201 Created\r\nLocation: /orders/9\r\nContent-Length: 0\r\n\r\n"),
            ]),
        ),
        (
            "pipelined",
            transfers(&[
                (
                    EGRESS,
                    b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\nHEAD /c HTTP/1.1\r\nHost: h\r\n\r\n",
                ),
                (
                    INGRESS,
                    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nbbHTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
                ),
            ]),
        ),
        (
            "chunked",
            transfers(&[
                (EGRESS, b"GET /stream HTTP/1.1\r\nHost: h\r\n\r\n"),
                (
                    INGRESS,
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
                ),
                (INGRESS, b"lo\r\n6;ext=1\r\n world\r"),
                (INGRESS, b"\n0\r\nX-Trailer: 1\r\n\r\n"),
                (
                    EGRESS,
                    b"PUT /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                ),
                (INGRESS, b"HTTP/1.1 204 No Content\r\n\r\n"),
            ]),
        ),
        (
            "expect_continue",
            transfers(&[
                (
                    EGRESS,
                    b"POST /u HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
                ),
                (INGRESS, b"HTTP/1.1 100 Continue\r\n\r\n"),
                (EGRESS, b"data"),
                (
                    INGRESS,
                    b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
                ),
            ]),
        ),
        (
            "http10_until_close",
            transfers(&[
                (EGRESS, b"GET /old HTTP/1.0\r\n\r\n"),
                (INGRESS, b"HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6\r\n\r\nsome"),
                (INGRESS, b" body"),
                (
                    EGRESS | CLOSE_FIRST,
                    b"GET /again HTTP/1.1\r\nHost: h\r\n\r\n",
                ),
                (INGRESS, b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"),
            ]),
        ),
        (
            "upgrade",
            transfers(&[
                (
                    INGRESS,
                    b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                ),
                (
                    EGRESS,
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                ),
                (INGRESS, b"\x81\x85GET / HTTP/1.1 frame"),
                (
                    EGRESS,
                    b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n",
                ),
            ]),
        ),
        (
            "junk_then_request",
            transfers(&[
                (INGRESS, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
                (INGRESS, b"\r\nGARBAGE / HTTP/1.1\r\n\r\n"),
                (INGRESS, b"DELETE /items/3 HTTP/1.1\r\nHost: h\r\n\r\n"),
                (
                    EGRESS,
                    b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nerr",
                ),
            ]),
        ),
    ];
    // Bodies mostly past the capture, as the probes report them.
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n";
    let req = b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n";
    let mut payload = req.to_vec();
    payload.extend_from_slice(head);
    payload.extend_from_slice(&[b'x'; 64]);
    let ops = [
        whole(EGRESS, req.len()),
        Op {
            flags: INGRESS,
            take: (head.len() + 64) as u16,
            captured: (head.len() + 32) as u16,
            extra: 16_000,
            dt: 40,
        },
        Op {
            flags: INGRESS | FLAG_HUGE,
            take: 0,
            captured: 0,
            extra: 1,
            dt: 200,
        },
    ];
    seeds.push(("uncaptured_body", encode(&ops, &payload)));
    seeds
}

fn conn() -> Vec<(&'static str, Vec<u8>)> {
    // Flags: bit 0 ingress, bits 1-2 socket, bit 3 second pid, bit 4 TLS,
    // bits 5-6: 0 data, 1 close, 2 FIN, 3 other (`extra % 6`).
    let sock = |n: u8| n << 1;
    let close = 1 << 5;
    let fin = 2 << 5;
    let other = 3 << 5;
    let req = b"GET /inventory/42 HTTP/1.1\r\nHost: inventory:8001\r\n\r\n";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
    let server_req = b"POST /checkout HTTP/1.1\r\nHost: order\r\nContent-Length: 2\r\n\r\n{}";
    let server_resp = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n";
    let mut payload = Vec::new();
    let mut ops = Vec::new();
    let mut push = |flags: u8, bytes: &[u8], extra: u16| {
        payload.extend_from_slice(bytes);
        let mut op = whole(flags, bytes.len());
        op.extra = extra;
        ops.push(op);
    };
    push(INGRESS | sock(0), server_req, 0);
    push(EGRESS | sock(1), req, 0);
    push(other, b"", 3); // slow file write
    push(INGRESS | sock(1), resp, 0);
    push(other, b"/var/log/app.log", 2); // opened
    push(EGRESS | sock(0), server_resp, 0);
    push(EGRESS | sock(2) | 8, req, 0); // another process
    push(fin | sock(2), b"", 0);
    push(other | 8, b"gunicorn", 0); // exec
    push(close | sock(1), b"", 0);
    push(EGRESS | sock(3) | 16, b"\x16\x03\x01\x00\xa5", 0);
    push(other, b"", 5); // sweep
    push(other | 8, b"", 1); // exit
    vec![("checkout", encode(&ops, &payload))]
}

fn trace_context() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\ntracestate: congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
        ),
        (
            "traceparent_future",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-the-future\ntraceparent: cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-x",
        ),
        (
            "b3_single",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90\nb3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d",
        ),
        (
            "b3_multi",
            "463ac35c9f6413ad48485a3953bb6124\na2fb4a1d1a96d312\n0020000000000001\n1\n0\nX-B3-TraceId: 463ac35c9f6413ad\nX-B3-SpanId: a2fb4a1d1a96d312\nX-B3-Sampled: true",
        ),
        (
            "mixed",
            "0\ntraceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01\nb3: 0\nx-b3-traceid: 463ac35c9f6413ad\nx-b3-spanid: a2fb4a1d1a96d312\nx-b3-flags: 1",
        ),
    ]
}

fn tuple_v4() -> Tuple {
    let mut t = Tuple {
        sport: 8080,
        dport: 40000,
        family: 2,
        ..Default::default()
    };
    t.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    t.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
    t
}

/// Records, each preceded by its length as the decode target expects.
fn framed(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        out.extend_from_slice(&(r.len() as u16).to_le_bytes());
        out.extend_from_slice(r);
    }
    out
}

fn data_record(flags: u32, payload: &[u8], len: u64) -> Vec<u8> {
    let h = DataHeader {
        kind: kind::DATA,
        flags,
        ts_enter_ns: 1_000,
        ts_exit_ns: 2_000,
        sock: 0xffff_8880_1234_5678,
        len,
        pid: 4242,
        tid: 4243,
        fd: 7,
        captured: payload.len() as u32,
        tuple: tuple_v4(),
        ctx: seam_common::TraceCtx::default(),
        lost: 0,
        _pad: 0,
    };
    let mut r = record_bytes(&h).to_vec();
    r.extend_from_slice(payload);
    r
}

fn decode() -> Vec<(&'static str, Vec<u8>)> {
    let req = b"GET /inventory/42 HTTP/1.1\r\nHost: inventory:8001\r\n\r\n";
    let data = data_record(
        flag::EGRESS | flag::TUPLE_KNOWN | flag::ROLE_CLIENT | (3 << flag::PROBE_SHIFT),
        req,
        req.len() as u64,
    );
    let partial = data_record(flag::TLS, b"HTTP/1.1 200 OK\r\n", 1 << 20);
    let close = CloseEvent {
        kind: kind::CLOSE,
        oldstate: 1,
        newstate: 4,
        ts_ns: 3_000,
        sock: 0xffff_8880_1234_5678,
        tuple: tuple_v4(),
    };
    let exec = ProcEvent {
        kind: kind::PROC,
        op: proc_op::EXEC,
        ts_ns: 5,
        pid: 77,
        _pad: 0,
        comm: *b"gunicorn\0\0\0\0\0\0\0\0",
    };
    let io = IoEvent {
        kind: kind::IO,
        op: io_op::FSYNC,
        ts_start_ns: 1,
        ts_end_ns: 400_000_001,
        pid: 3,
        tid: 4,
        fd: 9,
        _pad: 0,
        bytes: 4096,
    };
    let mut path = PathEvent {
        kind: kind::PATH,
        fd: 9,
        pid: 3,
        len: 16,
        path: [0; PATH_LEN],
    };
    path.path[..16].copy_from_slice(b"/var/log/app.log");
    vec![
        ("data", framed(std::slice::from_ref(&data))),
        (
            "batch",
            framed(&[
                data,
                partial,
                record_bytes(&close).to_vec(),
                record_bytes(&exec).to_vec(),
                record_bytes(&io).to_vec(),
                record_bytes(&path).to_vec(),
            ]),
        ),
    ]
}

fn policy() -> Vec<(&'static str, Vec<u8>)> {
    let with = |settings: u8, text: &str| {
        let mut v = vec![settings];
        v.extend_from_slice(text.as_bytes());
        v
    };
    vec![
        (
            "query",
            with(
                0,
                "q=rust&token=abc=def==&flag&&id=1&id=2&na%20me=J%C3%B6rg\nUser-Agent: curl/8\nAuthorization: Bearer x",
            ),
        ),
        (
            "query_kept",
            with(
                1,
                "AWSAccessKeyId=AKIA&Signature=abc&SIG=x&email=jane%40example.com&card=4111-1111-1111-1111&page=2",
            ),
        ),
        (
            "path",
            with(
                0,
                "/users/jane.doe@example.com/orders/4111111111111111/items/550e8400-e29b-41d4-a716-446655440000?x=1",
            ),
        ),
        (
            "url",
            with(
                0,
                "https://user:pass@api.example.com:8443/v1/accounts/12345/main.3f2a9c1d.js?sig=abc&t=1#access_token=xyz&state=1\n/static/css/site.css\n/users/42\n/a/b/b/\nFrom: jane@example.com",
            ),
        ),
        (
            "routes",
            with(
                1,
                "/api/v1/users/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc/keys/sk_live_4eC39HqLyjWDarjtT1zdp7dc\n/invoices/INV-2024-000123.pdf\n/c/%2541.0123456789abcdef\n*\nhttp://example.com/x/7",
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use std::{fs, path::Path};

    #[test]
    fn corpus_matches_the_seeds() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        let write = std::env::var_os("SEAM_FUZZ_WRITE_SEEDS").is_some();
        for (target, name, bytes) in super::all() {
            let path = root.join(target).join(name);
            if write {
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(&path, &bytes).unwrap();
            } else {
                let on_disk = fs::read(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}; write the seeds", path.display()));
                assert!(
                    on_disk == bytes,
                    "{} is stale; write the seeds",
                    path.display()
                );
            }
        }
    }
}
