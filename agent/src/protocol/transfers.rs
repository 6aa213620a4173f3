//! Test helpers shared by the parsers' unit tests: recorded transfers, and
//! the ways the tests cut them (at one point, or at random) to check that
//! any split of the same bytes gives the same result.
use super::{Direction, Timing};

pub(crate) fn t(n: u64) -> Timing {
    Timing {
        enter_ns: n * 10,
        exit_ns: n * 10 + 5,
    }
}

/// A transfer: direction, captured bytes, full length, timing.
#[derive(Clone, Debug)]
pub(crate) struct Tr {
    pub(crate) dir: Direction,
    pub(crate) data: Vec<u8>,
    pub(crate) len: u64,
    pub(crate) timing: Timing,
}

/// Recorded transfers, fully captured, numbered from 1.
pub(crate) fn transfers(stream: &[(Direction, &[u8])]) -> Vec<Tr> {
    stream
        .iter()
        .enumerate()
        .map(|(i, (dir, data))| Tr {
            dir: *dir,
            data: data.to_vec(),
            len: data.len() as u64,
            timing: t(i as u64 + 1),
        })
        .collect()
}

/// Splits transfer `k` at `at`, both pieces keeping its timing.
pub(crate) fn split_at(trs: &[Tr], k: usize, at: usize) -> Vec<Tr> {
    let mut v = trs[..k].to_vec();
    let tr = &trs[k];
    let (a, b) = tr.data.split_at(at);
    v.push(Tr {
        data: a.to_vec(),
        len: a.len() as u64,
        ..tr.clone()
    });
    v.push(Tr {
        data: b.to_vec(),
        len: tr.len - a.len() as u64,
        ..tr.clone()
    });
    v.extend_from_slice(&trs[k + 1..]);
    v
}

/// xorshift64*: deterministic splits without a dependency.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Cuts every fully captured transfer into random pieces with its timing.
pub(crate) fn random_split(trs: &[Tr], rng: &mut Rng) -> Vec<Tr> {
    let mut v = Vec::new();
    for tr in trs {
        if tr.len != tr.data.len() as u64 || tr.data.len() < 2 {
            v.push(tr.clone());
            continue;
        }
        let mut rest = &tr.data[..];
        while !rest.is_empty() {
            let take = if rng.below(4) == 0 {
                rest.len()
            } else {
                1 + rng.below(rest.len() as u64) as usize
            };
            v.push(Tr {
                data: rest[..take].to_vec(),
                len: take as u64,
                ..tr.clone()
            });
            rest = &rest[take..];
        }
    }
    v
}

/// A junk transfer for the parsers' robustness tests: up to `max_len` bytes
/// cut from `corpus` at random, about one byte in fifty replaced, either
/// direction, and one in five claiming up to 100,000 bytes more than it
/// captured. Returns direction, bytes and claimed length.
pub(crate) fn junk_transfer(
    rng: &mut Rng,
    corpus: &[u8],
    max_len: u64,
) -> (Direction, Vec<u8>, u64) {
    let start = rng.below(corpus.len() as u64) as usize;
    let n = rng.below(max_len) as usize;
    let mut data = corpus[start..(start + n).min(corpus.len())].to_vec();
    for b in data.iter_mut() {
        if rng.below(50) == 0 {
            *b = rng.next() as u8;
        }
    }
    let dir = if rng.below(2) == 0 {
        Direction::Egress
    } else {
        Direction::Ingress
    };
    let len = data.len() as u64
        + if rng.below(5) == 0 {
            rng.below(100_000)
        } else {
            0
        };
    (dir, data, len)
}

/// What a parser's event says about request `seq`.
pub(crate) enum Paired {
    Start(u64),
    Outcome(u64),
}

/// Every request that started got exactly one outcome, none came for a
/// request that had not started, and none is left open.
pub(crate) fn assert_paired<E>(events: &[E], seen: impl Fn(&E) -> Paired) {
    let mut open = std::collections::HashSet::new();
    for e in events {
        match seen(e) {
            Paired::Start(seq) => assert!(open.insert(seq), "request {seq} started twice"),
            Paired::Outcome(seq) => assert!(open.remove(&seq), "outcome for {seq}, not open"),
        }
    }
    assert!(
        open.is_empty(),
        "requests left without an outcome: {open:?}"
    );
}
