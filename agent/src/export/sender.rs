//! Sends spans to the OTLP backend without ever slowing the pipeline down.
//!
//! Spans wait in a queue bounded in spans (`OTEL_BSP_MAX_QUEUE_SIZE`) and in
//! estimated bytes (`--export-queue-mib`); the batch in flight or awaiting a
//! retry counts against both bounds, so what the exporter holds never
//! exceeds them. One request is in flight at a time, under the export
//! timeout. Retryable failures (connection refused, timeouts, HTTP 429/502/
//! 503/504, gRPC UNAVAILABLE...) are retried with exponential backoff, or
//! after the delay the backend asks for, for up to [`MAX_RETRY_TIME`]; the
//! other batches wait behind the failing one, so nothing is sent out of
//! order and a dead backend costs one attempt per backoff, not one per
//! batch. Permanent failures (other 4xx, INVALID_ARGUMENT...) and spans the
//! backend rejects in a partial success are dropped at once. Every drop is
//! counted and said in a log line at most every [`DROP_LOG_EVERY`].
use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{sync::mpsc, task::JoinHandle};

use super::{
    drops::{DropLog, Reason},
    env::BatchSettings,
    otlp::{Batch, Delivered, ExportError, OtlpClient},
};
use crate::{
    metrics::{self, Counters},
    span::{Span, Value},
};

/// Longest a failing batch is retried before it is dropped.
const MAX_RETRY_TIME: Duration = Duration::from_secs(300);
/// First wait after a failure; doubles up to `BatchSettings::max_backoff`.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait a backend's Retry-After / RetryInfo is honoured for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
/// Drops are logged at most this often.
pub const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// What the allocator adds to each heap block (header and rounding), as
/// measured: without it the estimate was 1.4 times short of the agent's
/// real growth with a full queue.
const PER_ALLOCATION: usize = 16;

/// Memory a queued span holds: the struct and its heap parts (the resource
/// is shared by every span of a process and not counted).
pub fn span_bytes(s: &Span) -> usize {
    let heap = |capacity: usize| {
        if capacity == 0 {
            0
        } else {
            capacity + PER_ALLOCATION
        }
    };
    let attrs: usize = s
        .attributes
        .iter()
        .map(|(k, v)| {
            let key = match k {
                std::borrow::Cow::Owned(s) => heap(s.capacity()),
                std::borrow::Cow::Borrowed(_) => 0,
            };
            key + match v {
                Value::Str(std::borrow::Cow::Owned(s)) => heap(s.capacity()),
                _ => 0,
            }
        })
        .sum();
    std::mem::size_of::<Span>()
        + heap(s.name.capacity())
        + heap(s.trace_state.capacity())
        + heap(s.attributes.0.capacity() * std::mem::size_of::<(String, Value)>())
        + attrs
}

type Flight = JoinHandle<(Batch, Result<Delivered, ExportError>)>;

/// A batch that failed and waits for its next attempt (taken out while the
/// attempt is in flight).
struct Retry {
    batch: Option<Batch>,
    first_failure: Instant,
    backoff: Duration,
    not_before: Instant,
}

/// Failures since the last success, for the "resumed" line.
struct Outage {
    since: Instant,
    failures: u64,
}

pub struct Exporter {
    client: OtlpClient,
    batch: BatchSettings,
    counters: Arc<Counters>,
    queue: VecDeque<Span>,
    queue_bytes: usize,
    /// The batch out of the queue (in flight or awaiting a retry).
    held_spans: usize,
    held_bytes: usize,
    retry: Option<Retry>,
    outage: Option<Outage>,
    drops: DropLog,
}

impl Exporter {
    pub fn new(client: OtlpClient, batch: BatchSettings, counters: Arc<Counters>) -> Self {
        Self {
            client,
            batch,
            counters,
            queue: VecDeque::new(),
            queue_bytes: 0,
            held_spans: 0,
            held_bytes: 0,
            retry: None,
            outage: None,
            drops: DropLog::new(DROP_LOG_EVERY),
        }
    }

    fn queued_spans(&self) -> usize {
        self.queue.len() + self.held_spans
    }

