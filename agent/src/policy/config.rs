//! The agent's YAML configuration file.
//!
//! # Precedence
//!
//! Each setting is taken from the first source that sets it:
//! command-line flags, then environment variables (`OTEL_*` and the agent's
//! own), then this file, then the built-in defaults. Every field of
//! [`FileConfig`] is an `Option` so that "not set in the file" stays visible
//! to whoever merges the sources; [`FileConfig::effective`] fills the gaps
//! with the defaults for display.
//!
//! # Format
//!
//! ```yaml
//! selection: {pids: [1234], exe_names: [nginx], ports: [80, 443]}
//! export:
//!   endpoint: http://collector:4317
//!   protocol: grpc            # or http/protobuf
//!   headers: {x-api-key: s3cr3t}
//!   console: false
//!   queue_mib: 64             # memory bound of spans waiting for the backend
//! sampling:
//!   head: {sampler: parentbased_traceidratio, arg: 0.25}
//!   tail:
//!     enabled: true
//!     decision_wait_ms: 5000
//!     latency_threshold_ms: 1000
//!     keep_ratio: 0.05
//!     max_traces_per_second: 100
//!     max_buffered_spans: 100000
//! redaction: {header_allowlist: [user-agent], keep_query_values: false}
//! routes: {patterns: ["/users/{id}/orders"], max_routes_per_service: 1000}
//! metrics: {listen: "0.0.0.0:9464"}   # null: no metrics endpoint
//! tracing: {tuple_linking: true, inject_traceparent: false}
//! ring_buffer_mib: 8
//! disable_features: [sk_msg]  # as --disable-feature: uprobes, sk_msg, sock_ops, cgroup2
//! ```
//!
//! Unknown keys are errors, and every error names the key path
//! (`sampling.tail.keep_ratio: expected a number between 0 and 1, got 1.5`).
//!
//! The YAML parser is `serde_norway`, a maintained fork of the deprecated
//! `serde_yaml` with the same API; `serde_path_to_error` supplies the paths.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_norway::Value;

use crate::policy::redact::{RedactConfig, default_path_patterns};
use crate::policy::route::{RouteConfig, validate_pattern};
use crate::policy::sampler::HeadSampler;
use crate::policy::tail::TailConfig;

pub const DEFAULT_RING_BUFFER_MIB: u32 = 8;
/// Largest export queue bound accepted, in MiB.
pub const MAX_QUEUE_MIB: u32 = 65_536;
const MASK: &str = "***";

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection: Option<Selection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<Export>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampling: Option<Sampling>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redaction: Option<Redaction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routes: Option<Routes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing: Option<Tracing>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<Kubernetes>,
    /// Size of the kernel-to-agent ring buffer: a power of two, 1–1024.
    #[serde(
        default,
        deserialize_with = "ring_buffer_mib",
        skip_serializing_if = "Option::is_none"
    )]
    pub ring_buffer_mib: Option<u32>,
    /// Hook families turned off, as with `--disable-feature` (uprobes,
    /// sk_msg, sock_ops, cgroup2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_features: Option<Vec<crate::preflight::Feature>>,
}

/// Which processes are traced; an empty or missing list does not filter.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<Vec<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe_names: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<u16>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum Protocol {
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Export {
    /// OTLP endpoint URL (`http://` or `https://`).
    #[serde(
        default,
        deserialize_with = "endpoint",
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Sent with every export request; values are treated as secrets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// Also print spans to standard output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console: Option<bool>,
    /// PEM CA file the collector's certificate must chain to (https).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// PEM client certificate for collectors requiring mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// PEM private key of the client certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    /// Memory bound of the spans waiting for the backend, in MiB (1–65536).
    #[serde(
        default,
        deserialize_with = "queue_mib",
        skip_serializing_if = "Option::is_none"
    )]
    pub queue_mib: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Sampling {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head: Option<HeadSampling>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tail: Option<TailSampling>,
}

