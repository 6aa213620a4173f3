//! OTLP over TLS (`https://` endpoints) to a receiver that serves only TLS,
//! with a certificate from a throwaway CA: trusted through
//! OTEL_EXPORTER_OTLP_CERTIFICATE (gRPC) or the system store (gRPC,
//! SSL_CERT_FILE standing in for /etc/ssl), with mutual TLS from the config
//! file's keys (HTTP/protobuf); an untrusted collector refused, counted and
//! said, its spans kept for later; a bad certificate file stops start-up in
//! one line. Traffic: one GET per connection to a traced nginx, one server
//! span each, so every outcome is an exact count.
use std::{
    process::Command,
    sync::atomic::Ordering::Relaxed,
    time::{Duration, Instant},
};

use seam_tests::{
    agent::{Agent, http_get, seam_bin},
    otlp::{Kind, Receiver},
    pki::Pki,
    procs::scratch_dir,
    serial,
    servers::Nginx,
};

fn nginx() -> Nginx {
    Nginx::start("  listen 127.0.0.1:{port};\n  location / { return 200 \"ok\\n\"; }\n")
}

fn agent(receiver: &Receiver, nginx: &Nginx, extra: &[String], env: &[(&str, &str)]) -> Agent {
    let mut args = Agent::otlp_args(receiver);
    args.extend(["--port".into(), nginx.port.to_string()]);
    args.extend(extra.iter().cloned());
    let mut all = vec![
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
        ("SEAM_EXPORT_MAX_BACKOFF_MS", "500"),
        ("OTEL_METRICS_EXPORTER", "none"),
        // The system store is read from the default places unless a test
        // says otherwise.
        ("SSL_CERT_FILE", "/nonexistent/seam-test"),
        ("SSL_CERT_DIR", "/nonexistent/seam-test"),
    ];
    all.extend_from_slice(env);
    Agent::start(&args, &all)
}

/// `n` GETs of `/<phase>/<i>`, each on its own connection.
fn drive(nginx: &Nginx, phase: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let path = format!("/{phase}/{i}");
            let (status, _) = http_get(nginx.port, &path).expect("nginx answers");
            assert_eq!(status, 200);
            path
        })
        .collect()
}

