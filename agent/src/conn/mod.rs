//! Connection tracking: groups transfers by TCP connection, knows which
//! process and which addresses each connection has, feeds the protocol
//! parser, and tells the stitch stage when requests start and end.
use std::{collections::HashMap, path::PathBuf, sync::Arc};

use crate::{
    FastMap,
    capture::{CloseInfo, DataEvent, Event, IoInfo, IoKind, KernelCtx, Selector},
    discover::k8s::K8sUpdate,
    discover::{
        self,
        process::{ProcessInfo, ProcessTable},
        sockets::{self, Endpoints},
    },
    metrics::{self, Counters},
    protocol::{
        Direction, Exchange, ParseErrors, Parser, ProtoEvent, Request, Role, Timing,
        detect::{self, Detected},
    },
};

/// Identity of one request: its connection (socket) and its order on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestKey {
    pub sock: u64,
    pub seq: u64,
}

/// What every request on a connection shares.
#[derive(Debug)]
pub struct ConnMeta {
    pub sock: u64,
    pub pid: u32,
    pub process: Arc<ProcessInfo>,
    /// The traced process's side of the connection.
    pub role: Role,
    pub endpoints: Option<Endpoints>,
    /// Bytes came from a TLS library (the wire carried https).
    pub tls: bool,
}

/// What the connection stage tells the stitch stage.
#[derive(Debug)]
pub enum Record {
    /// A request's head was read (server) or written (client) by thread `tid`.
    Start {
        key: RequestKey,
        conn: Arc<ConnMeta>,
        tid: u32,
        request: Request,
        timing: Timing,
        /// The span the probes decided for it, when they did.
        kernel_ctx: Option<KernelCtx>,
    },
    /// The request got its final response.
    Done {
        key: RequestKey,
        conn: Arc<ConnMeta>,
        exchange: Exchange,
    },
    /// The request will get no response.
    Abandoned { key: RequestKey },
    /// A process exited: its pid may be reused.
    ProcessGone { pid: u32 },
    /// A slow wait of a thread; `path` names the file for file I/O.
    Io { io: IoInfo, path: Option<String> },
}

/// What is known of a connection's protocol.
#[derive(Debug)]
enum Proto {
    /// No transfer has said yet.
    Undecided,
    Parsed(Box<dyn Parser>),
    /// Ciphertext seen on the socket: nothing here is parsed.
    Opaque,
}

struct Conn {
    pid: u32,
    endpoints: Option<Endpoints>,
    tls: bool,
    proto: Proto,
    /// Set once the first message shows which side this process is.
    meta: Option<Arc<ConnMeta>>,
    last_ns: u64,
    reported_errors: (u64, u64),
    /// The probes' count of this socket's lost records, as of its last transfer.
    lost: u32,
    /// Added to the parser's request numbers: a parser replaced after a loss
    /// starts counting again, and keys must stay unique on the connection.
    seq_base: u64,
    /// Next request number not used yet on this connection (after `seq_base`).
    next_seq: u64,
}

impl Conn {
    /// The stream is taken up again from the next transfer by a parser that
    /// detection picks; it numbers its requests after the old one's.
    fn restart_parser(&mut self) {
        self.proto = Proto::Undecided;
        self.reported_errors = (0, 0);
        self.seq_base = self.next_seq;
    }
}

/// Knobs of the connection stage.
#[derive(Clone, Debug)]
pub struct ConnConfig {
    pub proc_root: PathBuf,
    /// A connection with no traffic for this long is forgotten.
    pub idle_timeout_ns: u64,
    /// `--exe-name` values, matched at each exec.
    pub exe_names: Vec<String>,
}

impl Default for ConnConfig {
    fn default() -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            idle_timeout_ns: 300 * 1_000_000_000,
            exe_names: Vec::new(),
        }
    }
}

