//! Bytes at the start of a stream held back until they can be judged: a
//! message start that one transfer cuts short may be completed by the next.
//! Shared by the parsers that must find a message start by content
//! (PostgreSQL, Redis) when they join a connection mid-way or lose framing.
use super::Timing;

/// At most this much of a stream's start is held.
pub const HOLD_MAX: usize = 512;

/// A parser's verdict on held bytes: not yet decidable, not a start, or a
/// start of some kind.
pub trait Judgement: Copy {
    fn is_maybe(self) -> bool;
    fn is_no(self) -> bool;
}

#[derive(Debug, Default)]
pub struct Held {
    bytes: Vec<u8>,
    timing: Timing,
}

impl Held {
    /// Adds a transfer to the held bytes and judges them: returns them
    /// (earlier transfers' bytes followed by this one's, with the timing of
    /// the first) once they begin a message, keeps them while they might,
    /// and drops them otherwise.
    pub fn hold<C: Judgement>(
        &mut self,
        data: &[u8],
        len: u64,
        timing: Timing,
        judge: impl Fn(&[u8]) -> C,
    ) -> Option<(Vec<u8>, Timing, C)> {
        let mut probe = std::mem::take(&mut self.bytes);
        let earlier = !probe.is_empty();
        let first = if earlier { self.timing } else { timing };
        probe.extend_from_slice(&data[..data.len().min(HOLD_MAX)]);
        let class = judge(&probe);
        if class.is_maybe() {
            // Only a fully captured transfer can be continued by the next.
            if len == data.len() as u64 && probe.len() < HOLD_MAX {
                self.bytes = probe;
                self.timing = first;
            }
            None
        } else if class.is_no() {
            // What was held only looked like a start: this transfer may
            // still be one on its own.
            if earlier {
                self.hold(data, len, timing, judge)
            } else {
                None
            }
        } else {
            Some((probe, first, class))
        }
    }
}

/// How many bytes of `probe` (as returned by [`Held::hold`]) came from
/// transfers before `data`.
pub fn earlier_len(probe: &[u8], data: &[u8]) -> usize {
    probe.len() - data.len().min(HOLD_MAX)
}
