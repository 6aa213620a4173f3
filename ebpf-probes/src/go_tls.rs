//! Go's crypto/tls: `(*Conn).Write` and `(*Conn).Read`, register ABI
//! (Go >= 1.17, amd64). Go moves goroutine stacks, so return probes (which
//! rewrite the return address on the stack) are unsafe: the agent attaches a
//! plain uprobe at each return instruction of the two functions instead.
//! Calls are keyed by goroutine (the `g` pointer Go keeps in R14), not by
//! thread: a goroutine can block inside the call and resume on another thread.
use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::uprobe,
    programs::ProbeContext,
};
use seam_common::Probe;

use crate::{
    emit::output_data,
    filter::is_traced,
    maps::{
        Active, FD_SOCKS, GO_CALLS, GO_THREAD, GoKey, GoThread, TLS_READ, TLS_SOCKS, TLS_WRITE,
        TlsCall, fd_key,
    },
    syscalls::report,
    tls::mark_tls,
};

/// Registers of the uprobe context (x86_64).
#[inline(always)]
fn regs(ctx: &ProbeContext) -> &aya_ebpf::bindings::pt_regs {
    // SAFETY: a uprobe's context is the task's saved registers.
    unsafe { &*(ctx.as_ptr() as *const aya_ebpf::bindings::pt_regs) }
}

/// The descriptor under a `*tls.Conn` whose `net.Conn` is a `*net.TCPConn`:
/// `tls.Conn.conn` (an interface: its data word at +8) → `net.conn.fd`
/// (`*netFD`, at +0) → `netFD.pfd.Sysfd` (at +16, after the 16-byte
/// `fdMutex`). These layouts have not changed since Go 1.9.
#[inline(always)]
fn conn_fd(conn: u64) -> Option<i32> {
    // SAFETY: user memory read through the helper, which checks access.
    unsafe {
        let tcp_conn: u64 = bpf_probe_read_user((conn + 8) as *const u64).ok()?;
        let net_fd: u64 = bpf_probe_read_user(tcp_conn as *const u64).ok()?;
        let fd: i64 = bpf_probe_read_user((net_fd + 16) as *const i64).ok()?;
        (0..=i32::MAX as i64).contains(&fd).then_some(fd as i32)
    }
}

#[inline(always)]
fn enter(ctx: &ProbeContext, kind: u32) -> u32 {
    if !is_traced() {
        return 0;
    }
    let r = regs(ctx);
    let id = bpf_get_current_pid_tgid();
    let now = unsafe { bpf_ktime_get_ns() };
    // Receiver c in RAX, b.ptr in RBX, b.len in RCX; the goroutine in R14.
    let key = GoKey {
        tgid: (id >> 32) as u32,
        _pad: 0,
        g: r.r14,
    };
    let (probe, egress) = if kind == TLS_WRITE {
        (Probe::SslWrite, 1)
    } else {
        (Probe::SslRead, 0)
    };
    let call = TlsCall {
        ts_enter: now,
        conn: r.rax,
        buf: r.rbx,
        len_out: 0,
        sock: 0,
        probe: probe as u32,
        egress,
        fd: conn_fd(r.rax).unwrap_or(-1),
        kind,
    };
    let _ = GO_CALLS.insert(&key, &call, 0);
    // The syscall the call makes next on this thread names its socket.
    let thread = GoThread {
        g: r.r14,
        since: now,
    };
    let _ = GO_THREAD.insert(&id, &thread, 0);
    0
}

/// uprobe `crypto/tls.(*Conn).Write` (Go >= 1.17): remembers the plaintext.
#[uprobe]
pub fn go_tls_write(ctx: ProbeContext) -> u32 {
    enter(&ctx, TLS_WRITE)
}

/// uprobe `crypto/tls.(*Conn).Read` (Go >= 1.17).
#[uprobe]
pub fn go_tls_read(ctx: ProbeContext) -> u32 {
    enter(&ctx, TLS_READ)
}

/// uprobe at each return instruction of the two: RAX holds the byte count.
#[uprobe]
pub fn go_tls_ret(ctx: ProbeContext) -> u32 {
    let r = regs(&ctx);
    let id = bpf_get_current_pid_tgid();
    let key = GoKey {
        tgid: (id >> 32) as u32,
        _pad: 0,
        g: r.r14,
    };
    // SAFETY: plain value copied out before removal.
    let Some(call) = (unsafe { GO_CALLS.get(&key) }).copied() else {
        return 0;
    };
    let _ = GO_CALLS.remove(&key);
    // SAFETY: plain value read.
    if unsafe { GO_THREAD.get(&id) }.is_some_and(|t| t.g == r.r14) {
        let _ = GO_THREAD.remove(&id);
    }
    let n = r.rax as i64;
    if n <= 0 {
        return 0;
    }
    // The call's own first syscall names its socket best; else the socket
    // now behind the connection's descriptor (the syscall came too late to
    // be sure of); else what an earlier call on the connection learnt.
    let fd_sock = || {
        let key = fd_key(id, call.fd);
        // SAFETY: plain value read.
        (call.fd >= 0)
            .then(|| unsafe { FD_SOCKS.get(&key) }.copied())
            .flatten()
    };
    let sock = if call.sock != 0 {
        call.sock
    } else if let Some(sock) = fd_sock() {
        mark_tls(sock);
        sock
    } else {
        // SAFETY: plain value read.
        match unsafe { TLS_SOCKS.get(&call.conn) } {
            Some(s) => *s,
            None => return 0,
        }
    };
    let _ = TLS_SOCKS.insert(&call.conn, &sock, 0);
    let active = Active {
        ts_enter: call.ts_enter,
        buf: call.buf,
        sock,
        iovcnt: 0,
        fd: call.fd,
        probe: call.probe,
        vectored: 0,
        egress: call.egress,
    };
    let Some((_, scratch, filled)) = report(id, &active, n as u64, true) else {
        return 0;
    };
    output_data(
        Probe::from_id(call.probe).unwrap_or(Probe::SslRead),
        scratch,
        filled,
    );
    0
}
