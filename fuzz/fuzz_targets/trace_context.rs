//! Trace-context parsers: W3C `traceparent`, B3 single and multi-header, and
//! `propagation::extract` over a request whose headers come from the input.
//!
//! The input is text; its lines are header values. The first line is tried
//! as a `traceparent` and a `b3` value; the first five are the `X-B3-*`
//! headers; lines of the form `name: value` become the request's headers.
//!
//! Checked: no panic; a parsed id is never all zero; re-encoding a parsed
//! `traceparent` and parsing it again gives the same context, and the
//! encoding is the canonical 55-character version 00 form; what `extract`
//! returns agrees with the parser of the header it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seam::{
    protocol::{Request, headers::Headers, http1::RequestHead},
    stitch::{
        b3::{self, B3},
        propagation, traceparent,
    },
};

fn check_b3(b: Option<B3>) {
    if let Some(B3::Context {
        trace_id, span_id, ..
    }) = b
    {
        assert_ne!(trace_id, [0; 16]);
        assert_ne!(span_id, [0; 8]);
    }
}

fn check_traceparent(value: &str) -> Option<traceparent::TraceParent> {
    let tp = traceparent::parse(value)?;
    assert_ne!(tp.trace_id, [0; 16]);
    assert_ne!(tp.parent_id, [0; 8]);
    let encoded = tp.encode();
    assert_eq!(encoded.len(), 55);
    assert!(encoded.starts_with("00-"));
    assert_eq!(traceparent::parse(&encoded), Some(tp), "{encoded}");
    Some(tp)
}

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);
    let lines: Vec<&str> = text.split('\n').collect();
    let first = lines[0];
    check_traceparent(first);
    check_b3(b3::parse_single(first));

    const MULTI: [&str; 5] = [
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
        "x-b3-flags",
    ];
    let multi = b3::parse_multi(|name| {
        MULTI
            .iter()
            .position(|m| m.eq_ignore_ascii_case(name))
            .and_then(|i| lines.get(i).copied())
            .filter(|v| !v.is_empty())
    });
    check_b3(multi);

    let headers: Headers = lines
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let request = Request::Http(RequestHead {
        method: "GET".into(),
        target: "/".into(),
        version: "1.1",
        headers,
    }.into());
    if let Some(c) = propagation::extract(&request) {
        assert_ne!(c.trace_id, [0; 16]);
        assert_ne!(c.parent_id, [0; 8]);
        let from_tp = request.carrier("traceparent").and_then(check_traceparent);
        if let Some(tp) = from_tp {
            assert_eq!(
                (c.trace_id, c.parent_id, c.flags),
                (tp.trace_id, tp.parent_id, tp.flags)
            );
        } else if let Some(single) = request.carrier("b3").and_then(b3::parse_single) {
            let B3::Context {
                trace_id, span_id, ..
            } = single
            else {
                panic!("extract used a sampling-only b3 header");
            };
            assert_eq!((c.trace_id, c.parent_id), (trace_id, span_id));
        }
    }
});
