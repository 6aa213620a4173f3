//! Command line of the `seam` binary.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::preflight::Feature;

/// `seam --version`: the package version and, when built from a git
/// checkout, its commit.
pub const VERSION: &str = env!("SEAM_VERSION");

/// seam: traces the HTTP traffic of this Linux host with eBPF and exports
/// OpenTelemetry spans, without changing or restarting the traced programs.
///
/// With no OTLP endpoint configured (flag, OTEL_EXPORTER_OTLP_ENDPOINT or the
/// config file), finished traces are printed to the console. Needs root (or
/// CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH) and Linux >= 6.3
/// with BTF. Settings come from flags, then environment variables, then the
/// config file, then defaults.
#[derive(Debug, Parser)]
#[command(name = "seam", version = VERSION, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once at start-up; boxing would only complicate access"
)]
pub enum Command {
    /// Trace (the default when no command is given).
    Run(RunArgs),
    /// Check what this machine offers seam (kernel, BTF, tracefs, probe
    /// types, capabilities...) and print what works, what is missing, what
    /// is lost without it and how to fix it. Exits 1 if seam cannot run.
    Check(CheckArgs),
}

#[derive(Clone, Debug, Default, Args)]
pub struct CheckArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,

    /// Report these features as turned off, as the agent would with the
    /// same flag.
    #[arg(
        long = "disable-feature",
        value_name = "FEATURE",
        value_delimiter = ','
    )]
    pub disabled_features: Vec<Feature>,
}

#[derive(Clone, Debug, Default, Args)]
pub struct RunArgs {
    /// YAML configuration file (see the README for its keys).
    #[arg(
        long,
        value_name = "FILE",
        env = "SEAM_CONFIG",
        help_heading = "Configuration"
    )]
    pub config: Option<PathBuf>,

    /// Print the effective configuration (secrets masked) and exit.
    #[arg(long, help_heading = "Configuration")]
    pub print_config: bool,

    /// Trace only these processes and the children they fork (repeatable,
    /// or comma-separated). Default: every process except seam itself.
    #[arg(
        long = "pid",
        value_name = "PID",
        value_delimiter = ',',
        help_heading = "Selection"
    )]
    pub pids: Vec<u32>,

    /// Trace processes with this name: their comm, executable file name, or
    /// the file name of their interpreter's script (`gunicorn`, `app.py`).
    /// Processes started later are picked up when they exec.
    #[arg(
        long = "exe-name",
        value_name = "NAME",
        value_delimiter = ',',
        help_heading = "Selection"
    )]
    pub exe_names: Vec<String>,

    /// Trace processes that listen on this TCP port (now, or when they call
    /// listen() later).
    #[arg(
        long = "port",
        value_name = "PORT",
        value_delimiter = ',',
        help_heading = "Selection"
    )]
    pub ports: Vec<u16>,

    /// Trace the pods of this node that opt in by label (`seam.dev/trace:
    /// enabled` on the pod or its namespace). Needs NODE_NAME.
    #[arg(long, help_heading = "Kubernetes")]
    pub k8s: bool,

    /// The opt-in label key.
    #[arg(long, value_name = "KEY", help_heading = "Kubernetes")]
    pub k8s_label_key: Option<String>,

    /// An extra label selector (`tier in (web,api),!canary`) the opted-in pods
    /// must match too.
    #[arg(long, value_name = "SELECTOR", help_heading = "Kubernetes")]
    pub k8s_label_selector: Option<String>,

    /// API server URL without credentials (e.g. `kubectl proxy`'s); default:
    /// the pod's service account.
    #[arg(long, value_name = "URL", help_heading = "Kubernetes")]
    pub k8s_api_url: Option<String>,

    /// Directory containers' cgroups live under; default: the cgroup2 mount.
    #[arg(long, value_name = "DIR", help_heading = "Kubernetes")]
    pub k8s_cgroup_root: Option<PathBuf>,

    /// OTLP endpoint, e.g. http://localhost:4317 (grpc) or
    /// http://localhost:4318 (http/protobuf). Overrides
    /// OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT.
    #[arg(long, value_name = "URL", help_heading = "Export")]
    pub otlp_endpoint: Option<String>,

    /// OTLP protocol. Overrides OTEL_EXPORTER_OTLP_PROTOCOL. When nothing
    /// sets it: grpc for port 4317, else http/protobuf.
    #[arg(long, value_name = "PROTOCOL", value_parser = ["grpc", "http/protobuf"], help_heading = "Export")]
    pub otlp_protocol: Option<String>,

    /// Memory bound, in MiB, of the spans waiting for the OTLP backend
    /// (queued, in flight or awaiting a retry); spans beyond it, or beyond
    /// OTEL_BSP_MAX_QUEUE_SIZE spans, are dropped and counted. Default 64.
    #[arg(long, value_name = "MIB", help_heading = "Export")]
    pub export_queue_mib: Option<u32>,

    /// Also print spans to the console while exporting OTLP.
    #[arg(long, help_heading = "Export")]
    pub console: bool,

    /// Console output: `waterfall` (each finished trace as a tree with time
    /// bars and its gaps) or `lines` (one line per span as it finishes).
    #[arg(long, value_name = "FORMAT", default_value = "waterfall", value_parser = ["waterfall", "lines"], help_heading = "Export")]
    pub console_format: String,

    /// Keep traces after they finish (all errors, all slow ones, a share of
    /// the rest), with the settings of `sampling.tail` in the config file.
    #[arg(long, help_heading = "Sampling")]
    pub tail_sampling: bool,

    /// A route template (`/users/{id}/orders`, `/static/*`) for
    /// `http.route` and span names (repeatable); unmatched paths get
    /// inferred routes.
    #[arg(long = "route", value_name = "TEMPLATE", help_heading = "Routes")]
    pub routes: Vec<String>,

    /// Where to serve /metrics (Prometheus), /healthz, /readyz and /status;
    /// `none` to serve nothing. Default 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR", help_heading = "Metrics")]
    pub metrics_listen: Option<String>,

    /// Do not link same-host client and server spans by their connection's
    /// addresses (only headers and threads link spans then).
    #[arg(long, help_heading = "Tracing")]
    pub no_tuple_linking: bool,

    /// Add a W3C `traceparent` header to outgoing plaintext HTTP/1 requests
    /// of traced processes that carry none, so traces continue on other
    /// hosts. Changes the traffic; off by default.
    #[arg(long, help_heading = "Tracing")]
    pub inject_traceparent: bool,

    /// Shortest file I/O or off-CPU wait of a serving thread that explains a
    /// server span's gaps; file I/O this long also becomes its own span.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 1.0,
        help_heading = "Tracing"
    )]
    pub gap_threshold_ms: f64,

    /// Do not watch file I/O and off-CPU time of serving threads (no
    /// `seam.gap.*` attributes, no file I/O spans; the sched_switch, openat
    /// and file-sync probes are not attached).
    #[arg(long, help_heading = "Tracing")]
    pub no_gaps: bool,

    /// Size of the kernel ring buffer, in MiB (a power of two). Default 8.
    #[arg(long, value_name = "MIB", help_heading = "Tuning")]
    pub ring_buffer_mib: Option<u32>,

    /// For operators who want a hook family off (repeatable, or
    /// comma-separated): the agent then behaves exactly as on a kernel
    /// without it. `seam check` shows what this machine has.
    #[arg(
        long = "disable-feature",
        value_name = "FEATURE",
        value_delimiter = ',',
        help_heading = "Operations"
    )]
    pub disabled_features: Vec<Feature>,

    /// Do not show the live status line (shown only when stderr is a
    /// terminal; the same figures are at /status).
    #[arg(long, help_heading = "Operations")]
    pub no_status: bool,

    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `seam=debug`.
    #[arg(
        long,
        value_name = "FILTER",
        env = "SEAM_LOG",
        default_value = "info",
        help_heading = "Logging"
    )]
    pub log: String,
}

