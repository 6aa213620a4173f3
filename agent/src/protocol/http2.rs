//! HTTP/2 (RFC 9113) exchanges, and the gRPC details they carry, rebuilt from
//! captured transfers.
//!
//! Each direction is parsed as a byte stream, independently of how it was cut
//! into transfers, so any split of the same bytes yields the same events.
//! Bytes past a transfer's captured prefix are consumed by counting: a frame
//! payload may end there without harm, but a frame header that falls there
//! loses the framing. That direction then waits for a transfer that starts
//! with plausible frame headers, and its HPACK state is treated as unknown
//! (see `hpack` for what is still decoded then and why it stays correct).

use std::collections::{BTreeMap, VecDeque};

use super::{Direction, ParseErrors, Timing};

mod hpack;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const FRAME_HEADER_LEN: usize = 9;
/// Streams with a request tracked at once; a new request beyond this abandons
/// the oldest, which is most likely one whose end was lost.
const MAX_STREAMS: usize = 1024;
/// Buffered header block (HEADERS or PUSH_PROMISE plus CONTINUATION).
const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// Decoded header list per block (name + value + 32 per field).
const MAX_HEADER_LIST: usize = 64 * 1024;
/// Header names and values kept across all open streams of a connection, so
/// that many streams with large blocks cannot multiply the per-block cap.
const MAX_STORED_HEADERS: usize = 4 * 1024 * 1024;
/// Streams whose response was seen without their request, remembered so that
/// each is counted once.
const MAX_ORPHANS: usize = 64;
/// Resynchronisation only trusts frames up to this length: longer ones are
/// rare (SETTINGS_MAX_FRAME_SIZE must be raised for them) and this keeps TLS
/// records (first byte 0x14..=0x18) and ASCII text from passing as frames.
const MAX_SYNC_FRAME_LEN: u32 = 1 << 20;
/// Extension frames are small; a long one of unknown type is more likely a
/// sign of lost framing than a real frame.
const MAX_UNKNOWN_FRAME_LEN: u32 = 16 * 1024;
/// SETTINGS payload bytes looked at (the handful of defined settings fit).
const MAX_SETTINGS_PAYLOAD: usize = 36 * 6;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const FLAG_END_STREAM: u8 = 0x1;
const FLAG_ACK: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;

/// Whether `data` starts the client connection preface: all of it, or a
/// prefix of at least 3 bytes (a capture may be that short).
pub fn looks_like_preface(data: &[u8]) -> bool {
    data.len() >= 3 && (data.starts_with(PREFACE) || PREFACE.starts_with(data))
}

/// Whether `data` starts with plausible HTTP/2 frame headers, for joining a
/// connection mid-stream. Every frame header found in `data` (following the
/// lengths) must be plausible, and there must be at least one.
pub fn looks_like_frames(data: &[u8]) -> bool {
    let mut pos = 0usize;
    let mut seen = false;
    while let Some(raw) = data.get(pos..pos + FRAME_HEADER_LEN) {
        let header = FrameHeader::parse(raw);
        if !header.plausible() {
            return false;
        }
        seen = true;
        pos += FRAME_HEADER_LEN + header.len as usize;
    }
    seen
}

