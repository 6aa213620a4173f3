//! TCP connection identity without kprobes, from stable `sock:*` tracepoints.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use seam_common::{CloseEvent, Probe, Tuple, flag, kind, mode};

use crate::{
    ctx::field,
    emit::{output, output_data},
    filter::{current_mode, is_traced},
    inject,
    maps::{
        ACTIVE, FD_SOCKS, GO_CALLS, GO_THREAD, GoKey, LAST_READ, LastRead, PENDING_WRITES,
        SOCK_SEEN, SOCKS, SockInfo, TLS_CALLS, TLS_SOCKS, TRACED_PIDS, TRACED_PORTS, fd_key, put,
    },
    tls::mark_tls,
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;

/// How soon after a Go TLS call began its first syscall must come to count.
const GO_SYSCALL_WINDOW_NS: u64 = 2_000_000;

const MSG_PEEK: i32 = 2;
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_CLOSE: i32 = 7;
const TCP_LISTEN: i32 = 10;

/// `sock:sock_send_length` / `sock:sock_recv_length` record: `sk` at 8,
/// `family` at 16, `protocol` at 18, `ret` at 20, `flags` at 24.
#[inline(always)]
fn mark_transfer(ctx: &TracePointContext, recv: bool) -> u32 {
    let family: u16 = field(ctx, 16);
    let protocol: u16 = field(ctx, 18);
    if protocol != IPPROTO_TCP || (family != AF_INET && family != AF_INET6) {
        return 0;
    }
    let id = bpf_get_current_pid_tgid();
    // A thread of a traced process has an entry from its first socket
    // syscall on (TLS and Go calls, below, are only followed in traced
    // processes, whose syscalls they make): everyone else leaves here.
    let Some(active) = ACTIVE.get_ptr_mut(&id) else {
        return 0;
    };
    let sk: u64 = field(ctx, 8);
    let mut fd = -1;
    // SAFETY: map value pointer valid for this program run.
    if unsafe { (*active).ts_enter } != 0 {
        // SAFETY: as above.
        unsafe {
            (*active).sock = sk;
            fd = (*active).fd;
        }
        if fd >= 0 {
            let key = fd_key(id, fd);
            // Written only when it changes: a lookup is much cheaper.
            // SAFETY: read-only lookup.
            if unsafe { FD_SOCKS.get(&key) } != Some(&sk) {
                let _ = FD_SOCKS.insert(&key, &sk, 0);
            }
        }
    }
    if let Some(thread) = GO_THREAD.get_ptr(&id) {
        // A Go TLS call's first syscall, if it comes right after the call
        // began (another goroutine may have the thread later).
        // SAFETY: map value pointer valid for this program run.
        let (g, since) = unsafe { ((*thread).g, (*thread).since) };
        let _ = GO_THREAD.remove(&id);
        let key = GoKey {
            tgid: (id >> 32) as u32,
            _pad: 0,
            g,
        };
        if unsafe { bpf_ktime_get_ns() }.saturating_sub(since) < GO_SYSCALL_WINDOW_NS
            && let Some(call) = GO_CALLS.get_ptr_mut(&key)
        {
            // SAFETY: as above.
            unsafe {
                if (*call).sock == 0 {
                    (*call).sock = sk;
                    (*call).fd = fd;
                }
            }
            mark_tls(sk);
            return 0;
        }
    }
    if let Some(call) = TLS_CALLS.get_ptr_mut(&id) {
        // Inside a TLS library call: this socket carries that connection,
        // and its syscall bytes are ciphertext from now on.
        // SAFETY: as above.
        unsafe {
            (*call).sock = sk;
            (*call).fd = fd;
        }
        mark_tls(sk);
    } else if fd >= 0 {
        if recv {
            // Only a read that brought bytes can be ciphertext for the next
            // TLS call: an end-of-file or would-block read (a closed
            // connection's last) would name a dead socket for the thread's
            // next connection. `flags & MSG_PEEK` reads leave the bytes.
            let ret: i32 = field(ctx, 20);
            let flags: i32 = field(ctx, 24);
            if ret <= 0 || flags & MSG_PEEK != 0 {
                return 0;
            }
            let last = LastRead {
                sock: sk,
                fd,
                _pad: 0,
            };
            put(&LAST_READ, &id, &last);
        } else {
            release_write(id, sk, fd);
        }
    }
    0
}

/// Marks the thread's last read unused (`sock` 0).
#[inline(always)]
fn forget_read(id: u64) {
    if let Some(last) = LAST_READ.get_ptr_mut(&id) {
        // SAFETY: map value pointer valid for this program run.
        unsafe { (*last).sock = 0 };
    }
}

/// The thread's first socket write after a TLS write of an unknown
/// connection carries that write's ciphertext: the socket is the
/// connection's; the held plaintext is reported on it now.
#[inline(always)]
fn release_write(id: u64, sk: u64, fd: i32) {
    let Some(held) = PENDING_WRITES.get_ptr_mut(&id) else {
        return;
    };
    // SAFETY: map value pointer valid for this program run.
    let conn = unsafe { (*held).header.sock };
    let _ = TLS_SOCKS.insert(&conn, &sk, 0);
    mark_tls(sk);
    let (tuple, flags, lost) = match SOCKS.get_ptr_mut(&sk) {
        // SAFETY: as above.
        Some(info) => unsafe {
            (*info).flags |= SOCK_SEEN;
            ((*info).tuple, (*info).flags, (*info).lost)
        },
        None => (Default::default(), 0, 0),
    };
    // SAFETY: as above.
    let captured = unsafe {
        (*held).header.sock = sk;
        (*held).header.fd = fd;
        (*held).header.tuple = tuple;
        (*held).header.lost = lost;
        (*held).header.flags |= flags & (flag::TUPLE_KNOWN | flag::ROLE_CLIENT | flag::ROLE_SERVER);
        (*held).header.captured as usize
    };
    output_data(Probe::SslWrite, held, captured);
    let _ = PENDING_WRITES.remove(&id);
}

/// `sock:sock_send_length` (Linux 6.3+): fires inside `sock_sendmsg` in the
/// sending thread, telling the pending syscall which socket it writes to.
#[tracepoint]
pub fn sock_send_length(ctx: TracePointContext) -> u32 {
    mark_transfer(&ctx, false)
}

/// `sock:sock_recv_length` (Linux 6.3+): same for `sock_recvmsg`.
#[tracepoint]
pub fn sock_recv_length(ctx: TracePointContext) -> u32 {
    mark_transfer(&ctx, true)
}

/// `sock:inet_sock_set_state` (Linux 4.16+): learns each TCP connection's
/// addresses and side when it reaches ESTABLISHED, reports closes of
/// connections that carried traced bytes, and traces processes that listen on
/// a selected port.
#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = try_set_state(&ctx);
    0
}

