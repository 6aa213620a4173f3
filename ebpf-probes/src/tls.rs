//! Plaintext of TLS connections from the TLS libraries' own functions:
//! OpenSSL (1.1 and 3.x, shared or linked statically, as in Node.js) and
//! GnuTLS. An entry uprobe remembers the call; the socket syscall the library
//! makes inside it names the connection (sock.rs) without any
//! library-specific struct offset; the return probe reports the bytes from
//! the caller's buffer, as many as the call says it moved.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use seam_common::{Probe, flag};

use crate::{
    filter::is_traced,
    maps::{
        Active, LAST_READ, PENDING_WRITES, SOCK_TLS, SOCKS, SockInfo, TLS_CALLS, TLS_HANDSHAKE,
        TLS_READ, TLS_SOCKS, TLS_WRITE, TlsCall, take,
    },
    syscalls::{deliver, fill, report},
};

#[inline(always)]
fn enter(ctx: &ProbeContext, kind: u32, len_out_arg: Option<usize>) -> u32 {
    if !is_traced() {
        return 0;
    }
    let Some(conn) = ctx.arg::<u64>(0) else {
        return 0;
    };
    let buf = if kind == TLS_HANDSHAKE {
        0
    } else {
        match ctx.arg::<u64>(1) {
            Some(b) => b,
            None => return 0,
        }
    };
    let (probe, egress) = match kind {
        TLS_WRITE => (Probe::SslWrite, true),
        _ => (Probe::SslRead, false),
    };
    let call = TlsCall {
        ts_enter: unsafe { bpf_ktime_get_ns() },
        conn,
        buf,
        len_out: len_out_arg.and_then(|n| ctx.arg::<u64>(n)).unwrap_or(0),
        sock: 0,
        probe: probe as u32,
        egress: egress as u32,
        fd: -1,
        kind,
    };
    let _ = TLS_CALLS.insert(&bpf_get_current_pid_tgid(), &call, 0);
    0
}

#[inline(always)]
fn exit(ctx: &RetProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: plain value copied out before removal.
    let Some(call) = (unsafe { TLS_CALLS.get(&id) }).copied() else {
        return 0;
    };
    let _ = TLS_CALLS.remove(&id);
    // A read of the socket just before this call, when the library itself
    // read none (memory BIO), names the connection for reads and handshakes.
    let last_read = take(&LAST_READ, &id, |l| l.sock != 0, |l| l.sock = 0);
    // Fresh evidence beats memory: connection objects are freed and their
    // addresses reused for new connections.
    let mut fd = call.fd;
    let mut sock = call.sock;
    if sock == 0
        && call.kind != TLS_WRITE
        && let Some(last) = last_read
    {
        mark_tls(last.sock);
        fd = last.fd;
        sock = last.sock;
    }
    if sock != 0 {
        let _ = TLS_SOCKS.insert(&call.conn, &sock, 0);
    } else if let Some(known) = unsafe { TLS_SOCKS.get(&call.conn) } {
        // SAFETY: plain value read.
        sock = *known;
    }
    if call.kind == TLS_HANDSHAKE {
        return 0;
    }
    // OpenSSL returns int, GnuTLS ssize_t; byte counts fit in 31 bits, so
    // the low 32 bits, sign-extended, read both right.
    let ret = ctx.ret::<i64>() as i32 as i64;
    // SSL_read/SSL_write and gnutls_record_*: bytes moved, or <= 0.
    // The _ex variants (and OpenSSL's internal functions they and the plain
    // ones call, hooked instead where that saves a single step) return > 0
    // and store the count through a pointer.
    let total = if call.len_out != 0 {
        if ret <= 0 {
            return 0;
        }
        // SAFETY: user pointer read through the helper.
        match unsafe { bpf_probe_read_user(call.len_out as *const u64) } {
            Ok(n) => n,
            Err(_) => return 0,
        }
    } else if ret > 0 {
        ret as u64
    } else {
        return 0;
    };
    if total == 0 {
        return 0;
    }
    if sock == 0 {
        if call.kind == TLS_WRITE {
            hold_write(id, &call, total);
        }
        return 0;
    }
    let active = Active {
        ts_enter: call.ts_enter,
        buf: call.buf,
        sock,
        iovcnt: 0,
        fd,
        probe: call.probe,
        vectored: 0,
        egress: call.egress,
    };
    let Some((sock_flags, scratch, filled)) = report(id, &active, total, true) else {
        return 0;
    };
    let probe = if call.egress != 0 {
        Probe::SslWrite
    } else {
        Probe::SslRead
    };
    deliver(probe, id, &active, sock_flags, scratch, filled);
    0
}

/// Keeps a write of an unknown connection until its socket shows up
/// (sock.rs, at the thread's next socket write).
#[inline(always)]
fn hold_write(id: u64, call: &TlsCall, total: u64) {
    let active = Active {
        ts_enter: call.ts_enter,
        buf: call.buf,
        sock: call.conn,
        iovcnt: 0,
        fd: -1,
        probe: call.probe,
        vectored: 0,
        egress: 1,
    };
    if let Some((scratch, _)) = fill(id, &active, total, flag::TLS, Default::default()) {
        // SAFETY: scratch is a valid map value to copy from.
        let _ = PENDING_WRITES.insert(&id, unsafe { &*scratch }, 0);
    }
}

/// Marks a socket as carrying TLS: its syscall bytes are ciphertext.
#[inline(always)]
pub fn mark_tls(sock: u64) {
    match SOCKS.get_ptr_mut(&sock) {
        // SAFETY: map value pointer valid for this program run.
        Some(info) => unsafe { (*info).flags |= SOCK_TLS },
        None => {
            let info = SockInfo {
                tuple: Default::default(),
                flags: SOCK_TLS,
                lost: 0,
            };
            let _ = SOCKS.insert(&sock, &info, 0);
        }
    }
}

/// uprobe `SSL_write(ssl, buf, num)` / `gnutls_record_send(session, data, size)`
/// (any kernel with uprobes): remembers the plaintext buffer.
#[uprobe]
pub fn tls_write(ctx: ProbeContext) -> u32 {
    enter(&ctx, TLS_WRITE, None)
}

/// uprobe `SSL_write_ex(ssl, buf, num, written)`.
#[uprobe]
pub fn tls_write_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, TLS_WRITE, Some(3))
}

/// uprobe `SSL_read(ssl, buf, num)` / `gnutls_record_recv(session, data, size)`.
#[uprobe]
pub fn tls_read(ctx: ProbeContext) -> u32 {
    enter(&ctx, TLS_READ, None)
}

/// uprobe `SSL_read_ex(ssl, buf, num, readbytes)`.
#[uprobe]
pub fn tls_read_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, TLS_READ, Some(3))
}

/// uprobe `SSL_free(ssl)` / `gnutls_deinit(session)`: the object's address
/// may soon name another connection.
#[uprobe]
pub fn tls_free(ctx: ProbeContext) -> u32 {
    if let Some(conn) = ctx.arg::<u64>(0) {
        let _ = TLS_SOCKS.remove(&conn);
    }
    0
}

/// uprobe `SSL_do_handshake(ssl)` / `gnutls_handshake(session)`: with memory
/// BIOs this is where the connection's socket is first learnt.
#[uprobe]
pub fn tls_handshake(ctx: ProbeContext) -> u32 {
    enter(&ctx, TLS_HANDSHAKE, None)
}

/// uretprobe of all of the above: reports the bytes the call moved.
#[uretprobe]
pub fn tls_return(ctx: RetProbeContext) -> u32 {
    exit(&ctx)
}
