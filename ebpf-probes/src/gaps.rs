//! What a serving thread does besides talking on its sockets: slow file I/O
//! and time off the CPU. Only threads between reading a request and writing
//! its response are watched, and only waits above the configured threshold
//! are reported, so the cost is a map lookup per event elsewhere.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user_str_bytes},
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use seam_common::{IoEvent, MAX_CAPTURE, Probe, flag, io_op, kind, stat};

use crate::{
    ctx::syscall_arg,
    ctx::syscall_ret,
    emit::{count, output},
    maps::{
        Active, CONFIG, FD_PATHS, OFF_CPU, OPENING, OffCpu, PATH_ZERO, SERVING, Scratch, Serving,
        fd_key, put, slot, take,
    },
    syscalls::{begin, finish},
};

/// Request methods by their first four bytes, little-endian.
const METHOD_PREFIXES: [u32; 7] = [
    u32::from_le_bytes(*b"GET "),
    u32::from_le_bytes(*b"POST"),
    u32::from_le_bytes(*b"PUT "),
    u32::from_le_bytes(*b"DELE"),
    u32::from_le_bytes(*b"HEAD"),
    u32::from_le_bytes(*b"PATC"),
    u32::from_le_bytes(*b"OPTI"),
];

/// Whether the thread `id` has read a request it has not answered.
#[inline(always)]
fn serving(id: u64) -> bool {
    // SAFETY: read-only lookup.
    unsafe { SERVING.get(&id) }.is_some_and(|s| s.sock != 0)
}

#[inline(always)]
fn threshold() -> Option<u64> {
    let config = CONFIG.get(0)?;
    (config.gaps != 0).then_some(config.io_threshold_ns)
}

/// After a socket transfer: a request read on a server socket starts
/// serving; the first write back on that socket ends it.
#[inline(always)]
pub fn track_serving(
    id: u64,
    active: &Active,
    sock_flags: u32,
    scratch: *mut Scratch,
    filled: usize,
) {
    if threshold().is_none() {
        return;
    }
    if active.egress != 0 {
        if let Some(s) = SERVING.get_ptr_mut(&id) {
            // SAFETY: map value pointer valid for this program run.
            unsafe {
                if (*s).sock == active.sock {
                    (*s).sock = 0;
                }
            }
        }
        return;
    }
    if filled < 4 || filled > MAX_CAPTURE || sock_flags & flag::ROLE_CLIENT != 0 {
        return;
    }
    // SAFETY: the first four payload bytes were filled by copy_user.
    let head = unsafe {
        u32::from_le_bytes([
            (*scratch).data[0],
            (*scratch).data[1],
            (*scratch).data[2],
            (*scratch).data[3],
        ])
    };
    if METHOD_PREFIXES.contains(&head) {
        let serving = Serving {
            sock: active.sock,
            since: unsafe { bpf_ktime_get_ns() },
        };
        put(&SERVING, &id, &serving);
    }
}