fn try_set_state(ctx: &TracePointContext) -> Result<u32, u32> {
    let protocol: u16 = field(ctx, 30);
    if protocol != IPPROTO_TCP {
        return Ok(0);
    }
    let sk: u64 = field(ctx, 8);
    let old: i32 = field(ctx, 16);
    let new: i32 = field(ctx, 20);
    match new {
        TCP_ESTABLISHED => {
            let role = match old {
                TCP_SYN_SENT => flag::ROLE_CLIENT,
                TCP_SYN_RECV => flag::ROLE_SERVER,
                _ => 0,
            };
            let info = SockInfo {
                tuple: read_tuple(ctx),
                flags: flag::TUPLE_KNOWN | role,
                lost: 0,
            };
            let _ = SOCKS.insert(&sk, &info, 0);
        }
        TCP_SYN_SENT => {
            // connect() runs in the connecting thread. Whatever it read
            // before is another connection's: its next TLS handshake (a
            // memory-BIO library such as Node's writes the hello without a
            // socket call) must not be named after that.
            forget_read(bpf_get_current_pid_tgid());
            if is_traced() {
                inject::on_connect(sk);
            }
        }
        TCP_LISTEN => {
            // listen() runs in the listening process, so current is its owner.
            let port: u16 = field(ctx, 24);
            if current_mode() == mode::ALLOWLIST && unsafe { TRACED_PORTS.get(&port) }.is_some() {
                let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
                let _ = TRACED_PIDS.insert(&tgid, &1, 0);
            }
        }
        _ => {
            if old != TCP_ESTABLISHED && new != TCP_CLOSE {
                return Ok(0);
            }
            // SAFETY: plain value copied out of the map.
            let Some(info) = (unsafe { SOCKS.get(&sk) }).copied() else {
                return Ok(0);
            };
            if new == TCP_CLOSE {
                let _ = SOCKS.remove(&sk);
                inject::on_close(sk);
            }
            if info.flags & SOCK_SEEN == 0 {
                return Ok(0);
            }
            let event = CloseEvent {
                kind: kind::CLOSE,
                oldstate: old as u16,
                newstate: new as u16,
                ts_ns: unsafe { bpf_ktime_get_ns() },
                sock: sk,
                tuple: info.tuple,
            };
            output(Probe::SockState, &event);
        }
    }
    Ok(0)
}

/// The record's addresses as (local, peer); ports are already host order.
#[inline(always)]
fn read_tuple(ctx: &TracePointContext) -> Tuple {
    let family: u16 = field(ctx, 28);
    let mut tuple = Tuple {
        sport: field(ctx, 24),
        dport: field(ctx, 26),
        family,
        ..Default::default()
    };
    if family == AF_INET6 {
        tuple.saddr = field(ctx, 40);
        tuple.daddr = field(ctx, 56);
    } else {
        let s: [u8; 4] = field(ctx, 32);
        let d: [u8; 4] = field(ctx, 36);
        tuple.saddr[..4].copy_from_slice(&s);
        tuple.daddr[..4].copy_from_slice(&d);
    }
    tuple
}
