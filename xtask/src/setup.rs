//! `cargo xtask setup`: brings a fresh machine to the point where the agent
//! builds and every test runs. Each step checks first and skips what is there.
//! That includes a real tracing backend, Arize Phoenix, in its own virtualenv
//! (the backend test and `demo --backend phoenix` use it). `--all` adds a
//! headless browser, which only `demo --screenshot` needs.
use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context as _, anyhow, bail};

use crate::cmd::{self, has, output, root};

/// Debian packages the tests and benchmarks drive, by the program that
/// proves each is installed.
const APT: &[(&str, &str)] = &[
    ("curl", "curl"),
    ("nginx", "nginx"),
    ("wrk", "wrk"),
    ("wget", "wget"),
    ("openssl", "openssl"),
    ("ip", "iproute2"),
    ("bpftool", "bpftool"),
    ("fusermount", "fuse"),
    ("redis-server", "redis-server"),
    ("go", "golang-go"),
];

/// Python packages the test services use, by import name.
const PIP: &[(&str, &str)] = &[
    ("flask", "flask"),
    ("gunicorn", "gunicorn"),
    ("requests", "requests"),
    ("fuse", "fusepy"),
    ("psycopg", "psycopg[binary]"),
    ("redis", "redis"),
    ("grpc", "grpcio"),
    ("kubernetes_validate", "kubernetes-validate==1.37.0"),
    ("helm_python", "helm-python-sdk==0.2.2"),
    // cargo xtask bench: the OpenTelemetry Python SDK's auto-instrumentation.
    ("opentelemetry.distro", "opentelemetry-distro"),
    (
        "opentelemetry.exporter.otlp.proto.http",
        "opentelemetry-exporter-otlp",
    ),
    (
        "opentelemetry.instrumentation.flask",
        "opentelemetry-instrumentation-flask",
    ),
    (
        "opentelemetry.instrumentation.requests",
        "opentelemetry-instrumentation-requests",
    ),
];

/// The Phoenix release the backend test and `demo --backend phoenix` were
/// written against (its REST span API and UI routes).
pub const PHOENIX_VERSION: &str = "20.26.1";

/// Phoenix's own virtualenv: its dependency tree is large and must not
/// disturb the packages the test services import. `SEAM_PHOENIX_VENV`
/// overrides it.
pub fn phoenix_venv() -> PathBuf {
    if let Some(dir) = std::env::var_os("SEAM_PHOENIX_VENV") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/seam/phoenix-venv")
}

/// The `phoenix` command in [`phoenix_venv`].
pub fn phoenix_bin() -> PathBuf {
    phoenix_venv().join("bin/phoenix")
}

fn phoenix_version() -> Option<String> {
    output(Command::new(phoenix_venv().join("bin/python")).args([
        "-c",
        "import importlib.metadata as m; print(m.version('arize-phoenix'))",
    ]))
    .map(|v| v.trim().to_string())
}

fn install_phoenix() -> anyhow::Result<()> {
    let venv = phoenix_venv();
    if !venv.join("bin/python").exists() {
        if let Some(parent) = venv.parent() {
            fs::create_dir_all(parent)?;
        }
        cmd::run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    cmd::run(
        Command::new(venv.join("bin/python"))
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .arg(format!("arize-phoenix=={PHOENIX_VERSION}")),
    )
}

/// The pinned probe toolchain, from probe-toolchain.toml.
pub struct Pins {
    pub nightly: String,
    pub bpf_linker: String,
}

pub fn pins() -> anyhow::Result<Pins> {
    let path = root().join("probe-toolchain.toml");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let get = |key: &str| {
        text.lines()
            .find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
            })
            .ok_or_else(|| anyhow!("{} has no `{key}`", path.display()))
    };
    Ok(Pins {
        nightly: get("nightly")?,
        bpf_linker: get("bpf-linker")?,
    })
}

/// One thing a fresh machine may lack.
struct Step {
    what: String,
    present: bool,
    install: Box<dyn Fn() -> anyhow::Result<()>>,
}

fn toolchain_ok(nightly: &str) -> bool {
    output(Command::new("rustup").args(["run", nightly, "rustc", "--version"])).is_some()
}

fn rust_src_ok(nightly: &str) -> bool {
    output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        nightly,
    ]))
    .is_some_and(|l| l.lines().any(|c| c.starts_with("rust-src")))
}

fn bpf_linker_version() -> Option<String> {
    output(Command::new("bpf-linker").arg("--version"))
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
}

