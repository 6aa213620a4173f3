use super::*;
use crate::protocol::transfers::{Paired, assert_paired};

const C: Direction = Direction::Egress;
const S: Direction = Direction::Ingress;

/// Recorded with `curl -s --http2-prior-knowledge
/// http://127.0.0.1:28481/hello/world?x=1 -H 'x-trace: abc'` against a
/// small h2c server (Python `h2`), through a relay logging each recv() as
/// one transfer (C = client to server, the traced client's egress).
const CURL_GET: &[(Direction, &str)] = &[
    (
        C,
        "505249202a20485454502f322e300d0a0d0a534d0d0a0d0a00001204000000000000030000006400040200000000020000000000000408000000000001ff000100003701050000000182048d6272d141d8f07b2893fcf3007f86418b089d5c0b8170dc13cd3c1f7a8825b650c3abbcf2e153032a2f2a4085f2b26c190b821c64",
    ),
    (
        S,
        "00002a04000000000000010000100000020000000000040000ffff000500004000000800000000000300000064000600010000",
    ),
    (C, "000000040100000000"),
    (
        S,
        "000000040100000000000015010400000001885f87497ca58ae819aa5c82133f768549aaf4b4e200001700010000000168656c6c6f202f68656c6c6f2f776f726c643f783d310a",
    ),
];

/// grpcio 1.85 client and server (insecure channel), one unary call to
/// /demo.Greeter/SayHello that succeeds, then one that the server aborts
/// with NOT_FOUND "user missing not found" (trailers-only response).
const GRPC: &[(Direction, &str)] = &[
    (
        S,
        "000018040000000000000400400000000500400000000600004000fe0300000001000004080000000000003f0001",
    ),
    (
        C,
        "505249202a20485454502f322e300d0a0d0a534d0d0a0d0a000024040000000000000200000000000300000000000400400000000500400000000600004000fe0300000001000004080000000000003f0001",
    ),
    (S, "000000040100000000"),
    (C, "000000040100000000"),
    (
        C,
        "0000de01040000000140053a70617468162f64656d6f2e477265657465722f53617948656c6c6f400a3a617574686f726974790f3132372e302e302e313a32383439318386400c636f6e74656e742d74797065106170706c69636174696f6e2f677270634002746508747261696c6572734014677270632d6163636570742d656e636f64696e67176964656e746974792c206465666c6174652c20677a6970400a757365722d6167656e7430677270632d707974686f6e2f312e38352e3120677270632d632f35382e302e3020286c696e75783b20636874747032290006782d75736572027531000004080000000001000000050000080001000000010000000003626f6200000408000000000000000005",
    ),
    (S, "000008060000000000b5166c244bbe9987"),
    (C, "000008060100000000b5166c244bbe9987"),
    (
        S,
        "00004e01040000000188400c636f6e74656e742d74797065106170706c69636174696f6e2f677270634014677270632d6163636570742d656e636f64696e67176964656e746974792c206465666c6174652c20677a697000000b0000000000010000000006686920626f6200001e010500000001400b677270632d7374617475730130000c677270632d6d6573736167650000000408000000000000000008",
    ),
    (C, "0000080600000000005fabf8921443cba0"),
    (S, "0000080601000000005fabf8921443cba0"),
    (
        C,
        "000008010400000003c3c28386c1c0bfbe0000040800000000030000000500000c00010000000300000000076d697373696e670000040800000000000000000b",
    ),
    (
        S,
        "00003601050000000388c0400b677270632d7374617475730135000c677270632d6d6573736167651675736572206d697373696e67206e6f7420666f756e640000040800000000000000000c",
    ),
];

/// Python `h2` client and server: GET /one, /two, /three sent in one
/// write on streams 1, 3, 5 and answered with interleaved DATA; POST
/// /cancel on stream 7 reset by the client (CANCEL); POST /big on stream
/// 9 with a 5000-byte body and a 30000-byte response; client GOAWAY.
/// `{xx*n}` stands for n bytes 0xxx (the bodies).
const PY_MULTI: &[(Direction, &str)] = &[
    (
        C,
        "505249202a20485454502f322e300d0a0d0a534d0d0a0d0a00002a04000000000000010000100000020000000100040000ffff00050000400000080000000000030000006400060001000000002e01050000000182448360f5178641892f91d35d055d25427f7a8941474ac92a12c057074089f2b585ed6950958d2785b0bd963d45000012010500000003824483613e0f86c1c07f0086b0bd964f83ff0000150105000000058244856133d852ff86c3c27f0087b0bd964cf614bf",
    ),
    (
        S,
        "00002a04000000000000010000100000020000000000040000ffff000500004000000800000000000300000064000600010000",
    ),
    (C, "000000040100000000"),
    (
        S,
        "000000040100000000000015010400000001885f87497ca58ae819aa5c82087f768549aaf4b4e200000401040000000388c0bfbe00000701040000000588c05c820b3fbf00000500000000000168656c6c6f00000500000000000368656c6c6f00000600000000000568656c6c6f20000006000100000001202f6f6e650a000006000100000003202f74776f0a0000070001000000052f74687265650a",
    ),
    (
        C,
        "0000150104000000078344856083a885a386c5c47f0087b0bd9620ea2168",
    ),
    (C, "00000403000000000700000008"),
    (
        C,
        "00001201040000000983448362334d86c7c67f0086b0bd968cd37f001388000100000009{79*5000}",
    ),
    (
        S,
        "00000901040000000988c15c846400003fc0003a98000000000009{78*15000}003a98000100000009{78*15000}",
    ),
    (C, "0000080700000000000000000000000000"),
];

