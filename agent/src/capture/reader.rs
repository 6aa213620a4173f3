//! Draining the ring buffer. The reader waits on the ring's fd with tokio's
//! `AsyncFd`, decodes everything available and hands it on in batches. It
//! blocks when the next stage is behind, so that overload shows up where it
//! is counted per probe: as ring buffer losses in the kernel.
use std::sync::Arc;

use aya::maps::{MapData, RingBuf};
use bytes::BytesMut;
use tokio::{io::unix::AsyncFd, sync::mpsc};

use super::decode::{Event, decode};
use crate::metrics::{self, Counters};

/// Events handed to the connection stage at most this many at a time.
const BATCH: usize = 512;

/// Pause after each drain before waiting for the ring again. A probe's
/// commit wakes the reader only when the reader had caught up; while it
/// pauses, commits skip the wakeup (an irq_work, and an inter-processor
/// interrupt that is expensive in a VM, in the traced process's syscall),
/// so events arrive in batches of up to this much time rather than one by
/// one. 4 ms rather than 1: at 1,000 requests/s the agent wakes ~250 times a
/// second instead of ~1,000 (see README, Performance). The connection
/// stage's reorder window adds it; the stitch stage's window is far longer.
pub const PAUSE: std::time::Duration = std::time::Duration::from_millis(4);

pub async fn run(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<Vec<Event>>,
    counters: Arc<Counters>,
) -> std::io::Result<()> {
    // SAFETY: the ring buffer owns its map fd for as long as the AsyncFd owns
    // the ring buffer, and always reports that same fd.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    let mut arena = BytesMut::with_capacity(256 * 1024);
    loop {
        let mut guard = fd.readable_mut().await?;
        let mut batch = Vec::with_capacity(BATCH);
        let mut full = Vec::new();
        {
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                metrics::inc(&counters.events_read);
                match decode(&item, &mut arena) {
                    Some(event) => batch.push(event),
                    None => metrics::inc(&counters.events_malformed),
                }
                if batch.len() == BATCH {
                    full.push(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)));
                }
            }
        }
        guard.clear_ready();
        full.push(batch);
        for b in full.into_iter().filter(|b| !b.is_empty()) {
            if tx.send(b).await.is_err() {
                return Ok(());
            }
        }
        tokio::time::sleep(PAUSE).await;
    }
}
