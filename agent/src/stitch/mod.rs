//! Trace context: every request gets its span id when it starts, and its
//! trace id and parent from, in order of precedence,
//!
//! 1. the same-host client span on the other end of its connection (the
//!    4-tuple matches, the client request started first) — so a chain of
//!    services on one node is one trace even when nothing sends a header;
//! 2. a valid context header it carries (W3C `traceparent`, else B3);
//! 3. for client requests, the server request its thread is serving
//!    (thread-per-request servers: gunicorn sync workers, Java);
//! 4. otherwise it starts a new trace.
//!
//! **Mixed mode.** A process whose outgoing requests already carry a context
//! header that seam did not write propagates context itself (an OpenTelemetry
//! SDK): its instrumentation owns those hops. For such a request seam makes no
//! client span (the SDK made one: the header's parent id), and the server on
//! the other end takes the header as its parent. A server request of that
//! process gets no seam span either when the process is known to instrument
//! itself and seam exported no child of it — so nothing is duplicated and no
//! exported span points at a suppressed one. A header that merely repeats the
//! one the served request came with (a proxy forwarding it) does not count.
//!
//! Records arrive from the connection stage in ring-buffer order, which can
//! differ from causal order by a few microseconds across CPUs (a server may
//! read a request before the client's `send` returns). A short reorder buffer
//! sorts them by the times that causality orders: a client request starts
//! when its first `write` is entered, a server request when its first `read`
//! returns; a server response ends after its last `write` is entered, a
//! client's when its last `read` returns.
pub mod attrs;
pub mod b3;
pub mod gaps;
pub mod propagation;
pub mod telemetry;
pub mod traceparent;

use std::{collections::VecDeque, net::SocketAddr, sync::Arc};

use rand::RngCore as _;

use crate::{
    FastMap, FastSet,
    capture::{IoInfo, IoKind, KernelCtx},
    clock::Clock,
    conn::{ConnMeta, Record, RequestKey},
    policy::sampler::{HeadSampler, ParentSampling},
    protocol::{Request, Role},
    span::{Attributes, Span, SpanId, SpanKind, Status, TraceId},
    time_order::TimeOrder,
};

/// How linking behaves.
/// A record can reach this stage up to the connection stage's window plus
/// two reader pauses after its time (it waits for a drain, then for the
/// drain that finds it out of that window); the rest is margin.
pub const REORDER_NS: u64 = crate::conn::reorder::WINDOW_NS
    + 2 * crate::capture::reader::PAUSE.as_nanos() as u64
    + 10_000_000;

#[derive(Clone, Debug)]
pub struct StitchConfig {
    /// Link same-host client and server spans by connection 4-tuple.
    pub tuple_linking: bool,
    /// Link client requests to the server request their thread serves.
    pub thread_linking: bool,
    /// Records are held this long to restore causal order.
    pub reorder_ns: u64,
    /// Explain server spans' gaps, and make file I/O at least this long its
    /// own span (`None`: off).
    pub gap_threshold_ns: Option<u64>,
    /// Head sampling: decides the sampled flag of traces seam starts, and of
    /// spans whose parent is known.
    pub sampler: HeadSampler,
}

impl Default for StitchConfig {
    fn default() -> Self {
        Self {
            tuple_linking: true,
            thread_linking: true,
            reorder_ns: REORDER_NS,
            gap_threshold_ns: Some(1_000_000),
            sampler: HeadSampler::default(),
        }
    }
}

/// Identity a span gets when its request starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    pub trace_state: String,
    pub flags: u8,
}

struct Inflight {
    ctx: SpanContext,
    thread: (u32, u32),
    role: Role,
    pair: Option<(SocketAddr, SocketAddr)>,
    /// Server: the same-host client request it was linked to.
    linked_client: Option<RequestKey>,
    /// Client: latest end of a linked server span. The server's last `write`
    /// can return a few microseconds after the client's `read` got the bytes;
    /// the client span is stretched so that it still contains its child.
    child_end: u64,
    /// Client: the request carried a context header seam did not write; the
    /// process's own instrumentation owns this hop, seam makes no span.
    foreign: bool,
    /// Telemetry export traffic: no span, on either end.
    telemetry: bool,
    /// Client: the server request its thread was serving.
    serving: Option<RequestKey>,
    /// Server: children seam exports (they point at this span).
    exported_children: u32,
    /// Server: children owned by the process's own instrumentation.
    foreign_children: u32,
    /// Server: what its thread did meanwhile (children, waits).
    activity: gaps::Activity,
    /// Server: slow file operations, to become INTERNAL child spans.
    file_ops: Vec<(IoInfo, String)>,
}