fn bytes(spec: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = spec;
    while !rest.is_empty() {
        if let Some(run) = rest.strip_prefix('{') {
            let (inner, after) = run.split_once('}').unwrap();
            let (byte, count) = inner.split_once('*').unwrap();
            let byte = u8::from_str_radix(byte, 16).unwrap();
            out.extend(std::iter::repeat_n(byte, count.parse().unwrap()));
            rest = after;
        } else {
            let end = rest.find('{').unwrap_or(rest.len());
            let hex: Vec<u8> = rest[..end].bytes().filter(u8::is_ascii_hexdigit).collect();
            for pair in hex.chunks(2) {
                out.push(u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap());
            }
            rest = &rest[end..];
        }
    }
    out
}

fn transfers(rec: &[(Direction, &str)]) -> Vec<(Direction, Vec<u8>)> {
    rec.iter().map(|&(dir, spec)| (dir, bytes(spec))).collect()
}

fn at(i: u64) -> Timing {
    Timing {
        enter_ns: i * 1000,
        exit_ns: i * 1000 + 10,
    }
}

/// Feeds each transfer whole except for a capture limited to `cap` bytes,
/// with transfer i at `at(i)`, then closes.
fn run(conn: &mut H2Conn, rec: &[(Direction, Vec<u8>)], cap: usize) -> Vec<H2Event> {
    let mut out = Vec::new();
    for (i, (dir, data)) in rec.iter().enumerate() {
        let captured = &data[..data.len().min(cap)];
        conn.feed(*dir, captured, data.len() as u64, at(i as u64), &mut out);
    }
    conn.close(&mut out);
    out
}

fn run_new(rec: &[(Direction, &str)]) -> (Vec<H2Event>, H2Conn) {
    let mut conn = H2Conn::new();
    let events = run(&mut conn, &transfers(rec), usize::MAX);
    (events, conn)
}

