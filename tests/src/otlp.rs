//! A real OTLP receiver, over gRPC (tonic) or HTTP/protobuf (axum), that
//! keeps every request it is sent. For tests of a backend that is down or
//! misbehaves it can stop listening (cutting the connections it has) and
//! come back on the same port, and answer trace requests with a [`Fault`]
//! switched at runtime.
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode},
    routing::post,
};
use opentelemetry_proto::tonic::collector::{
    metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        metrics_service_server::{MetricsService, MetricsServiceServer},
    },
    trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
};
use prost::Message as _;
use tokio::task::{JoinHandle, JoinSet};

use crate::spans::{SpanView, flatten};

/// How the receiver answers trace requests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    /// Keeps the request and answers success.
    #[default]
    None,
    /// HTTP 503 (with `Retry-After` seconds when set, or the HTTP-date that
    /// far ahead when `as_date`) or gRPC UNAVAILABLE (with a RetryInfo delay
    /// when set); the request is not kept.
    Unavailable {
        retry_after: Option<Duration>,
        as_date: bool,
    },
    /// HTTP 400 or gRPC INVALID_ARGUMENT, an error not worth retrying; the
    /// request is not kept.
    BadRequest,
    /// Keeps the request and answers a partial success rejecting up to this
    /// many of its spans.
    Reject(u64),
    /// Waits this long, then keeps the request and answers success (if the
    /// client still listens).
    Delay(Duration),
}

/// A trace request answered with a fault.
#[derive(Clone, Debug)]
pub struct Faulted {
    pub at: Instant,
    pub spans: usize,
    pub fault: Fault,
}

#[derive(Clone, Default)]
struct Store {
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
    raw: Arc<Mutex<Vec<Vec<u8>>>>,
    fault: Arc<Mutex<Fault>>,
    faulted: Arc<Mutex<Vec<Faulted>>>,
    rejected: Arc<Mutex<u64>>,
}

/// What to answer a trace request.
enum Answer {
    Ok { rejected: u64 },
    Unavailable(Option<Duration>, bool),
    BadRequest,
}

fn span_count(req: &ExportTraceServiceRequest) -> usize {
    req.resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

impl Store {
    async fn trace(&self, req: ExportTraceServiceRequest, raw: Vec<u8>) -> Answer {
        let fault = self.fault.lock().unwrap().clone();
        let spans = span_count(&req);
        if fault != Fault::None {
            self.faulted.lock().unwrap().push(Faulted {
                at: Instant::now(),
                spans,
                fault: fault.clone(),
            });
        }
        match fault {
            Fault::None => {}
            Fault::Unavailable {
                retry_after,
                as_date,
            } => return Answer::Unavailable(retry_after, as_date),
            Fault::BadRequest => return Answer::BadRequest,
            Fault::Reject(n) => {
                let rejected = n.min(spans as u64);
                *self.rejected.lock().unwrap() += rejected;
                self.keep(req, raw);
                return Answer::Ok { rejected };
            }
            // Dropped here if the client gives up first.
            Fault::Delay(d) => tokio::time::sleep(d).await,
        }
        self.keep(req, raw);
        Answer::Ok { rejected: 0 }
    }

    fn keep(&self, req: ExportTraceServiceRequest, raw: Vec<u8>) {
        self.requests.lock().unwrap().push(req);
        self.raw.lock().unwrap().push(raw);
    }
}

fn response(rejected: u64) -> ExportTraceServiceResponse {
    ExportTraceServiceResponse {
        partial_success: (rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: rejected as i64,
            error_message: "rejected by the test receiver".into(),
        }),
    }
}

// google.rpc.Status and RetryInfo, for gRPC's `grpc-status-details-bin`.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<ProtoAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

