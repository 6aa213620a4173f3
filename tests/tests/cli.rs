//! The command line: help, version, configuration errors and the effective
//! configuration, without loading any probe.
use std::process::Command;

use seam_tests::{agent::seam_bin, procs::scratch_dir};

fn seam(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(seam_bin());
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") || k == "SEAM_CONFIG" {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_and_version() {
    let (code, out, _) = seam(&["--help"], &[]);
    assert_eq!(code, 0);
    for heading in [
        "Selection:",
        "Export:",
        "Sampling:",
        "Tracing:",
        "Metrics:",
        "Configuration:",
        "Operations:",
    ] {
        assert!(out.contains(heading), "--help lacks {heading}:\n{out}");
    }
    assert!(
        out.contains("--disable-feature <FEATURE>")
            && out.contains("- uprobes:  no TLS plaintext capture")
            && out.contains("- sk_msg:   no traceparent injection")
            && out.contains("- cgroup2:  no traceparent injection, no Kubernetes mode")
            && out.contains("--no-status")
            && out.contains("check"),
        "{out}"
    );
    let (code, out, _) = seam(&["check", "--help"], &[]);
    assert_eq!(code, 0);
    assert!(
        out.contains("--json") && out.contains("Exits 1 if seam cannot run"),
        "{out}"
    );

    // `seam 0.1.0 (commit 0123456789ab)`: a commit of this repository.
    let (code, out, _) = seam(&["--version"], &[]);
    assert_eq!(code, 0);
    let version = out.trim();
    let rest = version
        .strip_prefix(concat!("seam ", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("{version}"));
    if !rest.is_empty() {
        let commit = rest
            .strip_prefix(" (commit ")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{version}"));
        assert_eq!(commit.len(), 12, "{version}");
        let known = Command::new("git")
            .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(
            known.success(),
            "{version}: not a commit of this repository"
        );
    }
}

/// Every mistake names the flag, variable or key, and what it accepts.
#[test]
fn errors_name_the_key_and_the_allowed_values() {
    let (code, _, err) = seam(&["--print-config", "--disable-feature", "kprobes"], &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("'kprobes'")
            && err.contains("--disable-feature")
            && err.contains("[possible values: uprobes, sk_msg, sock_ops, cgroup2]"),
        "{err}"
    );
    for (env, expect) in [
        (
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            "OTEL_EXPORTER_OTLP_PROTOCOL: unsupported OTLP protocol `http/json`; allowed values: grpc, http/protobuf",
        ),
        (
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://collector:4317"),
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: OTLP endpoint `ftp://collector:4317` must start with http:// or https://",
        ),
        (
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "soon"),
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: `soon` is not a whole number of milliseconds",
        ),
        (
            ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
            "OTEL_EXPORTER_OTLP_HEADERS: OTLP header `novalue` is not key=value",
        ),
        (
            ("OTEL_BSP_MAX_QUEUE_SIZE", "-1"),
            "OTEL_BSP_MAX_QUEUE_SIZE: `-1` is not a whole number >= 0",
        ),
    ] {
        let mut vars = vec![env];
        if env.0 != "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" {
            vars.push(("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"));
        }
        let (code, _, err) = seam(&["--print-config"], &vars);
        assert_eq!(code, 2, "{env:?}: {err}");
        assert!(err.contains(expect), "expected {expect:?} in {err:?}");
    }
    for (args, expect) in [
        (
            &["--metrics-listen", "localhost"][..],
            "--metrics-listen localhost: expected IP:PORT or `none`",
        ),
        (
            &["--otlp-endpoint", "collector:4317"][..],
            "--otlp-endpoint: OTLP endpoint `collector:4317` must start with http:// or https://",
        ),
        (
            &["--k8s", "--disable-feature", "cgroup2"][..],
            "--k8s: Kubernetes mode matches pods by cgroup2 id, which --disable-feature cgroup2 turns off",
        ),
    ] {
        let mut all = vec!["--print-config"];
        all.extend_from_slice(args);
        let (code, _, err) = seam(&all, &[("NODE_NAME", "node-1")]);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(expect), "expected {expect:?} in {err:?}");
    }
    let path = scratch_dir().join("bad-listen.yaml");
    std::fs::write(&path, "metrics:\n  listen: nowhere\n").unwrap();
    let (code, _, err) = seam(&["--config", path.to_str().unwrap(), "--print-config"], &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("metrics.listen: expected an IP address and port such as 0.0.0.0:9464, or null, got \"nowhere\""),
        "{err}"
    );
}

#[test]
fn config_file_errors_name_the_key() {
    let path = scratch_dir().join("bad.yaml");
    for (text, expect) in [
        (
            "export:\n  protcol: grpc\n",
            "export.protcol: unknown field",
        ),
        (
            "sampling:\n  tail:\n    keep_ratio: 1.5\n",
            "sampling.tail.keep_ratio: expected a number between 0 and 1, got 1.5",
        ),
        (
            "ring_buffer_mib: 3\n",
            "ring_buffer_mib: expected a power of two",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let (code, _, err) = seam(&["--config", path.to_str().unwrap(), "--print-config"], &[]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(expect), "expected {expect:?} in {err:?}");
    }
    let (code, _, err) = seam(&["--print-config"], &[("OTEL_TRACES_SAMPLER", "sometimes")]);
    assert_eq!(code, 2);
    assert!(
        err.contains("OTEL_TRACES_SAMPLER") && err.contains("parentbased_traceidratio"),
        "{err}"
    );
    let (code, _, err) = seam(&["--print-config", "--ring-buffer-mib", "3"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--ring-buffer-mib 3"), "{err}");
}

#[test]
fn print_config_merges_sources_and_masks_secrets() {
    let path = scratch_dir().join("good.yaml");
    std::fs::write(
        &path,
        "export:\n  endpoint: http://file:4318\n  headers: {x-api-key: FILE-SECRET}\nroutes:\n  patterns: ['/users/{id}']\n",
    )
    .unwrap();
    let (code, out, err) = seam(
        &[
            "--config",
            path.to_str().unwrap(),
            "--print-config",
            "--route",
            "/flag/{id}",
        ],
        &[
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("FILE-SECRET"), "{out}");
    assert!(
        out.contains("x-api-key: '***'") || out.contains("x-api-key: \"***\""),
        "{out}"
    );
    assert!(
        out.contains("endpoint: http://file:4318/v1/traces"),
        "{out}"
    );
    assert!(
        out.contains("sampler: traceidratio") && out.contains("arg: 0.5"),
        "{out}"
    );
    let flag = out.find("/flag/{id}").expect("flag route");
    let file = out.find("/users/{id}").expect("file route");
    assert!(flag < file, "flag routes come first:\n{out}");
}
