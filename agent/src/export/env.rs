//! OTLP exporter settings from the standard OpenTelemetry environment
//! variables (https://opentelemetry.io/docs/specs/otel/protocol/exporter/),
//! with command-line flags taking precedence.
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl Protocol {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            other => Err(format!(
                "unsupported OTLP protocol `{other}`; allowed values: grpc, http/protobuf"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// Where and how spans are sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpSettings {
    /// gRPC: the collector's base URL. HTTP: the full traces URL.
    pub url: String,
    /// HTTP: the full metrics URL (`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`, or
    /// the base endpoint + `/v1/metrics`). gRPC: the base URL.
    pub metrics_url: String,
    pub protocol: Protocol,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    /// CA and client certificate files for `https://` endpoints.
    pub tls: super::tls::TlsFiles,
}

/// Batching of spans before export (the `OTEL_BSP_*` variables).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchSettings {
    pub schedule_delay: Duration,
    /// Spans held while the backend is slow or down; beyond this they are
    /// dropped and counted.
    pub max_queue: usize,
    /// The same bound in (estimated) bytes: whichever is reached first.
    pub max_queue_bytes: usize,
    pub max_batch: usize,
    /// Longest wait between two attempts of a failing batch (unless the
    /// backend asks for longer with Retry-After / RetryInfo).
    pub max_backoff: Duration,
}

/// Default memory bound of the export queue (`--export-queue-mib`).
pub const DEFAULT_QUEUE_MIB: u32 = 64;

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            schedule_delay: Duration::from_millis(1000),
            max_queue: 65_536,
            max_queue_bytes: DEFAULT_QUEUE_MIB as usize * 1024 * 1024,
            max_batch: 512,
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Reads one variable, trimmed, treating empty as unset.
fn var(get: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    get(name)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The traces-specific variable, else the general one, with the name of the
/// one that was set (for error messages).
fn signal_var_named(
    get: &dyn Fn(&str) -> Option<String>,
    suffix: &str,
) -> Option<(String, String)> {
    [
        format!("OTEL_EXPORTER_OTLP_TRACES_{suffix}"),
        format!("OTEL_EXPORTER_OTLP_{suffix}"),
    ]
    .into_iter()
    .find_map(|name| var(get, &name).map(|v| (name, v)))
}

/// `key=value,key2=value2`, values percent-decoded.
pub fn parse_headers(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("OTLP header `{pair}` is not key=value"))?;
            let k = k.trim();
            if k.is_empty() {
                return Err(format!("OTLP header `{pair}` has an empty key"));
            }
            let v = crate::discover::process::parse_resource_attributes(&format!("v={}", v.trim()))
                .pop()
                .map(|(_, v)| v)
                .ok_or_else(|| format!("OTLP header `{k}` has a badly encoded value"))?;
            Ok((k.to_string(), v))
        })
        .collect()
}

