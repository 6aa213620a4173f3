//! Where a server span's time went when no child span explains it.
//!
//! Self time is the span's duration minus the union of its children (the
//! client calls its thread made). What is left is attributed, in this order,
//! to slow file I/O of the serving thread, time it spent blocked off the CPU
//! (sleeps, locks, waits the probes do not name), time it was runnable but
//! waiting for a CPU, and finally "unexplained": on-CPU work (the application
//! computing) and waits shorter than the probes' threshold.
use crate::span::{Attributes, Value};

/// A closed-open interval of monotonic nanoseconds.
pub type Interval = (u64, u64);

/// Sorted, merged, non-empty intervals clipped to `within`.
pub fn normalize(intervals: &[Interval], within: Interval) -> Vec<Interval> {
    let mut v: Vec<Interval> = intervals
        .iter()
        .map(|&(s, e)| (s.max(within.0), e.min(within.1)))
        .filter(|(s, e)| s < e)
        .collect();
    v.sort_unstable();
    let mut out: Vec<Interval> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Total length of normalized intervals.
pub fn total(intervals: &[Interval]) -> u64 {
    intervals.iter().map(|(s, e)| e - s).sum()
}

/// `a` minus `b`, both normalized; the result is normalized.
pub fn subtract(a: &[Interval], b: &[Interval]) -> Vec<Interval> {
    let mut out = Vec::new();
    for &(mut s, e) in a {
        for &(bs, be) in b {
            if be <= s || bs >= e {
                continue;
            }
            if bs > s {
                out.push((s, bs));
            }
            s = s.max(be);
            if s >= e {
                break;
            }
        }
        if s < e {
            out.push((s, e));
        }
    }
    out
}

/// The breakdown of a server span's self time, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GapReport {
    pub duration: u64,
    pub children: u64,
    pub self_time: u64,
    pub file_io: u64,
    pub off_cpu: u64,
    pub runqueue: u64,
    pub unexplained: u64,
}

/// What the serving thread was seen doing during a server span.
#[derive(Clone, Debug, Default)]
pub struct Activity {
    pub children: Vec<Interval>,
    pub file_io: Vec<Interval>,
    pub off_cpu: Vec<Interval>,
    pub runqueue: Vec<Interval>,
}

impl Activity {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.file_io.is_empty()
            && self.off_cpu.is_empty()
            && self.runqueue.is_empty()
    }
}

/// Attributes each kind of wait only to time no earlier kind claimed.
pub fn analyze(span: Interval, activity: &Activity) -> GapReport {
    let duration = span.1.saturating_sub(span.0);
    if activity.is_empty() {
        // Most server spans: nothing seen, so all of it is unexplained self
        // time; the interval arithmetic below would allocate to say so.
        return GapReport {
            duration,
            self_time: duration,
            unexplained: duration,
            ..GapReport::default()
        };
    }
    let children = normalize(&activity.children, span);
    let mut rest = subtract(&[span], &children);
    let self_time = total(&rest);
    let mut claim = |intervals: &[Interval]| {
        let claimed = subtract(&rest, &subtract(&rest, &normalize(intervals, span)));
        rest = subtract(&rest, &claimed);
        total(&claimed)
    };
    let file_io = claim(&activity.file_io);
    let off_cpu = claim(&activity.off_cpu);
    let runqueue = claim(&activity.runqueue);
    GapReport {
        duration,
        children: total(&children),
        self_time,
        file_io,
        off_cpu,
        runqueue,
        unexplained: total(&rest),
    }
}

fn ms(ns: u64) -> Value {
    Value::F64((ns as f64 / 1e4).round() / 100.0)
}

impl GapReport {
    /// `seam.gap.*` attributes for the server span, in milliseconds. The
    /// span has none yet: they are appended without looking for them.
    pub fn set_attributes(&self, attrs: &mut Attributes) {
        attrs.push("seam.gap.self_ms", ms(self.self_time));
        attrs.push("seam.gap.file_io_ms", ms(self.file_io));
        attrs.push("seam.gap.off_cpu_ms", ms(self.off_cpu));
        attrs.push("seam.gap.runqueue_ms", ms(self.runqueue));
        attrs.push("seam.gap.unexplained_ms", ms(self.unexplained));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_algebra() {
        assert_eq!(
            normalize(&[(5, 9), (1, 3), (2, 4), (8, 20)], (0, 15)),
            vec![(1, 4), (5, 15)]
        );
        assert_eq!(normalize(&[(20, 30), (3, 3)], (0, 15)), vec![]);
        assert_eq!(
            subtract(&[(0, 10), (20, 30)], &[(2, 4), (8, 22), (29, 40)]),
            vec![(0, 2), (4, 8), (22, 29)]
        );
        assert_eq!(subtract(&[(0, 10)], &[]), vec![(0, 10)]);
        assert_eq!(total(&[(0, 2), (4, 8)]), 6);
    }

    /// The tracing guide's order request: three calls, a 400 ms log write
    /// between them, a short sleep, and some computation.
    #[test]
    fn attributes_self_time_in_order() {
        let activity = Activity {
            children: vec![(100, 200), (600, 700), (700, 750)],
            file_io: vec![(200, 600)],
            // Blocked during the write and the calls too: only the rest counts.
            off_cpu: vec![(150, 610), (760, 790)],
            runqueue: vec![(790, 795), (120, 130)],
        };
        let r = analyze((0, 1000), &activity);
        assert_eq!(r.duration, 1000);
        assert_eq!(r.children, 250);
        assert_eq!(r.self_time, 750);
        assert_eq!(r.file_io, 400);
        assert_eq!(r.off_cpu, 30);
        assert_eq!(r.runqueue, 5);
        assert_eq!(r.unexplained, 315);
        assert_eq!(
            r.file_io + r.off_cpu + r.runqueue + r.unexplained,
            r.self_time
        );
    }

    #[test]
    fn nothing_known_is_all_unexplained() {
        let r = analyze((10, 30), &Activity::default());
        let all_unexplained = GapReport {
            duration: 20,
            self_time: 20,
            unexplained: 20,
            ..GapReport::default()
        };
        assert_eq!(r, all_unexplained);
        // Activity outside the span takes the interval arithmetic and must
        // come to the same report as none at all.
        let outside = Activity {
            children: vec![(0, 10)],
            file_io: vec![(30, 40)],
            off_cpu: vec![(40, 50)],
            runqueue: vec![(5, 10)],
        };
        assert_eq!(analyze((10, 30), &outside), all_unexplained);
        assert_eq!(
            analyze((30, 10), &Activity::default()),
            GapReport::default()
        );
        assert_eq!(analyze((30, 10), &outside), GapReport::default());
        let mut a = Attributes::default();
        GapReport {
            self_time: 1_234_567,
            ..r
        }
        .set_attributes(&mut a);
        assert_eq!(a.get("seam.gap.self_ms"), Some(&Value::F64(1.23)));
    }
}