impl Cli {
    /// The run arguments, whether given before or after `run`.
    pub fn run_args(&self) -> &RunArgs {
        match &self.command {
            Some(Command::Run(args)) => args,
            _ => &self.run,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn selection_flags_accept_lists() {
        let cli = Cli::parse_from([
            "seam",
            "--pid",
            "1,2",
            "--pid",
            "3",
            "--exe-name",
            "gunicorn",
            "--port",
            "8000,8001",
        ]);
        let run = cli.run_args();
        assert_eq!(run.pids, vec![1, 2, 3]);
        assert_eq!(run.exe_names, vec!["gunicorn"]);
        assert_eq!(run.ports, vec![8000, 8001]);
        assert_eq!(run.ring_buffer_mib, None);
        let cli = Cli::parse_from([
            "seam", "run", "--port", "80", "--route", "/a/{id}", "--route", "/b/*",
        ]);
        assert_eq!(cli.run_args().ports, vec![80]);
        assert_eq!(cli.run_args().routes, vec!["/a/{id}", "/b/*"]);
        assert!(Cli::try_parse_from(["seam", "--otlp-protocol", "http/json"]).is_err());
        let cli = Cli::parse_from([
            "seam",
            "--disable-feature",
            "sk_msg,uprobes",
            "--disable-feature",
            "cgroup2",
        ]);
        assert_eq!(
            cli.run_args().disabled_features,
            vec![Feature::SkMsg, Feature::Uprobes, Feature::Cgroup2]
        );
        assert!(Cli::try_parse_from(["seam", "--disable-feature", "kprobes"]).is_err());
        let cli = Cli::parse_from(["seam", "check", "--json"]);
        assert!(matches!(
            cli.command,
            Some(Command::Check(CheckArgs { json: true, .. }))
        ));
    }
}
