//! HTTP/1.0 and 1.1 over one connection, from what the probes saw: for each
//! transfer, a captured prefix of its bytes and its full length. Message
//! boundaries follow RFC 9112 framing (Content-Length, chunked, read until
//! close, bodiless responses); bytes past the captured prefix are counted, not
//! seen, so only heads need to be captured. When framing is lost (a head
//! longer than a capture, junk, missed events) the stream waits for a transfer
//! that starts a new message, and never makes a span from a guess.
use std::{collections::VecDeque, sync::Arc};

use bytes::BytesMut;

use super::{Direction, Timing, headers::Headers};

/// Largest head accepted; larger ones are junk or an attack.
pub const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;

/// A parsed request line and the headers seam uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// Request target as sent: origin form (`/a?b`), absolute form, `*`, or authority.
    pub target: String,
    /// `1.0` or `1.1`.
    pub version: &'static str,
    pub headers: Headers,
}

impl RequestHead {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// An HTTP/1.1 request head for unit tests.
    #[cfg(test)]
    pub fn for_test(method: &str, target: &str, headers: &[(&str, &str)]) -> Self {
        RequestHead {
            method: method.into(),
            target: target.into(),
            version: "1.1",
            headers: headers.iter().copied().collect(),
        }
    }
}

/// A parsed status line and the headers seam uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub version: &'static str,
    pub headers: Headers,
}

impl ResponseHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }
}

/// What one transfer revealed about the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Http1Event {
    /// A request head is complete; `start` is its first transfer.
    RequestHead {
        seq: u64,
        head: Arc<RequestHead>,
        start: Timing,
    },
    /// A request and its final response are complete.
    Exchange(Exchange),
    /// A request will never get a response seen by seam (connection closed,
    /// framing lost); `seq` matches its [`Http1Event::RequestHead`].
    Abandoned { seq: u64 },
}

/// One request with its final response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub seq: u64,
    pub request: Arc<RequestHead>,
    pub response: ResponseHead,
    /// First and last transfer of the request.
    pub request_start: Timing,
    pub request_end: Timing,
    /// First and last transfer of the final response.
    pub response_start: Timing,
    pub response_end: Timing,
    /// Bytes of request and response bodies.
    pub request_body_len: u64,
    pub response_body_len: u64,
    /// The response's end was inferred (framing lost mid-body, ended by the
    /// next request or the close) rather than read from its framing.
    pub end_inferred: bool,
}

/// Counters a connection keeps about problems in its byte streams.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Http1Errors {
    /// Times framing was lost and the stream had to wait for a message start.
    pub desyncs: u64,
    /// Responses that arrived with no request to pair with.
    pub orphan_responses: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Requests,
    Responses,
}

