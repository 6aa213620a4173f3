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
    ] {
        assert!(out.contains(heading), "--help lacks {heading}:\n{out}");
    }
    let (code, out, _) = seam(&["--version"], &[]);
    assert_eq!(code, 0);
    assert!(out.starts_with("seam "), "{out}");
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
