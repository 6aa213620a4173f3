//! Ring buffer records → owned events.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Bytes, BytesMut};
use seam_common::{
    COMM_LEN, CloseEvent, DataHeader, IoEvent, PATH_LEN, PathEvent, Probe, ProcEvent, Tuple, flag,
    io_op, kind, proc_op, read_record,
};

use crate::{
    discover::sockets::{Endpoints, canonical},
    protocol::{Direction, Role, Timing},
};

const TCP_ESTABLISHED: u16 = 1;
const TCP_FIN_WAIT1: u16 = 4;
const TCP_CLOSE: u16 = 7;

/// One transfer of a traced thread on a TCP connection.
#[derive(Clone, Debug)]
pub struct DataEvent {
    /// Kernel socket address: the connection's identity while it lives.
    pub sock: u64,
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    pub direction: Direction,
    /// Plaintext from a TLS library rather than the socket.
    pub tls: bool,
    /// Side of the handshake, when the probes saw it.
    pub role: Option<Role>,
    /// Addresses, when the probes saw the handshake.
    pub endpoints: Option<Endpoints>,
    pub timing: Timing,
    /// Bytes transferred; `payload` holds the first of them.
    pub len: u64,
    pub payload: Bytes,
    pub probe: Option<Probe>,
    /// The span the probes decided for a request that starts in this
    /// transfer (traceparent injection).
    pub kernel_ctx: Option<KernelCtx>,
    /// The socket's count of records lost to a full ring buffer when this
    /// one was written (see `seam_common::DataHeader::lost`).
    pub lost: u32,
}

/// A span the probes decided (see `seam_common::TraceCtx`): its ids went on
/// the wire, so the exported span must carry them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelCtx {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_id: Option<[u8; 8]>,
    pub flags: u8,
    /// The request began in an earlier read: its head was split, and the
    /// probes decided its span with the read that finished the head.
    pub continued: bool,
}

impl KernelCtx {
    fn from_record(c: &seam_common::TraceCtx) -> Option<Self> {
        if c.has & seam_common::ctx::SET == 0 || c.trace_id == [0; 16] || c.span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id: c.trace_id,
            span_id: c.span_id,
            parent_id: (c.has & seam_common::ctx::PARENT != 0 && c.parent_id != [0; 8])
                .then_some(c.parent_id),
            flags: c.flags,
            continued: c.has & seam_common::ctx::CONTINUED != 0,
        })
    }
}

/// A connection left ESTABLISHED or closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseInfo {
    pub sock: u64,
    pub ts_ns: u64,
    /// The socket is gone (TCP_CLOSE).
    pub closed: bool,
    /// This side sent its FIN: it will send nothing more.
    pub sent_fin: bool,
}

/// What a serving thread waited on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoKind {
    FileRead,
    FileWrite,
    FileSync,
    /// Blocked off the CPU.
    OffCpu,
    /// Runnable, waiting for a CPU.
    RunQueue,
}

/// A slow wait of a serving thread (see `seam_common::IoEvent`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoInfo {
    pub kind: IoKind,
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug)]
pub enum Event {
    Data(DataEvent),
    Close(CloseInfo),
    Exec {
        pid: u32,
        comm: String,
    },
    Exit {
        pid: u32,
    },
    Io(IoInfo),
    /// A serving thread opened `path` as `fd`.
    Opened {
        pid: u32,
        fd: i32,
        path: String,
    },
}

fn endpoints(t: &Tuple) -> Option<Endpoints> {
    let (local, peer) = match t.family {
        2 => (
            IpAddr::V4(Ipv4Addr::new(
                t.saddr[0], t.saddr[1], t.saddr[2], t.saddr[3],
            )),
            IpAddr::V4(Ipv4Addr::new(
                t.daddr[0], t.daddr[1], t.daddr[2], t.daddr[3],
            )),
        ),
        10 => (
            canonical(IpAddr::V6(Ipv6Addr::from(t.saddr))),
            canonical(IpAddr::V6(Ipv6Addr::from(t.daddr))),
        ),
        _ => return None,
    };
    Some(Endpoints {
        local: SocketAddr::new(local, t.sport),
        peer: SocketAddr::new(peer, t.dport),
    })
}

