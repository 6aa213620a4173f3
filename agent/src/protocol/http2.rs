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
mod tests;
