//! Head sampling: the keep/drop decision taken when a trace's first span is
//! seen, following the OpenTelemetry trace SDK specification's built-in
//! samplers and the `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`
//! environment variables.
//!
//! # `TraceIdRatioBased`
//!
//! Implemented as the current specification defines it (trace SDK,
//! "TraceIdRatioBased sampler algorithm", and "TraceState: Probability
//! Sampling"), which relies on W3C Trace Context Level 2 trace-id randomness:
//!
//! * The randomness value `R` is the least-significant 56 bits of the trace
//!   id, i.e. bytes 9..16 read as a big-endian integer (`0 ≤ R < 2^56`).
//! * A ratio `r` in `[0, 1]` becomes the rejection threshold
//!   `T = 2^56 − round(r · 2^56)`, computed at full 56-bit precision (the
//!   multiplication by a power of two is exact in `f64`, so only the final
//!   rounding to an integer loses anything).
//! * The span is sampled iff `R ≥ T`.
//!
//! Consequences relied on elsewhere: the decision is a pure function of the
//! trace id and the ratio, so every agent and SDK using the same rule agrees;
//! `T` never increases when `r` increases, so a trace sampled at `r` is
//! sampled at every `r' > r`; `r = 1` gives `T = 0` (always), `r = 0` gives
//! `T = 2^56` (never), and ratios below `2^-57` round to never.
//!
//! Deliberately left out: the explicit randomness `rv` and the `th` sub-keys of
//! the `ot` tracestate entry (the sampler API here only sees the trace id; the
//! `th` value to propagate is available from [`TraceIdRatio::th_value`]), and the
//! spec's suggestion to round thresholds to 4 hex digits — full precision keeps
//! the configured ratio exact, at the cost of deciding differently from an SDK
//! that rounds for the few trace ids that fall between the two thresholds.
//!
//! # Environment
//!
//! Unlike the SDK environment specification, which asks for unknown values to
//! be logged and ignored, a bad value here is an error: an agent silently
//! sampling at a rate nobody asked for is worse than one that refuses to start.

use std::fmt;

/// Number of random low-order trace-id bits W3C Trace Context Level 2 promises.
const RANDOM_BITS: u32 = 56;
/// `2^56`: one more than the largest randomness value.
const MAX_THRESHOLD: u64 = 1 << RANDOM_BITS;

pub const ENV_SAMPLER: &str = "OTEL_TRACES_SAMPLER";
pub const ENV_SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";

/// The `OTEL_TRACES_SAMPLER` values this agent understands.
pub const SAMPLER_NAMES: &[&str] = &[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
];

/// What the caller knows about the parent span context, when there is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParentSampling {
    /// The parent's W3C `sampled` trace flag.
    pub sampled: bool,
    /// The parent context was extracted from the wire rather than created in
    /// this process.
    pub remote: bool,
}

/// The randomness value `R`: the 56 least-significant bits of the trace id.
pub fn randomness(trace_id: &[u8; 16]) -> u64 {
    let mut low = [0u8; 8];
    low[1..].copy_from_slice(&trace_id[9..]);
    u64::from_be_bytes(low)
}

/// A validated sampling ratio and its rejection threshold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TraceIdRatio {
    ratio: f64,
    threshold: u64,
}