impl Kind {
    /// Whether a message of this kind may begin with bytes classified as `start`.
    fn starts(self, start: Start) -> bool {
        matches!(
            (self, start),
            (Kind::Requests, Start::Request | Start::Maybe)
                | (Kind::Responses, Start::Response | Start::Maybe)
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line.
    Size,
    /// Inside chunk data.
    Data(u64),
    /// The CRLF after chunk data; how many of its bytes remain.
    DataEnd(u8),
    /// Trailer section after the last chunk.
    Trailers,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Between messages.
    Idle,
    /// Accumulating a head in `buf`.
    Head,
    /// Body of known remaining length.
    Body(u64),
    Chunked(ChunkState),
    /// Response body delimited by the connection's close.
    UntilClose,
    /// Not HTTP any more (CONNECT tunnel, protocol upgrade).
    Tunnel,
    /// Framing lost; waiting for a transfer that begins a message.
    Lost,
}

/// One direction of the connection.
#[derive(Debug)]
struct HalfStream {
    state: State,
    buf: BytesMut,
    /// Line being accumulated inside a chunked body (size line, trailers).
    line: Vec<u8>,
    /// First transfer of the message in progress.
    msg_start: Option<Timing>,
    /// Last transfer seen in this direction.
    last: Option<Timing>,
    body_len: u64,
    desyncs: u64,
}

impl HalfStream {
    fn new() -> Self {
        Self {
            state: State::Idle,
            buf: BytesMut::new(),
            line: Vec::new(),
            msg_start: None,
            last: None,
            body_len: 0,
            desyncs: 0,
        }
    }

    fn lose(&mut self) {
        if self.state != State::Lost {
            self.desyncs += 1;
        }
        self.state = State::Lost;
        self.buf.clear();
        self.line.clear();
        self.msg_start = None;
    }
}

/// A request seen but not yet answered.
#[derive(Debug)]
struct Pending {
    seq: u64,
    head: Arc<RequestHead>,
    start: Timing,
    /// Set once the request's body is complete.
    end: Option<Timing>,
    body_len: u64,
}

/// A response head waiting for its body to end.
#[derive(Debug)]
struct OpenResponse {
    head: ResponseHead,
    start: Timing,
}

/// HTTP/1 state of one TCP connection, as seen from one process.
#[derive(Debug)]
pub struct Http1Conn {
    /// Which direction carries requests, once known.
    requests_dir: Option<Direction>,
    /// First bytes of each direction while too few to tell requests from
    /// responses (egress, ingress), with the timing of their first transfer.
    undecided: [(Vec<u8>, Timing); 2],
    egress: HalfStream,
    ingress: HalfStream,
    pending: VecDeque<Pending>,
    open_response: Option<OpenResponse>,
    next_seq: u64,
    orphan_responses: u64,
}

impl Default for Http1Conn {
    fn default() -> Self {
        Self::new()
    }
}

/// Request methods recognised at the start of a transfer (RFC 9110, 5789,
/// WebDAV). Anything else is not taken as the start of a request.
const METHODS: &[&str] = &[
    "GET",
    "POST",
    "PUT",
    "DELETE",
    "HEAD",
    "OPTIONS",
    "PATCH",
    "CONNECT",
    "TRACE",
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
    "REPORT",
    "MKCALENDAR",
    "SEARCH",
    "PURGE",
];

/// Bytes that settle whether a stream starts with a request or a response.
const START_PROBE: usize = 16;

/// What the first bytes of a message say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    Request,
    Response,
    /// Too short to tell, but could still become a request or response.
    Maybe,
    No,
}

/// Classifies the first bytes of a message.
fn classify(data: &[u8]) -> Start {
    if looks_like_request(data) {
        return Start::Request;
    }
    if looks_like_response(data) {
        return Start::Response;
    }
    let prefix_of = |word: &[u8]| data.len() < word.len() && word.starts_with(data);
    let partial_method = METHODS.iter().any(|m| {
        let m = m.as_bytes();
        prefix_of(m) || (data.len() == m.len() && data == m)
    });
    if !data.is_empty() && (partial_method || prefix_of(b"HTTP/1.")) {
        Start::Maybe
    } else {
        Start::No
    }
}

/// Whether `data` may begin an HTTP/1 request or response (possibly cut short).
pub fn could_start_message(data: &[u8]) -> bool {
    classify(data) != Start::No
}

/// Whether `data` (a transfer's first bytes) begins an HTTP/1 request.
pub fn looks_like_request(data: &[u8]) -> bool {
    METHODS
        .iter()
        .any(|m| data.len() > m.len() && data.starts_with(m.as_bytes()) && data[m.len()] == b' ')
}

/// Whether `data` begins an HTTP/1 response.
pub fn looks_like_response(data: &[u8]) -> bool {
    data.starts_with(b"HTTP/1.")
}

impl Http1Conn {
    pub fn new() -> Self {
        Self {
            requests_dir: None,
            undecided: Default::default(),
            egress: HalfStream::new(),
            ingress: HalfStream::new(),
            pending: VecDeque::new(),
            open_response: None,
            next_seq: 0,
            orphan_responses: 0,
        }
    }

    /// Direction that carries requests, once a message revealed it.
    pub fn requests_direction(&self) -> Option<Direction> {
        self.requests_dir
    }

    /// Problems seen so far in this connection's streams.
    pub fn errors(&self) -> Http1Errors {
        Http1Errors {
            desyncs: self.egress.desyncs + self.ingress.desyncs,
            orphan_responses: self.orphan_responses,
        }
    }

    /// Requests seen and not yet answered.
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    /// Feeds one transfer: `data` is its captured prefix, `len` its full length.
    pub fn feed(
        &mut self,
        dir: Direction,
        data: &[u8],
        len: u64,
        timing: Timing,
        out: &mut Vec<Http1Event>,
    ) {
        let len = len.max(data.len() as u64);
        if self.requests_dir.is_none() {
            let slot = &mut self.undecided[dir as usize];
            if slot.0.is_empty() {
                slot.1 = timing;
            }
            slot.0
                .extend_from_slice(&data[..data.len().min(START_PROBE)]);
            let decided = match classify(&slot.0) {
                Start::Request => dir,
                Start::Response => dir.opposite(),
                Start::Maybe if len == data.len() as u64 && slot.0.len() < START_PROBE => return,
                Start::Maybe | Start::No => {
                    slot.0.clear();
                    return;
                }
            };
            self.requests_dir = Some(decided);
            // Replay the bytes of earlier transfers that were held back.
            let (held, first) = std::mem::take(&mut self.undecided[dir as usize]);
            self.undecided = Default::default();
            let earlier = held.len() - data.len().min(START_PROBE);
            if earlier > 0 {
                self.feed(dir, &held[..earlier], earlier as u64, first, out);
            }
        }
        let kind = if Some(dir) == self.requests_dir {
            Kind::Requests
        } else {
            Kind::Responses
        };
        {
            let half = self.half(dir);
            half.last = Some(timing);
            // A transfer that begins a message resynchronises a lost stream.
            if half.state == State::Lost {
                if !kind.starts(classify(data)) {
                    return;
                }
                half.state = State::Idle;
            }
        }
        if kind == Kind::Requests
            && self.half(dir).state == State::Idle
            && classify(data) != Start::No
        {
            // A new request implies the previous response is over.
            self.finish_inferred(dir.opposite(), out);
        }
        let mut pos = 0usize;
        while pos < data.len() {
            let used = self.step(dir, kind, &data[pos..], timing, out);
            if used == 0 {
                break;
            }
            pos += used;
        }
        let unseen = len - data.len() as u64;
        if unseen > 0 {
            self.skip(dir, kind, unseen, timing, out);
        }
    }