fn comm(raw: &[u8; COMM_LEN]) -> String {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(COMM_LEN);
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Decodes one record. Payload bytes are copied into `arena`, so a batch of
/// events shares a few allocations. `None` for a malformed record.
pub fn decode(record: &[u8], arena: &mut BytesMut) -> Option<Event> {
    let kind: u32 = read_record(record)?;
    match kind {
        kind::DATA => {
            let h: DataHeader = read_record(record)?;
            let start = std::mem::size_of::<DataHeader>();
            let payload = record.get(start..start + h.captured as usize)?;
            if arena.capacity() - arena.len() < payload.len() {
                arena.reserve(payload.len().max(64 * 1024));
            }
            arena.extend_from_slice(payload);
            let payload = arena.split().freeze();
            let role = if h.flags & flag::ROLE_CLIENT != 0 {
                Some(Role::Client)
            } else if h.flags & flag::ROLE_SERVER != 0 {
                Some(Role::Server)
            } else {
                None
            };
            Some(Event::Data(DataEvent {
                sock: h.sock,
                pid: h.pid,
                tid: h.tid,
                fd: h.fd,
                direction: if h.flags & flag::EGRESS != 0 {
                    Direction::Egress
                } else {
                    Direction::Ingress
                },
                tls: h.flags & flag::TLS != 0,
                role,
                endpoints: if h.flags & flag::TUPLE_KNOWN != 0 {
                    endpoints(&h.tuple)
                } else {
                    None
                },
                timing: Timing {
                    enter_ns: h.ts_enter_ns,
                    exit_ns: h.ts_exit_ns,
                },
                len: h.len,
                payload,
                probe: Probe::from_id(h.flags >> flag::PROBE_SHIFT),
                kernel_ctx: KernelCtx::from_record(&h.ctx),
                lost: h.lost,
            }))
        }
        kind::CLOSE => {
            let c: CloseEvent = read_record(record)?;
            Some(Event::Close(CloseInfo {
                sock: c.sock,
                ts_ns: c.ts_ns,
                closed: c.newstate == TCP_CLOSE,
                sent_fin: c.oldstate == TCP_ESTABLISHED && c.newstate == TCP_FIN_WAIT1,
            }))
        }
        kind::PROC => {
            let p: ProcEvent = read_record(record)?;
            match p.op {
                proc_op::EXEC => Some(Event::Exec {
                    pid: p.pid,
                    comm: comm(&p.comm),
                }),
                proc_op::EXIT => Some(Event::Exit { pid: p.pid }),
                _ => None,
            }
        }
        kind::IO => {
            let e: IoEvent = read_record(record)?;
            let kind = match e.op {
                io_op::READ => IoKind::FileRead,
                io_op::WRITE => IoKind::FileWrite,
                io_op::FSYNC => IoKind::FileSync,
                io_op::OFF_CPU => IoKind::OffCpu,
                io_op::RUNQUEUE => IoKind::RunQueue,
                _ => return None,
            };
            Some(Event::Io(IoInfo {
                kind,
                pid: e.pid,
                tid: e.tid,
                fd: e.fd,
                start_ns: e.ts_start_ns,
                end_ns: e.ts_end_ns,
                bytes: e.bytes,
            }))
        }
        kind::PATH => {
            let e: PathEvent = read_record(record)?;
            let used = (e.len as usize).min(PATH_LEN);
            let bytes = &e.path[..used];
            let end = bytes.iter().position(|b| *b == 0).unwrap_or(used);
            Some(Event::Opened {
                pid: e.pid,
                fd: e.fd,
                path: String::from_utf8_lossy(&bytes[..end]).into_owned(),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seam_common::record_bytes;

    #[test]
    fn decodes_data_with_payload_and_v4_tuple() {
        let mut tuple = Tuple {
            sport: 8080,
            dport: 40000,
            family: 2,
            ..Default::default()
        };
        tuple.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        tuple.daddr[..4].copy_from_slice(&[127, 0, 0, 2]);
        let h = DataHeader {
            kind: kind::DATA,
            flags: flag::EGRESS
                | flag::TUPLE_KNOWN
                | flag::ROLE_SERVER
                | ((Probe::Writev as u32) << flag::PROBE_SHIFT),
            ts_enter_ns: 10,
            ts_exit_ns: 20,
            sock: 0xabc,
            len: 100,
            pid: 1,
            tid: 2,
            fd: 3,
            captured: 4,
            tuple,
            ctx: seam_common::TraceCtx {
                trace_id: [5; 16],
                span_id: [6; 8],
                parent_id: [0; 8],
                flags: 1,
                has: seam_common::ctx::SET,
                _pad: [0; 6],
            },
            lost: 3,
            _pad: 0,
        };
        let mut rec = record_bytes(&h).to_vec();
        rec.extend_from_slice(b"HTTP");
        let mut arena = BytesMut::new();
        let Some(Event::Data(d)) = decode(&rec, &mut arena) else {
            panic!("not data");
        };
        assert_eq!(&d.payload[..], b"HTTP");
        assert_eq!(d.len, 100);
        assert_eq!(d.direction, Direction::Egress);
        assert_eq!(d.role, Some(Role::Server));
        assert_eq!(d.probe, Some(Probe::Writev));
        assert_eq!(d.lost, 3);
        // A context without the PARENT bit is a root.
        assert_eq!(
            d.kernel_ctx,
            Some(KernelCtx {
                trace_id: [5; 16],
                span_id: [6; 8],
                parent_id: None,
                flags: 1,
                continued: false,
            })
        );
        assert_eq!(
            d.endpoints,
            Some(Endpoints {
                local: "127.0.0.1:8080".parse().unwrap(),
                peer: "127.0.0.2:40000".parse().unwrap()
            })
        );
        // A record shorter than its claimed payload is rejected.
        assert!(decode(&rec[..rec.len() - 1], &mut arena).is_none());
    }

    #[test]
    fn decodes_mapped_v6_as_v4_and_unknown_tuple_as_none() {
        let mut tuple = Tuple {
            sport: 80,
            dport: 1234,
            family: 10,
            ..Default::default()
        };
        tuple.saddr = Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped().octets();
        tuple.daddr = "fe80::1".parse::<Ipv6Addr>().unwrap().octets();
        assert_eq!(
            endpoints(&tuple),
            Some(Endpoints {
                local: "10.0.0.1:80".parse().unwrap(),
                peer: "[fe80::1]:1234".parse().unwrap()
            })
        );
        let h = DataHeader {
            kind: kind::DATA,
            tuple,
            ..Default::default()
        };
        let Some(Event::Data(d)) = decode(record_bytes(&h), &mut BytesMut::new()) else {
            panic!("not data");
        };
        assert_eq!(d.endpoints, None);
        assert_eq!(d.direction, Direction::Ingress);
    }

    #[test]
    fn decodes_close_and_process_records() {
        let c = CloseEvent {
            kind: kind::CLOSE,
            oldstate: TCP_ESTABLISHED,
            newstate: TCP_FIN_WAIT1,
            ts_ns: 5,
            sock: 9,
            tuple: Tuple::default(),
        };
        assert_eq!(
            decode(record_bytes(&c), &mut BytesMut::new()).map(|e| format!("{e:?}")),
            Some(format!(
                "{:?}",
                Event::Close(CloseInfo {
                    sock: 9,
                    ts_ns: 5,
                    closed: false,
                    sent_fin: true
                })
            ))
        );
        let p = ProcEvent {
            kind: kind::PROC,
            op: proc_op::EXEC,
            ts_ns: 1,
            pid: 77,
            _pad: 0,
            comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
        };
        match decode(record_bytes(&p), &mut BytesMut::new()) {
            Some(Event::Exec { pid: 77, comm }) => assert_eq!(comm, "curl"),
            other => panic!("{other:?}"),
        }
        let io = IoEvent {
            kind: kind::IO,
            op: io_op::WRITE,
            ts_start_ns: 1,
            ts_end_ns: 400_000_001,
            pid: 3,
            tid: 4,
            fd: 7,
            _pad: 0,
            bytes: 12,
        };
        match decode(record_bytes(&io), &mut BytesMut::new()) {
            Some(Event::Io(i)) => {
                assert_eq!(
                    (i.kind, i.fd, i.bytes, i.end_ns - i.start_ns),
                    (IoKind::FileWrite, 7, 12, 400_000_000)
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(decode(&[9, 0, 0, 0], &mut BytesMut::new()).is_none());
        assert!(decode(&[1, 0], &mut BytesMut::new()).is_none());
    }
}
