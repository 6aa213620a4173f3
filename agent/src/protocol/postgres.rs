//! PostgreSQL frontend/backend protocol 3.x over one connection, from what
//! the probes saw: for each transfer a captured prefix of its bytes and its
//! full length. Every message after the startup packet carries its length, so
//! bytes past a capture are skipped by counting; a message header that falls
//! outside the captured bytes (or a header that makes no sense) loses framing,
//! and that direction then waits for a transfer that begins with a plausible
//! message. Exchanges end at ReadyForQuery, which the server sends exactly once
//! per simple Query, Sync or FunctionCall, so requests and ReadyForQuery pair
//! first in, first out, and a response direction that lost count abandons what
//! it was waiting for instead of guessing.
use std::collections::VecDeque;

use super::{
    Direction, ParseErrors, Timing,
    held::{Held, Judgement, earlier_len},
};

/// Longest `db.query.text` reported, in characters.
pub const MAX_QUERY_CHARS: usize = 2048;
/// Longest error message kept, in characters.
const MAX_ERROR_MESSAGE: usize = 512;
/// The server rejects messages larger than MaxAllocSize, so larger lengths
/// mean the bytes are not a message header.
const MAX_MESSAGE: u64 = 0x3fff_ffff;
/// The server rejects longer startup packets.
const MAX_STARTUP: u64 = 10_000;
/// Query text kept from one Query or Parse message. More than the reported
/// text, so a long literal near the end still sanitises to `?`.
const QUERY_KEEP: usize = 16 * 1024;
/// Prepared statements remembered per connection, and their total size
/// (names and sanitised texts).
const MAX_STATEMENTS: usize = 256;
const MAX_STATEMENT_BYTES: usize = 128 * 1024;
/// Requests waiting for ReadyForQuery, and the total size of their texts;
/// beyond that the oldest are abandoned (while still counted, so pairing
/// stays right).
const MAX_PENDING: usize = 1024;
const MAX_PENDING_BYTES: usize = 256 * 1024;
/// Longest statement or portal name taken as plausible.
const MAX_NAME: usize = 255;
/// The server's limit on columns in a row.
const MAX_COLUMNS: i16 = 1664;

/// Protocol major version 3 in the startup packet's version field.
const PROTOCOL_3: u32 = 3 << 16;
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;

/// Frontend messages that begin a request when a stream is joined or resynchronised.
const FRONT_STARTS: &[u8] = b"QPBE";
/// Backend-only messages: seen first, they prove the direction is the backend.
const BACK_ONLY: &[u8] = b"RKZT123InstAGHWVvN";
/// Backend messages a read may begin with when the stream is resynchronised;
/// DataRow and CopyData are left out because reads inside a long result
/// often begin with them.
const BACK_RESYNC: &[u8] = b"RKZT123InstAGHWVvNCES";

/// Keywords that begin an SQL statement; a Query or Parse whose text begins
/// with anything else is not taken as the start of a frontend stream.
#[rustfmt::skip]
const SQL_KEYWORDS: &[&str] = &[
    "ABORT", "ALTER", "ANALYZE", "BEGIN", "CALL", "CHECKPOINT", "CLOSE", "CLUSTER", "COMMENT",
    "COMMIT", "COPY", "CREATE", "DEALLOCATE", "DECLARE", "DELETE", "DISCARD", "DO", "DROP", "END",
    "EXECUTE", "EXPLAIN", "FETCH", "GRANT", "IMPORT", "INSERT", "LISTEN", "LOAD", "LOCK", "MERGE",
    "MOVE", "NOTIFY", "PREPARE", "REASSIGN", "REFRESH", "REINDEX", "RELEASE", "RESET", "REVOKE",
    "ROLLBACK", "SAVEPOINT", "SECURITY", "SELECT", "SET", "SHOW", "START", "TABLE", "TRUNCATE",
    "UNLISTEN", "UPDATE", "VACUUM", "VALUES", "WITH",
];

/// Whether `data` begins a startup packet: StartupMessage (protocol 3.x),
/// SSLRequest, GSSENCRequest or CancelRequest.
pub fn looks_like_startup(data: &[u8]) -> bool {
    check_startup(data) == Verdict::Yes
}

/// Whether `data` begins a frontend message as sent mid-connection: a Query or
/// Parse whose text starts with an SQL keyword, or a Bind or Execute, each
/// with a sane length and consistent fields.
pub fn looks_like_frontend(data: &[u8]) -> bool {
    check_chain(Side::Front, data, FRONT_STARTS) == Verdict::Yes
}

