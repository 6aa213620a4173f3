//! Probe timestamps are `CLOCK_MONOTONIC`; spans need Unix time.

/// Converts monotonic nanoseconds to Unix nanoseconds with one offset taken
/// at start-up (wall-clock steps later are not followed; spans stay ordered).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    offset_ns: i128,
}

fn read(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl Clock {
    pub fn new() -> Self {
        let mono = read(libc::CLOCK_MONOTONIC);
        let real = read(libc::CLOCK_REALTIME);
        Self {
            offset_ns: real - mono,
        }
    }

    /// Unix nanoseconds of a probe timestamp.
    pub fn unix_ns(&self, monotonic_ns: u64) -> u64 {
        (monotonic_ns as i128 + self.offset_ns).max(0) as u64
    }

    /// The probes' clock, now.
    pub fn monotonic_now() -> u64 {
        read(libc::CLOCK_MONOTONIC) as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_now_to_now() {
        let clock = Clock::new();
        let unix = clock.unix_ns(Clock::monotonic_now());
        let real = read(libc::CLOCK_REALTIME) as u64;
        assert!(
            real >= unix && real - unix < 1_000_000_000,
            "{real} vs {unix}"
        );
    }
}
