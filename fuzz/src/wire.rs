//! One check for every parser that pairs requests with responses by a
//! sequence number (HTTP/2, PostgreSQL, Redis): fed any script of transfers,
//! each request that starts gets exactly one outcome (done or abandoned),
//! never one for a request that did not start, and none is left open after
//! the connection closes. What the parser keeps stays bounded by what it was
//! shown, whatever lengths the transfers claim.
use std::collections::HashSet;

use seam::protocol::{Direction, Timing};

use crate::{live_bytes, script::Script};

/// What an event says about request `seq`.
pub enum Seen {
    Start(u64),
    Outcome(u64),
}

/// A connection parser as the fuzz targets drive it.
pub trait Parser {
    type Event;
    fn feed(
        &mut self,
        dir: Direction,
        data: &[u8],
        len: u64,
        timing: Timing,
        out: &mut Vec<Self::Event>,
    );
    fn close(&mut self, out: &mut Vec<Self::Event>);
    fn seen(event: &Self::Event) -> Seen;
}

fn drain<P: Parser>(out: &mut Vec<P::Event>, open: &mut HashSet<u64>, started: &mut usize) {
    for e in out.drain(..) {
        match P::seen(&e) {
            Seen::Start(seq) => {
                assert!(open.insert(seq), "request {seq} started twice");
                *started += 1;
            }
            Seen::Outcome(seq) => assert!(open.remove(&seq), "outcome for {seq}, not open"),
        }
    }
}

/// Runs `input` as a script through `parser` and checks the rules above;
/// returns how many requests started. Flags of an operation: bit 0 ingress
/// (else egress), bit 1 close before the transfer.
pub fn check<P: Parser>(input: &[u8], mut parser: P) -> usize {
    let script = Script::parse(input);
    let base = live_bytes();
    let mut out = Vec::with_capacity(64);
    let mut open = HashSet::new();
    let mut captured = 0u64;
    let mut started = 0;
    for t in script.transfers() {
        if t.op.flags & 2 != 0 {
            parser.close(&mut out);
            drain::<P>(&mut out, &mut open, &mut started);
            assert!(open.is_empty(), "close left requests open");
        }
        let dir = if t.op.flags & 1 != 0 {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        let timing = Timing {
            enter_ns: t.now,
            exit_ns: t.now + 500,
        };
        captured += t.data.len() as u64;
        parser.feed(dir, t.data, t.len, timing, &mut out);
        drain::<P>(&mut out, &mut open, &mut started);
        let held = live_bytes().saturating_sub(base);
        let allowed = (1 << 20) + 64 * captured as usize + 1024 * open.len();
        assert!(
            held <= allowed,
            "{held} bytes held after {captured} captured"
        );
    }
    parser.close(&mut out);
    drain::<P>(&mut out, &mut open, &mut started);
    assert!(open.is_empty(), "requests left without an outcome");
    started
}

macro_rules! parser {
    ($conn:ty, $event:ident) => {
        impl Parser for $conn {
            type Event = $event;
            fn feed(
                &mut self,
                dir: Direction,
                data: &[u8],
                len: u64,
                timing: Timing,
                out: &mut Vec<$event>,
            ) {
                <$conn>::feed(self, dir, data, len, timing, out)
            }
            fn close(&mut self, out: &mut Vec<$event>) {
                <$conn>::close(self, out)
            }
            fn seen(event: &$event) -> Seen {
                match event {
                    $event::Start { seq, .. } => Seen::Start(*seq),
                    $event::Done { seq, .. } | $event::Abandoned { seq } => Seen::Outcome(*seq),
                }
            }
        }
    };
}

use seam::protocol::{
    http2::{H2Conn, H2Event},
    postgres::{PgConn, PgEvent},
    redis::{RedisConn, RedisEvent},
};

parser!(H2Conn, H2Event);
parser!(PgConn, PgEvent);
parser!(RedisConn, RedisEvent);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeds;

    /// Each seed is a real exchange of its protocol, not bytes the parser
    /// throws away: every one starts requests.
    #[test]
    fn seeds_start_requests() {
        for (target, name, bytes) in seeds::all() {
            let started = match target {
                "http2_stream" => check(&bytes, H2Conn::new()),
                "postgres_stream" => check(&bytes, PgConn::new()),
                "redis_stream" => check(&bytes, RedisConn::new()),
                _ => continue,
            };
            let want = match name {
                // Parse, Bind, Execute, Sync is one request.
                "get" | "extended" => 1,
                // The startup packet is not a request.
                "grpc" | "set_get" | "simple" => 2,
                "pipelined_resp3" => 4,
                other => panic!("no expectation for seed {other}"),
            };
            assert_eq!(started, want, "{target}/{name}");
        }
    }
}