fn exchanges(events: &[H2Event]) -> Vec<&H2Exchange> {
    events
        .iter()
        .filter_map(|e| match e {
            H2Event::Done { exchange, .. } => Some(exchange),
            _ => None,
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|&(n, v)| (n.to_owned(), v.to_owned()))
        .collect()
}

/// Splits every transfer with `cut(index, len)` giving the cut points;
/// the same timing for all so that events are comparable.
fn run_split(
    conn: &mut H2Conn,
    rec: &[(Direction, Vec<u8>)],
    mut cut: impl FnMut(usize, usize) -> Vec<usize>,
) -> Vec<H2Event> {
    let mut out = Vec::new();
    for (i, (dir, data)) in rec.iter().enumerate() {
        let mut from = 0;
        for to in cut(i, data.len()).into_iter().chain([data.len()]) {
            let to = to.clamp(from, data.len());
            conn.feed(*dir, &data[from..to], (to - from) as u64, at(0), &mut out);
            from = to;
        }
    }
    conn.close(&mut out);
    out
}

/// xorshift64: deterministic without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

// --- HTTP/2 frame builders for hand-made streams ---

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Literal fields without indexing and without Huffman (short strings).
fn literals(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    block
}

fn request_block(path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
    block.extend(literals(&[(":path", path), (":authority", "h.test")]));
    block
}

fn settings() -> Vec<u8> {
    frame(SETTINGS, 0, 0, &[])
}

fn preface_and_settings() -> Vec<u8> {
    let mut v = PREFACE.to_vec();
    v.extend(settings());
    v
}

#[test]
fn preface_detection() {
    assert!(looks_like_preface(PREFACE));
    assert!(looks_like_preface(&bytes(CURL_GET[0].1)));
    assert!(looks_like_preface(b"PRI"));
    assert!(looks_like_preface(b"PRI * HTTP/2"));
    assert!(!looks_like_preface(b"PR"));
    assert!(!looks_like_preface(b"PRI * HTTP/1.1\r\n"));
    assert!(!looks_like_preface(b"GET / HTTP/1.1\r\n"));
}

#[test]
fn frame_detection() {
    for rec in [CURL_GET, GRPC, PY_MULTI] {
        for (_, spec) in rec {
            let data = bytes(spec);
            if !looks_like_preface(&data) {
                assert!(looks_like_frames(&data), "{spec}");
                assert!(looks_like_frames(&data[..data.len().min(9)]));
            }
        }
    }
    let not_frames: [&[u8]; 9] = [
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"POST /x HTTP/1.1\r\n",
        PREFACE,
        // TLS ClientHello and application data records.
        &[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ],
        &[0x17, 0x03, 0x03, 0x00, 0x45, 0x9a, 0x01, 0x02, 0x03, 0x04],
        &[0; 9],
        &[0, 0, 4, 4, 0, 0, 0, 0], // too short to tell
        // SETTINGS on a stream, then an unknown frame type.
        &[0, 0, 0, 4, 0, 0, 0, 0, 1, 0, 0, 0, 0xfa, 0, 0, 0, 0, 0],
    ];
    for data in not_frames {
        assert!(!looks_like_frames(data), "{data:?}");
    }
    // A second header inside the captured bytes must be plausible too.
    let mut data = settings();
    data.extend_from_slice(b"GET / HTTP/1.1\r\n");
    assert!(!looks_like_frames(&data));
}

#[test]
fn curl_prior_knowledge_get() {
    let (events, conn) = run_new(CURL_GET);
    let request = H2Request {
        stream_id: 1,
        method: Some("GET".into()),
        scheme: Some("http".into()),
        authority: Some("127.0.0.1:28481".into()),
        path: Some("/hello/world?x=1".into()),
        headers: pairs(&[
            ("user-agent", "curl/7.88.1"),
            ("accept", "*/*"),
            ("x-trace", "abc"),
        ]),
        grpc: false,
        incomplete_headers: false,
    };
    let exchange = H2Exchange {
        seq: 0,
        request: request.clone(),
        status: Some(200),
        response_headers: pairs(&[
            ("content-type", "text/plain"),
            ("content-length", "23"),
            ("server", "tiny-h2"),
        ]),
        grpc_status: None,
        grpc_message: None,
        request_start: at(0),
        request_end: at(0),
        response_start: at(3),
        response_end: at(3),
        request_body_len: 0,
        response_body_len: 23,
        reset: None,
        incomplete_headers: false,
    };
    assert_eq!(
        events,
        vec![
            H2Event::Start {
                seq: 0,
                request,
                start: at(0)
            },
            H2Event::Done { seq: 0, exchange }
        ]
    );
    assert_eq!(conn.requests_direction(), Some(C));
    assert_eq!(conn.errors(), ParseErrors::default());
}

#[test]
fn grpc_unary_ok_and_not_found() {
    let (events, conn) = run_new(GRPC);
    let done = exchanges(&events);
    assert_eq!(done.len(), 2);
    assert_eq!(events.len(), 4);

    let ok = done[0];
    assert_eq!(ok.seq, 0);
    assert_eq!(ok.request.path.as_deref(), Some("/demo.Greeter/SayHello"));
    assert_eq!(ok.request.method.as_deref(), Some("POST"));
    assert_eq!(ok.request.authority.as_deref(), Some("127.0.0.1:28491"));
    assert!(ok.request.grpc);
    assert!(
        ok.request
            .headers
            .contains(&("content-type".into(), "application/grpc".into()))
    );
    assert!(ok.request.headers.contains(&("x-user".into(), "u1".into())));
    assert_eq!(ok.status, Some(200));
    assert_eq!(ok.grpc_status, Some(0));
    assert_eq!(ok.grpc_message.as_deref(), Some(""));
    // Length-prefixed messages: 5 + "bob", 5 + "hi bob".
    assert_eq!((ok.request_body_len, ok.response_body_len), (8, 11));
    assert_eq!((ok.request_start, ok.request_end), (at(4), at(4)));
    assert_eq!((ok.response_start, ok.response_end), (at(7), at(7)));
    assert!(!ok.incomplete_headers);

    let err = done[1];
    assert_eq!(err.seq, 1);
    assert_eq!(err.request.stream_id, 3);
    // Every request field of this call came from the dynamic table.
    assert_eq!(err.request.path.as_deref(), Some("/demo.Greeter/SayHello"));
    assert!(err.request.grpc);
    assert!(!err.request.headers.iter().any(|(n, _)| n == "x-user"));
    assert_eq!(err.status, Some(200));
    assert_eq!(err.grpc_status, Some(5));
    assert_eq!(err.grpc_message.as_deref(), Some("user missing not found"));
    assert_eq!((err.request_body_len, err.response_body_len), (12, 0));
    assert!(!err.incomplete_headers);
    assert_eq!(conn.errors(), ParseErrors::default());
    assert_eq!(conn.requests_direction(), Some(C));
}

#[test]
fn concurrent_streams_reset_and_big_bodies() {
    let (events, conn) = run_new(PY_MULTI);
    let summary: Vec<(&str, u64, u32)> = events
        .iter()
        .map(|e| match e {
            H2Event::Start { seq, request, .. } => ("start", *seq, request.stream_id),
            H2Event::Done { seq, exchange } => ("done", *seq, exchange.request.stream_id),
            H2Event::Abandoned { seq } => ("abandoned", *seq, 0),
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("start", 0, 1),
            ("start", 1, 3),
            ("start", 2, 5),
            ("done", 0, 1),
            ("done", 1, 3),
            ("done", 2, 5),
            ("start", 3, 7),
            ("done", 3, 7),
            ("start", 4, 9),
            ("done", 4, 9),
        ]
    );
    let done = exchanges(&events);
    for (ex, path) in done.iter().zip(["/one", "/two", "/three"]) {
        assert_eq!(ex.request.path.as_deref(), Some(path));
        assert_eq!(ex.request.authority.as_deref(), Some("example.test"));
        let id = ("x-request-id".to_owned(), format!("req-{}", &path[1..]));
        assert!(ex.request.headers.contains(&id), "{:?}", ex.request.headers);
        assert_eq!(ex.status, Some(200));
        assert_eq!(ex.response_body_len, path.len() as u64 + 7);
        assert_eq!(ex.response_end, at(3));
    }
    let cancelled = done[3];
    assert_eq!(cancelled.request.method.as_deref(), Some("POST"));
    assert_eq!(cancelled.reset, Some(8));
    assert_eq!(cancelled.status, None);
    assert_eq!(cancelled.response_end, at(5));
    let big = done[4];
    assert_eq!(big.request.path.as_deref(), Some("/big"));
    assert_eq!((big.request_body_len, big.response_body_len), (5000, 30000));
    assert_eq!(big.reset, None);
    assert_eq!(conn.errors(), ParseErrors::default());
}

#[test]
fn capture_limit_counts_data_and_resyncs() {
    // As the agent sees it: at most 4096 bytes of each transfer.
    let mut conn = H2Conn::new();
    let events = run(&mut conn, &transfers(PY_MULTI), 4096);
    assert_eq!(exchanges(&events).len(), 4);
    let H2Event::Start { request, .. } = &events[8] else {
        panic!("{:?}", events[8]);
    };
    assert_eq!(request.path.as_deref(), Some("/big"));
    // The second DATA header of the 30036-byte response is not captured:
    // framing is lost and the response end never shows.
    assert_eq!(events.last(), Some(&H2Event::Abandoned { seq: 4 }));
    assert_eq!(conn.errors().desyncs, 1);
}

#[test]
fn data_beyond_capture_is_skipped_by_counting() {
    let mut out = Vec::new();
    let mut conn = H2Conn::new();
    let mut first = preface_and_settings();
    first.extend(frame(HEADERS, FLAG_END_HEADERS, 1, &request_block("/up")));
    conn.feed(C, &first, first.len() as u64, at(0), &mut out);
    // A 100000-byte DATA frame over three transfers, 4096 bytes captured
    // of each; the frame after it starts the next transfer.
    let header = &frame(DATA, FLAG_END_STREAM, 1, &[])[..9];
    let mut big = header.to_vec();
    big[..3].copy_from_slice(&100_000u32.to_be_bytes()[1..]);
    big.extend(vec![b'z'; 4087]);
    conn.feed(C, &big, 9 + 40_000, at(1), &mut out);
    conn.feed(C, &[b'z'; 4096], 40_000, at(2), &mut out);
    conn.feed(C, &[b'z'; 4096], 20_000, at(3), &mut out);
    let mut response = settings();
    response.extend(frame(
        HEADERS,
        FLAG_END_HEADERS | FLAG_END_STREAM,
        1,
        &[0x88],
    ));
    conn.feed(S, &response, response.len() as u64, at(4), &mut out);
    let done = exchanges(&out);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].request_body_len, 100_000);
    assert_eq!(done[0].request_end, at(3));
    assert_eq!(conn.errors().desyncs, 0);
}

