//! capture → conn → stitch → policy, run one after the other by one task.
//!
//! Each drain of the ring buffer goes through every stage before the next
//! drain, so events cost no channel hops and no task wakeups between stages
//! (at low rates those wakeups were most of the agent's CPU). A stage that
//! falls behind delays the next drain, and overload still turns into ring
//! buffer losses that the kernel counts per probe. Spans leave for the
//! exporter through a queue that never blocks: what does not fit is
//! dropped and counted.
use std::{
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot};

use crate::{
    capture::{Event, reader::Ring},
    clock::Clock,
    conn::{ConnTracker, Record, reorder::Reorder},
    discover::k8s::K8sUpdate,
    export::{
        self,
        drops::{DropLog, Reason},
    },
    metrics::{self, Counters, serve::Observed},
    policy::tail::TailSampler,
    span::Span,
    stitch::Stitcher,
};

/// While a stage holds events that are not yet due, the loop looks again
/// this often even if no new events arrive.
const HOLD_TICK: Duration = Duration::from_millis(5);
/// Finished connections and processes are looked for this often.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Spans go to the exporter in lumps of at most this age or this size, so
/// it is not woken for every drain; it batches for far longer anyway.
const SEND_EVERY: Duration = Duration::from_millis(50);
const SEND_AT: usize = 512;
/// How often a tail sampler decides on the traces it holds.
const TAIL_EVERY: Duration = Duration::from_millis(100);

/// Where finished spans go.
pub struct Outlets {
    pub spans: mpsc::Sender<Vec<Span>>,
    /// A copy of every span for the console, when asked for beside OTLP.
    pub console: Option<mpsc::Sender<Vec<Span>>>,
    /// Pids that exec'd, for the TLS library scan.
    pub exec: mpsc::Sender<u32>,
}

pub struct Stages {
    reorder: Reorder,
    tracker: ConnTracker,
    stitcher: Stitcher,
    tail: Option<TailSampler>,
    outlets: Outlets,
    drops: DropLog,
    counters: Arc<Counters>,
    observed: Arc<Observed>,
    records: Vec<Record>,
    spans: Vec<Span>,
    kept: Vec<Span>,
    last_send: Instant,
    next_sweep: Instant,
    next_tail: Instant,
}

impl Stages {
    pub fn new(
        tracker: ConnTracker,
        stitcher: Stitcher,
        tail: Option<TailSampler>,
        outlets: Outlets,
        observed: Arc<Observed>,
    ) -> Stages {
        let now = Instant::now();
        Stages {
            reorder: Reorder::default(),
            tracker,
            stitcher,
            tail,
            outlets,
            drops: DropLog::new(export::sender::DROP_LOG_EVERY),
            counters: observed.counters.clone(),
            observed,
            records: Vec::new(),
            spans: Vec::new(),
            kept: Vec::new(),
            last_send: now,
            next_sweep: now + SWEEP_EVERY,
            next_tail: now + TAIL_EVERY,
        }
    }

    /// Takes a drain's events into the reorder buffer.
    pub fn take(&mut self, events: &mut Vec<Event>) {
        for event in events.drain(..) {
            if let Event::Exec { pid, .. } = &event {
                let _ = self.outlets.exec.try_send(*pid);
            }
            self.reorder.push(event);
        }
    }

    pub fn apply_k8s(&mut self, update: K8sUpdate) {
        self.tracker.apply_k8s(update);
        self.observed
            .traced_cgroups
            .store(self.tracker.traced_cgroups() as u64, Relaxed);
    }

