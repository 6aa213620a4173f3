//! Arize Phoenix as a real tracing backend: `phoenix serve` on free loopback
//! ports with its own working directory, read back through its REST API.
//! Installed by `cargo xtask setup` into its own virtualenv.
use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    agent::http_get,
    procs::{Proc, free_port, scratch_dir},
};

/// The `phoenix` command: `SEAM_PHOENIX_BIN` (set by `cargo xtask test`),
/// else where `cargo xtask setup` puts it.
pub fn phoenix_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SEAM_PHOENIX_BIN") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/seam/phoenix-venv/bin/phoenix")
}

pub struct Phoenix {
    pub proc: Proc,
    /// UI, REST API and OTLP over HTTP (`/v1/traces`).
    pub http_port: u16,
    /// OTLP over gRPC.
    pub grpc_port: u16,
}

/// One span as Phoenix's REST API returns it.
#[derive(Clone, Debug)]
pub struct StoredSpan {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root.
    pub parent_id: String,
    pub attributes: serde_json::Map<String, Value>,
}

impl StoredSpan {
    pub fn str(&self, key: &str) -> Option<&str> {
        self.attributes.get(key)?.as_str()
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        self.attributes.get(key)?.as_i64()
    }
}

impl Phoenix {
    /// Starts Phoenix with a fresh working directory (an empty SQLite
    /// database) and waits until it answers.
    pub fn start() -> Phoenix {
        let bin = phoenix_bin();
        assert!(
            bin.exists(),
            "no Phoenix at {}; run `cargo xtask setup`",
            bin.display()
        );
        let http_port = free_port();
        let grpc_port = loop {
            let p = free_port();
            if p != http_port {
                break p;
            }
        };
        let dir = scratch_dir().join(format!("phoenix-{http_port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new(&bin);
        cmd.arg("serve")
            .env("PHOENIX_WORKING_DIR", &dir)
            .env("PHOENIX_HOST", "127.0.0.1")
            .env("PHOENIX_PORT", http_port.to_string())
            .env("PHOENIX_GRPC_PORT", grpc_port.to_string())
            .env("PHOENIX_TELEMETRY_ENABLED", "false");
        for (k, _) in std::env::vars() {
            if k.starts_with("OTEL_") {
                cmd.env_remove(k);
            }
        }
        let mut proc = Proc::spawn("phoenix", cmd);
        // Its start-up (imports, database migrations) takes tens of seconds
        // on a busy two-core machine.
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if http_get(http_port, "/healthz").is_some_and(|(s, _)| s == 200)
                && crate::procs::wait_port(grpc_port, Duration::from_millis(10))
            {
                return Phoenix {
                    proc,
                    http_port,
                    grpc_port,
                };
            }
            if !proc.running() || Instant::now() >= deadline {
                let status = proc.stop();
                panic!("Phoenix did not start ({status}):\n{}", proc.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// The base URL for OTLP/HTTP (seam adds `/v1/traces`).
    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// GET `path` on the REST API, as JSON.
    pub fn get(&self, path: &str) -> Value {
        let (status, body) = http_get(self.http_port, path)
            .unwrap_or_else(|| panic!("GET {path}: no answer from Phoenix"));
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// Names of the projects Phoenix has.
    pub fn projects(&self) -> Vec<String> {
        self.get("/v1/projects?limit=1000")["data"]
            .as_array()
            .expect("projects")
            .iter()
            .filter_map(|p| p["name"].as_str().map(str::to_string))
            .collect()
    }

    /// Every span of `project` (all pages); none if there is no such project.
    pub fn spans(&self, project: &str) -> Vec<StoredSpan> {
        if !self.projects().iter().any(|p| p == project) {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/projects/{project}/spans?limit=1000");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = self.get(&path);
            for s in page["data"].as_array().expect("span list") {
                out.push(StoredSpan {
                    name: s["name"].as_str().unwrap_or_default().to_string(),
                    trace_id: s["context"]["trace_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    span_id: s["context"]["span_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    parent_id: s["parent_id"].as_str().unwrap_or_default().to_string(),
                    attributes: s["attributes"].as_object().cloned().unwrap_or_default(),
                });
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
    }

    /// Waits until `project` holds at least `n` spans and the count has
    /// stopped changing (Phoenix inserts in batches), then returns them.
    pub fn settle(&self, project: &str, n: usize, timeout: Duration) -> Vec<StoredSpan> {
        let deadline = Instant::now() + timeout;
        let mut last = usize::MAX;
        loop {
            let spans = self.spans(project);
            if spans.len() >= n && spans.len() == last {
                return spans;
            }
            if Instant::now() >= deadline {
                return spans;
            }
            last = spans.len();
            std::thread::sleep(Duration::from_millis(1000));
        }
    }

    /// The UI page of a trace (Phoenix redirects it to the trace's project).
    pub fn trace_url(&self, trace_id: &str) -> String {
        format!(
            "http://127.0.0.1:{}/redirects/traces/{trace_id}",
            self.http_port
        )
    }
}