/// How a starting request relates to the others (see [`Inflight`]).
struct Links {
    linked_client: Option<RequestKey>,
    serving: Option<RequestKey>,
    foreign: bool,
    /// An OTLP export (see [`telemetry`]): no span.
    telemetry: bool,
}

/// Waits and children remembered per server request; more are ignored.
const MAX_ACTIVITY: usize = 256;

pub struct Stitcher {
    config: StitchConfig,
    shaper: attrs::Shaper,
    clock: Clock,
    queue: TimeOrder<Record>,
    inflight: FastMap<RequestKey, Inflight>,
    /// Server requests in progress per (pid, tid).
    serving: FastMap<(u32, u32), Vec<RequestKey>>,
    /// In-flight client requests per (client, server) address pair.
    clients: FastMap<(SocketAddr, SocketAddr), VecDeque<RequestKey>>,
    /// Processes seen propagating context themselves.
    self_instrumented: FastSet<u32>,
}

/// The (client, server) addresses of a connection, as both ends name it.
fn pair(conn: &ConnMeta) -> Option<(SocketAddr, SocketAddr)> {
    let e = conn.endpoints?;
    Some(match conn.role {
        Role::Client => (e.local, e.peer),
        Role::Server => (e.peer, e.local),
    })
}

fn random_span_id() -> SpanId {
    loop {
        let id = rand::rng().next_u64().to_be_bytes();
        if id != [0; 8] {
            return id;
        }
    }
}

fn random_trace_id() -> TraceId {
    loop {
        let mut id = [0u8; 16];
        rand::rng().fill_bytes(&mut id);
        if id != [0; 16] {
            return id;
        }
    }
}

impl Stitcher {
    pub fn new(config: StitchConfig, clock: Clock, shaper: attrs::Shaper) -> Self {
        Self {
            config,
            shaper,
            clock,
            queue: TimeOrder::default(),
            inflight: FastMap::default(),
            serving: FastMap::default(),
            clients: FastMap::default(),
            self_instrumented: FastSet::default(),
        }
    }

    /// Requests whose route became `/*` because a service had too many.
    pub fn routes_overflowed(&self) -> u64 {
        self.shaper.routes_overflowed()
    }

