//! Every map the probes share with each other and with the agent. The agent
//! finds them by these names.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf, SockHash},
};
use seam_common::{Config, DataHeader, MAX_CAPTURE, PathEvent, STATS_LEN, TraceCtx, Tuple};

/// Stores `value` under `key`, in place when the key has an entry already.
/// An update allocates a new element and frees the old one under the LRU's
/// locks; a write through the lookup's pointer does neither. That is why the
/// per-thread maps below keep an entry per thread and mark it unused (a zero
/// field, named at each map) instead of deleting it: in a traced server every
/// syscall would otherwise pay for an insert and a delete.
#[inline(always)]
pub fn put<K, V: Copy>(map: &LruHashMap<K, V>, key: &K, value: &V) {
    match map.get_ptr_mut(key) {
        // SAFETY: map value pointer valid for this program run; these maps
        // are keyed by thread, and a thread's entry is touched only in its
        // own context or (off-CPU times) while it runs on no CPU, so no other
        // CPU writes the entry meanwhile.
        Some(slot) => unsafe { *slot = *value },
        None => {
            let _ = map.insert(key, value, 0);
        }
    }
}

/// The entry under `key` if it is in use, copied out, and marks it unused.
#[inline(always)]
pub fn take<K, V: Copy>(
    map: &LruHashMap<K, V>,
    key: &K,
    in_use: impl Fn(&V) -> bool,
    mark_unused: impl Fn(&mut V),
) -> Option<V> {
    let slot = map.get_ptr_mut(key)?;
    // SAFETY: map value pointer valid for this program run; one writer at a
    // time (see `put`).
    let value = unsafe {
        let value = *slot;
        mark_unused(&mut *slot);
        value
    };
    in_use(&value).then_some(value)
}

/// All records for the agent. The agent may resize it at load time.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// Single entry: which processes are traced (see `seam_common::mode`).
#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Traced tgids in allowlist mode (value unused).
#[map]
pub static TRACED_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);

/// Processes never traced in `mode::ALL` (e.g. a local OTLP collector).
#[map]
pub static EXCLUDED_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

/// Traced cgroup v2 ids in allowlist mode (value unused).
#[map]
pub static TRACED_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(16384, 0);

/// Executable names (`comm` after exec, NUL-padded) whose processes become
/// traced the moment they exec, before the agent could react.
#[map]
pub static TRACED_COMMS: HashMap<[u8; 16], u8> = HashMap::with_max_entries(256, 0);

/// Listening ports whose listeners become traced when they call `listen()`.
#[map]
pub static TRACED_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(1024, 0);

/// Per-CPU counters, `probe * stat::COUNT + stat` (see `seam_common::stat`).
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STATS_LEN, 0);

/// A socket transfer between its `sys_enter_*` and `sys_exit_*`, keyed by
/// pid_tgid; `ts_enter` 0 when the thread is in no such syscall. `sock` is
/// filled in by `sock:sock_{send,recv}_length` when the fd turns out to be a
/// TCP socket; transfers that never get one are dropped.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Active {
    pub ts_enter: u64,
    /// User buffer, or user `iovec` array when `vectored` is set.
    pub buf: u64,
    pub sock: u64,
    /// iovec count when `vectored`.
    pub iovcnt: u64,
    pub fd: i32,
    pub probe: u32,
    pub vectored: u32,
    pub egress: u32,
}

/// A thread that read a request on a server socket and has not answered it
/// yet: its slow file I/O and off-CPU time explain the server span's gaps.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Serving {
    /// The server connection the request came on.
    pub sock: u64,
    pub since: u64,
}

/// Serving threads, keyed by pid_tgid; `sock` 0 when not serving.
#[map]
pub static SERVING: LruHashMap<u64, Serving> = LruHashMap::with_max_entries(16384, 0);

/// A serving thread that left the CPU, keyed by tid.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OffCpu {
    pub since: u64,
    pub pid_tgid: u64,
    pub blocked: u32,
    pub _pad: u32,
}

/// Keyed by `struct task_struct *` (what `sched_switch` hands over without
/// reading the task); `since` 0 when the thread is not away.
#[map]
pub static OFF_CPU: LruHashMap<u64, OffCpu> = LruHashMap::with_max_entries(16384, 0);

#[map]
pub static ACTIVE: LruHashMap<u64, Active> = LruHashMap::with_max_entries(32768, 0);

/// What the probes know of a TCP socket, keyed by `struct sock *`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SockInfo {
    pub tuple: Tuple,
    /// `seam_common::flag` TUPLE_KNOWN / ROLE_* bits, plus the SOCK_* bits below.
    pub flags: u32,
    /// Records of this socket lost to a full ring buffer (wrapping); every
    /// data record carries the count, so the agent sees where a stream broke.
    pub lost: u32,
}

