//! The live status line: while stderr is a terminal, one line under the
//! logs, redrawn every few seconds with the figures of `/status`. Log lines
//! go through [`Stderr`], which clears the line, writes the log line and
//! draws the status again below it.
use std::{
    io::{self, Write as _},
    sync::{Mutex, MutexGuard},
    time::Instant,
};

use super::serve::StatusFigures;

/// The line on screen now; empty when none is shown.
static SHOWN: Mutex<String> = Mutex::new(String::new());

/// Carriage return, then erase the whole line.
const CLEAR: &[u8] = b"\r\x1b[2K";

fn shown() -> MutexGuard<'static, String> {
    // A panic while drawing leaves a line that is still a valid string.
    SHOWN.lock().unwrap_or_else(|e| e.into_inner())
}

/// The status text: processes traced, request rate, spans exported, drops
/// (spans dropped plus probe events lost).
pub fn format(figures: &StatusFigures, requests_per_second: f64) -> String {
    format!(
        "status: processes traced {}, requests/s {:.1}, spans exported {}, dropped {}",
        figures.traced_processes,
        requests_per_second,
        figures.spans_exported,
        figures.spans_dropped + figures.events_lost,
    )
}

/// Draws the status from successive samples of the figures.
#[derive(Default)]
pub struct StatusLine {
    last: Option<(Instant, u64)>,
}

impl StatusLine {
    pub fn refresh(&mut self, figures: &StatusFigures) {
        let now = Instant::now();
        let rate = match self.last {
            Some((at, requests)) => {
                let secs = now.duration_since(at).as_secs_f64();
                if secs > 0.0 {
                    figures.requests.saturating_sub(requests) as f64 / secs
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        self.last = Some((now, figures.requests));
        show(format(figures, rate));
    }
}

/// Replaces the status line on screen.
pub fn show(line: String) {
    let mut on_screen = shown();
    let mut err = io::stderr().lock();
    let _ = err.write_all(CLEAR);
    let _ = err.write_all(line.as_bytes());
    let _ = err.flush();
    *on_screen = line;
}

/// Removes the status line (before the last log lines, at exit).
pub fn clear() {
    let mut on_screen = shown();
    if !on_screen.is_empty() {
        let mut err = io::stderr().lock();
        let _ = err.write_all(CLEAR);
        let _ = err.flush();
        on_screen.clear();
    }
}

/// Where log lines go: stderr, above the status line when one is shown.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = StderrWriter;

    fn make_writer(&'a self) -> Self::Writer {
        StderrWriter
    }
}

pub struct StderrWriter;

impl io::Write for StderrWriter {
    /// The formatter hands over each log line whole, in one call.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let on_screen = shown();
        let mut err = io::stderr().lock();
        if on_screen.is_empty() {
            err.write_all(buf)?;
        } else {
            err.write_all(CLEAR)?;
            err.write_all(buf)?;
            if buf.ends_with(b"\n") {
                err.write_all(on_screen.as_bytes())?;
            }
            err.flush()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_has_the_figures() {
        let f = StatusFigures {
            traced_processes: 3,
            requests: 40,
            spans_exported: 120,
            spans_dropped: 2,
            events_lost: 5,
            ..Default::default()
        };
        assert_eq!(
            format(&f, 12.34),
            "status: processes traced 3, requests/s 12.3, spans exported 120, dropped 7"
        );
    }
}