/// The `OTEL_TRACES_SAMPLER` values, spelled the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum SamplerName {
    #[serde(rename = "always_on")]
    AlwaysOn,
    #[serde(rename = "always_off")]
    AlwaysOff,
    #[serde(rename = "traceidratio")]
    TraceIdRatio,
    #[serde(rename = "parentbased_always_on")]
    ParentBasedAlwaysOn,
    #[serde(rename = "parentbased_always_off")]
    ParentBasedAlwaysOff,
    #[serde(rename = "parentbased_traceidratio")]
    ParentBasedTraceIdRatio,
}

impl SamplerName {
    pub fn as_str(self) -> &'static str {
        match self {
            SamplerName::AlwaysOn => "always_on",
            SamplerName::AlwaysOff => "always_off",
            SamplerName::TraceIdRatio => "traceidratio",
            SamplerName::ParentBasedAlwaysOn => "parentbased_always_on",
            SamplerName::ParentBasedAlwaysOff => "parentbased_always_off",
            SamplerName::ParentBasedTraceIdRatio => "parentbased_traceidratio",
        }
    }

    fn takes_ratio(self) -> bool {
        matches!(
            self,
            SamplerName::TraceIdRatio | SamplerName::ParentBasedTraceIdRatio
        )
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeadSampling {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampler: Option<SamplerName>,
    /// The ratio of the `traceidratio` samplers (`OTEL_TRACES_SAMPLER_ARG`).
    #[serde(
        default,
        deserialize_with = "ratio",
        skip_serializing_if = "Option::is_none"
    )]
    pub arg: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TailSampling {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_wait_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_threshold_ms: Option<u64>,
    #[serde(
        default,
        deserialize_with = "ratio",
        skip_serializing_if = "Option::is_none"
    )]
    pub keep_ratio: Option<f64>,
    /// 0 disables the cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_traces_per_second: Option<u32>,
    #[serde(
        default,
        deserialize_with = "positive",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_buffered_spans: Option<usize>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Redaction {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_allowlist: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_query_values: Option<bool>,
    /// Replaces (does not extend) the default e-mail and card patterns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_patterns: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Routes {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patterns: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_routes_per_service: Option<usize>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// `Some(None)` is an explicit `null`: no metrics endpoint, even if a
    /// lower-precedence source would open one.
    #[serde(
        default,
        deserialize_with = "listen",
        skip_serializing_if = "Option::is_none"
    )]
    pub listen: Option<Option<String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// Link client and server spans of the same connection by its 4-tuple.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tuple_linking: Option<bool>,
    /// Add a `traceparent` header to outgoing requests (changes traffic).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inject_traceparent: Option<bool>,
}

/// Tracing the pods of this node that opt in by label (DaemonSet mode).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Kubernetes {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The opt-in label key (default `seam.dev/trace`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_key: Option<String>,
    /// Extra label selector the opted-in pods must match too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
    /// API server URL without credentials (e.g. `kubectl proxy`); default:
    /// the pod's service account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
}

fn ratio<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let v = Option::<f64>::deserialize(d)?;
    match v {
        Some(x) if !(0.0..=1.0).contains(&x) => Err(D::Error::custom(format!(
            "expected a number between 0 and 1, got {x}"
        ))),
        _ => Ok(v),
    }
}

fn positive<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let v = Option::<usize>::deserialize(d)?;
    if v == Some(0) {
        return Err(D::Error::custom("expected a number greater than 0, got 0"));
    }
    Ok(v)
}

fn queue_mib<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let v = Option::<u32>::deserialize(d)?;
    match v {
        Some(n) if !(1..=MAX_QUEUE_MIB).contains(&n) => Err(D::Error::custom(format!(
            "expected MiB between 1 and {MAX_QUEUE_MIB}, got {n}"
        ))),
        _ => Ok(v),
    }
}

fn ring_buffer_mib<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let v = Option::<u32>::deserialize(d)?;
    match v {
        // The kernel only accepts ring buffers whose size is a power of two.
        Some(n) if !n.is_power_of_two() || n > 1024 => Err(D::Error::custom(format!(
            "expected a power of two between 1 and 1024, got {n}"
        ))),
        _ => Ok(v),
    }
}

