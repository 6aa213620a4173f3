//! Spans straight to the protobuf bytes of an OTLP `ExportTraceServiceRequest`,
//! without building the generated request types first. Building them, then
//! letting prost size every nested message again at each level, was a
//! fifth of the agent's time under load; this writes each message once into
//! a scratch buffer and copies it behind its length. The output decodes to
//! exactly [`super::otlp::request`] of the same spans (unit-tested).
use std::{collections::HashMap, sync::Arc};

use super::otlp::{wire_flags, wire_kind, wire_status};
use crate::span::{Attributes, Resource, Span, Value};

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn tag(buf: &mut Vec<u8>, field: u32, wire: u8) {
    varint(buf, u64::from(field << 3 | u32::from(wire)));
}

/// A length-delimited field, written even when empty (message presence).
fn len_field(buf: &mut Vec<u8>, field: u32, data: &[u8]) {
    tag(buf, field, LEN);
    varint(buf, data.len() as u64);
    buf.extend_from_slice(data);
}

/// A proto3 string or bytes field: left out when empty.
fn bytes_field(buf: &mut Vec<u8>, field: u32, data: &[u8]) {
    if !data.is_empty() {
        len_field(buf, field, data);
    }
}

fn varint_field(buf: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        tag(buf, field, VARINT);
        varint(buf, v);
    }
}

