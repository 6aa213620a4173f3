//! The HTTP/1 stage with reassembly: `Http1Conn` fed an arbitrary sequence of
//! transfers (direction, captured prefix, full length, clock), with closes in
//! between and at the end.
//!
//! Flags of an operation: bit 0 ingress (else egress), bit 1 close before the
//! transfer, bit 7 huge uncaptured tail (see `seam_fuzz::script`).
//!
//! Checked: no panic; request heads are numbered 0, 1, 2, …; each gets exactly
//! one `Exchange` or `Abandoned`, never one for a request that did not start,
//! and all have one after the final close; `pending_requests` agrees; timings
//! of an exchange are ordered; body sizes never exceed the bytes fed; the
//! direction of requests never changes once known; memory stays linear in the
//! captured bytes whatever lengths the transfers claim.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use seam::protocol::{
    Direction, Timing,
    http1::{Http1Conn, Http1Event},
};
use seam_fuzz::{live_bytes, script::Script};

#[derive(Default)]
struct Check {
    open: HashSet<u64>,
    next_seq: u64,
    fed: u64,
    body_total: u64,
}

impl Check {
    fn events(&mut self, out: &mut Vec<Http1Event>) {
        for e in out.drain(..) {
            match e {
                Http1Event::RequestHead { seq, .. } => {
                    assert_eq!(seq, self.next_seq, "request numbers skip or repeat");
                    self.next_seq += 1;
                    self.open.insert(seq);
                }
                Http1Event::Exchange(x) => {
                    assert!(self.open.remove(&x.seq), "exchange for {} not open", x.seq);
                    assert!(x.request_start.enter_ns <= x.request_end.enter_ns);
                    assert!(x.response_start.enter_ns <= x.response_end.enter_ns);
                    self.body_total += x.request_body_len + x.response_body_len;
                    assert!(
                        self.body_total <= self.fed,
                        "bodies ({}) longer than the bytes fed ({})",
                        self.body_total,
                        self.fed
                    );
                }
                Http1Event::Abandoned { seq } => {
                    assert!(self.open.remove(&seq), "abandoned {seq} not open");
                }
            }
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let script = Script::parse(input);
    let transfers = script.transfers();
    let base = live_bytes();
    let mut conn = Http1Conn::new();
    let mut out = Vec::with_capacity(64);
    let mut check = Check::default();
    let mut captured = 0u64;
    let mut requests_dir = None;
    let mut desyncs = 0;
    for t in &transfers {
        if t.op.flags & 2 != 0 {
            conn.close(&mut out);
            check.events(&mut out);
            assert!(check.open.is_empty(), "close left requests open");
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
        check.fed += t.len;
        captured += t.data.len() as u64;
        conn.feed(dir, t.data, t.len, timing, &mut out);
        check.events(&mut out);
        assert_eq!(conn.pending_requests(), check.open.len());
        if requests_dir.is_some() {
            assert_eq!(conn.requests_direction(), requests_dir);
        }
        requests_dir = conn.requests_direction();
        let errors = conn.errors();
        assert!(errors.desyncs >= desyncs);
        desyncs = errors.desyncs;
        // What the connection keeps is bounded by what it was shown: a claimed
        // length never turns into an allocation.
        let held = live_bytes().saturating_sub(base);
        let allowed = (1 << 20) + 64 * captured as usize + 1024 * check.open.len();
        assert!(
            held <= allowed,
            "{held} bytes held after {captured} captured"
        );
    }
    conn.close(&mut out);
    check.events(&mut out);
    assert!(check.open.is_empty(), "requests left without an outcome");
    assert_eq!(conn.pending_requests(), 0);
});