#[test]
fn every_split_position_gives_the_same_events() {
    for rec in [CURL_GET, GRPC] {
        let rec = transfers(rec);
        let whole = run_split(&mut H2Conn::new(), &rec, |_, _| vec![]);
        assert_eq!(exchanges(&whole).len(), whole.len() / 2);
        let longest = rec.iter().map(|(_, d)| d.len()).max().unwrap();
        for i in 0..=longest {
            let split = run_split(&mut H2Conn::new(), &rec, |_, _| vec![i]);
            assert_eq!(split, whole, "split at {i}");
        }
    }
    // The long recording: every position within its first 600 bytes.
    let rec = transfers(PY_MULTI);
    let whole = run_split(&mut H2Conn::new(), &rec, |_, _| vec![]);
    for i in 0..600 {
        assert_eq!(
            run_split(&mut H2Conn::new(), &rec, |_, _| vec![i]),
            whole,
            "split at {i}"
        );
    }
}

#[test]
fn random_splits_give_the_same_events() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for rec in [CURL_GET, GRPC, PY_MULTI] {
        let rec = transfers(rec);
        let whole = run_split(&mut H2Conn::new(), &rec, |_, _| vec![]);
        for _ in 0..50 {
            let split = run_split(&mut H2Conn::new(), &rec, |_, len| {
                let mut cuts: Vec<usize> = (0..rng.below(8)).map(|_| rng.below(len + 1)).collect();
                cuts.sort_unstable();
                cuts
            });
            assert_eq!(split, whole);
        }
        // One byte at a time.
        let bytewise = run_split(&mut H2Conn::new(), &rec, |_, len| (1..len).collect());
        assert_eq!(bytewise, whole);
    }
}

