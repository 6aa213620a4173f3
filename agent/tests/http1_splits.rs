//! Property: how the probes cut a valid HTTP/1 conversation into transfers
//! does not change what the HTTP/1 stage reports.
//!
//! A conversation is a few exchanges on one keep-alive connection (bodies by
//! Content-Length or chunked, bodiless HEAD/204/304 responses, interim 1xx
//! responses, a last response delimited by the close). Its two byte streams
//! are cut at arbitrary points, the pieces interleaved in any order a real
//! client and server could produce (pipelining included: a response only
//! needs its own request to have been sent), and each piece is captured only
//! in part, as long as the capture covers the framing bytes (heads, chunk
//! lines) in it. The exchanges reported (method, target, status, body sizes)
//! must be those of the conversation, exactly as for the uncut streams.
use proptest::prelude::*;
use seam::protocol::{
    Direction, Timing,
    http1::{Http1Conn, Http1Event},
};

#[derive(Clone, Debug)]
enum Body {
    Empty,
    Length(Vec<u8>),
    /// Chunks (never empty), with extensions and a trailer on the last.
    Chunked(Vec<Vec<u8>>),
}

#[derive(Clone, Debug)]
enum Reply {
    Body(Body),
    /// 204, or 304 (with a Content-Length that must be ignored).
    Bodiless(u16),
    /// No Content-Length or chunking: the body runs to the close.
    UntilClose(Vec<u8>),
}

#[derive(Clone, Debug)]
struct Spec {
    method: &'static str,
    target: String,
    extra_headers: Vec<(String, String)>,
    request: Body,
    interim: Option<u16>,
    status: u16,
    reply: Reply,
}

/// What the stage should report for one exchange, timings aside.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Outcome {
    seq: u64,
    method: String,
    target: String,
    status: u16,
    request_body_len: u64,
    response_body_len: u64,
    end_inferred: bool,
}

/// Bytes with a per-byte flag: framing that the capture must include.
#[derive(Default)]
struct Stream {
    bytes: Vec<u8>,
    framing: Vec<bool>,
}

impl Stream {
    fn framing(&mut self, b: &[u8]) {
        self.bytes.extend_from_slice(b);
        self.framing.extend(std::iter::repeat_n(true, b.len()));
    }
    fn data(&mut self, b: &[u8]) {
        self.bytes.extend_from_slice(b);
        self.framing.extend(std::iter::repeat_n(false, b.len()));
    }
    fn len(&self) -> usize {
        self.bytes.len()
    }
}

fn body_strategy() -> impl Strategy<Value = Body> {
    prop_oneof![
        Just(Body::Empty),
        prop::collection::vec(any::<u8>(), 0..300).prop_map(Body::Length),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 1..80), 1..4)
            .prop_map(Body::Chunked),
    ]
}

fn spec_strategy(last: bool) -> impl Strategy<Value = Spec> {
    let method = prop::sample::select(vec![
        "GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS",
    ]);
    let target = (
        prop::collection::vec("[a-z0-9._-]{1,10}", 0..4),
        prop::option::of("[a-z]{1,5}=[a-zA-Z0-9%]{0,12}"),
    )
        .prop_map(|(segs, q)| {
            let mut t = format!("/{}", segs.join("/"));
            if let Some(q) = q {
                t.push('?');
                t.push_str(&q);
            }
            t
        });
    let headers = prop::collection::vec(("X-[A-Za-z]{1,12}", "[ -~]{0,40}"), 0..4);
    let reply = if last {
        prop_oneof![
            4 => body_strategy().prop_map(Reply::Body),
            1 => prop::sample::select(vec![204u16, 304]).prop_map(Reply::Bodiless),
            1 => prop::collection::vec(any::<u8>(), 0..300).prop_map(Reply::UntilClose),
        ]
        .boxed()
    } else {
        prop_oneof![
            4 => body_strategy().prop_map(Reply::Body),
            1 => prop::sample::select(vec![204u16, 304]).prop_map(Reply::Bodiless),
        ]
        .boxed()
    };
    (
        method,
        target,
        headers,
        body_strategy(),
        prop::option::of(prop::sample::select(vec![100u16, 103])),
        prop::sample::select(vec![200u16, 201, 302, 404, 500]),
        reply,
    )
        .prop_map(
            |(method, target, extra_headers, request, interim, status, reply)| Spec {
                method,
                target,
                extra_headers,
                request,
                interim,
                status,
                reply,
            },
        )
}

fn conversation_strategy() -> impl Strategy<Value = Vec<Spec>> {
    (
        prop::collection::vec(spec_strategy(false), 0..4),
        spec_strategy(true),
    )
        .prop_map(|(mut specs, last)| {
            specs.push(last);
            specs
        })
}