    /// Moves everything that is due through the stages.
    pub fn advance(&mut self, now: Instant) {
        let now_ns = Clock::monotonic_now();
        let (tracker, records) = (&mut self.tracker, &mut self.records);
        self.reorder.release(now_ns, |e| tracker.handle(e, records));
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP_EVERY;
            self.tracker.sweep(now_ns, &mut self.records);
            self.observed
                .traced_processes
                .store(self.tracker.processes() as u64, Relaxed);
        }
        for record in self.records.drain(..) {
            self.stitcher.push(record);
        }
        self.stitcher.release(now_ns, &mut self.spans);
        self.observed
            .routes_overflowed
            .store(self.stitcher.routes_overflowed(), Relaxed);
        self.policy(now);
        if !self.kept.is_empty()
            && (self.kept.len() >= SEND_AT || now >= self.last_send + SEND_EVERY)
        {
            self.send(now);
        }
        if let Some(line) = self.drops.due(now) {
            tracing::warn!("{line}");
        }
    }

    /// When the loop must look again if no event arrives before.
    pub fn next_due(&self, now: Instant) -> Instant {
        let holding = !self.reorder.is_empty() || self.stitcher.queued() > 0;
        let mut due = self.next_sweep;
        if holding {
            due = due.min(now + HOLD_TICK);
        }
        if !self.kept.is_empty() {
            due = due.min(self.last_send + SEND_EVERY);
        }
        if self.tail.is_some() {
            due = due.min(self.next_tail);
        }
        due
    }

    /// Everything held leaves now (shutdown).
    pub fn finish(mut self) {
        let (tracker, records) = (&mut self.tracker, &mut self.records);
        self.reorder.flush(|e| tracker.handle(e, records));
        for record in self.records.drain(..) {
            self.stitcher.push(record);
        }
        self.stitcher.flush(&mut self.spans);
        let now = Instant::now();
        self.policy(now);
        if let Some(t) = self.tail.as_mut() {
            t.flush(&mut self.kept);
        }
        self.send(now);
        if let Some(line) = self.drops.flush(now) {
            tracing::warn!("{line}");
        }
    }

    /// RED metrics from every span; sampling decides which are kept.
    fn policy(&mut self, now: Instant) {
        if !self.spans.is_empty() {
            let mut red = self.observed.red.lock().expect("not poisoned");
            for s in &self.spans {
                red.record(s);
            }
            drop(red);
            metrics::add(&self.counters.spans_created, self.spans.len() as u64);
            for s in self.spans.drain(..) {
                if s.flags & 1 == 0 {
                    metrics::inc(&self.counters.spans_unsampled);
                } else if let Some(t) = self.tail.as_mut() {
                    t.push(s, now);
                } else {
                    self.kept.push(s);
                }
            }
        }
        if let Some(t) = self.tail.as_mut()
            && now >= self.next_tail
        {
            self.next_tail = now + TAIL_EVERY;
            t.poll(now, &mut self.kept);
            *self.observed.tail.lock().expect("not poisoned") = Some(t.stats());
        }
    }

    fn send(&mut self, now: Instant) {
        self.last_send = now;
        if self.kept.is_empty() {
            return;
        }
        let spans = std::mem::take(&mut self.kept);
        let n = spans.len() as u64;
        if let Some(console) = &self.outlets.console {
            let _ = console.try_send(spans.clone());
        }
        // The exporter takes spans as fast as they come; this only fills
        // if it is starved of CPU. Such drops are said like the exporter's.
        if self.outlets.spans.try_send(spans).is_err() {
            metrics::add(&self.counters.spans_dropped_queue_full, n);
            let line = self.drops.note(
                Reason::QueueFull,
                n,
                Some("the exporter is not keeping up"),
                now,
            );
            if let Some(line) = line {
                tracing::warn!("{line}");
            }
        }
    }
}

/// Drains the ring buffer and runs the stages until `stop` fires (or its
/// sender is dropped), then drains once more and flushes every stage.
pub async fn run(
    mut ring: Ring,
    mut stages: Stages,
    mut k8s: Option<mpsc::Receiver<K8sUpdate>>,
    mut stop: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let counters = stages.counters.clone();
    let mut events = Vec::with_capacity(1024);
    // Whether the last drain found events: then the next one comes after a
    // pause, without waiting for the kernel's wakeup.
    let mut busy = false;
    loop {
        let mut stopping = false;
        let mut drain = busy;
        if busy {
            tokio::select! {
                _ = &mut stop => stopping = true,
                _ = tokio::time::sleep(crate::capture::reader::PAUSE) => {}
            }
        } else {
            let due = stages.next_due(Instant::now());
            tokio::select! {
                _ = &mut stop => stopping = true,
                ready = ring.readable() => {
                    ready?;
                    drain = true;
                }
                _ = tokio::time::sleep_until(due.into()) => {}
                update = next_update(&mut k8s) => match update {
                    Some(update) => stages.apply_k8s(update),
                    None => k8s = None,
                },
            }
        }
        while let Some(update) = k8s.as_mut().and_then(|rx| rx.try_recv().ok()) {
            stages.apply_k8s(update);
        }
        if drain || stopping {
            busy = ring.drain(&mut events, &counters) > 0;
            stages.take(&mut events);
        }
        if stopping {
            stages.finish();
            return Ok(());
        }
        stages.advance(Instant::now());
    }
}

