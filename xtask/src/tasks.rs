//! build, run and test.
use std::{fs, os::unix::process::CommandExt as _, path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::{
    cmd::{self, is_root, root},
    setup,
};

/// Builds the agent; returns the path of the `seam` binary.
pub fn build(release: bool) -> anyhow::Result<PathBuf> {
    let mut c = Command::new("cargo");
    c.current_dir(root())
        .args(["build", "-p", "seam", "--bins"]);
    if release {
        c.arg("--release");
    }
    cmd::run(&mut c)?;
    Ok(root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("seam"))
}

fn mounted(fstype: &str) -> bool {
    fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
        m.lines().any(|l| {
            l.split_once(" - ")
                .is_some_and(|(_, r)| r.split(' ').next() == Some(fstype))
        })
    })
}

/// Mounts tracefs and bpffs where they are missing (needs root).
pub fn mount_kernel_fs() -> anyhow::Result<()> {
    for (fstype, at) in [("tracefs", "/sys/kernel/tracing"), ("bpf", "/sys/fs/bpf")] {
        if !mounted(fstype) {
            cmd::run(Command::new("mount").args([
                "-t",
                fstype,
                if fstype == "bpf" { "bpf" } else { "nodev" },
                at,
            ]))?;
        }
    }
    Ok(())
}

/// Re-runs this task under sudo when not root.
pub fn become_root() -> anyhow::Result<()> {
    if is_root() {
        return Ok(());
    }
    if !cmd::has("sudo") {
        bail!("seam needs root to load eBPF programs; run this as root");
    }
    let exe = std::env::current_exe()?;
    let err = Command::new("sudo")
        .arg("-E")
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .exec();
    Err(err).context("re-running under sudo")
}

pub fn run(release: bool, args: &[String]) -> anyhow::Result<()> {
    setup::ensure(setup::Tier::Agent)?;
    let bin = build(release)?;
    become_root()?;
    mount_kernel_fs()?;
    eprintln!("+ {} {}", bin.display(), args.join(" "));
    let err = Command::new(&bin).args(args).exec();
    Err(err).with_context(|| format!("running {}", bin.display()))
}

/// Every test of the workspace (Phoenix, the real backend of
/// tests/tests/phoenix.rs, comes from `setup`).
pub fn test(args: &[String]) -> anyhow::Result<()> {
    setup::ensure(setup::Tier::Tests)?;
    become_root()?;
    mount_kernel_fs()?;
    let bin = build(false)?;
    let mut c = Command::new("cargo");
    c.current_dir(root())
        .args(["test", "--workspace", "--no-fail-fast"])
        .env("SEAM_BIN", &bin)
        .env("SEAM_PHOENIX_BIN", setup::phoenix_bin())
        .args(args);
    cmd::run(&mut c)?;
    // fuzz/ is its own workspace (cargo-fuzz needs that); its library tests
    // check the seed corpus still matches the record formats, so that a
    // format change fails here rather than in the fuzz build.
    if args.is_empty() {
        let mut f = Command::new("cargo");
        f.current_dir(root())
            .args(["test", "--manifest-path", "fuzz/Cargo.toml", "--lib"]);
        cmd::run(&mut f)?;
    }
    Ok(())
}
