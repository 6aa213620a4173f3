//! Socket transfer syscalls. Each `sys_enter_*` of a traced thread remembers
//! its arguments; `sock:sock_{send,recv}_length` (in `sock.rs`) marks the call
//! as a TCP transfer; the matching `sys_exit_*` copies the first bytes and
//! reports them. Non-socket fds (files, pipes) cost one map insert and delete.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use seam_common::{DataHeader, Probe, TraceCtx, Tuple, flag, kind};

use crate::{
    ctx::{syscall_arg, syscall_ret},
    emit::{copy_user, output_data},
    filter::is_traced,
    gaps, inject,
    maps::{ACTIVE, Active, SCRATCH, SOCK_SEEN, SOCK_TLS, SOCKS, Scratch, SockInfo, put, take},
};

/// `MSG_PEEK`: the bytes will be read again, so a peek is not a transfer.
const MSG_PEEK: u64 = 2;
/// iovecs walked per vectored call. gRPC (C-core) writes a frame per slice,
/// 25 or more to a sendmsg, so the head of a message can sit deep in the array.
const MAX_IOV: u64 = 64;

#[inline(always)]
pub fn begin(probe: Probe, fd: u64, buf: u64, iovcnt: u64, vectored: bool, egress: bool) -> u32 {
    if !is_traced() {
        return 0;
    }
    let active = Active {
        ts_enter: unsafe { bpf_ktime_get_ns() },
        buf,
        sock: 0,
        iovcnt,
        fd: fd as i32,
        probe: probe as u32,
        vectored: vectored as u32,
        egress: egress as u32,
    };
    put(&ACTIVE, &bpf_get_current_pid_tgid(), &active);
    0
}

/// A `struct user_msghdr`'s iovec array and length.
#[inline(always)]
fn msghdr_iov(msg: u64) -> Option<(u64, u64)> {
    // SAFETY: user pointer read through the helper, which checks access.
    unsafe {
        let iov = bpf_probe_read_user((msg + 16) as *const u64).ok()?;
        let len = bpf_probe_read_user((msg + 24) as *const u64).ok()?;
        Some((iov, len))
    }
}

/// A socket transfer whose record is filled and not yet sent.
struct Filled {
    id: u64,
    active: Active,
    sock_flags: u32,
    scratch: *mut Scratch,
    filled: usize,
}

#[inline(always)]
pub fn finish(ctx: &TracePointContext) -> u32 {
    // Filling and injection bookkeeping run one after the other, not one
    // inside the other: the verifier adds up the frames of nested calls
    // (512 bytes in all), and both frames are large.
    if let Ok(r) = try_finish(ctx)
        && let Some(probe) = Probe::from_id(r.active.probe)
    {
        deliver(probe, r.id, &r.active, r.sock_flags, r.scratch, r.filled);
    }
    0
}

/// The end of every reported transfer, syscall or TLS call: injection
/// bookkeeping (which may put the request's span into the record), then the
/// record to the agent.
#[inline(always)]
pub fn deliver(
    probe: Probe,
    id: u64,
    active: &Active,
    sock_flags: u32,
    scratch: *mut Scratch,
    filled: usize,
) {
    inject::after_transfer(id, active, sock_flags, scratch, filled);
    output_data(probe, scratch, filled);
}

#[inline(never)]
fn try_finish(ctx: &TracePointContext) -> Result<Filled, u32> {
    let id = bpf_get_current_pid_tgid();
    let active = take(&ACTIVE, &id, |a| a.ts_enter != 0, |a| a.ts_enter = 0).ok_or(0u32)?;
    let ret = syscall_ret(ctx);
    if active.sock == 0 {
        // Not a TCP transfer: perhaps slow file I/O of a serving thread.
        if ret >= 0 {
            gaps::file_io(id, &active, ret as u64);
        }
        return Err(0);
    }
    if ret <= 0 {
        return Err(0);
    }
    let (sock_flags, scratch, filled) = report(id, &active, ret as u64, false).ok_or(0u32)?;
    gaps::track_serving(id, &active, sock_flags, scratch, filled);
    Ok(Filled {
        id,
        active,
        sock_flags,
        scratch,
        filled,
    })
}