/// A traced process moved bytes on this socket: report its close.
pub const SOCK_SEEN: u32 = 1 << 24;
/// TLS runs on this socket: its syscall bytes are ciphertext, never reported.
pub const SOCK_TLS: u32 = 1 << 25;

#[map]
pub static SOCKS: LruHashMap<u64, SockInfo> = LruHashMap::with_max_entries(65536, 0);

/// Room for one data record. The payload area is twice `MAX_CAPTURE` so that
/// the verifier can prove every masked copy stays inside the buffer.
#[repr(C)]
pub struct Scratch {
    pub header: DataHeader,
    pub data: [u8; MAX_CAPTURE * 2],
}

#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// `openat` filename pointers of serving threads between enter and exit
/// (0 outside).
#[map]
pub static OPENING: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);

/// Names of the files serving threads opened, by [`fd_key`]. A name
/// travels to the agent only ahead of a slow I/O on its fd: a server that
/// opens a file per request (nginx's static files) would otherwise send a
/// record per request that almost never names anything. Like the agent's
/// table before, entries outlive a close: an fd is renamed when a serving
/// thread opens a file under it again.
#[map]
pub static FD_PATHS: LruHashMap<u64, PathEvent> = LruHashMap::with_max_entries(4096, 0);

/// An all-zero name: a new `FD_PATHS` entry is inserted from it, and the
/// name is then read into the entry in place.
#[map]
pub static PATH_ZERO: PerCpuArray<PathEvent> = PerCpuArray::with_max_entries(1, 0);

/// The key of descriptor `fd` in the process of `pid_tgid` (`FD_PATHS`,
/// `FD_SOCKS`): tgid in the high half, fd in the low.
#[inline(always)]
pub fn fd_key(pid_tgid: u64, fd: i32) -> u64 {
    (pid_tgid & 0xffff_ffff_0000_0000) | u64::from(fd as u32)
}

/// A TLS library call (SSL_read/SSL_write and friends) between its entry
/// uprobe and its return, keyed by pid_tgid. `sock` is learnt from the
/// socket syscall the library makes inside the call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsCall {
    pub ts_enter: u64,
    /// The library's connection object (`SSL *`, `gnutls_session_t`).
    pub conn: u64,
    pub buf: u64,
    /// `size_t *` receiving the byte count (`SSL_read_ex`/`SSL_write_ex`), or 0.
    pub len_out: u64,
    pub sock: u64,
    pub probe: u32,
    pub egress: u32,
    /// The socket's fd, from the syscall inside the call (-1 until then).
    pub fd: i32,
    /// One of the `TLS_*` kinds below.
    pub kind: u32,
}

pub const TLS_READ: u32 = 0;
pub const TLS_WRITE: u32 = 1;
/// SSL_do_handshake / gnutls_handshake: only learns the socket.
pub const TLS_HANDSHAKE: u32 = 2;

/// The last socket a traced thread read outside TLS calls, since its last
/// TLS call: with memory BIOs (Node.js, Python asyncio) the library reads no
/// socket itself; the application reads the ciphertext and then hands it to
/// SSL_read or SSL_do_handshake, so that socket is the connection's.
#[map]
pub static LAST_READ: LruHashMap<u64, LastRead> = LruHashMap::with_max_entries(16384, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct LastRead {
    pub sock: u64,
    pub fd: i32,
    pub _pad: u32,
}

#[map]
pub static TLS_CALLS: LruHashMap<u64, TlsCall> = LruHashMap::with_max_entries(16384, 0);

/// The socket under each TLS connection object, for calls served from the
/// library's buffer without a syscall.
#[map]
pub static TLS_SOCKS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(65536, 0);

/// A TLS write whose connection was not known yet (memory BIO: the
/// application writes the ciphertext itself, right after the call), waiting
/// for that socket write on the same thread; keyed by pid_tgid. The record's
/// `sock` holds the connection object until then.
#[map]
pub static PENDING_WRITES: LruHashMap<u64, Scratch> = LruHashMap::with_max_entries(1024, 0);

/// A Go TLS call's key: the process and the goroutine (`g` pointer).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GoKey {
    pub tgid: u32,
    pub _pad: u32,
    pub g: u64,
}

#[map]
pub static GO_CALLS: LruHashMap<GoKey, TlsCall> = LruHashMap::with_max_entries(16384, 0);

/// The goroutine that entered a Go TLS call on a thread, until its first
/// syscall there (which names the call's socket).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GoThread {
    pub g: u64,
    pub since: u64,
}