impl TraceIdRatio {
    /// `ratio` must be a finite number in `[0, 1]`.
    pub fn new(ratio: f64) -> Result<Self, String> {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(format!(
                "expected a sampling ratio between 0 and 1, got {ratio}"
            ));
        }
        // Exact: scaling by a power of two only changes the exponent.
        let scaled = ratio * MAX_THRESHOLD as f64;
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "scaled is in [0, 2^56] by the range check above"
        )]
        let accepted = scaled.round() as u64;
        Ok(TraceIdRatio {
            ratio,
            threshold: MAX_THRESHOLD - accepted.min(MAX_THRESHOLD),
        })
    }

    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// The rejection threshold `T` in `[0, 2^56]`.
    pub fn threshold(&self) -> u64 {
        self.threshold
    }

    /// The sampling probability actually applied: `(2^56 − T) / 2^56`.
    pub fn effective_probability(&self) -> f64 {
        (MAX_THRESHOLD - self.threshold) as f64 / MAX_THRESHOLD as f64
    }

    /// The threshold as the OpenTelemetry tracestate `th` sub-key value
    /// (14 hex digits, trailing zeros removed, `"0"` for always), or `None`
    /// when nothing is ever sampled and so nothing would carry it.
    pub fn th_value(&self) -> Option<String> {
        match self.threshold {
            MAX_THRESHOLD => None,
            0 => Some("0".to_string()),
            t => {
                let digits = format!("{t:014x}");
                Some(digits.trim_end_matches('0').to_string())
            }
        }
    }

    pub fn samples(&self, trace_id: &[u8; 16]) -> bool {
        randomness(trace_id) >= self.threshold
    }
}

impl fmt::Display for TraceIdRatio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // f64's Display is the shortest text that round-trips, so two samplers
        // with different ratios never share a description.
        write!(f, "TraceIdRatioBased{{{}}}", self.ratio)
    }
}

/// The sampler `ParentBased` consults for root spans.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RootSampler {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatioBased(TraceIdRatio),
}

impl RootSampler {
    fn should_sample(&self, trace_id: &[u8; 16]) -> bool {
        match self {
            RootSampler::AlwaysOn => true,
            RootSampler::AlwaysOff => false,
            RootSampler::TraceIdRatioBased(r) => r.samples(trace_id),
        }
    }

    fn description(&self) -> String {
        match self {
            RootSampler::AlwaysOn => "AlwaysOnSampler".to_string(),
            RootSampler::AlwaysOff => "AlwaysOffSampler".to_string(),
            RootSampler::TraceIdRatioBased(r) => r.to_string(),
        }
    }
}

/// The built-in samplers of the SDK specification. `ParentBased` uses the
/// specification's default delegates: follow a sampled parent, drop under an
/// unsampled one, whether the parent is remote or local.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HeadSampler {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatioBased(TraceIdRatio),
    ParentBased(RootSampler),
}

impl Default for HeadSampler {
    /// `ParentBased(root=AlwaysOn)`, the specification's default.
    fn default() -> Self {
        HeadSampler::ParentBased(RootSampler::AlwaysOn)
    }
}

impl HeadSampler {
    /// Reads `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` through `get`
    /// (so tests need not touch the process environment). Unset or empty
    /// means the default sampler.
    pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<HeadSampler, String> {
        let name = get(ENV_SAMPLER).unwrap_or_default();
        let arg = get(ENV_SAMPLER_ARG);
        Self::from_name(&name, arg.as_deref())
    }

    /// Builds a sampler from an `OTEL_TRACES_SAMPLER`-style name (case and
    /// surrounding blanks ignored; empty means the default) and its optional
    /// argument. The argument is only read by the ratio samplers, as the
    /// specification says; unset or empty means 1.0.
    pub fn from_name(name: &str, arg: Option<&str>) -> Result<HeadSampler, String> {
        let name = name.trim().to_ascii_lowercase();
        let ratio = || -> Result<TraceIdRatio, String> {
            let raw = arg.map(str::trim).unwrap_or("");
            let value = if raw.is_empty() {
                1.0
            } else {
                raw.parse::<f64>().map_err(|_| {
                    format!(
                        "{ENV_SAMPLER_ARG}: expected a sampling ratio between 0 and 1 \
                         for {name}, got {raw:?}"
                    )
                })?
            };
            TraceIdRatio::new(value).map_err(|e| format!("{ENV_SAMPLER_ARG}: {e}"))
        };
        Ok(match name.as_str() {
            "" | "parentbased_always_on" => HeadSampler::ParentBased(RootSampler::AlwaysOn),
            "always_on" => HeadSampler::AlwaysOn,
            "always_off" => HeadSampler::AlwaysOff,
            "traceidratio" => HeadSampler::TraceIdRatioBased(ratio()?),
            "parentbased_always_off" => HeadSampler::ParentBased(RootSampler::AlwaysOff),
            "parentbased_traceidratio" => {
                HeadSampler::ParentBased(RootSampler::TraceIdRatioBased(ratio()?))
            }
            other => {
                return Err(format!(
                    "{ENV_SAMPLER}: unsupported sampler {other:?}, expected one of {}",
                    SAMPLER_NAMES.join(", ")
                ));
            }
        })
    }

