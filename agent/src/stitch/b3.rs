//! Zipkin B3 propagation (https://github.com/openzipkin/b3-propagation):
//! the single `b3` header and the multi-header `X-B3-*` form. Anything
//! malformed is ignored; ids are never zero.
use crate::span::{SpanId, TraceId};

/// What a B3 carrier says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum B3 {
    /// A trace context; `sampled` is `None` when the sender deferred the decision.
    Context {
        trace_id: TraceId,
        span_id: SpanId,
        sampled: Option<bool>,
    },
    /// Only a sampling decision (`b3: 0`, `b3: 1`, `b3: d`, or `X-B3-Sampled` alone).
    SamplingOnly(bool),
}

fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A 64- or 128-bit B3 trace id; 64-bit ids are left-padded with zeros.
pub fn trace_id(s: &str) -> Option<TraceId> {
    let id = match s.len() {
        16 => {
            let low: [u8; 8] = hex_bytes(s)?;
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&low);
            id
        }
        32 => hex_bytes(s)?,
        _ => return None,
    };
    (id != [0; 16]).then_some(id)
}

fn span_id(s: &str) -> Option<SpanId> {
    hex_bytes(s).filter(|id: &SpanId| *id != [0; 8])
}

fn sampling(s: &str) -> Option<bool> {
    match s {
        "1" | "d" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

/// `b3: {TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]`, or a lone
/// sampling state.
pub fn parse_single(value: &str) -> Option<B3> {
    let value = value.trim();
    let parts: Vec<&str> = value.split('-').collect();
    match parts.as_slice() {
        [state] => sampling(state).map(B3::SamplingOnly),
        [trace, span, rest @ ..] if rest.len() <= 2 => {
            let trace_id = trace_id(trace)?;
            let span_id = span_id(span)?;
            let sampled = match rest.first() {
                Some(state) => Some(sampling(state)?),
                None => None,
            };
            if let Some(parent) = rest.get(1) {
                span_id_valid(parent)?;
            }
            Some(B3::Context {
                trace_id,
                span_id,
                sampled,
            })
        }
        _ => None,
    }
}

fn span_id_valid(s: &str) -> Option<()> {
    span_id(s).map(|_| ())
}

/// `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-ParentSpanId`, `X-B3-Sampled`,
/// `X-B3-Flags`, looked up with `get` (case-insensitive header names).
pub fn parse_multi<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<B3> {
    let debug = get("x-b3-flags").map(str::trim) == Some("1");
    let sampled = match get("x-b3-sampled").map(str::trim) {
        Some("1") | Some("true") => Some(true),
        Some("0") | Some("false") => Some(false),
        Some(_) => return None,
        None => None,
    };
    let sampled = if debug { Some(true) } else { sampled };
    match (get("x-b3-traceid"), get("x-b3-spanid")) {
        (Some(t), Some(s)) => {
            if let Some(parent) = get("x-b3-parentspanid") {
                span_id_valid(parent.trim())?;
            }
            Some(B3::Context {
                trace_id: trace_id(t.trim())?,
                span_id: span_id(s.trim())?,
                sampled,
            })
        }
        (None, None) => sampled.map(B3::SamplingOnly),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::hex;

    #[test]
    fn single_header_forms() {
        let B3::Context {
            trace_id,
            span_id,
            sampled,
        } = parse_single("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")
            .unwrap()
        else {
            panic!("context expected");
        };
        assert_eq!(hex(&trace_id), "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(hex(&span_id), "e457b5a2e4d86bd1");
        assert_eq!(sampled, Some(true));
        assert!(matches!(
            parse_single("64fe8b2a57d3eff7-e457b5a2e4d86bd1"),
            Some(B3::Context { sampled: None, trace_id, .. }) if hex(&trace_id) == "000000000000000064fe8b2a57d3eff7"
        ));
        assert!(matches!(
            parse_single("64fe8b2a57d3eff7-e457b5a2e4d86bd1-d"),
            Some(B3::Context {
                sampled: Some(true),
                ..
            })
        ));
        assert_eq!(parse_single("0"), Some(B3::SamplingOnly(false)));
        assert_eq!(parse_single("d"), Some(B3::SamplingOnly(true)));
    }

    #[test]
    fn single_header_rejects_bad_values() {
        for bad in [
            "",
            "x",
            "80f198ee56343ba864fe8b2a57d3eff7",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd",
            "00000000000000000000000000000000-e457b5a2e4d86bd1-1",
            "80f198ee56343ba864fe8b2a57d3eff7-0000000000000000-1",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-2",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-zz",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-x",
            "80f198ee56343ba8-64fe8b2a57d3eff7ab-e457b5a2e4d86bd1",
            "é0f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1",
        ] {
            assert_eq!(parse_single(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn multi_header_forms() {
        let h = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(k))
                    .map(|(_, v)| *v)
            }
        };
        assert!(matches!(
            parse_multi(h(&[
                ("X-B3-TraceId", "463ac35c9f6413ad"),
                ("X-B3-SpanId", "a2fb4a1d1a96d312"),
                ("X-B3-Sampled", "1")
            ])),
            Some(B3::Context {
                sampled: Some(true),
                ..
            })
        ));
        assert!(matches!(
            parse_multi(h(&[
                ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
                ("x-b3-spanid", "a2fb4a1d1a96d312"),
                ("x-b3-flags", "1"),
                ("x-b3-sampled", "0")
            ])),
            Some(B3::Context {
                sampled: Some(true),
                ..
            })
        ));
        assert_eq!(
            parse_multi(h(&[("X-B3-Sampled", "0")])),
            Some(B3::SamplingOnly(false))
        );
        assert_eq!(
            parse_multi(h(&[("X-B3-TraceId", "463ac35c9f6413ad")])),
            None
        );
        assert_eq!(
            parse_multi(h(&[
                ("X-B3-TraceId", "463ac35c9f6413ad"),
                ("X-B3-SpanId", "a2fb4a1d1a96d3")
            ])),
            None
        );
        assert_eq!(
            parse_multi(h(&[
                ("X-B3-TraceId", "463ac35c9f6413ad"),
                ("X-B3-SpanId", "a2fb4a1d1a96d312"),
                ("X-B3-Sampled", "yes")
            ])),
            None
        );
        assert_eq!(parse_multi(h(&[])), None);
    }
}