/// The connection stage's state.
pub struct ConnTracker {
    config: ConnConfig,
    conns: FastMap<u64, Conn>,
    procs: ProcessTable,
    preexisting: HashMap<(u32, i32), Endpoints>,
    selector: Option<Selector>,
    counters: Arc<Counters>,
    scratch: Vec<ProtoEvent>,
    /// Files serving threads opened, by (pid, fd): names slow I/O on files
    /// closed before /proc could be asked.
    opened: HashMap<(u32, i32), String>,
    traced_cgroups: std::collections::HashSet<u64>,
    sweeps: u64,
    /// Names at exec of processes not read then (not traced, as far as the
    /// filter said when the agent got to the exec): a short-lived process
    /// may have been traced and gone already, and its transfers still name
    /// it by this.
    exec_comms: HashMap<u32, String>,
}

/// Every this many sweeps, processes gone from /proc are forgotten.
const PRUNE_EVERY_SWEEPS: u64 = 30;

/// Remembered file names; the table is cleared when it grows past this.
const MAX_OPENED: usize = 4096;

impl ConnTracker {
    pub fn new(
        config: ConnConfig,
        preexisting: HashMap<(u32, i32), Endpoints>,
        selector: Option<Selector>,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            procs: ProcessTable::new(config.proc_root.clone()),
            config,
            conns: FastMap::default(),
            preexisting,
            selector,
            counters,
            scratch: Vec::new(),
            opened: HashMap::new(),
            traced_cgroups: std::collections::HashSet::new(),
            sweeps: 0,
            exec_comms: HashMap::new(),
        }
    }

    /// Kubernetes metadata for process resources comes from containers in
    /// the cgroup2 hierarchy mounted at `mount`.
    pub fn enable_k8s(&mut self, mount: std::path::PathBuf) {
        let procs = std::mem::replace(
            &mut self.procs,
            ProcessTable::new(self.config.proc_root.clone()),
        );
        self.procs = procs.with_cgroup2_mount(mount);
    }

    /// Applies a change of the traced Kubernetes containers: the kernel
    /// filter and the metadata of their processes.
    pub fn apply_k8s(&mut self, update: K8sUpdate) {
        match update {
            K8sUpdate::Trace { cgroup_id, meta } => {
                if let Some(selector) = self.selector.as_mut()
                    && let Err(e) = selector.trace_cgroup(cgroup_id)
                {
                    tracing::warn!(cgroup_id, error = %e, "could not trace a container");
                }
                tracing::info!(
                    namespace = meta.namespace.as_str(),
                    pod = meta.pod_name.as_str(),
                    container = meta.container_name.as_str(),
                    cgroup_id,
                    "tracing container"
                );
                self.procs.set_container(cgroup_id, meta);
                self.traced_cgroups.insert(cgroup_id);
            }
            K8sUpdate::Untrace { cgroup_id } => {
                if let Some(selector) = self.selector.as_mut() {
                    selector.untrace_cgroup(cgroup_id);
                }
                tracing::info!(cgroup_id, "no longer tracing container");
                self.procs.remove_container(cgroup_id);
                self.traced_cgroups.remove(&cgroup_id);
            }
        }
        // Connections pick up the new process metadata at their next transfer.
        for conn in self.conns.values_mut() {
            conn.meta = None;
        }
    }

    /// Kubernetes containers traced now.
    pub fn traced_cgroups(&self) -> usize {
        self.traced_cgroups.len()
    }

    /// Processes seen carrying traffic (and not yet exited).
    pub fn processes(&self) -> usize {
        self.procs.len()
    }

    /// Connections tracked now.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Handles one event, appending what it completed to `out`.
    pub fn handle(&mut self, event: Event, out: &mut Vec<Record>) {
        match event {
            Event::Data(data) => self.on_data(data, out),
            Event::Close(close) => self.on_close(close, out),
            Event::Exec { pid, comm } => {
                self.procs.forget(pid);
                self.match_exe(pid, &comm);
                // Read it now, while it runs: short-lived clients are gone
                // by the time their spans are made. Every exec on the host
                // is reported, but only traced processes' exits are: an
                // untraced one would stay in the table for good.
                if self.selector.as_ref().is_none_or(|s| s.may_trace(pid)) {
                    self.exec_comms.remove(&pid);
                    self.procs.get(pid, Some(&comm));
                } else {
                    // The filter forgets a traced process when it exits,
                    // perhaps before the agent read its exec: keep the name.
                    if self.exec_comms.len() >= MAX_OPENED {
                        self.exec_comms.clear();
                    }
                    self.exec_comms.insert(pid, comm);
                }
            }
            Event::Io(io) => self.on_io(io, out),
            Event::Opened { pid, fd, path } => {
                if self.opened.len() >= MAX_OPENED {
                    self.opened.clear();
                }
                let path = if path.starts_with('/') {
                    path
                } else {
                    // Relative to the working directory, read now.
                    let cwd = self.config.proc_root.join(pid.to_string()).join("cwd");
                    match std::fs::read_link(cwd) {
                        Ok(dir) => dir.join(&path).to_string_lossy().into_owned(),
                        Err(_) => path,
                    }
                };
                self.opened.insert((pid, fd), path);
            }
            Event::Exit { pid } => {
                self.procs.forget(pid);
                self.exec_comms.remove(&pid);
                self.opened.retain(|(p, _), _| *p != pid);
                self.preexisting.retain(|(p, _), _| *p != pid);
                out.push(Record::ProcessGone { pid });
            }
        }
        self.counters.connections_open.store(
            self.conns.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn match_exe(&mut self, pid: u32, comm: &str) {
        if self.config.exe_names.is_empty() {
            return;
        }
        let Some(selector) = self.selector.as_mut() else {
            return;
        };
        let mut names = discover::process_names(&self.config.proc_root, pid);
        names.push(comm.to_string());
        if names.iter().any(|n| self.config.exe_names.contains(n)) {
            if let Err(e) = selector.trace_pid(pid) {
                tracing::warn!(pid, error = %e, "could not start tracing a matching process");
            } else {
                tracing::info!(pid, name = comm, "tracing new process");
            }
        }
    }

    fn on_data(&mut self, ev: DataEvent, out: &mut Vec<Record>) {
        tracing::trace!(
            pid = ev.pid,
            tid = ev.tid,
            fd = ev.fd,
            sock = format_args!("{:x}", ev.sock),
            dir = ?ev.direction,
            tls = ev.tls,
            probe = ev.probe.map(|p| p.name()),
            len = ev.len,
            head = %String::from_utf8_lossy(&ev.payload[..ev.payload.len().min(24)]).escape_debug(),
            "transfer"
        );
        let conn = match self.conns.get_mut(&ev.sock) {
            Some(conn) => conn,
            None => {
                let endpoints = ev
                    .endpoints
                    .or_else(|| self.preexisting.get(&(ev.pid, ev.fd)).copied())
                    .or_else(|| sockets::resolve(&self.config.proc_root, ev.pid, ev.fd));
                if endpoints.is_none() {
                    metrics::inc(&self.counters.tuple_unknown);
                }
                self.conns.entry(ev.sock).or_insert(Conn {
                    pid: ev.pid,
                    endpoints,
                    tls: ev.tls,
                    proto: Proto::Undecided,
                    meta: None,
                    last_ns: ev.timing.exit_ns,
                    reported_errors: (0, 0),
                    lost: ev.lost,
                    seq_base: 0,
                    next_seq: 0,
                })
            }
        };
        if conn.pid != ev.pid {
            // The socket changed hands (fd passing, fork): spans follow the new owner.
            conn.pid = ev.pid;
            conn.meta = None;
        }
        if ev.tls && !conn.tls {
            // The TLS probes see this connection's plaintext: whatever the
            // socket showed so far was ciphertext, so start over from here.
            // What the old parser still waits for is abandoned, and the new
            // one numbers its requests after the old one's.
            let meta = conn_meta(&mut self.procs, &self.exec_comms, ev.sock, conn);
            conn.tls = true;
            if let Proto::Parsed(parser) = &mut conn.proto {
                self.scratch.clear();
                parser.close(&mut self.scratch);
                rebase(&mut self.scratch, conn.seq_base, &mut conn.next_seq);
                if let Some(meta) = meta {
                    Self::forward(&self.counters, &meta, 0, None, &mut self.scratch, out);
                }
            }
            conn.restart_parser();
            conn.meta = None;
        } else if !ev.tls && conn.tls {
            // Ciphertext of a connection whose plaintext we have.
            return;
        }
        conn.last_ns = ev.timing.exit_ns;
        self.scratch.clear();
        if ev.lost != conn.lost {
            // Records of this socket were lost since its previous transfer.
            conn.lost = ev.lost;
            metrics::inc(&self.counters.loss_resyncs);
            let meta = conn_meta(&mut self.procs, &self.exec_comms, ev.sock, conn);
            let replace = match &mut conn.proto {
                Proto::Parsed(parser) => !parser.lost(&mut self.scratch),
                _ => false,
            };
            rebase(&mut self.scratch, conn.seq_base, &mut conn.next_seq);
            if replace {
                conn.restart_parser();
            }
            if let Some(meta) = meta {
                Self::forward(&self.counters, &meta, 0, None, &mut self.scratch, out);
            }
            self.scratch.clear();
        }
        if matches!(conn.proto, Proto::Undecided) {
            match detect::detect(&ev.payload) {
                Detected::Tls if !ev.tls => conn.proto = Proto::Opaque,
                found => {
                    if let Some(parser) = detect::parser_for(found) {
                        conn.proto = Proto::Parsed(parser);
                    }
                }
            }
        }
        let Proto::Parsed(parser) = &mut conn.proto else {
            return;
        };
        parser.feed(
            ev.direction,
            &ev.payload,
            ev.len,
            ev.timing,
            &mut self.scratch,
        );
        let errors: ParseErrors = parser.errors();
        let (d0, o0) = conn.reported_errors;
        metrics::add(&self.counters.stream_desyncs, errors.desyncs - d0);
        metrics::add(
            &self.counters.orphan_responses,
            errors.orphan_responses - o0,
        );
        conn.reported_errors = (errors.desyncs, errors.orphan_responses);
        let Some(meta) = conn_meta(&mut self.procs, &self.exec_comms, ev.sock, conn) else {
            return;
        };
        rebase(&mut self.scratch, conn.seq_base, &mut conn.next_seq);
        let kernel = ev.kernel_ctx.map(|c| (ev.timing, c));
        Self::forward(
            &self.counters,
            &meta,
            ev.tid,
            kernel,
            &mut self.scratch,
            out,
        );
    }

    /// `kernel`: the probes' span for the first request that starts at
    /// that transfer or, for a head split over reads, is finished by it.
    fn forward(
        counters: &Counters,
        meta: &Arc<ConnMeta>,
        tid: u32,
        mut kernel: Option<(Timing, KernelCtx)>,
        events: &mut Vec<ProtoEvent>,
        out: &mut Vec<Record>,
    ) {
        for e in events.drain(..) {
            let key = |seq| RequestKey {
                sock: meta.sock,
                seq,
            };
            match e {
                ProtoEvent::Start {
                    seq,
                    request,
                    start,
                } => {
                    metrics::inc(&counters.requests_seen);
                    let kernel_ctx = kernel
                        .take_if(|(t, k)| *t == start || (k.continued && start.exit_ns < t.exit_ns))
                        .map(|(_, c)| c);
                    out.push(Record::Start {
                        key: key(seq),
                        conn: meta.clone(),
                        tid,
                        request,
                        timing: start,
                        kernel_ctx,
                    });
                }
                ProtoEvent::Done { seq, exchange } => {
                    metrics::inc(&counters.exchanges);
                    out.push(Record::Done {
                        key: key(seq),
                        conn: meta.clone(),
                        exchange,
                    });
                }
                ProtoEvent::Abandoned { seq } => {
                    metrics::inc(&counters.requests_abandoned);
                    out.push(Record::Abandoned { key: key(seq) });
                }
            }
        }
    }

    fn on_io(&mut self, io: IoInfo, out: &mut Vec<Record>) {
        let path = match io.kind {
            IoKind::OffCpu | IoKind::RunQueue => None,
            IoKind::FileRead | IoKind::FileWrite | IoKind::FileSync => {
                if let Some(path) = self.opened.get(&(io.pid, io.fd)) {
                    out.push(Record::Io {
                        io,
                        path: Some(path.clone()),
                    });
                    return;
                }
                let link = self
                    .config
                    .proc_root
                    .join(io.pid.to_string())
                    .join("fd")
                    .join(io.fd.to_string());
                match std::fs::read_link(link) {
                    // Files, FIFOs and devices with a path; not pipes,
                    // sockets, eventfds or terminals.
                    Ok(p) if p.is_absolute() && !p.starts_with("/dev/pts") => {
                        Some(p.to_string_lossy().into_owned())
                    }
                    Ok(_) => return,
                    // Closed already: still a wait on a file.
                    Err(_) => Some(format!("fd {}", io.fd)),
                }
            }
        };
        out.push(Record::Io { io, path });
    }

    fn on_close(&mut self, close: CloseInfo, out: &mut Vec<Record>) {
        if !(close.closed || close.sent_fin) {
            return;
        }
        let Some(conn) = self.conns.get_mut(&close.sock) else {
            return;
        };
        self.scratch.clear();
        let meta = conn_meta(&mut self.procs, &self.exec_comms, close.sock, conn);
        if let Proto::Parsed(parser) = &mut conn.proto {
            parser.close(&mut self.scratch);
        }
        rebase(&mut self.scratch, conn.seq_base, &mut conn.next_seq);
        if let Some(meta) = meta {
            Self::forward(&self.counters, &meta, 0, None, &mut self.scratch, out);
        }
        if close.closed {
            self.conns.remove(&close.sock);
        }
    }

    /// Forgets connections idle since before `now_ns - idle_timeout`.
    pub fn sweep(&mut self, now_ns: u64, out: &mut Vec<Record>) {
        self.sweeps += 1;
        if self.sweeps.is_multiple_of(PRUNE_EVERY_SWEEPS) {
            let pruned = self.procs.prune_exited();
            if pruned > 0 {
                tracing::debug!(pruned, "forgot processes whose exit was not seen");
            }
        }
        let cutoff = now_ns.saturating_sub(self.config.idle_timeout_ns);
        let idle: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.last_ns < cutoff)
            .map(|(s, _)| *s)
            .collect();
        for sock in idle {
            if let Some(mut conn) = self.conns.remove(&sock) {
                self.scratch.clear();
                let meta = conn_meta(&mut self.procs, &self.exec_comms, sock, &mut conn);
                if let Proto::Parsed(parser) = &mut conn.proto {
                    parser.close(&mut self.scratch);
                }
                rebase(&mut self.scratch, conn.seq_base, &mut conn.next_seq);
                if let Some(meta) = meta {
                    Self::forward(&self.counters, &meta, 0, None, &mut self.scratch, out);
                }
            }
        }
    }
}

