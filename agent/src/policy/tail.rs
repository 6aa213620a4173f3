//! Tail sampling (opt-in): spans are held per trace until the trace's decision
//! window has passed, then the whole trace is kept or dropped by looking at
//! all of its spans.
//!
//! # Rules
//!
//! * **Window.** A trace is decided once `decision_wait` has passed since its
//!   *first* span arrived; later spans do not extend it.
//! * **Policy.** Keep the trace if any span has [`Status::Error`]; else if its
//!   duration (latest end minus earliest start over its spans) is at least
//!   `latency_threshold`; else with probability `keep_ratio`, decided by the
//!   same trace-id rule as the head sampler ([`TraceIdRatio`]), so agents on
//!   different hosts keep the same ordinary traces.
//! * **Rate cap.** Kept traces spend a token from a bucket refilled at
//!   `max_traces_per_second` and holding at most one second's worth
//!   (0 disables the cap). Traces decided together (one `poll`, or `flush`)
//!   spend tokens in priority order — errors, then slow traces, then
//!   ratio-sampled ones, each in arrival order — so when the cap binds, error
//!   traces are the last to be refused. Priority does not reach across polls:
//!   tokens spent by an earlier poll are gone. A refused trace is dropped and
//!   counted in both `rate_limited_traces` and `dropped_traces`.
//! * **Late spans.** Decisions are remembered (the most recent
//!   `remembered_decisions` of them, oldest forgotten first); a span of a
//!   remembered trace follows its decision — emitted by the next `poll` if kept,
//!   discarded otherwise — and is counted in `late_spans`. A span of a
//!   forgotten trace starts a new window.
//! * **Memory.** At most `max_buffered_spans` spans are held, counting both
//!   undecided spans and kept spans waiting for the next `poll`. When a span
//!   arrives and the budget is full, the oldest undecided trace is decided
//!   early (its window cut short, same policy), repeatedly, until there is
//!   room; each such trace is counted in `early_decisions`. Early decisions
//!   were chosen over dropping the newest span because the oldest trace is the
//!   closest to its deadline anyway, and dropping new spans would break every
//!   trace in flight. If the budget is still full — kept spans waiting for
//!   `poll` fill it on their own — the new span is dropped and counted in
//!   `dropped_spans`.
//!
//! `now` is expected not to go backwards; an earlier `now` is treated as the
//! latest one seen.
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::policy::sampler::TraceIdRatio;
use crate::span::{Span, Status, TraceId};

#[derive(Clone, Debug, PartialEq)]
pub struct TailConfig {
    pub decision_wait: Duration,
    pub latency_threshold: Duration,
    /// Share of traces that are neither erroneous nor slow that are kept.
    pub keep_ratio: f64,
    /// 0 means no cap.
    pub max_traces_per_second: u32,
    pub max_buffered_spans: usize,
    /// How many past decisions are remembered for late spans.
    pub remembered_decisions: usize,
}

impl Default for TailConfig {
    fn default() -> Self {
        TailConfig {
            decision_wait: Duration::from_secs(5),
            latency_threshold: Duration::from_secs(1),
            keep_ratio: 0.05,
            max_traces_per_second: 100,
            max_buffered_spans: 100_000,
            remembered_decisions: 100_000,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TailStats {
    /// Spans held now: undecided, or kept and waiting for `poll`.
    pub buffered_spans: usize,
    /// Undecided traces held now.
    pub buffered_traces: usize,
    /// Spans refused because the buffer was full.
    pub dropped_spans: u64,
    pub kept_traces: u64,
    /// Includes the rate-limited ones.
    pub dropped_traces: u64,
    pub rate_limited_traces: u64,
    /// Traces decided before their window ended to make room.
    pub early_decisions: u64,
    /// Spans that arrived after their trace was decided.
    pub late_spans: u64,
}

struct Pending {
    first_seen: Instant,
    spans: Vec<Span>,
    error: bool,
    min_start: u64,
    max_end: u64,
}

impl Pending {
    fn duration_ns(&self) -> u64 {
        self.max_end.saturating_sub(self.min_start)
    }
}

/// Why a trace is a candidate for keeping; the order is the rate-cap priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    Error,
    Slow,
    Sampled,
    Drop,
}

struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second);
        TokenBucket {
            rate,
            tokens: rate,
            last: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        }
        self.last = Some(now);
    }

    fn take(&mut self) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Bounded memory of past decisions, forgetting the oldest first.
