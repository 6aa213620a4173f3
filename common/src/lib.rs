//! Records that seam's kernel probes write to the ring buffer, and the values of
//! the maps the agent writes for them. One definition serves both sides: the
//! probes build this crate for `bpfel-unknown-none`, the agent with `user`.
//!
//! Every struct is `#[repr(C)]`, fixed-size and laid out without implicit
//! padding, so the bytes the kernel writes are the bytes the agent reads; the
//! tests below pin each layout.
#![no_std]

/// Payload bytes copied per transfer. Enough for request and status lines and
/// the headers the parser needs; what lies beyond is only counted.
pub const MAX_CAPTURE: usize = 4096;
/// Length of a task's `comm`.
pub const COMM_LEN: usize = 16;

/// First `u32` of every ring buffer record.
pub mod kind {
    /// A [`DataHeader`](super::DataHeader) followed by `captured` payload bytes.
    pub const DATA: u32 = 1;
    /// A [`CloseEvent`](super::CloseEvent).
    pub const CLOSE: u32 = 2;
    /// A [`ProcEvent`](super::ProcEvent).
    pub const PROC: u32 = 3;
    /// An [`IoEvent`](super::IoEvent).
    pub const IO: u32 = 4;
    /// A [`PathEvent`](super::PathEvent).
    pub const PATH: u32 = 5;
}

/// Bits of [`DataHeader::flags`].
pub mod flag {
    /// The traced process sent these bytes (else it received them).
    pub const EGRESS: u32 = 1 << 0;
    /// Plaintext taken from a TLS library call rather than a socket syscall.
    pub const TLS: u32 = 1 << 1;
    /// `tuple` holds the connection's addresses (learnt from its handshake).
    pub const TUPLE_KNOWN: u32 = 1 << 2;
    /// The socket completed a handshake as the connecting side.
    pub const ROLE_CLIENT: u32 = 1 << 3;
    /// The socket completed a handshake as the accepting side.
    pub const ROLE_SERVER: u32 = 1 << 4;
    /// Shift of the [`Probe`](super::Probe) id that produced the record.
    pub const PROBE_SHIFT: u32 = 16;
}

/// Which probe produced a record: indexes the per-CPU statistics map.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    Read = 0,
    Write = 1,
    Readv = 2,
    Writev = 3,
    Recvfrom = 4,
    Sendto = 5,
    Recvmsg = 6,
    Sendmsg = 7,
    Sendfile = 8,
    SockState = 9,
    Process = 10,
    SslRead = 11,
    SslWrite = 12,
    FileIo = 13,
    SchedSwitch = 14,
    Open = 15,
}

impl Probe {
    /// Number of probes, the length of the statistics map.
    pub const COUNT: u32 = 16;
    /// All probes, in id order.
    pub const ALL: [Probe; Self::COUNT as usize] = [
        Probe::Read,
        Probe::Write,
        Probe::Readv,
        Probe::Writev,
        Probe::Recvfrom,
        Probe::Sendto,
        Probe::Recvmsg,
        Probe::Sendmsg,
        Probe::Sendfile,
        Probe::SockState,
        Probe::Process,
        Probe::SslRead,
        Probe::SslWrite,
        Probe::FileIo,
        Probe::SchedSwitch,
        Probe::Open,
    ];

    /// Stable lower-case name, used in metrics and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Probe::Read => "read",
            Probe::Write => "write",
            Probe::Readv => "readv",
            Probe::Writev => "writev",
            Probe::Recvfrom => "recvfrom",
            Probe::Sendto => "sendto",
            Probe::Recvmsg => "recvmsg",
            Probe::Sendmsg => "sendmsg",
            Probe::Sendfile => "sendfile",
            Probe::SockState => "sock_state",
            Probe::Process => "process",
            Probe::SslRead => "ssl_read",
            Probe::SslWrite => "ssl_write",
            Probe::FileIo => "file_io",
            Probe::SchedSwitch => "sched_switch",
            Probe::Open => "open",
        }
    }

    pub const fn from_id(id: u32) -> Option<Probe> {
        if id < Self::COUNT {
            Some(Self::ALL[id as usize])
        } else {
            None
        }
    }
}

/// A TCP connection as its own socket sees it: `s*` is the local end.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tuple {
    /// Local address; IPv4 uses the first four bytes.
    pub saddr: [u8; 16],
    /// Peer address; IPv4 uses the first four bytes.
    pub daddr: [u8; 16],
    /// Local port, host byte order.
    pub sport: u16,
    /// Peer port, host byte order.
    pub dport: u16,
    /// `AF_INET` (2) or `AF_INET6` (10); 0 when unknown.
    pub family: u16,
    pub _pad: u16,
}