#[test]
fn joined_after_table_populated_never_guesses() {
    // Join the gRPC connection after the first call filled both tables.
    let mut conn = H2Conn::joined_mid_stream();
    let events = run(&mut conn, &transfers(&GRPC[8..]), usize::MAX);
    let done = exchanges(&events);
    assert_eq!(done.len(), 1);
    let ex = done[0];
    assert_eq!(
        ex.request,
        H2Request {
            stream_id: 3,
            method: Some("POST".into()),
            scheme: Some("http".into()),
            authority: None,
            path: None,
            headers: vec![],
            grpc: false,
            incomplete_headers: true,
        }
    );
    assert_eq!(ex.status, Some(200));
    // Literals in the trailers-only response still decode.
    assert_eq!(ex.grpc_status, Some(5));
    assert_eq!(ex.grpc_message.as_deref(), Some("user missing not found"));
    assert!(ex.incomplete_headers);
    assert_eq!(conn.requests_direction(), Some(C));
    assert_eq!(conn.errors(), ParseErrors::default());

    // Join the h2 connection before the cancelled POST: names inserted
    // under unknown names stay unknown, new literals are decoded.
    let mut conn = H2Conn::joined_mid_stream();
    let events = run(&mut conn, &transfers(&PY_MULTI[4..]), usize::MAX);
    let done = exchanges(&events);
    assert_eq!(done.len(), 2);
    assert_eq!(
        done[0].request,
        H2Request {
            stream_id: 7,
            method: Some("POST".into()),
            scheme: Some("http".into()),
            authority: None,
            path: Some("/cancel".into()),
            headers: vec![],
            grpc: false,
            incomplete_headers: true,
        }
    );
    assert_eq!(done[0].reset, Some(8));
    assert_eq!(done[1].request.path.as_deref(), Some("/big"));
    assert!(done[1].request.headers.is_empty());
    assert_eq!(done[1].status, Some(200));
    assert_eq!(
        done[1].response_headers,
        pairs(&[("content-length", "30000")])
    );
    assert!(done[1].incomplete_headers);
    assert_eq!(
        (done[1].request_body_len, done[1].response_body_len),
        (5000, 30000)
    );
}

#[test]
fn joined_before_literals_decodes_later_references_exactly() {
    // Joined just before the first gRPC request: its literals refill the
    // tables, so the second call's indexed fields are known again.
    let mut conn = H2Conn::joined_mid_stream();
    let joined = run(&mut conn, &transfers(&GRPC[4..]), usize::MAX);
    let (full, _) = run_new(GRPC);
    let strip = |events: &[H2Event]| -> Vec<H2Exchange> {
        exchanges(events)
            .into_iter()
            .map(|e| H2Exchange {
                request_start: Timing::default(),
                request_end: Timing::default(),
                response_start: Timing::default(),
                response_end: Timing::default(),
                ..e.clone()
            })
            .collect()
    };
    assert_eq!(strip(&joined), strip(&full));
    assert!(!exchanges(&joined)[1].incomplete_headers);
}

#[test]
fn joined_at_the_preface_is_a_fresh_connection() {
    let mut conn = H2Conn::joined_mid_stream();
    let joined = run(&mut conn, &transfers(GRPC), usize::MAX);
    assert_eq!(joined, run_new(GRPC).0);
}

#[test]
fn new_without_the_preface_treats_tables_as_unknown() {
    // `new()` but the first frames are not the opening SETTINGS: the
    // start was missed, so dynamic table references must not be trusted.
    let mut conn = H2Conn::new();
    let late = run(&mut conn, &transfers(&GRPC[8..]), usize::MAX);
    let mut conn = H2Conn::joined_mid_stream();
    let joined = run(&mut conn, &transfers(&GRPC[8..]), usize::MAX);
    assert_eq!(late, joined);
    assert!(exchanges(&late)[0].request.incomplete_headers);
}

#[test]
fn cut_header_block_is_incomplete_not_wrong() {
    // Only 40 bytes of the first gRPC request are captured: the HEADERS
    // frame is cut, and the rest of that transfer's frames are lost.
    let mut rec = transfers(GRPC);
    let mut out = Vec::new();
    let mut conn = H2Conn::new();
    for (i, (dir, data)) in rec.drain(..).enumerate() {
        let cap = if i == 4 { 40 } else { data.len() };
        conn.feed(dir, &data[..cap], data.len() as u64, at(i as u64), &mut out);
    }
    conn.close(&mut out);
    let done = exchanges(&out);
    assert_eq!(done.len(), 2);
    let first = done[0];
    assert!(first.request.incomplete_headers);
    assert_eq!(
        first.request.path.as_deref(),
        Some("/demo.Greeter/SayHello")
    );
    assert_eq!(first.request.method, None);
    // Its END_STREAM was lost with the framing; the response completes it.
    assert_eq!(first.grpc_status, Some(0));
    assert_eq!(first.request_end, Timing::default());
    // The second request indexes entries the cut block inserted: unknown.
    let second = done[1];
    assert!(second.request.incomplete_headers);
    assert_eq!(second.request.path, None);
    assert_eq!(second.request.method.as_deref(), Some("POST"));
    assert_eq!(second.grpc_status, Some(5));
    assert_eq!(conn.errors().desyncs, 1);
}