/// The connection's shared metadata, made once its parser knows which side
/// sends requests, and made again after the owner or the process metadata
/// changed (so that outcomes of requests already started are never lost).
fn conn_meta(
    procs: &mut ProcessTable,
    exec_comms: &HashMap<u32, String>,
    sock: u64,
    conn: &mut Conn,
) -> Option<Arc<ConnMeta>> {
    if conn.meta.is_none() {
        let Proto::Parsed(parser) = &conn.proto else {
            return None;
        };
        let role = if parser.requests_direction()? == Direction::Ingress {
            Role::Server
        } else {
            Role::Client
        };
        conn.meta = Some(Arc::new(ConnMeta {
            sock,
            pid: conn.pid,
            process: procs.get(conn.pid, exec_comms.get(&conn.pid).map(String::as_str)),
            role,
            endpoints: conn.endpoints,
            tls: conn.tls,
        }));
    }
    conn.meta.clone()
}

/// Shifts a parser's request numbers by `base` and notes the next free one.
fn rebase(events: &mut [ProtoEvent], base: u64, next: &mut u64) {
    for e in events {
        let seq = match e {
            ProtoEvent::Start { seq, .. }
            | ProtoEvent::Done { seq, .. }
            | ProtoEvent::Abandoned { seq } => seq,
        };
        *seq += base;
        *next = (*next).max(*seq + 1);
    }
}