/// Fills this CPU's scratch record for a transfer of `total` bytes on
/// `active.sock`: header, then the first bytes of the buffer. Returns the
/// socket's flags, the record and the payload length, or `None` when the
/// transfer must not be reported (syscall bytes of a TLS socket).
#[inline(always)]
pub fn report(
    id: u64,
    active: &Active,
    total: u64,
    tls: bool,
) -> Option<(u32, *mut Scratch, usize)> {
    let info = match SOCKS.get_ptr_mut(&active.sock) {
        Some(info) => info,
        None => {
            // Connected before the agent started: the agent resolves the
            // tuple from /proc using pid and fd.
            let fresh = SockInfo {
                tuple: Default::default(),
                flags: if tls { SOCK_TLS } else { 0 },
                lost: 0,
            };
            let _ = SOCKS.insert(&active.sock, &fresh, 0);
            SOCKS.get_ptr_mut(&active.sock)?
        }
    };
    // SAFETY: map value pointer valid for this program run.
    let (tuple, sock_flags, lost) = unsafe {
        if !tls && (*info).flags & SOCK_TLS != 0 {
            return None;
        }
        if (*info).flags & SOCK_SEEN == 0 {
            (*info).flags |= SOCK_SEEN;
        }
        ((*info).tuple, (*info).flags, (*info).lost)
    };

    let mut flags = sock_flags & (flag::TUPLE_KNOWN | flag::ROLE_CLIENT | flag::ROLE_SERVER);
    if tls {
        flags |= flag::TLS;
    }
    let (scratch, filled) = fill(id, active, total, flags, tuple)?;
    // SAFETY: this CPU's scratch record.
    unsafe { (*scratch).header.lost = lost };
    Some((sock_flags, scratch, filled))
}

/// Fills this CPU's scratch record with a header (`flags` plus direction and
/// probe) and the first bytes of `active`'s buffer.
#[inline(always)]
pub fn fill(
    id: u64,
    active: &Active,
    total: u64,
    flags: u32,
    tuple: Tuple,
) -> Option<(*mut Scratch, usize)> {
    let probe = Probe::from_id(active.probe)?;
    let scratch = SCRATCH.get_ptr_mut(0)?;
    let mut flags = flags | (active.probe << flag::PROBE_SHIFT);
    if active.egress != 0 {
        flags |= flag::EGRESS;
    }
    // SAFETY: scratch is this CPU's map value.
    unsafe {
        (*scratch).header = DataHeader {
            kind: kind::DATA,
            flags,
            ts_enter_ns: active.ts_enter,
            ts_exit_ns: bpf_ktime_get_ns(),
            sock: active.sock,
            len: total,
            pid: (id >> 32) as u32,
            tid: id as u32,
            fd: active.fd,
            captured: 0,
            tuple,
            ctx: TraceCtx::default(),
            lost: 0,
            _pad: 0,
        };
    }
    let mut filled = 0usize;
    if active.buf != 0 {
        if active.vectored == 0 {
            filled = copy_user(scratch, 0, active.buf, total, probe);
        } else {
            let mut left = total;
            let mut i = 0u64;
            while i < MAX_IOV {
                if i >= active.iovcnt || left == 0 || filled >= seam_common::MAX_CAPTURE {
                    break;
                }
                // SAFETY: user iovec read through the helper.
                let (base, len) = unsafe {
                    let at = active.buf + i * 16;
                    match (
                        bpf_probe_read_user(at as *const u64),
                        bpf_probe_read_user((at + 8) as *const u64),
                    ) {
                        (Ok(b), Ok(l)) => (b, l),
                        _ => break,
                    }
                };
                let len = if len < left { len } else { left };
                filled = copy_user(scratch, filled, base, len, probe);
                left -= len;
                i += 1;
            }
        }
    }
    // SAFETY: as above.
    unsafe { (*scratch).header.captured = filled as u32 };
    Some((scratch, filled))
}

/// `syscalls:sys_enter_read` (any kernel with syscall tracepoints): may be a socket read.
#[tracepoint]
pub fn enter_read(ctx: TracePointContext) -> u32 {
    begin(
        Probe::Read,
        syscall_arg(&ctx, 0),
        syscall_arg(&ctx, 1),
        0,
        false,
        false,
    )
}

/// `syscalls:sys_exit_read`: report the bytes if the read was on TCP.
#[tracepoint]
pub fn exit_read(ctx: TracePointContext) -> u32 {
    finish(&ctx)
}

/// `syscalls:sys_enter_write`: may be a socket write (Go, Java, Node).
#[tracepoint]
pub fn enter_write(ctx: TracePointContext) -> u32 {
    begin(
        Probe::Write,
        syscall_arg(&ctx, 0),
        syscall_arg(&ctx, 1),
        0,
        false,
        true,
    )
}

