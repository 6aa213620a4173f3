//! Rate-limited reporting of lost spans. While a backend is down, spans can
//! be dropped by the thousand per second; one log line per batch (let alone
//! per span) would flood the log the operator needs to read. Drops are added
//! up per reason and said at most once per interval, and whatever is still
//! unsaid is said at shutdown, so the lines add up to the counters.
use std::time::{Duration, Instant};

/// Why spans were lost; each has its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The queue was at its span or byte bound (`seam_spans_dropped_queue_full_total`).
    QueueFull,
    /// The backend refused the batch for good, e.g. HTTP 400
    /// (`seam_spans_dropped_export_failed_total`).
    Refused,
    /// Retries of a failing batch ran out (`seam_spans_dropped_export_failed_total`).
    RetriesExhausted,
    /// The agent stopped with spans still undelivered
    /// (`seam_spans_dropped_export_failed_total`).
    Shutdown,
    /// Partial success: the backend rejected some spans of a request it
    /// accepted (`seam_spans_rejected_total`).
    Rejected,
}

const REASONS: [Reason; 5] = [
    Reason::QueueFull,
    Reason::Refused,
    Reason::RetriesExhausted,
    Reason::Shutdown,
    Reason::Rejected,
];

impl Reason {
    fn describe(self) -> &'static str {
        match self {
            Reason::QueueFull => "export queue full",
            Reason::Refused => "refused by the backend",
            Reason::RetriesExhausted => "retries exhausted",
            Reason::Shutdown => "undelivered at shutdown",
            Reason::Rejected => "rejected by the backend (partial success)",
        }
    }

    fn index(self) -> usize {
        REASONS.iter().position(|r| *r == self).expect("listed")
    }
}

/// Drops not yet logged, per reason, with the last detail (error text) seen.
pub struct DropLog {
    every: Duration,
    last_line: Option<Instant>,
    pending: [u64; REASONS.len()],
    detail: [Option<String>; REASONS.len()],
}

impl DropLog {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last_line: None,
            pending: [0; REASONS.len()],
            detail: Default::default(),
        }
    }

    /// Records `n` lost spans; returns the line to log if one is due now.
    pub fn note(
        &mut self,
        reason: Reason,
        n: u64,
        detail: Option<&str>,
        now: Instant,
    ) -> Option<String> {
        if n == 0 {
            return None;
        }
        self.pending[reason.index()] += n;
        if let Some(d) = detail {
            self.detail[reason.index()] = Some(d.to_string());
        }
        self.due(now)
    }

    /// The line to log if drops are pending and the interval has passed
    /// since the last line (the first drop is said at once).
    pub fn due(&mut self, now: Instant) -> Option<String> {
        if self.last_line.is_some_and(|t| now - t < self.every) {
            return None;
        }
        self.line(now)
    }

    /// Whatever is pending, regardless of the interval (at shutdown).
    pub fn flush(&mut self, now: Instant) -> Option<String> {
        self.line(now)
    }

    fn line(&mut self, now: Instant) -> Option<String> {
        let total: u64 = self.pending.iter().sum();
        if total == 0 {
            return None;
        }
        let parts: Vec<String> = REASONS
            .iter()
            .zip(self.pending.iter().zip(self.detail.iter_mut()))
            .filter(|(_, (n, _))| **n > 0)
            .map(|(r, (n, detail))| match detail.take() {
                Some(d) => format!("{n} {}: {d}", r.describe()),
                None => format!("{n} {}", r.describe()),
            })
            .collect();
        self.pending = [0; REASONS.len()];
        let since = match self.last_line {
            Some(t) => format!("in the last {:.0}s", (now - t).as_secs_f64()),
            None => "so far".to_string(),
        };
        self.last_line = Some(now);
        Some(format!(
            "dropped {total} spans {since} ({}); lines like this one come at most every {}s",
            parts.join("; "),
            self.every.as_secs()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The count in a line, for adding them up.
    fn count(line: &str) -> u64 {
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn first_drop_is_said_then_one_line_per_interval() {
        let t0 = Instant::now();
        let mut log = DropLog::new(Duration::from_secs(10));
        let first = log
            .note(Reason::QueueFull, 3, None, t0)
            .expect("said at once");
        assert_eq!(
            first,
            "dropped 3 spans so far (3 export queue full); lines like this one come at most every 10s"
        );
        let mut said = vec![first];
        // A thousand drops within the interval: silent.
        for i in 1..=1000u64 {
            let now = t0 + Duration::from_millis(i * 9);
            if let Some(l) = log.note(Reason::QueueFull, 1, None, now) {
                said.push(l);
            }
        }
        assert_eq!(said.len(), 1);
        assert_eq!(
            log.note(
                Reason::Rejected,
                2,
                Some("spans too old"),
                t0 + Duration::from_secs(9)
            ),
            None
        );
        // Nothing new after the interval, but pending drops: said by `due`.
        let line = log.due(t0 + Duration::from_secs(10)).expect("due");
        assert_eq!(
            line,
            "dropped 1002 spans in the last 10s (1000 export queue full; 2 rejected by the backend \
             (partial success): spans too old); lines like this one come at most every 10s"
        );
        said.push(line);
        assert_eq!(
            log.due(t0 + Duration::from_secs(30)),
            None,
            "nothing pending"
        );
        assert_eq!(
            log.note(
                Reason::Refused,
                7,
                Some("HTTP 400"),
                t0 + Duration::from_secs(31)
            )
            .map(|l| count(&l)),
            Some(7)
        );
        assert_eq!(
            log.note(Reason::Shutdown, 4, None, t0 + Duration::from_secs(32)),
            None
        );
        said.push(log.flush(t0 + Duration::from_secs(32)).expect("flushed"));
        assert_eq!(
            said.iter().map(|l| count(l)).sum::<u64>() + 7,
            3 + 1002 + 7 + 4
        );
        assert_eq!(log.flush(t0 + Duration::from_secs(33)), None);
    }
}
