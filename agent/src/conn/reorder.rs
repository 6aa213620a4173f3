//! Puts transfers back in stream order before they are parsed.
//!
//! The ring buffer holds records in the order the probes wrote them, which
//! is not always the order the bytes moved: a TLS library's return probe (Go
//! in particular, whose goroutine may be descheduled right after its
//! `write`) can report a request after another thread has already reported
//! reading its response. Parsed in arrival order, that response would have
//! no request. Events wait here for a short window and leave ordered by the
//! time that orders a byte stream: a write by when it was entered, a read by
//! when it returned.
use crate::capture::Event;
use crate::protocol::Direction;
use crate::time_order::TimeOrder;

/// How long an event may wait for earlier ones: 4 ms for a late return
/// probe, plus the reader's pause, which delays every event by up to that
/// much before it gets here.
pub const WINDOW_NS: u64 = 4_000_000 + crate::capture::reader::PAUSE.as_nanos() as u64;

#[derive(Default)]
pub struct Reorder {
    queue: TimeOrder<Event>,
}

impl Reorder {
    /// The time that orders `event`; events without one keep their place
    /// after everything that arrived before them.
    fn order_ts(&self, event: &Event) -> u64 {
        let newest = self.queue.newest_ts();
        match event {
            Event::Data(d) => match d.direction {
                Direction::Egress => d.timing.enter_ns,
                Direction::Ingress => d.timing.exit_ns,
            },
            Event::Close(c) => c.ts_ns.max(newest),
            _ => newest,
        }
    }

    pub fn push(&mut self, event: Event) {
        let ts = self.order_ts(&event);
        self.queue.push(ts, event);
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Hands over, in order, events older than the window before the newest
    /// event and before `now_ns`.
    pub fn release(&mut self, now_ns: u64, mut f: impl FnMut(Event)) {
        let horizon = self.queue.newest_ts().max(now_ns).saturating_sub(WINDOW_NS);
        while let Some(event) = self.queue.pop_due(horizon) {
            f(event);
        }
    }

    /// Hands over everything (shutdown).
    pub fn flush(&mut self, mut f: impl FnMut(Event)) {
        while let Some(event) = self.queue.pop() {
            f(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::{capture::DataEvent, protocol::Timing};

    fn data(dir: Direction, enter: u64, exit: u64, payload: &'static [u8]) -> Event {
        Event::Data(DataEvent {
            sock: 1,
            pid: 1,
            tid: 1,
            fd: 3,
            direction: dir,
            tls: true,
            role: None,
            endpoints: None,
            timing: Timing {
                enter_ns: enter,
                exit_ns: exit,
            },
            len: payload.len() as u64,
            payload: Bytes::from_static(payload),
            probe: None,
            kernel_ctx: None,
            lost: 0,
        })
    }

    fn payloads(events: &[Event]) -> Vec<&[u8]> {
        events
            .iter()
            .map(|e| match e {
                Event::Data(d) => &d.payload[..],
                Event::Exit { .. } => b"exit",
                _ => b"?",
            })
            .collect()
    }

    /// A Go client: its response read (entered first, blocked, returned
    /// last) is reported before the request write's return probe fired.
    #[test]
    fn response_read_reported_early_goes_after_its_request() {
        let mut r = Reorder::default();
        r.push(data(Direction::Ingress, 100, 2_000, b"HTTP/1.1 200 OK"));
        r.push(data(Direction::Egress, 1_000, 1_100, b"GET / HTTP/1.1"));
        r.push(Event::Exit { pid: 1 });
        let mut out = Vec::new();
        // Nothing leaves inside the window.
        r.release(1_000 + WINDOW_NS - 1, |e| out.push(e));
        assert!(out.is_empty());
        r.release(2_000 + WINDOW_NS, |e| out.push(e));
        assert_eq!(
            payloads(&out),
            vec![&b"GET / HTTP/1.1"[..], b"HTTP/1.1 200 OK", b"exit"]
        );
        assert!(r.is_empty());
    }

    #[test]
    fn flush_hands_over_everything_in_order() {
        let mut r = Reorder::default();
        r.push(data(Direction::Egress, 50, 60, b"b"));
        r.push(data(Direction::Egress, 10, 20, b"a"));
        let mut out = Vec::new();
        r.flush(|e| out.push(e));
        assert_eq!(payloads(&out), vec![&b"a"[..], b"b"]);
    }
}