/// One HTTP/2 connection as seen by the agent: both directions of it, fed
/// transfer by transfer. Memory is bounded by the `MAX_*` constants.
#[derive(Debug)]
pub struct H2Conn {
    /// Indexed by `Direction as usize`.
    dirs: [DirState; 2],
    /// Client-initiated streams with a request, by stream id.
    streams: BTreeMap<u32, Stream>,
    orphans: VecDeque<u32>,
    next_seq: u64,
    /// Highest stream id that carried a request; stream ids only grow, so a
    /// lower unknown id is a closed (or forgotten) stream, not an orphan.
    highest_request: u32,
    requests_dir: Option<Direction>,
    errors: ParseErrors,
    stored_headers: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum H2Event {
    Start {
        seq: u64,
        request: H2Request,
        start: Timing,
    },
    Done {
        seq: u64,
        exchange: H2Exchange,
    },
    Abandoned {
        seq: u64,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct H2Request {
    pub stream_id: u32,
    pub method: Option<String>,
    pub scheme: Option<String>,
    pub authority: Option<String>,
    pub path: Option<String>,
    /// Regular request headers (lower-case names, as in HTTP/2).
    pub headers: Vec<(String, String)>,
    /// content-type starts with application/grpc.
    pub grpc: bool,
    /// HPACK state was unknown or a header block was cut by the capture:
    /// fields may be missing (never guessed).
    pub incomplete_headers: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct H2Exchange {
    pub seq: u64,
    pub request: H2Request,
    /// :status of the final (non-1xx) response HEADERS.
    pub status: Option<u16>,
    /// Regular fields of the final response HEADERS, then of the trailers.
    pub response_headers: Vec<(String, String)>,
    /// From trailers (or a trailers-only response).
    pub grpc_status: Option<u32>,
    /// Percent-decoded as gRPC specifies (kept as sent if that fails).
    pub grpc_message: Option<String>,
    /// Start of the transfer holding the first byte of the request HEADERS.
    pub request_start: Timing,
    /// Transfer completing the frame with the request's END_STREAM.
    pub request_end: Timing,
    /// Start of the transfer holding the first response HEADERS (1xx too).
    pub response_start: Timing,
    /// Transfer completing the frame with the response's END_STREAM, or the
    /// RST_STREAM.
    pub response_end: Timing,
    /// DATA payload without padding.
    pub request_body_len: u64,
    pub response_body_len: u64,
    /// RST_STREAM error code if the stream was reset.
    pub reset: Option<u32>,
    pub incomplete_headers: bool,
}

impl Default for H2Conn {
    fn default() -> Self {
        Self::new()
    }
}

impl H2Conn {
    /// A connection observed from its start: the client sends the preface.
    pub fn new() -> Self {
        Self::with(|| Framing::Fresh, hpack::Decoder::new)
    }

    /// A connection observed from somewhere in its middle: each direction
    /// waits for a transfer starting with plausible frame headers, and the
    /// HPACK dynamic tables are unknown.
    pub fn joined_mid_stream() -> Self {
        Self::with(|| Framing::Lost, hpack::Decoder::unknown)
    }

    fn with(framing: fn() -> Framing, decoder: fn() -> hpack::Decoder) -> Self {
        let dir = || {
            let framing = framing();
            DirState {
                expect_settings: matches!(framing, Framing::Fresh),
                framing,
                pending: None,
                hpack: decoder(),
                losses: 0,
            }
        };
        Self {
            dirs: [dir(), dir()],
            streams: BTreeMap::new(),
            orphans: VecDeque::new(),
            next_seq: 0,
            highest_request: 0,
            requests_dir: None,
            errors: ParseErrors::default(),
            stored_headers: 0,
        }
    }

    /// One transfer: `data` is the captured prefix of the `len` bytes moved.
    pub fn feed(
        &mut self,
        dir: Direction,
        data: &[u8],
        len: u64,
        timing: Timing,
        out: &mut Vec<H2Event>,
    ) {
        let d = dir as usize;
        let mut gap = len.saturating_sub(data.len() as u64);
        match self.dirs[d].framing {
            Framing::Fresh => {
                self.dirs[d].framing = match data.first() {
                    Some(b'P') => Framing::Preface(0),
                    Some(_) => Framing::idle(),
                    None => {
                        if gap > 0 {
                            self.lose_sync(dir, timing, out);
                        }
                        return;
                    }
                };
            }
            Framing::Lost => {
                if looks_like_preface(data) && self.untouched() {
                    // Joined at the very start after all: the tables are
                    // empty, and no header block was sent before the preface.
                    for state in &mut self.dirs {
                        state.hpack = hpack::Decoder::new();
                    }
                    self.dirs[d].framing = Framing::Preface(0);
                    self.dirs[d].expect_settings = true;
                } else if looks_like_frames(data) {
                    self.dirs[d].framing = Framing::idle();
                } else {
                    return;
                }
            }
            _ => {}
        }

        let mut pos = 0usize;
        loop {
            let state = std::mem::replace(&mut self.dirs[d].framing, Framing::Lost);
            let next = match state {
                Framing::Fresh | Framing::Lost => return,
                Framing::Preface(matched) => {
                    if pos == data.len() {
                        if gap > 0 {
                            self.lose_sync(dir, timing, out);
                        } else {
                            self.dirs[d].framing = Framing::Preface(matched);
                        }
                        return;
                    }
                    let n = (PREFACE.len() - matched).min(data.len() - pos);
                    if data[pos..pos + n] != PREFACE[matched..matched + n] {
                        self.lose_sync(dir, timing, out);
                        return;
                    }
                    pos += n;
                    if matched + n == PREFACE.len() {
                        self.requests_dir = Some(dir);
                        Framing::idle()
                    } else {
                        Framing::Preface(matched + n)
                    }
                }
                Framing::Header {
                    mut buf,
                    mut have,
                    mut start,
                } => {
                    if pos == data.len() {
                        if gap > 0 {
                            self.lose_sync(dir, timing, out);
                        } else {
                            self.dirs[d].framing = Framing::Header { buf, have, start };
                        }
                        return;
                    }
                    if have == 0 {
                        start = timing;
                    }
                    let n = (FRAME_HEADER_LEN - have).min(data.len() - pos);
                    buf[have..have + n].copy_from_slice(&data[pos..pos + n]);
                    have += n;
                    pos += n;
                    if have < FRAME_HEADER_LEN {
                        Framing::Header { buf, have, start }
                    } else {
                        let header = FrameHeader::parse(&buf);
                        if !header.well_formed() {
                            self.lose_sync(dir, timing, out);
                            return;
                        }
                        if std::mem::take(&mut self.dirs[d].expect_settings)
                            && (header.kind != SETTINGS || header.has(FLAG_ACK))
                        {
                            // Both endpoints open with SETTINGS (RFC 9113
                            // §3.4): this is not the start of the connection,
                            // so header blocks were missed.
                            self.dirs[d].hpack.invalidate();
                        }
                        Framing::Payload(Payload {
                            header,
                            remaining: header.len,
                            buf: Vec::new(),
                            want: header.wanted(),
                            hole: false,
                            start,
                        })
                    }
                }
                Framing::Payload(mut p) => {
                    if p.remaining == 0 {
                        self.dirs[d].framing = Framing::idle();
                        self.frame(dir, p.header, &p.buf, p.start, timing, out);
                        continue;
                    }
                    if pos < data.len() {
                        let n = (p.remaining as usize).min(data.len() - pos);
                        if !p.hole {
                            let keep = n.min(p.want - p.buf.len());
                            p.buf.extend_from_slice(&data[pos..pos + keep]);
                        }
                        p.remaining -= n as u32;
                        pos += n;
                    } else if gap > 0 {
                        let n = u64::from(p.remaining).min(gap);
                        // Later bytes of this payload would not be contiguous
                        // with what was kept.
                        p.hole |= p.buf.len() < p.want;
                        p.remaining -= n as u32;
                        gap -= n;
                    } else {
                        self.dirs[d].framing = Framing::Payload(p);
                        return;
                    }
                    Framing::Payload(p)
                }
            };
            self.dirs[d].framing = next;
        }
    }

    /// End of the connection: streams still open are abandoned.
    pub fn close(&mut self, out: &mut Vec<H2Event>) {
        for dir in &mut self.dirs {
            dir.pending = None;
        }
        self.orphans.clear();
        let mut seqs: Vec<(u64, u32)> = self
            .streams
            .iter()
            .map(|(&id, s)| (s.exchange.seq, id))
            .collect();
        seqs.sort_unstable();
        for (_, id) in seqs {
            self.abandon(id, out);
        }
    }

    /// Direction of the client preface, or of request HEADERS (with :method).
    pub fn requests_direction(&self) -> Option<Direction> {
        self.requests_dir
    }

    pub fn errors(&self) -> ParseErrors {
        self.errors
    }

    /// Nothing was learnt about the connection yet.
    fn untouched(&self) -> bool {
        self.next_seq == 0 && self.errors == ParseErrors::default() && self.requests_dir.is_none()
    }

    /// A frame header fell into bytes that were not captured, or framing is
    /// evidently wrong.
    fn lose_sync(&mut self, dir: Direction, timing: Timing, out: &mut Vec<H2Event>) {
        self.errors.desyncs += 1;
        let d = dir as usize;
        self.dirs[d].framing = Framing::Lost;
        self.dirs[d].losses += 1;
        if let Some(mut block) = self.dirs[d].pending.take() {
            // Its CONTINUATION frames are gone: report what was seen.
            block.truncated = true;
            self.header_block(dir, block, timing, out);
        }
        // Header blocks may have been among the lost bytes.
        self.dirs[d].hpack.invalidate();
        if self.requests_dir == Some(dir) {
            // Requests whose response is complete may have lost their end.
            let ids: Vec<u32> = self
                .streams
                .iter()
                .filter(|(_, s)| s.response_ended)
                .map(|(&id, _)| id)
                .collect();
            for id in ids {
                self.finish_if_ended(id, out);
            }
        }
    }

    fn frame(
        &mut self,
        dir: Direction,
        header: FrameHeader,
        payload: &[u8],
        start: Timing,
        end: Timing,
        out: &mut Vec<H2Event>,
    ) {
        let d = dir as usize;
        let continues_block = header.kind == CONTINUATION
            && self.dirs[d]
                .pending
                .as_ref()
                .is_some_and(|b| b.stream == header.stream);
        if !continues_block && let Some(mut block) = self.dirs[d].pending.take() {
            // A header block must be followed by its CONTINUATION frames
            // (RFC 9113 §6.10); it will get no more bytes.
            block.truncated = true;
            self.header_block(dir, block, end, out);
        }
        match header.kind {
            DATA => self.data_frame(dir, &header, payload, end, out),
            HEADERS | PUSH_PROMISE => {
                let (fragment, complete) = header.fragment(payload);
                let mut block = PendingBlock {
                    stream: header.stream,
                    push: header.kind == PUSH_PROMISE,
                    end_stream: header.kind == HEADERS && header.has(FLAG_END_STREAM),
                    buf: Vec::new(),
                    truncated: false,
                    start,
                };
                block.append(fragment, complete);
                if header.has(FLAG_END_HEADERS) {
                    self.header_block(dir, block, end, out);
                } else {
                    self.dirs[d].pending = Some(block);
                }
            }
            CONTINUATION => {
                if !continues_block {
                    return;
                }
                let complete = payload.len() == header.len as usize;
                if let Some(block) = self.dirs[d].pending.as_mut() {
                    block.append(payload, complete);
                }
                if header.has(FLAG_END_HEADERS)
                    && let Some(block) = self.dirs[d].pending.take()
                {
                    self.header_block(dir, block, end, out);
                }
            }
            RST_STREAM => {
                self.forget_orphan(header.stream);
                if !self.streams.contains_key(&header.stream) {
                    return;
                }
                match payload.get(..4) {
                    Some(code) => {
                        let code = u32::from_be_bytes([code[0], code[1], code[2], code[3]]);
                        if let Some(s) = self.streams.get_mut(&header.stream) {
                            s.exchange.reset = Some(code);
                            if !s.response_ended {
                                s.exchange.response_end = end;
                            }
                        }
                        self.finish(header.stream, out);
                    }
                    // The stream ended, but how was not captured.
                    None => self.abandon(header.stream, out),
                }
            }
            SETTINGS => {
                if header.has(FLAG_ACK) {
                    return;
                }
                for setting in payload.chunks_exact(6) {
                    let id = u16::from_be_bytes([setting[0], setting[1]]);
                    let value =
                        u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
                    if id == SETTINGS_HEADER_TABLE_SIZE {
                        // The sender decodes what the other direction encodes.
                        self.dirs[dir.opposite() as usize]
                            .hpack
                            .set_settings_limit(value);
                    }
                }
            }
            GOAWAY => {
                // Only the server's GOAWAY speaks about requests.
                if self.requests_dir != Some(dir.opposite()) {
                    return;
                }
                let Some(last) = payload.get(..4) else {
                    return;
                };
                let last = u32::from_be_bytes([last[0], last[1], last[2], last[3]]) & 0x7fff_ffff;
                let mut unprocessed: Vec<(u64, u32)> = self
                    .streams
                    .range(last.saturating_add(1)..)
                    .map(|(&id, s)| (s.exchange.seq, id))
                    .collect();
                unprocessed.sort_unstable();
                for (_, id) in unprocessed {
                    self.abandon(id, out);
                }
            }
            // PRIORITY, PING, WINDOW_UPDATE and extension frames say nothing
            // about exchanges.
            _ => {}
        }
    }

    fn data_frame(
        &mut self,
        dir: Direction,
        header: &FrameHeader,
        payload: &[u8],
        end: Timing,
        out: &mut Vec<H2Event>,
    ) {
        let len = u64::from(header.len);
        let body = if header.has(FLAG_PADDED) {
            // Without the pad length byte the padding is unknown; counting
            // it is the smaller error than dropping the frame.
            let pad = payload.first().map_or(0, |&p| u64::from(p));
            len.saturating_sub(1 + pad)
        } else {
            len
        };
        let end_stream = header.has(FLAG_END_STREAM);
        let is_request = self.requests_dir == Some(dir);
        let Some(s) = self.streams.get_mut(&header.stream) else {
            if end_stream && !is_request {
                self.forget_orphan(header.stream);
            }
            return;
        };
        if is_request {
            s.exchange.request_body_len += body;
            if end_stream && !s.request_ended {
                s.request_ended = true;
                s.exchange.request_end = end;
            }
        } else {
            s.exchange.response_body_len += body;
            if end_stream && !s.response_ended {
                s.response_ended = true;
                s.exchange.response_end = end;
            }
        }
        self.finish_if_ended(header.stream, out);
    }

    /// A complete (or given up) header block.
    fn header_block(
        &mut self,
        dir: Direction,
        block: PendingBlock,
        end: Timing,
        out: &mut Vec<H2Event>,
    ) {
        let decoded =
            self.dirs[dir as usize]
                .hpack
                .decode(&block.buf, block.truncated, MAX_HEADER_LIST);
        // Decoding pushed and server-initiated streams kept HPACK in step;
        // they get no span.
        if block.push || block.stream.is_multiple_of(2) {
            return;
        }
        let has = |name: &str| decoded.fields.iter().any(|(n, _)| n == name);
        let is_request = match self.requests_dir {
            Some(requests) => requests == dir,
            None if has(":method") => {
                self.requests_dir = Some(dir);
                true
            }
            None if has(":status") => {
                self.requests_dir = Some(dir.opposite());
                false
            }
            // Cannot tell a request from a response yet.
            None => return,
        };
        if is_request {
            self.request_block(dir, block, decoded, end, out);
        } else {
            self.response_block(block, decoded, end, out);
        }
    }

    fn request_block(
        &mut self,
        dir: Direction,
        block: PendingBlock,
        decoded: hpack::Decoded,
        end: Timing,
        out: &mut Vec<H2Event>,
    ) {
        let id = block.stream;
        if let Some(s) = self.streams.get_mut(&id) {
            // Trailers of a request with a body.
            if block.end_stream && !s.request_ended {
                s.request_ended = true;
                s.exchange.request_end = end;
            }
            self.finish_if_ended(id, out);
            return;
        }
        if id <= self.highest_request {
            return;
        }
        self.highest_request = id;
        let mut request = H2Request {
            stream_id: id,
            incomplete_headers: decoded.incomplete,
            ..H2Request::default()
        };
        let mut cost = 0usize;
        for (name, value) in decoded.fields {
            let slot = match name.as_str() {
                ":method" => &mut request.method,
                ":scheme" => &mut request.scheme,
                ":authority" => &mut request.authority,
                ":path" => &mut request.path,
                // Other pseudo-headers (e.g. :protocol) have no field.
                n if n.starts_with(':') => continue,
                _ => {
                    let size = name.len() + value.len();
                    if self.stored_headers + cost + size > MAX_STORED_HEADERS {
                        request.incomplete_headers = true;
                    } else {
                        cost += size;
                        request.headers.push((name, value));
                    }
                    continue;
                }
            };
            slot.get_or_insert(value);
        }
        request.grpc = request
            .headers
            .iter()
            .any(|(n, v)| n == "content-type" && is_grpc_content_type(v));
        if self.streams.len() >= MAX_STREAMS
            && let Some(oldest) = self
                .streams
                .iter()
                .min_by_key(|(_, s)| s.exchange.seq)
                .map(|(&id, _)| id)
        {
            self.abandon(oldest, out);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.stored_headers += cost;
        out.push(H2Event::Start {
            seq,
            request: request.clone(),
            start: block.start,
        });
        let incomplete = request.incomplete_headers;
        self.streams.insert(
            id,
            Stream {
                exchange: H2Exchange {
                    seq,
                    request,
                    request_start: block.start,
                    request_end: if block.end_stream {
                        end
                    } else {
                        Timing::default()
                    },
                    incomplete_headers: incomplete,
                    ..H2Exchange::default()
                },
                request_ended: block.end_stream,
                response_ended: false,
                response_started: false,
                final_seen: false,
                header_cost: cost,
                response_cost: 0,
                request_losses: self.dirs[dir as usize].losses,
            },
        );
    }

    fn response_block(
        &mut self,
        block: PendingBlock,
        decoded: hpack::Decoded,
        end: Timing,
        out: &mut Vec<H2Event>,
    ) {
        let id = block.stream;
        let Some(s) = self.streams.get_mut(&id) else {
            if self.orphans.contains(&id) {
                if block.end_stream {
                    self.forget_orphan(id);
                }
            } else if id > self.highest_request {
                self.errors.orphan_responses += 1;
                if !block.end_stream {
                    if self.orphans.len() >= MAX_ORPHANS {
                        self.orphans.pop_front();
                    }
                    self.orphans.push_back(id);
                }
            }
            return;
        };
        if !s.response_started {
            s.response_started = true;
            s.exchange.response_start = block.start;
        }
        let status = decoded
            .fields
            .iter()
            .find(|(n, _)| n == ":status")
            .and_then(|(_, v)| v.parse::<u16>().ok());
        if status.is_some_and(|st| (100..200).contains(&st)) && !block.end_stream {
            // Informational (RFC 9113 §8.1): the final response follows.
            return;
        }
        s.exchange.incomplete_headers |= decoded.incomplete;
        // Trailers carry no pseudo-headers, so a :status after a final block
        // whose status was unknown means that one was informational.
        if !s.final_seen || status.is_some() {
            s.final_seen = true;
            s.exchange.status = status;
            s.exchange.response_headers.clear();
            self.stored_headers -= s.response_cost;
            s.header_cost -= s.response_cost;
            s.response_cost = 0;
        }
        for (name, value) in decoded.fields {
            if name.starts_with(':') {
                continue;
            }
            match name.as_str() {
                "grpc-status" => s.exchange.grpc_status = value.trim().parse().ok(),
                "grpc-message" => s.exchange.grpc_message = Some(percent_decode(&value)),
                _ => {}
            }
            let size = name.len() + value.len();
            if self.stored_headers + size > MAX_STORED_HEADERS {
                s.exchange.incomplete_headers = true;
                continue;
            }
            self.stored_headers += size;
            s.header_cost += size;
            s.response_cost += size;
            s.exchange.response_headers.push((name, value));
        }
        if block.end_stream && !s.response_ended {
            s.response_ended = true;
            s.exchange.response_end = end;
        }
        self.finish_if_ended(id, out);
    }

    fn forget_orphan(&mut self, id: u32) {
        self.orphans.retain(|&o| o != id);
    }

    /// Done once both sides ended. A request whose end may have been lost
    /// (its direction lost framing since it started) is not waited for once
    /// the response is complete: it would otherwise only ever be abandoned.
    fn finish_if_ended(&mut self, id: u32, out: &mut Vec<H2Event>) {
        let Some(requests) = self.requests_dir else {
            return;
        };
        let losses = self.dirs[requests as usize].losses;
        if self
            .streams
            .get(&id)
            .is_some_and(|s| s.response_ended && (s.request_ended || s.request_losses != losses))
        {
            self.finish(id, out);
        }
    }

    fn finish(&mut self, id: u32, out: &mut Vec<H2Event>) {
        if let Some(s) = self.streams.remove(&id) {
            self.stored_headers -= s.header_cost;
            out.push(H2Event::Done {
                seq: s.exchange.seq,
                exchange: s.exchange,
            });
        }
    }

    fn abandon(&mut self, id: u32, out: &mut Vec<H2Event>) {
        if let Some(s) = self.streams.remove(&id) {
            self.stored_headers -= s.header_cost;
            out.push(H2Event::Abandoned {
                seq: s.exchange.seq,
            });
        }
    }
}

#[derive(Debug)]
struct DirState {
    framing: Framing,
    /// Header block waiting for CONTINUATION frames.
    pending: Option<PendingBlock>,
    /// Decodes the header blocks sent in this direction.
    hpack: hpack::Decoder,
    /// Times framing was lost, to tell whether a stream's frames may have
    /// been among the lost bytes.
    losses: u64,
    /// The next frame should open the connection (SETTINGS).
    expect_settings: bool,
}

#[derive(Debug)]
enum Framing {
    /// `H2Conn::new`, nothing seen yet: the preface or frames may come.
    Fresh,
    Preface(usize),
    /// Waiting for a transfer that starts with plausible frame headers.
    Lost,
    Header {
        buf: [u8; FRAME_HEADER_LEN],
        have: usize,
        start: Timing,
    },
    Payload(Payload),
}

impl Framing {
    fn idle() -> Self {
        Framing::Header {
            buf: [0; FRAME_HEADER_LEN],
            have: 0,
            start: Timing::default(),
        }
    }
}

#[derive(Debug)]
struct Payload {
    header: FrameHeader,
    /// Payload bytes still to come, captured or not.
    remaining: u32,
    /// The captured start of the payload, up to `want` bytes.
    buf: Vec<u8>,
    want: usize,
    /// Bytes were skipped uncaptured before `want` was reached.
    hole: bool,
    /// Timing of the transfer holding the first byte of the frame.
    start: Timing,
}

#[derive(Debug)]
struct PendingBlock {
    stream: u32,
    push: bool,
    end_stream: bool,
    buf: Vec<u8>,
    /// Bytes of the block are missing (not captured, over the cap, or its
    /// CONTINUATION frames never came); `buf` is the part before the loss.
    truncated: bool,
    start: Timing,
}

impl PendingBlock {
    fn append(&mut self, fragment: &[u8], complete: bool) {
        if self.truncated {
            // Anything after a loss would not be contiguous.
            return;
        }
        let room = MAX_HEADER_BLOCK - self.buf.len();
        if fragment.len() > room {
            self.buf.extend_from_slice(&fragment[..room]);
            self.truncated = true;
        } else {
            self.buf.extend_from_slice(fragment);
            self.truncated = !complete;
        }
    }
}

#[derive(Debug)]
struct Stream {
    exchange: H2Exchange,
    request_ended: bool,
    response_ended: bool,
    response_started: bool,
    /// A final (non-1xx, or of unknown status) response block was seen.
    final_seen: bool,
    /// Header bytes of this stream counted in `H2Conn::stored_headers`.
    header_cost: usize,
    /// The part of `header_cost` in `exchange.response_headers`.
    response_cost: usize,
    /// `DirState::losses` of the request direction when the request started.
    request_losses: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FrameHeader {
    len: u32,
    kind: u8,
    flags: u8,
    stream: u32,
    reserved: bool,
}

impl FrameHeader {
    /// `raw` holds at least `FRAME_HEADER_LEN` bytes.
    fn parse(raw: &[u8]) -> Self {
        let stream = u32::from_be_bytes([raw[5], raw[6], raw[7], raw[8]]);
        Self {
            len: u32::from_be_bytes([0, raw[0], raw[1], raw[2]]),
            kind: raw[3],
            flags: raw[4],
            stream: stream & 0x7fff_ffff,
            reserved: stream & 0x8000_0000 != 0,
        }
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Violations that a peer would treat as a connection error: seeing one
    /// means our framing is off.
    fn well_formed(&self) -> bool {
        let on_stream = self.stream != 0;
        match self.kind {
            DATA | HEADERS | PUSH_PROMISE | CONTINUATION => on_stream,
            PRIORITY => on_stream && self.len == 5,
            RST_STREAM => on_stream && self.len == 4,
            SETTINGS => {
                !on_stream && self.len.is_multiple_of(6) && !(self.has(FLAG_ACK) && self.len != 0)
            }
            PING => !on_stream && self.len == 8,
            GOAWAY => !on_stream && self.len >= 8,
            WINDOW_UPDATE => self.len == 4,
            _ => self.len <= MAX_UNKNOWN_FRAME_LEN,
        }
    }

    /// Stricter than `well_formed`, to trust a header with no context:
    /// defined type and flags, reserved bit clear, moderate length.
    fn plausible(&self) -> bool {
        let allowed = match self.kind {
            DATA => FLAG_END_STREAM | FLAG_PADDED,
            HEADERS => FLAG_END_STREAM | FLAG_END_HEADERS | FLAG_PADDED | FLAG_PRIORITY,
            SETTINGS | PING => FLAG_ACK,
            PUSH_PROMISE => FLAG_END_HEADERS | FLAG_PADDED,
            CONTINUATION => FLAG_END_HEADERS,
            _ => 0,
        };
        self.kind <= CONTINUATION
            && !self.reserved
            && self.len <= MAX_SYNC_FRAME_LEN
            && self.flags & !allowed == 0
            && self.well_formed()
    }

    /// How much of the payload to keep.
    fn wanted(&self) -> usize {
        let len = self.len as usize;
        match self.kind {
            // Pad length, priority or promised stream id come first.
            HEADERS | PUSH_PROMISE => len.min(MAX_HEADER_BLOCK + 6),
            CONTINUATION => len.min(MAX_HEADER_BLOCK),
            SETTINGS => len.min(MAX_SETTINGS_PAYLOAD),
            RST_STREAM => len.min(4),
            GOAWAY => len.min(8),
            DATA if self.has(FLAG_PADDED) => len.min(1),
            _ => 0,
        }
    }

    /// The header block fragment of a HEADERS or PUSH_PROMISE payload (RFC
    /// 9113 §6.2, §6.6), and whether all of it was captured.
    fn fragment<'a>(&self, payload: &'a [u8]) -> (&'a [u8], bool) {
        let mut start = 0usize;
        let mut pad = 0usize;
        if self.has(FLAG_PADDED) {
            match payload.first() {
                Some(&p) => {
                    pad = usize::from(p);
                    start = 1;
                }
                None => return (&[], false),
            }
        }
        if self.kind == HEADERS && self.has(FLAG_PRIORITY) {
            start += 5;
        }
        if self.kind == PUSH_PROMISE {
            start += 4;
        }
        let Some(end) = (self.len as usize).checked_sub(pad) else {
            return (&[], false);
        };
        let captured_end = end.min(payload.len());
        match payload.get(start..captured_end) {
            Some(fragment) => (fragment, captured_end == end),
            None => (&[], false),
        }
    }
}

fn is_grpc_content_type(value: &str) -> bool {
    value
        .as_bytes()
        .get(..16)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"application/grpc"))
}

/// gRPC percent-encodes grpc-message; a value that does not decode to UTF-8
/// is kept as sent.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|&b| hex_digit(b)),
                bytes.get(i + 2).and_then(|&b| hex_digit(b)),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| value.to_owned())
}

fn hex_digit(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

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
                    let mut cuts: Vec<usize> =
                        (0..rng.below(8)).map(|_| rng.below(len + 1)).collect();
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
            // Every Start is followed by exactly one Done or Abandoned.
            let mut open = std::collections::BTreeSet::new();
            for e in &out {
                match e {
                    H2Event::Start { seq, .. } => assert!(open.insert(*seq)),
                    H2Event::Done { seq, .. } | H2Event::Abandoned { seq } => {
                        assert!(open.remove(seq))
                    }
                }
            }
            assert!(open.is_empty());
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
}