    /// Requests in progress.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Records waiting in the reorder buffer.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    fn order_ts(record: &Record) -> u64 {
        match record {
            Record::Start { conn, timing, .. } => match conn.role {
                Role::Client => timing.enter_ns,
                Role::Server => timing.exit_ns,
            },
            // A server's last write begins before its client's read ends.
            Record::Done { conn, exchange, .. } => match conn.role {
                Role::Client => exchange.response_end().exit_ns,
                Role::Server => exchange.response_end().enter_ns,
            },
            Record::Io { io, .. } => io.start_ns,
            // Carry no time; they follow what arrived before them.
            Record::Abandoned { .. } | Record::ProcessGone { .. } => 0,
        }
    }

    /// Queues a record; call [`Stitcher::release`] to process what is due.
    pub fn push(&mut self, record: Record) {
        let ts = Self::order_ts(&record).max(match record {
            Record::Abandoned { .. } | Record::ProcessGone { .. } => self.queue.newest_ts(),
            _ => 0,
        });
        self.queue.push(ts, record);
    }

    /// Processes queued records older than the reorder window, measured from
    /// both the newest record and the clock `now_ns`; appends finished spans.
    pub fn release(&mut self, now_ns: u64, spans: &mut Vec<Span>) {
        let horizon = self
            .queue
            .newest_ts()
            .max(now_ns)
            .saturating_sub(self.config.reorder_ns);
        while let Some(record) = self.queue.pop_due(horizon) {
            self.process(record, spans);
        }
    }

    /// Processes everything queued (shutdown).
    pub fn flush(&mut self, spans: &mut Vec<Span>) {
        while let Some(record) = self.queue.pop() {
            self.process(record, spans);
        }
    }

    fn process(&mut self, record: Record, spans: &mut Vec<Span>) {
        match record {
            Record::Start {
                key,
                conn,
                tid,
                request,
                timing: _,
                kernel_ctx,
            } => match kernel_ctx {
                Some(k) => self.start_decided(key, &conn, tid, &request, k),
                None => self.start(key, &conn, tid, &request),
            },
            Record::Done {
                key,
                conn,
                exchange,
            } => {
                let Some(inflight) = self.forget(key) else {
                    return;
                };
                let (first, last) = (exchange.request_start(), exchange.response_end());
                let (start, end) = match conn.role {
                    Role::Server => (first.exit_ns, last.exit_ns),
                    Role::Client => (first.enter_ns, last.exit_ns.max(inflight.child_end)),
                };
                if let Some(client) = inflight.linked_client
                    && let Some(c) = self.inflight.get_mut(&client)
                {
                    c.child_end = c.child_end.max(end);
                }
                if let Some(s) = inflight.serving.and_then(|k| self.inflight.get_mut(&k))
                    && s.activity.children.len() < MAX_ACTIVITY
                {
                    s.activity.children.push((start, end));
                }
                if self.suppressed(&conn, &inflight) {
                    return;
                }
                let (name, kind, mut attributes, status) =
                    attrs::span_for(&conn, &exchange, &mut self.shaper);
                if conn.role == Role::Server && self.config.gap_threshold_ns.is_some() {
                    gaps::analyze((start, end), &inflight.activity).set_attributes(&mut attributes);
                }
                let file_spans: Vec<Span> = inflight
                    .file_ops
                    .iter()
                    .map(|(io, path)| self.file_span(&inflight.ctx, &conn, io, path))
                    .collect();
                spans.push(Span {
                    trace_id: inflight.ctx.trace_id,
                    span_id: inflight.ctx.span_id,
                    parent_span_id: inflight.ctx.parent_span_id,
                    trace_state: inflight.ctx.trace_state,
                    flags: inflight.ctx.flags,
                    name,
                    kind,
                    start_unix_ns: self.clock.unix_ns(start),
                    end_unix_ns: self.clock.unix_ns(end.max(start)),
                    attributes,
                    status,
                    resource: conn.process.resource.clone(),
                });
                spans.extend(file_spans);
            }
            Record::Io { io, path } => self.on_io(io, path),
            Record::ProcessGone { pid } => {
                self.self_instrumented.remove(&pid);
            }
            Record::Abandoned { key } => {
                self.forget(key);
            }
        }
    }

    fn start(&mut self, key: RequestKey, conn: &Arc<ConnMeta>, tid: u32, request: &Request) {
        let telemetry = telemetry::is_export(request);
        let carried = propagation::extract(request);
        let thread = (conn.pid, tid);
        let pair = pair(conn);
        let mut linked_client = None;
        let mut serving = None;
        let mut foreign = false;
        let parent = match conn.role {
            Role::Server => {
                let linked = self
                    .config
                    .tuple_linking
                    .then(|| pair.and_then(|p| self.take_client(p)))
                    .flatten();
                match (linked, carried) {
                    // The same-host client span is the closest parent, as long
                    // as seam exports it and it belongs to the trace the
                    // header names.
                    (Some((key, client, false)), c)
                        if c.as_ref().is_none_or(|c| c.trace_id == client.trace_id) =>
                    {
                        linked_client = Some(key);
                        Some((
                            client.trace_id,
                            client.span_id,
                            client.flags,
                            client.trace_state,
                        ))
                    }
                    (_, Some(c)) => Some((c.trace_id, c.parent_id, c.flags, c.trace_state)),
                    (_, None) => None,
                }
            }
            Role::Client => {
                serving = (self.config.thread_linking && !telemetry)
                    .then(|| self.serving_key(thread))
                    .flatten();
                // A header copied from the request being served (a proxy
                // forwarding it) is not the process's own instrumentation.
                let forwarded = |c: &propagation::Carried| {
                    serving
                        .and_then(|k| self.inflight.get(&k))
                        .is_some_and(|s| s.ctx.parent_span_id == Some(c.parent_id))
                };
                let carried = carried.filter(|c| !forwarded(c));
                match carried {
                    Some(c) => {
                        foreign = true;
                        self.self_instrumented.insert(conn.pid);
                        Some((c.trace_id, c.parent_id, c.flags, c.trace_state))
                    }
                    None => serving.and_then(|k| self.inflight.get(&k)).map(|s| {
                        (
                            s.ctx.trace_id,
                            s.ctx.span_id,
                            s.ctx.flags,
                            s.ctx.trace_state.clone(),
                        )
                    }),
                }
            }
        };
        if let Some(s) = serving.and_then(|k| self.inflight.get_mut(&k)) {
            if foreign {
                s.foreign_children += 1;
            } else {
                s.exported_children += 1;
            }
        }
        // Server parents live in other processes; a client's parent is its
        // own thread's request unless a header said otherwise.
        let remote = conn.role == Role::Server || foreign;
        let ctx = match parent {
            Some((trace_id, parent_id, flags, trace_state)) => {
                let sampled = self.config.sampler.should_sample(
                    &trace_id,
                    Some(ParentSampling {
                        sampled: flags & 1 == 1,
                        remote,
                    }),
                );
                SpanContext {
                    trace_id,
                    span_id: random_span_id(),
                    parent_span_id: Some(parent_id),
                    trace_state,
                    flags: (flags & !1) | u8::from(sampled),
                }
            }
            None => {
                let trace_id = random_trace_id();
                SpanContext {
                    trace_id,
                    span_id: random_span_id(),
                    parent_span_id: None,
                    trace_state: String::new(),
                    flags: u8::from(self.config.sampler.should_sample(&trace_id, None)),
                }
            }
        };
        self.track(
            key,
            conn,
            tid,
            ctx,
            Links {
                linked_client,
                serving,
                foreign,
                telemetry,
            },
        );
    }

    /// A request whose span the probes decided (its ids went on the wire, or
    /// children's did): those ids win. Linking bookkeeping still applies
    /// where it agrees with them.
    fn start_decided(
        &mut self,
        key: RequestKey,
        conn: &Arc<ConnMeta>,
        tid: u32,
        request: &Request,
        k: KernelCtx,
    ) {
        let mut linked_client = None;
        let mut serving = None;
        let trace_state = propagation::extract(request)
            .filter(|c| c.trace_id == k.trace_id)
            .map(|c| c.trace_state);
        let mut trace_state = trace_state.unwrap_or_default();
        match conn.role {
            Role::Server => {
                if self.config.tuple_linking
                    && let Some(p) = pair(conn)
                    && let Some((client_key, client, false)) = self.take_client(p)
                    && Some(client.span_id) == k.parent_id
                {
                    linked_client = Some(client_key);
                }
            }
            Role::Client => {
                if let Some(s) = self.serving_key((conn.pid, tid)).filter(|s| {
                    self.inflight
                        .get(s)
                        .is_some_and(|i| Some(i.ctx.span_id) == k.parent_id)
                }) {
                    serving = Some(s);
                    if let Some(i) = self.inflight.get_mut(&s) {
                        i.exported_children += 1;
                        trace_state = i.ctx.trace_state.clone();
                    }
                }
            }
        }
        let sampled = self.config.sampler.should_sample(
            &k.trace_id,
            k.parent_id.map(|_| ParentSampling {
                sampled: k.flags & 1 == 1,
                remote: conn.role == Role::Server,
            }),
        );
        let ctx = SpanContext {
            trace_id: k.trace_id,
            span_id: k.span_id,
            parent_span_id: k.parent_id,
            trace_state,
            flags: (k.flags & !1) | u8::from(sampled),
        };
        self.track(
            key,
            conn,
            tid,
            ctx,
            Links {
                linked_client,
                serving,
                foreign: false,
                telemetry: telemetry::is_export(request),
            },
        );
    }

    /// Remembers a started request until its response.
    fn track(
        &mut self,
        key: RequestKey,
        conn: &Arc<ConnMeta>,
        tid: u32,
        ctx: SpanContext,
        links: Links,
    ) {
        let thread = (conn.pid, tid);
        let pair = pair(conn);
        match conn.role {
            Role::Server => self.serving.entry(thread).or_default().push(key),
            Role::Client => {
                if let Some(p) = pair {
                    self.clients.entry(p).or_default().push_back(key);
                }
            }
        }
        self.inflight.insert(
            key,
            Inflight {
                ctx,
                thread,
                role: conn.role,
                pair,
                linked_client: links.linked_client,
                child_end: 0,
                foreign: links.foreign,
                telemetry: links.telemetry,
                serving: links.serving,
                exported_children: 0,
                foreign_children: 0,
                activity: gaps::Activity::default(),
                file_ops: Vec::new(),
            },
        );
    }

    /// A slow wait of a thread: it belongs to the server request the thread
    /// is serving, if any.
    fn on_io(&mut self, io: IoInfo, path: Option<String>) {
        let Some(threshold) = self.config.gap_threshold_ns else {
            return;
        };
        let Some(key) = self.serving_key((io.pid, io.tid)) else {
            return;
        };
        let Some(server) = self.inflight.get_mut(&key) else {
            return;
        };
        let a = &mut server.activity;
        let interval = (io.start_ns, io.end_ns);
        let list = match io.kind {
            IoKind::FileRead | IoKind::FileWrite | IoKind::FileSync => &mut a.file_io,
            IoKind::OffCpu => &mut a.off_cpu,
            IoKind::RunQueue => &mut a.runqueue,
        };
        if list.len() < MAX_ACTIVITY {
            list.push(interval);
        }
        if let Some(path) = path
            && io.end_ns - io.start_ns >= threshold
            && server.file_ops.len() < MAX_ACTIVITY
        {
            server.file_ops.push((io, path));
        }
    }

    /// An INTERNAL span for one slow file operation of a server request.
    fn file_span(&self, parent: &SpanContext, conn: &ConnMeta, io: &IoInfo, path: &str) -> Span {
        let op = match io.kind {
            IoKind::FileRead => "read",
            IoKind::FileWrite => "write",
            _ => "fsync",
        };
        let mut attributes = Attributes::default();
        attributes.set("file.path", path);
        attributes.set("seam.io.operation", op);
        if io.bytes > 0 {
            attributes.set("seam.io.bytes", io.bytes as i64);
        }
        attributes.set("thread.id", io.tid as i64);
        Span {
            trace_id: parent.trace_id,
            span_id: random_span_id(),
            parent_span_id: Some(parent.span_id),
            trace_state: parent.trace_state.clone(),
            flags: parent.flags,
            name: format!("file {op} {path}"),
            kind: SpanKind::Internal,
            start_unix_ns: self.clock.unix_ns(io.start_ns),
            end_unix_ns: self.clock.unix_ns(io.end_ns),
            attributes,
            status: Status::Unset,
            resource: conn.process.resource.clone(),
        }
    }

    /// Whether seam leaves this hop to the process's own instrumentation.
    fn suppressed(&self, conn: &ConnMeta, inflight: &Inflight) -> bool {
        if inflight.telemetry {
            return true;
        }
        match inflight.role {
            Role::Client => inflight.foreign,
            Role::Server => {
                inflight.exported_children == 0
                    && (inflight.foreign_children > 0 || self.self_instrumented.contains(&conn.pid))
            }
        }
    }

    /// The one server request `thread` is serving; none when it serves
    /// several at once (an event loop), where the thread says nothing.
    fn serving_key(&self, thread: (u32, u32)) -> Option<RequestKey> {
        match self.serving.get(&thread).map(Vec::as_slice) {
            Some([only]) => Some(*only),
            _ => None,
        }
    }

    /// The oldest in-flight client request on this connection not yet
    /// matched to a server request.
    /// With whether seam suppresses it (a foreign-propagated hop).
    fn take_client(
        &mut self,
        pair: (SocketAddr, SocketAddr),
    ) -> Option<(RequestKey, SpanContext, bool)> {
        let queue = self.clients.get_mut(&pair)?;
        let key = queue.pop_front()?;
        if queue.is_empty() {
            self.clients.remove(&pair);
        }
        self.inflight
            .get(&key)
            .map(|i| (key, i.ctx.clone(), i.foreign))
    }

    fn forget(&mut self, key: RequestKey) -> Option<Inflight> {
        let inflight = self.inflight.remove(&key)?;
        match inflight.role {
            Role::Server => {
                if let Some(keys) = self.serving.get_mut(&inflight.thread) {
                    keys.retain(|k| *k != key);
                    if keys.is_empty() {
                        self.serving.remove(&inflight.thread);
                    }
                }
            }
            Role::Client => {
                if let Some(p) = inflight.pair
                    && let Some(queue) = self.clients.get_mut(&p)
                {
                    queue.retain(|k| *k != key);
                    if queue.is_empty() {
                        self.clients.remove(&p);
                    }
                }
            }
        }
        Some(inflight)
    }
}

#[cfg(test)]
mod tests;
