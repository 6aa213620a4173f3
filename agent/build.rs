//! Builds the kernel probes (`ebpf-probes`) for the BPF target with the nightly
//! toolchain pinned in `probe-toolchain.toml`; `capture` embeds the result.
use std::{fs, path::Path};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("agent has no parent directory"))?;
    let pin_file = root.join("probe-toolchain.toml");
    println!("cargo:rerun-if-changed={}", pin_file.display());
    // Fuzz builds (cargo-fuzz passes `--cfg fuzzing`) exercise the parsers and
    // never load probes: an empty object saves building them.
    if std::env::var_os("CARGO_CFG_FUZZING").is_some() {
        let out = std::env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR is not set"))?;
        fs::write(Path::new(&out).join("seam-probes"), [])?;
        return Ok(());
    }
    let pins =
        fs::read_to_string(&pin_file).with_context(|| format!("reading {}", pin_file.display()))?;
    let nightly = pinned(&pins, "nightly")
        .ok_or_else(|| anyhow!("{} names no `nightly`", pin_file.display()))?;
    let probes = root.join("ebpf-probes");
    let probes = probes
        .to_str()
        .ok_or_else(|| anyhow!("non UTF-8 path {}", probes.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "seam-ebpf-probes",
            root_dir: probes,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&nightly),
    )
    .context("building the kernel probes; run `cargo xtask setup` if the toolchain is missing")
}

/// Value of `key = "value"` in the pin file.
fn pinned(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
    })
}
