//! Builds the kernel probes (`ebpf-probes`) for the BPF target with the nightly
//! toolchain pinned in `probe-toolchain.toml`; `capture` embeds the result.
use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("agent has no parent directory"))?;
    version();
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

/// `SEAM_VERSION` for `seam --version`: the package version and, when git
/// can tell, the commit it was built from. Rebuilt when HEAD moves.
fn version() {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let package = env!("CARGO_PKG_VERSION");
    let version = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) => format!("{package} (commit {commit})"),
        None => package.to_string(),
    };
    println!("cargo:rustc-env=SEAM_VERSION={version}");
    // HEAD names the branch; the branch's ref file (or packed-refs) moves on
    // each commit. Only files that exist: cargo reruns for a missing one
    // every time.
    let mut watch = Vec::new();
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        watch.push(Path::new(&dir).join("HEAD"));
    }
    if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
        let common = Path::new(env!("CARGO_MANIFEST_DIR")).join(common);
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch.push(common.join(branch));
        }
        watch.push(common.join("packed-refs"));
    }
    for path in watch.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
