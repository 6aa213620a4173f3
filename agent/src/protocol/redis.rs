//! Redis serialization protocol (RESP2 and RESP3) over one connection, from
//! what the probes saw: for each transfer a captured prefix of its bytes and
//! its full length. Bulk payloads carry their length, so bytes past a capture
//! are skipped by counting; any other byte past a capture (a type byte, a
//! length line) loses framing, and that direction then waits for a transfer
//! that begins with a plausible command or reply. The server answers every
//! command with exactly one reply, in order, so commands and replies pair
//! first in, first out; push messages are not replies and are skipped. Modes
//! where that stops holding (RESP2 pub/sub, MONITOR, CLIENT REPLY, replication)
//! end parsing of the connection rather than risk pairing wrongly.
use std::collections::VecDeque;

use super::{
    Direction, ParseErrors, Timing,
    held::{Held, Judgement, earlier_len},
};

/// Deepest nesting of aggregates accepted.
const MAX_DEPTH: usize = 64;
/// Longest length or count line: an i64 and its CRLF fit.
const MAX_HEADER_LINE: u64 = 24;
/// Longest simple string, error, double or big number line accepted.
const MAX_LINE: u64 = 1 << 20;
/// Longest inline command accepted (the server's own limit).
const MAX_INLINE: usize = 64 * 1024;
/// Bytes kept of a command name, first argument or error.
const WORD_KEEP: usize = 64;
/// Largest bulk length or element count taken as sane.
const MAX_BULK: i64 = 1 << 40;
const MAX_COUNT: i64 = i32::MAX as i64;
/// Commands waiting for replies; beyond that the oldest are abandoned (while
/// still counted, so pairing stays right).
const MAX_PENDING: usize = 1024;

/// Commands whose first argument names a subcommand.
#[rustfmt::skip]
const CONTAINERS: &[&str] = &[
    "ACL", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "DEBUG", "FUNCTION", "LATENCY", "MEMORY",
    "MODULE", "OBJECT", "PUBSUB", "SCRIPT", "SLOWLOG", "XGROUP", "XINFO",
];