#[test]
fn padding_priority_continuation_push_and_informational() {
    let mut out = Vec::new();
    let mut conn = H2Conn::new();
    // HEADERS padded, with priority, split into a CONTINUATION.
    let block = request_block("/p");
    let mut payload = vec![3]; // pad length
    payload.extend([0x80, 0, 0, 0, 16]); // exclusive dependency, weight
    payload.extend(&block[..4]);
    payload.extend([0, 0, 0]);
    let mut c = preface_and_settings();
    c.extend(frame(HEADERS, FLAG_PADDED | FLAG_PRIORITY, 1, &payload));
    c.extend(frame(CONTINUATION, FLAG_END_HEADERS, 1, &block[4..]));
    // Padded DATA: 2 bytes of body, 5 of padding.
    c.extend(frame(
        DATA,
        FLAG_PADDED | FLAG_END_STREAM,
        1,
        &[5, b'h', b'i', 0, 0, 0, 0, 0],
    ));
    conn.feed(C, &c, c.len() as u64, at(0), &mut out);
    let mut s = settings();
    // A pushed stream: its promise and response get no span.
    let mut promise = 2u32.to_be_bytes().to_vec();
    promise.extend(request_block("/pushed"));
    s.extend(frame(PUSH_PROMISE, FLAG_END_HEADERS, 1, &promise));
    s.extend(frame(
        HEADERS,
        FLAG_END_HEADERS,
        1,
        &literals(&[(":status", "103"), ("link", "</s>")]),
    ));
    s.extend(frame(
        HEADERS,
        FLAG_END_HEADERS | FLAG_END_STREAM,
        2,
        &[0x88],
    ));
    s.extend(frame(HEADERS, FLAG_END_HEADERS, 1, &[0x88]));
    s.extend(frame(DATA, 0, 1, b"abc"));
    s.extend(frame(PING, 0, 0, &[0; 8]));
    s.extend(frame(WINDOW_UPDATE, 0, 1, &[0, 0, 1, 0]));
    s.extend(frame(PRIORITY, 0, 1, &[0, 0, 0, 0, 7]));
    s.extend(frame(0xb, 0x3, 0, b"ext"));
    s.extend(frame(
        HEADERS,
        FLAG_END_HEADERS | FLAG_END_STREAM,
        1,
        &literals(&[("x-trailer", "t")]),
    ));
    conn.feed(S, &s, s.len() as u64, at(1), &mut out);
    conn.close(&mut out);
    assert_eq!(out.len(), 2, "{out:?}");
    let done = exchanges(&out);
    let ex = done[0];
    assert_eq!(ex.request.path.as_deref(), Some("/p"));
    assert_eq!(ex.request.authority.as_deref(), Some("h.test"));
    assert_eq!(ex.status, Some(200));
    assert_eq!(ex.response_headers, pairs(&[("x-trailer", "t")]));
    assert_eq!((ex.request_body_len, ex.response_body_len), (2, 3));
    assert_eq!(conn.errors(), ParseErrors::default());
}

#[test]
fn goaway_abandons_unprocessed_streams() {
    let mut out = Vec::new();
    let mut conn = H2Conn::new();
    let mut c = preface_and_settings();
    for id in [1, 3, 5] {
        c.extend(frame(
            HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            id,
            &request_block("/g"),
        ));
    }
    conn.feed(C, &c, c.len() as u64, at(0), &mut out);
    let mut s = settings();
    s.extend(frame(GOAWAY, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]));
    s.extend(frame(
        HEADERS,
        FLAG_END_HEADERS | FLAG_END_STREAM,
        1,
        &[0x88],
    ));
    conn.feed(S, &s, s.len() as u64, at(1), &mut out);
    let tail: Vec<_> = out.iter().skip(3).cloned().collect();
    assert!(matches!(
        tail.as_slice(),
        [
            H2Event::Abandoned { seq: 1 },
            H2Event::Abandoned { seq: 2 },
            H2Event::Done { seq: 0, .. }
        ]
    ));
}

#[test]
fn lost_frame_header_resyncs_and_streams_continue() {
    let mut out = Vec::new();
    let mut conn = H2Conn::new();
    let mut c = preface_and_settings();
    c.extend(frame(
        HEADERS,
        FLAG_END_HEADERS | FLAG_END_STREAM,
        1,
        &request_block("/a"),
    ));
    conn.feed(C, &c, c.len() as u64, at(0), &mut out);
    // Server: headers, then a transfer whose uncaptured part holds more
    // than the DATA frame: a frame header is lost.
    let mut s = settings();
    s.extend(frame(HEADERS, FLAG_END_HEADERS, 1, &[0x88]));
    s.extend(&frame(DATA, 0, 1, &[b'd'; 100])[..20]);
    conn.feed(S, &s, (s.len() - 11 + 109 + 50) as u64, at(1), &mut out);
    assert_eq!(conn.errors().desyncs, 1);
    // Not frames: skipped.
    conn.feed(S, b"junk", 4, at(2), &mut out);
    // Plausible frames again.
    let tail = frame(DATA, FLAG_END_STREAM, 1, b"end");
    conn.feed(S, &tail, tail.len() as u64, at(3), &mut out);
    let done = exchanges(&out);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].status, Some(200));
    assert_eq!(done[0].response_end, at(3));
    // Counted what was seen in sync: the 100 bytes and the 3 after.
    assert_eq!(done[0].response_body_len, 103);
    assert_eq!(conn.errors().desyncs, 1);
}

