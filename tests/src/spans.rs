//! Received spans, flattened with their resource for easy assertions.
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{KeyValue, any_value},
    trace::v1::{Span, span::SpanKind, status::StatusCode},
};

#[derive(Clone, Debug)]
pub struct SpanView {
    pub span: Span,
    pub resource: Vec<KeyValue>,
}

fn find<'a>(kvs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    kvs.iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn as_string(v: &any_value::Value) -> String {
    match v {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::BoolValue(b) => b.to_string(),
        any_value::Value::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl SpanView {
    pub fn service(&self) -> String {
        self.resource_attr("service.name").unwrap_or_default()
    }

    pub fn resource_attr(&self, key: &str) -> Option<String> {
        find(&self.resource, key).map(as_string)
    }

    /// An attribute as a string (ints are formatted).
    pub fn attr(&self, key: &str) -> Option<String> {
        find(&self.span.attributes, key).map(as_string)
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        match find(&self.span.attributes, key)? {
            any_value::Value::IntValue(i) => Some(*i),
            _ => None,
        }
    }

    pub fn kind(&self) -> SpanKind {
        SpanKind::try_from(self.span.kind).unwrap_or(SpanKind::Unspecified)
    }

    pub fn is_server(&self) -> bool {
        self.kind() == SpanKind::Server
    }

    pub fn is_client(&self) -> bool {
        self.kind() == SpanKind::Client
    }

    pub fn is_error(&self) -> bool {
        self.span.status.as_ref().map(|s| s.code) == Some(StatusCode::Error as i32)
    }

    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    /// Parent span id, empty for a root.
    pub fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    pub fn duration_ms(&self) -> f64 {
        (self
            .span
            .end_time_unix_nano
            .saturating_sub(self.span.start_time_unix_nano)) as f64
            / 1e6
    }
}

pub fn flatten(requests: &[ExportTraceServiceRequest]) -> Vec<SpanView> {
    let mut out = Vec::new();
    for req in requests {
        for rs in &req.resource_spans {
            let resource = rs
                .resource
                .as_ref()
                .map(|r| r.attributes.clone())
                .unwrap_or_default();
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    out.push(SpanView {
                        span: span.clone(),
                        resource: resource.clone(),
                    });
                }
            }
        }
    }
    out
}

/// Spans of `service` and kind.
pub fn of<'a>(spans: &'a [SpanView], service: &str, server: bool) -> Vec<&'a SpanView> {
    spans
        .iter()
        .filter(|s| s.service() == service && if server { s.is_server() } else { s.is_client() })
        .collect()
}
