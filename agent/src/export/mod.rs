//! The last stage: spans leave the agent, to an OTLP backend or the console.
//!
//! The exporter never slows the pipeline down: spans wait in a bounded queue,
//! one request is in flight at a time, failures are retried with backoff, and
//! whatever does not fit is dropped and counted (and logged, rate-limited).
pub mod console;
pub mod env;
pub mod otlp;
pub mod otlp_metrics;

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{sync::mpsc, task::JoinHandle};

use crate::{
    metrics::{self, Counters},
    span::Span,
};
use env::{BatchSettings, OtlpSettings};
use otlp::{Delivered, ExportError, OtlpClient};

/// How spans look on the console.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleFormat {
    /// Each finished trace as an indented tree with time bars and gaps.
    Waterfall,
    /// One line per span as it finishes.
    Lines,
}

/// Where spans go.
#[derive(Clone, Debug)]
pub enum Output {
    Console(ConsoleFormat),
    Otlp(OtlpSettings),
}

/// Longest a failing batch is retried before it is dropped.
const MAX_RETRY_TIME: Duration = Duration::from_secs(300);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Drops are logged at most this often.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// Runs until `rx` closes, then flushes what is queued (for up to `drain`).
pub async fn run(
    mut rx: mpsc::Receiver<Vec<Span>>,
    output: Output,
    batch: BatchSettings,
    counters: Arc<Counters>,
    drain: Duration,
) -> Result<(), String> {
    match output {
        Output::Console(ConsoleFormat::Lines) => {
            while let Some(spans) = rx.recv().await {
                let text: String = spans
                    .iter()
                    .map(|s| console::format_span(s) + "\n")
                    .collect();
                console::write_out(&text);
                metrics::add(&counters.spans_exported, spans.len() as u64);
            }
            Ok(())
        }
        Output::Console(ConsoleFormat::Waterfall) => {
            let mut waterfall = console::Waterfall::new(console::terminal_width());
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    msg = rx.recv() => match msg {
                        Some(spans) => {
                            metrics::add(&counters.spans_exported, spans.len() as u64);
                            waterfall.add(spans, Instant::now());
                        }
                        None => break,
                    },
                    _ = tick.tick() => {}
                }
                for trace in waterfall.due(Instant::now()) {
                    console::write_out(&format!("{trace}\n"));
                }
            }
            for trace in waterfall.flush() {
                console::write_out(&format!("{trace}\n"));
            }
            Ok(())
        }
        Output::Otlp(settings) => {
            let client = OtlpClient::new(&settings)?;
            let mut exporter = Exporter::new(client, batch, counters);
            exporter.run(&mut rx).await;
            exporter.drain(drain).await;
            Ok(())
        }
    }
}

type Flight = JoinHandle<(Vec<Span>, Result<Delivered, ExportError>)>;

struct Retry {
    batch: Vec<Span>,
    first_failure: Instant,
    backoff: Duration,
    not_before: Instant,
}

struct Exporter {
    client: OtlpClient,
    batch: BatchSettings,
    counters: Arc<Counters>,
    queue: VecDeque<Span>,
    retry: Option<Retry>,
    last_drop_log: Option<Instant>,
    dropped_since_log: u64,
}

impl Exporter {
    fn new(client: OtlpClient, batch: BatchSettings, counters: Arc<Counters>) -> Self {
        Self {
            client,
            batch,
            counters,
            queue: VecDeque::new(),
            retry: None,
            last_drop_log: None,
            dropped_since_log: 0,
        }
    }

    fn enqueue(&mut self, spans: Vec<Span>) {
        let room = self.batch.max_queue.saturating_sub(self.queued());
        let n = spans.len();
        self.queue.extend(spans.into_iter().take(room));
        if n > room {
            let lost = (n - room) as u64;
            metrics::add(&self.counters.spans_dropped_queue_full, lost);
            self.note_drop(lost, "export queue full");
        }
    }

    fn queued(&self) -> usize {
        self.queue.len() + self.retry.as_ref().map_or(0, |r| r.batch.len())
    }