fn missing_pip() -> Vec<&'static str> {
    PIP.iter()
        .filter(|(module, _)| {
            !Command::new("python3")
                .args(["-c", &format!("import {module}")])
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|(_, pkg)| *pkg)
        .collect()
}

fn install_toolchain(nightly: &str) -> anyhow::Result<()> {
    let installed = cmd::run(Command::new("rustup").args([
        "toolchain",
        "install",
        nightly,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]));
    if installed.is_ok() {
        return Ok(());
    }
    // Offline fallback: the machine's `nightly` may be the very build pinned
    // (nightly-YYYY-MM-DD ships the commit of the day before).
    let date = nightly.trim_start_matches("nightly-");
    let local = output(Command::new("rustup").args(["run", "nightly", "rustc", "-vV"]))
        .ok_or_else(|| anyhow!("cannot install {nightly} and no `nightly` toolchain is present"))?;
    let commit_date = local
        .lines()
        .find_map(|l| l.strip_prefix("commit-date: "))
        .unwrap_or_default()
        .to_string();
    let next_day = next_date(&commit_date).unwrap_or_default();
    if next_day != date {
        bail!("cannot install {nightly}; the local `nightly` is from {commit_date}");
    }
    let sysroot =
        output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))
            .ok_or_else(|| anyhow!("no sysroot for nightly"))?;
    cmd::run(Command::new("rustup").args(["toolchain", "link", nightly, sysroot.trim()]))?;
    cmd::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

/// The day after YYYY-MM-DD (enough calendar for toolchain dates).
fn next_date(date: &str) -> Option<String> {
    let mut parts = date.split('-').map(|p| p.parse::<u32>().ok());
    let (y, m, d) = (parts.next()??, parts.next()??, parts.next()??);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let (y, m, d) = if d < days[(m - 1) as usize] {
        (y, m, d + 1)
    } else if m < 12 {
        (y, m + 1, 1)
    } else {
        (y + 1, 1, 1)
    };
    Some(format!("{y:04}-{m:02}-{d:02}"))
}

fn install_bpf_linker(version: &str) -> anyhow::Result<()> {
    // Link bpf-linker against the LLVM that ships inside the stable
    // toolchain, so no system LLVM is needed.
    let sysroot = output(Command::new("rustc").args(["--print", "sysroot"]))
        .ok_or_else(|| anyhow!("rustc --print sysroot failed"))?;
    let lib = std::path::Path::new(sysroot.trim()).join("lib");
    let llvm = fs::read_dir(&lib)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find_map(|n| {
            n.strip_prefix("lib")?
                .strip_suffix(".so")
                .filter(|s| s.starts_with("LLVM-"))
                .map(str::to_string)
        })
        .ok_or_else(|| anyhow!("no libLLVM-*.so in {}", lib.display()))?;
    let major = llvm
        .trim_start_matches("LLVM-")
        .split(['-', '.'])
        .next()
        .unwrap_or_default()
        .to_string();
    let rustflags = format!(
        "-L {lib} -l dylib={llvm} -C link-arg=-Wl,-rpath,{lib}",
        lib = lib.display()
    );
    cmd::run(
        Command::new("cargo")
            .args([
                "install",
                "--locked",
                &format!("bpf-linker@{version}"),
                "--no-default-features",
                "--features",
                &format!("llvm-{major},no-llvm-linking"),
                "--force",
            ])
            .env("RUSTFLAGS", rustflags),
    )
}

/// Phoenix, a real backend for the tests and the demo.
fn phoenix_step() -> Step {
    Step {
        what: format!(
            "Arize Phoenix {PHOENIX_VERSION} in {} (tests/tests/phoenix.rs, demo --backend phoenix)",
            phoenix_venv().display()
        ),
        present: phoenix_version().as_deref() == Some(PHOENIX_VERSION),
        install: Box::new(install_phoenix),
    }
}

/// The `--all` tier.
fn heavy_steps() -> Vec<Step> {
    vec![Step {
        what: "Debian package: chromium (screenshots of the Phoenix UI)".into(),
        present: has("chromium"),
        install: Box::new(|| {
            cmd::run(Command::new("apt-get").args(["update", "-q"]))?;
            cmd::run(
                Command::new("apt-get")
                    .args(["install", "-y", "-q", "--no-install-recommends", "chromium"])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )
        }),
    }]
}