async fn next_update(k8s: &mut Option<mpsc::Receiver<K8sUpdate>>) -> Option<K8sUpdate> {
    match k8s {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, sync::Arc};

    use super::*;
    use crate::{
        conn::{ConnConfig, tests::data},
        policy::{redact::RedactConfig, route::RouteConfig},
        protocol::Direction,
        stitch::{StitchConfig, attrs::Shaper},
    };

    struct Rig {
        stages: Stages,
        spans: mpsc::Receiver<Vec<Span>>,
        exec: mpsc::Receiver<u32>,
        start: Instant,
    }

    fn rig() -> Rig {
        let (spans_tx, spans) = mpsc::channel(16);
        let (exec_tx, exec) = mpsc::channel(16);
        let counters = Arc::new(Counters::default());
        let tracker = ConnTracker::new(
            ConnConfig {
                proc_root: "/nonexistent".into(),
                ..Default::default()
            },
            HashMap::new(),
            None,
            counters.clone(),
        );
        let shaper = Shaper::new(&RedactConfig::default(), &RouteConfig::default()).unwrap();
        let stitcher = Stitcher::new(StitchConfig::default(), Clock::new(), shaper);
        let start = Instant::now();
        let stages = Stages::new(
            tracker,
            stitcher,
            None,
            Outlets {
                spans: spans_tx,
                console: None,
                exec: exec_tx,
            },
            Arc::new(Observed::new(counters)),
        );
        Rig {
            stages,
            spans,
            exec,
            start,
        }
    }

    /// `n` served requests, each on its own connection, a second in the
    /// past: older than every reorder window.
    fn served(n: u64) -> Vec<Event> {
        let t = Clock::monotonic_now() - 1_000_000_000;
        (0..n)
            .flat_map(|i| {
                [
                    data(
                        i,
                        100,
                        Direction::Ingress,
                        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
                        t + i * 10_000,
                    ),
                    data(
                        i,
                        100,
                        Direction::Egress,
                        b"HTTP/1.1 204 No Content\r\n\r\n",
                        t + i * 10_000 + 5_000,
                    ),
                ]
            })
            .collect()
    }

    fn received(rx: &mut mpsc::Receiver<Vec<Span>>) -> Vec<usize> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|s| s.len())
            .collect()
    }

    #[test]
    fn spans_wait_for_the_send_interval_then_leave_together() {
        let mut r = rig();
        for i in 0..3 {
            r.stages.take(&mut served(1));
            r.stages.advance(r.start + Duration::from_millis(i));
        }
        assert_eq!(received(&mut r.spans), Vec::<usize>::new());
        assert!(r.stages.next_due(r.start) <= r.start + SEND_EVERY + Duration::from_millis(1));
        r.stages
            .advance(r.start + SEND_EVERY + Duration::from_millis(1));
        assert_eq!(received(&mut r.spans), vec![3]);
    }

    #[test]
    fn a_full_lump_leaves_at_once() {
        let mut r = rig();
        let mut events = served(SEND_AT as u64 + 10);
        r.stages.take(&mut events);
        assert!(events.is_empty());
        r.stages.advance(r.start);
        assert_eq!(received(&mut r.spans), vec![SEND_AT + 10]);
    }

    #[test]
    fn finish_hands_over_what_is_held_and_execs_are_passed_on() {
        let mut r = rig();
        // Too recent for the reorder windows: only finish releases them.
        let t = Clock::monotonic_now() + 1_000_000_000;
        let mut events = vec![
            Event::Exec {
                pid: 7,
                comm: "curl".into(),
            },
            data(
                1,
                100,
                Direction::Ingress,
                b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n",
                t,
            ),
            data(
                1,
                100,
                Direction::Egress,
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                t + 5_000,
            ),
        ];
        r.stages.take(&mut events);
        r.stages.advance(r.start + Duration::from_secs(10));
        assert_eq!(received(&mut r.spans), Vec::<usize>::new());
        let now = Instant::now();
        assert!(r.stages.next_due(now) <= now + HOLD_TICK);
        r.stages.finish();
        assert_eq!(received(&mut r.spans), vec![1]);
        assert_eq!(r.exec.try_recv().ok(), Some(7));
    }

    #[test]
    fn with_nothing_held_the_next_look_is_the_sweep() {
        let r = rig();
        let now = Instant::now();
        assert_eq!(r.stages.next_due(now), r.stages.next_sweep);
        assert!(r.stages.next_sweep >= r.start + SWEEP_EVERY);
    }
}
