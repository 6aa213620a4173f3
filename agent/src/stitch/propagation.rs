//! The trace context a request carries in its headers: W3C `traceparent`
//! first (with `tracestate`), then B3 single, then B3 multi-header.
use super::{b3, traceparent};
use crate::{
    protocol::Request,
    span::{SpanId, TraceId},
};

/// A parent context read from a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Carried {
    pub trace_id: TraceId,
    pub parent_id: SpanId,
    /// W3C trace flags (bit 0: sampled).
    pub flags: u8,
    pub trace_state: String,
}

/// The context `request` carries, if any valid one.
pub fn extract(request: &Request) -> Option<Carried> {
    if let Some(tp) = request.carrier("traceparent").and_then(traceparent::parse) {
        return Some(Carried {
            trace_id: tp.trace_id,
            parent_id: tp.parent_id,
            flags: tp.flags,
            trace_state: request
                .carrier("tracestate")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        });
    }
    let from_b3 = |b: b3::B3| match b {
        b3::B3::Context {
            trace_id,
            span_id,
            sampled,
        } => Some(Carried {
            trace_id,
            parent_id: span_id,
            // A deferred decision is taken as sampled, as the OTel B3 propagator does.
            flags: u8::from(sampled.unwrap_or(true)),
            trace_state: String::new(),
        }),
        b3::B3::SamplingOnly(_) => None,
    };
    if let Some(single) = request.carrier("b3").and_then(b3::parse_single) {
        return from_b3(single);
    }
    // The multi-header form asks for four fields; nearly every request has
    // none of them.
    if !request.carries_prefix("x-b3-") {
        return None;
    }
    b3::parse_multi(|name| request.carrier(name)).and_then(from_b3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{protocol::http1::RequestHead, span::hex};

    fn req(headers: &[(&str, &str)]) -> Request {
        Request::Http(RequestHead::for_test("GET", "/", headers).into())
    }

    #[test]
    fn precedence_and_formats() {
        let w3c = (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        let single = ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0");
        let multi = [
            ("X-B3-TraceId", "463ac35c9f6413ad"),
            ("X-B3-SpanId", "a2fb4a1d1a96d312"),
        ];
        let c = extract(&req(&[w3c, single, ("tracestate", "a=1")])).unwrap();
        assert_eq!(hex(&c.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.trace_state, "a=1");
        let c = extract(&req(&[single, multi[0], multi[1]])).unwrap();
        assert_eq!(hex(&c.parent_id), "e457b5a2e4d86bd1");
        assert_eq!(c.flags, 0);
        let c = extract(&req(&multi)).unwrap();
        assert_eq!(hex(&c.trace_id), "0000000000000000463ac35c9f6413ad");
        assert_eq!(c.flags, 1);
        // An invalid traceparent falls through to B3.
        let c = extract(&req(&[("traceparent", "garbage"), single])).unwrap();
        assert_eq!(hex(&c.parent_id), "e457b5a2e4d86bd1");
        assert_eq!(extract(&req(&[("b3", "0")])), None);
        assert_eq!(extract(&req(&[])), None);
    }
}