/// How much a task needs.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    /// Build and run the agent, drive the benchmarks' servers and clients.
    Agent,
    /// Also Phoenix, for the backend test and `demo --backend phoenix`
    /// (what `cargo xtask setup` installs).
    Tests,
    /// Also chromium, for `demo --screenshot` (`setup --all`).
    All,
}

fn steps(tier: Tier) -> anyhow::Result<Vec<Step>> {
    let pins = pins()?;
    let mut steps = Vec::new();
    let nightly = pins.nightly.clone();
    steps.push(Step {
        what: format!("Rust toolchain {nightly} with rust-src (builds the probes)"),
        present: toolchain_ok(&nightly) && rust_src_ok(&nightly),
        install: Box::new(move || {
            if !toolchain_ok(&nightly) {
                install_toolchain(&nightly)?;
            }
            if !rust_src_ok(&nightly) {
                cmd::run(Command::new("rustup").args([
                    "component",
                    "add",
                    "rust-src",
                    "--toolchain",
                    &nightly,
                ]))?;
            }
            Ok(())
        }),
    });
    let want = pins.bpf_linker.clone();
    steps.push(Step {
        what: format!("bpf-linker {want} (links the probes)"),
        present: bpf_linker_version().as_deref() == Some(want.as_str()),
        install: Box::new(move || install_bpf_linker(&want)),
    });
    let apt: Vec<&str> = APT
        .iter()
        .filter(|(bin, _)| !has(bin))
        .map(|(_, p)| *p)
        .collect();
    steps.push(Step {
        what: format!(
            "Debian packages: {}",
            APT.iter().map(|p| p.1).collect::<Vec<_>>().join(" ")
        ),
        present: apt.is_empty(),
        install: Box::new(move || {
            cmd::run(Command::new("apt-get").args(["update", "-q"]))?;
            cmd::run(
                Command::new("apt-get")
                    .args(["install", "-y", "-q", "--no-install-recommends"])
                    .args(&apt)
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )?;
            // The tests start their own nginx; the packaged service is not wanted.
            let _ = Command::new("service").args(["nginx", "stop"]).status();
            Ok(())
        }),
    });
    let pip = missing_pip();
    steps.push(Step {
        what: format!(
            "Python packages: {}",
            PIP.iter().map(|p| p.1).collect::<Vec<_>>().join(" ")
        ),
        present: pip.is_empty(),
        install: Box::new(move || {
            cmd::run(
                Command::new("python3")
                    .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
                    .args(&pip),
            )
        }),
    });
    if tier >= Tier::Tests {
        steps.push(phoenix_step());
    }
    if tier == Tier::All {
        steps.extend(heavy_steps());
    }
    Ok(steps)
}

/// `cargo xtask setup [--check] [--all]`.
pub fn run(check_only: bool, all: bool) -> anyhow::Result<()> {
    run_tier(check_only, if all { Tier::All } else { Tier::Tests })
}

fn run_tier(check_only: bool, tier: Tier) -> anyhow::Result<()> {
    let mut missing = 0;
    for step in steps(tier)? {
        if step.present {
            eprintln!("ok       {}", step.what);
            continue;
        }
        missing += 1;
        if check_only {
            eprintln!("missing  {}", step.what);
        } else {
            eprintln!("install  {}", step.what);
            (step.install)().with_context(|| format!("installing {}", step.what))?;
        }
    }
    if check_only && missing > 0 {
        bail!(
            "{missing} item(s) missing; run `cargo xtask setup{}`",
            if tier == Tier::All { " --all" } else { "" }
        );
    }
    Ok(())
}

/// Installs what `tier` needs if anything is missing (for run, test...).
pub fn ensure(tier: Tier) -> anyhow::Result<()> {
    if steps(tier)?.iter().any(|s| !s.present) {
        run_tier(false, tier)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_date_rolls_over() {
        assert_eq!(next_date("2026-05-19").as_deref(), Some("2026-05-20"));
        assert_eq!(next_date("2026-05-31").as_deref(), Some("2026-06-01"));
        assert_eq!(next_date("2026-12-31").as_deref(), Some("2027-01-01"));
        assert_eq!(next_date("2028-02-28").as_deref(), Some("2028-02-29"));
        assert_eq!(next_date("bad"), None);
    }

    #[test]
    fn pins_are_readable() {
        let p = pins().unwrap();
        assert!(p.nightly.starts_with("nightly-"));
        assert!(p.bpf_linker.split('.').count() == 3);
    }
}