/// What one connection revealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PgEvent {
    /// A request is complete; `start` is its first transfer.
    Start {
        seq: u64,
        query: PgQuery,
        start: Timing,
    },
    /// A request and its response are complete.
    Done { seq: u64, exchange: PgExchange },
    /// A request will get no response seen by seam.
    Abandoned { seq: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgQuery {
    /// The statement with string and numeric literals replaced by `?` and
    /// comments dropped; empty when the statement was prepared before seam
    /// saw the connection.
    pub text: String,
    /// First keyword, upper-cased (the main statement's for `WITH`).
    pub operation: Option<String>,
    /// Database named in the startup packet.
    pub namespace: Option<String>,
    /// Sent with the extended query protocol (Parse/Bind/Execute).
    pub prepared: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgExchange {
    pub seq: u64,
    pub query: PgQuery,
    pub request_start: Timing,
    pub request_end: Timing,
    pub response_start: Timing,
    pub response_end: Timing,
    /// First ErrorResponse of the exchange.
    pub error: Option<PgError>,
    /// Row count of the first CommandComplete that carries one.
    pub rows: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgError {
    /// SQLSTATE.
    pub code: String,
    /// Non-localised severity when the server sent it, else the localised one.
    pub severity: String,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// Frontend messages (requests).
    Front = 0,
    /// Backend messages (responses).
    Back = 1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Yes,
    No,
    /// Consistent so far, but too short to tell.
    Short,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Bad,
    Short,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Read {
    /// Framing unknown: waiting for a transfer that begins a message.
    #[default]
    Lost,
    /// At or inside a message header.
    Header,
    /// Inside a message body.
    Body,
    /// The one byte that answers SSLRequest or GSSENCRequest.
    EncryptionReply,
    /// Encrypted from here on.
    Opaque,
}

/// One direction of the connection.
#[derive(Debug, Default)]
struct Half {
    read: Read,
    head: [u8; 5],
    have: usize,
    /// Type of the message being read; 0 for startup packets, which have none.
    ty: u8,
    body_len: u64,
    left: u64,
    /// Body bytes worth keeping for this message type.
    keep: usize,
    body: Vec<u8>,
    /// Transfer where the current message began.
    start: Timing,
    /// Frontend before its StartupMessage: packets carry no type byte.
    untyped: bool,
    desyncs: u64,
}

impl Half {
    fn sync(&mut self) {
        self.read = Read::Header;
        self.have = 0;
        self.body.clear();
    }
}

/// A complete message, with the part of its body that was kept.
struct Msg {
    ty: u8,
    body: Vec<u8>,
    /// The whole body was kept.
    complete: bool,
    start: Timing,
    end: Timing,
}

/// A statement as remembered from its Parse message.
#[derive(Clone, Debug)]
struct Statement {
    text: String,
    operation: Option<String>,
}

/// Extended-protocol messages since the last Sync.
#[derive(Debug)]
struct Batch {
    start: Timing,
    statement: Option<Statement>,
    /// It parses, binds or executes something (not only Describe/Close).
    runs: bool,
}

#[derive(Debug)]
struct Waiting {
    seq: u64,
    query: PgQuery,
    start: Timing,
    end: Timing,
}

#[derive(Debug)]
enum Slot {
    Exchange(Box<Waiting>),
    /// Requests answered by ReadyForQuery that make no span (bare Sync,
    /// FunctionCall, requests dropped over the limit).
    Silent(u64),
}

/// Backend messages since the last ReadyForQuery.
#[derive(Debug, Default)]
struct Segment {
    start: Option<Timing>,
    error: Option<PgError>,
    rows: Option<u64>,
}

/// PostgreSQL state of one TCP connection, as seen from one process.
#[derive(Debug, Default)]
pub struct PgConn {
    requests_dir: Option<Direction>,
    /// Indexed by [`Direction`].
    held: [Held; 2],
    /// Indexed by [`Side`].
    halves: [Half; 2],
    opaque: bool,
    /// The next ReadyForQuery ends the startup phase, not a request.
    startup_ready: bool,
    namespace: Option<String>,
    /// Oldest first.
    statements: VecDeque<(Vec<u8>, Statement)>,
    statement_bytes: usize,
    batch: Option<Batch>,
    pending: VecDeque<Slot>,
    pending_bytes: usize,
    segment: Segment,
    next_seq: u64,
    orphan_responses: u64,
}

impl PgConn {
    pub fn new() -> Self {
        Self::default()
    }

    /// Direction that carries frontend messages, once the bytes told.
    pub fn requests_direction(&self) -> Option<Direction> {
        self.requests_dir
    }

    pub fn errors(&self) -> ParseErrors {
        ParseErrors {
            desyncs: self.halves[0].desyncs + self.halves[1].desyncs,
            orphan_responses: self.orphan_responses,
        }
    }

    /// Feeds one transfer: `data` is its captured prefix, `len` its full length.
    pub fn feed(
        &mut self,
        dir: Direction,
        data: &[u8],
        len: u64,
        timing: Timing,
        out: &mut Vec<PgEvent>,
    ) {
        let len = len.max(data.len() as u64);
        if self.opaque {
            return;
        }
        let side = match self.requests_dir {
            Some(req) if req == dir => Side::Front,
            Some(_) => Side::Back,
            None => {
                self.feed_undecided(dir, data, len, timing, out);
                return;
            }
        };
        if self.halves[side as usize].read == Read::Lost {
            self.feed_lost(dir, side, data, len, timing, out);
        } else {
            self.feed_stream(side, data, len, timing, out);
        }
    }

    /// The connection closed: whatever waits for a response is abandoned.
    pub fn close(&mut self, out: &mut Vec<PgEvent>) {
        self.abandon_all(out);
        self.batch = None;
        self.segment = Segment::default();
    }

    /// Before the direction is known: the first transfer that clearly begins a
    /// frontend or backend message decides it.
    fn feed_undecided(
        &mut self,
        dir: Direction,
        data: &[u8],
        len: u64,
        timing: Timing,
        out: &mut Vec<PgEvent>,
    ) {
        let Some((probe, first, class)) = self.held[dir as usize].hold(data, len, timing, classify)
        else {
            return;
        };
        let side = if class == Class::Back {
            self.requests_dir = Some(dir.opposite());
            Side::Back
        } else {
            self.requests_dir = Some(dir);
            Side::Front
        };
        self.held = Default::default();
        let half = &mut self.halves[side as usize];
        half.sync();
        half.untyped = class == Class::Startup;
        self.replay(side, &probe, data, first, len, timing, out);
    }

    /// A direction that lost framing waits for a transfer that begins a message.
    fn feed_lost(
        &mut self,
        dir: Direction,
        side: Side,
        data: &[u8],
        len: u64,
        timing: Timing,
        out: &mut Vec<PgEvent>,
    ) {
        let untyped = self.halves[side as usize].untyped;
        let judge = move |probe: &[u8]| resync_class(side, untyped, probe);
        let Some((probe, first, _)) = self.held[dir as usize].hold(data, len, timing, judge) else {
            return;
        };
        self.held[dir as usize] = Held::default();
        self.halves[side as usize].sync();
        self.replay(side, &probe, data, first, len, timing, out);
    }

    /// Feeds bytes held from earlier transfers (the part of `probe` before
    /// this transfer's), then this transfer.
    #[expect(
        clippy::too_many_arguments,
        reason = "two transfers' bytes and timings"
    )]
    fn replay(
        &mut self,
        side: Side,
        probe: &[u8],
        data: &[u8],
        first: Timing,
        len: u64,
        timing: Timing,
        out: &mut Vec<PgEvent>,
    ) {
        let earlier = earlier_len(probe, data);
        if earlier > 0 {
            self.feed_stream(side, &probe[..earlier], earlier as u64, first, out);
        }
        if self.halves[side as usize].read != Read::Lost && !self.opaque {
            self.feed_stream(side, data, len, timing, out);
        }
    }

    /// Frames a transfer of a synchronised direction into messages.
    fn feed_stream(
        &mut self,
        side: Side,
        data: &[u8],
        len: u64,
        timing: Timing,
        out: &mut Vec<PgEvent>,
    ) {
        let mut pos = 0;
        while pos < data.len() {
            let half = &mut self.halves[side as usize];
            match half.read {
                Read::Lost | Read::Opaque => return,
                Read::EncryptionReply => {
                    let byte = data[pos];
                    // A server that does not know the request answers with an
                    // ErrorResponse, which is then read as a message.
                    if byte != b'E' {
                        pos += 1;
                    }
                    self.on_encryption_reply(byte, out);
                }
                Read::Header => {
                    if half.have == 0 {
                        half.start = timing;
                    }
                    let need = if half.untyped { 4 } else { 5 };
                    let take = (need - half.have).min(data.len() - pos);
                    half.head[half.have..half.have + take].copy_from_slice(&data[pos..pos + take]);
                    half.have += take;
                    pos += take;
                    if half.have == need {
                        if !begin_message(half, side) {
                            self.lose(side, out);
                            return;
                        }
                        if half.left == 0 {
                            self.finish_message(side, timing, out);
                        }
                    }
                }
                Read::Body => {
                    let take = half.left.min((data.len() - pos) as u64) as usize;
                    let room = half.keep.saturating_sub(half.body.len()).min(take);
                    half.body.extend_from_slice(&data[pos..pos + room]);
                    half.left -= take as u64;
                    pos += take;
                    if half.left == 0 {
                        self.finish_message(side, timing, out);
                    }
                }
            }
        }
        let mut unseen = len - data.len() as u64;
        while unseen > 0 {
            let half = &mut self.halves[side as usize];
            match half.read {
                Read::Lost | Read::Opaque => return,
                Read::Body => {
                    let take = half.left.min(unseen);
                    half.left -= take;
                    unseen -= take;
                    if half.left == 0 {
                        self.finish_message(side, timing, out);
                    }
                }
                Read::Header | Read::EncryptionReply => {
                    // The next header was not captured.
                    self.lose(side, out);
                    return;
                }
            }
        }
    }

    fn finish_message(&mut self, side: Side, timing: Timing, out: &mut Vec<PgEvent>) {
        let half = &mut self.halves[side as usize];
        let body = std::mem::take(&mut half.body);
        let msg = Msg {
            ty: half.ty,
            complete: body.len() as u64 == half.body_len,
            body,
            start: half.start,
            end: timing,
        };
        half.read = Read::Header;
        half.have = 0;
        let valid = if msg.ty == 0 {
            true
        } else {
            check_body(side, msg.ty, &msg.body, half.body_len, false) != Err(Stop::Bad)
        };
        if !valid {
            self.lose(side, out);
            return;
        }
        match side {
            Side::Front => self.on_frontend(msg, out),
            Side::Back => self.on_backend(msg, out),
        }
    }

    /// Framing of `side` is lost.
    fn lose(&mut self, side: Side, out: &mut Vec<PgEvent>) {
        let half = &mut self.halves[side as usize];
        if half.read == Read::Opaque {
            return;
        }
        if half.read != Read::Lost {
            half.desyncs += 1;
        }
        half.read = Read::Lost;
        half.have = 0;
        half.body = Vec::new();
        if let Some(dir) = self.requests_dir {
            let dir = if side == Side::Front {
                dir
            } else {
                dir.opposite()
            };
            self.held[dir as usize] = Held::default();
        }
        match side {
            // Requests already complete still get their answers; only the
            // batch in progress is unknowable now.
            Side::Front => self.batch = None,
            // How many ReadyForQuery were missed is unknown.
            Side::Back => {
                self.segment = Segment::default();
                self.abandon_all(out);
            }
        }
    }

    fn on_encryption_reply(&mut self, byte: u8, out: &mut Vec<PgEvent>) {
        let back = &mut self.halves[Side::Back as usize];
        match byte {
            b'S' | b'G' => {
                self.opaque = true;
                self.halves[0].read = Read::Opaque;
                self.halves[1].read = Read::Opaque;
                self.close(out);
            }
            b'N' | b'E' => back.sync(),
            _ => self.lose(Side::Back, out),
        }
    }

    fn on_frontend(&mut self, msg: Msg, out: &mut Vec<PgEvent>) {
        match msg.ty {
            0 => self.on_startup_packet(&msg, out),
            b'Q' => {
                // A Query ends any unsynced extended messages: one
                // ReadyForQuery answers both.
                self.batch = None;
                let text = until_nul(&msg.body);
                let (text, operation) = describe_sql(text);
                let query = PgQuery {
                    text,
                    operation,
                    namespace: self.namespace.clone(),
                    prepared: false,
                };
                self.enqueue(Some(query), msg.start, msg.end, out);
            }
            b'P' => {
                let name = until_nul(&msg.body);
                let rest = msg.body.get(name.len() + 1..).unwrap_or_default();
                let (text, operation) = describe_sql(until_nul(rest));
                let statement = Statement { text, operation };
                self.remember(name, statement.clone());
                let batch = self.batch_at(msg.start);
                batch.runs = true;
                batch.statement.get_or_insert(statement);
            }
            b'B' => {
                let portal = until_nul(&msg.body);
                let rest = msg.body.get(portal.len() + 1..).unwrap_or_default();
                let name = until_nul(rest);
                // A statement name cut by the capture names nothing.
                let known = if rest.len() > name.len() {
                    self.recall(name)
                } else {
                    None
                };
                let batch = self.batch_at(msg.start);
                batch.runs = true;
                if batch.statement.is_none() {
                    batch.statement = known;
                }
            }
            b'E' => self.batch_at(msg.start).runs = true,
            b'D' => {
                self.batch_at(msg.start);
            }
            b'C' => {
                if msg.body.first() == Some(&b'S') && msg.complete {
                    self.forget(until_nul(&msg.body[1..]));
                }
                self.batch_at(msg.start);
            }
            b'S' => match self.batch.take() {
                Some(batch) if batch.runs => {
                    let statement = batch.statement.unwrap_or(Statement {
                        text: String::new(),
                        operation: None,
                    });
                    let query = PgQuery {
                        text: statement.text,
                        operation: statement.operation,
                        namespace: self.namespace.clone(),
                        prepared: true,
                    };
                    self.enqueue(Some(query), batch.start, msg.end, out);
                }
                _ => self.enqueue(None, msg.start, msg.end, out),
            },
            b'F' => self.enqueue(None, msg.start, msg.end, out),
            b'd' | b'c' | b'f' => {
                // COPY FROM STDIN data belongs to the request that started it.
                if let Some(Slot::Exchange(w)) = self.pending.back_mut() {
                    w.end = msg.end;
                }
            }
            _ => {}
        }
    }

    fn on_startup_packet(&mut self, msg: &Msg, out: &mut Vec<PgEvent>) {
        let code = msg
            .body
            .get(..4)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        match code {
            SSL_REQUEST | GSSENC_REQUEST => {
                let back = &mut self.halves[Side::Back as usize];
                back.sync();
                back.read = Read::EncryptionReply;
            }
            CANCEL_REQUEST => {}
            c if c >> 16 == PROTOCOL_3 >> 16 => {
                let (mut database, mut user) = (None, None);
                let mut rest = &msg.body[4..];
                while !rest.is_empty() {
                    let key = until_nul(rest);
                    let after = rest.get(key.len() + 1..).unwrap_or_default();
                    let value = until_nul(after);
                    // A value cut by the capture is not the value.
                    if key.is_empty() || after.len() == value.len() {
                        break;
                    }
                    match key {
                        b"database" => database = Some(value),
                        b"user" => user = Some(value),
                        _ => {}
                    }
                    rest = &after[value.len() + 1..];
                }
                // The server connects to the database named like the user
                // when the packet names none.
                self.namespace = database
                    .or(user)
                    .filter(|v| !v.is_empty())
                    .map(|v| String::from_utf8_lossy(v).into_owned());
                self.halves[Side::Front as usize].untyped = false;
                self.startup_ready = true;
                let back = &mut self.halves[Side::Back as usize];
                if back.read == Read::Lost {
                    back.sync();
                }
            }
            _ => self.lose(Side::Front, out),
        }
    }

    fn on_backend(&mut self, msg: Msg, out: &mut Vec<PgEvent>) {
        match msg.ty {
            b'Z' => self.on_ready(&msg, out),
            // Notifications arrive whenever the server has them.
            b'A' => {}
            b'R' | b'K' => self.startup_ready = true,
            ty => {
                if self.pending.is_empty() && self.batch.is_none() && !self.startup_ready {
                    // Nothing asked: a notice or parameter change on its own.
                    return;
                }
                let segment = &mut self.segment;
                segment.start.get_or_insert(msg.start);
                match ty {
                    b'E' if segment.error.is_none() => segment.error = parse_error(&msg.body),
                    b'C' if segment.rows.is_none() => segment.rows = parse_rows(&msg.body),
                    _ => {}
                }
            }
        }
    }

    fn on_ready(&mut self, msg: &Msg, out: &mut Vec<PgEvent>) {
        let segment = std::mem::take(&mut self.segment);
        if self.startup_ready {
            self.startup_ready = false;
            return;
        }
        let response_start = segment.start.unwrap_or(msg.start);
        match self.pending.front_mut() {
            None => self.orphan_responses += 1,
            Some(Slot::Silent(n)) => {
                *n -= 1;
                if *n == 0 {
                    self.pending.pop_front();
                }
            }
            Some(Slot::Exchange(w)) => {
                // A response that was complete before the request was sent
                // answers a request seam did not see.
                if response_start.exit_ns < w.start.enter_ns {
                    self.orphan_responses += 1;
                    return;
                }
                let Some(Slot::Exchange(w)) = self.pending.pop_front() else {
                    return;
                };
                let w = *w;
                self.pending_bytes -= w.query.text.len();
                out.push(PgEvent::Done {
                    seq: w.seq,
                    exchange: PgExchange {
                        seq: w.seq,
                        query: w.query,
                        request_start: w.start,
                        request_end: w.end,
                        response_start,
                        response_end: msg.end,
                        error: segment.error,
                        rows: segment.rows,
                    },
                });
            }
        }
    }

    /// Queues a request that the server answers with one ReadyForQuery.
    fn enqueue(
        &mut self,
        query: Option<PgQuery>,
        start: Timing,
        end: Timing,
        out: &mut Vec<PgEvent>,
    ) {
        match query {
            Some(query) => {
                let seq = self.next_seq;
                self.next_seq += 1;
                out.push(PgEvent::Start {
                    seq,
                    query: query.clone(),
                    start,
                });
                self.pending_bytes += query.text.len();
                self.pending.push_back(Slot::Exchange(Box::new(Waiting {
                    seq,
                    query,
                    start,
                    end,
                })));
            }
            None => match self.pending.back_mut() {
                Some(Slot::Silent(n)) => *n += 1,
                _ => self.pending.push_back(Slot::Silent(1)),
            },
        }
        while self.pending.len() > MAX_PENDING
            || (self.pending_bytes > MAX_PENDING_BYTES && self.pending.len() > 1)
        {
            // Fold the two oldest into one count: still answered in order.
            let mut count = 0;
            for _ in 0..2 {
                match self.pending.pop_front() {
                    Some(Slot::Exchange(w)) => {
                        self.pending_bytes -= w.query.text.len();
                        out.push(PgEvent::Abandoned { seq: w.seq });
                        count += 1;
                    }
                    Some(Slot::Silent(n)) => count += n,
                    None => {}
                }
            }
            self.pending.push_front(Slot::Silent(count));
        }
    }

    fn abandon_all(&mut self, out: &mut Vec<PgEvent>) {
        for slot in self.pending.drain(..) {
            if let Slot::Exchange(w) = slot {
                out.push(PgEvent::Abandoned { seq: w.seq });
            }
        }
        self.pending_bytes = 0;
    }

    fn batch_at(&mut self, start: Timing) -> &mut Batch {
        self.batch.get_or_insert(Batch {
            start,
            statement: None,
            runs: false,
        })
    }

    fn remember(&mut self, name: &[u8], statement: Statement) {
        self.forget(name);
        self.statement_bytes += name.len() + statement.text.len();
        self.statements.push_back((name.to_vec(), statement));
        while self.statements.len() > MAX_STATEMENTS || self.statement_bytes > MAX_STATEMENT_BYTES {
            if let Some((n, s)) = self.statements.pop_front() {
                self.statement_bytes -= n.len() + s.text.len();
            }
        }
    }

    fn recall(&self, name: &[u8]) -> Option<Statement> {
        self.statements
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
    }

    fn forget(&mut self, name: &[u8]) {
        let found = self.statements.iter().position(|(n, _)| n == name);
        if let Some((n, s)) = found.and_then(|i| self.statements.remove(i)) {
            self.statement_bytes -= n.len() + s.text.len();
        }
    }
}

/// Reads a message header from `half.head`; false if it is not one.
fn begin_message(half: &mut Half, side: Side) -> bool {
    let h = half.head;
    let (ty, len) = if half.untyped {
        (0, u64::from(u32::from_be_bytes([h[0], h[1], h[2], h[3]])))
    } else {
        (
            h[0],
            u64::from(u32::from_be_bytes([h[1], h[2], h[3], h[4]])),
        )
    };
    let ok = if half.untyped {
        (8..=MAX_STARTUP).contains(&len)
    } else {
        header_ok(side, ty, len)
    };
    if !ok {
        return false;
    }
    half.ty = ty;
    half.body_len = len - 4;
    half.left = len - 4;
    half.keep = keep_limit(side, ty).min((len - 4) as usize);
    half.body.clear();
    half.read = Read::Body;
    true
}

/// Body bytes worth keeping: what the parser reads, or enough to check the
/// message's first fields.
fn keep_limit(side: Side, ty: u8) -> usize {
    match (side, ty) {
        (_, 0) => MAX_STARTUP as usize,
        (Side::Front, b'Q' | b'P') => QUERY_KEEP,
        (Side::Front, b'B') => 2 * (MAX_NAME + 1) + 64,
        (Side::Back, b'E') => 2048,
        (Side::Back, b'C' | b'T') => 256,
        _ => 64,
    }
}

/// Whether a message of type `ty` may have length `len` (which counts itself).
fn header_ok(side: Side, ty: u8, len: u64) -> bool {
    if !(4..=MAX_MESSAGE).contains(&len) {
        return false;
    }
    match side {
        Side::Front => match ty {
            b'S' | b'H' | b'c' | b'X' => len == 4,
            b'Q' | b'f' => len >= 5,
            b'D' | b'C' => len >= 6,
            b'P' => len >= 8,
            b'E' => len >= 9,
            b'B' => len >= 12,
            b'F' => len >= 14,
            b'd' | b'p' => true,
            _ => false,
        },
        Side::Back => match ty {
            b'1' | b'2' | b'3' | b'n' | b'I' | b's' | b'c' => len == 4,
            b'Z' => len == 5,
            b'C' | b'E' | b'N' => len >= 5,
            b'S' | b'T' | b'D' | b't' => len >= 6,
            b'G' | b'H' | b'W' => len >= 7,
            b'R' | b'V' => len >= 8,
            b'A' => len >= 10,
            b'v' => len >= 12,
            // Protocol 3.2 allows cancel keys of up to 256 bytes.
            b'K' => (12..=8 + 256).contains(&len),
            b'd' => true,
            _ => false,
        },
    }
}

/// Reads fields of a message body that may be cut short: running out is
/// `Short` unless the body is complete, where it is `Bad`.
struct Cur<'a> {
    b: &'a [u8],
    pos: usize,
    complete: bool,
    total: u64,
    /// The fields that identify the message have been read and were right.
    sure: bool,
}

impl<'a> Cur<'a> {
    fn out(&self) -> Stop {
        if self.complete {
            Stop::Bad
        } else {
            Stop::Short
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Stop> {
        if self.b.len() - self.pos < n {
            return Err(self.out());
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, Stop> {
        Ok(self.take(1)?[0])
    }

    fn i16(&mut self) -> Result<i16, Stop> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, Stop> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A NUL-terminated string, without its NUL.
    fn cstr(&mut self) -> Result<&'a [u8], Stop> {
        let rest = &self.b[self.pos..];
        match rest.iter().position(|&b| b == 0) {
            Some(n) => {
                self.pos += n + 1;
                Ok(&rest[..n])
            }
            None => Err(self.out()),
        }
    }

    /// A NUL-terminated text that may be cut by the capture: what there is,
    /// and whether its end was seen.
    fn text(&mut self) -> Result<(&'a [u8], bool), Stop> {
        let rest = &self.b[self.pos..];
        match rest.iter().position(|&b| b == 0) {
            Some(n) => {
                self.pos += n + 1;
                Ok((&rest[..n], true))
            }
            None if self.complete => Err(Stop::Bad),
            None => {
                self.pos = self.b.len();
                Ok((rest, false))
            }
        }
    }

    fn skip(&mut self, n: u64) -> Result<(), Stop> {
        let left = (self.b.len() - self.pos) as u64;
        if n > left {
            self.pos = self.b.len();
            return Err(self.out());
        }
        self.pos += n as usize;
        Ok(())
    }

    /// For messages whose fields were all read: they fill the declared
    /// length exactly, whether or not all of it was captured.
    fn exact(&self) -> Result<(), Stop> {
        ensure(self.pos as u64 == self.total)
    }

    fn end(&self) -> Result<(), Stop> {
        if self.complete && self.pos != self.b.len() {
            Err(Stop::Bad)
        } else {
            Ok(())
        }
    }
}

fn ensure(ok: bool) -> Result<(), Stop> {
    if ok { Ok(()) } else { Err(Stop::Bad) }
}

/// A statement or portal name.
fn name(n: &[u8]) -> Result<(), Stop> {
    ensure(n.len() <= MAX_NAME && n.iter().all(|&b| (0x20..0x7f).contains(&b) || b >= 0x80))
}

/// Checks a message body (complete or a prefix). `strict` also asks that
/// query text start like SQL, for judging bytes whose framing is unknown.
/// `Short` means the identifying fields were not all there.
/// `total` is the body's length as its header declares.
fn check_body(side: Side, ty: u8, body: &[u8], total: u64, strict: bool) -> Result<(), Stop> {
    let mut c = Cur {
        b: body,
        pos: 0,
        complete: body.len() as u64 == total,
        total,
        sure: !strict,
    };
    match check_fields(side, ty, &mut c, strict) {
        Err(Stop::Short) if c.sure => Ok(()),
        r => r,
    }
}

fn check_fields(side: Side, ty: u8, c: &mut Cur<'_>, strict: bool) -> Result<(), Stop> {
    match (side, ty) {
        (Side::Front, b'Q') => {
            let (text, ended) = c.text()?;
            if strict {
                sql_start(text, ended)?;
            }
            c.sure = true;
        }
        (Side::Front, b'P') => {
            name(c.cstr()?)?;
            let (text, ended) = c.text()?;
            if strict {
                sql_start(text, ended)?;
            }
            c.sure = true;
            let n = c.i16()?;
            ensure(n >= 0)?;
            c.skip(4 * n as u64)?;
        }
        (Side::Front, b'B') => {
            name(c.cstr()?)?;
            name(c.cstr()?)?;
            let formats = c.i16()?;
            ensure(formats >= 0)?;
            for _ in 0..formats {
                ensure(matches!(c.i16()?, 0 | 1))?;
            }
            let params = c.i16()?;
            ensure(params >= 0)?;
            c.sure = true;
            for _ in 0..params {
                let len = c.i32()?;
                ensure(len >= -1)?;
                c.skip(len.max(0) as u64)?;
            }
            let results = c.i16()?;
            ensure(results >= 0)?;
            for _ in 0..results {
                ensure(matches!(c.i16()?, 0 | 1))?;
            }
        }
        (Side::Front, b'E') => {
            name(c.cstr()?)?;
            ensure(c.i32()? >= 0)?;
            // An ErrorResponse cut short reads like an Execute up to here.
            c.exact()?;
            c.sure = true;
        }
        (Side::Front, b'D' | b'C') => {
            ensure(matches!(c.u8()?, b'S' | b'P'))?;
            name(c.cstr()?)?;
            c.exact()?;
            c.sure = true;
        }
        (Side::Front, b'f') => {
            c.cstr()?;
        }
        (Side::Back, b'Z') => {
            ensure(matches!(c.u8()?, b'I' | b'T' | b'E'))?;
            c.sure = true;
        }
        (Side::Back, b'T') => {
            let n = c.i16()?;
            ensure((0..=MAX_COLUMNS).contains(&n))?;
            c.sure = true;
            for _ in 0..n {
                c.cstr()?;
                c.skip(18)?;
            }
        }
        (Side::Back, b'D') => {
            let n = c.i16()?;
            ensure((0..=MAX_COLUMNS).contains(&n))?;
            c.sure = true;
            for _ in 0..n {
                let len = c.i32()?;
                ensure(len >= -1)?;
                c.skip(len.max(0) as u64)?;
            }
        }
        (Side::Back, b'C') => {
            let tag = c.cstr()?;
            ensure(
                tag.first().is_some_and(u8::is_ascii_uppercase)
                    && tag.iter().all(|b| (0x20..0x7f).contains(b)),
            )?;
            c.sure = true;
        }
        (Side::Back, b'E' | b'N') => loop {
            let code = c.u8()?;
            if code == 0 {
                break;
            }
            ensure(code.is_ascii_alphabetic())?;
            c.sure = true;
            c.cstr()?;
        },
        (Side::Back, b'S') => {
            name(c.cstr()?)?;
            c.sure = true;
            c.cstr()?;
        }
        (Side::Back, b'K') => {
            c.take(8)?;
            c.sure = true;
            c.pos = c.b.len();
        }
        (Side::Back, b'R') => {
            ensure(matches!(c.i32()?, 0 | 2 | 3 | 5 | 7 | 8 | 9 | 10 | 11 | 12))?;
            c.sure = true;
            c.pos = c.b.len();
        }
        (Side::Back, b't') => {
            let n = c.i16()?;
            ensure(n >= 0)?;
            c.sure = true;
            c.skip(4 * n as u64)?;
        }
        (Side::Back, b'A') => {
            c.i32()?;
            c.sure = true;
            c.cstr()?;
            c.cstr()?;
        }
        (Side::Back, b'G' | b'H' | b'W') => {
            ensure(matches!(c.u8()?, 0 | 1))?;
            let n = c.i16()?;
            ensure(n >= 0)?;
            c.sure = true;
            for _ in 0..n {
                ensure(matches!(c.i16()?, 0 | 1))?;
            }
        }
        (Side::Back, b'V') => {
            let len = c.i32()?;
            ensure(len >= -1)?;
            c.sure = true;
            c.skip(len.max(0) as u64)?;
        }
        (Side::Back, b'v') => {
            c.i32()?;
            let n = c.i32()?;
            ensure(n >= 0)?;
            c.sure = true;
            for _ in 0..n {
                c.cstr()?;
            }
        }
        _ => {
            c.sure = true;
            c.pos = c.b.len();
        }
    }
    c.end()
}

/// Whether query text starts with an SQL keyword (after blanks, comments and
/// parentheses) and holds no control characters.
fn sql_start(text: &[u8], ended: bool) -> Result<(), Stop> {
    let short = if ended { Stop::Bad } else { Stop::Short };
    let mut i = 0;
    loop {
        match text.get(i..) {
            Some([b' ' | b'\t' | b'\r' | b'\n' | b'(', ..]) => i += 1,
            Some([b'-', b'-', ..]) => match text[i..].iter().position(|&b| b == b'\n') {
                Some(n) => i += n + 1,
                None => return Err(short),
            },
            Some([b'/', b'*', ..]) => match find(&text[i + 2..], b"*/") {
                Some(n) => i += n + 4,
                None => return Err(short),
            },
            Some([b'-' | b'/']) if !ended => return Err(Stop::Short),
            Some([_, ..]) => break,
            _ => return Err(short),
        }
    }
    let word_len = text[i..]
        .iter()
        .take_while(|b| b.is_ascii_alphabetic())
        .count();
    if i + word_len == text.len() && !ended && word_len <= 10 {
        return Err(Stop::Short);
    }
    let word = &text[i..i + word_len];
    ensure(
        SQL_KEYWORDS
            .iter()
            .any(|k| k.as_bytes().eq_ignore_ascii_case(word)),
    )?;
    ensure(
        !text
            .iter()
            .any(|&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c) || b == 0x7f),
    )
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Checks that `data` begins with a message of `side` whose type is one of
/// `starts`, and that the messages after it that were captured are sound.
fn check_chain(side: Side, data: &[u8], starts: &[u8]) -> Verdict {
    let mut pos = 0;
    let mut first = true;
    let unsure = |first: bool| if first { Verdict::Short } else { Verdict::Yes };
    loop {
        let rest = &data[pos..];
        let Some(&ty) = rest.first() else {
            return unsure(first);
        };
        if first && !starts.contains(&ty) {
            return Verdict::No;
        }
        if rest.len() < 5 {
            let known: &[u8] = match side {
                Side::Front => b"QPBEDCSHcXdpfF",
                Side::Back => b"123nIscZCENSTDtGHWRVAvKd",
            };
            return if known.contains(&ty) {
                unsure(first)
            } else {
                Verdict::No
            };
        }
        let len = u64::from(u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]));
        if !header_ok(side, ty, len) {
            return Verdict::No;
        }
        let body_len = (len - 4) as usize;
        let avail = body_len.min(rest.len() - 5);
        let complete = avail == body_len;
        match check_body(side, ty, &rest[5..5 + avail], body_len as u64, true) {
            Err(Stop::Bad) => return Verdict::No,
            Err(Stop::Short) => return unsure(first),
            Ok(()) => {}
        }
        if !complete {
            return Verdict::Yes;
        }
        pos += 5 + body_len;
        first = false;
    }
}

/// Judges a startup packet at the start of `data`.
fn check_startup(data: &[u8]) -> Verdict {
    if data.len() < 8 {
        // Lengths are at most 10000: the first two bytes are zero.
        return if data.iter().take(2).all(|&b| b == 0) {
            Verdict::Short
        } else {
            Verdict::No
        };
    }
    let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    let code = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
    match code {
        SSL_REQUEST | GSSENC_REQUEST if len == 8 => Verdict::Yes,
        CANCEL_REQUEST if (16..=12 + 256).contains(&len) => Verdict::Yes,
        c if c >> 16 == PROTOCOL_3 >> 16
            && c & 0xffff <= 0xff
            && (9..=MAX_STARTUP).contains(&u64::from(len)) =>
        {
            // The first parameter name must look like one.
            let params = &data[8..data.len().min(len as usize)];
            let key_len = params.iter().take_while(|&&b| b != 0).count();
            if key_len == params.len() {
                return if params.len() < 64 && (params.len() as u64) < u64::from(len) - 8 {
                    Verdict::Short
                } else {
                    Verdict::No
                };
            }
            let key = &params[..key_len];
            if key_len > 0
                && key
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.'))
            {
                Verdict::Yes
            } else {
                Verdict::No
            }
        }
        _ => Verdict::No,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// A startup packet: the frontend, before its StartupMessage.
    Startup,
    /// Frontend messages.
    Front,
    /// Backend messages.
    Back,
    Maybe,
    No,
}

impl Judgement for Class {
    fn is_maybe(self) -> bool {
        self == Class::Maybe
    }

    fn is_no(self) -> bool {
        self == Class::No
    }
}

/// What the first bytes of a stream of unknown direction are.
fn classify(data: &[u8]) -> Class {
    let startup = check_startup(data);
    if startup == Verdict::Yes {
        return Class::Startup;
    }
    let front = check_chain(Side::Front, data, FRONT_STARTS);
    if front == Verdict::Yes {
        return Class::Front;
    }
    let back = check_chain(Side::Back, data, BACK_ONLY);
    if back == Verdict::Yes {
        return Class::Back;
    }
    if [startup, front, back].contains(&Verdict::Short) {
        Class::Maybe
    } else {
        Class::No
    }
}

/// Whether a lost direction may pick up again at the start of `data`.
fn resync_class(side: Side, untyped: bool, data: &[u8]) -> Class {
    let (verdict, class) = match side {
        Side::Front if untyped => (check_startup(data), Class::Startup),
        Side::Front => (check_chain(side, data, FRONT_STARTS), Class::Front),
        Side::Back => (check_chain(side, data, BACK_RESYNC), Class::Back),
    };
    match verdict {
        Verdict::Yes => class,
        Verdict::Short => Class::Maybe,
        Verdict::No => Class::No,
    }
}

/// The bytes before the first NUL (all of them if there is none).
fn until_nul(b: &[u8]) -> &[u8] {
    b.iter().position(|&c| c == 0).map_or(b, |n| &b[..n])
}

/// Sanitised text and operation of a statement.
fn describe_sql(raw: &[u8]) -> (String, Option<String>) {
    let text = sanitize(raw);
    let operation = operation(&text);
    (text, operation)
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_char(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// Index just past the quote that closes a literal opened at `open`, or the
/// end if the text was cut inside it. `backslash`: E'' escapes.
fn skip_quoted(s: &[u8], open: usize, quote: u8, backslash: bool) -> usize {
    let mut i = open + 1;
    while i < s.len() {
        let b = s[i];
        if backslash && b == b'\\' {
            i += 2;
        } else if b == quote {
            if s.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    s.len()
}

/// Length of the `$tag$` opening a dollar-quoted string at `i`, if it is one.
fn dollar_tag(s: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if s.get(j).is_some_and(|&b| is_ident_start(b)) {
        while s.get(j).is_some_and(|&b| is_ident_char(b) && b != b'$') {
            j += 1;
        }
    }
    (s.get(j) == Some(&b'$')).then_some(j + 1 - i)
}

/// Index past a numeric literal starting at `i` (digits, `_` separators,
/// fraction, exponent, or a 0x/0o/0b integer).
fn skip_number(s: &[u8], mut i: usize) -> usize {
    let digit_run = |s: &[u8], mut i: usize, ok: fn(&u8) -> bool| {
        while s.get(i).is_some_and(|b| ok(b) || *b == b'_') {
            i += 1;
        }
        i
    };
    if s[i] == b'0' && matches!(s.get(i + 1), Some(b'x' | b'X' | b'o' | b'O' | b'b' | b'B')) {
        return digit_run(s, i + 2, u8::is_ascii_hexdigit);
    }
    i = digit_run(s, i, u8::is_ascii_digit);
    if s.get(i) == Some(&b'.') && s.get(i + 1) != Some(&b'.') {
        i = digit_run(s, i + 1, u8::is_ascii_digit);
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(s.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if s.get(j).is_some_and(u8::is_ascii_digit) {
            i = digit_run(s, j, u8::is_ascii_digit);
        }
    }
    i
}

/// Replaces string and numeric literals with `?` and drops comments, so no
/// value the application sent survives; identifiers, keywords and `$n`
/// parameters stay. Text cut by the capture ends with `?` if it was cut
/// inside a literal.
fn sanitize(s: &[u8]) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(s.len().min(MAX_QUERY_CHARS * 2));
    let mut i = 0;
    let n = s.len();
    while i < n && out.len() < MAX_QUERY_CHARS * 4 {
        let b = s[i];
        let next = s.get(i + 1).copied();
        match b {
            b'\'' => {
                i = skip_quoted(s, i, b'\'', false);
                out.push(b'?');
            }
            b'E' | b'e' if next == Some(b'\'') => {
                i = skip_quoted(s, i + 1, b'\'', true);
                out.push(b'?');
            }
            b'B' | b'b' | b'X' | b'x' | b'N' | b'n' if next == Some(b'\'') => {
                i = skip_quoted(s, i + 1, b'\'', false);
                out.push(b'?');
            }
            b'U' | b'u' if next == Some(b'&') && s.get(i + 2) == Some(&b'\'') => {
                i = skip_quoted(s, i + 2, b'\'', false);
                out.push(b'?');
            }
            b'"' => {
                let end = skip_quoted(s, i, b'"', false);
                out.extend_from_slice(&s[i..end]);
                i = end;
            }
            b'$' if next.is_some_and(|c| c.is_ascii_digit()) => {
                let end = i + 1 + s[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
                out.extend_from_slice(&s[i..end]);
                i = end;
            }
            b'$' => match dollar_tag(s, i) {
                Some(tag_len) => {
                    let tag = &s[i..i + tag_len];
                    i = match find(&s[i + tag_len..], tag) {
                        Some(k) => i + tag_len + k + tag_len,
                        None => n,
                    };
                    out.push(b'?');
                }
                None => {
                    out.push(b'$');
                    i += 1;
                }
            },
            b'-' if next == Some(b'-') => {
                i += s[i..].iter().position(|&c| c == b'\n').unwrap_or(n - i);
            }
            b'/' if next == Some(b'*') => {
                // Block comments nest in PostgreSQL.
                let mut depth = 0usize;
                while i < n {
                    if s[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if s[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                if out.last().is_none_or(u8::is_ascii_whitespace) {
                    while matches!(s.get(i), Some(b' ' | b'\t')) {
                        i += 1;
                    }
                } else {
                    out.push(b' ');
                }
            }
            b'0'..=b'9' => {
                i = skip_number(s, i);
                out.push(b'?');
            }
            b'.' if next.is_some_and(|c| c.is_ascii_digit()) => {
                i = skip_number(s, i + 1);
                out.push(b'?');
            }
            b if is_ident_start(b) => {
                let end = i + s[i..].iter().take_while(|&&c| is_ident_char(c)).count();
                out.extend_from_slice(&s[i..end]);
                i = end;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    let text = match std::str::from_utf8(&out) {
        Ok(t) => t.to_owned(),
        // A character cut by the capture is dropped; invalid bytes replaced.
        Err(e) if e.error_len().is_none() => {
            String::from_utf8_lossy(&out[..e.valid_up_to()]).into_owned()
        }
        Err(_) => String::from_utf8_lossy(&out).into_owned(),
    };
    let text = text.trim();
    match text.char_indices().nth(MAX_QUERY_CHARS) {
        Some((cut, _)) => text[..cut].to_owned(),
        None => text.to_owned(),
    }
}

/// Words of sanitised SQL outside parentheses and quoted identifiers, with
/// the depth each was found at.
fn words(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let s = text.as_bytes();
    let mut i = 0;
    let mut depth = 0usize;
    std::iter::from_fn(move || {
        while i < s.len() {
            let b = s[i];
            if b == b'"' {
                i = skip_quoted(s, i, b'"', false);
            } else if b == b'(' {
                depth += 1;
                i += 1;
            } else if b == b')' {
                depth = depth.saturating_sub(1);
                i += 1;
            } else if is_ident_start(b) {
                let start = i;
                while i < s.len() && is_ident_char(s[i]) {
                    i += 1;
                }
                return Some((depth, &text[start..i]));
            } else {
                i += 1;
            }
        }
        None
    })
}

/// First keyword of sanitised SQL, upper-cased; for `WITH`, the statement
/// the common table expressions feed when it can be found.
fn operation(text: &str) -> Option<String> {
    let mut words = words(text);
    let (_, first) = words.next()?;
    if !first.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let first = first.to_ascii_uppercase();
    if first != "WITH" {
        return Some(first);
    }
    const MAIN: &[&str] = &[
        "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "VALUES", "TABLE",
    ];
    let main = words
        .filter(|(depth, _)| *depth == 0)
        .map(|(_, w)| w.to_ascii_uppercase())
        .find(|w| MAIN.contains(&w.as_str()));
    Some(main.unwrap_or(first))
}

/// Row count from a CommandComplete tag such as `SELECT 3` or `INSERT 0 1`.
fn parse_rows(body: &[u8]) -> Option<u64> {
    let tag = std::str::from_utf8(until_nul(body)).ok()?;
    let mut parts = tag.split(' ');
    let command = parts.next()?;
    const COUNTED: &[&str] = &[
        "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "FETCH", "MOVE", "COPY",
    ];
    if !COUNTED.contains(&command) {
        return None;
    }
    parts.next_back()?.parse().ok()
}

fn parse_error(body: &[u8]) -> Option<PgError> {
    let (mut code, mut severity, mut localized, mut message) = (None, None, None, None);
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let value = until_nul(tail);
        let text = || String::from_utf8_lossy(value).into_owned();
        match field {
            b'C' => code = Some(text()),
            b'V' => severity = Some(text()),
            b'S' => localized = Some(text()),
            b'M' => message = Some(text().chars().take(MAX_ERROR_MESSAGE).collect()),
            _ => {}
        }
        rest = tail.get(value.len() + 1..).unwrap_or_default();
    }
    Some(PgError {
        code: code?,
        severity: severity.or(localized).unwrap_or_default(),
        message: message.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests;