fn endpoint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Option::<String>::deserialize(d)?;
    if let Some(url) = &v {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
            return Err(D::Error::custom(format!(
                "expected an http:// or https:// URL with a host, got {url:?}"
            )));
        }
    }
    Ok(v)
}

fn listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    let v = Option::<String>::deserialize(d)?;
    if let Some(addr) = &v
        && addr.parse::<SocketAddr>().is_err()
    {
        return Err(D::Error::custom(format!(
            "expected an IP address and port such as 0.0.0.0:9464, or null, got {addr:?}"
        )));
    }
    Ok(Some(v))
}

/// Reads and validates a configuration file.
pub fn load(path: impl AsRef<Path>) -> Result<FileConfig, String> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses and validates configuration text.
pub fn parse(text: &str) -> Result<FileConfig, String> {
    // An empty file, or one holding only comments, is a valid "set nothing".
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Ok(FileConfig::default());
    }
    let de = serde_norway::Deserializer::from_str(text);
    let cfg: FileConfig = serde_path_to_error::deserialize(de).map_err(describe)?;
    cfg.validate()?;
    Ok(cfg)
}

/// `path: message (line L, column C)`, with serde's unknown-field message
/// reshaped so the path names the offending key.
fn describe(e: serde_path_to_error::Error<serde_norway::Error>) -> String {
    let mut path = e.path().to_string();
    let inner = e.inner();
    let mut msg = inner.to_string();
    let location = inner.location();
    if let Some(loc) = &location {
        let suffix = format!(" at line {} column {}", loc.line(), loc.column());
        if let Some(stripped) = msg.strip_suffix(&suffix) {
            msg = stripped.to_string();
        }
    }
    // serde_norway prefixes its own, coarser path (that of the enclosing
    // mapping); the tracked one is more precise.
    if let Some((inner_path, rest)) = msg.split_once(": ")
        && (path == inner_path
            || path.starts_with(&format!("{inner_path}."))
            || path.starts_with(&format!("{inner_path}[")))
    {
        msg = rest.to_string();
    }
    if let Some(rest) = msg.strip_prefix("unknown field `")
        && let Some((field, tail)) = rest.split_once('`')
    {
        if path == "." {
            path = field.to_string();
        } else if !path.ends_with(field) {
            path = format!("{path}.{field}");
        }
        msg = format!("unknown field{}", tail.replace('`', ""));
    }
    let at = location
        .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
        .unwrap_or_default();
    if path == "." {
        format!("{msg}{at}")
    } else {
        format!("{path}: {msg}{at}")
    }
}

impl FileConfig {
    /// Checks what the types alone cannot: regexes, route templates, and
    /// settings that contradict each other.
    fn validate(&self) -> Result<(), String> {
        if let Some(patterns) = self
            .redaction
            .as_ref()
            .and_then(|r| r.path_patterns.as_ref())
        {
            for (i, p) in patterns.iter().enumerate() {
                regex::Regex::new(p).map_err(|e| {
                    format!("redaction.path_patterns[{i}]: invalid regex {p:?}: {e}")
                })?;
            }
        }
        if let Some(patterns) = self.routes.as_ref().and_then(|r| r.patterns.as_ref()) {
            for (i, p) in patterns.iter().enumerate() {
                validate_pattern(p).map_err(|e| format!("routes.patterns[{i}]: {e}"))?;
            }
        }
        if let Some(head) = self.sampling.as_ref().and_then(|s| s.head.as_ref())
            && let (Some(name), Some(_)) = (head.sampler, head.arg)
            && !name.takes_ratio()
        {
            return Err(format!(
                "sampling.head.arg: {} takes no argument; only traceidratio and \
                 parentbased_traceidratio do",
                name.as_str()
            ));
        }
        Ok(())
    }