/// Redis commands (sorted). Judging bytes of unknown framing, an inline
/// command, or an array whose first string is to prove the bytes are
/// commands and not a reply, must name one of these (or a module command).
#[rustfmt::skip]
const KNOWN_COMMANDS: &[&str] = &[
    "ACL", "APPEND", "ASKING", "AUTH", "BGREWRITEAOF", "BGSAVE", "BITCOUNT", "BITFIELD",
    "BITFIELD_RO", "BITOP", "BITPOS", "BLMOVE", "BLMPOP", "BLPOP", "BRPOP", "BRPOPLPUSH", "BZMPOP",
    "BZPOPMAX", "BZPOPMIN", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "COPY", "DBSIZE", "DEBUG",
    "DECR", "DECRBY", "DEL", "DISCARD", "DUMP", "ECHO", "EVAL", "EVALSHA", "EVALSHA_RO", "EVAL_RO",
    "EXEC", "EXISTS", "EXPIRE", "EXPIREAT", "EXPIRETIME", "FAILOVER", "FCALL", "FCALL_RO",
    "FLUSHALL", "FLUSHDB", "FUNCTION", "GEOADD", "GEODIST", "GEOHASH", "GEOPOS", "GEORADIUS",
    "GEORADIUSBYMEMBER", "GEORADIUSBYMEMBER_RO", "GEORADIUS_RO", "GEOSEARCH", "GEOSEARCHSTORE",
    "GET", "GETBIT", "GETDEL", "GETEX", "GETRANGE", "GETSET", "HDEL", "HELLO", "HEXISTS",
    "HEXPIRE", "HGET", "HGETALL", "HINCRBY", "HINCRBYFLOAT", "HKEYS", "HLEN", "HMGET", "HMSET",
    "HRANDFIELD", "HSCAN", "HSET", "HSETNX", "HSTRLEN", "HVALS", "INCR", "INCRBY", "INCRBYFLOAT",
    "INFO", "KEYS", "LASTSAVE", "LATENCY", "LCS", "LINDEX", "LINSERT", "LLEN", "LMOVE", "LMPOP",
    "LPOP", "LPOS", "LPUSH", "LPUSHX", "LRANGE", "LREM", "LSET", "LTRIM", "MEMORY", "MGET",
    "MIGRATE", "MODULE", "MONITOR", "MOVE", "MSET", "MSETNX", "MULTI", "OBJECT", "PERSIST",
    "PEXPIRE", "PEXPIREAT", "PEXPIRETIME", "PFADD", "PFCOUNT", "PFMERGE", "PING", "PSETEX",
    "PSUBSCRIBE", "PSYNC", "PTTL", "PUBLISH", "PUBSUB", "PUNSUBSCRIBE", "QUIT", "RANDOMKEY",
    "READONLY", "READWRITE", "RENAME", "RENAMENX", "REPLCONF", "REPLICAOF", "RESET", "RESTORE",
    "ROLE", "RPOP", "RPOPLPUSH", "RPUSH", "RPUSHX", "SADD", "SAVE", "SCAN", "SCARD", "SCRIPT",
    "SDIFF", "SDIFFSTORE", "SELECT", "SET", "SETBIT", "SETEX", "SETNX", "SETRANGE", "SHUTDOWN",
    "SINTER", "SINTERCARD", "SINTERSTORE", "SISMEMBER", "SLAVEOF", "SLOWLOG", "SMEMBERS",
    "SMISMEMBER", "SMOVE", "SORT", "SORT_RO", "SPOP", "SPUBLISH", "SRANDMEMBER", "SREM", "SSCAN",
    "SSUBSCRIBE", "STRLEN", "SUBSCRIBE", "SUBSTR", "SUNION", "SUNIONSTORE", "SUNSUBSCRIBE",
    "SWAPDB", "SYNC", "TIME", "TOUCH", "TTL", "TYPE", "UNLINK", "UNSUBSCRIBE", "UNWATCH", "WAIT",
    "WAITAOF", "WATCH", "XACK", "XADD", "XAUTOCLAIM", "XCLAIM", "XDEL", "XGROUP", "XINFO", "XLEN",
    "XPENDING", "XRANGE", "XREAD", "XREADGROUP", "XREVRANGE", "XSETID", "XTRIM", "ZADD", "ZCARD",
    "ZCOUNT", "ZDIFF", "ZDIFFSTORE", "ZINCRBY", "ZINTER", "ZINTERCARD", "ZINTERSTORE", "ZLEXCOUNT",
    "ZMPOP", "ZMSCORE", "ZPOPMAX", "ZPOPMIN", "ZRANDMEMBER", "ZRANGE", "ZRANGEBYLEX",
    "ZRANGEBYSCORE", "ZRANGESTORE", "ZRANK", "ZREM", "ZREMRANGEBYLEX", "ZREMRANGEBYRANK",
    "ZREMRANGEBYSCORE", "ZREVRANGE", "ZREVRANGEBYLEX", "ZREVRANGEBYSCORE", "ZREVRANK", "ZSCAN",
    "ZSCORE", "ZUNION", "ZUNIONSTORE",
];

/// Whether `data` begins a command: a RESP array of bulk strings (or a prefix
/// of one at least 4 bytes long), or an inline command of a known name. An
/// HTTP/1 request line is not one.
pub fn looks_like_command(data: &[u8]) -> bool {
    match check_start(true, false, data) {
        Verdict::Yes => true,
        Verdict::Short => data.len() >= 4 && data[0] == b'*',
        Verdict::No => false,
    }
}

