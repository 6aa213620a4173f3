//! OTLP export over gRPC or HTTP/protobuf. Each traced process is its own
//! resource, so one request carries one `ResourceSpans` per process.
use std::{collections::HashMap, sync::Arc, time::Duration};

use http_body_util::{BodyExt as _, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use opentelemetry_proto::tonic::{
    collector::{
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_client::MetricsServiceClient,
        },
        trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    },
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    resource::v1::Resource as ProtoResource,
    trace::v1::{
        ResourceSpans, ScopeSpans, Span as ProtoSpan, Status as ProtoStatus, span, status,
    },
};
use prost::Message as _;

use super::{
    env::{OtlpSettings, Protocol},
    tls,
};
use crate::span::{Attributes, Resource, Span, SpanKind, Status, Value};

fn any_value(v: &Value) -> AnyValue {
    AnyValue {
        value: Some(match v {
            Value::Str(s) => any_value::Value::StringValue(s.to_string()),
            Value::Int(i) => any_value::Value::IntValue(*i),
            Value::Bool(b) => any_value::Value::BoolValue(*b),
            Value::F64(f) => any_value::Value::DoubleValue(*f),
        }),
    }
}

fn key_values(attrs: &Attributes) -> Vec<KeyValue> {
    attrs
        .iter()
        .map(|(k, v)| KeyValue {
            key: k.to_string(),
            value: Some(any_value(v)),
            ..Default::default()
        })
        .collect()
}

/// The span's own attributes, moved rather than copied.
fn into_key_values(attrs: Attributes) -> Vec<KeyValue> {
    attrs
        .0
        .into_iter()
        .map(|(key, v)| KeyValue {
            key: key.into_owned(),
            value: Some(AnyValue {
                value: Some(match v {
                    Value::Str(s) => any_value::Value::StringValue(s.into_owned()),
                    Value::Int(i) => any_value::Value::IntValue(i),
                    Value::Bool(b) => any_value::Value::BoolValue(b),
                    Value::F64(f) => any_value::Value::DoubleValue(f),
                }),
            }),
            ..Default::default()
        })
        .collect()
}

/// W3C flags in the low byte; bit 8: remoteness is known; bit 9: the parent
/// is in another process (a server span's parent always is).
pub(super) fn wire_flags(s: &Span) -> u32 {
    s.flags as u32
        | 0x100
        | if s.kind == SpanKind::Server && s.parent_span_id.is_some() {
            0x200
        } else {
            0
        }
}

pub(super) fn wire_kind(kind: SpanKind) -> i32 {
    let kind = match kind {
        SpanKind::Server => span::SpanKind::Server,
        SpanKind::Client => span::SpanKind::Client,
        SpanKind::Internal => span::SpanKind::Internal,
    };
    kind as i32
}

pub(super) fn wire_status(s: Status) -> i32 {
    let code = match s {
        Status::Unset => status::StatusCode::Unset,
        Status::Error => status::StatusCode::Error,
    };
    code as i32
}

/// The request's generated form (the encoder in `otlp_encode` writes the
/// same bytes directly; this one is its reference in tests and benches).
fn proto_span(s: Span) -> ProtoSpan {
    let flags = wire_flags(&s);
    ProtoSpan {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        trace_state: s.trace_state,
        parent_span_id: s.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        flags,
        name: s.name,
        kind: wire_kind(s.kind),
        start_time_unix_nano: s.start_unix_ns,
        end_time_unix_nano: s.end_unix_ns,
        attributes: into_key_values(s.attributes),
        status: Some(ProtoStatus {
            message: String::new(),
            code: wire_status(s.status),
        }),
        ..Default::default()
    }
}