/// Settings from flags and environment; `Ok(None)` when no endpoint is
/// configured anywhere (seam then prints spans to the console).
pub fn otlp_settings(
    get: &dyn Fn(&str) -> Option<String>,
    cli_endpoint: Option<&str>,
    cli_protocol: Option<Protocol>,
) -> Result<Option<OtlpSettings>, String> {
    let signal_endpoint = var(get, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let base_endpoint = var(get, "OTEL_EXPORTER_OTLP_ENDPOINT");
    // `key` names where the endpoint came from, for errors (the config
    // file's export.endpoint arrives as OTEL_EXPORTER_OTLP_ENDPOINT).
    let (endpoint, is_signal_url, key) = match (cli_endpoint, signal_endpoint, base_endpoint) {
        (Some(cli), _, _) => (cli.to_string(), false, "--otlp-endpoint"),
        (None, Some(url), _) => (url, true, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        (None, None, Some(base)) => (
            base,
            false,
            "OTEL_EXPORTER_OTLP_ENDPOINT (or export.endpoint)",
        ),
        (None, None, None) => return Ok(None),
    };
    let uri: http::Uri = endpoint.parse().map_err(|e| {
        format!(
            "{key}: OTLP endpoint `{endpoint}` is not a URL ({e}); expected http(s)://HOST:PORT"
        )
    })?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Err(format!(
                "{key}: OTLP endpoint `{endpoint}` must start with http:// or https://"
            ));
        }
    }
    let protocol = match cli_protocol {
        Some(p) => p,
        None => match signal_var_named(get, "PROTOCOL") {
            Some((name, p)) => Protocol::parse(&p).map_err(|e| format!("{name}: {e}"))?,
            // Unset: the port usually says which one the collector speaks.
            None if uri.port_u16() == Some(4317) => Protocol::Grpc,
            None => Protocol::HttpProtobuf,
        },
    };
    // The metrics URL follows the same rules from its own variable, else the
    // base endpoint (or the flag).
    let metrics_endpoint = var(get, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
    let metrics_base = cli_endpoint
        .map(str::to_string)
        .or_else(|| var(get, "OTEL_EXPORTER_OTLP_ENDPOINT"));
    let metrics_url = match (protocol, metrics_endpoint, metrics_base) {
        (Protocol::Grpc, Some(m), _) => m,
        (Protocol::Grpc, None, Some(base)) => base,
        (Protocol::Grpc, None, None) => endpoint.clone(),
        (Protocol::HttpProtobuf, Some(m), _) => m,
        (Protocol::HttpProtobuf, None, Some(base)) => {
            format!("{}/v1/metrics", base.trim_end_matches('/'))
        }
        // Only a traces URL was given: its origin, with the metrics path.
        (Protocol::HttpProtobuf, None, None) => match endpoint.parse::<http::Uri>() {
            Ok(u) => format!(
                "{}://{}/v1/metrics",
                u.scheme_str().unwrap_or("http"),
                u.authority().map(|a| a.as_str()).unwrap_or("")
            ),
            Err(_) => endpoint.clone(),
        },
    };
    let url = match protocol {
        Protocol::Grpc => endpoint,
        Protocol::HttpProtobuf if is_signal_url => endpoint,
        Protocol::HttpProtobuf => format!("{}/v1/traces", endpoint.trim_end_matches('/')),
    };
    let headers = match signal_var_named(get, "HEADERS") {
        Some((name, h)) => parse_headers(&h).map_err(|e| format!("{name}: {e}"))?,
        None => Vec::new(),
    };
    let timeout = match signal_var_named(get, "TIMEOUT") {
        Some((name, ms)) => Duration::from_millis(
            ms.parse()
                .map_err(|_| format!("{name}: `{ms}` is not a whole number of milliseconds"))?,
        ),
        None => Duration::from_secs(10),
    };
    Ok(Some(OtlpSettings {
        url,
        metrics_url,
        protocol,
        headers,
        timeout,
        tls: tls_files(get),
    }))
}

/// The TLS file variables; each named as set, with the config-file key
/// that can stand for the general variable.
fn tls_files(get: &dyn Fn(&str) -> Option<String>) -> super::tls::TlsFiles {
    let file = |suffix: &str, key: &str| {
        signal_var_named(get, suffix).map(|(name, path)| super::tls::NamedPath {
            setting: if name.contains("_TRACES_") {
                name
            } else {
                format!("{name} (or export.{key})")
            },
            path,
        })
    };
    super::tls::TlsFiles {
        ca: file("CERTIFICATE", "certificate"),
        client_certificate: file("CLIENT_CERTIFICATE", "client_certificate"),
        client_key: file("CLIENT_KEY", "client_key"),
    }
}

/// Batch settings from `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_QUEUE_SIZE`
/// and `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, plus `SEAM_EXPORT_MAX_BACKOFF_MS`, a
/// testing knob that shortens the retry backoff cap (default 30 s) so tests
/// of an outage need not wait long for the agent's next attempt.
pub fn batch_settings(get: &dyn Fn(&str) -> Option<String>) -> Result<BatchSettings, String> {
    let mut b = BatchSettings::default();
    let num = |name: &str| -> Result<Option<u64>, String> {
        var(get, name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("{name}: `{v}` is not a whole number >= 0"))
            })
            .transpose()
    };
    if let Some(ms) = num("OTEL_BSP_SCHEDULE_DELAY")? {
        b.schedule_delay = Duration::from_millis(ms);
    }
    if let Some(n) = num("OTEL_BSP_MAX_QUEUE_SIZE")? {
        b.max_queue = n.max(1) as usize;
    }
    if let Some(n) = num("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")? {
        b.max_batch = (n.max(1) as usize).min(b.max_queue);
    }
    if let Some(ms) = num("SEAM_EXPORT_MAX_BACKOFF_MS")? {
        b.max_backoff = Duration::from_millis(ms.max(10));
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn no_endpoint_means_console() {
        assert_eq!(otlp_settings(&env(&[]), None, None), Ok(None));
    }

    #[test]
    fn base_endpoint_gets_traces_path_for_http() {
        let s = otlp_settings(
            &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]),
            None,
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
        assert_eq!(s.url, "http://c:4318/v1/traces");
        assert_eq!(s.metrics_url, "http://c:4318/v1/metrics");
        assert_eq!(s.timeout, Duration::from_secs(10));
    }

    #[test]
    fn signal_endpoint_is_used_as_is_and_wins() {
        let s = otlp_settings(
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://sig:9999/custom",
                ),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ]),
            None,
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.url, "http://sig:9999/custom");
        assert_eq!(s.metrics_url, "http://base:4318/v1/metrics");
    }

    #[test]
    fn grpc_by_port_or_by_variable_and_flags_win() {
        let s = otlp_settings(
            &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]),
            None,
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (s.protocol, s.url.as_str()),
            (Protocol::Grpc, "http://c:4317")
        );
        let s = otlp_settings(
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ]),
            Some("http://flag:1234"),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (s.protocol, s.url.as_str()),
            (Protocol::Grpc, "http://flag:1234")
        );
        let s = otlp_settings(
            &env(&[]),
            Some("http://flag:4317"),
            Some(Protocol::HttpProtobuf),
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.url, "http://flag:4317/v1/traces");
    }

    #[test]
    fn tls_files_are_named_as_set() {
        let s = otlp_settings(
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317"),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/general/ca.pem"),
                ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/traces/ca.pem"),
                ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem"),
                ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", " "),
            ]),
            None,
            None,
        )
        .unwrap()
        .unwrap();
        let ca = s.tls.ca.unwrap();
        assert_eq!(
            (ca.setting.as_str(), ca.path.as_str()),
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/traces/ca.pem")
        );
        let key = s.tls.client_key.unwrap();
        assert_eq!(
            key.setting,
            "OTEL_EXPORTER_OTLP_CLIENT_KEY (or export.client_key)"
        );
        assert_eq!(s.tls.client_certificate, None, "blank is unset");
    }

    #[test]
    fn headers_timeout_and_errors() {
        let s = otlp_settings(
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c"),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "api-key=abc%3D%3D, x-tenant = t1",
                ),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ]),
            None,
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            s.headers,
            vec![
                ("api-key".into(), "abc==".into()),
                ("x-tenant".into(), "t1".into())
            ]
        );
        assert_eq!(s.timeout, Duration::from_millis(2500));
        let bad = |pairs: &[(&str, &str)]| otlp_settings(&env(pairs), None, None).unwrap_err();
        assert!(bad(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4317")]).contains("http://"));
        assert!(
            bad(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
            ])
            .contains("allowed values: grpc, http/protobuf")
        );
        assert!(
            bad(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "novalue")
            ])
            .contains("key=value")
        );
    }

    #[test]
    fn batch_variables() {
        let b = batch_settings(&env(&[
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1000"),
            ("SEAM_EXPORT_MAX_BACKOFF_MS", "750"),
        ]))
        .unwrap();
        assert_eq!(b.schedule_delay, Duration::from_millis(200));
        assert_eq!(b.max_backoff, Duration::from_millis(750));
        assert_eq!(batch_settings(&env(&[])).unwrap(), BatchSettings::default());
        assert_eq!((b.max_queue, b.max_batch), (100, 100));
        assert!(batch_settings(&env(&[("OTEL_BSP_MAX_QUEUE_SIZE", "lots")])).is_err());
    }
}