fn unavailable(retry_after: Option<Duration>) -> tonic::Status {
    let msg = "test receiver unavailable";
    match retry_after {
        None => tonic::Status::unavailable(msg),
        Some(d) => {
            let details = RpcStatus {
                code: tonic::Code::Unavailable as i32,
                message: msg.into(),
                details: vec![ProtoAny {
                    type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                    value: RetryInfo {
                        retry_delay: Some(ProtoDuration {
                            seconds: d.as_secs() as i64,
                            nanos: d.subsec_nanos() as i32,
                        }),
                    }
                    .encode_to_vec(),
                }],
            };
            tonic::Status::with_details(
                tonic::Code::Unavailable,
                msg,
                details.encode_to_vec().into(),
            )
        }
    }
}

#[tonic::async_trait]
impl TraceService for Store {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let req = request.into_inner();
        let raw = req.encode_to_vec();
        match self.trace(req, raw).await {
            Answer::Ok { rejected } => Ok(tonic::Response::new(response(rejected))),
            Answer::Unavailable(after, _) => Err(unavailable(after)),
            Answer::BadRequest => Err(tonic::Status::invalid_argument(
                "test receiver refuses this",
            )),
        }
    }
}

#[tonic::async_trait]
impl MetricsService for Store {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let req = request.into_inner();
        self.raw.lock().unwrap().push(req.encode_to_vec());
        self.metrics.lock().unwrap().push(req);
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

async fn http_metrics(State(store): State<Store>, body: Bytes) -> (StatusCode, Vec<u8>) {
    match ExportMetricsServiceRequest::decode(body.clone()) {
        Ok(req) => {
            store.raw.lock().unwrap().push(body.to_vec());
            store.metrics.lock().unwrap().push(req);
            (
                StatusCode::OK,
                ExportMetricsServiceResponse::default().encode_to_vec(),
            )
        }
        Err(_) => (StatusCode::BAD_REQUEST, Vec::new()),
    }
}

async fn http_export(State(store): State<Store>, body: Bytes) -> (StatusCode, HeaderMap, Vec<u8>) {
    let Ok(req) = ExportTraceServiceRequest::decode(body.clone()) else {
        return (StatusCode::BAD_REQUEST, HeaderMap::new(), Vec::new());
    };
    match store.trace(req, body.to_vec()).await {
        Answer::Ok { rejected } => (
            StatusCode::OK,
            HeaderMap::new(),
            response(rejected).encode_to_vec(),
        ),
        Answer::Unavailable(after, as_date) => {
            let mut headers = HeaderMap::new();
            if let Some(d) = after {
                let value = if as_date {
                    httpdate::fmt_http_date(std::time::SystemTime::now() + d)
                } else {
                    d.as_secs().to_string()
                };
                headers.insert("retry-after", HeaderValue::from_str(&value).unwrap());
            }
            (StatusCode::SERVICE_UNAVAILABLE, headers, Vec::new())
        }
        Answer::BadRequest => (StatusCode::BAD_REQUEST, HeaderMap::new(), Vec::new()),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Grpc,
    Http,
}

/// A receiver; stops listening when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    pub kind: Kind,
    store: Store,
    /// The accept loop; aborting it drops the listener and every open
    /// connection with it.
    server: Option<JoinHandle<()>>,
    /// Serves TLS only, with this configuration, when set.
    tls: Option<Arc<rustls::ServerConfig>>,
    handshakes: Arc<Handshakes>,
}

/// TLS handshakes the receiver completed or saw fail.
#[derive(Default)]
pub struct Handshakes {
    pub completed: std::sync::atomic::AtomicU64,
    /// ... of which the client presented a certificate.
    pub with_client_certificate: std::sync::atomic::AtomicU64,
    pub failed: std::sync::atomic::AtomicU64,
    /// The last failure, as the server's TLS library words it.
    pub last_error: Mutex<String>,
}

impl Receiver {
    pub async fn start(kind: Kind) -> Self {
        let mut r = Self::reserve(kind);
        r.addr = "127.0.0.1:0".parse().unwrap();
        r.listen().await;
        r
    }

    /// A receiver serving only TLS with `config` (`https://` endpoint).
    pub async fn start_tls(kind: Kind, config: Arc<rustls::ServerConfig>) -> Self {
        let mut r = Self::reserve(kind);
        r.addr = "127.0.0.1:0".parse().unwrap();
        r.tls = Some(config);
        r.listen().await;
        r
    }

