//! Application protocols parsed from connection byte streams. Each protocol is
//! a module that turns transfers into request starts and request/response
//! exchanges behind the [`Parser`] trait; which one a connection speaks is
//! decided from its first bytes ([`detect`]), never from its port. The
//! connection and span machinery around them is shared.
pub mod detect;
pub mod headers;
mod held;
pub mod http1;
pub mod http2;
pub mod postgres;
pub mod redis;
#[cfg(test)]
mod transfers;

/// Which way bytes moved, from the traced process's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The process sent them.
    Egress = 0,
    /// The process received them.
    Ingress = 1,
}

impl Direction {
    pub fn opposite(self) -> Self {
        match self {
            Direction::Egress => Direction::Ingress,
            Direction::Ingress => Direction::Egress,
        }
    }
}

/// When a transfer's syscall (or TLS call) began and returned, in
/// `CLOCK_MONOTONIC` nanoseconds as the probes read it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    pub enter_ns: u64,
    pub exit_ns: u64,
}

/// Which end of a connection a process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// It connected (and sends requests).
    Client,
    /// It accepted (and answers requests).
    Server,
}

/// A request whose head has been seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Http(std::sync::Arc<http1::RequestHead>),
    Http2(http2::H2Request),
    Postgres(postgres::PgQuery),
    Redis(redis::RedisCommand),
}

impl Request {
    /// A trace-context carrier field (HTTP header, gRPC metadata),
    /// case-insensitive. Database protocols carry none.
    pub fn carrier(&self, name: &str) -> Option<&str> {
        match self {
            Request::Http(head) => head.header(name),
            Request::Http2(r) => r
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str()),
            Request::Postgres(_) | Request::Redis(_) => None,
        }
    }

    /// Whether any carrier field's name starts with `prefix` (given in
    /// lower case; names compare case-insensitively): one pass where
    /// asking for each field of a family would take one per name.
    pub fn carries_prefix(&self, prefix: &str) -> bool {
        let starts = |name: &str| {
            name.get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
        };
        match self {
            Request::Http(head) => head.headers.iter().any(|(k, _)| starts(k)),
            Request::Http2(r) => r.headers.iter().any(|(k, _)| starts(k)),
            Request::Postgres(_) | Request::Redis(_) => false,
        }
    }
}

/// A request with its final response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exchange {
    Http(http1::Exchange),
    Http2(http2::H2Exchange),
    Postgres(postgres::PgExchange),
    Redis(redis::RedisExchange),
}

impl Exchange {
    /// First transfer of the request.
    pub fn request_start(&self) -> Timing {
        match self {
            Exchange::Http(x) => x.request_start,
            Exchange::Http2(x) => x.request_start,
            Exchange::Postgres(x) => x.request_start,
            Exchange::Redis(x) => x.request_start,
        }
    }

    /// Last transfer of the response.
    pub fn response_end(&self) -> Timing {
        match self {
            Exchange::Http(x) => x.response_end,
            Exchange::Http2(x) => x.response_end,
            Exchange::Postgres(x) => x.response_end,
            Exchange::Redis(x) => x.response_end,
        }
    }
}

/// What a parser reports; `seq` numbers requests on one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtoEvent {
    Start {
        seq: u64,
        request: Request,
        start: Timing,
    },
    Done {
        seq: u64,
        exchange: Exchange,
    },
    /// The request will get no response seen by seam.
    Abandoned {
        seq: u64,
    },
}

/// Counters of trouble in a connection's byte streams.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParseErrors {
    /// Times framing was lost and the stream waited for a message start.
    pub desyncs: u64,
    /// Responses with no request to pair with.
    pub orphan_responses: u64,
}

/// One protocol's state for one connection.
pub trait Parser: Send + std::fmt::Debug {
    /// Feeds one transfer: `data` is its captured prefix, `len` its length.
    fn feed(
        &mut self,
        dir: Direction,
        data: &[u8],
        len: u64,
        timing: Timing,
        out: &mut Vec<ProtoEvent>,
    );
    /// The connection closed (or this side sent its FIN).
    fn close(&mut self, out: &mut Vec<ProtoEvent>);
    /// Records of the connection were lost (the ring buffer was full) before
    /// the next transfer: whatever was being assembled must not become a
    /// span. Returns whether the parser resynchronises by itself at the next
    /// message start; otherwise it is replaced by a fresh one. By default
    /// everything in flight is abandoned, as at a close.
    fn lost(&mut self, out: &mut Vec<ProtoEvent>) -> bool {
        self.close(out);
        false
    }
    /// Direction that carries requests, once known.
    fn requests_direction(&self) -> Option<Direction>;
    fn errors(&self) -> ParseErrors;
}