struct Decisions {
    capacity: usize,
    next_seq: u64,
    by_trace: HashMap<TraceId, (bool, u64)>,
    order: VecDeque<(TraceId, u64)>,
}

impl Decisions {
    fn new(capacity: usize) -> Self {
        Decisions {
            capacity,
            next_seq: 0,
            by_trace: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn get(&self, id: &TraceId) -> Option<bool> {
        self.by_trace.get(id).map(|&(kept, _)| kept)
    }

    fn insert(&mut self, id: TraceId, kept: bool) {
        if self.capacity == 0 {
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_trace.insert(id, (kept, seq));
        self.order.push_back((id, seq));
        while self.by_trace.len() > self.capacity {
            let Some((old, old_seq)) = self.order.pop_front() else {
                break;
            };
            // A trace decided twice (forgotten, then seen again) has an older
            // queue entry that must not evict the newer decision.
            if self.by_trace.get(&old).is_some_and(|&(_, s)| s == old_seq) {
                self.by_trace.remove(&old);
            }
        }
        // Stale entries accumulate when traces are re-decided; compact then.
        if self.order.len() > 2 * self.capacity.max(16) {
            let by_trace = &self.by_trace;
            self.order
                .retain(|(id, seq)| by_trace.get(id).is_some_and(|&(_, s)| s == *seq));
        }
    }
}

pub struct TailSampler {
    cfg: TailConfig,
    ratio: TraceIdRatio,
    latency_threshold_ns: u64,
    pending: HashMap<TraceId, Pending>,
    /// Undecided traces by first arrival; entries of traces decided early are
    /// skipped when met.
    arrivals: VecDeque<(Instant, TraceId)>,
    decisions: Decisions,
    /// Kept spans waiting for the next `poll`.
    ready: Vec<Span>,
    pending_spans: usize,
    bucket: TokenBucket,
    last_now: Option<Instant>,
    stats: TailStats,
}

impl TailSampler {
    /// `keep_ratio` outside `[0, 1]` is clamped into it (the configuration
    /// layer rejects such values before they get here).
    pub fn new(cfg: TailConfig) -> TailSampler {
        let keep = if cfg.keep_ratio.is_nan() {
            0.0
        } else {
            cfg.keep_ratio.clamp(0.0, 1.0)
        };
        let ratio = TraceIdRatio::new(keep).unwrap_or_else(|_| unreachable!("clamped above"));
        let latency_threshold_ns =
            u64::try_from(cfg.latency_threshold.as_nanos()).unwrap_or(u64::MAX);
        TailSampler {
            ratio,
            latency_threshold_ns,
            pending: HashMap::new(),
            arrivals: VecDeque::new(),
            decisions: Decisions::new(cfg.remembered_decisions),
            ready: Vec::new(),
            pending_spans: 0,
            bucket: TokenBucket::new(cfg.max_traces_per_second),
            last_now: None,
            stats: TailStats::default(),
            cfg,
        }
    }

    fn clamp_now(&mut self, now: Instant) -> Instant {
        let now = self.last_now.map_or(now, |last| last.max(now));
        self.last_now = Some(now);
        now
    }

    fn buffered(&self) -> usize {
        self.pending_spans + self.ready.len()
    }

    pub fn push(&mut self, span: Span, now: Instant) {
        let now = self.clamp_now(now);
        let id = span.trace_id;
        if let Some(kept) = self.decisions.get(&id) {
            self.stats.late_spans += 1;
            self.follow(span, kept);
            return;
        }
        while self.buffered() >= self.cfg.max_buffered_spans
            && self.ready.len() < self.cfg.max_buffered_spans
            && self.decide_oldest_early(now)
        {}
        if let Some(kept) = self.decisions.get(&id) {
            // Its own trace was the oldest and has just been decided.
            self.follow(span, kept);
            return;
        }
        if self.buffered() >= self.cfg.max_buffered_spans {
            self.stats.dropped_spans += 1;
            return;
        }
        self.pending_spans += 1;
        match self.pending.entry(id) {
            Entry::Occupied(mut e) => {
                let p = e.get_mut();
                p.error |= span.status == Status::Error;
                p.min_start = p.min_start.min(span.start_unix_ns);
                p.max_end = p.max_end.max(span.end_unix_ns);
                p.spans.push(span);
            }
            Entry::Vacant(e) => {
                self.arrivals.push_back((now, id));
                e.insert(Pending {
                    first_seen: now,
                    error: span.status == Status::Error,
                    min_start: span.start_unix_ns,
                    max_end: span.end_unix_ns,
                    spans: vec![span],
                });
            }
        }
    }

    /// Routes a span of an already-decided trace.
    fn follow(&mut self, span: Span, kept: bool) {
        if !kept {
            return;
        }
        if self.buffered() >= self.cfg.max_buffered_spans {
            self.stats.dropped_spans += 1;
        } else {
            self.ready.push(span);
        }
    }

    /// Pops the oldest live arrival, skipping entries whose trace was already
    /// decided (or decided and started again later).
    fn pop_oldest(&mut self) -> Option<(TraceId, Pending)> {
        while let Some((seen, id)) = self.arrivals.pop_front() {
            if self.pending.get(&id).is_some_and(|p| p.first_seen == seen) {
                let p = self.pending.remove(&id)?;
                self.pending_spans -= p.spans.len();
                return Some((id, p));
            }
        }
        None
    }

    fn decide_oldest_early(&mut self, now: Instant) -> bool {
        match self.pop_oldest() {
            Some(trace) => {
                self.stats.early_decisions += 1;
                self.decide(vec![trace], now);
                true
            }
            None => false,
        }
    }

    fn verdict(&self, id: &TraceId, p: &Pending) -> Verdict {
        if p.error {
            Verdict::Error
        } else if p.duration_ns() >= self.latency_threshold_ns {
            Verdict::Slow
        } else if self.ratio.samples(id) {
            Verdict::Sampled
        } else {
            Verdict::Drop
        }
    }

    fn decide(&mut self, batch: Vec<(TraceId, Pending)>, now: Instant) {
        self.bucket.refill(now);
        let mut judged: Vec<(Verdict, TraceId, Pending)> = batch
            .into_iter()
            .map(|(id, p)| (self.verdict(&id, &p), id, p))
            .collect();
        // Stable: arrival order is kept within each priority class.
        judged.sort_by_key(|(v, _, _)| *v);
        for (verdict, id, p) in judged {
            let kept = match verdict {
                Verdict::Drop => false,
                _ if self.bucket.take() => true,
                _ => {
                    self.stats.rate_limited_traces += 1;
                    false
                }
            };
            if kept {
                self.stats.kept_traces += 1;
                self.ready.extend(p.spans);
            } else {
                self.stats.dropped_traces += 1;
            }
            self.decisions.insert(id, kept);
        }
    }

    /// Decides every trace whose window has passed and moves the spans of
    /// kept traces (and kept late spans) into `out`.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Span>) {
        let now = self.clamp_now(now);
        let mut due = Vec::new();
        while let Some(&(seen, _)) = self.arrivals.front() {
            if now.saturating_duration_since(seen) < self.cfg.decision_wait {
                break;
            }
            match self.pop_oldest() {
                Some(trace) => due.push(trace),
                None => break,
            }
        }
        if !due.is_empty() {
            self.decide(due, now);
        }
        out.append(&mut self.ready);
    }

    /// Decides everything now (shutdown) and moves kept spans into `out`.
    pub fn flush(&mut self, out: &mut Vec<Span>) {
        let now = self.last_now.unwrap_or_else(Instant::now);
        let mut all = Vec::with_capacity(self.pending.len());
        while let Some(trace) = self.pop_oldest() {
            all.push(trace);
        }
        if !all.is_empty() {
            self.decide(all, now);
        }
        out.append(&mut self.ready);
    }

    pub fn stats(&self) -> TailStats {
        TailStats {
            buffered_spans: self.buffered(),
            buffered_traces: self.pending.len(),
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::sampler::tests::Rng;
    use crate::span::{Attributes, Resource, SpanKind};
    use std::sync::Arc;

    const MS: u64 = 1_000_000;

    fn span(trace: TraceId, n: u8, start_ms: u64, end_ms: u64, status: Status) -> Span {
        Span {
            trace_id: trace,
            span_id: [n; 8],
            parent_span_id: None,
            trace_state: String::new(),
            flags: 1,
            name: "GET /".to_string(),
            kind: SpanKind::Server,
            start_unix_ns: start_ms * MS,
            end_unix_ns: end_ms * MS,
            attributes: Attributes::default(),
            status,
            resource: Arc::new(Resource::default()),
        }
    }

    fn fast(trace: TraceId, n: u8) -> Span {
        span(trace, n, 0, 10, Status::Unset)
    }

    fn cfg(keep_ratio: f64) -> TailConfig {
        TailConfig {
            keep_ratio,
            max_traces_per_second: 0,
            ..TailConfig::default()
        }
    }

    fn tid(n: u32) -> TraceId {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&n.to_be_bytes());
        id
    }

    fn ids(spans: &[Span]) -> Vec<TraceId> {
        let mut v: Vec<TraceId> = spans.iter().map(|s| s.trace_id).collect();
        v.dedup();
        v
    }

    #[test]
    fn nothing_is_emitted_before_the_window_ends() {
        let t0 = Instant::now();
        let mut s = TailSampler::new(cfg(1.0));
        s.push(fast(tid(1), 1), t0);
        s.push(fast(tid(1), 2), t0 + Duration::from_secs(4));
        let mut out = vec![];
        s.poll(t0 + Duration::from_millis(4999), &mut out);
        assert!(out.is_empty());
        assert_eq!(s.stats().buffered_spans, 2);
        assert_eq!(s.stats().buffered_traces, 1);
        // The window counts from the first span, not the latest one.
        s.poll(t0 + Duration::from_secs(5), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(s.stats().buffered_spans, 0);
        assert_eq!(s.stats().kept_traces, 1);
    }

    #[test]
    fn error_traces_are_kept_whatever_the_ratio() {
        let t0 = Instant::now();
        let mut s = TailSampler::new(cfg(0.0));
        s.push(fast(tid(1), 1), t0);
        s.push(span(tid(1), 2, 1, 2, Status::Error), t0);
        s.push(fast(tid(2), 1), t0);
        let mut out = vec![];
        s.poll(t0 + Duration::from_secs(6), &mut out);
        assert_eq!(ids(&out), vec![tid(1)]);
        assert_eq!(out.len(), 2);
        let st = s.stats();
        assert_eq!((st.kept_traces, st.dropped_traces), (1, 1));
    }

    #[test]
    fn slow_traces_are_kept() {
        let t0 = Instant::now();
        let mut s = TailSampler::new(cfg(0.0));
        // Each span is fast, but together they cover exactly one second.
        s.push(span(tid(1), 1, 100, 200, Status::Unset), t0);
        s.push(span(tid(1), 2, 1000, 1100, Status::Unset), t0);
        // 999 ms: just under the threshold.
        s.push(span(tid(2), 1, 0, 999, Status::Unset), t0);
        s.push(span(tid(3), 1, 0, 5000, Status::Unset), t0);
        let mut out = vec![];
        s.poll(t0 + Duration::from_secs(5), &mut out);
        let mut kept = ids(&out);
        kept.sort();
        assert_eq!(kept, vec![tid(1), tid(3)]);
    }

    #[test]
    fn ordinary_traces_follow_the_trace_id_ratio() {
        let t0 = Instant::now();
        let ratio = 0.1;
        let mut s = TailSampler::new(cfg(ratio));
        let rule = TraceIdRatio::new(ratio).unwrap();
        let mut rng = Rng(99);
        let traces: Vec<TraceId> = (0..20_000).map(|_| rng.trace_id()).collect();
        for (i, id) in traces.iter().enumerate() {
            s.push(fast(*id, 1), t0 + Duration::from_micros(i as u64));
        }
        let mut out = vec![];
        s.poll(t0 + Duration::from_secs(10), &mut out);
        let kept: std::collections::HashSet<TraceId> = out.iter().map(|s| s.trace_id).collect();
        for id in &traces {
            assert_eq!(kept.contains(id), rule.samples(id));
        }
        let n = traces.len() as f64;
        let sd = (n * ratio * (1.0 - ratio)).sqrt();
        assert!(
            (kept.len() as f64 - n * ratio).abs() <= 5.0 * sd,
            "{}",
            kept.len()
        );
        let st = s.stats();
        assert_eq!(st.kept_traces + st.dropped_traces, traces.len() as u64);
    }

    #[test]
    fn late_spans_follow_the_decision() {
        let t0 = Instant::now();
        let mut s = TailSampler::new(cfg(0.0));
        s.push(span(tid(1), 1, 0, 1, Status::Error), t0);
        s.push(fast(tid(2), 1), t0);
        let mut out = vec![];
        s.poll(t0 + Duration::from_secs(5), &mut out);
        assert_eq!(ids(&out), vec![tid(1)]);
        out.clear();
        let later = t0 + Duration::from_secs(6);
        s.push(fast(tid(1), 2), later);
        // Even an error span cannot resurrect a trace already dropped.
        s.push(span(tid(2), 2, 0, 1, Status::Error), later);
        assert_eq!(s.stats().buffered_traces, 0);
        s.poll(later, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].trace_id, tid(1));
        assert_eq!(out[0].span_id, [2; 8]);
        assert_eq!(s.stats().late_spans, 2);
        assert_eq!(s.stats().kept_traces, 1);
    }

    #[test]
    fn decision_memory_is_bounded() {
        let t0 = Instant::now();
        let mut s = TailSampler::new(TailConfig {
            remembered_decisions: 2,
            ..cfg(1.0)
        });
        for n in 1..=3 {
            s.push(fast(tid(n), 1), t0);
        }
        let mut out = vec![];
        s.poll(t0 + Duration::from_secs(5), &mut out);
        assert_eq!(out.len(), 3);
        // Trace 1 was forgotten: its late span opens a new window instead.
        s.push(fast(tid(1), 2), t0 + Duration::from_secs(6));
        s.push(fast(tid(3), 2), t0 + Duration::from_secs(6));
        let st = s.stats();
        assert_eq!(st.late_spans, 1);
        assert_eq!(st.buffered_traces, 1);
        assert!(s.decisions.by_trace.len() <= 2);
    }

    #[test]
    fn rate_cap_prefers_errors_then_slow_traces() {
        let t0 = Instant::now();
        let mut s = TailSampler::new(TailConfig {
            keep_ratio: 1.0,
            max_traces_per_second: 10,
            ..TailConfig::default()
        });
        // Ordinary traces arrive first, so arrival order alone would favour them.
        for n in 0..20 {
            s.push(fast(tid(n), 1), t0);
        }
        for n in 100..104 {
            s.push(span(tid(n), 1, 0, 2000, Status::Unset), t0);
        }
        for n in 200..205 {
            s.push(span(tid(n), 1, 0, 1, Status::Error), t0);
        }
        let mut out = vec![];
        s.poll(t0 + Duration::from_secs(5), &mut out);
        let kept = ids(&out);
        assert_eq!(kept.len(), 10);
        for n in 200..205 {
            assert!(kept.contains(&tid(n)), "error trace {n} refused");
        }
        for n in 100..104 {
            assert!(kept.contains(&tid(n)), "slow trace {n} refused");
        }
        // The single remaining token goes to the first ordinary trace to arrive.
        assert!(kept.contains(&tid(0)));
        let st = s.stats();
        assert_eq!(st.kept_traces, 10);
        assert_eq!(st.rate_limited_traces, 19);
        assert_eq!(st.dropped_traces, 19);
    }

    #[test]
    fn rate_cap_refills_over_time() {
        let t0 = Instant::now();
        let mut s = TailSampler::new(TailConfig {
            keep_ratio: 1.0,
            max_traces_per_second: 5,
            ..TailConfig::default()
        });
        let mut out = vec![];
        for n in 0..10 {
            s.push(fast(tid(n), 1), t0);
        }
        for n in 10..20 {
            s.push(fast(tid(n), 1), t0 + Duration::from_millis(500));
        }
        s.poll(t0 + Duration::from_secs(5), &mut out);
        assert_eq!(out.len(), 5);
        // Half a second after the last decision refills half the bucket.
        out.clear();
        s.poll(t0 + Duration::from_millis(5500), &mut out);
        assert_eq!(out.len(), 2);
        // Never more than one second's worth, however long the pause.
        for n in 20..40 {
            s.push(fast(tid(n), 1), t0 + Duration::from_secs(100));
        }
        out.clear();
        s.poll(t0 + Duration::from_secs(200), &mut out);
        assert_eq!(out.len(), 5);
        assert_eq!(s.stats().rate_limited_traces, 5 + 8 + 15);
    }

    #[test]
    fn full_buffer_decides_the_oldest_trace_early() {
        let t0 = Instant::now();
        let mut s = TailSampler::new(TailConfig {
            max_buffered_spans: 6,
            ..cfg(0.0)
        });
        for n in 0..3 {
            s.push(fast(tid(1), n), t0);
        }
        for n in 0..3 {
            s.push(fast(tid(2), n), t0 + Duration::from_millis(1));
        }
        assert_eq!(s.stats().buffered_spans, 6);
        // Full: trace 1 (the oldest) is decided now and, being ordinary, dropped.
        s.push(fast(tid(3), 0), t0 + Duration::from_millis(2));
        let st = s.stats();
        assert_eq!(st.early_decisions, 1);
        assert_eq!(st.dropped_traces, 1);
        assert_eq!(st.buffered_spans, 4);
        assert_eq!(st.buffered_traces, 2);
        assert_eq!(st.dropped_spans, 0);
        // A late span of the early-dropped trace follows that decision.
        s.push(fast(tid(1), 9), t0 + Duration::from_millis(3));
        assert_eq!(s.stats().buffered_spans, 4);
    }

    #[test]
    fn kept_spans_waiting_for_poll_count_against_the_budget() {
        let t0 = Instant::now();
        let mut s = TailSampler::new(TailConfig {
            max_buffered_spans: 4,
            ..cfg(1.0)
        });
        for n in 0..4 {
            s.push(fast(tid(1), n), t0);
        }
        // Trace 1 is kept early, but its spans still occupy the whole budget.
        s.push(fast(tid(2), 0), t0);
        s.push(fast(tid(2), 1), t0);
        let st = s.stats();
        assert_eq!(st.early_decisions, 1);
        assert_eq!(st.kept_traces, 1);
        assert_eq!(st.dropped_spans, 2);
        assert_eq!(st.buffered_spans, 4);
        let mut out = vec![];
        s.poll(t0, &mut out);
        assert_eq!(out.len(), 4);
        assert_eq!(s.stats().buffered_spans, 0);
        // Room again.
        s.push(fast(tid(2), 2), t0);
        assert_eq!(s.stats().buffered_spans, 1);
        assert_eq!(s.stats().dropped_spans, 2);
    }

    #[test]
    fn memory_stays_bounded_under_a_flood() {
        let t0 = Instant::now();
        let mut s = TailSampler::new(TailConfig {
            max_buffered_spans: 1000,
            keep_ratio: 0.5,
            max_traces_per_second: 0,
            ..TailConfig::default()
        });
        let rule = TraceIdRatio::new(0.5).unwrap();
        let mut rng = Rng(5);
        let mut out = vec![];
        let mut emitted = 0u64;
        let mut sampled = 0u64;
        for i in 0..50_000u64 {
            let id = rng.trace_id();
            sampled += u64::from(rule.samples(&id));
            let now = t0 + Duration::from_micros(i * 10);
            s.push(fast(id, 0), now);
            s.push(fast(id, 1), now);
            assert!(s.stats().buffered_spans <= 1000);
            if i % 1000 == 0 {
                s.poll(now, &mut out);
            }
        }
        s.flush(&mut out);
        for span in &out {
            assert!(rule.samples(&span.trace_id));
        }
        emitted += out.len() as u64;
        let st = s.stats();
        assert!(st.early_decisions > 0);
        assert_eq!(st.buffered_spans, 0);
        // Spans of kept traces are either emitted or counted as dropped.
        assert!(emitted <= 2 * sampled);
        assert!(emitted + st.dropped_spans >= 2 * sampled);
    }

    #[test]
    fn flush_decides_everything() {
        let t0 = Instant::now();
        let mut s = TailSampler::new(cfg(0.0));
        s.push(span(tid(1), 1, 0, 1, Status::Error), t0);
        s.push(fast(tid(2), 1), t0);
        s.push(span(tid(3), 1, 0, 3000, Status::Unset), t0);
        let mut out = vec![];
        s.flush(&mut out);
        let mut kept = ids(&out);
        kept.sort();
        assert_eq!(kept, vec![tid(1), tid(3)]);
        let st = s.stats();
        assert_eq!(st.buffered_spans, 0);
        assert_eq!(st.buffered_traces, 0);
        assert_eq!((st.kept_traces, st.dropped_traces), (2, 1));
        // Flushing twice is harmless.
        out.clear();
        s.flush(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn time_going_backwards_does_not_reorder_windows() {
        let t0 = Instant::now();
        let mut s = TailSampler::new(cfg(1.0));
        s.push(fast(tid(1), 1), t0 + Duration::from_secs(2));
        s.push(fast(tid(2), 1), t0);
        let mut out = vec![];
        s.poll(t0 + Duration::from_secs(7), &mut out);
        assert_eq!(ids(&out), vec![tid(1), tid(2)]);
    }
}
