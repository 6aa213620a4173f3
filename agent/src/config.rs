//! The agent's effective configuration. Each setting comes from the first
//! source that sets it: command-line flags, then environment variables (the
//! standard `OTEL_*` ones), then the YAML config file (`--config`), then the
//! defaults. `seam --print-config` shows the result with secrets masked.
use std::{collections::BTreeMap, net::SocketAddr};

use crate::{
    capture::Selection,
    cli::RunArgs,
    discover::k8s::{self, ApiSource, K8sConfig},
    export::{
        ConsoleFormat, Output,
        env::{self, BatchSettings, Protocol},
    },
    policy::{
        config::{self as file, FileConfig},
        redact::RedactConfig,
        route::{RouteConfig, validate_pattern},
        sampler::HeadSampler,
        tail::TailConfig,
    },
    preflight::Feature,
    stitch::StitchConfig,
};

/// Where `/metrics` and the health endpoints are served by default.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub selection: Selection,
    pub output: Output,
    /// Print spans to the console as well as exporting them.
    pub console_too: bool,
    pub console_format: ConsoleFormat,
    pub batch: BatchSettings,
    pub stitch: StitchConfig,
    pub ring_buffer_bytes: u32,
    pub redact: RedactConfig,
    pub routes: RouteConfig,
    /// Tail sampling, when on.
    pub tail: Option<TailConfig>,
    pub metrics_listen: Option<SocketAddr>,
    /// How often RED metrics go to the OTLP backend (`None`: never).
    pub metrics_export_interval: Option<std::time::Duration>,
    pub inject_traceparent: bool,
    /// Pods of this node opted in by label are traced (DaemonSet mode).
    pub k8s: Option<K8sConfig>,
    /// Hook families turned off by the operator (`--disable-feature`).
    pub disabled_features: Vec<Feature>,
    /// Draw the live status line on stderr (set by `main` when stderr is a
    /// terminal and `--no-status` is absent).
    pub status_line: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err(e: impl Into<String>) -> ConfigError {
    ConfigError(e.into())
}

fn console_format(name: &str) -> Result<ConsoleFormat, ConfigError> {
    match name {
        "waterfall" | "" => Ok(ConsoleFormat::Waterfall),
        "lines" => Ok(ConsoleFormat::Lines),
        other => Err(err(format!(
            "--console-format {other}: allowed values are waterfall, lines"
        ))),
    }
}