    /// The connection closed: messages delimited by the close end here, and
    /// anything still waiting for an answer is abandoned.
    pub fn close(&mut self, out: &mut Vec<Http1Event>) {
        if let Some(req_dir) = self.requests_dir {
            let resp_dir = req_dir.opposite();
            let half = self.half(resp_dir);
            if half.state == State::UntilClose {
                let end = half.last;
                let body_len = std::mem::take(&mut half.body_len);
                half.state = State::Idle;
                if let Some(end) = end {
                    self.complete_response(end, false, body_len, out);
                }
            } else if matches!(half.state, State::Lost | State::Tunnel)
                && self.open_response.is_some()
            {
                self.finish_inferred(resp_dir, out);
            }
        }
        for p in self.pending.drain(..) {
            out.push(Http1Event::Abandoned { seq: p.seq });
        }
        self.open_response = None;
    }

    /// Bytes of this connection were lost between the last transfer and the
    /// next: requests in flight are abandoned (their exchange would be built
    /// from a partial stream), and each direction that was inside a message
    /// waits for the next transfer that begins one. Unlike [`Self::close`],
    /// nothing is completed, not even a response delimited by the close.
    pub fn discard(&mut self, out: &mut Vec<Http1Event>) {
        for p in self.pending.drain(..) {
            out.push(Http1Event::Abandoned { seq: p.seq });
        }
        self.open_response = None;
        self.undecided = Default::default();
        for half in [&mut self.egress, &mut self.ingress] {
            if !matches!(half.state, State::Idle | State::Tunnel) {
                half.lose();
            }
        }
    }

    fn half(&mut self, dir: Direction) -> &mut HalfStream {
        match dir {
            Direction::Egress => &mut self.egress,
            Direction::Ingress => &mut self.ingress,
        }
    }

    /// Consumes captured bytes at the front of `data`; returns how many.
    fn step(
        &mut self,
        dir: Direction,
        kind: Kind,
        data: &[u8],
        timing: Timing,
        out: &mut Vec<Http1Event>,
    ) -> usize {
        let state = self.half(dir).state.clone();
        match state {
            State::Idle => {
                if !kind.starts(classify(data)) {
                    // Tolerate stray CRLF between messages (RFC 9112 §2.2).
                    let crlf = data
                        .iter()
                        .take_while(|b| **b == b'\r' || **b == b'\n')
                        .count();
                    if crlf > 0 {
                        return crlf;
                    }
                    self.half(dir).lose();
                    return 0;
                }
                let half = self.half(dir);
                half.state = State::Head;
                half.buf.clear();
                half.msg_start = Some(timing);
                half.body_len = 0;
                self.step(dir, kind, data, timing, out)
            }
            State::Head => self.step_head(dir, kind, data, timing, out),
            State::Body(remaining) => {
                let take = remaining.min(data.len() as u64);
                self.consume_body(dir, kind, take, timing, out);
                take as usize
            }
            State::Chunked(cs) => self.step_chunked(dir, kind, cs, data, timing, out),
            State::UntilClose => {
                self.half(dir).body_len += data.len() as u64;
                data.len()
            }
            State::Tunnel | State::Lost => data.len(),
        }
    }

    fn step_head(
        &mut self,
        dir: Direction,
        kind: Kind,
        data: &[u8],
        timing: Timing,
        out: &mut Vec<Http1Event>,
    ) -> usize {
        let half = self.half(dir);
        let before = half.buf.len();
        if before == 0
            && let Some(end) = find_head_end(data)
        {
            // The whole head came in one transfer (the usual case): parse it
            // where it lies instead of copying it into the buffer first.
            if data.len() >= START_PROBE && !kind.starts(classify(data)) {
                half.lose();
                return 0;
            }
            let start = half.msg_start.unwrap_or(timing);
            self.parse_head(dir, kind, &data[..end], start, timing, out);
            return end;
        }
        // Look for the blank line from a few bytes back, in case it straddles transfers.
        let search_from = before.saturating_sub(3);
        half.buf.extend_from_slice(data);
        // A head begun on a partial start line is confirmed once long enough.
        if before < START_PROBE && half.buf.len() >= START_PROBE {
            let start = classify(&half.buf);
            if start == Start::Maybe || !kind.starts(start) {
                half.lose();
                return 0;
            }
        }
        let Some(end) = find_head_end(&half.buf[search_from..]).map(|e| e + search_from) else {
            if half.buf.len() > MAX_HEAD {
                half.lose();
            }
            return data.len();
        };
        let head_bytes = half.buf.split_to(end);
        half.buf.clear();
        let used = end - before;
        let start = half.msg_start.unwrap_or(timing);
        self.parse_head(dir, kind, &head_bytes, start, timing, out);
        used
    }