#[test]
fn settings_header_table_size_bounds_the_other_direction() {
    let mut out = Vec::new();
    let mut conn = H2Conn::joined_mid_stream();
    // The server allows a 70-byte table for what the client encodes.
    let s = frame(SETTINGS, 0, 0, &[0, 1, 0, 0, 0, 70]);
    conn.feed(S, &s, s.len() as u64, at(0), &mut out);
    // x-a: 1 and x-b: 2 are 36 bytes each: the second evicts the first.
    let mut block = vec![0x82, 0x86, 0x84];
    block.extend([
        0x40, 3, b'x', b'-', b'a', 1, b'1', 0x40, 3, b'x', b'-', b'b', 1, b'2',
    ]);
    let mut c = frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 1, &block);
    // 62 = x-b: 2; 63 would be x-a: 1 had it not been evicted.
    c.extend(frame(
        HEADERS,
        FLAG_END_HEADERS | FLAG_END_STREAM,
        3,
        &[0x82, 0x86, 0xbe, 0xbf],
    ));
    conn.feed(C, &c, c.len() as u64, at(1), &mut out);
    let starts: Vec<&H2Request> = out
        .iter()
        .filter_map(|e| match e {
            H2Event::Start { request, .. } => Some(request),
            _ => None,
        })
        .collect();
    assert_eq!(starts.len(), 2);
    assert!(!starts[0].incomplete_headers);
    assert_eq!(starts[0].headers, pairs(&[("x-a", "1"), ("x-b", "2")]));
    assert_eq!(starts[1].headers, pairs(&[("x-b", "2")]));
    assert!(starts[1].incomplete_headers);
}

#[test]
fn orphan_response_counted_once() {
    let mut out = Vec::new();
    let mut conn = H2Conn::joined_mid_stream();
    let mut s = frame(HEADERS, FLAG_END_HEADERS, 5, &[0x88]);
    s.extend(frame(DATA, 0, 5, b"x"));
    s.extend(frame(
        HEADERS,
        FLAG_END_HEADERS | FLAG_END_STREAM,
        5,
        &literals(&[("grpc-status", "0")]),
    ));
    conn.feed(S, &s, s.len() as u64, at(0), &mut out);
    conn.close(&mut out);
    assert!(out.is_empty());
    assert_eq!(conn.errors().orphan_responses, 1);
    assert_eq!(conn.requests_direction(), Some(C));
}

#[test]
fn stream_and_header_block_caps() {
    let mut out = Vec::new();
    let mut conn = H2Conn::new();
    let c = preface_and_settings();
    conn.feed(C, &c, c.len() as u64, at(0), &mut out);
    for i in 0..(MAX_STREAMS as u32 + 3) {
        let f = frame(
            HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            2 * i + 1,
            &request_block("/"),
        );
        conn.feed(C, &f, f.len() as u64, at(1), &mut out);
    }
    let abandoned: Vec<_> = out
        .iter()
        .filter(|e| matches!(e, H2Event::Abandoned { .. }))
        .cloned()
        .collect();
    assert_eq!(
        abandoned,
        vec![
            H2Event::Abandoned { seq: 0 },
            H2Event::Abandoned { seq: 1 },
            H2Event::Abandoned { seq: 2 }
        ]
    );
    assert_eq!(conn.streams.len(), MAX_STREAMS);

    // A header block of 80 KiB over CONTINUATION frames: kept to the cap.
    let mut out = Vec::new();
    let mut conn = H2Conn::new();
    let mut c = preface_and_settings();
    c.extend(frame(HEADERS, 0, 1, &request_block("/huge")));
    let filler = literals(&[("x-fill", &"f".repeat(100))]);
    for i in 0..8 {
        let flags = if i == 7 { FLAG_END_HEADERS } else { 0 };
        c.extend(frame(CONTINUATION, flags, 1, &filler.repeat(100)));
    }
    conn.feed(C, &c, c.len() as u64, at(0), &mut out);
    let H2Event::Start { request, .. } = &out[0] else {
        panic!("{out:?}");
    };
    assert!(request.incomplete_headers);
    assert_eq!(request.path.as_deref(), Some("/huge"));
    assert!(request.headers.len() < 800);
    assert!(conn.dirs[C as usize].pending.is_none());
}