fn write_body(s: &mut Stream, body: &Body) {
    match body {
        Body::Empty => {}
        Body::Length(b) => s.data(b),
        Body::Chunked(chunks) => {
            for (i, c) in chunks.iter().enumerate() {
                let ext = if i % 2 == 1 { ";ext=1" } else { "" };
                s.framing(format!("{:x}{ext}\r\n", c.len()).as_bytes());
                s.data(c);
                s.framing(b"\r\n");
            }
            s.framing(b"0\r\nX-Trailer: t\r\n\r\n");
        }
    }
}

fn body_headers(body: &Body) -> String {
    match body {
        Body::Empty => String::new(),
        Body::Length(b) => format!("Content-Length: {}\r\n", b.len()),
        Body::Chunked(_) => "Transfer-Encoding: chunked\r\n".into(),
    }
}

fn body_len(body: &Body) -> u64 {
    match body {
        Body::Empty => 0,
        Body::Length(b) => b.len() as u64,
        Body::Chunked(chunks) => chunks.iter().map(|c| c.len() as u64).sum(),
    }
}

/// The conversation's two streams, where each request ends in the first and
/// each response starts in the second, and the outcomes to expect.
struct Conversation {
    requests: Stream,
    responses: Stream,
    /// Per exchange: request start and end offsets, response start and end.
    bounds: Vec<(usize, usize, usize, usize)>,
    expected: Vec<Outcome>,
}

fn build(specs: &[Spec]) -> Conversation {
    let mut requests = Stream::default();
    let mut responses = Stream::default();
    let mut bounds = Vec::new();
    let mut expected = Vec::new();
    for (seq, spec) in specs.iter().enumerate() {
        let req_start = requests.len();
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: svc:8000\r\n",
            spec.method, spec.target
        );
        for (k, v) in &spec.extra_headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&body_headers(&spec.request));
        head.push_str("\r\n");
        requests.framing(head.as_bytes());
        write_body(&mut requests, &spec.request);
        let req_end = requests.len();

        let resp_start = responses.len();
        if let Some(code) = spec.interim {
            responses.framing(format!("HTTP/1.1 {code} Interim\r\nX-Hint: 1\r\n\r\n").as_bytes());
        }
        let head_only = spec.method == "HEAD";
        let (status, response_body_len) = match &spec.reply {
            Reply::Body(body) => {
                let mut head = format!("HTTP/1.1 {} Something\r\n", spec.status);
                if head_only {
                    // The length of the body a GET would have had; none follows.
                    head.push_str(&format!("Content-Length: {}\r\n\r\n", body_len(body) + 7));
                    responses.framing(head.as_bytes());
                    (spec.status, 0)
                } else {
                    head.push_str(&body_headers(body));
                    if matches!(body, Body::Empty) {
                        head.push_str("Content-Length: 0\r\n");
                    }
                    head.push_str("\r\n");
                    responses.framing(head.as_bytes());
                    write_body(&mut responses, body);
                    (spec.status, body_len(body))
                }
            }
            Reply::Bodiless(code) => {
                let cl = if *code == 304 {
                    "Content-Length: 1234\r\n"
                } else {
                    ""
                };
                responses.framing(format!("HTTP/1.1 {code} Nothing\r\n{cl}\r\n").as_bytes());
                (*code, 0)
            }
            Reply::UntilClose(body) => {
                responses.framing(format!("HTTP/1.1 {} Closing\r\n\r\n", spec.status).as_bytes());
                if head_only {
                    (spec.status, 0)
                } else {
                    responses.data(body);
                    (spec.status, body.len() as u64)
                }
            }
        };
        bounds.push((req_start, req_end, resp_start, responses.len()));
        expected.push(Outcome {
            seq: seq as u64,
            method: spec.method.into(),
            target: spec.target.clone(),
            status,
            request_body_len: body_len(&spec.request),
            response_body_len,
            end_inferred: false,
        });
    }
    Conversation {
        requests,
        responses,
        bounds,
        expected,
    }
}