    /// The file merged over the defaults: every field set.
    pub fn effective(&self) -> FileConfig {
        let sel = self.selection.clone().unwrap_or_default();
        let exp = self.export.clone().unwrap_or_default();
        let protocol = exp.protocol.unwrap_or(Protocol::Grpc);
        let sampling = self.sampling.clone().unwrap_or_default();
        let head = sampling.head.unwrap_or_default();
        let tail = sampling.tail.unwrap_or_default();
        let tail_defaults = TailConfig::default();
        let red = self.redaction.clone().unwrap_or_default();
        let routes = self.routes.clone().unwrap_or_default();
        let metrics = self.metrics.clone().unwrap_or_default();
        let tracing = self.tracing.clone().unwrap_or_default();
        let sampler = head.sampler.unwrap_or(SamplerName::ParentBasedAlwaysOn);
        FileConfig {
            selection: Some(Selection {
                pids: Some(sel.pids.unwrap_or_default()),
                exe_names: Some(sel.exe_names.unwrap_or_default()),
                ports: Some(sel.ports.unwrap_or_default()),
            }),
            export: Some(Export {
                // No endpoint means console output: nothing is invented here.
                protocol: exp.endpoint.as_ref().map(|_| protocol),
                endpoint: exp.endpoint,
                headers: Some(exp.headers.unwrap_or_default()),
                console: Some(exp.console.unwrap_or(false)),
                // No default file: unset means the system's trust store.
                certificate: exp.certificate,
                client_certificate: exp.client_certificate,
                client_key: exp.client_key,
                queue_mib: Some(
                    exp.queue_mib
                        .unwrap_or(crate::export::env::DEFAULT_QUEUE_MIB),
                ),
            }),
            sampling: Some(Sampling {
                head: Some(HeadSampling {
                    sampler: Some(sampler),
                    arg: if sampler.takes_ratio() {
                        Some(head.arg.unwrap_or(1.0))
                    } else {
                        None
                    },
                }),
                tail: Some(TailSampling {
                    enabled: Some(tail.enabled.unwrap_or(false)),
                    decision_wait_ms: Some(
                        tail.decision_wait_ms
                            .unwrap_or(millis(tail_defaults.decision_wait)),
                    ),
                    latency_threshold_ms: Some(
                        tail.latency_threshold_ms
                            .unwrap_or(millis(tail_defaults.latency_threshold)),
                    ),
                    keep_ratio: Some(tail.keep_ratio.unwrap_or(tail_defaults.keep_ratio)),
                    max_traces_per_second: Some(
                        tail.max_traces_per_second
                            .unwrap_or(tail_defaults.max_traces_per_second),
                    ),
                    max_buffered_spans: Some(
                        tail.max_buffered_spans
                            .unwrap_or(tail_defaults.max_buffered_spans),
                    ),
                }),
            }),
            redaction: Some(Redaction {
                header_allowlist: Some(red.header_allowlist.unwrap_or_default()),
                keep_query_values: Some(red.keep_query_values.unwrap_or(false)),
                path_patterns: Some(red.path_patterns.unwrap_or_else(default_path_patterns)),
            }),
            routes: Some(Routes {
                patterns: Some(routes.patterns.unwrap_or_default()),
                max_routes_per_service: Some(
                    routes
                        .max_routes_per_service
                        .unwrap_or(RouteConfig::default().max_routes_per_service),
                ),
            }),
            metrics: Some(Metrics {
                listen: Some(metrics.listen.unwrap_or(None)),
            }),
            tracing: Some(Tracing {
                tuple_linking: Some(tracing.tuple_linking.unwrap_or(true)),
                inject_traceparent: Some(tracing.inject_traceparent.unwrap_or(false)),
            }),
            ring_buffer_mib: Some(self.ring_buffer_mib.unwrap_or(DEFAULT_RING_BUFFER_MIB)),
            disable_features: Some(self.disable_features.clone().unwrap_or_default()),
            kubernetes: Some(Kubernetes {
                enabled: Some(
                    self.kubernetes
                        .as_ref()
                        .and_then(|k| k.enabled)
                        .unwrap_or(false),
                ),
                ..self.kubernetes.clone().unwrap_or_default()
            }),
        }
    }

