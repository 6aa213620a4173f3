//! The documented example configuration: it loads, and the defaults it
//! states are the agent's real defaults.
use std::{path::Path, process::Command};

use seam_tests::agent::seam_bin;

fn print_config(extra: &[&str]) -> String {
    let mut cmd = Command::new(seam_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") || k == "SEAM_CONFIG" {
            cmd.env_remove(k);
        }
    }
    let out = cmd.args(extra).arg("--print-config").output().unwrap();
    assert!(
        out.status.success(),
        "seam {extra:?} --print-config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn example_config_states_the_defaults() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/seam.example.yaml");
    let example = example.to_str().unwrap();
    let defaults = print_config(&[]);
    let documented = print_config(&["--config", example]);
    assert_eq!(documented, defaults);
    assert!(
        defaults.contains("sampler: parentbased_always_on"),
        "{defaults}"
    );
}