pub mod reorder;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::Bytes;

    /// A plaintext transfer on a connection 127.0.0.1:8000 ↔ 127.0.0.1:40000.
    pub(crate) fn data(sock: u64, pid: u32, dir: Direction, bytes: &'static [u8], t: u64) -> Event {
        Event::Data(DataEvent {
            sock,
            pid,
            tid: pid + 1,
            fd: 5,
            direction: dir,
            tls: false,
            role: None,
            endpoints: Some(Endpoints {
                local: "127.0.0.1:8000".parse().unwrap(),
                peer: "127.0.0.1:40000".parse().unwrap(),
            }),
            timing: Timing {
                enter_ns: t,
                exit_ns: t + 1,
            },
            len: bytes.len() as u64,
            payload: Bytes::from_static(bytes),
            probe: None,
            kernel_ctx: None,
            lost: 0,
        })
    }

    fn tracker() -> ConnTracker {
        ConnTracker::new(
            ConnConfig {
                proc_root: "/nonexistent".into(),
                ..Default::default()
            },
            HashMap::new(),
            None,
            Arc::new(Counters::default()),
        )
    }

    fn with_ctx(event: Event, span: u8, continued: bool) -> Event {
        let Event::Data(mut d) = event else {
            unreachable!()
        };
        d.kernel_ctx = Some(KernelCtx {
            trace_id: [9; 16],
            span_id: [span; 8],
            parent_id: None,
            flags: 1,
            continued,
        });
        Event::Data(d)
    }

    fn start_ctxs(out: &[Record]) -> Vec<Option<u8>> {
        out.iter()
            .filter_map(|r| match r {
                Record::Start { kernel_ctx, .. } => Some(kernel_ctx.map(|k| k.span_id[0])),
                _ => None,
            })
            .collect()
    }

    /// The probes decide a split head's span with the read that finishes
    /// it: that span is the request's, though the request began earlier.
    #[test]
    fn probe_span_of_a_split_head_goes_to_its_request() {
        let mut t = tracker();
        let mut out = Vec::new();
        let first = data(1, 100, Direction::Ingress, b"GET /a HTTP/1.1\r\nHo", 10);
        t.handle(first, &mut out);
        assert!(out.is_empty());
        let rest = data(1, 100, Direction::Ingress, b"st: x\r\n\r\n", 20);
        t.handle(with_ctx(rest, 4, true), &mut out);
        assert_eq!(start_ctxs(&out), vec![Some(4)]);

        // Without the mark, a span decided at a read that did not start the
        // request is not taken for it.
        let mut t = tracker();
        let mut out = Vec::new();
        let first = data(1, 100, Direction::Ingress, b"GET /a HTTP/1.1\r\nHo", 10);
        t.handle(first, &mut out);
        let rest = data(1, 100, Direction::Ingress, b"st: x\r\n\r\n", 20);
        t.handle(with_ctx(rest, 4, false), &mut out);
        assert_eq!(start_ctxs(&out), vec![None]);
    }

    /// Two requests in one read: the probes decided a span for the first.
    #[test]
    fn probe_span_goes_to_one_request_only() {
        let mut t = tracker();
        let mut out = Vec::new();
        let both = data(
            1,
            100,
            Direction::Ingress,
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
            10,
        );
        t.handle(with_ctx(both, 5, false), &mut out);
        assert_eq!(start_ctxs(&out), vec![Some(5), None]);
    }

    #[test]
    fn server_request_start_and_done() {
        let mut t = tracker();
        let mut out = Vec::new();
        t.handle(
            data(
                1,
                100,
                Direction::Ingress,
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                10,
            ),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        let Record::Start { conn, tid, .. } = &out[0] else {
            panic!("{:?}", out[0]);
        };
        assert_eq!(conn.role, Role::Server);
        assert_eq!(*tid, 101);
        t.handle(
            data(
                1,
                100,
                Direction::Egress,
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                20,
            ),
            &mut out,
        );
        assert!(matches!(
            out[1],
            Record::Done {
                key: RequestKey { sock: 1, seq: 0 },
                ..
            }
        ));
        t.handle(
            Event::Close(CloseInfo {
                sock: 1,
                ts_ns: 30,
                closed: true,
                sent_fin: false,
            }),
            &mut out,
        );
        assert!(t.is_empty());
        assert_eq!(
            t.counters
                .exchanges
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn close_abandons_and_sweep_forgets_idle() {
        let mut t = tracker();
        let mut out = Vec::new();
        t.handle(
            data(
                1,
                100,
                Direction::Egress,
                b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
                10,
            ),
            &mut out,
        );
        t.handle(
            data(
                2,
                100,
                Direction::Egress,
                b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n",
                10,
            ),
            &mut out,
        );
        t.handle(
            Event::Close(CloseInfo {
                sock: 1,
                ts_ns: 30,
                closed: true,
                sent_fin: false,
            }),
            &mut out,
        );
        assert!(matches!(
            out[2],
            Record::Abandoned {
                key: RequestKey { sock: 1, seq: 0 }
            }
        ));
        t.sweep(10 + t.config.idle_timeout_ns + 100, &mut out);
        assert!(matches!(
            out[3],
            Record::Abandoned {
                key: RequestKey { sock: 2, seq: 0 }
            }
        ));
        assert!(t.is_empty());
    }

    #[test]
    fn unknown_bytes_produce_nothing_and_redis_is_recognised() {
        let mut t = tracker();
        let mut out = Vec::new();
        t.handle(
            data(1, 100, Direction::Egress, b"\x00\x01binary\xff", 10),
            &mut out,
        );
        t.handle(
            data(1, 100, Direction::Ingress, b"\x17\x03\x03junk", 11),
            &mut out,
        );
        assert!(out.is_empty());
        t.handle(
            data(2, 100, Direction::Egress, b"*1\r\n$4\r\nPING\r\n", 12),
            &mut out,
        );
        t.handle(data(2, 100, Direction::Ingress, b"+PONG\r\n", 13), &mut out);
        assert_eq!(out.len(), 2);
        assert!(
            matches!(&out[1], Record::Done { exchange: crate::protocol::Exchange::Redis(x), .. } if x.command.name == "PING")
        );
    }

    /// `event` written when its socket had lost `lost` records.
    fn lost_before(event: Event, lost: u32) -> Event {
        match event {
            Event::Data(mut d) => {
                d.lost = lost;
                Event::Data(d)
            }
            other => other,
        }
    }

    fn summary(out: &[Record]) -> Vec<String> {
        out.iter()
            .map(|r| match r {
                Record::Start { key, request, .. } => match request {
                    crate::protocol::Request::Http(h) => format!("start {} {}", key.seq, h.target),
                    other => format!("start {} {other:?}", key.seq),
                },
                Record::Done { key, exchange, .. } => match exchange {
                    crate::protocol::Exchange::Http(x) => format!(
                        "done {} {} {}",
                        key.seq, x.request.target, x.response.status
                    ),
                    crate::protocol::Exchange::Redis(x) => {
                        format!("done {} {}", key.seq, x.command.name)
                    }
                    other => format!("done {} {other:?}", key.seq),
                },
                Record::Abandoned { key } => format!("abandoned {}", key.seq),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn lost_response_abandons_its_request_and_the_next_pairs_right() {
        let mut t = tracker();
        let mut out = Vec::new();
        let req = |p: &'static [u8], t: u64| data(1, 100, Direction::Ingress, p, t);
        t.handle(req(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n", 10), &mut out);
        // The response to /1 found the ring buffer full: the next record
        // carries the raised count.
        t.handle(
            lost_before(req(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n", 30), 1),
            &mut out,
        );
        let resp = data(
            1,
            100,
            Direction::Egress,
            b"HTTP/1.1 202 OK\r\nContent-Length: 0\r\n\r\n",
            40,
        );
        t.handle(lost_before(resp, 1), &mut out);
        assert_eq!(
            summary(&out),
            ["start 0 /1", "abandoned 0", "start 1 /2", "done 1 /2 202"]
        );
        assert_eq!(metrics::get(&t.counters.loss_resyncs), 1);
    }

    #[test]
    fn lost_body_bytes_never_complete_and_the_stream_resyncs() {
        let mut t = tracker();
        let mut out = Vec::new();
        t.handle(
            data(
                1,
                100,
                Direction::Egress,
                b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
                10,
            ),
            &mut out,
        );
        t.handle(
            data(
                1,
                100,
                Direction::Ingress,
                b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n0123456789",
                20,
            ),
            &mut out,
        );
        // The read with the last ten body bytes was lost; the next read is
        // the rest of a later response body: nothing to parse until a
        // message starts.
        t.handle(
            lost_before(data(1, 100, Direction::Ingress, b"tail bytes", 30), 4),
            &mut out,
        );
        t.handle(
            lost_before(
                data(
                    1,
                    100,
                    Direction::Egress,
                    b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n",
                    40,
                ),
                4,
            ),
            &mut out,
        );
        t.handle(
            lost_before(
                data(
                    1,
                    100,
                    Direction::Ingress,
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                    50,
                ),
                4,
            ),
            &mut out,
        );
        assert_eq!(
            summary(&out),
            ["start 0 /a", "abandoned 0", "start 1 /b", "done 1 /b 404"]
        );
    }

    #[test]
    fn lost_request_head_makes_no_span_of_its_response() {
        let mut t = tracker();
        let mut out = Vec::new();
        let resp = |t| {
            data(
                1,
                100,
                Direction::Egress,
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                t,
            )
        };
        t.handle(
            data(1, 100, Direction::Ingress, b"GET /1 HTTP/1.1\r\n\r\n", 10),
            &mut out,
        );
        t.handle(resp(20), &mut out);
        // The request head of /2 was lost: its response pairs with nothing.
        t.handle(lost_before(resp(40), 1), &mut out);
        t.handle(
            lost_before(
                data(1, 100, Direction::Ingress, b"GET /3 HTTP/1.1\r\n\r\n", 50),
                1,
            ),
            &mut out,
        );
        t.handle(lost_before(resp(60), 1), &mut out);
        assert_eq!(
            summary(&out),
            ["start 0 /1", "done 0 /1 200", "start 1 /3", "done 1 /3 200"]
        );
        assert_eq!(metrics::get(&t.counters.orphan_responses), 1);
    }

    #[test]
    fn a_replaced_parser_keeps_request_keys_unique() {
        let mut t = tracker();
        let mut out = Vec::new();
        t.handle(
            data(2, 100, Direction::Egress, b"*1\r\n$4\r\nPING\r\n", 10),
            &mut out,
        );
        t.handle(data(2, 100, Direction::Ingress, b"+PONG\r\n", 11), &mut out);
        t.handle(
            data(2, 100, Direction::Egress, b"*1\r\n$4\r\nPING\r\n", 12),
            &mut out,
        );
        // Its reply was lost.
        t.handle(
            lost_before(
                data(
                    2,
                    100,
                    Direction::Egress,
                    b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
                    20,
                ),
                9,
            ),
            &mut out,
        );
        t.handle(
            lost_before(data(2, 100, Direction::Ingress, b"$1\r\nv\r\n", 21), 9),
            &mut out,
        );
        let s = summary(&out);
        assert_eq!(s[1], "done 0 PING");
        assert_eq!(s[3], "abandoned 1", "{s:?}");
        assert_eq!(s.last().map(String::as_str), Some("done 2 GET"), "{s:?}");
        let keys: Vec<u64> = out
            .iter()
            .filter_map(|r| match r {
                Record::Start { key, .. } => Some(key.seq),
                _ => None,
            })
            .collect();
        assert_eq!(keys, [0, 1, 2]);
    }
}