    /// The effective configuration as YAML, with export header values, any
    /// value under a key that looks like a credential, and credentials inside
    /// the endpoint URL replaced by `***`.
    pub fn print_masked(&self) -> String {
        let mut value = match serde_norway::to_value(self.effective()) {
            Ok(v) => v,
            Err(e) => return format!("# cannot render the configuration: {e}\n"),
        };
        mask(&mut value, &mut Vec::new());
        serde_norway::to_string(&value)
            .unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"))
    }

    /// The head sampler the file asks for, if it names one.
    ///
    /// (The reverse, for printing, is [`HeadSampler::file_form`].)
    pub fn head_sampler(&self) -> Option<Result<HeadSampler, String>> {
        let head = self.sampling.as_ref()?.head.as_ref()?;
        let name = head.sampler?;
        let arg = head.arg.map(|a| a.to_string());
        Some(HeadSampler::from_name(name.as_str(), arg.as_deref()))
    }

    /// Tail-sampling settings when the file enables it.
    pub fn tail_config(&self) -> Option<TailConfig> {
        let tail = self.sampling.as_ref()?.tail.as_ref()?;
        if tail.enabled != Some(true) {
            return None;
        }
        let d = TailConfig::default();
        Some(TailConfig {
            decision_wait: tail
                .decision_wait_ms
                .map_or(d.decision_wait, Duration::from_millis),
            latency_threshold: tail
                .latency_threshold_ms
                .map_or(d.latency_threshold, Duration::from_millis),
            keep_ratio: tail.keep_ratio.unwrap_or(d.keep_ratio),
            max_traces_per_second: tail
                .max_traces_per_second
                .unwrap_or(d.max_traces_per_second),
            max_buffered_spans: tail.max_buffered_spans.unwrap_or(d.max_buffered_spans),
            ..d
        })
    }

    pub fn redact_config(&self) -> RedactConfig {
        let d = RedactConfig::default();
        let Some(r) = &self.redaction else {
            return d;
        };
        RedactConfig {
            header_allowlist: r.header_allowlist.clone().unwrap_or(d.header_allowlist),
            keep_query_values: r.keep_query_values.unwrap_or(d.keep_query_values),
            path_patterns: r.path_patterns.clone().unwrap_or(d.path_patterns),
        }
    }