/// `k=v,...` with values percent-encoded where needed, for the header parser.
fn encode_headers(headers: &BTreeMap<String, String>) -> String {
    headers
        .iter()
        .map(|(k, v)| {
            let v: String = v
                .bytes()
                .map(|b| match b {
                    b',' | b'%' | b'=' | b' ' => format!("%{b:02X}"),
                    b => (b as char).to_string(),
                })
                .collect();
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl AgentConfig {
    /// Merges flags, the environment (looked up with `get_env`) and the
    /// config file.
    pub fn from_sources(
        args: &RunArgs,
        get_env: &dyn Fn(&str) -> Option<String>,
        file: Option<&FileConfig>,
    ) -> Result<Self, ConfigError> {
        let empty = FileConfig::default();
        let file = file.unwrap_or(&empty);

        let sel = file.selection.clone().unwrap_or_default();
        let (pids, exe_names, ports) =
            if args.pids.is_empty() && args.exe_names.is_empty() && args.ports.is_empty() {
                (
                    sel.pids.unwrap_or_default(),
                    sel.exe_names.unwrap_or_default(),
                    sel.ports.unwrap_or_default(),
                )
            } else {
                (
                    args.pids.clone(),
                    args.exe_names.clone(),
                    args.ports.clone(),
                )
            };
        let kube = file.kubernetes.clone().unwrap_or_default();
        let k8s = if args.k8s || kube.enabled == Some(true) {
            let mut c = K8sConfig {
                node_name: get_env("NODE_NAME")
                    .filter(|n| !n.trim().is_empty())
                    .ok_or_else(|| err(k8s::K8sError::NoNodeName.to_string()))?,
                label_key: args
                    .k8s_label_key
                    .clone()
                    .or(kube.label_key)
                    .unwrap_or_else(|| k8s::DEFAULT_LABEL_KEY.to_string()),
                label_selector: args
                    .k8s_label_selector
                    .clone()
                    .or(kube.label_selector)
                    .filter(|s| !s.trim().is_empty()),
                cgroup2_root: match &args.k8s_cgroup_root {
                    Some(root) => root.clone(),
                    None => k8s::find_cgroup2_mount()
                        .ok_or_else(|| err(k8s::K8sError::NoCgroup2.to_string()))?,
                },
                api: ApiSource::InCluster,
            };
            if let Some(url) = args.k8s_api_url.clone().or(kube.api_url) {
                c.api = ApiSource::Url(url);
            }
            Some(c)
        } else {
            None
        };
        // Flags replace the file's list, as for the selection.
        let disabled_features = if args.disabled_features.is_empty() {
            file.disable_features.clone().unwrap_or_default()
        } else {
            args.disabled_features.clone()
        };
        if k8s.is_some() && disabled_features.contains(&Feature::Cgroup2) {
            return Err(err(
                "--k8s: Kubernetes mode matches pods by cgroup2 id, which \
                 --disable-feature cgroup2 turns off; drop one of them",
            ));
        }
        // Kubernetes mode traces an allowlist the cgroups are added to, even
        // when no pid, name or port is given.
        let selection =
            if k8s.is_none() && pids.is_empty() && exe_names.is_empty() && ports.is_empty() {
                Selection::All
            } else {
                Selection::Allowlist {
                    pids,
                    exe_names,
                    ports,
                }
            };

        // The file's export settings answer for the OTEL_* variables the
        // environment leaves unset.
        let export = file.export.clone().unwrap_or_default();
        let file_headers = export.headers.as_ref().map(encode_headers);
        let lookup = |name: &str| -> Option<String> {
            get_env(name)
                .filter(|v| !v.trim().is_empty())
                .or_else(|| match name {
                    "OTEL_EXPORTER_OTLP_ENDPOINT" => export.endpoint.clone(),
                    "OTEL_EXPORTER_OTLP_PROTOCOL" => export.protocol.map(|p| match p {
                        file::Protocol::Grpc => "grpc".to_string(),
                        file::Protocol::HttpProtobuf => "http/protobuf".to_string(),
                    }),
                    "OTEL_EXPORTER_OTLP_HEADERS" => file_headers.clone(),
                    "OTEL_EXPORTER_OTLP_CERTIFICATE" => export.certificate.clone(),
                    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE" => export.client_certificate.clone(),
                    "OTEL_EXPORTER_OTLP_CLIENT_KEY" => export.client_key.clone(),
                    _ => None,
                })
        };
        let protocol = args
            .otlp_protocol
            .as_deref()
            .map(Protocol::parse)
            .transpose()
            .map_err(|e| err(format!("--otlp-protocol: {e}")))?;
        let format = console_format(&args.console_format)?;
        let output = match env::otlp_settings(&lookup, args.otlp_endpoint.as_deref(), protocol)
            .map_err(err)?
        {
            Some(settings) => {
                crate::export::tls::check(&settings.tls, &[&settings.url, &settings.metrics_url])
                    .map_err(err)?;
                Output::Otlp(settings)
            }
            None => Output::Console(format),
        };
        let console_too =
            (args.console || export.console == Some(true)) && matches!(output, Output::Otlp(_));

        let sampler = match get_env("OTEL_TRACES_SAMPLER").filter(|v| !v.trim().is_empty()) {
            Some(_) => HeadSampler::from_env(get_env).map_err(err)?,
            None => match file.head_sampler() {
                Some(s) => s.map_err(|e| err(format!("sampling.head: {e}")))?,
                None => HeadSampler::default(),
            },
        };

        if !(args.gap_threshold_ms.is_finite() && args.gap_threshold_ms >= 0.0) {
            return Err(err(format!(
                "--gap-threshold-ms {}: must be a number of milliseconds >= 0",
                args.gap_threshold_ms
            )));
        }
        let gap_threshold_ns = (!args.no_gaps).then_some((args.gap_threshold_ms * 1e6) as u64);
        let tracing = file.tracing.clone().unwrap_or_default();
        let tuple_linking = !args.no_tuple_linking && tracing.tuple_linking.unwrap_or(true);

        let mib = args
            .ring_buffer_mib
            .or(file.ring_buffer_mib)
            .unwrap_or(file::DEFAULT_RING_BUFFER_MIB);
        if !mib.is_power_of_two() || mib > 1024 {
            return Err(err(format!(
                "--ring-buffer-mib {mib}: must be a power of two between 1 and 1024"
            )));
        }

        let mut routes = file.route_config();
        for pattern in &args.routes {
            validate_pattern(pattern).map_err(|e| err(format!("--route {pattern}: {e}")))?;
        }
        routes.patterns.splice(0..0, args.routes.iter().cloned());

        let tail = if args.tail_sampling {
            Some(file.tail_config().unwrap_or_default())
        } else {
            file.tail_config()
        };

        let metrics_listen = match args.metrics_listen.as_deref() {
            Some("none") => None,
            Some(addr) => Some(addr.parse().map_err(|_| {
                err(format!(
                    "--metrics-listen {addr}: expected IP:PORT or `none`"
                ))
            })?),
            None => match file.metrics.as_ref().and_then(|m| m.listen.clone()) {
                Some(Some(addr)) => Some(addr.parse().map_err(|_| {
                    err(format!(
                        "metrics.listen: bad address {addr}; expected IP:PORT or null"
                    ))
                })?),
                Some(None) => None,
                None => Some(DEFAULT_METRICS_LISTEN.parse().expect("valid default")),
            },
        };

        let queue_mib = args
            .export_queue_mib
            .or(export.queue_mib)
            .unwrap_or(env::DEFAULT_QUEUE_MIB);
        if !(1..=file::MAX_QUEUE_MIB).contains(&queue_mib) {
            return Err(err(format!(
                "--export-queue-mib {queue_mib}: must be between 1 and {}",
                file::MAX_QUEUE_MIB
            )));
        }
        let mut batch = env::batch_settings(get_env).map_err(err)?;
        batch.max_queue_bytes = queue_mib as usize * 1024 * 1024;

        Ok(Self {
            selection,
            console_too,
            console_format: format,
            output,
            batch,
            stitch: StitchConfig {
                tuple_linking,
                gap_threshold_ns,
                sampler,
                ..StitchConfig::default()
            },
            ring_buffer_bytes: mib * 1024 * 1024,
            redact: file.redact_config(),
            routes,
            tail,
            metrics_listen,
            metrics_export_interval: crate::export::otlp_metrics::interval(get_env).map_err(err)?,
            inject_traceparent: args.inject_traceparent || tracing.inject_traceparent == Some(true),
            k8s,
            disabled_features,
            status_line: false,
        })
    }

    /// The effective configuration in the config file's shape, for
    /// `--print-config`.
    pub fn to_file_config(&self) -> FileConfig {
        let (pids, exe_names, ports) = match &self.selection {
            Selection::All => (vec![], vec![], vec![]),
            Selection::Allowlist {
                pids,
                exe_names,
                ports,
            } => (pids.clone(), exe_names.clone(), ports.clone()),
        };
        let export = match &self.output {
            Output::Otlp(s) => file::Export {
                endpoint: Some(s.url.clone()),
                protocol: Some(match s.protocol {
                    Protocol::Grpc => file::Protocol::Grpc,
                    Protocol::HttpProtobuf => file::Protocol::HttpProtobuf,
                }),
                headers: Some(s.headers.iter().cloned().collect()),
                console: Some(self.console_too),
                certificate: s.tls.ca.as_ref().map(|f| f.path.clone()),
                client_certificate: s.tls.client_certificate.as_ref().map(|f| f.path.clone()),
                client_key: s.tls.client_key.as_ref().map(|f| f.path.clone()),
                queue_mib: Some((self.batch.max_queue_bytes / (1024 * 1024)) as u32),
            },
            Output::Console(_) => file::Export {
                console: Some(true),
                ..Default::default()
            },
        };
        let tail = self.tail.clone();
        FileConfig {
            selection: Some(file::Selection {
                pids: Some(pids),
                exe_names: Some(exe_names),
                ports: Some(ports),
            }),
            export: Some(export),
            sampling: Some(file::Sampling {
                head: Some(self.stitch.sampler.file_form()),
                tail: Some(file::TailSampling {
                    enabled: Some(tail.is_some()),
                    decision_wait_ms: tail.as_ref().map(|t| t.decision_wait.as_millis() as u64),
                    latency_threshold_ms: tail
                        .as_ref()
                        .map(|t| t.latency_threshold.as_millis() as u64),
                    keep_ratio: tail.as_ref().map(|t| t.keep_ratio),
                    max_traces_per_second: tail.as_ref().map(|t| t.max_traces_per_second),
                    max_buffered_spans: tail.as_ref().map(|t| t.max_buffered_spans),
                }),
            }),
            redaction: Some(file::Redaction {
                header_allowlist: Some(self.redact.header_allowlist.clone()),
                keep_query_values: Some(self.redact.keep_query_values),
                path_patterns: Some(self.redact.path_patterns.clone()),
            }),
            routes: Some(file::Routes {
                patterns: Some(self.routes.patterns.clone()),
                max_routes_per_service: Some(self.routes.max_routes_per_service),
            }),
            metrics: Some(file::Metrics {
                listen: Some(self.metrics_listen.map(|a| a.to_string())),
            }),
            tracing: Some(file::Tracing {
                tuple_linking: Some(self.stitch.tuple_linking),
                inject_traceparent: Some(self.inject_traceparent),
            }),
            ring_buffer_mib: Some(self.ring_buffer_bytes / (1024 * 1024)),
            disable_features: Some(self.disabled_features.clone()),
            kubernetes: Some(file::Kubernetes {
                enabled: Some(self.k8s.is_some()),
                label_key: self.k8s.as_ref().map(|k| k.label_key.clone()),
                label_selector: self.k8s.as_ref().and_then(|k| k.label_selector.clone()),
                api_url: self.k8s.as_ref().and_then(|k| match &k.api {
                    ApiSource::Url(u) => Some(u.clone()),
                    _ => None,
                }),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> RunArgs {
        RunArgs {
            gap_threshold_ms: 1.0,
            console_format: "waterfall".into(),
            ..Default::default()
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_trace_everything_to_the_console() {
        let c = AgentConfig::from_sources(&args(), &no_env, None).unwrap();
        assert_eq!(c.selection, Selection::All);
        assert!(matches!(
            c.output,
            Output::Console(ConsoleFormat::Waterfall)
        ));
        assert_eq!(c.ring_buffer_bytes, 8 << 20);
        assert!(c.stitch.tuple_linking);
        assert_eq!(c.stitch.gap_threshold_ns, Some(1_000_000));
        assert_eq!(c.stitch.sampler, HeadSampler::default());
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        assert!(c.tail.is_none() && !c.inject_traceparent);
        assert!(!c.redact.keep_query_values);
    }

    #[test]
    fn disabled_features_from_the_file_or_the_flag() {
        let file = file::parse("disable_features: [sk_msg, uprobes]\n").unwrap();
        let c = AgentConfig::from_sources(&args(), &no_env, Some(&file)).unwrap();
        assert_eq!(c.disabled_features, [Feature::SkMsg, Feature::Uprobes]);
        let printed = file::parse(&c.to_file_config().print_masked()).unwrap();
        assert_eq!(
            printed.disable_features,
            Some(vec![Feature::SkMsg, Feature::Uprobes])
        );
        let mut a = args();
        a.disabled_features = vec![Feature::Cgroup2];
        let c = AgentConfig::from_sources(&a, &no_env, Some(&file)).unwrap();
        assert_eq!(c.disabled_features, [Feature::Cgroup2], "the flag replaces");
        let e = file::parse("disable_features: [kprobes]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("disable_features") && e.contains("sk_msg") && e.contains("kprobes"),
            "{e}"
        );
    }

    #[test]
    fn flags_beat_environment_beat_file() {
        let file = file::parse(
            "selection: {ports: [80]}\nexport: {endpoint: 'http://file:4318', headers: {api-key: 'a,b=c'}}\n\
             sampling: {head: {sampler: traceidratio, arg: 0.5}, tail: {enabled: true, keep_ratio: 0.1}}\n\
             routes: {patterns: ['/f/{id}']}\nmetrics: {listen: null}\ntracing: {tuple_linking: false}\nring_buffer_mib: 8\n",
        )
        .unwrap();
        let mut with_queue = file.clone();
        with_queue.export.as_mut().unwrap().queue_mib = Some(4);
        let c = AgentConfig::from_sources(&args(), &no_env, Some(&with_queue)).unwrap();
        assert_eq!(c.batch.max_queue_bytes, 4 << 20);
        let mut a = args();
        a.export_queue_mib = Some(2);
        let c = AgentConfig::from_sources(&a, &no_env, Some(&with_queue)).unwrap();
        assert_eq!(c.batch.max_queue_bytes, 2 << 20);
        a.export_queue_mib = Some(0);
        assert!(AgentConfig::from_sources(&a, &no_env, None).is_err());
        let c = AgentConfig::from_sources(&args(), &no_env, Some(&file)).unwrap();
        assert_eq!(c.batch.max_queue_bytes, 64 << 20);
        assert!(matches!(c.selection, Selection::Allowlist { ref ports, .. } if ports == &[80]));
        let Output::Otlp(ref s) = c.output else {
            panic!("otlp expected")
        };
        assert_eq!(s.url, "http://file:4318/v1/traces");
        assert_eq!(
            s.headers,
            vec![("api-key".to_string(), "a,b=c".to_string())]
        );
        assert_eq!(c.stitch.sampler.description(), "TraceIdRatioBased{0.5}");
        assert_eq!(c.tail.as_ref().map(|t| t.keep_ratio), Some(0.1));
        assert_eq!(c.metrics_listen, None);
        assert!(!c.stitch.tuple_linking);
        assert_eq!(c.ring_buffer_bytes, 8 << 20);

        let env = |k: &str| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://env:4317".to_string()),
            "OTEL_TRACES_SAMPLER" => Some("always_off".to_string()),
            _ => None,
        };
        let mut a = args();
        a.ports = vec![9000];
        a.routes = vec!["/flag/{id}".into()];
        a.ring_buffer_mib = Some(32);
        a.metrics_listen = Some("127.0.0.1:0".into());
        let c = AgentConfig::from_sources(&a, &env, Some(&file)).unwrap();
        assert!(matches!(c.selection, Selection::Allowlist { ref ports, .. } if ports == &[9000]));
        let Output::Otlp(ref s) = c.output else {
            panic!("otlp expected")
        };
        assert_eq!(
            (s.url.as_str(), s.protocol),
            ("http://env:4317", Protocol::Grpc)
        );
        assert_eq!(c.stitch.sampler, HeadSampler::AlwaysOff);
        assert_eq!(c.routes.patterns, vec!["/flag/{id}", "/f/{id}"]);
        assert_eq!(c.ring_buffer_bytes, 32 << 20);
        assert_eq!(c.metrics_listen, Some("127.0.0.1:0".parse().unwrap()));
    }

    #[test]
    fn kubernetes_mode_needs_a_node_name() {
        let mut a = args();
        a.k8s = true;
        a.k8s_cgroup_root = Some("/sys/fs/cgroup".into());
        let e = AgentConfig::from_sources(&a, &no_env, None).unwrap_err();
        assert!(e.0.contains("NODE_NAME"), "{e}");
        let env = |k: &str| (k == "NODE_NAME").then(|| "node-a".to_string());
        a.k8s_label_selector = Some("tier=web".into());
        a.k8s_api_url = Some("http://127.0.0.1:8001".into());
        let c = AgentConfig::from_sources(&a, &env, None).unwrap();
        let k = c.k8s.expect("k8s mode");
        assert_eq!(
            (k.node_name.as_str(), k.label_key.as_str()),
            ("node-a", "seam.dev/trace")
        );
        assert_eq!(k.label_selector.as_deref(), Some("tier=web"));
        assert_eq!(k.api, ApiSource::Url("http://127.0.0.1:8001".into()));
        assert!(
            matches!(c.selection, Selection::Allowlist { .. }),
            "nothing traced until pods opt in"
        );
    }

    #[test]
    fn bad_values_are_named() {
        let mut a = args();
        a.ring_buffer_mib = Some(3);
        assert!(
            AgentConfig::from_sources(&a, &no_env, None)
                .unwrap_err()
                .0
                .contains("--ring-buffer-mib 3")
        );
        let env = |k: &str| (k == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "nope".to_string());
        assert!(
            AgentConfig::from_sources(&args(), &env, None)
                .unwrap_err()
                .0
                .contains("nope")
        );
        let env = |k: &str| (k == "OTEL_TRACES_SAMPLER").then(|| "sometimes".to_string());
        assert!(
            AgentConfig::from_sources(&args(), &env, None)
                .unwrap_err()
                .0
                .contains("OTEL_TRACES_SAMPLER")
        );
        let mut a = args();
        a.routes = vec!["no-slash".into()];
        assert!(
            AgentConfig::from_sources(&a, &no_env, None)
                .unwrap_err()
                .0
                .contains("--route no-slash")
        );
        let mut a = args();
        a.metrics_listen = Some("9464".into());
        assert!(
            AgentConfig::from_sources(&a, &no_env, None)
                .unwrap_err()
                .0
                .contains("--metrics-listen")
        );
    }

    #[test]
    fn printed_config_masks_secrets_and_reparses() {
        let env = |k: &str| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4318".to_string()),
            "OTEL_EXPORTER_OTLP_HEADERS" => Some("x-api-key=topsecret".to_string()),
            _ => None,
        };
        let c = AgentConfig::from_sources(&args(), &env, None).unwrap();
        let text = c.to_file_config().print_masked();
        assert!(!text.contains("topsecret"), "{text}");
        assert!(text.contains("x-api-key"), "{text}");
        assert!(file::parse(&text).is_ok(), "{text}");
    }
}