/// Adapts the HTTP/1 parser's events.
impl Parser for http1::Http1Conn {
    fn feed(
        &mut self,
        dir: Direction,
        data: &[u8],
        len: u64,
        timing: Timing,
        out: &mut Vec<ProtoEvent>,
    ) {
        let mut events = Vec::new();
        http1::Http1Conn::feed(self, dir, data, len, timing, &mut events);
        out.extend(events.into_iter().map(from_http1));
    }

    fn close(&mut self, out: &mut Vec<ProtoEvent>) {
        let mut events = Vec::new();
        http1::Http1Conn::close(self, &mut events);
        out.extend(events.into_iter().map(from_http1));
    }

    fn lost(&mut self, out: &mut Vec<ProtoEvent>) -> bool {
        let mut events = Vec::new();
        http1::Http1Conn::discard(self, &mut events);
        out.extend(events.into_iter().map(from_http1));
        true
    }

    fn requests_direction(&self) -> Option<Direction> {
        http1::Http1Conn::requests_direction(self)
    }

    fn errors(&self) -> ParseErrors {
        let e = http1::Http1Conn::errors(self);
        ParseErrors {
            desyncs: e.desyncs,
            orphan_responses: e.orphan_responses,
        }
    }
}

/// Implements [`Parser`] for a protocol state whose own event type maps onto
/// [`ProtoEvent`] with `$request` and `$exchange` variants.
macro_rules! adapt {
    ($conn:ty, $event:ident, $req_field:ident, $request:ident, $exchange:ident) => {
        impl Parser for $conn {
            fn feed(
                &mut self,
                dir: Direction,
                data: &[u8],
                len: u64,
                timing: Timing,
                out: &mut Vec<ProtoEvent>,
            ) {
                let mut events = Vec::new();
                <$conn>::feed(self, dir, data, len, timing, &mut events);
                out.extend(events.into_iter().map(convert));
            }

            fn close(&mut self, out: &mut Vec<ProtoEvent>) {
                let mut events = Vec::new();
                <$conn>::close(self, &mut events);
                out.extend(events.into_iter().map(convert));
            }

            fn requests_direction(&self) -> Option<Direction> {
                <$conn>::requests_direction(self)
            }

            fn errors(&self) -> ParseErrors {
                <$conn>::errors(self)
            }
        }

        fn convert(e: $event) -> ProtoEvent {
            match e {
                $event::Start {
                    seq,
                    $req_field,
                    start,
                } => ProtoEvent::Start {
                    seq,
                    request: Request::$request($req_field),
                    start,
                },
                $event::Done { seq, exchange } => ProtoEvent::Done {
                    seq,
                    exchange: Exchange::$exchange(exchange),
                },
                $event::Abandoned { seq } => ProtoEvent::Abandoned { seq },
            }
        }
    };
}

mod adapt_http2 {
    use super::{
        http2::{H2Conn, H2Event},
        *,
    };
    adapt!(H2Conn, H2Event, request, Http2, Http2);
}

mod adapt_postgres {
    use super::{
        postgres::{PgConn, PgEvent},
        *,
    };
    adapt!(PgConn, PgEvent, query, Postgres, Postgres);
}

mod adapt_redis {
    use super::{
        redis::{RedisConn, RedisEvent},
        *,
    };
    adapt!(RedisConn, RedisEvent, command, Redis, Redis);
}

fn from_http1(e: http1::Http1Event) -> ProtoEvent {
    match e {
        http1::Http1Event::RequestHead { seq, head, start } => ProtoEvent::Start {
            seq,
            request: Request::Http(head),
            start,
        },
        http1::Http1Event::Exchange(x) => ProtoEvent::Done {
            seq: x.seq,
            exchange: Exchange::Http(x),
        },
        http1::Http1Event::Abandoned { seq } => ProtoEvent::Abandoned { seq },
    }
}