/// `syscalls:sys_exit_write`.
#[tracepoint]
pub fn exit_write(ctx: TracePointContext) -> u32 {
    finish(&ctx)
}

/// `syscalls:sys_enter_readv`.
#[tracepoint]
pub fn enter_readv(ctx: TracePointContext) -> u32 {
    let (fd, iov, cnt) = (
        syscall_arg(&ctx, 0),
        syscall_arg(&ctx, 1),
        syscall_arg(&ctx, 2),
    );
    begin(Probe::Readv, fd, iov, cnt, true, false)
}

/// `syscalls:sys_exit_readv`.
#[tracepoint]
pub fn exit_readv(ctx: TracePointContext) -> u32 {
    finish(&ctx)
}

/// `syscalls:sys_enter_writev`: nginx and Node send head and body as iovecs.
#[tracepoint]
pub fn enter_writev(ctx: TracePointContext) -> u32 {
    let (fd, iov, cnt) = (
        syscall_arg(&ctx, 0),
        syscall_arg(&ctx, 1),
        syscall_arg(&ctx, 2),
    );
    begin(Probe::Writev, fd, iov, cnt, true, true)
}

/// `syscalls:sys_exit_writev`.
#[tracepoint]
pub fn exit_writev(ctx: TracePointContext) -> u32 {
    finish(&ctx)
}

/// `syscalls:sys_enter_recvfrom`: `recv()` in curl, nginx and Python.
#[tracepoint]
pub fn enter_recvfrom(ctx: TracePointContext) -> u32 {
    if syscall_arg(&ctx, 3) & MSG_PEEK != 0 {
        return 0;
    }
    begin(
        Probe::Recvfrom,
        syscall_arg(&ctx, 0),
        syscall_arg(&ctx, 1),
        0,
        false,
        false,
    )
}

/// `syscalls:sys_exit_recvfrom`.
#[tracepoint]
pub fn exit_recvfrom(ctx: TracePointContext) -> u32 {
    finish(&ctx)
}

/// `syscalls:sys_enter_sendto`: `send()`/`sendall()` in curl and Python.
#[tracepoint]
pub fn enter_sendto(ctx: TracePointContext) -> u32 {
    begin(
        Probe::Sendto,
        syscall_arg(&ctx, 0),
        syscall_arg(&ctx, 1),
        0,
        false,
        true,
    )
}

/// `syscalls:sys_exit_sendto`.
#[tracepoint]
pub fn exit_sendto(ctx: TracePointContext) -> u32 {
    finish(&ctx)
}

/// `syscalls:sys_enter_recvmsg`.
#[tracepoint]
pub fn enter_recvmsg(ctx: TracePointContext) -> u32 {
    if syscall_arg(&ctx, 2) & MSG_PEEK != 0 || !is_traced() {
        return 0;
    }
    let Some((iov, cnt)) = msghdr_iov(syscall_arg(&ctx, 1)) else {
        return 0;
    };
    begin(Probe::Recvmsg, syscall_arg(&ctx, 0), iov, cnt, true, false)
}

/// `syscalls:sys_exit_recvmsg`.
#[tracepoint]
pub fn exit_recvmsg(ctx: TracePointContext) -> u32 {
    finish(&ctx)
}

/// `syscalls:sys_enter_sendmsg`.
#[tracepoint]
pub fn enter_sendmsg(ctx: TracePointContext) -> u32 {
    if !is_traced() {
        return 0;
    }
    let Some((iov, cnt)) = msghdr_iov(syscall_arg(&ctx, 1)) else {
        return 0;
    };
    begin(Probe::Sendmsg, syscall_arg(&ctx, 0), iov, cnt, true, true)
}

/// `syscalls:sys_exit_sendmsg`.
#[tracepoint]
pub fn exit_sendmsg(ctx: TracePointContext) -> u32 {
    finish(&ctx)
}

/// `syscalls:sys_enter_sendfile64`: nginx sends static bodies this way; only
/// the byte count is reported, so message boundaries stay right.
#[tracepoint]
pub fn enter_sendfile(ctx: TracePointContext) -> u32 {
    begin(Probe::Sendfile, syscall_arg(&ctx, 0), 0, 0, false, true)
}

/// `syscalls:sys_exit_sendfile64`.
#[tracepoint]
pub fn exit_sendfile(ctx: TracePointContext) -> u32 {
    finish(&ctx)
}