fn fixed64_field(buf: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        tag(buf, field, FIXED64);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

/// Scratch buffers reused for every attribute.
#[derive(Default)]
struct Scratch {
    kv: Vec<u8>,
    any: Vec<u8>,
}

/// `KeyValue { key = 1, value = 2: AnyValue }` as field `field` of `buf`;
/// the AnyValue's one-of field is written even when it holds a default, as
/// one-of presence requires.
fn key_value(buf: &mut Vec<u8>, field: u32, key: &str, value: &Value, scratch: &mut Scratch) {
    let Scratch { kv, any } = scratch;
    any.clear();
    match value {
        Value::Str(s) => len_field(any, 1, s.as_bytes()),
        Value::Bool(b) => {
            tag(any, 2, VARINT);
            any.push(u8::from(*b));
        }
        Value::Int(i) => {
            tag(any, 3, VARINT);
            // int64: negative numbers as their two's complement.
            varint(any, *i as u64);
        }
        Value::F64(f) => {
            tag(any, 4, FIXED64);
            any.extend_from_slice(&f.to_le_bytes());
        }
    }
    kv.clear();
    bytes_field(kv, 1, key.as_bytes());
    len_field(kv, 2, any);
    len_field(buf, field, kv);
}

fn attributes(buf: &mut Vec<u8>, field: u32, attrs: &Attributes, scratch: &mut Scratch) {
    for (k, v) in attrs.iter() {
        key_value(buf, field, k, v, scratch);
    }
}

fn span(buf: &mut Vec<u8>, s: &Span, scratch: &mut Scratch) {
    bytes_field(buf, 1, &s.trace_id);
    bytes_field(buf, 2, &s.span_id);
    bytes_field(buf, 3, s.trace_state.as_bytes());
    if let Some(p) = &s.parent_span_id {
        bytes_field(buf, 4, p);
    }
    bytes_field(buf, 5, s.name.as_bytes());
    varint_field(buf, 6, wire_kind(s.kind) as u64);
    fixed64_field(buf, 7, s.start_unix_ns);
    fixed64_field(buf, 8, s.end_unix_ns);
    attributes(buf, 9, &s.attributes, scratch);
    // Status { code = 3 }, present even when unset.
    let mut status = Vec::with_capacity(2);
    varint_field(&mut status, 3, wire_status(s.status) as u64);
    len_field(buf, 15, &status);
    let flags = wire_flags(s);
    if flags != 0 {
        tag(buf, 16, FIXED32);
        buf.extend_from_slice(&flags.to_le_bytes());
    }
}

/// The encoded request: spans grouped under their process's resource, in
/// the order each resource first appears.
pub fn encode(spans: &[Span]) -> Vec<u8> {
    let mut groups: Vec<(Arc<Resource>, Vec<&Span>)> = Vec::new();
    let mut index: HashMap<*const Resource, usize> = HashMap::new();
    for s in spans {
        let i = *index.entry(Arc::as_ptr(&s.resource)).or_insert_with(|| {
            groups.push((s.resource.clone(), Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(s);
    }
    let mut out = Vec::with_capacity(spans.len() * 600);
    let mut attrs = Scratch::default();
    let (mut resource_spans, mut resource, mut scope_spans, mut one) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::with_capacity(1024));
    for (res, spans) in groups {
        // ResourceSpans { resource = 1, scope_spans = 2 }
        resource.clear();
        attributes(&mut resource, 1, &res.attributes, &mut attrs);
        resource_spans.clear();
        len_field(&mut resource_spans, 1, &resource);
        // ScopeSpans { scope = 1: InstrumentationScope { name, version }, spans = 2 }
        scope_spans.clear();
        one.clear();
        bytes_field(&mut one, 1, b"seam");
        bytes_field(&mut one, 2, env!("CARGO_PKG_VERSION").as_bytes());
        len_field(&mut scope_spans, 1, &one);
        for s in spans {
            one.clear();
            span(&mut one, s, &mut attrs);
            len_field(&mut scope_spans, 2, &one);
        }
        len_field(&mut resource_spans, 2, &scope_spans);
        // ExportTraceServiceRequest { resource_spans = 1 }
        len_field(&mut out, 1, &resource_spans);
    }
    out
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use proptest::prelude::*;
    use prost::Message as _;

    use super::*;
    use crate::span::{SpanKind, Status};

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            ".{0,40}".prop_map(Value::Str),
            any::<i64>().prop_map(Value::Int),
            any::<bool>().prop_map(Value::Bool),
            any::<f64>()
                .prop_filter("NaN never equals itself", |f| !f.is_nan())
                .prop_map(Value::F64),
        ]
    }

    fn attrs() -> impl Strategy<Value = Attributes> {
        prop::collection::vec(("[a-z.]{0,20}", value()), 0..8).prop_map(|kv| {
            Attributes(
                kv.into_iter()
                    .map(|(k, v): (String, Value)| (k.into(), v))
                    .collect(),
            )
        })
    }

    prop_compose! {
        fn span_on(resources: Vec<Arc<Resource>>)(
            which in 0..resources.len(),
            trace_id in any::<[u8; 16]>(),
            span_id in any::<[u8; 8]>(),
            parent in any::<Option<[u8; 8]>>(),
            trace_state in ".{0,20}",
            flags in any::<u8>(),
            name in ".{0,30}",
            kind in 0..3u8,
            start in any::<u64>(),
            end in any::<u64>(),
            attributes in attrs(),
            error in any::<bool>(),
        ) -> Span {
            Span {
                trace_id,
                span_id,
                parent_span_id: parent,
                trace_state,
                flags,
                name,
                kind: [SpanKind::Server, SpanKind::Client, SpanKind::Internal][kind as usize],
                start_unix_ns: start,
                end_unix_ns: end,
                attributes,
                status: if error { Status::Error } else { Status::Unset },
                resource: resources[which].clone(),
            }
        }
    }

    fn batch() -> impl Strategy<Value = Vec<Span>> {
        prop::collection::vec(attrs(), 1..4).prop_flat_map(|res| {
            let resources: Vec<Arc<Resource>> = res
                .into_iter()
                .map(|attributes| Arc::new(Resource { attributes }))
                .collect();
            prop::collection::vec(span_on(resources), 0..12)
        })
    }

    proptest! {
        /// The bytes decode to exactly the generated request of the same
        /// spans, defaults (empty strings, zero numbers, false) included.
        #[test]
        fn decodes_to_the_generated_request(spans in batch()) {
            let bytes = encode(&spans);
            let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
            prop_assert_eq!(decoded, super::super::otlp::request(spans));
        }
    }
}