    /// Its TLS handshake counts.
    pub fn handshakes(&self) -> &Handshakes {
        &self.handshakes
    }

    /// A receiver on a free port that does not listen yet (connections are
    /// refused until [`Receiver::listen`]).
    pub fn reserve(kind: Kind) -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], crate::procs::free_port())),
            kind,
            store: Store::default(),
            server: None,
            tls: None,
            handshakes: Arc::default(),
        }
    }

    /// Listens (again) on its port.
    pub async fn listen(&mut self) {
        assert!(self.server.is_none(), "already listening");
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.addr = listener.local_addr().unwrap();
        let app: Router = match self.kind {
            Kind::Grpc => tonic::service::Routes::new(TraceServiceServer::new(self.store.clone()))
                .add_service(MetricsServiceServer::new(self.store.clone()))
                .into_axum_router(),
            Kind::Http => Router::new()
                .route("/v1/traces", post(http_export))
                .route("/v1/metrics", post(http_metrics))
                .with_state(self.store.clone()),
        };
        let tls = self.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        let handshakes = self.handshakes.clone();
        self.server = Some(tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                let tls = tls.clone();
                let handshakes = handshakes.clone();
                connections.spawn(async move {
                    let serve = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    let Some(tls) = tls else {
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let _ = serve.serve_connection(io, service).await;
                        return;
                    };
                    use std::sync::atomic::Ordering::Relaxed;
                    match tls.accept(stream).await {
                        Ok(stream) => {
                            handshakes.completed.fetch_add(1, Relaxed);
                            if stream.get_ref().1.peer_certificates().is_some() {
                                handshakes.with_client_certificate.fetch_add(1, Relaxed);
                            }
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = serve.serve_connection(io, service).await;
                        }
                        Err(e) => {
                            handshakes.failed.fetch_add(1, Relaxed);
                            *handshakes.last_error.lock().unwrap() = e.to_string();
                        }
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        }));
    }

    /// Stops listening and cuts every open connection: the backend is down.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }

    /// Answers trace requests this way from now on.
    pub fn set_fault(&self, fault: Fault) {
        *self.store.fault.lock().unwrap() = fault;
    }

    /// Trace requests answered with a fault so far.
    pub fn faulted(&self) -> Vec<Faulted> {
        self.store.faulted.lock().unwrap().clone()
    }

    /// Spans reported rejected in partial successes so far.
    pub fn rejected(&self) -> u64 {
        *self.store.rejected.lock().unwrap()
    }

    /// The endpoint to give the agent.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// `grpc` or `http/protobuf`.
    pub fn protocol(&self) -> &'static str {
        match self.kind {
            Kind::Grpc => "grpc",
            Kind::Http => "http/protobuf",
        }
    }

    pub fn requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.store.requests.lock().unwrap().clone()
    }

    /// Metrics requests received.
    pub fn metrics(&self) -> Vec<ExportMetricsServiceRequest> {
        self.store.metrics.lock().unwrap().clone()
    }

    /// Every request body (traces and metrics) as it arrived (HTTP) or
    /// re-encoded (gRPC).
    pub fn raw_payloads(&self) -> Vec<Vec<u8>> {
        self.store.raw.lock().unwrap().clone()
    }

    pub fn spans(&self) -> Vec<SpanView> {
        flatten(&self.requests())
    }

    /// Waits until `pred` holds for the spans received, or `timeout` passes;
    /// returns the spans either way.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        pred: impl Fn(&[SpanView]) -> bool,
    ) -> Vec<SpanView> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if pred(&spans) || Instant::now() >= deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for at least `n` spans, then a quiet period, and returns all:
    /// extra spans arriving late would be caught by the caller's exact count.
    pub async fn settle(&self, n: usize, timeout: Duration) -> Vec<SpanView> {
        self.wait_until(timeout, |s| s.len() >= n).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        self.spans()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}
