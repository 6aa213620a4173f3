//! Telemetry traffic: an SDK or collector shipping spans, metrics or logs to
//! a backend over OTLP. Tracing it would trace the tracing (every export
//! would make spans that are exported in turn), so such requests make no
//! spans, on either end.
use crate::protocol::Request;

/// OTLP/HTTP export paths (after any prefix a collector is mounted under).
const HTTP_PATHS: [&str; 3] = ["/v1/traces", "/v1/metrics", "/v1/logs"];
/// OTLP/gRPC export services.
const GRPC_PREFIX: &str = "/opentelemetry.proto.collector.";

/// Whether `request` exports telemetry over OTLP.
pub fn is_export(request: &Request) -> bool {
    match request {
        Request::Http(head) => {
            let path = head.target.split('?').next().unwrap_or("");
            head.method == "POST" && HTTP_PATHS.iter().any(|p| path.ends_with(p))
        }
        Request::Http2(h2) => h2
            .path
            .as_deref()
            .is_some_and(|p| p.starts_with(GRPC_PREFIX) || HTTP_PATHS.contains(&p)),
        Request::Postgres(_) | Request::Redis(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::http1::RequestHead;

    fn http(method: &str, target: &str) -> Request {
        Request::Http(RequestHead::for_test(method, target, &[]).into())
    }

    #[test]
    fn otlp_http_exports_only() {
        assert!(is_export(&http("POST", "/v1/traces")));
        assert!(is_export(&http("POST", "/otlp/v1/metrics?x=1")));
        assert!(!is_export(&http("GET", "/v1/traces")));
        assert!(!is_export(&http("POST", "/v1/traces/extra")));
        assert!(!is_export(&http("POST", "/api/order")));
    }
}
