//! The deployment files: every manifest renders and validates offline
//! against the Kubernetes schemas (deploy/validate.sh), and the agent accepts
//! the configuration they ship.
use std::process::Command;

use seam_tests::{agent::seam_bin, procs::scratch_dir, root};

#[test]
fn manifests_render_and_validate() {
    let out = Command::new("bash")
        .arg(root().join("deploy/validate.sh"))
        .output()
        .expect("bash runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "validate.sh failed:\n{text}");
    assert!(text.contains("all manifests valid"), "{text}");
}

/// The config.yaml embedded in a ConfigMap manifest.
fn embedded_config(manifest: &str) -> String {
    let start = manifest.find("config.yaml: |").expect("config.yaml key") + "config.yaml: |".len();
    let body: Vec<&str> = manifest[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
        .collect();
    body.iter()
        .map(|l| l.get(4..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn agent_accepts_the_shipped_configuration() {
    let manifest =
        std::fs::read_to_string(root().join("deploy/kubernetes/base/configmap.yaml")).unwrap();
    let path = scratch_dir().join("shipped-config.yaml");
    std::fs::write(&path, embedded_config(&manifest)).unwrap();
    let out = Command::new(seam_bin())
        .arg(format!("--config={}", path.display()))
        .arg("--k8s-label-key=seam.dev/trace")
        .arg("--print-config")
        .env("NODE_NAME", "node-a")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("enabled: true"), "{stdout}");
    assert!(stdout.contains("listen: 0.0.0.0:9464"), "{stdout}");
}
