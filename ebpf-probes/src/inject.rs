//! Opt-in `traceparent` injection into outgoing plaintext HTTP/1 requests.
//!
//! `sock_ops` puts the client sockets of traced processes into a sockhash as
//! their handshake completes; the `sk_msg` program then sees every message
//! sent on them before it is queued. It inserts
//! `traceparent: 00-{trace}-{span}-{flags}\r\n` after the request line of a
//! request that carries none, with ids decided here (the trace of the server
//! request the thread serves, or a new one) and handed to the agent so that
//! the client span it exports is exactly the one on the wire.
//!
//! It never guesses: it only touches a message that begins exactly where the
//! previous request ended (framing by Content-Length), whose whole head is in
//! that message, and stops injecting for good on a connection at the first
//! thing it cannot frame (chunked bodies, pipelining, non-HTTP bytes, a head
//! split across writes). Such requests are sent untouched.
use aya_ebpf::cty::c_void;
use aya_ebpf::{
    bindings::{BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, sk_action},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_prandom_u32, bpf_loop, bpf_msg_pull_data,
        bpf_probe_read_kernel_buf, generated::bpf_probe_read_kernel,
    },
    macros::{sk_msg, sock_ops},
    programs::{SkMsgContext, SockOpsContext},
};
use seam_common::{MAX_CAPTURE, TraceCtx, ctx, flag};

use crate::maps::{
    Active, CONFIG, CtxOnSock, HEAD_BUF, HEAD_SCAN, INJECT_BUF, INJECT_SOCKS, INJECT_STATE,
    INJECTED, InjectState, PENDING_HEADS, PENDING_ZERO, SOCKHASH, SPAN_WORK, Scratch, THREAD_CTX,
    put, slot,
};

/// Bytes of a message looked at for a request head.
pub const HEAD_WINDOW: usize = 1024;
/// `traceparent: 00-` + 32 + `-` + 16 + `-` + 2 + CRLF.
const HEADER_LEN: usize = 70;
const NEVER: u64 = u64::MAX;

/// `sock_ops` on the cgroup2 root (any kernel with sockmap, 4.17+): a client
/// socket of a traced process that completes its handshake joins the
/// sockhash, so the sk_msg program sees what it sends.
#[sock_ops]
pub fn inject_sockops(ctx: SockOpsContext) -> u32 {
    if ctx.op() != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        return 1;
    }
    // SAFETY: the context's socket pointer, used as an identity only.
    let sk = unsafe { (*ctx.ops).__bindgen_anon_2.sk } as u64;
    // SAFETY: read-only lookup.
    if unsafe { INJECT_SOCKS.get(&sk) }.is_none() {
        return 1;
    }
    let _ = INJECT_SOCKS.remove(&sk);
    // A socket address is reused by later sockets: framing starts afresh.
    let _ = INJECT_STATE.remove(&sk);
    // SAFETY: the context is a bpf_sock_ops the helper accepts.
    let _ = SOCKHASH.update(sk, unsafe { &mut *ctx.ops }, 0);
    1
}

#[inline(always)]
fn lower(b: u8) -> u8 {
    if b.is_ascii_uppercase() { b + 32 } else { b }
}

#[inline(always)]
fn hex_digit(n: u8) -> u8 {
    let n = n & 0xf;
    if n < 10 { b'0' + n } else { b'a' + n - 10 }
}

#[inline(always)]
fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Index mask for the buffers scanned here: both hold at least
/// `2 * HEAD_WINDOW` bytes, so a masked index is always in bounds, which is
/// what lets the verifier accept reads at computed offsets.
const MASK: usize = HEAD_WINDOW * 2 - 1;

/// Byte `i` of the scanned buffer.
#[inline(always)]
fn byte(buf: *const u8, i: usize) -> u8 {
    // SAFETY: `buf` points at a map value of at least MASK + 1 bytes.
    unsafe { *buf.add(i & MASK) }
}