#[map]
pub static GO_THREAD: LruHashMap<u64, GoThread> = LruHashMap::with_max_entries(16384, 0);

/// Client sockets of traced processes between `connect()` and the end of
/// their handshake, waiting to join [`SOCKHASH`] (injection only).
#[map]
pub static INJECT_SOCKS: LruHashMap<u64, u8> = LruHashMap::with_max_entries(16384, 0);

/// The sockets whose outgoing messages the `sk_msg` program sees.
#[map]
pub static SOCKHASH: SockHash<u64> = SockHash::with_max_entries(65536, 0);

/// Where a connection's outgoing byte stream stands, for framing requests.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct InjectState {
    /// Bytes sent so far.
    pub sent: u64,
    /// Offset where the next request must start (`u64::MAX`: unknown).
    pub next: u64,
    /// Non-zero once something could not be framed: hands off for good.
    pub stopped: u32,
    pub _pad: u32,
}

#[map]
pub static INJECT_STATE: LruHashMap<u64, InjectState> = LruHashMap::with_max_entries(65536, 0);

/// The start of a server request's head that one read did not finish,
/// kept by socket until the rest arrives: the request's span is decided
/// from the whole head, or a `traceparent` in its second half would be
/// missed. `len` 0: unused.
#[repr(C)]
pub struct PendingHead {
    pub len: u64,
    pub buf: [u8; HEAD_BUF],
}

/// `2 * HEAD_WINDOW` bytes, as the head scanner's masked reads need, and
/// room past them: the compiler may add a small constant after the mask (a
/// `traceparent` is read at a masked start plus up to 64).
pub const HEAD_BUF: usize = 2 * crate::inject::HEAD_WINDOW + 128;

#[map]
pub static PENDING_HEADS: LruHashMap<u64, PendingHead> = LruHashMap::with_max_entries(256, 0);

/// An all-zero [`PendingHead`], which new entries are inserted from.
#[map]
pub static PENDING_ZERO: PerCpuArray<PendingHead> = PerCpuArray::with_max_entries(1, 0);

/// The value under `key`, inserted from `zero` (an all-zero per-CPU value:
/// too large for the BPF stack) when missing, to be written in place.
#[inline(always)]
pub fn slot<K, V>(map: &LruHashMap<K, V>, key: &K, zero: &PerCpuArray<V>) -> Option<*mut V> {
    if let Some(slot) = map.get_ptr_mut(key) {
        return Some(slot);
    }
    let fresh = zero.get_ptr(0)?;
    // SAFETY: this CPU's value, copied by the insert.
    map.insert(key, unsafe { &*fresh }, 0).ok()?;
    map.get_ptr_mut(key)
}

/// A span context tied to a socket.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CtxOnSock {
    pub ctx: TraceCtx,
    pub sock: u64,
    /// Non-zero: the thread read another request before answering this one
    /// (an event loop), so its outgoing requests cannot be attributed.
    pub ambiguous: u32,
    pub _pad: u32,
}

/// The server request each thread serves (injection only), keyed by
/// pid_tgid: requests it sends meanwhile are its children. `sock` 0: none.
#[map]
pub static THREAD_CTX: LruHashMap<u64, CtxOnSock> = LruHashMap::with_max_entries(16384, 0);

/// The span the `sk_msg` program just wrote into a request, for the sending
/// syscall's record; keyed by pid_tgid. `sock` 0: none.
#[map]
pub static INJECTED: LruHashMap<u64, CtxOnSock> = LruHashMap::with_max_entries(16384, 0);

/// Where the tracepoints build a server request's span (the parent read
/// from its head, then the span): per CPU, as the BPF stack is too small.
#[repr(C)]
pub struct SpanWork {
    pub parent: TraceCtx,
    pub entry: CtxOnSock,
}

#[map]
pub static SPAN_WORK: PerCpuArray<SpanWork> = PerCpuArray::with_max_entries(1, 0);

/// Room to look at the head of an outgoing message.
#[map]
pub static INJECT_BUF: PerCpuArray<[u8; 2048]> = PerCpuArray::with_max_entries(1, 0);

/// Results of scanning a request head (see `inject::Head`): one slot for
/// the `sk_msg` program, one for the tracepoints.
#[map]
pub static HEAD_SCAN: PerCpuArray<crate::inject::Head> = PerCpuArray::with_max_entries(2, 0);

/// The socket behind each file descriptor of traced processes, keyed by
/// [`fd_key`], from their socket transfers: a Go TLS call that named
/// no socket itself is resolved through its connection's descriptor.
#[map]
pub static FD_SOCKS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(65536, 0);
