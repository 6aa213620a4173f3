//! Application protocols parsed from connection byte streams. Each protocol is
//! a module that turns transfers into request starts and request/response
//! exchanges behind the [`Parser`] trait; which one a connection speaks is
//! decided from its first bytes ([`detect`]), never from its port. The
//! connection and span machinery around them is shared.
pub mod detect;
pub mod http1;

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
    Http(http1::RequestHead),
}

impl Request {
    /// A trace-context carrier field (HTTP header), case-insensitive.
    pub fn carrier(&self, name: &str) -> Option<&str> {
        match self {
            Request::Http(head) => head.header(name),
        }
    }
}

/// A request with its final response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exchange {
    Http(http1::Exchange),
}

impl Exchange {
    /// First transfer of the request.
    pub fn request_start(&self) -> Timing {
        match self {
            Exchange::Http(x) => x.request_start,
        }
    }

    /// Last transfer of the response.
    pub fn response_end(&self) -> Timing {
        match self {
            Exchange::Http(x) => x.response_end,
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