    fn note_drop(&mut self, n: u64, why: &str) {
        self.dropped_since_log += n;
        let now = Instant::now();
        if self.last_drop_log.is_none_or(|t| now - t >= DROP_LOG_EVERY) {
            tracing::warn!(
                spans = self.dropped_since_log,
                reason = why,
                "dropping spans (counted in seam_spans_dropped_*); the backend is slow or down"
            );
            self.last_drop_log = Some(now);
            self.dropped_since_log = 0;
        }
    }

    /// The next batch to send now, if any.
    fn next_batch(&mut self, timer_fired: bool) -> Option<Vec<Span>> {
        if let Some(retry) = &self.retry {
            if Instant::now() < retry.not_before {
                return None;
            }
            return self.retry.as_ref().map(|r| r.batch.clone());
        }
        if self.queue.is_empty() || (!timer_fired && self.queue.len() < self.batch.max_batch) {
            return None;
        }
        let n = self.queue.len().min(self.batch.max_batch);
        Some(self.queue.drain(..n).collect())
    }

    fn launch(&self, spans: Vec<Span>) -> Flight {
        let mut client = self.client.clone();
        tokio::spawn(async move {
            let result = client.export(otlp::request(&spans)).await;
            (spans, result)
        })
    }

    fn settle(&mut self, spans: Vec<Span>, result: Result<Delivered, ExportError>) {
        let n = spans.len() as u64;
        match result {
            Ok(delivered) => {
                self.retry = None;
                metrics::add(&self.counters.spans_exported, n - delivered.rejected.min(n));
                if delivered.rejected > 0 {
                    metrics::add(
                        &self.counters.spans_dropped_export_failed,
                        delivered.rejected,
                    );
                    tracing::warn!(
                        rejected = delivered.rejected,
                        message = %delivered.message,
                        "the backend rejected part of a batch"
                    );
                }
            }
            Err(e) => {
                metrics::inc(&self.counters.export_errors);
                let now = Instant::now();
                let first = self.retry.as_ref().map_or(now, |r| r.first_failure);
                if e.retryable && now - first < MAX_RETRY_TIME {
                    let backoff = self.retry.as_ref().map_or(Duration::from_millis(500), |r| {
                        (r.backoff * 2).min(MAX_BACKOFF)
                    });
                    if self.retry.is_none() {
                        tracing::warn!(error = %e, "export failed; retrying with backoff");
                    }
                    self.retry = Some(Retry {
                        batch: spans,
                        first_failure: first,
                        backoff,
                        not_before: now + backoff,
                    });
                } else {
                    self.retry = None;
                    metrics::add(&self.counters.spans_dropped_export_failed, n);
                    tracing::warn!(error = %e, spans = n, "export failed; batch dropped");
                }
            }
        }
    }

    async fn run(&mut self, rx: &mut mpsc::Receiver<Vec<Span>>) {
        let mut tick = tokio::time::interval(self.batch.schedule_delay);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flight: Option<Flight> = None;
        loop {
            let mut timer_fired = false;
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(spans) => self.enqueue(spans),
                    None => break,
                },
                _ = tick.tick() => timer_fired = true,
                done = async { flight.as_mut().expect("guarded").await }, if flight.is_some() => {
                    flight = None;
                    match done {
                        Ok((spans, result)) => self.settle(spans, result),
                        Err(e) => tracing::error!(error = %e, "export task failed"),
                    }
                }
            }
            if flight.is_none()
                && let Some(batch) = self.next_batch(timer_fired)
            {
                flight = Some(self.launch(batch));
            }
        }
        if let Some(f) = flight
            && let Ok((spans, result)) = f.await
        {
            self.settle(spans, result);
        }
    }

    /// Sends what is left, giving up after `limit`.
    async fn drain(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.queued() > 0 && Instant::now() < deadline {
            if let Some(retry) = &self.retry {
                tokio::time::sleep_until(retry.not_before.into()).await;
            }
            let Some(batch) = self.next_batch(true) else {
                break;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.launch(batch)).await {
                Ok(Ok((spans, result))) => self.settle(spans, result),
                _ => break,
            }
        }
        let lost = self.queued() as u64;
        if lost > 0 {
            metrics::add(&self.counters.spans_dropped_export_failed, lost);
            tracing::warn!(spans = lost, "spans not delivered before shutdown");
        }
    }
}