#[test]
fn garbage_never_panics_nor_invents() {
    let mut rng = Rng(42);
    for round in 0..300 {
        let mut conn = if round % 2 == 0 {
            H2Conn::new()
        } else {
            H2Conn::joined_mid_stream()
        };
        let mut out = Vec::new();
        for _ in 0..20 {
            let len = rng.below(64);
            let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if rng.below(4) == 0 {
                // Plausible-looking frame headers over garbage payloads.
                let mut f = frame(
                    rng.below(10) as u8,
                    rng.below(64) as u8,
                    rng.below(8) as u32,
                    &[],
                );
                f[2] = rng.below(40) as u8;
                f.extend(data);
                data = f;
            }
            let extra = if rng.below(3) == 0 {
                rng.below(100) as u64
            } else {
                0
            };
            let dir = if rng.below(2) == 0 { C } else { S };
            conn.feed(dir, &data, data.len() as u64 + extra, at(0), &mut out);
        }
        conn.close(&mut out);
        let _ = conn.errors();
    }
    // HTTP/1 on a joined connection produces nothing.
    let mut conn = H2Conn::joined_mid_stream();
    let mut out = Vec::new();
    let req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    conn.feed(C, req, req.len() as u64, at(0), &mut out);
    conn.close(&mut out);
    assert!(out.is_empty());
    // len smaller than the data is taken as the data length.
    let mut conn = H2Conn::new();
    conn.feed(C, PREFACE, 0, at(0), &mut out);
    assert_eq!(conn.errors(), ParseErrors::default());
}

#[test]
fn damaged_recordings_never_panic() {
    let mut rng = Rng(7);
    // H2_FUZZ_ROUNDS raises the count for a longer local run.
    let rounds: usize = std::env::var("H2_FUZZ_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let recs = [transfers(CURL_GET), transfers(GRPC), transfers(PY_MULTI)];
    for round in 0..rounds {
        let rec = &recs[round % recs.len()];
        let mut conn = if rng.below(3) == 0 {
            H2Conn::joined_mid_stream()
        } else {
            H2Conn::new()
        };
        let mut out = Vec::new();
        for (dir, data) in rec {
            if rng.below(10) == 0 {
                continue; // a lost transfer
            }
            let mut data = data.clone();
            for _ in 0..rng.below(3) {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            let cap = if rng.below(4) == 0 {
                rng.below(data.len() + 1)
            } else {
                data.len()
            };
            conn.feed(*dir, &data[..cap], data.len() as u64, at(0), &mut out);
        }
        conn.close(&mut out);
        assert_paired(&out, |e| match e {
            H2Event::Start { seq, .. } => Paired::Start(*seq),
            H2Event::Done { seq, .. } | H2Event::Abandoned { seq } => Paired::Outcome(*seq),
        });
    }
}

/// Whatever was reported after joining late or capturing little must
/// agree with the full recording: fields may be missing, never wrong.
#[test]
fn partial_views_never_contradict_the_full_view() {
    let mut compared = 0;
    let mut incomplete = 0;
    for rec in [CURL_GET, GRPC, PY_MULTI] {
        let (full, _) = run_new(rec);
        let truth: BTreeMap<u32, &H2Exchange> = exchanges(&full)
            .into_iter()
            .map(|e| (e.request.stream_id, e))
            .collect();
        let rec = transfers(rec);
        for join in 0..rec.len() {
            for cap in [usize::MAX, 4096, 200, 64, 20] {
                let mut conn = if join == 0 {
                    H2Conn::new()
                } else {
                    H2Conn::joined_mid_stream()
                };
                let events = run(&mut conn, &rec[join..], cap);
                for got in exchanges(&events) {
                    let want = truth[&got.request.stream_id];
                    let (g, w) = (&got.request, &want.request);
                    for (field, truth) in [
                        (&g.method, &w.method),
                        (&g.scheme, &w.scheme),
                        (&g.authority, &w.authority),
                        (&g.path, &w.path),
                    ] {
                        assert!(field.is_none() || field == truth, "{field:?} vs {truth:?}");
                    }
                    assert!(g.headers.iter().all(|h| w.headers.contains(h)));
                    assert!(!g.grpc || w.grpc);
                    assert!(got.status.is_none() || got.status == want.status);
                    assert!(got.grpc_status.is_none() || got.grpc_status == want.grpc_status);
                    assert!(
                        got.response_headers
                            .iter()
                            .all(|h| want.response_headers.contains(h))
                    );
                    assert!(got.reset.is_none() || got.reset == want.reset);
                    let lossless = g.headers.len() == w.headers.len()
                        && got.response_headers.len() == want.response_headers.len();
                    assert!(lossless || got.incomplete_headers);
                    compared += 1;
                    incomplete += usize::from(got.incomplete_headers);
                }
            }
        }
    }
    assert!(compared > 100 && incomplete > 20);
}

#[test]
fn grpc_message_percent_decoding() {
    assert_eq!(percent_decode("a%20b%25"), "a b%");
    assert_eq!(percent_decode("bad%zz%2"), "bad%zz%2");
    assert_eq!(percent_decode("caf%C3%A9"), "café");
    assert_eq!(percent_decode("%FF"), "%FF");
    assert!(is_grpc_content_type("application/grpc+proto"));
    assert!(!is_grpc_content_type("application/json"));
}