/// Whether `buf[from..]` starts with `word` (compared lower-case).
#[inline(always)]
fn starts_with_ci(buf: *const u8, from: usize, word: &[u8]) -> bool {
    let mut i = 0;
    while i < word.len() {
        if lower(byte(buf, from + i)) != word[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether `buf` starts with a request method seam frames.
#[inline(always)]
fn starts_request(buf: *const u8) -> bool {
    let w = [byte(buf, 0), byte(buf, 1), byte(buf, 2), byte(buf, 3)];
    matches!(
        &w,
        b"GET " | b"POST" | b"PUT " | b"DELE" | b"HEAD" | b"PATC" | b"OPTI"
    )
}

/// `Head::flags` bits.
const CHUNKED: u64 = 1;
/// A Content-Length seam cannot frame by (a list, garbage).
const BAD_LENGTH: u64 = 2;

/// What the scan of a request head found. It lives in a map
/// ([`HEAD_SCAN`]), not on the stack: the verifier tracks stack values
/// precisely, so every different position stored would make it check the
/// loop step again, while map values are plain unknowns to it and the step
/// is checked once.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Head {
    len: u64,
    /// End of the request line, CRLF included: where the header goes.
    line_end: u64,
    /// End of the head, blank line included; 0 while not found.
    head_end: u64,
    /// Where the Content-Length value starts; 0 if none.
    length_at: u64,
    /// Where a `traceparent` header's value starts; 0 if none.
    traceparent_at: u64,
    flags: u64,
}

/// [`HEAD_SCAN`] slots: the `sk_msg` program's and the tracepoints'.
const SLOT_MSG: u32 = 0;
const SLOT_TRANSFER: u32 = 1;

/// The `bpf_loop` context: where the bytes and the results are.
#[repr(C)]
struct Scan {
    buf: *const u8,
    head: *mut Head,
}

/// One `bpf_loop` step: index `i` of the head. Returns 1 to stop.
extern "C" fn head_step(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the caller's `Scan`, whose pointers
    // are map values.
    let (buf, h) = unsafe {
        let scan = &*(ctx as *const Scan);
        (scan.buf, &mut *scan.head)
    };
    let i = i as usize;
    if i + 1 >= h.len as usize {
        return 1;
    }
    if byte(buf, i) == b'\r' && byte(buf, i + 1) == b'\n' {
        if h.line_end == 0 {
            h.line_end = (i + 2) as u64;
        } else if i >= 2 && byte(buf, i - 1) == b'\n' && byte(buf, i - 2) == b'\r' {
            h.head_end = (i + 2) as u64;
            return 1;
        }
        return 0;
    }
    if i == 0 || byte(buf, i - 1) != b'\n' || h.line_end == 0 {
        return 0;
    }
    // A header line starts at `i`.
    if starts_with_ci(buf, i, b"traceparent:") {
        if h.traceparent_at == 0 {
            h.traceparent_at = (i + 12) as u64;
        }
    } else if starts_with_ci(buf, i, b"content-length:") {
        if h.length_at != 0 {
            h.flags |= BAD_LENGTH;
        }
        h.length_at = (i + 15) as u64;
    } else if starts_with_ci(buf, i, b"transfer-encoding:") {
        h.flags |= CHUNKED;
    }
    0
}

/// Scans the request head in `buf[..len]` (`len <= HEAD_WINDOW`) with
/// `bpf_loop` (Linux 5.17+), into this CPU's `slot` of [`HEAD_SCAN`].
#[inline(always)]
fn scan_head(buf: *const u8, len: usize, slot: u32) -> Option<&'static Head> {
    let head = HEAD_SCAN.get_ptr_mut(slot)?;
    // SAFETY: this CPU's map value.
    unsafe {
        *head = Head {
            len: len as u64,
            line_end: 0,
            head_end: 0,
            length_at: 0,
            traceparent_at: 0,
            flags: 0,
        };
    }
    let mut scan = Scan { buf, head };
    // SAFETY: the callback only touches `scan` and what it points at.
    unsafe {
        bpf_loop(
            HEAD_WINDOW as u32,
            head_step as *mut c_void,
            (&mut scan as *mut Scan).cast(),
            0,
        );
        Some(&*head)
    }
}

/// A decimal number in `buf[from..end]` after optional blanks, up to the
/// end of its line.
#[inline(always)]
fn parse_decimal(buf: *const u8, from: usize, end: usize) -> Option<u64> {
    let mut n = 0u64;
    let mut digits = 0;
    let mut k = 0;
    while k < 24 {
        let i = from + k;
        if i >= end {
            break;
        }
        let c = byte(buf, i);
        if c.is_ascii_digit() {
            // 18 digits at most: no overflow, and no 128-bit multiply,
            // which BPF lacks.
            if digits >= 18 {
                return None;
            }
            n = n * 10 + (c - b'0') as u64;
            digits += 1;
        } else if c == b' ' || c == b'\t' {
            if digits > 0 {
                break;
            }
        } else if c == b'\r' {
            break;
        } else {
            return None;
        }
        k += 1;
    }
    (digits > 0).then_some(n)
}

/// A valid version-00 `traceparent` value at `buf[from..len]` (blanks
/// allowed before it) into `out`, as the context a child span continues:
/// the sender's span id in `span_id`.
#[inline(always)]
fn parse_traceparent(buf: *const u8, from: usize, len: usize, out: &mut TraceCtx) -> bool {
    let mut from = from;
    let mut k = 0;
    while k < 8 && from < len && (byte(buf, from) == b' ' || byte(buf, from) == b'\t') {
        from += 1;
        k += 1;
    }
    if from + 55 > len {
        return false;
    }
    let b = |i: usize| byte(buf, from + i);
    if b(0) != b'0' || b(1) != b'0' || b(2) != b'-' || b(35) != b'-' || b(52) != b'-' {
        return false;
    }
    let mut nonzero_trace = 0u8;
    let mut i = 0;
    while i < 16 {
        let (Some(hi), Some(lo)) = (hex_value(b(3 + 2 * i)), hex_value(b(4 + 2 * i))) else {
            return false;
        };
        out.trace_id[i] = (hi << 4) | lo;
        nonzero_trace |= out.trace_id[i];
        i += 1;
    }
    let mut nonzero_parent = 0u8;
    let mut j = 0;
    while j < 8 {
        let (Some(hi), Some(lo)) = (hex_value(b(36 + 2 * j)), hex_value(b(37 + 2 * j))) else {
            return false;
        };
        out.span_id[j] = (hi << 4) | lo;
        nonzero_parent |= out.span_id[j];
        j += 1;
    }
    let (Some(hi), Some(lo)) = (hex_value(b(53)), hex_value(b(54))) else {
        return false;
    };
    out.flags = (hi << 4) | lo;
    out.has = ctx::SET;
    nonzero_trace != 0 && nonzero_parent != 0
}

#[inline(always)]
fn random_bytes<const N: usize>(out: &mut [u8; N]) {
    let mut i = 0;
    while i < N {
        // SAFETY: helper without arguments.
        let r = unsafe { bpf_get_prandom_u32() }.to_le_bytes();
        let mut k = 0;
        while k < 4 && i + k < N {
            out[i + k] = r[k];
            k += 1;
        }
        i += 4;
    }
}

/// The low 56 bits of a trace id, as the OTel ratio sampler reads them.
#[inline(always)]
fn randomness(trace: &[u8; 16]) -> u64 {
    let mut v = 0u64;
    let mut i = 9;
    while i < 16 {
        v = (v << 8) | trace[i] as u64;
        i += 1;
    }
    v
}

/// A new span into `c`: child of `parent`'s span if given (its trace and
/// flags), else the root of a new trace, sampled by the configured threshold.
/// Written in place: callers keep it in map memory, off the small BPF stack.
#[inline(always)]
fn new_span(parent: Option<&TraceCtx>, c: &mut TraceCtx) {
    *c = TraceCtx::default();
    random_bytes(&mut c.span_id);
    match parent {
        Some(p) => {
            c.trace_id = p.trace_id;
            c.parent_id = p.span_id;
            c.flags = p.flags;
            c.has = ctx::SET | ctx::PARENT;
        }
        None => {
            random_bytes(&mut c.trace_id);
            let threshold = CONFIG.get(0).map_or(0, |c| c.sample_threshold);
            c.flags = u8::from(randomness(&c.trace_id) >= threshold);
            c.has = ctx::SET;
        }
    }
}

/// Whether injection is configured.
#[inline(always)]
fn enabled() -> bool {
    CONFIG.get(0).is_some_and(|c| c.inject != 0)
}

/// `connect()` of a traced process (from `inet_sock_set_state`, SYN_SENT):
/// the socket joins the sockhash when its handshake completes.
#[inline(always)]
pub fn on_connect(sk: u64) {
    if enabled() {
        let _ = INJECT_SOCKS.insert(&sk, &1, 0);
    }
}

/// After a reported transfer: a request read on a server socket gets its
/// span here, so that requests the thread sends meanwhile can name it (once
/// its head is whole: a head split over reads is held until the read that
/// finishes it, whose record then carries the span, marked `CONTINUED`); an
/// injected request's record carries the span written into it. A
/// subprogram, so that its stack is not added to every caller's frame.
#[inline(never)]
pub fn after_transfer(
    id: u64,
    active: &Active,
    sock_flags: u32,
    scratch: *mut Scratch,
    filled: usize,
) {
    if !enabled() {
        return;
    }
    if active.egress != 0 {
        // The answer ends the request the thread served; entries are marked
        // unused (`sock` 0) in place rather than deleted (see `maps::put`).
        if let Some(serving) = THREAD_CTX.get_ptr_mut(&id) {
            // SAFETY: map value pointer valid for this program run; only
            // this thread's context touches its entry.
            unsafe {
                if (*serving).sock == active.sock {
                    (*serving).sock = 0;
                }
            }
        }
        if let Some(sent) = INJECTED.get_ptr_mut(&id) {
            // SAFETY: as above.
            unsafe {
                if (*sent).sock == active.sock {
                    (*scratch).header.ctx = (*sent).ctx;
                }
                (*sent).sock = 0;
            }
        }
        return;
    }
    if filled == 0 || filled > MAX_CAPTURE || sock_flags & flag::ROLE_CLIENT != 0 {
        return;
    }
    // SAFETY: this CPU's scratch record, `filled` bytes of it written.
    let data = unsafe { (*scratch).data.as_ptr() };
    let starts = filled >= 4 && starts_request(data);
    let (buf, len) = if starts {
        (data, filled.min(HEAD_WINDOW))
    } else {
        match continue_head(active.sock, data, filled) {
            Some(pending) => pending,
            None => return,
        }
    };
    let Some(head) = scan_head(buf, len, SLOT_TRANSFER) else {
        return;
    };
    let traceparent_at = head.traceparent_at as usize;
    if head.head_end == 0 && traceparent_at == 0 && len < HEAD_WINDOW {
        // The head goes on in the next read: the span is decided there, from
        // all of it (a continued head has been extended already).
        if starts {
            hold_head(active.sock, data, len);
        }
        return;
    }
    forget_head(active.sock);
    let Some(work) = SPAN_WORK.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's map value, used by nothing else during this run.
    let work = unsafe { &mut *work };
    let has_parent =
        traceparent_at != 0 && parse_traceparent(buf, traceparent_at, len, &mut work.parent);
    new_span(has_parent.then_some(&work.parent), &mut work.entry.ctx);
    // SAFETY: plain value read.
    let ambiguous = unsafe { THREAD_CTX.get(&id) }
        .is_some_and(|t| t.sock != 0 && (t.sock != active.sock || t.ambiguous != 0));
    work.entry.sock = active.sock;
    work.entry.ambiguous = u32::from(ambiguous);
    work.entry._pad = 0;
    put(&THREAD_CTX, &id, &work.entry);
    // SAFETY: this CPU's scratch record.
    unsafe {
        (*scratch).header.ctx = work.entry.ctx;
        if !starts {
            // For the agent: the request began in an earlier read.
            (*scratch).header.ctx.has |= ctx::CONTINUED;
        }
    }
}

/// Copies `len` bytes of `src` to `buf[at..]`; `at < HEAD_WINDOW` and
/// `len <= HEAD_WINDOW`, within the `2 * HEAD_WINDOW` buffer.
#[inline(always)]
fn copy_head(buf: &mut [u8; HEAD_BUF], at: usize, src: *const u8, len: usize) -> Option<()> {
    let at = at & (HEAD_WINDOW - 1);
    let len = len & MASK;
    if len > HEAD_WINDOW {
        return None;
    }
    // SAFETY: kernel memory (this CPU's scratch record) into a map value,
    // in bounds by the masks above.
    let rc =
        unsafe { bpf_probe_read_kernel(buf.as_mut_ptr().add(at).cast(), len as u32, src.cast()) };
    (rc == 0).then_some(())
}

/// Keeps the first `len` (< HEAD_WINDOW) bytes of a request head on `sock`.
#[inline(always)]
fn hold_head(sock: u64, data: *const u8, len: usize) {
    let Some(p) = slot(&PENDING_HEADS, &sock, &PENDING_ZERO) else {
        return;
    };
    // SAFETY: map value pointer valid for this program run; a socket's
    // reads come one at a time.
    unsafe {
        (*p).len = 0;
        if copy_head(&mut (*p).buf, 0, data, len).is_some() {
            (*p).len = len as u64;
        }
    }
}

/// Appends a read to the head held for `sock`, if one is: the whole head
/// so far, to scan again.
#[inline(always)]
fn continue_head(sock: u64, data: *const u8, filled: usize) -> Option<(*const u8, usize)> {
    let p = PENDING_HEADS.get_ptr_mut(&sock)?;
    // SAFETY: as in `hold_head`.
    unsafe {
        let have = (*p).len as usize;
        if have == 0 || have >= HEAD_WINDOW {
            return None;
        }
        let take = filled.min(HEAD_WINDOW - have);
        copy_head(&mut (*p).buf, have, data, take)?;
        (*p).len = (have + take) as u64;
        Some(((*p).buf.as_ptr(), have + take))
    }
}

/// A traced socket closed: nothing held for it may meet a later socket at
/// the same address.
#[inline(always)]
pub fn on_close(sock: u64) {
    if enabled() {
        forget_head(sock);
    }
}

/// Drops what is held for `sock`: its request's span is decided.
#[inline(always)]
fn forget_head(sock: u64) {
    if let Some(p) = PENDING_HEADS.get_ptr_mut(&sock) {
        // SAFETY: as in `hold_head`.
        unsafe { (*p).len = 0 };
    }
}

/// `sk_msg` on the sockhash (Linux 4.20+ for bpf_msg_push_data): inserts the
/// header into requests it can frame; always lets the message through.
#[sk_msg]
pub fn inject_msg(ctx: SkMsgContext) -> u32 {
    let _ = try_inject(&ctx);
    sk_action::SK_PASS
}

fn try_inject(ctx: &SkMsgContext) -> Result<(), ()> {
    // SAFETY: the context's socket pointer, used as an identity only.
    let sk = unsafe { (*ctx.msg).__bindgen_anon_3.sk } as u64;
    let size = ctx.size() as u64;
    let state = match INJECT_STATE.get_ptr_mut(&sk) {
        Some(s) => s,
        None => {
            let fresh = InjectState {
                sent: 0,
                next: 0,
                stopped: 0,
                _pad: 0,
            };
            INJECT_STATE.insert(&sk, &fresh, 0).map_err(|_| ())?;
            INJECT_STATE.get_ptr_mut(&sk).ok_or(())?
        }
    };
    // SAFETY: map value pointer valid for this program run.
    let (sent, next, stopped) = unsafe { ((*state).sent, (*state).next, (*state).stopped) };
    if stopped != 0 {
        return Ok(());
    }
    // SAFETY: as above.
    let stop = |state: *mut InjectState| unsafe { (*state).stopped = 1 };
    if sent != next {
        // Inside a body. A request starting inside this message cannot be
        // framed (pipelining): stop.
        // SAFETY: as above.
        unsafe { (*state).sent = sent + size };
        if next != NEVER && sent + size > next {
            stop(state);
        }
        return Ok(());
    }
    // A request should start here.
    let window = if size < HEAD_WINDOW as u64 {
        size as u32
    } else {
        HEAD_WINDOW as u32
    };
    // SAFETY: the helper linearises bytes of this message.
    if unsafe { bpf_msg_pull_data(ctx.msg, 0, window, 0) } != 0 {
        stop(state);
        return Err(());
    }
    let buf = INJECT_BUF.get_ptr_mut(0).ok_or(())?;
    let data = ctx.data();
    let end = ctx.data_end();
    let len = (end - data).min(HEAD_WINDOW);
    // SAFETY: kernel memory of the pulled message, into this CPU's buffer.
    unsafe {
        let dst = &mut (&mut *buf)[..len & (HEAD_WINDOW * 2 - 1)];
        if len > HEAD_WINDOW || bpf_probe_read_kernel_buf(data as *const u8, dst).is_err() {
            stop(state);
            return Err(());
        }
    }
    let buf = buf as *const u8;
    if !starts_request(buf) {
        stop(state);
        return Ok(());
    }
    let head = scan_head(buf, len, SLOT_MSG).ok_or(())?;
    if head.head_end == 0 || head.flags & BAD_LENGTH != 0 {
        // The head is not all here (split across writes, or long), or its
        // length is unusable: leave this request alone and stop, as its
        // end cannot be known.
        stop(state);
        return Ok(());
    }
    let chunked = head.flags & CHUNKED != 0;
    let content_length = if head.length_at == 0 {
        0
    } else {
        match parse_decimal(buf, head.length_at as usize, head.head_end as usize) {
            Some(n) => n,
            None => {
                stop(state);
                return Ok(());
            }
        }
    };
    // SAFETY: as above.
    unsafe {
        (*state).sent = sent + size;
        (*state).next = if chunked {
            NEVER
        } else {
            sent + head.head_end + content_length
        };
        // After a chunked body, or with another request in this same
        // message (pipelining), where requests start is unknown: stop.
        if chunked || sent + size > (*state).next {
            (*state).stopped = 1;
        }
    }
    if head.traceparent_at != 0 {
        return Ok(());
    }
    if !enabled() {
        return Ok(());
    }

    let id = bpf_get_current_pid_tgid();
    // SAFETY: plain value read.
    let serving = unsafe { THREAD_CTX.get(&id) }
        .filter(|s| s.sock != 0 && s.ambiguous == 0)
        .map(|s| s.ctx);
    let mut span = TraceCtx::default();
    new_span(serving.as_ref(), &mut span);
    let at = head.line_end as u32;
    ctx.push_data(at, HEADER_LEN as u32, 0).map_err(|_| ())?;
    // SAFETY: linearise the inserted bytes to write them.
    if unsafe { bpf_msg_pull_data(ctx.msg, at, at + HEADER_LEN as u32, 0) } != 0 {
        return Err(());
    }
    let data = ctx.data();
    if data + HEADER_LEN > ctx.data_end() {
        return Err(());
    }
    let out = data as *mut u8;
    let mut header = [0u8; HEADER_LEN];
    header[..16].copy_from_slice(b"traceparent: 00-");
    let mut i = 0;
    while i < 16 {
        header[16 + 2 * i] = hex_digit(span.trace_id[i] >> 4);
        header[17 + 2 * i] = hex_digit(span.trace_id[i]);
        i += 1;
    }
    header[48] = b'-';
    let mut j = 0;
    while j < 8 {
        header[49 + 2 * j] = hex_digit(span.span_id[j] >> 4);
        header[50 + 2 * j] = hex_digit(span.span_id[j]);
        j += 1;
    }
    header[65] = b'-';
    header[66] = hex_digit(span.flags >> 4);
    header[67] = hex_digit(span.flags);
    header[68] = b'\r';
    header[69] = b'\n';
    let mut k = 0;
    while k < HEADER_LEN {
        // SAFETY: bounds checked against data_end above.
        unsafe { *out.add(k) = header[k] };
        k += 1;
    }
    let sent = CtxOnSock {
        ctx: span,
        sock: sk,
        ambiguous: 0,
        _pad: 0,
    };
    put(&INJECTED, &id, &sent);
    Ok(())
}