    /// Parses a complete head (through its blank line) and opens its message.
    fn parse_head(
        &mut self,
        dir: Direction,
        kind: Kind,
        head_bytes: &[u8],
        start: Timing,
        timing: Timing,
        out: &mut Vec<Http1Event>,
    ) {
        match kind {
            Kind::Requests => match parse_request(head_bytes) {
                // Shared by the start record and the exchange: cloned by
                // reference count, not header by header.
                Some(head) => self.on_request_head(dir, Arc::new(head), start, timing, out),
                None => self.half(dir).lose(),
            },
            Kind::Responses => match parse_response(head_bytes) {
                Some(head) => self.on_response_head(dir, head, start, timing, out),
                None => self.half(dir).lose(),
            },
        }
    }

    fn on_request_head(
        &mut self,
        dir: Direction,
        head: Arc<RequestHead>,
        start: Timing,
        timing: Timing,
        out: &mut Vec<Http1Event>,
    ) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let framing = request_framing(&head);
        out.push(Http1Event::RequestHead {
            seq,
            head: head.clone(),
            start,
        });
        self.pending.push_back(Pending {
            seq,
            head,
            start,
            end: None,
            body_len: 0,
        });
        self.begin_body(dir, Kind::Requests, framing, timing, out);
    }

    fn on_response_head(
        &mut self,
        dir: Direction,
        head: ResponseHead,
        start: Timing,
        timing: Timing,
        out: &mut Vec<Http1Event>,
    ) {
        let Some(request) = self.pending.front() else {
            // Joined mid-connection, or junk: keep framing, make no span.
            self.orphan_responses += 1;
            let framing = response_framing(&head, None);
            self.begin_body(dir, Kind::Responses, framing, timing, out);
            return;
        };
        let method = request.head.method.clone();
        if (100..200).contains(&head.status) && head.status != 101 {
            // Interim response (100 Continue, 103 Early Hints): the final one follows.
            self.half(dir).state = State::Idle;
            return;
        }
        let framing = response_framing(&head, Some(&method));
        let tunnel =
            head.status == 101 || (method == "CONNECT" && (200..300).contains(&head.status));
        self.open_response = Some(OpenResponse { head, start });
        if tunnel {
            self.complete_response(timing, false, 0, out);
            self.egress.state = State::Tunnel;
            self.ingress.state = State::Tunnel;
            return;
        }
        self.begin_body(dir, Kind::Responses, framing, timing, out);
    }

    fn begin_body(
        &mut self,
        dir: Direction,
        kind: Kind,
        framing: Framing,
        timing: Timing,
        out: &mut Vec<Http1Event>,
    ) {
        let half = self.half(dir);
        match framing {
            Framing::Length(0) | Framing::None => {
                half.state = State::Idle;
                self.message_done(dir, kind, timing, out);
            }
            Framing::Length(n) => half.state = State::Body(n),
            Framing::Chunked => half.state = State::Chunked(ChunkState::Size),
            Framing::UntilClose => half.state = State::UntilClose,
        }
    }

    fn consume_body(
        &mut self,
        dir: Direction,
        kind: Kind,
        n: u64,
        timing: Timing,
        out: &mut Vec<Http1Event>,
    ) {
        let half = self.half(dir);
        half.body_len += n;
        if let State::Body(remaining) = half.state {
            let left = remaining - n;
            if left == 0 {
                half.state = State::Idle;
                self.message_done(dir, kind, timing, out);
            } else {
                half.state = State::Body(left);
            }
        }
    }

    fn step_chunked(
        &mut self,
        dir: Direction,
        kind: Kind,
        cs: ChunkState,
        data: &[u8],
        timing: Timing,
        out: &mut Vec<Http1Event>,
    ) -> usize {
        match cs {
            ChunkState::Size => {
                let half = self.half(dir);
                let Some(nl) = data.iter().position(|b| *b == b'\n') else {
                    half.line.extend_from_slice(data);
                    if half.line.len() > 1024 {
                        half.lose();
                    }
                    return data.len();
                };
                half.line.extend_from_slice(&data[..nl]);
                let size = parse_chunk_size(&half.line);
                half.line.clear();
                match size {
                    Some(0) => half.state = State::Chunked(ChunkState::Trailers),
                    Some(n) => half.state = State::Chunked(ChunkState::Data(n)),
                    None => half.lose(),
                }
                nl + 1
            }
            ChunkState::Data(remaining) => {
                let take = remaining.min(data.len() as u64);
                self.advance_chunk_data(dir, remaining, take);
                take as usize
            }
            ChunkState::DataEnd(left) => {
                let half = self.half(dir);
                let take = (left as usize).min(data.len());
                if !data[..take].iter().all(|b| *b == b'\r' || *b == b'\n') {
                    half.lose();
                    return 0;
                }
                let left = left - take as u8;
                half.state = if left == 0 {
                    State::Chunked(ChunkState::Size)
                } else {
                    State::Chunked(ChunkState::DataEnd(left))
                };
                take
            }
            ChunkState::Trailers => {
                let half = self.half(dir);
                let Some(nl) = data.iter().position(|b| *b == b'\n') else {
                    half.line.extend_from_slice(data);
                    if half.line.len() > MAX_HEAD {
                        half.lose();
                    }
                    return data.len();
                };
                half.line.extend_from_slice(&data[..nl]);
                let blank = half.line.iter().all(|b| *b == b'\r');
                half.line.clear();
                if blank {
                    half.state = State::Idle;
                    self.message_done(dir, kind, timing, out);
                }
                nl + 1
            }
        }
    }