    pub fn route_config(&self) -> RouteConfig {
        let d = RouteConfig::default();
        let Some(r) = &self.routes else {
            return d;
        };
        RouteConfig {
            patterns: r.patterns.clone().unwrap_or(d.patterns),
            max_routes_per_service: r.max_routes_per_service.unwrap_or(d.max_routes_per_service),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Key names whose values are treated as credentials.
fn looks_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "token",
        "password",
        "passwd",
        "secret",
        "key",
        "credential",
        "auth",
    ]
    .iter()
    .any(|w| key.contains(w))
}

fn mask(value: &mut Value, path: &mut Vec<String>) {
    match value {
        Value::Mapping(map) => {
            let under_export_headers =
                path.len() == 2 && path[0] == "export" && path[1] == "headers";
            for (k, v) in map.iter_mut() {
                let key = match k {
                    Value::String(s) => s.clone(),
                    other => serde_norway::to_string(other).unwrap_or_default(),
                };
                if under_export_headers || looks_secret(&key) {
                    mask_all(v);
                } else if key == "endpoint" {
                    if let Value::String(url) = v {
                        *url = mask_url(url);
                    }
                } else {
                    path.push(key);
                    mask(v, path);
                    path.pop();
                }
            }
        }
        Value::Sequence(items) => {
            for item in items {
                mask(item, path);
            }
        }
        Value::Tagged(t) => mask(&mut t.value, path),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
    }
}

fn mask_all(value: &mut Value) {
    match value {
        Value::Null => {}
        Value::Bool(_) | Value::Number(_) | Value::String(_) => {
            *value = Value::String(MASK.to_string());
        }
        Value::Sequence(items) => items.iter_mut().for_each(mask_all),
        Value::Mapping(map) => map.iter_mut().for_each(|(_, v)| mask_all(v)),
        Value::Tagged(t) => mask_all(&mut t.value),
    }
}

/// Masks userinfo and credential-like query values in a URL.
fn mask_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(end);
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://{MASK}:{MASK}@{host}{path}"),
                None => base.to_string(),
            }
        }
        None => base.to_string(),
    };
    if let Some(q) = query {
        let masked: Vec<String> = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if looks_secret(k) => format!("{k}={MASK}"),
                _ => pair.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&masked.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::redact::Redactor;
    use crate::policy::route::Router;
    use crate::policy::sampler::{RootSampler, TraceIdRatio};

    const FULL: &str = r#"
# Every section, with non-default values.
selection:
  pids: [1, 42]
  exe_names: [nginx, "python3.12"]
  ports: [80, 8443]
export:
  endpoint: https://user:hunter2@collector.example:4318/otlp?api_key=abc&region=eu
  protocol: http/protobuf
  headers:
    x-api-key: s3cr3t
    x-tenant: acme
  console: true
  queue_mib: 8
sampling:
  head:
    sampler: parentbased_traceidratio
    arg: 0.25
  tail:
    enabled: true
    decision_wait_ms: 2000
    latency_threshold_ms: 250
    keep_ratio: 0.1
    max_traces_per_second: 50
    max_buffered_spans: 5000
redaction:
  header_allowlist: [user-agent, x-request-id]
  keep_query_values: true
  path_patterns: ['^tok_[a-z0-9]+$']
routes:
  patterns: ["/users/{id}/orders", "/static/*"]
  max_routes_per_service: 200
metrics:
  listen: "127.0.0.1:9464"
tracing:
  tuple_linking: false
  inject_traceparent: true
ring_buffer_mib: 64
"#;

    fn err(text: &str) -> String {
        parse(text).expect_err(text)
    }

    #[test]
    fn full_file_parses() {
        let c = parse(FULL).unwrap();
        let sel = c.selection.as_ref().unwrap();
        assert_eq!(sel.pids, Some(vec![1, 42]));
        assert_eq!(
            sel.exe_names,
            Some(vec!["nginx".to_string(), "python3.12".to_string()])
        );
        assert_eq!(sel.ports, Some(vec![80, 8443]));
        let exp = c.export.as_ref().unwrap();
        assert_eq!(exp.protocol, Some(Protocol::HttpProtobuf));
        assert_eq!(exp.headers.as_ref().unwrap()["x-tenant"], "acme");
        assert_eq!(exp.console, Some(true));
        assert_eq!(exp.queue_mib, Some(8));
        assert_eq!(
            c.metrics.as_ref().unwrap().listen,
            Some(Some("127.0.0.1:9464".to_string()))
        );
        assert_eq!(c.ring_buffer_mib, Some(64));
        let t = c.tracing.as_ref().unwrap();
        assert_eq!(
            (t.tuple_linking, t.inject_traceparent),
            (Some(false), Some(true))
        );

        assert_eq!(
            c.head_sampler().unwrap().unwrap(),
            HeadSampler::ParentBased(RootSampler::TraceIdRatioBased(
                TraceIdRatio::new(0.25).unwrap()
            ))
        );
        let tail = c.tail_config().unwrap();
        assert_eq!(tail.decision_wait, Duration::from_secs(2));
        assert_eq!(tail.latency_threshold, Duration::from_millis(250));
        assert_eq!(tail.keep_ratio, 0.1);
        assert_eq!(tail.max_traces_per_second, 50);
        assert_eq!(tail.max_buffered_spans, 5000);
        let red = Redactor::new(&c.redact_config()).unwrap();
        assert_eq!(red.path("/t/tok_abc1"), "/t/REDACTED");
        assert_eq!(red.query("a=1"), "a=1");
        let mut router = Router::new(&c.route_config()).unwrap();
        assert_eq!(router.route("s", "/users/9/orders"), "/users/{id}/orders");
    }

    #[test]
    fn empty_and_partial_files() {
        assert_eq!(parse("").unwrap(), FileConfig::default());
        assert_eq!(parse("# nothing\n\n").unwrap(), FileConfig::default());
        let c = parse("sampling: {tail: {keep_ratio: 1}}").unwrap();
        // Present but not enabled.
        assert!(c.tail_config().is_none());
        assert!(c.head_sampler().is_none());
        assert_eq!(c.redact_config(), RedactConfig::default());
        assert_eq!(c.route_config(), RouteConfig::default());
        let c = parse("sampling: {tail: {enabled: true}}").unwrap();
        assert_eq!(c.tail_config().unwrap(), TailConfig::default());
    }

    #[test]
    fn explicit_null_listen_is_kept_apart_from_absent() {
        let c = parse("metrics: {listen: null}").unwrap();
        assert_eq!(c.metrics.unwrap().listen, Some(None));
        let c = parse("metrics: {}").unwrap();
        assert_eq!(c.metrics.unwrap().listen, None);
    }

    #[test]
    fn errors_name_the_key_path() {
        let cases = [
            (
                "sampling:\n  tail:\n    keep_ratio: 1.5\n",
                "sampling.tail.keep_ratio: expected a number between 0 and 1, got 1.5",
            ),
            (
                "export:\n  protcol: grpc\n",
                "export.protcol: unknown field, expected one of endpoint, protocol, headers, console, certificate, client_certificate, client_key, queue_mib",
            ),
            (
                "bogus: 1\n",
                "bogus: unknown field, expected one of selection, export",
            ),
            (
                "export: {protocol: http}\n",
                "export.protocol: unknown variant `http`",
            ),
            (
                "sampling: {head: {sampler: always}}\n",
                "sampling.head.sampler: unknown variant `always`, expected one of `always_on`",
            ),
            (
                "sampling: {head: {arg: -1}}\n",
                "sampling.head.arg: expected a number between 0 and 1",
            ),
            (
                "selection: {ports: [80, 70000]}\n",
                "selection.ports[1]: invalid value",
            ),
            (
                "selection: {pids: [abc]}\n",
                "selection.pids[0]: invalid type",
            ),
            ("export: {console: maybe}\n", "export.console: invalid type"),
            (
                "export: {queue_mib: 0}\n",
                "export.queue_mib: expected MiB between 1 and 65536, got 0",
            ),
            (
                "export: {headers: {a: [1]}}\n",
                "export.headers.a: invalid type",
            ),
            (
                "metrics: {listen: 'localhost'}\n",
                "metrics.listen: expected an IP address and port",
            ),
            (
                "export: {endpoint: 'collector:4317'}\n",
                "export.endpoint: expected an http://",
            ),
            (
                "ring_buffer_mib: 3\n",
                "ring_buffer_mib: expected a power of two",
            ),
            (
                "sampling: {tail: {max_buffered_spans: 0}}\n",
                "sampling.tail.max_buffered_spans: expected a number greater than 0",
            ),
            (
                "sampling: {tail: {decision_wait_ms: -5}}\n",
                "sampling.tail.decision_wait_ms: invalid type: integer `-5`, expected u64",
            ),
            (
                "routes:\n  patterns: ['/ok', '/a/*/b']\n",
                "routes.patterns[1]: route pattern",
            ),
            (
                "redaction:\n  path_patterns: ['ok', '(']\n",
                "redaction.path_patterns[1]: invalid regex \"(\"",
            ),
            (
                "sampling: {head: {sampler: always_on, arg: 0.5}}\n",
                "sampling.head.arg: always_on takes no argument",
            ),
            (
                "tracing: {tuple_linking: true, extra: 1}\n",
                "tracing.extra: unknown field",
            ),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(
                got.starts_with(want),
                "{text:?}\n got: {got}\nwant: {want}…"
            );
        }
    }

    #[test]
    fn errors_carry_the_location() {
        let got = err("export:\n  protcol: grpc\n");
        assert!(got.ends_with("(line 2, column 3)"), "{got}");
    }

    #[test]
    fn syntax_errors_are_reported() {
        let got = err("export: [unclosed\n");
        assert!(got.contains("line"), "{got}");
    }

    #[test]
    fn load_reads_files_and_names_them() {
        let dir = std::env::temp_dir().join(format!("seam-policy-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.yaml");
        std::fs::write(&good, FULL).unwrap();
        assert_eq!(load(&good).unwrap(), parse(FULL).unwrap());
        let bad = dir.join("bad.yaml");
        std::fs::write(&bad, "ring_buffer_mib: 0\n").unwrap();
        let e = load(&bad).unwrap_err();
        assert!(
            e.starts_with(&format!("{}: ring_buffer_mib:", bad.display())),
            "{e}"
        );
        let e = load(dir.join("missing.yaml")).unwrap_err();
        assert!(e.starts_with("cannot read"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn masked_output_hides_secrets() {
        let out = parse(FULL).unwrap().print_masked();
        for secret in ["s3cr3t", "acme", "hunter2", "user:", "api_key=abc"] {
            assert!(!out.contains(secret), "{secret} leaked:\n{out}");
        }
        assert!(
            out.contains("x-api-key: '***'") || out.contains("x-api-key: \"***\""),
            "{out}"
        );
        assert!(
            out.contains("https://***:***@collector.example:4318/otlp?api_key=***&region=eu"),
            "{out}"
        );
        // Everything else is shown, and the output is itself a valid config.
        assert!(out.contains("parentbased_traceidratio"), "{out}");
        assert!(out.contains("keep_ratio: 0.1"), "{out}");
        let reparsed = parse(&out).unwrap();
        assert_eq!(reparsed.routes, parse(FULL).unwrap().effective().routes);
    }

    #[test]
    fn masking_matches_key_names() {
        let mut v: Value = serde_norway::from_str(
            "a: {token: t, Password: p, client_secret: s, apiKey: k, authHeader: h, name: n, \
             list_token: [x, y], nested: {bearer_auth: {deep: z}}, empty_secret: null}",
        )
        .unwrap();
        mask(&mut v, &mut Vec::new());
        let out = serde_norway::to_string(&v).unwrap();
        for leaked in [": t", ": p", ": s", ": k", ": h", "- x", "- y", ": z"] {
            assert!(!out.contains(leaked), "{leaked}:\n{out}");
        }
        assert!(out.contains("name: n"), "{out}");
        assert!(out.contains("empty_secret: null"), "{out}");
    }

    #[test]
    fn effective_defaults() {
        let e = FileConfig::default().effective();
        let exp = e.export.as_ref().unwrap();
        // No endpoint: the agent prints to the console; nothing is invented.
        assert_eq!(exp.endpoint, None);
        assert_eq!(exp.protocol, None);
        let head = e.sampling.as_ref().unwrap().head.as_ref().unwrap();
        assert_eq!(head.sampler, Some(SamplerName::ParentBasedAlwaysOn));
        assert_eq!(head.arg, None);
        let tail = e.sampling.as_ref().unwrap().tail.as_ref().unwrap();
        assert_eq!(tail.enabled, Some(false));
        assert_eq!(tail.decision_wait_ms, Some(5000));
        assert_eq!(tail.latency_threshold_ms, Some(1000));
        assert_eq!(tail.keep_ratio, Some(0.05));
        assert_eq!(tail.max_traces_per_second, Some(100));
        assert_eq!(tail.max_buffered_spans, Some(100_000));
        assert_eq!(e.metrics.as_ref().unwrap().listen, Some(None));
        assert_eq!(e.ring_buffer_mib, Some(DEFAULT_RING_BUFFER_MIB));
        assert_eq!(
            e.redaction.as_ref().unwrap().path_patterns,
            Some(default_path_patterns())
        );
        let http = parse("export: {endpoint: 'http://c:4318', protocol: http/protobuf}")
            .unwrap()
            .effective();
        assert_eq!(http.export.unwrap().protocol, Some(Protocol::HttpProtobuf));
        // The rendered defaults load back to the same effective configuration.
        let text = FileConfig::default().print_masked();
        assert_eq!(parse(&text).unwrap(), e, "{text}");
    }
}
