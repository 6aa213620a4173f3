//! A real OTLP receiver, over gRPC (tonic) or HTTP/protobuf (axum), that
//! keeps every request it is sent.
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use opentelemetry_proto::tonic::collector::{
    metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        metrics_service_server::{MetricsService, MetricsServiceServer},
    },
    trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
};
use prost::Message as _;
use tokio::sync::oneshot;

use crate::spans::{SpanView, flatten};

#[derive(Clone, Default)]
struct Store {
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
    raw: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Store {
    fn keep(&self, req: ExportTraceServiceRequest, raw: Vec<u8>) {
        self.requests.lock().unwrap().push(req);
        self.raw.lock().unwrap().push(raw);
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
        self.keep(req, raw);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
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

async fn http_export(State(store): State<Store>, body: Bytes) -> (StatusCode, Vec<u8>) {
    match ExportTraceServiceRequest::decode(body.clone()) {
        Ok(req) => {
            store.keep(req, body.to_vec());
            (
                StatusCode::OK,
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        }
        Err(_) => (StatusCode::BAD_REQUEST, Vec::new()),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Grpc,
    Http,
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    pub kind: Kind,
    store: Store,
    _stop: oneshot::Sender<()>,
}

impl Receiver {
    pub async fn start(kind: Kind) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store = Store::default();
        let (stop, stopped) = oneshot::channel::<()>();
        match kind {
            Kind::Grpc => {
                let svc = TraceServiceServer::new(store.clone());
                let metrics = MetricsServiceServer::new(store.clone());
                tokio::spawn(async move {
                    tonic::transport::Server::builder()
                        .add_service(svc)
                        .add_service(metrics)
                        .serve_with_incoming_shutdown(
                            tonic::transport::server::TcpIncoming::from(listener),
                            async {
                                let _ = stopped.await;
                            },
                        )
                        .await
                        .unwrap();
                });
            }
            Kind::Http => {
                let app = Router::new()
                    .route("/v1/traces", post(http_export))
                    .route("/v1/metrics", post(http_metrics))
                    .with_state(store.clone());
                tokio::spawn(async move {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await
                        .unwrap();
                });
            }
        }
        Self {
            addr,
            kind,
            store,
            _stop: stop,
        }
    }

    /// The endpoint to give the agent.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
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