    fn advance_chunk_data(&mut self, dir: Direction, remaining: u64, take: u64) {
        let half = self.half(dir);
        half.body_len += take;
        let left = remaining - take;
        half.state = if left == 0 {
            State::Chunked(ChunkState::DataEnd(2))
        } else {
            State::Chunked(ChunkState::Data(left))
        };
    }

    /// `n` bytes of the transfer were not captured.
    fn skip(
        &mut self,
        dir: Direction,
        kind: Kind,
        mut n: u64,
        timing: Timing,
        out: &mut Vec<Http1Event>,
    ) {
        while n > 0 {
            let state = self.half(dir).state.clone();
            match state {
                State::Body(remaining) => {
                    let take = remaining.min(n);
                    self.consume_body(dir, kind, take, timing, out);
                    n -= take;
                }
                State::Chunked(ChunkState::Data(remaining)) => {
                    let take = remaining.min(n);
                    self.advance_chunk_data(dir, remaining, take);
                    n -= take;
                }
                State::Chunked(ChunkState::DataEnd(left)) => {
                    let take = (left as u64).min(n);
                    let left = left - take as u8;
                    self.half(dir).state = if left == 0 {
                        State::Chunked(ChunkState::Size)
                    } else {
                        State::Chunked(ChunkState::DataEnd(left))
                    };
                    n -= take;
                }
                State::UntilClose => {
                    self.half(dir).body_len += n;
                    n = 0;
                }
                State::Tunnel | State::Lost => n = 0,
                State::Idle | State::Head | State::Chunked(_) => {
                    // Unseen bytes where a head or chunk header should be.
                    self.half(dir).lose();
                    n = 0;
                }
            }
        }
    }

    fn message_done(
        &mut self,
        dir: Direction,
        kind: Kind,
        timing: Timing,
        out: &mut Vec<Http1Event>,
    ) {
        let body_len = std::mem::take(&mut self.half(dir).body_len);
        self.half(dir).msg_start = None;
        match kind {
            Kind::Requests => {
                if let Some(p) = self.pending.iter_mut().rev().find(|p| p.end.is_none()) {
                    p.end = Some(timing);
                    p.body_len = body_len;
                }
            }
            Kind::Responses => self.complete_response(timing, false, body_len, out),
        }
    }

    /// The open response ends at `end`.
    fn complete_response(
        &mut self,
        end: Timing,
        inferred: bool,
        response_body_len: u64,
        out: &mut Vec<Http1Event>,
    ) {
        let Some(open) = self.open_response.take() else {
            return;
        };
        let Some(req) = self.pending.pop_front() else {
            return;
        };
        out.push(Http1Event::Exchange(Exchange {
            seq: req.seq,
            request_end: req.end.unwrap_or(req.start),
            request: req.head,
            request_start: req.start,
            response: open.head,
            response_start: open.start,
            response_end: end,
            request_body_len: req.body_len,
            response_body_len,
            end_inferred: inferred,
        }));
    }

    /// Ends a response whose framing was lost, at the last transfer seen in
    /// its direction, because something proved it over.
    fn finish_inferred(&mut self, resp_dir: Direction, out: &mut Vec<Http1Event>) {
        if self.open_response.is_none() {
            return;
        }
        let half = self.half(resp_dir);
        if !matches!(half.state, State::Lost | State::Tunnel | State::UntilClose) {
            return;
        }
        let Some(end) = half.last else {
            return;
        };
        if half.state == State::UntilClose {
            half.state = State::Idle;
        }
        let body_len = std::mem::take(&mut half.body_len);
        self.complete_response(end, true, body_len, out);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

fn is_chunked(headers: &Headers) -> bool {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
        .any(|(_, v)| {
            v.rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
        })
}

fn content_length(headers: &Headers) -> Option<u64> {
    headers
        .get("content-length")
        .and_then(|v| v.trim().parse().ok())
}

/// RFC 9112 §6.3 for requests: chunked, else Content-Length, else no body.
fn request_framing(head: &RequestHead) -> Framing {
    if is_chunked(&head.headers) {
        Framing::Chunked
    } else {
        content_length(&head.headers).map_or(Framing::None, Framing::Length)
    }
}

/// RFC 9112 §6.3 for responses, given the request's method when known.
fn response_framing(head: &ResponseHead, method: Option<&str>) -> Framing {
    if method == Some("HEAD")
        || (100..200).contains(&head.status)
        || head.status == 204
        || head.status == 304
    {
        return Framing::None;
    }
    if is_chunked(&head.headers) {
        Framing::Chunked
    } else if let Some(n) = content_length(&head.headers) {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    }
}

/// Offset just past the blank line that ends a head.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some(i + 2);
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let hex = line.split(|b| *b == b';').next()?;
    let hex = std::str::from_utf8(hex).ok()?.trim();
    if hex.is_empty() || hex.len() > 15 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

fn version(v: Option<u8>) -> Option<&'static str> {
    match v? {
        0 => Some("1.0"),
        1 => Some("1.1"),
        _ => None,
    }
}

fn owned_headers(headers: &[httparse::Header<'_>]) -> Headers {
    let bytes = headers.iter().map(|h| h.name.len() + h.value.len()).sum();
    let mut out = Headers::with_capacity(headers.len(), bytes);
    for h in headers {
        out.push_raw(h.name, h.value);
    }
    out
}

fn parse_request(bytes: &[u8]) -> Option<RequestHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => Some(RequestHead {
            method: req.method?.to_string(),
            target: req.path?.to_string(),
            version: version(req.version)?,
            headers: owned_headers(req.headers),
        }),
        Err(httparse::Error::TooManyHeaders) => {
            let mut many = vec![httparse::EMPTY_HEADER; MAX_HEAD / 4];
            let mut req = httparse::Request::new(&mut many);
            match req.parse(bytes).ok()? {
                httparse::Status::Complete(_) => Some(RequestHead {
                    method: req.method?.to_string(),
                    target: req.path?.to_string(),
                    version: version(req.version)?,
                    headers: owned_headers(req.headers),
                }),
                httparse::Status::Partial => None,
            }
        }
        _ => None,
    }
}