    /// Whether a new span of `trace_id` is recorded and sampled.
    pub fn should_sample(&self, trace_id: &[u8; 16], parent: Option<ParentSampling>) -> bool {
        match self {
            HeadSampler::AlwaysOn => true,
            HeadSampler::AlwaysOff => false,
            // The specification requires this sampler to ignore the parent.
            HeadSampler::TraceIdRatioBased(r) => r.samples(trace_id),
            HeadSampler::ParentBased(root) => match parent {
                None => root.should_sample(trace_id),
                // The four default delegates: remote and local alike, a
                // sampled parent means AlwaysOn and an unsampled one AlwaysOff.
                Some(p) => p.sampled,
            },
        }
    }

    /// The rejection threshold for root spans started in the kernel (see
    /// the module doc): 0 samples every trace, `2^56` none. Children follow
    /// their parent's flag there, as `ParentBased` does.
    pub fn root_threshold(&self) -> u64 {
        let root = match self {
            HeadSampler::AlwaysOn => RootSampler::AlwaysOn,
            HeadSampler::AlwaysOff => RootSampler::AlwaysOff,
            HeadSampler::TraceIdRatioBased(r) => RootSampler::TraceIdRatioBased(*r),
            HeadSampler::ParentBased(root) => *root,
        };
        match root {
            RootSampler::AlwaysOn => 0,
            RootSampler::AlwaysOff => MAX_THRESHOLD,
            RootSampler::TraceIdRatioBased(r) => r.threshold(),
        }
    }

    /// The specification's `GetDescription`.
    pub fn description(&self) -> String {
        match self {
            HeadSampler::AlwaysOn => "AlwaysOnSampler".to_string(),
            HeadSampler::AlwaysOff => "AlwaysOffSampler".to_string(),
            HeadSampler::TraceIdRatioBased(r) => r.to_string(),
            HeadSampler::ParentBased(root) => format!(
                "ParentBased{{root:{},remoteParentSampled:AlwaysOnSampler,\
                 remoteParentNotSampled:AlwaysOffSampler,localParentSampled:AlwaysOnSampler,\
                 localParentNotSampled:AlwaysOffSampler}}",
                root.description()
            ),
        }
    }
}