/// One export request: spans grouped under their process's resource.
pub fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    let mut groups: Vec<(Arc<Resource>, Vec<ProtoSpan>)> = Vec::new();
    let mut index: HashMap<*const Resource, usize> = HashMap::new();
    for s in spans {
        let i = *index.entry(Arc::as_ptr(&s.resource)).or_insert_with(|| {
            groups.push((s.resource.clone(), Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(proto_span(s));
    }
    ExportTraceServiceRequest {
        resource_spans: groups
            .into_iter()
            .map(|(resource, spans)| ResourceSpans {
                resource: Some(ProtoResource {
                    attributes: key_values(&resource.attributes),
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "seam".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

/// A batch of spans as the encoded export request, made once: a retry
/// sends the same bytes again.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub body: bytes::Bytes,
    pub spans: usize,
}

impl Batch {
    pub fn encode(spans: Vec<Span>) -> Self {
        Self {
            body: super::otlp_encode::encode(&spans).into(),
            spans: spans.len(),
        }
    }
}

/// An already encoded message, written as is: lets the gRPC client send a
/// [`Batch`]'s bytes without decoding them back into a request.
#[derive(Clone, Debug, Default)]
struct Encoded(bytes::Bytes);

impl prost::Message for Encoded {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Only ever sent, never received.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// The OTLP trace export method.
const TRACE_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Why an export failed, and whether sending the same batch again may help.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ExportError {
    pub message: String,
    pub retryable: bool,
    /// How long the backend asked the agent to wait before trying again
    /// (HTTP Retry-After, gRPC RetryInfo).
    pub retry_after: Option<Duration>,
    /// No answer within the export timeout.
    pub timed_out: bool,
}

impl ExportError {
    fn retryable(message: String) -> Self {
        Self {
            message,
            retryable: true,
            retry_after: None,
            timed_out: false,
        }
    }

    fn permanent(message: String) -> Self {
        Self {
            retryable: false,
            ..Self::retryable(message)
        }
    }

    fn timeout(timeout: Duration) -> Self {
        Self {
            timed_out: true,
            ..Self::retryable(format!("no answer within {timeout:?}"))
        }
    }
}

/// What the backend said about a delivered request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Spans the backend says it rejected (OTLP partial success).
    pub rejected: u64,
    pub message: String,
}

#[derive(Clone)]
enum Transport {
    Grpc {
        client: tonic::client::Grpc<tonic::transport::Channel>,
        metrics: MetricsServiceClient<tonic::transport::Channel>,
        metadata: tonic::metadata::MetadataMap,
    },
    Http {
        client: Client<tls::Connector, Full<bytes::Bytes>>,
        uri: http::Uri,
        metrics_uri: http::Uri,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
    },
}

/// A connection to an OTLP receiver.
#[derive(Clone)]
pub struct OtlpClient {
    transport: Transport,
    timeout: Duration,
}

impl OtlpClient {
    pub fn new(settings: &OtlpSettings) -> Result<Self, String> {
        let transport = match settings.protocol {
            Protocol::Grpc => {
                let channel = tonic::transport::Endpoint::from_shared(settings.url.clone())
                    .map_err(|e| format!("OTLP endpoint `{}`: {e}", settings.url))?
                    .timeout(settings.timeout)
                    .connect_timeout(settings.timeout)
                    .connect_with_connector_lazy(tls::connector(&settings.tls, true)?);
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (k, v) in &settings.headers {
                    let key =
                        tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                            .map_err(|_| format!("OTLP header name `{k}` is not valid"))?;
                    let value = v
                        .parse()
                        .map_err(|_| format!("OTLP header `{k}` has a value gRPC cannot carry"))?;
                    metadata.insert(key, value);
                }
                Transport::Grpc {
                    client: tonic::client::Grpc::new(channel.clone()),
                    metrics: MetricsServiceClient::new(channel),
                    metadata,
                }
            }
            Protocol::HttpProtobuf => {
                let uri: http::Uri = settings
                    .url
                    .parse()
                    .map_err(|e| format!("OTLP endpoint `{}`: {e}", settings.url))?;
                let headers = settings
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        Ok((
                            http::HeaderName::from_bytes(k.as_bytes())
                                .map_err(|_| format!("OTLP header name `{k}` is not valid"))?,
                            http::HeaderValue::from_str(v)
                                .map_err(|_| format!("OTLP header `{k}` has an invalid value"))?,
                        ))
                    })
                    .collect::<Result<_, String>>()?;
                Transport::Http {
                    client: Client::builder(TokioExecutor::new())
                        .build(tls::connector(&settings.tls, false)?),
                    uri,
                    metrics_uri: settings.metrics_url.parse().map_err(|e| {
                        format!("OTLP metrics endpoint `{}`: {e}", settings.metrics_url)
                    })?,
                    headers,
                }
            }
        };
        Ok(Self {
            transport,
            timeout: settings.timeout,
        })
    }

    /// Sends one encoded trace request.
    pub async fn export(&mut self, batch: &Batch) -> Result<Delivered, ExportError> {
        match &mut self.transport {
            Transport::Grpc {
                client, metadata, ..
            } => {
                let mut request = tonic::Request::new(Encoded(batch.body.clone()));
                *request.metadata_mut() = metadata.clone();
                request.set_timeout(self.timeout);
                let call = async {
                    client.ready().await.map_err(|e| {
                        ExportError::retryable(format!("gRPC connection not ready: {e}"))
                    })?;
                    client
                        .unary::<_, ExportTraceServiceResponse, _>(
                            request,
                            http::uri::PathAndQuery::from_static(TRACE_EXPORT),
                            tonic_prost::ProstCodec::default(),
                        )
                        .await
                        .map(|r| delivered(r.into_inner()))
                        .map_err(grpc_error)
                };
                // The channel enforces the timeout too; this one also covers
                // connecting and makes every timeout look the same.
                tokio::time::timeout(self.timeout, call)
                    .await
                    .map_err(|_| ExportError::timeout(self.timeout))?
            }
            Transport::Http {
                client,
                uri,
                headers,
                ..
            } => {
                let body = post(client, uri, headers, batch.body.clone(), self.timeout).await?;
                Ok(delivered(
                    ExportTraceServiceResponse::decode(body).unwrap_or_default(),
                ))
            }
        }
    }

    /// Sends one metrics request; returns the data points the backend rejected.
    pub async fn export_metrics(
        &mut self,
        req: ExportMetricsServiceRequest,
    ) -> Result<u64, ExportError> {
        let rejected = |r: ExportMetricsServiceResponse| {
            r.partial_success
                .map_or(0, |p| p.rejected_data_points.max(0) as u64)
        };
        match &mut self.transport {
            Transport::Grpc {
                metrics, metadata, ..
            } => {
                let mut request = tonic::Request::new(req);
                *request.metadata_mut() = metadata.clone();
                request.set_timeout(self.timeout);
                tokio::time::timeout(self.timeout, metrics.export(request))
                    .await
                    .map_err(|_| ExportError::timeout(self.timeout))?
                    .map(|r| rejected(r.into_inner()))
                    .map_err(grpc_error)
            }
            Transport::Http {
                client,
                metrics_uri,
                headers,
                ..
            } => {
                let body = post(
                    client,
                    metrics_uri,
                    headers,
                    req.encode_to_vec().into(),
                    self.timeout,
                )
                .await?;
                Ok(rejected(
                    ExportMetricsServiceResponse::decode(body).unwrap_or_default(),
                ))
            }
        }
    }
}

fn grpc_error(status: tonic::Status) -> ExportError {
    let code = status.code();
    // tonic reports its own deadline as CANCELLED "Timeout expired".
    let timed_out = code == tonic::Code::DeadlineExceeded
        || (code == tonic::Code::Cancelled && status.message().contains("Timeout expired"));
    ExportError {
        // The retryable codes of the OTLP specification, plus UNKNOWN:
        // tonic reports a connection cut mid-request that way.
        retryable: matches!(
            code,
            tonic::Code::Unavailable
                | tonic::Code::ResourceExhausted
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Aborted
                | tonic::Code::Cancelled
                | tonic::Code::OutOfRange
                | tonic::Code::DataLoss
                | tonic::Code::Unknown
        ),
        message: format!("gRPC {code:?}: {}", status.message()),
        retry_after: super::retry_hint::grpc_retry_delay(status.details()),
        timed_out,
    }
}

/// POSTs a protobuf body; the response body on success.
async fn post(
    client: &Client<tls::Connector, Full<bytes::Bytes>>,
    uri: &http::Uri,
    headers: &[(http::HeaderName, http::HeaderValue)],
    body: bytes::Bytes,
    timeout: Duration,
) -> Result<bytes::Bytes, ExportError> {
    let mut builder = http::Request::post(uri.clone())
        .header(http::header::CONTENT_TYPE, "application/x-protobuf");
    for (k, v) in headers {
        builder = builder.header(k, v);
    }
    let request = builder
        .body(Full::new(body))
        .map_err(|e| ExportError::permanent(e.to_string()))?;
    // One deadline for the whole exchange, head and body.
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| ExportError::retryable(format!("HTTP request failed: {e:#}")))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(super::retry_hint::http_retry_after);
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ExportError::retryable(format!("reading response: {e}")))?
            .to_bytes();
        Ok::<_, ExportError>((status, retry_after, body))
    };
    let (status, retry_after, body) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ExportError::timeout(timeout))??;
    if status.is_success() {
        Ok(body)
    } else {
        // The retryable statuses of the OTLP specification; any other 4xx
        // or 5xx would fail the same way again.
        let retryable = matches!(status.as_u16(), 429 | 502 | 503 | 504);
        Err(ExportError {
            retryable,
            retry_after: if retryable { retry_after } else { None },
            ..ExportError::permanent(format!("HTTP {status}"))
        })
    }
}

fn delivered(resp: ExportTraceServiceResponse) -> Delivered {
    match resp.partial_success {
        Some(p) => Delivered {
            rejected: p.rejected_spans.max(0) as u64,
            message: p.error_message,
        },
        None => Delivered::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(resource: &Arc<Resource>, name: &str, parent: bool) -> Span {
        let mut attributes = Attributes::default();
        attributes.set("http.response.status_code", 200i64);
        Span {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: parent.then_some([3; 8]),
            trace_state: "k=v".into(),
            flags: 1,
            name: name.into(),
            kind: SpanKind::Server,
            start_unix_ns: 10,
            end_unix_ns: 20,
            attributes,
            status: Status::Error,
            resource: resource.clone(),
        }
    }

    #[test]
    fn groups_spans_by_process_resource() {
        let mut a = Attributes::default();
        a.set("service.name", "order");
        let order = Arc::new(Resource { attributes: a });
        let mut b = Attributes::default();
        b.set("service.name", "payment");
        let payment = Arc::new(Resource { attributes: b });
        let spans = vec![
            span(&order, "GET", false),
            span(&payment, "POST", true),
            span(&order, "PUT", true),
        ];
        // What is sent, over either protocol, is this request's encoding.
        let batch = Batch::encode(spans.clone());
        assert_eq!(batch.spans, 3);
        assert_eq!(Encoded(batch.body.clone()).encode_to_vec(), batch.body);
        let req = request(spans);
        assert_eq!(
            ExportTraceServiceRequest::decode(batch.body.clone()).unwrap(),
            req
        );
        assert_eq!(req.resource_spans.len(), 2);
        let first = &req.resource_spans[0];
        assert_eq!(
            first.resource.as_ref().unwrap().attributes[0]
                .value
                .as_ref()
                .unwrap()
                .value,
            Some(any_value::Value::StringValue("order".into()))
        );
        let names: Vec<&str> = first.scope_spans[0]
            .spans
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, vec!["GET", "PUT"]);
        let s = &first.scope_spans[0].spans[1];
        assert_eq!(s.parent_span_id, vec![3; 8]);
        assert_eq!(s.kind, span::SpanKind::Server as i32);
        assert_eq!(
            s.status.as_ref().unwrap().code,
            status::StatusCode::Error as i32
        );
        assert_eq!(s.flags, 0x301);
        assert_eq!(
            first.scope_spans[0].spans[0].parent_span_id,
            Vec::<u8>::new()
        );
        assert_eq!(first.scope_spans[0].scope.as_ref().unwrap().name, "seam");
    }
}
