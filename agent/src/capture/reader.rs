//! Draining the ring buffer.
//!
//! While events keep coming the agent polls: it drains, pauses [`PAUSE`],
//! drains again. Only when a drain finds nothing does it wait for the
//! kernel's wakeup, through the ring's fd in epoll. The fd is in epoll only
//! while waiting: a registered fd would wake the runtime's I/O driver at
//! every probe commit that finds the reader caught up, one more thread
//! wakeup per pause for nothing (they are most of what the agent costs at
//! low rates, see README → Performance).
use aya::maps::{MapData, RingBuf};
use bytes::BytesMut;
use tokio::io::{Interest, unix::AsyncFd};

use super::decode::{Event, decode};
use crate::metrics::{self, Counters};

/// Pause after a drain that found events, before draining again. A probe's
/// commit wakes the reader only when the reader had caught up; while it
/// pauses, commits skip the wakeup (an irq_work, and an inter-processor
/// interrupt that is expensive in a VM, in the traced process's syscall),
/// so events arrive in batches of up to this much time rather than one by
/// one. Each wakeup costs the agent tens of microseconds however few events
/// it brings: at 1,000 requests/s, 20 ms (~50 wakeups a second) costs the
/// agent 2.2% of a core, 10 ms 3.1%, 4 ms 3.7% (README → Performance). The
/// reorder windows of the connection and stitch stages grow with it. At
/// full load the ring must hold this long's events: ~1.5 MiB of the default
/// 8 at 50,000 requests/s.
pub const PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// The ring buffer, in epoll only while [`Ring::readable`] waits.
pub struct Ring {
    idle: Option<RingBuf<MapData>>,
    waiting: Option<AsyncFd<RingBuf<MapData>>>,
    arena: BytesMut,
}

impl Ring {
    pub fn new(ring: RingBuf<MapData>) -> Ring {
        Ring {
            idle: Some(ring),
            waiting: None,
            arena: BytesMut::with_capacity(256 * 1024),
        }
    }

    /// Returns once the ring holds something. Registering the fd reports
    /// what is already there, so an event committed between the last drain
    /// and this call is not missed.
    pub async fn readable(&mut self) -> std::io::Result<()> {
        if let Some(ring) = self.idle.take() {
            // SAFETY: the ring buffer owns its map fd for as long as the
            // AsyncFd owns the ring buffer, and always reports that same fd.
            match unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) } {
                Ok(fd) => self.waiting = Some(fd),
                Err(e) => {
                    let (ring, error) = e.into_parts();
                    self.idle = Some(ring);
                    return Err(error);
                }
            }
        }
        let fd = self.waiting.as_mut().expect("registered above");
        let mut guard = fd.readable_mut().await?;
        guard.clear_ready();
        Ok(())
    }

    /// Moves every event in the ring to `out`; returns how many records it
    /// read (malformed ones included, counted).
    pub fn drain(&mut self, out: &mut Vec<Event>, counters: &Counters) -> usize {
        if let Some(fd) = self.waiting.take() {
            self.idle = Some(fd.into_inner());
        }
        let ring = self.idle.as_mut().expect("deregistered above");
        let mut n = 0;
        while let Some(item) = ring.next() {
            n += 1;
            match decode(&item, &mut self.arena) {
                Some(event) => out.push(event),
                None => metrics::inc(&counters.events_malformed),
            }
        }
        metrics::add(&counters.events_read, n as u64);
        n
    }
}