/// What one connection revealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisEvent {
    /// A command is complete; `start` is its first transfer.
    Start {
        seq: u64,
        command: RedisCommand,
        start: Timing,
    },
    /// A command and its reply are complete.
    Done { seq: u64, exchange: RedisExchange },
    /// A command will get no reply seen by seam.
    Abandoned { seq: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisCommand {
    /// Upper-cased; with the subcommand for container commands (`CONFIG GET`).
    pub name: String,
    /// Arguments after the name; their values are never kept.
    pub args: u32,
    /// Database chosen by the last SELECT seen on the connection.
    pub database: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisExchange {
    pub seq: u64,
    pub command: RedisCommand,
    pub request_start: Timing,
    pub request_end: Timing,
    pub response_start: Timing,
    pub response_end: Timing,
    /// First word of an error reply (`ERR`, `WRONGTYPE`), never the message.
    pub error: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Requests = 0,
    Responses = 1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Yes,
    No,
    /// Consistent so far, but too short to tell.
    Short,
}

/// The bytes are not RESP as expected here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bad;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Tok {
    /// A type byte.
    #[default]
    Type,
    /// The rest of a line after type byte `.0`.
    Line(u8),
    /// Payload bytes of a bulk value.
    Bulk(u64),
    /// Bytes of the CRLF after a payload still to come.
    Crlf(u8),
    /// A command in inline form, up to its newline.
    Inline,
}

#[derive(Clone, Copy, Debug)]
struct Aggregate {
    left: u64,
    /// Attributes describe the value after them and are not values.
    attribute: bool,
}

/// Something complete in a stream.
#[derive(Debug)]
enum Item {
    Command {
        /// Upper-cased command name.
        name: String,
        /// Upper-cased subcommand, if the first argument looks like one.
        sub: Option<String>,
        /// First bytes of the first argument.
        arg1: Vec<u8>,
        /// Elements, the name included.
        count: u64,
        start: Timing,
        end: Timing,
    },
    Reply {
        error: Option<String>,
        start: Timing,
        end: Timing,
    },
    Push,
}

/// Incremental RESP reader for one direction.
#[derive(Debug, Default)]
struct Reader {
    /// Framing known; otherwise waiting for a transfer that begins a value.
    synced: bool,
    /// Judging bytes of unknown framing: inline commands must have known names.
    strict: bool,
    /// Deciding which direction carries commands: so must array commands.
    decide: bool,
    tok: Tok,
    /// First bytes of the current line (all of it for inline commands).
    line: Vec<u8>,
    line_len: u64,
    /// The line's last byte so far was CR.
    cr: bool,
    stack: Vec<Aggregate>,
    /// Type of the top-level value being read (0 until its type byte).
    top: u8,
    start: Option<Timing>,
    /// Elements of the command being read, and how many are complete.
    elements: u64,
    done_elements: u64,
    /// First bytes of the command's name and first argument, and their lengths.
    words: [Vec<u8>; 2],
    word_len: [u64; 2],
    error: Option<String>,
    /// A first value was seen to be well formed.
    checked: bool,
}

impl Reader {
    fn reset(&mut self) {
        *self = Reader {
            strict: self.strict,
            decide: self.decide,
            synced: self.synced,
            line: std::mem::take(&mut self.line),
            ..Reader::default()
        };
        self.line.clear();
    }

    /// Reads captured bytes.
    fn feed(
        &mut self,
        requests: bool,
        data: &[u8],
        timing: Timing,
        items: &mut Vec<Item>,
    ) -> Result<(), Bad> {
        let mut pos = 0;
        while pos < data.len() {
            match self.tok {
                Tok::Type => {
                    let b = data[pos];
                    pos += 1;
                    self.begin(requests, b, timing)?;
                }
                Tok::Line(_) | Tok::Inline => {
                    let rest = &data[pos..];
                    let newline = rest.iter().position(|&c| c == b'\n');
                    let chunk = &rest[..newline.unwrap_or(rest.len())];
                    pos += chunk.len() + usize::from(newline.is_some());
                    self.add_to_line(chunk)?;
                    if newline.is_some() {
                        self.end_line(requests, timing, items)?;
                    }
                }
                Tok::Bulk(left) => {
                    let take = left.min((data.len() - pos) as u64) as usize;
                    self.keep_payload(requests, &data[pos..pos + take], take as u64);
                    pos += take;
                    self.tok = if left == take as u64 {
                        Tok::Crlf(2)
                    } else {
                        Tok::Bulk(left - take as u64)
                    };
                }
                Tok::Crlf(k) => {
                    let want = if k == 2 { b'\r' } else { b'\n' };
                    if data[pos] != want {
                        return Err(Bad);
                    }
                    pos += 1;
                    if k == 2 {
                        self.tok = Tok::Crlf(1);
                    } else {
                        self.value_done(requests, timing, items)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Accounts for `n` bytes that were not captured.
    fn skip(
        &mut self,
        requests: bool,
        mut n: u64,
        timing: Timing,
        items: &mut Vec<Item>,
    ) -> Result<(), Bad> {
        while n > 0 {
            match self.tok {
                Tok::Bulk(left) => {
                    let take = left.min(n);
                    self.keep_payload(requests, &[], take);
                    n -= take;
                    self.tok = if left == take {
                        Tok::Crlf(2)
                    } else {
                        Tok::Bulk(left - take)
                    };
                }
                Tok::Crlf(k) => {
                    let take = u64::from(k).min(n);
                    n -= take;
                    if take == u64::from(k) {
                        self.value_done(requests, timing, items)?;
                    } else {
                        self.tok = Tok::Crlf(k - take as u8);
                    }
                }
                // Unseen bytes where a type byte or a line should be.
                Tok::Type | Tok::Line(_) | Tok::Inline => return Err(Bad),
            }
        }
        Ok(())
    }

    fn begin(&mut self, requests: bool, b: u8, timing: Timing) -> Result<(), Bad> {
        let depth = self.stack.len();
        if depth == 0 && self.start.is_none() {
            self.start = Some(timing);
        }
        if requests {
            if depth == 0 {
                match b {
                    b'*' => {}
                    // Blank lines between inline commands.
                    b'\r' | b'\n' => {
                        self.start = None;
                        return Ok(());
                    }
                    b if b.is_ascii_alphabetic() => {
                        self.tok = Tok::Inline;
                        self.line.clear();
                        self.line.push(b);
                        self.line_len = 1;
                        self.cr = false;
                        return Ok(());
                    }
                    _ => return Err(Bad),
                }
            } else if b != b'$' {
                return Err(Bad);
            }
        } else if !b"+-:$*_,#!=(%~>|".contains(&b) {
            return Err(Bad);
        }
        if depth == 0 && b != b'|' {
            self.top = b;
        }
        self.tok = Tok::Line(b);
        self.line.clear();
        self.line_len = 0;
        self.cr = false;
        Ok(())
    }

    fn add_to_line(&mut self, chunk: &[u8]) -> Result<(), Bad> {
        let Some(&last) = chunk.last() else {
            return Ok(());
        };
        self.line_len += chunk.len() as u64;
        let (keep, limit) = match self.tok {
            Tok::Inline => (MAX_INLINE, MAX_INLINE as u64),
            Tok::Line(b'+' | b'-' | b',' | b'(') => (WORD_KEEP, MAX_LINE),
            Tok::Line(b'#' | b'_') => (WORD_KEEP, 2),
            _ => {
                // Lengths and counts: digits, a sign, `?` for streamed values.
                let numeric = |c: &u8| c.is_ascii_digit() || matches!(c, b'-' | b'?' | b'\r');
                if !chunk.iter().all(numeric) {
                    return Err(Bad);
                }
                (WORD_KEEP, MAX_HEADER_LINE)
            }
        };
        if self.line_len > limit {
            return Err(Bad);
        }
        let room = keep.saturating_sub(self.line.len()).min(chunk.len());
        self.line.extend_from_slice(&chunk[..room]);
        self.cr = last == b'\r';
        Ok(())
    }

    fn end_line(
        &mut self,
        requests: bool,
        timing: Timing,
        items: &mut Vec<Item>,
    ) -> Result<(), Bad> {
        if self.tok == Tok::Inline {
            return self.end_inline(timing, items);
        }
        let Tok::Line(ty) = self.tok else {
            return Err(Bad);
        };
        if !self.cr {
            return Err(Bad);
        }
        let content_len = (self.line_len - 1).min(self.line.len() as u64) as usize;
        let content = &self.line[..content_len];
        match ty {
            b'+' | b',' | b'(' => {}
            b'-' => {
                if self.stack.is_empty() {
                    self.error = Some(error_kind(content));
                }
            }
            b':' => {
                number(content)?;
            }
            b'#' => ensure(content == b"t" || content == b"f")?,
            b'_' => ensure(content.is_empty())?,
            b'$' | b'!' | b'=' => {
                let n = number(content)?;
                if n == -1 && ty == b'$' {
                    self.checked = true;
                    return self.value_done(requests, timing, items);
                }
                // Streamed strings (`$?`) are not supported: no number.
                ensure((0..=MAX_BULK).contains(&n))?;
                self.checked = self.checked || !requests;
                self.tok = if n == 0 {
                    Tok::Crlf(2)
                } else {
                    Tok::Bulk(n as u64)
                };
                return Ok(());
            }
            b'*' | b'%' | b'~' | b'>' | b'|' => {
                let n = number(content)?;
                self.checked = self.checked || !requests;
                if n == -1 && ty == b'*' {
                    return self.value_done(requests, timing, items);
                }
                ensure((0..=MAX_COUNT).contains(&n))?;
                let n = n as u64;
                let count = if matches!(ty, b'%' | b'|') { 2 * n } else { n };
                if requests {
                    self.elements = n;
                }
                if count == 0 {
                    if ty == b'|' {
                        self.tok = Tok::Type;
                        return Ok(());
                    }
                    return self.value_done(requests, timing, items);
                }
                ensure(self.stack.len() < MAX_DEPTH)?;
                self.stack.push(Aggregate {
                    left: count,
                    attribute: ty == b'|',
                });
                self.tok = Tok::Type;
                return Ok(());
            }
            _ => return Err(Bad),
        }
        self.checked = true;
        self.value_done(requests, timing, items)
    }

    fn end_inline(&mut self, timing: Timing, items: &mut Vec<Item>) -> Result<(), Bad> {
        let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
        let mut tokens = line
            .split(u8::is_ascii_whitespace)
            .filter(|t| !t.is_empty());
        let Some(first) = tokens.next() else {
            self.reset();
            return Ok(());
        };
        ensure(command_token(first))?;
        let name = String::from_utf8_lossy(first).to_ascii_uppercase();
        if self.strict {
            // `GET /path HTTP/1.1` is an HTTP request, not an inline GET.
            let http = line.windows(6).any(|w| w == b" HTTP/");
            ensure(known_command(&name) && !http)?;
        }
        let second = tokens.next();
        let count = 1 + u64::from(second.is_some()) + tokens.count() as u64;
        let second = second.unwrap_or_default();
        items.push(Item::Command {
            sub: subcommand(second),
            arg1: second[..second.len().min(WORD_KEEP)].to_vec(),
            name,
            count,
            start: self.start.unwrap_or(timing),
            end: timing,
        });
        self.reset();
        self.checked = true;
        Ok(())
    }

    /// Keeps the first bytes of payloads that matter: a command's name and
    /// first argument, and a top-level blob error.
    fn keep_payload(&mut self, requests: bool, bytes: &[u8], n: u64) {
        let word = if requests && self.stack.len() == 1 && self.done_elements < 2 {
            Some(self.done_elements as usize)
        } else if !requests && self.stack.is_empty() && self.top == b'!' {
            Some(0)
        } else {
            None
        };
        if let Some(i) = word {
            let w = &mut self.words[i];
            let room = WORD_KEEP.saturating_sub(w.len()).min(bytes.len());
            w.extend_from_slice(&bytes[..room]);
            self.word_len[i] += n;
        }
    }

    fn value_done(
        &mut self,
        requests: bool,
        timing: Timing,
        items: &mut Vec<Item>,
    ) -> Result<(), Bad> {
        self.tok = Tok::Type;
        loop {
            let depth = self.stack.len();
            let Some(parent) = self.stack.last_mut() else {
                return self.top_done(requests, timing, items);
            };
            parent.left -= 1;
            let left = parent.left;
            if requests && depth == 1 {
                self.done_elements += 1;
                if self.done_elements == 1 {
                    let name = &self.words[0];
                    ensure(self.word_len[0] == name.len() as u64 && command_token(name))?;
                    if self.decide {
                        ensure(known_command(
                            &String::from_utf8_lossy(name).to_ascii_uppercase(),
                        ))?;
                    }
                    self.checked = true;
                }
            }
            if left > 0 {
                return Ok(());
            }
            if self.stack.pop().is_some_and(|a| a.attribute) {
                return Ok(());
            }
        }
    }

    /// A top-level value is complete.
    fn top_done(
        &mut self,
        requests: bool,
        timing: Timing,
        items: &mut Vec<Item>,
    ) -> Result<(), Bad> {
        let start = self.start.unwrap_or(timing);
        if requests {
            // An empty array is no command: the server ignores it.
            if self.elements > 0 {
                let arg1 = &self.words[1];
                let whole = self.word_len[1] == arg1.len() as u64;
                items.push(Item::Command {
                    name: String::from_utf8_lossy(&self.words[0]).to_ascii_uppercase(),
                    sub: subcommand(arg1).filter(|_| whole),
                    arg1: arg1.clone(),
                    count: self.elements,
                    start,
                    end: timing,
                });
            }
        } else if self.top == b'>' {
            items.push(Item::Push);
        } else {
            let error = match self.top {
                b'!' => Some(error_kind(&self.words[0])),
                _ => self.error.take(),
            };
            items.push(Item::Reply {
                error,
                start,
                end: timing,
            });
        }
        let checked = self.checked;
        self.reset();
        self.checked = checked;
        Ok(())
    }
}

fn ensure(ok: bool) -> Result<(), Bad> {
    if ok { Ok(()) } else { Err(Bad) }
}

fn number(s: &[u8]) -> Result<i64, Bad> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Bad)
}

/// A command name: ASCII, a letter first, module commands' dots allowed.
fn command_token(w: &[u8]) -> bool {
    (1..=WORD_KEEP).contains(&w.len())
        && w[0].is_ascii_alphabetic()
        && w.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Whether an upper-cased name is a Redis command or looks like a module's
/// (`JSON.GET`, `FT.SEARCH`).
fn known_command(name: &str) -> bool {
    KNOWN_COMMANDS.binary_search(&name).is_ok()
        || name.split_once('.').is_some_and(|(module, command)| {
            (1..=8).contains(&module.len())
                && module.bytes().all(|b| b.is_ascii_alphabetic())
                && command
                    .bytes()
                    .all(|b| b.is_ascii_alphabetic() || b == b'_')
        })
}

/// A first argument that reads as a subcommand keyword, upper-cased.
fn subcommand(w: &[u8]) -> Option<String> {
    let ok = (1..=32).contains(&w.len())
        && w[0].is_ascii_alphabetic()
        && w.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    ok.then(|| String::from_utf8_lossy(w).to_ascii_uppercase())
}

/// The error code that starts an error message (by convention an upper-case
/// word); `ERR` when the message does not start with a word.
fn error_kind(message: &[u8]) -> String {
    let word = message.split(|&b| b == b' ').next().unwrap_or_default();
    let ok = (1..=32).contains(&word.len())
        && word
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
    if ok {
        String::from_utf8_lossy(word).into_owned()
    } else {
        "ERR".to_owned()
    }
}

/// Judges the start of a stream: a well-formed first command (or reply),
/// with the rest of the captured bytes consistent.
fn check_start(requests: bool, decide: bool, data: &[u8]) -> Verdict {
    let mut reader = Reader {
        strict: true,
        decide,
        ..Reader::default()
    };
    let mut items = Vec::new();
    match reader.feed(requests, data, Timing::default(), &mut items) {
        Err(Bad) => Verdict::No,
        Ok(()) if reader.checked => Verdict::Yes,
        Ok(()) => Verdict::Short,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Requests,
    Responses,
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

/// What the first bytes of a stream of unknown direction are. An array of
/// bulk strings may be a command or a reply: it is a command only if its
/// first string names a known command.
fn classify(data: &[u8]) -> Class {
    match check_start(true, true, data) {
        Verdict::Yes => return Class::Requests,
        Verdict::Short => return Class::Maybe,
        Verdict::No => {}
    }
    match check_start(false, false, data) {
        Verdict::Yes => Class::Responses,
        Verdict::Short => Class::Maybe,
        Verdict::No => Class::No,
    }
}

#[derive(Debug)]
struct Waiting {
    seq: u64,
    command: RedisCommand,
    start: Timing,
    end: Timing,
}

#[derive(Debug)]
enum Slot {
    Command(Box<Waiting>),
    /// Commands still owed a reply that make no span (dropped over the limit).
    Silent(u64),
    /// After this command replies no longer pair with commands.
    Stop,
}

/// Redis state of one TCP connection, as seen from one process.
#[derive(Debug, Default)]
pub struct RedisConn {
    requests_dir: Option<Direction>,
    /// Indexed by [`Direction`].
    held: [Held; 2],
    /// Indexed by [`Side`].
    readers: [Reader; 2],
    pending: VecDeque<Slot>,
    next_seq: u64,
    desyncs: u64,
    orphan_responses: u64,
    database: Option<u32>,
    /// The connection speaks RESP3, where pub/sub messages are pushes.
    resp3: bool,
    /// Replies can no longer be paired with commands; nothing is parsed.
    stopped: bool,
}

impl RedisConn {
    pub fn new() -> Self {
        Self::default()
    }

    /// Direction that carries commands, once the bytes told.
    pub fn requests_direction(&self) -> Option<Direction> {
        self.requests_dir
    }

    pub fn errors(&self) -> ParseErrors {
        ParseErrors {
            desyncs: self.desyncs,
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
        out: &mut Vec<RedisEvent>,
    ) {
        let len = len.max(data.len() as u64);
        if self.stopped {
            return;
        }
        let side = match self.requests_dir {
            Some(req) if req == dir => Side::Requests,
            Some(_) => Side::Responses,
            None => {
                let Some((probe, first, class)) =
                    self.held[dir as usize].hold(data, len, timing, classify)
                else {
                    return;
                };
                let side = if class == Class::Responses {
                    self.requests_dir = Some(dir.opposite());
                    Side::Responses
                } else {
                    self.requests_dir = Some(dir);
                    Side::Requests
                };
                self.held = Default::default();
                self.readers[side as usize].synced = true;
                self.replay(side, &probe, data, first, len, timing, out);
                return;
            }
        };
        // Each stream begins (and resumes after losing framing) only at a
        // transfer that begins a value.
        if !self.readers[side as usize].synced {
            let requests = side == Side::Requests;
            let judge = move |bytes: &[u8]| match check_start(requests, false, bytes) {
                Verdict::Yes if requests => Class::Requests,
                Verdict::Yes => Class::Responses,
                Verdict::Short => Class::Maybe,
                Verdict::No => Class::No,
            };
            let Some((probe, first, _)) = self.held[dir as usize].hold(data, len, timing, judge)
            else {
                return;
            };
            self.held[dir as usize] = Held::default();
            self.readers[side as usize].reset();
            self.readers[side as usize].synced = true;
            self.replay(side, &probe, data, first, len, timing, out);
            return;
        }
        self.feed_stream(side, data, len, timing, out);
    }

    /// The connection closed: whatever waits for a reply is abandoned.
    pub fn close(&mut self, out: &mut Vec<RedisEvent>) {
        self.abandon_all(out);
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
        out: &mut Vec<RedisEvent>,
    ) {
        let earlier = earlier_len(probe, data);
        if earlier > 0 {
            self.feed_stream(side, &probe[..earlier], earlier as u64, first, out);
        }
        if self.readers[side as usize].synced && !self.stopped {
            self.feed_stream(side, data, len, timing, out);
        }
    }

    fn feed_stream(
        &mut self,
        side: Side,
        data: &[u8],
        len: u64,
        timing: Timing,
        out: &mut Vec<RedisEvent>,
    ) {
        let requests = side == Side::Requests;
        let reader = &mut self.readers[side as usize];
        let mut items = Vec::new();
        let result = reader
            .feed(requests, data, timing, &mut items)
            .and_then(|()| reader.skip(requests, len - data.len() as u64, timing, &mut items));
        for item in items {
            if self.stopped {
                return;
            }
            self.on_item(item, out);
        }
        if result.is_err() && !self.stopped {
            self.lose(side, out);
        }
    }

    fn lose(&mut self, side: Side, out: &mut Vec<RedisEvent>) {
        let reader = &mut self.readers[side as usize];
        if reader.synced {
            self.desyncs += 1;
        }
        reader.synced = false;
        reader.reset();
        if let Some(dir) = self.requests_dir {
            let dir = if side == Side::Requests {
                dir
            } else {
                dir.opposite()
            };
            self.held[dir as usize] = Held::default();
        }
        // A lost command stream only loses the command being read; commands
        // already complete still get their replies. A lost reply stream
        // leaves no way to tell which reply is whose.
        if side == Side::Responses {
            if self.pending.iter().any(|s| matches!(s, Slot::Stop)) {
                self.stopped = true;
            }
            self.abandon_all(out);
        }
    }

    fn abandon_all(&mut self, out: &mut Vec<RedisEvent>) {
        for slot in self.pending.drain(..) {
            if let Slot::Command(w) = slot {
                out.push(RedisEvent::Abandoned { seq: w.seq });
            }
        }
    }

    fn on_item(&mut self, item: Item, out: &mut Vec<RedisEvent>) {
        match item {
            Item::Command {
                name,
                sub,
                arg1,
                count,
                start,
                end,
            } => self.on_command(&name, sub, &arg1, count, start, end, out),
            Item::Reply { error, start, end } => self.on_reply(error, start, end, out),
            // Out-of-band data: answers no command.
            Item::Push => self.resp3 = true,
        }
    }

    #[expect(clippy::too_many_arguments, reason = "the fields of a command item")]
    fn on_command(
        &mut self,
        name: &str,
        sub: Option<String>,
        arg1: &[u8],
        count: u64,
        start: Timing,
        end: Timing,
        out: &mut Vec<RedisEvent>,
    ) {
        let subscription = matches!(
            name,
            "SUBSCRIBE"
                | "PSUBSCRIBE"
                | "SSUBSCRIBE"
                | "UNSUBSCRIBE"
                | "PUNSUBSCRIBE"
                | "SUNSUBSCRIBE"
        );
        if subscription && self.resp3 {
            // RESP3 answers these with pushes only.
            return;
        }
        let reply_off = name == "CLIENT" && sub.as_deref() == Some("REPLY");
        if subscription || reply_off || matches!(name, "MONITOR" | "SYNC" | "PSYNC") {
            self.pending.push_back(Slot::Stop);
            self.check_stop(out);
            return;
        }
        match name {
            "SELECT" => {
                if let Some(db) = std::str::from_utf8(arg1).ok().and_then(|s| s.parse().ok()) {
                    self.database = Some(db);
                }
            }
            "HELLO" => match arg1 {
                b"3" => self.resp3 = true,
                b"2" => self.resp3 = false,
                _ => {}
            },
            "RESET" => {
                self.database = Some(0);
                self.resp3 = false;
            }
            _ => {}
        }
        let (name, words) = match sub {
            Some(sub) if CONTAINERS.contains(&name) => (format!("{name} {sub}"), 2),
            _ => (name.to_owned(), 1),
        };
        let command = RedisCommand {
            name,
            args: u32::try_from(count.saturating_sub(words)).unwrap_or(u32::MAX),
            database: self.database,
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        out.push(RedisEvent::Start {
            seq,
            command: command.clone(),
            start,
        });
        self.pending.push_back(Slot::Command(Box::new(Waiting {
            seq,
            command,
            start,
            end,
        })));
        if self.pending.len() > MAX_PENDING {
            // Fold the two oldest into one count: still answered in order.
            let mut count = 0;
            for _ in 0..2 {
                match self.pending.pop_front() {
                    Some(Slot::Command(w)) => {
                        out.push(RedisEvent::Abandoned { seq: w.seq });
                        count += 1;
                    }
                    Some(Slot::Silent(n)) => count += n,
                    Some(Slot::Stop) | None => {}
                }
            }
            self.pending.push_front(Slot::Silent(count));
        }
    }

    fn on_reply(
        &mut self,
        error: Option<String>,
        start: Timing,
        end: Timing,
        out: &mut Vec<RedisEvent>,
    ) {
        match self.pending.front_mut() {
            None | Some(Slot::Stop) => self.orphan_responses += 1,
            Some(Slot::Silent(n)) => {
                *n -= 1;
                if *n == 0 {
                    self.pending.pop_front();
                }
            }
            Some(Slot::Command(w)) => {
                // A reply that was complete before the command was sent
                // answers a command seam did not see.
                if start.exit_ns < w.start.enter_ns {
                    self.orphan_responses += 1;
                    return;
                }
                let Some(Slot::Command(w)) = self.pending.pop_front() else {
                    return;
                };
                let w = *w;
                out.push(RedisEvent::Done {
                    seq: w.seq,
                    exchange: RedisExchange {
                        seq: w.seq,
                        command: w.command,
                        request_start: w.start,
                        request_end: w.end,
                        response_start: start,
                        response_end: end,
                        error,
                    },
                });
            }
        }
        self.check_stop(out);
    }

    /// Once every reply before a mode switch is in, nothing more pairs.
    fn check_stop(&mut self, out: &mut Vec<RedisEvent>) {
        if matches!(self.pending.front(), Some(Slot::Stop)) {
            self.stopped = true;
            self.abandon_all(out);
        }
    }
}

#[cfg(test)]
mod tests;
