//! The connection stage end to end: `ConnTracker` handling capture events
//! built from the input (data on four sockets shared by two processes,
//! closes, half-closes, execs, exits, slow I/O, opened files, idle sweeps),
//! with /proc pointing nowhere.
//!
//! Flags of an operation: bit 0 ingress; bits 1-2 socket; bit 3 second
//! process; bit 4 TLS library; bits 5-6 what happens (data, close, FIN,
//! other by `extra % 6`); bit 7 huge uncaptured tail.
//!
//! Checked: no panic; a request key starts at most once while open, and
//! every `Done`/`Abandoned` names an open one; after closing every socket and
//! sweeping, nothing is open; the stage's counters agree with its records;
//! connections tracked never exceed the sockets used.
#![no_main]

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, atomic::Ordering},
};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use seam::{
    capture::{CloseInfo, DataEvent, Event, IoInfo, IoKind},
    conn::{ConnConfig, ConnTracker, Record, RequestKey},
    discover::sockets::Endpoints,
    metrics::Counters,
    protocol::{Direction, Timing},
};
use seam_fuzz::script::Script;

const SOCKETS: u64 = 4;

#[derive(Default)]
struct Check {
    open: HashSet<RequestKey>,
    starts: u64,
    done: u64,
    abandoned: u64,
}

impl Check {
    fn records(&mut self, out: &mut Vec<Record>) {
        for r in out.drain(..) {
            match r {
                Record::Start { key, conn, .. } => {
                    assert_eq!(key.sock, conn.sock);
                    assert!(self.open.insert(key), "{key:?} started twice");
                    self.starts += 1;
                }
                Record::Done { key, conn, .. } => {
                    assert_eq!(key.sock, conn.sock);
                    assert!(self.open.remove(&key), "done {key:?} not open");
                    self.done += 1;
                }
                Record::Abandoned { key } => {
                    assert!(self.open.remove(&key), "abandoned {key:?} not open");
                    self.abandoned += 1;
                }
                Record::ProcessGone { .. } | Record::Io { .. } => {}
            }
        }
    }
}

fn endpoints(sock: u64) -> Option<Endpoints> {
    sock.is_multiple_of(2).then(|| Endpoints {
        local: "127.0.0.1:8000".parse().expect("valid"),
        peer: format!("127.0.0.1:{}", 40000 + sock)
            .parse()
            .expect("valid"),
    })
}

fuzz_target!(|input: &[u8]| {
    let script = Script::parse(input);
    let counters = Arc::new(Counters::default());
    let mut tracker = ConnTracker::new(
        ConnConfig {
            proc_root: "/nonexistent/seam-fuzz".into(),
            idle_timeout_ns: 200_000,
            exe_names: Vec::new(),
        },
        HashMap::new(),
        None,
        counters.clone(),
    );
    let mut out = Vec::new();
    let mut check = Check::default();
    let mut last_now = 0;
    for t in script.transfers() {
        let flags = t.op.flags;
        let sock = 1 + u64::from((flags >> 1) & 3);
        let pid = if flags & 8 != 0 { 200 } else { 100 };
        last_now = t.now;
        let event = match (flags >> 5) & 3 {
            0 => Event::Data(DataEvent {
                sock,
                pid,
                tid: pid + 1,
                fd: sock as i32 + 3,
                direction: if flags & 1 != 0 {
                    Direction::Ingress
                } else {
                    Direction::Egress
                },
                tls: flags & 16 != 0,
                role: None,
                endpoints: endpoints(sock),
                timing: Timing {
                    enter_ns: t.now,
                    exit_ns: t.now + 500,
                },
                len: t.len,
                payload: Bytes::copy_from_slice(t.data),
                probe: None,
                kernel_ctx: None,
                // The clock step's top bits double as the socket's loss
                // count: a change makes the tracker drop and resynchronise.
                lost: u32::from(t.op.dt >> 6),
            }),
            c @ (1 | 2) => Event::Close(CloseInfo {
                sock,
                ts_ns: t.now,
                closed: c == 1,
                sent_fin: c == 2,
            }),
            _ => match t.op.extra % 6 {
                0 => Event::Exec {
                    pid,
                    comm: String::from_utf8_lossy(t.data).into_owned(),
                },
                1 => Event::Exit { pid },
                2 => Event::Opened {
                    pid,
                    fd: sock as i32 + 10,
                    path: String::from_utf8_lossy(t.data).into_owned(),
                },
                k @ (3 | 4) => Event::Io(IoInfo {
                    kind: if k == 3 {
                        IoKind::FileWrite
                    } else {
                        IoKind::OffCpu
                    },
                    pid,
                    tid: pid + 1,
                    fd: sock as i32 + 10,
                    start_ns: t.now,
                    end_ns: t.now + 1_000_000,
                    bytes: t.len,
                }),
                _ => {
                    tracker.sweep(t.now, &mut out);
                    check.records(&mut out);
                    continue;
                }
            },
        };
        tracker.handle(event, &mut out);
        check.records(&mut out);
        assert!(tracker.len() as u64 <= SOCKETS);
    }
    for sock in 1..=SOCKETS {
        tracker.handle(
            Event::Close(CloseInfo {
                sock,
                ts_ns: last_now + 1,
                closed: true,
                sent_fin: false,
            }),
            &mut out,
        );
    }
    tracker.sweep(u64::MAX, &mut out);
    check.records(&mut out);
    assert!(tracker.is_empty());
    assert!(check.open.is_empty(), "left open: {:?}", check.open);
    assert_eq!(counters.requests_seen.load(Ordering::Relaxed), check.starts);
    assert_eq!(counters.exchanges.load(Ordering::Relaxed), check.done);
    assert_eq!(
        counters.requests_abandoned.load(Ordering::Relaxed),
        check.abandoned
    );
});