/// Trace context the probes decided themselves (traceparent injection): the
/// span the agent must report for a request, so that what went on the wire
/// and what is exported agree.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceCtx {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_id: [u8; 8],
    /// W3C trace flags.
    pub flags: u8,
    /// [`ctx`] bits.
    pub has: u8,
    pub _pad: [u8; 6],
}

/// Bits of [`TraceCtx::has`].
pub mod ctx {
    /// The context is set.
    pub const SET: u8 = 1;
    /// `parent_id` is set.
    pub const PARENT: u8 = 2;
    /// The request's head began in an earlier read on the socket: the
    /// context is that request's, decided once its head was all read.
    pub const CONTINUED: u8 = 4;
}

/// Header of a [`kind::DATA`] record: one socket transfer (or one TLS call) of
/// a traced thread. `captured` payload bytes follow it in the record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataHeader {
    pub kind: u32,
    /// [`flag`] bits, with the producing probe id above [`flag::PROBE_SHIFT`].
    pub flags: u32,
    /// `bpf_ktime_get_ns` when the call began.
    pub ts_enter_ns: u64,
    /// `bpf_ktime_get_ns` when the call returned.
    pub ts_exit_ns: u64,
    /// Kernel address of the `struct sock`: the connection's identity while it lives.
    pub sock: u64,
    /// Bytes the call transferred; may exceed `captured`.
    pub len: u64,
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    /// Payload bytes that follow this header (`<= MAX_CAPTURE`, `<= len`).
    pub captured: u32,
    pub tuple: Tuple,
    /// For a request the probes started a span for (a server request while
    /// injection is on, an injected client request): that span.
    pub ctx: TraceCtx,
    /// Records of this socket the ring buffer had no room for so far
    /// (wrapping). A change between two records of a connection means bytes
    /// between them are missing: the agent drops what it was assembling and
    /// resynchronises at the next message start.
    pub lost: u32,
    pub _pad: u32,
}

/// A TCP connection left `ESTABLISHED` (`newstate` is its next state) or closed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CloseEvent {
    pub kind: u32,
    pub oldstate: u16,
    pub newstate: u16,
    pub ts_ns: u64,
    pub sock: u64,
    pub tuple: Tuple,
}

/// What happened to a process.
pub mod proc_op {
    pub const EXEC: u32 = 1;
    pub const EXIT: u32 = 2;
}

/// A traced process exec'd or exited; lets the agent refresh or drop what it
/// knows of the pid before the pid is reused.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcEvent {
    pub kind: u32,
    pub op: u32,
    pub ts_ns: u64,
    pub pid: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
}

/// What an [`IoEvent`] timed.
pub mod io_op {
    pub const READ: u32 = 1;
    pub const WRITE: u32 = 2;
    pub const FSYNC: u32 = 3;
    /// The thread slept (blocked) off the CPU.
    pub const OFF_CPU: u32 = 4;
    /// The thread was runnable but waited for a CPU (preempted).
    pub const RUNQUEUE: u32 = 5;
}

/// A slow blocking operation of a thread that is serving a request: file
/// I/O (not sockets) or time off the CPU, above `Config::io_threshold_ns`.
/// Explains the time inside a server span that no child span covers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoEvent {
    pub kind: u32,
    /// One of [`io_op`].
    pub op: u32,
    pub ts_start_ns: u64,
    pub ts_end_ns: u64,
    pub pid: u32,
    pub tid: u32,
    /// The file's descriptor (-1 for off-CPU time).
    pub fd: i32,
    pub _pad: u32,
    /// Bytes read or written (0 for the others).
    pub bytes: u64,
}

/// Bytes of a path kept by a [`PathEvent`].
pub const PATH_LEN: usize = 256;

/// The name a serving thread opened a file by: kept in the kernel under
/// the new fd and sent just ahead of a slow [`IoEvent`] on that fd, so the
/// I/O is named even when the file is closed before the agent could look.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathEvent {
    pub kind: u32,
    pub fd: i32,
    pub pid: u32,
    /// Bytes of `path` used, including the terminating NUL.
    pub len: u32,
    /// As passed to `openat` (may be relative to the working directory).
    pub path: [u8; PATH_LEN],
}