/// Feeds transfers `(direction, captured prefix, full length)` and closes.
fn run(transfers: &[(Direction, &[u8], u64)]) -> (Vec<Outcome>, Vec<(u64, String)>, usize) {
    let mut conn = Http1Conn::new();
    let mut out = Vec::new();
    for (i, (dir, data, len)) in transfers.iter().enumerate() {
        let t = 1_000 * (i as u64 + 1);
        conn.feed(
            *dir,
            data,
            *len,
            Timing {
                enter_ns: t,
                exit_ns: t + 10,
            },
            &mut out,
        );
    }
    conn.close(&mut out);
    let mut outcomes = Vec::new();
    let mut heads = Vec::new();
    let mut abandoned = 0;
    for e in out {
        match e {
            Http1Event::RequestHead { seq, head, .. } => heads.push((seq, head.target.clone())),
            Http1Event::Exchange(x) => outcomes.push(Outcome {
                seq: x.seq,
                method: x.request.method.clone(),
                target: x.request.target.clone(),
                status: x.response.status,
                request_body_len: x.request_body_len,
                response_body_len: x.response_body_len,
                end_inferred: x.end_inferred,
            }),
            Http1Event::Abandoned { .. } => abandoned += 1,
        }
    }
    outcomes.sort_by_key(|o| o.seq);
    (outcomes, heads, abandoned)
}

/// Each message as one fully captured transfer, request then response.
fn unsplit(c: &Conversation) -> Vec<(Direction, &[u8], u64)> {
    let mut t = Vec::new();
    for &(a, b, c_, d) in &c.bounds {
        let req = &c.requests.bytes[a..b];
        let resp = &c.responses.bytes[c_..d];
        t.push((Direction::Egress, req, req.len() as u64));
        t.push((Direction::Ingress, resp, resp.len() as u64));
    }
    t
}

/// Cut points of a stream of `len` bytes, from arbitrary fractions.
fn cuts(len: usize, fractions: &[u16]) -> Vec<usize> {
    let mut cuts: Vec<usize> = fractions
        .iter()
        .map(|f| (*f as usize * len) / (u16::MAX as usize + 1))
        .filter(|c| *c > 0)
        .collect();
    cuts.push(len);
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// Pieces `[start, end)` of a stream, each with its captured length: at
/// least up to its last framing byte, more by `extra` (a fraction of the rest).
fn pieces(s: &Stream, cut_at: &[usize], extra: &[u8]) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &end) in cut_at.iter().enumerate() {
        if end <= start {
            continue;
        }
        let must = s.framing[start..end]
            .iter()
            .rposition(|f| *f)
            .map_or(0, |p| p + 1);
        let rest = (end - start) - must;
        let more = extra.get(i).map_or(rest, |e| rest * *e as usize / 255);
        out.push((start, end, must + more));
        start = end;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn splits_do_not_change_exchanges(
        specs in conversation_strategy(),
        req_cuts in prop::collection::vec(any::<u16>(), 0..24),
        resp_cuts in prop::collection::vec(any::<u16>(), 0..24),
        req_extra in prop::collection::vec(any::<u8>(), 0..24),
        resp_extra in prop::collection::vec(any::<u8>(), 0..24),
        order in prop::collection::vec(any::<bool>(), 0..64),
    ) {
        let c = build(&specs);
        let (whole, whole_heads, whole_abandoned) = run(&unsplit(&c));
        prop_assert_eq!(&whole, &c.expected);
        prop_assert_eq!(whole_abandoned, 0);

        let eg = pieces(&c.requests, &cuts(c.requests.len(), &req_cuts), &req_extra);
        let ing = pieces(&c.responses, &cuts(c.responses.len(), &resp_cuts), &resp_extra);
        // A response may start only once its request was sent in full.
        let needs = |start: usize, end: usize| {
            c.bounds
                .iter()
                .filter(|b| b.2 >= start && b.2 < end)
                .map(|b| b.1)
                .max()
                .unwrap_or(0)
        };
        let mut transfers = Vec::new();
        let (mut e, mut i, mut sent) = (0, 0, 0);
        let mut choice = order.iter().copied().cycle().chain(std::iter::repeat(true));
        while e < eg.len() || i < ing.len() {
            let ingress_ready = i < ing.len() && needs(ing[i].0, ing[i].1) <= sent;
            let take_egress = e < eg.len()
                && (!ingress_ready || choice.next().unwrap_or(true));
            if take_egress {
                let (a, b, cap) = eg[e];
                transfers.push((Direction::Egress, &c.requests.bytes[a..a + cap], (b - a) as u64));
                sent = b;
                e += 1;
            } else {
                prop_assert!(ingress_ready, "schedule stuck");
                let (a, b, cap) = ing[i];
                transfers.push((Direction::Ingress, &c.responses.bytes[a..a + cap], (b - a) as u64));
                i += 1;
            }
        }
        let (split, split_heads, split_abandoned) = run(&transfers);
        prop_assert_eq!(&split, &whole);
        prop_assert_eq!(split_heads, whole_heads);
        prop_assert_eq!(split_abandoned, 0);
    }
}
