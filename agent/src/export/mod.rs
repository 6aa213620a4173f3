//! The last stage: spans leave the agent, to an OTLP backend or the console.
//!
//! The exporter never slows the pipeline down: spans wait in a bounded queue,
//! one request is in flight at a time, failures are retried with backoff, and
//! whatever does not fit is dropped and counted (and logged, rate-limited);
//! see [`sender`].
pub mod console;
pub mod drops;
pub mod env;
pub mod otlp;
pub mod otlp_encode;
pub mod otlp_metrics;
pub mod retry_hint;
pub mod sender;
pub mod tls;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use crate::{
    metrics::{self, Counters},
    span::Span,
};
use env::{BatchSettings, OtlpSettings};
use otlp::OtlpClient;
use sender::Exporter;

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
#[expect(
    clippy::large_enum_variant,
    reason = "one value per agent, made once from the configuration"
)]
pub enum Output {
    Console(ConsoleFormat),
    Otlp(OtlpSettings),
}

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