/// Which processes the probes report on.
pub mod mode {
    /// Nothing is traced.
    pub const OFF: u32 = 0;
    /// Every process except the agent itself and those in `EXCLUDED_PIDS`.
    pub const ALL: u32 = 1;
    /// Only processes whose tgid is in `TRACED_PIDS` or whose cgroup is in
    /// `TRACED_CGROUPS`; children of traced processes are added at fork.
    pub const ALLOWLIST: u32 = 2;
}

/// Value of the single-entry `CONFIG` array map, written by the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// One of [`mode`].
    pub mode: u32,
    /// The agent's own tgid, never traced.
    pub agent_tgid: u32,
    /// Offset of `child_pid` in this kernel's `sched_process_fork` record.
    pub fork_child_pid_offset: u32,
    /// Non-zero: report slow file I/O and off-CPU time of serving threads.
    pub gaps: u32,
    /// Shortest file I/O or off-CPU wait reported as an [`IoEvent`].
    pub io_threshold_ns: u64,
    /// Non-zero: insert `traceparent` into outgoing plaintext HTTP/1 requests.
    pub inject: u32,
    /// Non-zero once the allowlist has held a cgroup: only then do untraced
    /// processes pay the cgroup id and its lookup as well.
    pub by_cgroup: u32,
    /// Head sampling of traces the probes start: sampled when the low 56
    /// bits of the trace id reach this (0: always; above 2^56: never).
    pub sample_threshold: u64,
}

/// Length of the statistics map: one slot per probe and counter.
pub const STATS_LEN: u32 = Probe::COUNT * stat::COUNT;

/// Counters kept per probe in the per-CPU `STATS` array, at
/// `probe as u32 * stat::COUNT + stat::X`.
pub mod stat {
    /// Records written to the ring buffer.
    pub const EMITTED: u32 = 0;
    /// Records lost because the ring buffer was full.
    pub const LOST: u32 = 1;
    /// Payload reads from user memory that failed (record sent without payload).
    pub const READ_FAILED: u32 = 2;
    pub const COUNT: u32 = 3;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] integers and byte arrays with no padding
    // (pinned by the layout tests), so every bit pattern is valid.
    unsafe impl aya::Pod for super::Config {}
}

/// Copies a `T` out of the front of `bytes`, whatever their alignment.
/// `None` if `bytes` is too short.
pub fn read_record<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < core::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: length checked above; T is one of this crate's plain-data
    // records, valid for any bit pattern; read_unaligned copes with alignment.
    Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// The bytes of a record, as the kernel writes them.
