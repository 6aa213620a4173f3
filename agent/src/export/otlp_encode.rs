//! Spans straight to the protobuf bytes of an OTLP `ExportTraceServiceRequest`,
//! without building the generated request types first. Building them, then
//! letting prost size every nested message again at each level, was a
//! fifth of the agent's time under load. This computes each message's
//! length first and then writes every byte once, in place (writing nested
//! messages into scratch buffers and copying each behind its length moved
//! every string five times). The output decodes to
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

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn tag(buf: &mut Vec<u8>, field: u32, wire: u8) {
    varint(buf, u64::from(field << 3 | u32::from(wire)));
}

fn tag_len(field: u32) -> usize {
    varint_len(u64::from(field << 3))
}

/// The tag and length of a length-delimited field whose content follows.
fn len_prefix(buf: &mut Vec<u8>, field: u32, len: usize) {
    tag(buf, field, LEN);
    varint(buf, len as u64);
}

/// Bytes of a length-delimited field holding `len` bytes.
fn len_field_len(field: u32, len: usize) -> usize {
    tag_len(field) + varint_len(len as u64) + len
}

/// A proto3 string or bytes field: left out when empty.
fn bytes_field(buf: &mut Vec<u8>, field: u32, data: &[u8]) {
    if !data.is_empty() {
        len_prefix(buf, field, data.len());
        buf.extend_from_slice(data);
    }
}

fn bytes_field_len(field: u32, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        len_field_len(field, len)
    }
}

fn varint_field(buf: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        tag(buf, field, VARINT);
        varint(buf, v);
    }
}

fn varint_field_len(field: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        tag_len(field) + varint_len(v)
    }
}

fn fixed64_field(buf: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        tag(buf, field, FIXED64);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

fn fixed64_field_len(field: u32, v: u64) -> usize {
    if v == 0 { 0 } else { tag_len(field) + 8 }
}

/// `AnyValue`'s content: its one-of field is written even when it holds a
/// default, as one-of presence requires.
fn any_value_len(value: &Value) -> usize {
    match value {
        Value::Str(s) => len_field_len(1, s.len()),
        Value::Bool(_) => tag_len(2) + 1,
        // int64: negative numbers as their two's complement.
        Value::Int(i) => tag_len(3) + varint_len(*i as u64),
        Value::F64(_) => tag_len(4) + 8,
    }
}

/// `KeyValue { key = 1, value = 2: AnyValue }`'s content.
fn key_value_len(key: &str, value: &Value) -> usize {
    bytes_field_len(1, key.len()) + len_field_len(2, any_value_len(value))
}

fn key_value(buf: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
    let any = any_value_len(value);
    len_prefix(
        buf,
        field,
        bytes_field_len(1, key.len()) + len_field_len(2, any),
    );
    bytes_field(buf, 1, key.as_bytes());
    len_prefix(buf, 2, any);
    match value {
        Value::Str(s) => {
            len_prefix(buf, 1, s.len());
            buf.extend_from_slice(s.as_bytes());
        }
        Value::Bool(b) => {
            tag(buf, 2, VARINT);
            buf.push(u8::from(*b));
        }
        Value::Int(i) => {
            tag(buf, 3, VARINT);
            varint(buf, *i as u64);
        }
        Value::F64(f) => {
            tag(buf, 4, FIXED64);
            buf.extend_from_slice(&f.to_le_bytes());
        }
    }
}

fn attributes(buf: &mut Vec<u8>, field: u32, attrs: &Attributes) {
    for (k, v) in attrs.iter() {
        key_value(buf, field, k, v);
    }
}

fn attributes_len(field: u32, attrs: &Attributes) -> usize {
    attrs
        .iter()
        .map(|(k, v)| len_field_len(field, key_value_len(k, v)))
        .sum()
}

/// `Status { code = 3 }`'s content.
fn status_len(s: &Span) -> usize {
    varint_field_len(3, wire_status(s.status) as u64)
}

/// A `Span` message's content.
fn span_len(s: &Span) -> usize {
    bytes_field_len(1, s.trace_id.len())
        + bytes_field_len(2, s.span_id.len())
        + bytes_field_len(3, s.trace_state.len())
        + s.parent_span_id.map_or(0, |p| bytes_field_len(4, p.len()))
        + bytes_field_len(5, s.name.len())
        + varint_field_len(6, wire_kind(s.kind) as u64)
        + fixed64_field_len(7, s.start_unix_ns)
        + fixed64_field_len(8, s.end_unix_ns)
        + attributes_len(9, &s.attributes)
        + len_field_len(15, status_len(s))
        + if wire_flags(s) != 0 {
            tag_len(16) + 4
        } else {
            0
        }
}

fn span(buf: &mut Vec<u8>, s: &Span) {
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
    attributes(buf, 9, &s.attributes);
    // Present even when unset.
    len_prefix(buf, 15, status_len(s));
    varint_field(buf, 3, wire_status(s.status) as u64);
    let flags = wire_flags(s);
    if flags != 0 {
        tag(buf, 16, FIXED32);
        buf.extend_from_slice(&flags.to_le_bytes());
    }
}

const SCOPE_NAME: &[u8] = b"seam";
const SCOPE_VERSION: &[u8] = env!("CARGO_PKG_VERSION").as_bytes();

/// The encoded request: spans grouped under their process's resource, in
/// the order each resource first appears.
pub fn encode(spans: &[Span]) -> Vec<u8> {
    // Indices into `spans`, per resource.
    let mut groups: Vec<(Arc<Resource>, Vec<usize>)> = Vec::new();
    let mut index: HashMap<*const Resource, usize> = HashMap::new();
    for (n, s) in spans.iter().enumerate() {
        let i = *index.entry(Arc::as_ptr(&s.resource)).or_insert_with(|| {
            groups.push((s.resource.clone(), Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(n);
    }
    // Every message's length is known before it is written, so each byte
    // is written once, in place.
    let span_lens: Vec<usize> = spans.iter().map(span_len).collect();
    let scope = bytes_field_len(1, SCOPE_NAME.len()) + bytes_field_len(2, SCOPE_VERSION.len());
    let mut out = Vec::with_capacity(span_lens.iter().sum::<usize>() + 64 * (spans.len() + 4));
    for (res, members) in groups {
        let resource = attributes_len(1, &res.attributes);
        // ScopeSpans { scope = 1: InstrumentationScope { name, version }, spans = 2 }
        let scope_spans = len_field_len(1, scope)
            + members
                .iter()
                .map(|&n| len_field_len(2, span_lens[n]))
                .sum::<usize>();
        // ExportTraceServiceRequest { resource_spans = 1: ResourceSpans {
        // resource = 1, scope_spans = 2 } }
        len_prefix(
            &mut out,
            1,
            len_field_len(1, resource) + len_field_len(2, scope_spans),
        );
        len_prefix(&mut out, 1, resource);
        attributes(&mut out, 1, &res.attributes);
        len_prefix(&mut out, 2, scope_spans);
        len_prefix(&mut out, 1, scope);
        bytes_field(&mut out, 1, SCOPE_NAME);
        bytes_field(&mut out, 2, SCOPE_VERSION);
        for n in members {
            len_prefix(&mut out, 2, span_lens[n]);
            span(&mut out, &spans[n]);
        }
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
            ".{0,40}".prop_map(Value::from),
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
