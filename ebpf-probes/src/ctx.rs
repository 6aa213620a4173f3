//! Direct reads of tracepoint records. The verifier allows plain loads from a
//! tracepoint context, which are cheaper than a `bpf_probe_read_kernel` each.
use aya_ebpf::{EbpfContext, programs::TracePointContext};

/// Field at byte `offset` of the tracepoint record, as laid out in the
/// tracepoint's `format` file.
#[inline(always)]
pub fn field<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: offsets come from the stable tracepoint formats (syscall
    // records, sock:*, sched:*) or from the format file read by the agent;
    // the verifier checks every access against the record's bounds.
    unsafe { core::ptr::read_volatile(ctx.as_ptr().cast::<u8>().add(offset).cast::<T>()) }
}

/// Argument `n` of a `syscalls:sys_enter_*` record (six u64 slots from offset 16).
#[inline(always)]
pub fn syscall_arg(ctx: &TracePointContext, n: usize) -> u64 {
    field::<u64>(ctx, 16 + n * 8)
}

/// Return value of a `syscalls:sys_exit_*` record.
#[inline(always)]
pub fn syscall_ret(ctx: &TracePointContext) -> i64 {
    field::<i64>(ctx, 16)
}