    fn queued_bytes(&self) -> usize {
        self.queue_bytes + self.held_bytes
    }

    fn publish(&self) {
        let c = &self.counters;
        c.export_queue_spans.store(
            self.queued_spans() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        c.export_queue_bytes.store(
            self.queued_bytes() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn drop_spans(&mut self, reason: Reason, n: u64, detail: Option<&str>) {
        let counter = match reason {
            Reason::QueueFull => &self.counters.spans_dropped_queue_full,
            Reason::Rejected => &self.counters.spans_rejected,
            Reason::Refused | Reason::RetriesExhausted | Reason::Shutdown => {
                &self.counters.spans_dropped_export_failed
            }
        };
        metrics::add(counter, n);
        if let Some(line) = self.drops.note(reason, n, detail, Instant::now()) {
            tracing::warn!("{line}");
        }
    }

    fn enqueue(&mut self, spans: Vec<Span>) {
        let mut lost = 0u64;
        for s in spans {
            let size = span_bytes(&s);
            if self.queued_spans() < self.batch.max_queue
                && self.queued_bytes() + size <= self.batch.max_queue_bytes
            {
                self.queue_bytes += size;
                self.queue.push_back(s);
            } else {
                lost += 1;
            }
        }
        if lost > 0 {
            self.drop_spans(Reason::QueueFull, lost, None);
        }
        self.publish();
    }

    /// When the batch awaiting a retry may go, if one waits.
    fn retry_at(&self) -> Option<Instant> {
        self.retry
            .as_ref()
            .filter(|r| r.batch.is_some())
            .map(|r| r.not_before)
    }

    /// The next batch to send now, if any.
    fn next_batch(&mut self, timer_fired: bool) -> Option<Batch> {
        if let Some(retry) = &mut self.retry {
            if Instant::now() < retry.not_before {
                return None;
            }
            return retry.batch.take();
        }
        if self.queue.is_empty() || (!timer_fired && self.queue.len() < self.batch.max_batch) {
            return None;
        }
        let n = self.queue.len().min(self.batch.max_batch);
        let batch: Vec<Span> = self.queue.drain(..n).collect();
        let bytes: usize = batch.iter().map(span_bytes).sum();
        self.queue_bytes -= bytes;
        self.held_spans = batch.len();
        self.held_bytes = bytes;
        Some(Batch::encode(batch))
    }

    fn launch(&self, batch: Batch) -> Flight {
        let mut client = self.client.clone();
        tokio::spawn(async move {
            let result = client.export(&batch).await;
            (batch, result)
        })
    }

    /// The held batch is done with (delivered or dropped).
    fn release(&mut self) {
        self.retry = None;
        self.held_spans = 0;
        self.held_bytes = 0;
        self.publish();
    }

    fn settle(&mut self, batch: Batch, result: Result<Delivered, ExportError>) {
        let n = batch.spans as u64;
        match result {
            Ok(delivered) => {
                self.release();
                if let Some(o) = self.outage.take() {
                    tracing::info!(
                        failed_attempts = o.failures,
                        "export resumed after {:.1}s of failures; {} spans waiting",
                        o.since.elapsed().as_secs_f64(),
                        self.queued_spans()
                    );
                }
                let rejected = delivered.rejected.min(n);
                metrics::add(&self.counters.spans_exported, n - rejected);
                let detail = (!delivered.message.is_empty()).then_some(delivered.message);
                self.drop_spans(Reason::Rejected, rejected, detail.as_deref());
            }
            Err(e) => {
                metrics::inc(&self.counters.export_errors);
                if e.timed_out {
                    metrics::inc(&self.counters.export_timeouts);
                }
                let now = Instant::now();
                let first = self.retry.as_ref().map_or(now, |r| r.first_failure);
                if e.retryable && now - first < MAX_RETRY_TIME {
                    let backoff = self
                        .retry
                        .as_ref()
                        .map_or(FIRST_BACKOFF.min(self.batch.max_backoff), |r| {
                            (r.backoff * 2).min(self.batch.max_backoff)
                        });
                    let wait = e.retry_after.map_or(backoff, |d| d.min(MAX_RETRY_AFTER));
                    match &mut self.outage {
                        Some(o) => o.failures += 1,
                        None => {
                            tracing::warn!(
                                error = %e,
                                "export failed; retrying in {wait:?}, then with backoff; \
                                 spans wait in the queue (up to {} spans or {} MiB)",
                                self.batch.max_queue,
                                self.batch.max_queue_bytes / (1024 * 1024)
                            );
                            self.outage = Some(Outage {
                                since: now,
                                failures: 1,
                            });
                        }
                    }
                    self.retry = Some(Retry {
                        batch: Some(batch),
                        first_failure: first,
                        backoff,
                        not_before: now + wait,
                    });
                } else {
                    self.release();
                    let reason = if e.retryable {
                        Reason::RetriesExhausted
                    } else {
                        Reason::Refused
                    };
                    self.drop_spans(reason, n, Some(&e.message));
                }
            }
        }
    }

    pub async fn run(&mut self, rx: &mut mpsc::Receiver<Vec<Span>>) {
        let mut tick = tokio::time::interval(self.batch.schedule_delay);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flight: Option<Flight> = None;
        loop {
            let mut timer_fired = false;
            let retry_at = self.retry_at().filter(|_| flight.is_none());
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(spans) => self.enqueue(spans),
                    None => break,
                },
                _ = tick.tick() => timer_fired = true,
                _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now).into()),
                    if retry_at.is_some() => {}
                done = async { flight.as_mut().expect("guarded").await }, if flight.is_some() => {
                    flight = None;
                    match done {
                        Ok((batch, result)) => self.settle(batch, result),
                        Err(e) => tracing::error!(error = %e, "export task failed"),
                    }
                    // Catch up with what queued meanwhile.
                    timer_fired = true;
                }
            }
            if let Some(line) = self.drops.due(Instant::now()) {
                tracing::warn!("{line}");
            }
            if flight.is_none()
                && let Some(batch) = self.next_batch(timer_fired)
            {
                flight = Some(self.launch(batch));
            }
        }
        if let Some(f) = flight
            && let Ok((batch, result)) = f.await
        {
            self.settle(batch, result);
        }
    }

    /// Sends what is left, giving up after `limit`; what is then still
    /// undelivered is counted and said.
    pub async fn drain(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.queued_spans() > 0 && Instant::now() < deadline {
            if let Some(at) = self.retry_at() {
                tokio::time::sleep_until(at.min(deadline).into()).await;
                if Instant::now() >= deadline {
                    break;
                }
            }
            let Some(batch) = self.next_batch(true) else {
                break;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.launch(batch)).await {
                Ok(Ok((batch, result))) => self.settle(batch, result),
                _ => break,
            }
        }
        let lost = self.queued_spans() as u64;
        if lost > 0 {
            self.drop_spans(Reason::Shutdown, lost, None);
            self.queue.clear();
            self.queue_bytes = 0;
            self.release();
        }
        if let Some(line) = self.drops.flush(Instant::now()) {
            tracing::warn!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        export::env::{OtlpSettings, Protocol},
        span::{Attributes, Resource, SpanKind, Status},
    };

    fn span(i: u8) -> Span {
        let mut attributes = Attributes::default();
        attributes.set("url.path", "/".repeat(100));
        Span {
            trace_id: [i; 16],
            span_id: [i; 8],
            parent_span_id: None,
            trace_state: String::new(),
            flags: 1,
            name: "GET".into(),
            kind: SpanKind::Server,
            start_unix_ns: 1,
            end_unix_ns: 2,
            attributes,
            status: Status::Unset,
            resource: Arc::new(Resource::default()),
        }
    }

    fn exporter(max_queue: usize, max_queue_bytes: usize) -> (Exporter, Arc<Counters>) {
        let settings = OtlpSettings {
            url: "http://127.0.0.1:9/v1/traces".into(),
            metrics_url: "http://127.0.0.1:9/v1/metrics".into(),
            protocol: Protocol::HttpProtobuf,
            headers: vec![],
            timeout: Duration::from_millis(100),
            tls: Default::default(),
        };
        let counters = Arc::new(Counters::default());
        let batch = BatchSettings {
            max_queue,
            max_queue_bytes,
            max_batch: 4,
            ..BatchSettings::default()
        };
        (
            Exporter::new(OtlpClient::new(&settings).unwrap(), batch, counters.clone()),
            counters,
        )
    }

    fn err(retryable: bool) -> Result<Delivered, ExportError> {
        Err(ExportError {
            message: "HTTP 503".into(),
            retryable,
            retry_after: None,
            timed_out: false,
        })
    }

    #[tokio::test]
    async fn span_bound_counts_the_batch_out_for_retry() {
        let (mut ex, c) = exporter(10, usize::MAX);
        ex.enqueue((0..8).map(span).collect());
        let batch = ex.next_batch(true).unwrap();
        assert_eq!(batch.spans, 4);
        let sent = batch.body.clone();
        ex.settle(batch, err(true));
        // 4 held for retry + 4 queued: room for 2 more of these 5.
        ex.enqueue((8..13).map(span).collect());
        assert_eq!(metrics::get(&c.spans_dropped_queue_full), 3);
        assert_eq!(metrics::get(&c.export_queue_spans), 10);
        assert!(ex.next_batch(true).is_none(), "the retry waits its backoff");
        ex.retry.as_mut().unwrap().not_before = Instant::now();
        let again = ex.next_batch(true).unwrap();
        assert_eq!(
            (again.spans, &again.body),
            (4, &sent),
            "the same bytes again"
        );
        ex.settle(again, Ok(Delivered::default()));
        assert_eq!(metrics::get(&c.spans_exported), 4);
        assert_eq!(metrics::get(&c.export_queue_spans), 6);
        assert_eq!(metrics::get(&c.export_errors), 1);
    }

    #[tokio::test]
    async fn byte_bound_drops_what_does_not_fit() {
        let one = span_bytes(&span(0));
        let (mut ex, c) = exporter(1000, one * 3 + one / 2);
        ex.enqueue((0..10).map(span).collect());
        assert_eq!(ex.queued_spans(), 3);
        assert_eq!(metrics::get(&c.spans_dropped_queue_full), 7);
        assert_eq!(metrics::get(&c.export_queue_bytes), (one * 3) as u64);
    }

    #[tokio::test]
    async fn permanent_errors_and_partial_success_are_not_retried() {
        let (mut ex, c) = exporter(100, usize::MAX);
        ex.enqueue((0..8).map(span).collect());
        let b = ex.next_batch(true).unwrap();
        ex.settle(b, err(false));
        assert!(ex.retry.is_none());
        assert_eq!(metrics::get(&c.spans_dropped_export_failed), 4);
        let b = ex.next_batch(true).unwrap();
        ex.settle(
            b,
            Ok(Delivered {
                rejected: 3,
                message: "too old".into(),
            }),
        );
        assert_eq!(metrics::get(&c.spans_rejected), 3);
        assert_eq!(metrics::get(&c.spans_exported), 1);
        assert_eq!(ex.queued_spans(), 0);
        assert!(ex.next_batch(true).is_none());
    }

    #[tokio::test]
    async fn backoff_doubles_to_the_cap_and_honours_retry_after() {
        let (mut ex, _) = exporter(100, usize::MAX);
        ex.batch.max_backoff = Duration::from_secs(2);
        ex.enqueue((0..4).map(span).collect());
        let mut waits = vec![];
        for hint in [None, None, None, None, Some(Duration::from_secs(7))] {
            let b = match ex.next_batch(true) {
                Some(b) => b,
                None => {
                    ex.retry.as_mut().unwrap().not_before = Instant::now();
                    ex.next_batch(true).unwrap()
                }
            };
            let before = Instant::now();
            ex.settle(
                b,
                Err(ExportError {
                    message: "unavailable".into(),
                    retryable: true,
                    retry_after: hint,
                    timed_out: false,
                }),
            );
            let wait = ex.retry.as_ref().unwrap().not_before - before;
            waits.push((wait.as_millis() as u64 + 50) / 100 * 100);
        }
        assert_eq!(waits, vec![500, 1000, 2000, 2000, 7000]);
    }
}