async fn delivered(receiver: &Receiver, agent: &Agent, expected: Vec<String>) {
    let spans = receiver
        .settle(expected.len(), Duration::from_secs(15))
        .await;
    let mut paths: Vec<String> = spans.iter().filter_map(|s| s.attr("url.path")).collect();
    paths.sort();
    let mut expected = expected;
    expected.sort();
    assert_eq!(paths, expected, "{}", agent.log());
    assert_eq!(agent.metric("seam_export_errors_total"), Some(0));
    let h = receiver.handshakes();
    assert!(h.completed.load(Relaxed) >= 1);
    assert_eq!(
        h.failed.load(Relaxed),
        0,
        "{}",
        h.last_error.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_trusting_the_certificate_variable() {
    let _serial = serial().await;
    let pki = Pki::new();
    let receiver = Receiver::start_tls(Kind::Grpc, pki.server_config(false)).await;
    assert!(receiver.endpoint().starts_with("https://"));
    let nginx = nginx();
    let agent = agent(
        &receiver,
        &nginx,
        &[],
        &[("OTEL_EXPORTER_OTLP_CERTIFICATE", &pki.path("ca.pem"))],
    );
    let expected = drive(&nginx, "grpc", 12);
    delivered(&receiver, &agent, expected).await;
    assert_eq!(
        receiver.handshakes().with_client_certificate.load(Relaxed),
        0
    );
}

/// Mutual TLS: the receiver requires a client certificate from its CA; the
/// agent's come from the config file (`export.certificate`,
/// `export.client_certificate`, `export.client_key`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_over_mutual_tls_from_the_config_file() {
    let _serial = serial().await;
    let pki = Pki::new();
    let receiver = Receiver::start_tls(Kind::Http, pki.server_config(true)).await;
    let nginx = nginx();
    let config = scratch_dir().join(format!("tls-{}.yaml", nginx.port));
    std::fs::write(
        &config,
        format!(
            "export:\n  certificate: {}\n  client_certificate: {}\n  client_key: {}\n",
            pki.path("ca.pem"),
            pki.path("client.pem"),
            pki.path("client.key"),
        ),
    )
    .unwrap();
    let agent = agent(
        &receiver,
        &nginx,
        &["--config".into(), config.display().to_string()],
        &[],
    );
    let expected = drive(&nginx, "mtls", 9);
    delivered(&receiver, &agent, expected).await;
    let h = receiver.handshakes();
    assert_eq!(
        h.with_client_certificate.load(Relaxed),
        h.completed.load(Relaxed)
    );
}

/// Without OTEL_EXPORTER_OTLP_CERTIFICATE the system store decides: with the
/// test CA in it the export goes through; without, the agent refuses the
/// collector (unknown issuer), counts the failures, says why, and keeps the
/// spans queued for when the collector can be trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_store_trusts_or_refuses_the_collector() {
    let _serial = serial().await;
    let pki = Pki::new();
    let receiver = Receiver::start_tls(Kind::Grpc, pki.server_config(false)).await;
    let nginx = nginx();
    let ca = pki.path("ca.pem");
    let mut trusting = agent(&receiver, &nginx, &[], &[("SSL_CERT_FILE", &ca)]);
    let expected = drive(&nginx, "trusted", 5);
    delivered(&receiver, &trusting, expected.clone()).await;
    trusting.stop();

    let refusing = agent(&receiver, &nginx, &[], &[]);
    drive(&nginx, "untrusted", 7);
    let deadline = Instant::now() + Duration::from_secs(20);
    // Spans reach the export queue in lumps, up to 50 ms after they are made.
    while refusing.metric("seam_export_errors_total").unwrap_or(0) < 2
        || refusing.metric("seam_export_queue_spans") != Some(7)
    {
        assert!(Instant::now() < deadline, "{}", refusing.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = refusing.log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("UnknownIssuer")),
        "no line says why:\n{log}"
    );
    assert_eq!(refusing.metric("seam_export_queue_spans"), Some(7), "{log}");
    assert_eq!(
        receiver.spans().len(),
        expected.len(),
        "nothing new arrived"
    );
    let h = receiver.handshakes();
    assert!(h.failed.load(Relaxed) >= 2);
}

/// An environment variable: name, value.
type Var<'a> = (&'a str, &'a str);

/// A certificate file that cannot be read or holds no certificate stops
/// the agent before it loads anything, naming the variable and the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificate_files_stop_start_up_in_one_line() {
    let pki = Pki::new();
    let junk = scratch_dir().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let junk = junk.display().to_string();
    let cases: [(&[Var], &[&str]); 3] = [
        (
            &[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem")],
            &[
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                "cannot read",
                "/nonexistent/ca.pem",
            ],
        ),
        (
            &[("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", &junk)],
            &[
                "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                "no PEM certificate",
                &junk,
            ],
        ),
        (
            &[(
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                &pki.path("client.pem"),
            )],
            &["OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "needs both"],
        ),
    ];
    for (env, needles) in cases {
        let mut cmd = Command::new(seam_bin());
        for (k, _) in std::env::vars() {
            if k.starts_with("OTEL_") || k.starts_with("SEAM_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(["--otlp-endpoint", "https://127.0.0.1:4317"])
            .args(["--metrics-listen", "none"])
            .envs(env.iter().copied());
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        // 2: the exit code of every configuration error.
        assert_eq!(out.status.code(), Some(2), "{env:?}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{env:?}: {err}");
        assert!(lines[0].starts_with("seam: configuration error: "), "{err}");
        for needle in needles {
            assert!(lines[0].contains(needle), "{needle:?} not in {err}");
        }
    }
}