fn parse_response(bytes: &[u8]) -> Option<ResponseHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => Some(ResponseHead {
            status: resp.code?,
            version: version(resp.version)?,
            headers: owned_headers(resp.headers),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u64) -> Timing {
        Timing {
            enter_ns: n * 10,
            exit_ns: n * 10 + 5,
        }
    }

    struct Feeder {
        conn: Http1Conn,
        out: Vec<Http1Event>,
        clock: u64,
    }

    impl Feeder {
        fn new() -> Self {
            Self {
                conn: Http1Conn::new(),
                out: Vec::new(),
                clock: 0,
            }
        }
        fn send(&mut self, dir: Direction, data: &[u8]) -> Timing {
            self.clock += 1;
            let timing = t(self.clock);
            self.conn
                .feed(dir, data, data.len() as u64, timing, &mut self.out);
            timing
        }
        /// A transfer of `len` bytes of which only `data` was captured.
        fn send_partial(&mut self, dir: Direction, data: &[u8], len: u64) -> Timing {
            self.clock += 1;
            let timing = t(self.clock);
            self.conn.feed(dir, data, len, timing, &mut self.out);
            timing
        }
        fn exchanges(&self) -> Vec<&Exchange> {
            self.out
                .iter()
                .filter_map(|e| match e {
                    Http1Event::Exchange(x) => Some(x),
                    _ => None,
                })
                .collect()
        }
        fn heads(&self) -> usize {
            self.out
                .iter()
                .filter(|e| matches!(e, Http1Event::RequestHead { .. }))
                .count()
        }
    }

    use Direction::{Egress as Out, Ingress as In};

    #[test]
    fn simple_server_exchange() {
        let mut f = Feeder::new();
        let t1 = f.send(
            In,
            b"GET /users/7?x=1 HTTP/1.1\r\nHost: api:8080\r\nUser-Agent: curl/8\r\n\r\n",
        );
        let t2 = f.send(Out, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        let x = f.exchanges();
        assert_eq!(x.len(), 1);
        assert_eq!(x[0].request.method, "GET");
        assert_eq!(x[0].request.target, "/users/7?x=1");
        assert_eq!(x[0].request.version, "1.1");
        assert_eq!(x[0].request.header("host"), Some("api:8080"));
        assert_eq!(x[0].response.status, 200);
        assert_eq!(x[0].request_start, t1);
        assert_eq!(x[0].response_end, t2);
        assert_eq!(x[0].response_body_len, 5);
        assert_eq!(f.conn.requests_direction(), Some(In));
        assert!(!x[0].end_inferred);
    }

    #[test]
    fn request_split_across_many_reads() {
        let raw = b"POST /orders HTTP/1.1\r\nHost: o\r\nContent-Length: 11\r\n\r\nhello world";
        let mut f = Feeder::new();
        let first = f.send(Out, &raw[..1]);
        for b in raw[1..].chunks(1) {
            f.send(Out, b);
        }
        let resp = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
        for b in resp.chunks(3) {
            f.send(In, b);
        }
        let x = f.exchanges();
        assert_eq!(x.len(), 1);
        assert_eq!(x[0].request.method, "POST");
        assert_eq!(x[0].request_start, first);
        assert_eq!(x[0].request_body_len, 11);
        assert_eq!(x[0].response.status, 201);
        assert_eq!(f.heads(), 1);
    }

    #[test]
    fn head_end_straddles_reads() {
        let mut f = Feeder::new();
        f.send(In, b"GET / HTTP/1.1\r\nHost: a\r\n\r");
        f.send(In, b"\n");
        f.send(Out, b"HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(f.exchanges().len(), 1);
    }

    #[test]
    fn pipelined_requests_pair_in_order() {
        let mut f = Feeder::new();
        f.send(
            Out,
            b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\nGET /c HTTP/1.1\r\nHost: h\r\n\r\n",
        );
        assert_eq!(f.heads(), 3);
        f.send(
            In,
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nbbHTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
        );
        let x = f.exchanges();
        let got: Vec<(&str, u16)> = x
            .iter()
            .map(|x| (x.request.target.as_str(), x.response.status))
            .collect();
        assert_eq!(got, vec![("/a", 200), ("/b", 404), ("/c", 500)]);
    }

    #[test]
    fn chunked_response_split_everywhere() {
        let body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for split in 1..body.len() {
            let mut f = Feeder::new();
            f.send(Out, b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n");
            f.send(In, &body[..split]);
            assert!(
                f.exchanges().is_empty(),
                "complete too early at split {split}"
            );
            let last = f.send(In, &body[split..]);
            let x = f.exchanges();
            assert_eq!(x.len(), 1, "split {split}");
            assert_eq!(x[0].response_body_len, 11);
            assert_eq!(x[0].response_end, last);
        }
    }

    #[test]
    fn chunked_request_body() {
        let mut f = Feeder::new();
        f.send(
            In,
            b"PUT /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        f.send(In, b"3\r\nabc\r\n");
        let body_end = f.send(In, b"0\r\n\r\n");
        f.send(Out, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let x = f.exchanges();
        assert_eq!(x.len(), 1);
        assert_eq!(x[0].request_body_len, 3);
        assert_eq!(x[0].request_end, body_end);
    }

    #[test]
    fn keep_alive_hundred_requests() {
        let mut f = Feeder::new();
        for i in 0..100 {
            f.send(
                Out,
                format!("GET /item/{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes(),
            );
            f.send(In, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n");
            f.send(In, b"abc");
        }
        let x = f.exchanges();
        assert_eq!(x.len(), 100);
        for (i, x) in x.iter().enumerate() {
            assert_eq!(x.request.target, format!("/item/{i}"));
            assert_eq!(x.seq, i as u64);
        }
        assert_eq!(f.conn.pending_requests(), 0);
    }

    #[test]
    fn uncaptured_body_bytes_are_counted() {
        let mut f = Feeder::new();
        f.send(Out, b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n");
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n";
        let mut first = head.to_vec();
        first.extend(std::iter::repeat_n(b'x', 4096 - head.len()));
        // 64 transfers of 16 KiB plus the head; only 4 KiB of each captured.
        let mut sent = 0u64;
        let total = head.len() as u64 + 1_048_576;
        let mut last = None;
        while sent < total {
            let n = (total - sent).min(16384);
            let data: &[u8] = if sent == 0 {
                &first
            } else {
                &[b'y'; 4096][..(n as usize).min(4096)]
            };
            last = Some(f.send_partial(In, data, n));
            sent += n;
            if sent < total {
                assert!(f.exchanges().is_empty());
            }
        }
        let x = f.exchanges();
        assert_eq!(x.len(), 1);
        assert_eq!(x[0].response_body_len, 1_048_576);
        assert_eq!(Some(x[0].response_end), last);
    }

    #[test]
    fn chunked_with_uncaptured_chunk_data() {
        let mut f = Feeder::new();
        f.send(Out, b"GET /s HTTP/1.1\r\nHost: h\r\n\r\n");
        f.send(In, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        // Each write is "4000\r\n" + 16 KiB + "\r\n"; 4 KiB captured.
        for _ in 0..4 {
            let mut cap = b"4000\r\n".to_vec();
            cap.extend(std::iter::repeat_n(b'z', 4096 - cap.len()));
            f.send_partial(In, &cap, 6 + 16384 + 2);
        }
        assert!(f.exchanges().is_empty());
        f.send(In, b"0\r\n\r\n");
        let x = f.exchanges();
        assert_eq!(x.len(), 1);
        assert_eq!(x[0].response_body_len, 4 * 16384);
    }

    #[test]
    fn head_response_and_bodiless_statuses() {
        let mut f = Feeder::new();
        f.send(Out, b"HEAD /h HTTP/1.1\r\nHost: h\r\n\r\n");
        f.send(In, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
        f.send(Out, b"GET /n HTTP/1.1\r\nHost: h\r\n\r\n");
        f.send(
            In,
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\n\r\n",
        );
        f.send(Out, b"DELETE /d HTTP/1.1\r\nHost: h\r\n\r\n");
        f.send(In, b"HTTP/1.1 204 No Content\r\n\r\n");
        let got: Vec<u16> = f.exchanges().iter().map(|x| x.response.status).collect();
        assert_eq!(got, vec![200, 304, 204]);
        assert_eq!(f.conn.pending_requests(), 0);
    }

    #[test]
    fn expect_continue_skips_interim_response() {
        let mut f = Feeder::new();
        f.send(
            Out,
            b"POST /u HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
        );
        f.send(In, b"HTTP/1.1 100 Continue\r\n\r\n");
        f.send(Out, b"data");
        let end = f.send(In, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
        let x = f.exchanges();
        assert_eq!(x.len(), 1);
        assert_eq!(x[0].response.status, 201);
        assert_eq!(x[0].request_body_len, 4);
        assert_eq!(x[0].response_end, end);
    }

    #[test]
    fn http10_body_until_close() {
        let mut f = Feeder::new();
        f.send(Out, b"GET /old HTTP/1.0\r\n\r\n");
        f.send(In, b"HTTP/1.0 200 OK\r\n\r\nsome");
        let last = f.send(In, b" body");
        assert!(f.exchanges().is_empty());
        f.conn.close(&mut f.out);
        let x = f.exchanges();
        assert_eq!(x.len(), 1);
        assert_eq!(x[0].request.version, "1.0");
        assert_eq!(x[0].response_body_len, 9);
        assert_eq!(x[0].response_end, last);
    }

    #[test]
    fn junk_then_close_yields_nothing() {
        let mut f = Feeder::new();
        f.send(In, &[0x16, 0x03, 0x01, 0x02, 0x00, 0xff, 0x00]);
        f.send(In, b"\x00\x01\x02 binary junk");
        f.conn.close(&mut f.out);
        assert!(f.out.is_empty());
    }

    #[test]
    fn truncated_request_yields_no_exchange() {
        let mut f = Feeder::new();
        f.send(In, b"GET /trunc HTTP/1.1\r\nHost: h\r\nX-Half: ");
        f.conn.close(&mut f.out);
        assert!(f.out.is_empty());
    }

    #[test]
    fn oversized_head_is_dropped_then_stream_recovers() {
        let mut f = Feeder::new();
        // A 64 KiB header value: captured prefix only, as the probes deliver it.
        let mut big = b"GET /huge HTTP/1.1\r\nHost: h\r\nX-Big: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 4096 - big.len()));
        f.send_partial(In, &big, 70_000);
        assert_eq!(f.heads(), 0);
        assert_eq!(f.conn.errors().desyncs, 1);
        f.send(In, b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\n");
        f.send(Out, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        let x = f.exchanges();
        assert_eq!(x.len(), 1);
        assert_eq!(x[0].request.target, "/ok");
    }

    #[test]
    fn head_over_limit_without_gaps_is_dropped() {
        let mut f = Feeder::new();
        f.send(In, b"GET /huge HTTP/1.1\r\nHost: h\r\n");
        let line = [b'b'; 1000];
        for _ in 0..70 {
            f.send(In, &line);
        }
        assert_eq!(f.heads(), 0);
        assert_eq!(f.conn.errors().desyncs, 1);
    }

    #[test]
    fn lost_response_ends_at_next_request() {
        let mut f = Feeder::new();
        f.send(Out, b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
        f.send(In, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        // A transfer whose next chunk header falls outside the capture.
        let mut cap = b"10\r\n".to_vec();
        cap.extend([b'q'; 16]);
        let last = f.send_partial(In, &cap, 4096 * 3);
        assert!(f.exchanges().is_empty());
        f.send(Out, b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n");
        let x = f.exchanges();
        assert_eq!(x.len(), 1);
        assert!(x[0].end_inferred);
        assert_eq!(x[0].response_end, last);
        f.send(In, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(f.exchanges().len(), 2);
    }

    #[test]
    fn close_abandons_unanswered_requests() {
        let mut f = Feeder::new();
        f.send(In, b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n");
        f.conn.close(&mut f.out);
        assert_eq!(f.out.len(), 2);
        assert!(matches!(f.out[1], Http1Event::Abandoned { seq: 0 }));
    }

    #[test]
    fn upgrade_and_connect_become_tunnels() {
        let mut f = Feeder::new();
        f.send(
            In,
            b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        );
        f.send(
            Out,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        );
        f.send(In, b"\x81\x85GET / HTTP/1.1 looks like http but is a frame");
        f.send(Out, b"HTTP/1.1 200 not really");
        let x = f.exchanges();
        assert_eq!(x.len(), 1);
        assert_eq!(x[0].response.status, 101);
        assert_eq!(f.heads(), 1);

        let mut f = Feeder::new();
        f.send(Out, b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n");
        f.send(In, b"HTTP/1.1 200 Connection established\r\n\r\n");
        f.send(Out, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(f.exchanges().len(), 1);
        assert_eq!(f.heads(), 1);
    }

    #[test]
    fn orphan_response_is_counted_not_spanned() {
        let mut f = Feeder::new();
        f.send(In, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        assert!(f.out.is_empty());
        assert_eq!(f.conn.errors().orphan_responses, 1);
    }

    #[test]
    fn unknown_methods_and_non_http_are_not_requests() {
        assert!(looks_like_request(b"GET / HTTP/1.1"));
        assert!(looks_like_request(b"PROPFIND /x HTTP/1.1"));
        assert!(!looks_like_request(b"GETX / HTTP/1.1"));
        assert!(!looks_like_request(b"get / HTTP/1.1"));
        assert!(!looks_like_request(b"GET"));
        assert!(!looks_like_request(b"*2\r\n$3\r\nGET\r\n"));
        assert!(looks_like_response(b"HTTP/1.1 200 OK"));
        assert!(!looks_like_response(b"HTTP/2 200"));
    }

    #[test]
    fn chunk_size_parsing() {
        assert_eq!(parse_chunk_size(b"1a\r"), Some(26));
        assert_eq!(parse_chunk_size(b"0"), Some(0));
        assert_eq!(parse_chunk_size(b"ff;name=v\r"), Some(255));
        assert_eq!(parse_chunk_size(b"zz\r"), None);
        assert_eq!(parse_chunk_size(b"\r"), None);
        assert_eq!(parse_chunk_size(b"fffffffffffffffff"), None);
    }
}