impl HeadSampler {
    /// This sampler as the config file's `sampling.head` section.
    pub fn file_form(&self) -> crate::policy::config::HeadSampling {
        use crate::policy::config::{HeadSampling, SamplerName};
        let (sampler, arg) = match self {
            HeadSampler::AlwaysOn => (SamplerName::AlwaysOn, None),
            HeadSampler::AlwaysOff => (SamplerName::AlwaysOff, None),
            HeadSampler::TraceIdRatioBased(r) => (SamplerName::TraceIdRatio, Some(r.ratio())),
            HeadSampler::ParentBased(RootSampler::AlwaysOn) => {
                (SamplerName::ParentBasedAlwaysOn, None)
            }
            HeadSampler::ParentBased(RootSampler::AlwaysOff) => {
                (SamplerName::ParentBasedAlwaysOff, None)
            }
            HeadSampler::ParentBased(RootSampler::TraceIdRatioBased(r)) => {
                (SamplerName::ParentBasedTraceIdRatio, Some(r.ratio()))
            }
        };
        HeadSampling {
            sampler: Some(sampler),
            arg,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// SplitMix64: a tiny deterministic generator so statistical tests are
    /// reproducible without a dependency.
    pub(crate) struct Rng(pub u64);

    impl Rng {
        pub(crate) fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        pub(crate) fn trace_id(&mut self) -> [u8; 16] {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&self.next_u64().to_be_bytes());
            id[8..].copy_from_slice(&self.next_u64().to_be_bytes());
            id
        }
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn id_with_randomness(r: u64) -> [u8; 16] {
        let mut id = [0xffu8; 16];
        id[9..].copy_from_slice(&r.to_be_bytes()[1..]);
        id
    }

    fn ratio(r: f64) -> TraceIdRatio {
        TraceIdRatio::new(r).unwrap()
    }

    #[test]
    fn randomness_is_the_low_56_bits() {
        let id = [
            0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x11, 0x22, 0x33, 0x01, 0x02, 0x03, 0x04, 0x05,
            0x06, 0x07,
        ];
        assert_eq!(randomness(&id), 0x01_0203_0405_0607);
        // The high 72 bits must not influence R: only the low 7 bytes count.
        let mut other = id;
        other[..9].copy_from_slice(&[0; 9]);
        assert_eq!(randomness(&other), randomness(&id));
    }

    #[test]
    fn thresholds_match_the_spec_table() {
        // Values from the probability-sampling specification's table.
        assert_eq!(ratio(1.0).th_value().as_deref(), Some("0"));
        assert_eq!(ratio(0.5).th_value().as_deref(), Some("8"));
        assert_eq!(ratio(0.25).th_value().as_deref(), Some("c"));
        assert_eq!(ratio(0.125).th_value().as_deref(), Some("e"));
        assert_eq!(ratio(0.0625).th_value().as_deref(), Some("f"));
        assert!(ratio(0.1).th_value().unwrap().starts_with("e666"));
        assert!(ratio(0.01).th_value().unwrap().starts_with("fd70a"));
        assert_eq!(ratio(0.0).th_value(), None);
        assert_eq!(ratio(0.5).threshold(), 1 << 55);
    }

    #[test]
    fn decision_is_r_at_least_t() {
        let half = ratio(0.5);
        assert!(!half.samples(&id_with_randomness((1 << 55) - 1)));
        assert!(half.samples(&id_with_randomness(1 << 55)));
        assert!(half.samples(&id_with_randomness(MAX_THRESHOLD - 1)));
        assert!(!half.samples(&id_with_randomness(0)));
    }

    #[test]
    fn ratio_edges() {
        let mut rng = Rng(1);
        let zero = HeadSampler::TraceIdRatioBased(ratio(0.0));
        let one = HeadSampler::TraceIdRatioBased(ratio(1.0));
        for _ in 0..10_000 {
            let id = rng.trace_id();
            assert!(!zero.should_sample(&id, None));
            assert!(one.should_sample(&id, None));
        }
        // The extreme randomness values too.
        for r in [0, MAX_THRESHOLD - 1] {
            let id = id_with_randomness(r);
            assert!(!zero.should_sample(&id, None));
            assert!(one.should_sample(&id, None));
        }
        // The smallest ratio the spec allows samples exactly the largest R.
        let tiny = ratio(2f64.powi(-56));
        assert_eq!(tiny.threshold(), MAX_THRESHOLD - 1);
        assert!(tiny.samples(&id_with_randomness(MAX_THRESHOLD - 1)));
        assert!(!tiny.samples(&id_with_randomness(MAX_THRESHOLD - 2)));
        assert_eq!(ratio(2f64.powi(-58)).threshold(), MAX_THRESHOLD);
    }

    #[test]
    fn invalid_ratios_are_rejected() {
        for bad in [-0.1, 1.000_001, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(TraceIdRatio::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn independent_samplers_agree() {
        let get = env(&[(ENV_SAMPLER, "traceidratio"), (ENV_SAMPLER_ARG, "0.3")]);
        let a = HeadSampler::from_env(&get).unwrap();
        let b = HeadSampler::from_name("TraceIdRatio", Some(" 0.3 ")).unwrap();
        let mut rng = Rng(7);
        let mut sampled = 0;
        for _ in 0..20_000 {
            let id = rng.trace_id();
            let d = a.should_sample(&id, None);
            assert_eq!(d, b.should_sample(&id, None));
            // Repeating the question gives the same answer.
            assert_eq!(d, a.should_sample(&id, None));
            sampled += usize::from(d);
        }
        assert!(sampled > 0 && sampled < 20_000);
    }

    #[test]
    fn higher_ratios_sample_supersets() {
        let ratios: Vec<TraceIdRatio> = [
            0.0,
            1e-6,
            0.001,
            0.01,
            0.05,
            0.1,
            0.2,
            0.25,
            1.0 / 3.0,
            0.5,
            0.75,
            0.9,
            0.99,
            1.0,
        ]
        .into_iter()
        .map(ratio)
        .collect();
        for pair in ratios.windows(2) {
            assert!(pair[0].threshold() >= pair[1].threshold());
        }
        let mut rng = Rng(42);
        for _ in 0..50_000 {
            let id = rng.trace_id();
            let decisions: Vec<bool> = ratios.iter().map(|r| r.samples(&id)).collect();
            // Once sampled at some ratio, sampled at every larger one.
            if let Some(first) = decisions.iter().position(|&d| d) {
                assert!(decisions[first..].iter().all(|&d| d), "{decisions:?}");
            }
        }
    }

    #[test]
    fn observed_fraction_is_within_binomial_bounds() {
        const N: u32 = 100_000;
        for (seed, r) in [0.001, 0.01, 0.1, 0.25, 0.5, 0.9].into_iter().enumerate() {
            let sampler = HeadSampler::TraceIdRatioBased(ratio(r));
            let mut rng = Rng(1000 + seed as u64);
            let hits = (0..N)
                .filter(|_| sampler.should_sample(&rng.trace_id(), None))
                .count() as f64;
            let n = f64::from(N);
            let mean = n * r;
            let sd = (n * r * (1.0 - r)).sqrt();
            // Five standard deviations: a false failure is ~1 in 3.5 million.
            assert!(
                (hits - mean).abs() <= 5.0 * sd,
                "ratio {r}: {hits} sampled, expected {mean} ± {}",
                5.0 * sd
            );
        }
    }

    #[test]
    fn ratio_sampler_ignores_the_parent() {
        let s = HeadSampler::TraceIdRatioBased(ratio(0.0));
        let parent = ParentSampling {
            sampled: true,
            remote: true,
        };
        assert!(!s.should_sample(&[1; 16], Some(parent)));
        let s = HeadSampler::TraceIdRatioBased(ratio(1.0));
        let parent = ParentSampling {
            sampled: false,
            remote: false,
        };
        assert!(s.should_sample(&[1; 16], Some(parent)));
    }

    #[test]
    fn parent_based_follows_remote_and_local_parents() {
        let roots = [
            RootSampler::AlwaysOn,
            RootSampler::AlwaysOff,
            RootSampler::TraceIdRatioBased(ratio(0.5)),
        ];
        let mut rng = Rng(3);
        for root in roots {
            let s = HeadSampler::ParentBased(root);
            for _ in 0..1000 {
                let id = rng.trace_id();
                for remote in [true, false] {
                    let sampled = ParentSampling {
                        sampled: true,
                        remote,
                    };
                    let unsampled = ParentSampling {
                        sampled: false,
                        remote,
                    };
                    assert!(s.should_sample(&id, Some(sampled)));
                    assert!(!s.should_sample(&id, Some(unsampled)));
                }
                assert_eq!(s.should_sample(&id, None), root.should_sample(&id));
            }
        }
        let on = HeadSampler::ParentBased(RootSampler::AlwaysOn);
        let off = HeadSampler::ParentBased(RootSampler::AlwaysOff);
        assert!(on.should_sample(&[0; 16], None));
        assert!(!off.should_sample(&[0xff; 16], None));
    }

    #[test]
    fn env_names_map_to_samplers() {
        let cases: &[(Option<&str>, Option<&str>, HeadSampler)] = &[
            (None, None, HeadSampler::default()),
            (Some(""), None, HeadSampler::default()),
            (Some("always_on"), None, HeadSampler::AlwaysOn),
            (Some("ALWAYS_OFF"), Some("garbage"), HeadSampler::AlwaysOff),
            (
                Some("traceidratio"),
                None,
                HeadSampler::TraceIdRatioBased(ratio(1.0)),
            ),
            (
                Some("traceidratio"),
                Some(""),
                HeadSampler::TraceIdRatioBased(ratio(1.0)),
            ),
            (
                Some("traceidratio"),
                Some("0.25"),
                HeadSampler::TraceIdRatioBased(ratio(0.25)),
            ),
            (
                Some("parentbased_always_on"),
                None,
                HeadSampler::ParentBased(RootSampler::AlwaysOn),
            ),
            (
                Some("parentbased_always_off"),
                None,
                HeadSampler::ParentBased(RootSampler::AlwaysOff),
            ),
            (
                Some(" parentbased_traceidratio\n"),
                Some("0"),
                HeadSampler::ParentBased(RootSampler::TraceIdRatioBased(ratio(0.0))),
            ),
        ];
        for (name, arg, want) in cases {
            let mut pairs = vec![];
            if let Some(n) = name {
                pairs.push((ENV_SAMPLER, *n));
            }
            if let Some(a) = arg {
                pairs.push((ENV_SAMPLER_ARG, *a));
            }
            let got = HeadSampler::from_env(&env(&pairs)).unwrap();
            assert_eq!(&got, want, "{name:?} {arg:?}");
        }
    }

    #[test]
    fn env_errors_name_the_variable() {
        let err = HeadSampler::from_env(&env(&[(ENV_SAMPLER, "jaeger_remote")])).unwrap_err();
        assert!(err.starts_with("OTEL_TRACES_SAMPLER:"), "{err}");
        for name in SAMPLER_NAMES {
            assert!(err.contains(name), "{err}");
        }
        let err = HeadSampler::from_env(&env(&[
            (ENV_SAMPLER, "traceidratio"),
            (ENV_SAMPLER_ARG, "half"),
        ]))
        .unwrap_err();
        assert!(err.starts_with("OTEL_TRACES_SAMPLER_ARG:"), "{err}");
        assert!(err.contains("\"half\""), "{err}");
        for arg in ["1.5", "-0.5", "NaN", "inf"] {
            let err = HeadSampler::from_env(&env(&[
                (ENV_SAMPLER, "parentbased_traceidratio"),
                (ENV_SAMPLER_ARG, arg),
            ]))
            .unwrap_err();
            assert!(err.starts_with("OTEL_TRACES_SAMPLER_ARG:"), "{err}");
            assert!(err.contains("between 0 and 1"), "{err}");
        }
    }

    #[test]
    fn descriptions() {
        assert_eq!(HeadSampler::AlwaysOn.description(), "AlwaysOnSampler");
        assert_eq!(HeadSampler::AlwaysOff.description(), "AlwaysOffSampler");
        assert_eq!(
            HeadSampler::TraceIdRatioBased(ratio(0.25)).description(),
            "TraceIdRatioBased{0.25}"
        );
        assert_eq!(
            HeadSampler::TraceIdRatioBased(ratio(0.0001)).description(),
            "TraceIdRatioBased{0.0001}"
        );
        let pb = HeadSampler::ParentBased(RootSampler::TraceIdRatioBased(ratio(0.5)));
        assert!(
            pb.description()
                .starts_with("ParentBased{root:TraceIdRatioBased{0.5},")
        );
        assert!(
            HeadSampler::default()
                .description()
                .starts_with("ParentBased{root:AlwaysOnSampler,")
        );
    }

    #[test]
    fn effective_probability_is_close_to_the_ratio() {
        for r in [0.0, 0.1, 1.0 / 3.0, 0.999, 1.0] {
            assert!((ratio(r).effective_probability() - r).abs() < 1e-15);
        }
    }
}
