//! The seam agent as a child process of the test.
use std::{
    path::PathBuf,
    process::{Command, ExitStatus},
    time::{Duration, Instant},
};

use crate::procs::Proc;

/// The agent binary: `SEAM_BIN` (set by `cargo xtask test`), else the debug
/// build in this workspace.
pub fn seam_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SEAM_BIN") {
        return PathBuf::from(p);
    }
    let p = crate::root().join("target/debug/seam");
    assert!(
        p.exists(),
        "no agent binary at {}; run the tests with `cargo xtask test`, which builds it",
        p.display()
    );
    p
}

pub struct Agent {
    pub proc: Proc,
    /// Where its /metrics, /healthz, /readyz and /status are served.
    pub metrics_port: u16,
}

impl Agent {
    /// Starts seam with `args` and extra environment, and waits until its
    /// probes are attached. Inherited OTEL_* variables are cleared.
    pub fn start(args: &[String], env: &[(&str, &str)]) -> Agent {
        let mut cmd = Command::new(seam_bin());
        cmd.args(args);
        let metrics_port = match args.iter().position(|a| a == "--metrics-listen") {
            Some(i) => args[i + 1]
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0),
            None => {
                let port = crate::procs::free_port();
                cmd.args(["--metrics-listen", &format!("127.0.0.1:{port}")]);
                port
            }
        };
        for (k, _) in std::env::vars() {
            if k.starts_with("OTEL_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("SEAM_LOG", "info")
            .env("OTEL_BSP_SCHEDULE_DELAY", "200");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut proc = Proc::spawn("seam", cmd);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // Ready once every probe is attached (TLS libraries included):
            // /readyz says so, or the start-up line when nothing is served.
            let ready = if metrics_port != 0 {
                http_get(metrics_port, "/readyz").is_some_and(|(status, _)| status == 200)
            } else {
                proc.log()
                    .lines()
                    .any(|l| l.contains(concat!("seam ", env!("CARGO_PKG_VERSION"), " tracing")))
            };
            if ready {
                return Agent { proc, metrics_port };
            }
            if !proc.running() || Instant::now() >= deadline {
                let status = proc.stop();
                panic!("seam did not start ({status}):\n{}", proc.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `--otlp-endpoint` and `--otlp-protocol` for a receiver.
    pub fn otlp_args(receiver: &crate::otlp::Receiver) -> Vec<String> {
        vec![
            "--otlp-endpoint".into(),
            receiver.endpoint(),
            "--otlp-protocol".into(),
            receiver.protocol().into(),
        ]
    }

    /// GET `path` on the agent's metrics endpoint: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.metrics_port, path).unwrap_or((0, String::new()))
    }

    /// Sum of every sample of metric `name` on /metrics (all label sets);
    /// `None` when the metric is absent or the endpoint did not answer.
    pub fn metric(&self, name: &str) -> Option<u64> {
        let (status, text) = self.get("/metrics");
        if status != 200 {
            return None;
        }
        parse_metric(&text, name)
    }

    /// Resident set size of the agent, from /proc.
    pub fn rss_kib(&self) -> u64 {
        crate::procs::rss_kib(self.proc.pid()).unwrap_or(0)
    }

    pub fn running(&mut self) -> bool {
        self.proc.running()
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// SIGTERM and wait: the agent must exit cleanly on its own.
    pub fn stop(&mut self) -> ExitStatus {
        self.proc.stop_with(libc::SIGTERM, Duration::from_secs(20))
    }
}

/// A plain HTTP/1.0 GET from this process (no curl, which the agent may be
/// tracing by name): (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Sum of the samples of `name` (with or without labels) in a Prometheus
/// text exposition.
pub fn parse_metric(text: &str, name: &str) -> Option<u64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value = rest.rsplit(' ').next()?.parse::<f64>().ok()?;
        *found.get_or_insert(0) += value as u64;
    }
    found
}