pub fn record_bytes<T: Copy>(value: &T) -> &[u8] {
    // SAFETY: T is plain data without padding (see the layout tests), so all
    // of its bytes are initialised.
    unsafe {
        core::slice::from_raw_parts((value as *const T).cast::<u8>(), core::mem::size_of::<T>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    fn round_trip<T: Copy + PartialEq + core::fmt::Debug>(value: T) {
        let bytes = record_bytes(&value);
        assert_eq!(bytes.len(), size_of::<T>());
        let back: T = read_record(bytes).expect("long enough");
        assert_eq!(back, value);
        // Unaligned source, as records sit in the ring buffer after others.
        let mut shifted = [0u8; 512];
        shifted[1..1 + bytes.len()].copy_from_slice(bytes);
        assert_eq!(read_record::<T>(&shifted[1..]).expect("long enough"), value);
        assert!(read_record::<T>(&bytes[..bytes.len() - 1]).is_none());
    }

    fn tuple() -> Tuple {
        Tuple {
            saddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            daddr: [0xfe, 0x80, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14],
            sport: 8080,
            dport: 54321,
            family: 10,
            _pad: 0,
        }
    }

    #[test]
    fn tuple_layout_and_round_trip() {
        assert_eq!(size_of::<Tuple>(), 16 + 16 + 2 + 2 + 2 + 2);
        assert_eq!(offset_of!(Tuple, sport), 32);
        assert_eq!(offset_of!(Tuple, family), 36);
        round_trip(tuple());
    }

    #[test]
    fn data_header_layout_and_round_trip() {
        assert_eq!(offset_of!(DataHeader, flags), 4);
        assert_eq!(offset_of!(DataHeader, ts_enter_ns), 8);
        assert_eq!(offset_of!(DataHeader, sock), 24);
        assert_eq!(offset_of!(DataHeader, pid), 40);
        assert_eq!(offset_of!(DataHeader, captured), 52);
        assert_eq!(offset_of!(DataHeader, tuple), 56);
        assert_eq!(offset_of!(DataHeader, ctx), 96);
        assert_eq!(size_of::<TraceCtx>(), 40);
        assert_eq!(offset_of!(DataHeader, lost), 136);
        assert_eq!(size_of::<DataHeader>(), 96 + size_of::<TraceCtx>() + 8);
        round_trip(DataHeader {
            kind: kind::DATA,
            flags: flag::EGRESS | flag::TUPLE_KNOWN | ((Probe::Sendto as u32) << flag::PROBE_SHIFT),
            ts_enter_ns: 1_000,
            ts_exit_ns: 2_000,
            sock: 0xffff_8880_1234_5678,
            len: 1 << 33,
            pid: 4242,
            tid: 4243,
            fd: -1,
            captured: MAX_CAPTURE as u32,
            tuple: tuple(),
            ctx: TraceCtx {
                trace_id: [0xab; 16],
                span_id: [0xcd; 8],
                parent_id: [0xef; 8],
                flags: 1,
                has: ctx::SET | ctx::PARENT,
                _pad: [0; 6],
            },
            lost: 7,
            _pad: 0,
        });
    }

    #[test]
    fn close_event_layout_and_round_trip() {
        assert_eq!(offset_of!(CloseEvent, ts_ns), 8);
        assert_eq!(offset_of!(CloseEvent, sock), 16);
        assert_eq!(size_of::<CloseEvent>(), 24 + size_of::<Tuple>());
        round_trip(CloseEvent {
            kind: kind::CLOSE,
            oldstate: 1,
            newstate: 4,
            ts_ns: 99,
            sock: 7,
            tuple: tuple(),
        });
    }

    #[test]
    fn proc_event_layout_and_round_trip() {
        assert_eq!(offset_of!(ProcEvent, pid), 16);
        assert_eq!(offset_of!(ProcEvent, comm), 24);
        assert_eq!(size_of::<ProcEvent>(), 24 + COMM_LEN);
        round_trip(ProcEvent {
            kind: kind::PROC,
            op: proc_op::EXIT,
            ts_ns: 5,
            pid: 1,
            _pad: 0,
            comm: *b"gunicorn\0\0\0\0\0\0\0\0",
        });
    }

    #[test]
    fn io_event_layout_and_round_trip() {
        assert_eq!(offset_of!(IoEvent, ts_start_ns), 8);
        assert_eq!(offset_of!(IoEvent, pid), 24);
        assert_eq!(offset_of!(IoEvent, bytes), 40);
        assert_eq!(size_of::<IoEvent>(), 48);
        round_trip(IoEvent {
            kind: kind::IO,
            op: io_op::WRITE,
            ts_start_ns: 10,
            ts_end_ns: 400_000_010,
            pid: 5,
            tid: 6,
            fd: 3,
            _pad: 0,
            bytes: 42,
        });
    }

    #[test]
    fn path_event_layout_and_round_trip() {
        assert_eq!(offset_of!(PathEvent, path), 16);
        assert_eq!(size_of::<PathEvent>(), 16 + PATH_LEN);
        let mut path = [0u8; PATH_LEN];
        path[..9].copy_from_slice(b"/var/log\0");
        round_trip(PathEvent {
            kind: kind::PATH,
            fd: 9,
            pid: 3,
            len: 9,
            path,
        });
    }

    #[test]
    fn config_layout_and_round_trip() {
        assert_eq!(size_of::<Config>(), 40);
        assert_eq!(offset_of!(Config, io_threshold_ns), 16);
        assert_eq!(offset_of!(Config, by_cgroup), 28);
        assert_eq!(offset_of!(Config, sample_threshold), 32);
        round_trip(Config {
            mode: mode::ALLOWLIST,
            agent_tgid: 77,
            fork_child_pid_offset: 20,
            gaps: 1,
            io_threshold_ns: 1_000_000,
            inject: 1,
            by_cgroup: 1,
            sample_threshold: 1 << 55,
        });
    }

    #[test]
    fn probe_ids_are_dense_and_named() {
        for (i, p) in Probe::ALL.iter().enumerate() {
            assert_eq!(*p as u32, i as u32);
            assert_eq!(Probe::from_id(i as u32), Some(*p));
            assert!(!p.name().is_empty());
        }
        assert_eq!(Probe::from_id(Probe::COUNT), None);
    }
}
