//! Writing records to the ring buffer, with per-probe accounting.
use aya_ebpf::helpers::generated::bpf_probe_read_user;
use seam_common::{DataHeader, MAX_CAPTURE, Probe, stat};

use crate::maps::{EVENTS, SOCKS, STATS, Scratch};

/// Adds one to counter `which` of `probe`.
#[inline(always)]
pub fn count(probe: Probe, which: u32) {
    if let Some(slot) = STATS.get_ptr_mut(probe as u32 * stat::COUNT + which) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *slot += 1 };
    }
}

/// Copies a fixed-size record to the ring buffer, counting success or loss.
#[inline(always)]
pub fn output<T>(probe: Probe, record: &T) {
    match EVENTS.output::<T>(record, 0) {
        Ok(()) => count(probe, stat::EMITTED),
        Err(_) => count(probe, stat::LOST),
    }
}

/// Copies up to `len` bytes from user address `src` to `scratch.data[off..]`,
/// never past `MAX_CAPTURE` in total. Returns the new fill offset.
#[inline(always)]
pub fn copy_user(scratch: *mut Scratch, off: usize, src: u64, len: u64, probe: Probe) -> usize {
    if off >= MAX_CAPTURE || len == 0 {
        return off;
    }
    let room = (MAX_CAPTURE - off) as u64;
    let take = if len < room { len } else { room };
    // Masks restate the bounds in a form the verifier tracks: off < MAX_CAPTURE
    // and take <= MAX_CAPTURE, inside a payload area of 2 * MAX_CAPTURE.
    let off_m = off & (MAX_CAPTURE - 1);
    let take_m = (take as usize) & (2 * MAX_CAPTURE - 1);
    if take_m > MAX_CAPTURE {
        return off;
    }
    // SAFETY: scratch is a valid per-CPU map value; the destination range
    // [off_m, off_m + take_m) lies inside `data` by the bounds above.
    let rc = unsafe {
        let dst = (*scratch).data.as_mut_ptr().add(off_m);
        bpf_probe_read_user(dst.cast(), take_m as u32, src as *const _)
    };
    if rc != 0 {
        count(probe, stat::READ_FAILED);
        return off;
    }
    off_m + take_m
}

/// Sends the header plus `captured` payload bytes of `scratch`. The record
/// carries its socket's loss count (the caller copied it into the header
/// with the socket's other facts); a record that finds no room raises it,
/// so the agent knows which connection's stream has a hole and where.
#[inline(always)]
pub fn output_data(probe: Probe, scratch: *mut Scratch, captured: usize) {
    let captured = captured & (2 * MAX_CAPTURE - 1);
    if captured > MAX_CAPTURE {
        return;
    }
    let size = core::mem::size_of::<DataHeader>() + captured;
    // SAFETY: scratch is this CPU's map value; header and payload are
    // contiguous in Scratch (repr(C), header size is a multiple of 8), and
    // size stays within the value.
    let (record, sock) = unsafe {
        (*scratch).header.captured = captured as u32;
        (
            core::slice::from_raw_parts(scratch.cast::<u8>(), size),
            (*scratch).header.sock,
        )
    };
    if EVENTS.output::<[u8]>(record, 0).is_ok() {
        count(probe, stat::EMITTED);
        return;
    }
    count(probe, stat::LOST);
    if let Some(info) = SOCKS.get_ptr_mut(&sock) {
        // SAFETY: map value pointer valid for this program run. Two CPUs
        // losing at once may add one instead of two: the count still
        // changes, which is all the agent needs.
        unsafe { (*info).lost = (*info).lost.wrapping_add(1) };
    }
}
