//! Fuzz input as a script of operations over a payload.
//!
//! Layout: one byte `n`, then up to `n` operation records of [`OP_LEN`] bytes,
//! then the payload. Each operation takes its transfer's bytes from the front
//! of what is left of the payload, so a seed made of real requests and
//! responses stays readable after the short binary prefix, and mutations of
//! either part stay meaningful.
//!
//! Record: `flags: u8`, `take: u16`, `captured: u16`, `extra: u16`, `dt: u8`
//! (little-endian). What `flags` means is up to each target.

/// Bytes of one operation record.
pub const OP_LEN: usize = 8;

/// One operation of a script.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Op {
    pub flags: u8,
    /// Payload bytes this transfer carries.
    pub take: u16,
    /// How many of them the probe captured (clamped to `take`).
    pub captured: u16,
    /// Bytes the transfer carried past the end of `take` that were never
    /// captured; see [`Op::uncaptured_tail`].
    pub extra: u16,
    /// Clock advance before this operation.
    pub dt: u8,
}

/// Flag bit: `extra` counts in units of 16 MiB (huge bodies).
pub const FLAG_HUGE: u8 = 0x80;

impl Op {
    /// Uncaptured bytes beyond the payload, as a transfer length.
    pub fn uncaptured_tail(&self) -> u64 {
        if self.flags & FLAG_HUGE != 0 {
            u64::from(self.extra) << 24
        } else {
            u64::from(self.extra)
        }
    }
}

/// A decoded script.
#[derive(Debug)]
pub struct Script<'a> {
    pub ops: Vec<Op>,
    pub payload: &'a [u8],
}

/// One transfer produced by [`Script::transfers`].
#[derive(Debug)]
pub struct Transfer<'a> {
    pub op: Op,
    /// The captured prefix.
    pub data: &'a [u8],
    /// The transfer's full length (`>= data.len()`).
    pub len: u64,
    /// Clock after this operation, nanoseconds.
    pub now: u64,
}

impl<'a> Script<'a> {
    pub fn parse(input: &'a [u8]) -> Self {
        let Some((&n, mut rest)) = input.split_first() else {
            return Script {
                ops: Vec::new(),
                payload: &[],
            };
        };
        let mut ops = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let Some((rec, tail)) = rest.split_first_chunk::<OP_LEN>() else {
                break;
            };
            rest = tail;
            let u16_at = |i: usize| u16::from_le_bytes([rec[i], rec[i + 1]]);
            ops.push(Op {
                flags: rec[0],
                take: u16_at(1),
                captured: u16_at(3),
                extra: u16_at(5),
                dt: rec[7],
            });
        }
        Script { ops, payload: rest }
    }

    /// The operations as transfers: each takes its bytes from the payload in
    /// order; the clock starts at 1 ms and advances by `dt` microseconds.
    pub fn transfers(&self) -> Vec<Transfer<'a>> {
        let mut pos = 0usize;
        let mut now = 1_000_000u64;
        self.ops
            .iter()
            .map(|op| {
                let take = (op.take as usize).min(self.payload.len() - pos);
                let captured = (op.captured as usize).min(take);
                let data = &self.payload[pos..pos + captured];
                pos += take;
                now += u64::from(op.dt) * 1000;
                Transfer {
                    op: *op,
                    data,
                    len: take as u64 + op.uncaptured_tail(),
                    now,
                }
            })
            .collect()
    }
}

/// Builds fuzz input from operations and a payload (the inverse of
/// [`Script::parse`]); used to write seed files.
pub fn encode(ops: &[Op], payload: &[u8]) -> Vec<u8> {
    assert!(ops.len() <= 255, "at most 255 operations");
    let mut out = vec![ops.len() as u8];
    for op in ops {
        out.push(op.flags);
        out.extend_from_slice(&op.take.to_le_bytes());
        out.extend_from_slice(&op.captured.to_le_bytes());
        out.extend_from_slice(&op.extra.to_le_bytes());
        out.push(op.dt);
    }
    out.extend_from_slice(payload);
    out
}

/// A fully captured transfer of `take` bytes with the given flags.
pub fn whole(flags: u8, take: usize) -> Op {
    Op {
        flags,
        take: take as u16,
        captured: take as u16,
        extra: 0,
        dt: 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_parse() {
        let ops = [
            whole(1, 5),
            Op {
                flags: FLAG_HUGE,
                take: 3,
                captured: 9,
                extra: 2,
                dt: 0,
            },
        ];
        let input = encode(&ops, b"hello world");
        let s = Script::parse(&input);
        assert_eq!(s.ops, ops);
        let t = s.transfers();
        assert_eq!(t[0].data, b"hello");
        assert_eq!(t[1].data, b" wo");
        assert_eq!(t[1].len, 3 + (2 << 24));
    }

    #[test]
    fn short_input() {
        assert!(Script::parse(&[]).ops.is_empty());
        let s = Script::parse(&[3, 1, 2]);
        assert!(s.ops.is_empty());
        assert_eq!(s.payload, &[1, 2]);
    }
}