/// At the exit of a non-socket read/write/fsync of a traced thread.
#[inline(always)]
pub fn file_io(id: u64, active: &Active, bytes: u64) {
    let Some(threshold) = threshold() else {
        return;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    if now.saturating_sub(active.ts_enter) < threshold {
        return;
    }
    if !serving(id) {
        return;
    }
    let op = match Probe::from_id(active.probe) {
        Some(Probe::Read | Probe::Readv) => io_op::READ,
        Some(Probe::Write | Probe::Writev) => io_op::WRITE,
        Some(Probe::FileIo) => io_op::FSYNC,
        _ => return,
    };
    // The file's name first, so the agent knows it when the I/O arrives.
    // SAFETY: read-only lookup; the value is copied into the ring buffer.
    if let Some(path) = unsafe { FD_PATHS.get(&fd_key(id, active.fd)) } {
        output(Probe::Open, path);
    }
    let event = IoEvent {
        kind: kind::IO,
        op,
        ts_start_ns: active.ts_enter,
        ts_end_ns: now,
        pid: (id >> 32) as u32,
        tid: id as u32,
        fd: active.fd,
        _pad: 0,
        bytes: if op == io_op::FSYNC { 0 } else { bytes },
    };
    output(Probe::FileIo, &event);
}

/// `syscalls:sys_enter_fsync` (any kernel): a synchronous flush, the classic
/// slow log write.
#[tracepoint]
pub fn enter_fsync(ctx: TracePointContext) -> u32 {
    if threshold().is_none() {
        return 0;
    }
    begin(Probe::FileIo, syscall_arg(&ctx, 0), 0, 0, false, false)
}

/// `syscalls:sys_exit_fsync`.
#[tracepoint]
pub fn exit_fsync(ctx: TracePointContext) -> u32 {
    finish(&ctx)
}

/// `syscalls:sys_enter_fdatasync`.
#[tracepoint]
pub fn enter_fdatasync(ctx: TracePointContext) -> u32 {
    if threshold().is_none() {
        return 0;
    }
    begin(Probe::FileIo, syscall_arg(&ctx, 0), 0, 0, false, false)
}

/// `syscalls:sys_exit_fdatasync`.
#[tracepoint]
pub fn exit_fdatasync(ctx: TracePointContext) -> u32 {
    finish(&ctx)
}

/// `syscalls:sys_enter_pread64`: positioned reads are file reads (never sockets).
#[tracepoint]
pub fn enter_pread(ctx: TracePointContext) -> u32 {
    if threshold().is_none() {
        return 0;
    }
    begin(Probe::Read, syscall_arg(&ctx, 0), 0, 0, false, false)
}

/// `syscalls:sys_exit_pread64`.
#[tracepoint]
pub fn exit_pread(ctx: TracePointContext) -> u32 {
    finish(&ctx)
}

/// `syscalls:sys_enter_pwrite64`.
#[tracepoint]
pub fn enter_pwrite(ctx: TracePointContext) -> u32 {
    if threshold().is_none() {
        return 0;
    }
    begin(Probe::Write, syscall_arg(&ctx, 0), 0, 0, false, true)
}

/// `syscalls:sys_exit_pwrite64`.
#[tracepoint]
pub fn exit_pwrite(ctx: TracePointContext) -> u32 {
    finish(&ctx)
}

/// `sched:sched_switch` as a raw tracepoint (Linux 5.18+, whose prototype
/// carries `prev_state`): it fires at every context switch of the node, so
/// it takes the tracepoint's own arguments rather than having the kernel fill
/// a perf record (two command names, pids, priorities) for each. A serving
/// thread leaving the CPU is remembered by its task pointer; when that task
/// comes back after the threshold, the wait is reported, as blocked (it
/// slept) or queued (it was preempted while runnable).
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn sched_switch(ctx: RawTracePointContext) -> u32 {
    let Some(threshold) = threshold() else {
        return 0;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    // TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct
    // *next, unsigned int prev_state); prev is the current task.
    let prev_id = bpf_get_current_pid_tgid();
    if serving(prev_id) {
        let prev: u64 = ctx.arg(1);
        let state: u64 = ctx.arg(3);
        let off = OffCpu {
            since: now,
            pid_tgid: prev_id,
            // TASK_INTERRUPTIBLE | TASK_UNINTERRUPTIBLE: it went to sleep.
            blocked: u32::from(state & 3 != 0),
            _pad: 0,
        };
        put(&OFF_CPU, &prev, &off);
    }
    let next: u64 = ctx.arg(2);
    let Some(off) = take(&OFF_CPU, &next, |o| o.since != 0, |o| o.since = 0) else {
        return 0;
    };
    if now.saturating_sub(off.since) < threshold {
        return 0;
    }
    let event = IoEvent {
        kind: kind::IO,
        op: if off.blocked != 0 {
            io_op::OFF_CPU
        } else {
            io_op::RUNQUEUE
        },
        ts_start_ns: off.since,
        ts_end_ns: now,
        pid: (off.pid_tgid >> 32) as u32,
        tid: off.pid_tgid as u32,
        fd: -1,
        _pad: 0,
        bytes: 0,
    };
    output(Probe::SchedSwitch, &event);
    0
}

/// `syscalls:sys_enter_openat` (any kernel): a serving thread opening a file
/// (a log file opened per request); its name is kept for the fd.
#[tracepoint]
pub fn enter_openat(ctx: TracePointContext) -> u32 {
    if threshold().is_none() {
        return 0;
    }
    let id = bpf_get_current_pid_tgid();
    if serving(id) {
        put(&OPENING, &id, &syscall_arg(&ctx, 1));
    }
    0
}

/// `syscalls:sys_exit_openat`: keeps the name under the new fd, for a slow
/// I/O on it to be named by.
#[tracepoint]
pub fn exit_openat(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let Some(name) = take(&OPENING, &id, |n| *n != 0, |n| *n = 0) else {
        return 0;
    };
    let fd = syscall_ret(&ctx);
    if fd < 0 {
        return 0;
    }
    let Some(slot) = slot(&FD_PATHS, &fd_key(id, fd as i32), &PATH_ZERO) else {
        count(Probe::Open, stat::LOST);
        return 0;
    };
    // SAFETY: map value pointer valid for this program run. Only a thread of
    // this process reopening the same fd writes it; a slow I/O on the fd in
    // another thread meanwhile could at worst copy a half-written name.
    let len = unsafe {
        (*slot).kind = kind::PATH;
        (*slot).fd = fd as i32;
        (*slot).pid = (id >> 32) as u32;
        match bpf_probe_read_user_str_bytes(name as *const u8, &mut (*slot).path) {
            Ok(bytes) => bytes.len() as u32,
            Err(_) => 0,
        }
    };
    // SAFETY: as above.
    unsafe { (*slot).len = len };
    0
}
