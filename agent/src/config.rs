//! The agent's effective configuration: flags first, then the standard
//! OpenTelemetry environment variables, then defaults.
use crate::{
    capture::Selection,
    cli::RunArgs,
    export::{
        ConsoleFormat, Output,
        env::{self, BatchSettings, Protocol},
    },
    stitch::StitchConfig,
};

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
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl AgentConfig {
    /// Builds the configuration from flags and an environment lookup.
    pub fn from_args(
        args: &RunArgs,
        get_env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let selection =
            if args.pids.is_empty() && args.exe_names.is_empty() && args.ports.is_empty() {
                Selection::All
            } else {
                Selection::Allowlist {
                    pids: args.pids.clone(),
                    exe_names: args.exe_names.clone(),
                    ports: args.ports.clone(),
                }
            };
        let protocol = args
            .otlp_protocol
            .as_deref()
            .map(Protocol::parse)
            .transpose()
            .map_err(|e| ConfigError(format!("--otlp-protocol: {e}")))?;
        let output = match env::otlp_settings(get_env, args.otlp_endpoint.as_deref(), protocol)
            .map_err(ConfigError)?
        {
            Some(settings) => Output::Otlp(settings),
            None => Output::Console(console_format(&args.console_format)?),
        };
        if !(args.gap_threshold_ms.is_finite() && args.gap_threshold_ms >= 0.0) {
            return Err(ConfigError(format!(
                "--gap-threshold-ms {}: must be a number of milliseconds >= 0",
                args.gap_threshold_ms
            )));
        }
        let gap_threshold_ns = (!args.no_gaps).then_some((args.gap_threshold_ms * 1e6) as u64);
        let mib = args.ring_buffer_mib;
        if !mib.is_power_of_two() || mib > 1024 {
            return Err(ConfigError(format!(
                "--ring-buffer-mib {mib}: must be a power of two between 1 and 1024"
            )));
        }
        Ok(Self {
            selection,
            console_too: args.console && matches!(output, Output::Otlp(_)),
            console_format: console_format(&args.console_format)?,
            output,
            batch: env::batch_settings(get_env).map_err(ConfigError)?,
            stitch: StitchConfig {
                tuple_linking: !args.no_tuple_linking,
                gap_threshold_ns,
                ..StitchConfig::default()
            },
            ring_buffer_bytes: mib * 1024 * 1024,
        })
    }
}

fn console_format(name: &str) -> Result<ConsoleFormat, ConfigError> {
    match name {
        "waterfall" | "" => Ok(ConsoleFormat::Waterfall),
        "lines" => Ok(ConsoleFormat::Lines),
        other => Err(ConfigError(format!(
            "--console-format {other}: allowed values are waterfall, lines"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_trace_everything_to_the_console() {
        let c = AgentConfig::from_args(
            &RunArgs {
                ring_buffer_mib: 16,
                ..Default::default()
            },
            &|_| None,
        )
        .unwrap();
        assert_eq!(c.selection, Selection::All);
        assert!(matches!(
            c.output,
            Output::Console(ConsoleFormat::Waterfall)
        ));
        assert_eq!(c.ring_buffer_bytes, 16 << 20);
        assert!(c.stitch.tuple_linking);
    }

    #[test]
    fn selection_and_endpoint_from_flags() {
        let args = RunArgs {
            pids: vec![7],
            otlp_endpoint: Some("http://127.0.0.1:4317".into()),
            console: true,
            ring_buffer_mib: 4,
            no_tuple_linking: true,
            ..Default::default()
        };
        let c = AgentConfig::from_args(&args, &|_| None).unwrap();
        assert!(matches!(c.selection, Selection::Allowlist { ref pids, .. } if pids == &[7]));
        assert!(matches!(c.output, Output::Otlp(ref s) if s.protocol == Protocol::Grpc));
        assert!(c.console_too);
        assert!(!c.stitch.tuple_linking);
    }

    #[test]
    fn bad_values_are_named() {
        let args = RunArgs {
            ring_buffer_mib: 3,
            ..Default::default()
        };
        let e = AgentConfig::from_args(&args, &|_| None).unwrap_err();
        assert!(e.0.contains("--ring-buffer-mib 3"), "{e}");
        let args = RunArgs {
            ring_buffer_mib: 16,
            ..Default::default()
        };
        let e = AgentConfig::from_args(&args, &|k| {
            (k == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "nope".into())
        })
        .unwrap_err();
        assert!(e.0.contains("nope"), "{e}");
    }
}
