//! `cargo xtask fuzz`: runs every cargo-fuzz target of `fuzz/` for a while.
//!
//! The targets build once with the pinned nightly (sanitizers need it), then
//! each runs for `--time` seconds on a working corpus under
//! `target/fuzz/corpus/<target>` seeded from the committed `fuzz/corpus/<target>`
//! (which libFuzzer only reads), with the tokens of `fuzz/dicts/<target>.dict`
//! when there is one. The build goes to `target/fuzz` unless
//! `--target-dir` says otherwise. A crash fails the task; its input lands in
//! `fuzz/artifacts/<target>/`, and `cargo +NIGHTLY fuzz run <target> <file>`
//! replays it.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{
    cmd::{self, output, root},
    setup,
};

/// cargo-fuzz release installed when missing.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

pub struct Options {
    /// Seconds per target.
    pub time: u64,
    /// Only these targets (all when empty).
    pub targets: Vec<String>,
    /// Unoptimised build: quicker to build, slower to run.
    pub dev: bool,
    /// Cargo target directory of the fuzz build (default `target/fuzz`).
    pub target_dir: Option<PathBuf>,
}

/// Names of the targets: `fuzz/fuzz_targets/*.rs`.
fn targets(fuzz_dir: &Path) -> anyhow::Result<Vec<String>> {
    let dir = fuzz_dir.join("fuzz_targets");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| {
            let path = e.ok()?.path();
            (path.extension()? == "rs").then(|| path.file_stem()?.to_str().map(str::to_string))?
        })
        .collect();
    names.sort();
    Ok(names)
}

fn ensure_cargo_fuzz(nightly: &str) -> anyhow::Result<()> {
    if output(Command::new("cargo").args([&format!("+{nightly}"), "fuzz", "--version"])).is_some() {
        return Ok(());
    }
    cmd::run(Command::new("cargo").args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
}

/// `cargo +NIGHTLY fuzz <sub>` with the project's directories.
fn cargo_fuzz(nightly: &str, sub: &str, fuzz_dir: &Path, target_dir: &Path, dev: bool) -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(root())
        .arg(format!("+{nightly}"))
        .args(["fuzz", sub, "--fuzz-dir"])
        .arg(fuzz_dir)
        .arg("--target-dir")
        .arg(target_dir);
    if dev {
        c.arg("--dev");
    }
    c
}

/// Executions reported at the end of a libFuzzer run.
fn executions(log: &str) -> Option<u64> {
    let stat = log.lines().rev().find_map(|l| {
        l.trim()
            .strip_prefix("stat::number_of_executed_units:")
            .and_then(|n| n.trim().parse().ok())
    });
    // Else the last "#N ..." status line (`#123456\tDONE   cov: ...`).
    stat.or_else(|| {
        log.lines().rev().find_map(|l| {
            let rest = l.strip_prefix('#')?;
            let n = rest.split_whitespace().next()?;
            n.parse().ok()
        })
    })
}

struct Outcome {
    target: String,
    execs: Option<u64>,
    seconds: f64,
    ok: bool,
    log: PathBuf,
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    let nightly = setup::pins()?.nightly;
    if output(Command::new("rustup").args(["run", &nightly, "rustc", "--version"])).is_none() {
        bail!("toolchain {nightly} is missing; run `cargo xtask setup`");
    }
    ensure_cargo_fuzz(&nightly)?;
    let fuzz_dir = root().join("fuzz");
    // Working corpora and logs stay in target/fuzz; the build may go
    // elsewhere (CI keeps it across runs to rebuild only seam).
    let work_dir = root().join("target").join("fuzz");
    let target_dir = opts.target_dir.clone().unwrap_or_else(|| work_dir.clone());
    let all = targets(&fuzz_dir)?;
    let chosen: Vec<String> = if opts.targets.is_empty() {
        all
    } else {
        for t in &opts.targets {
            if !all.contains(t) {
                bail!("no fuzz target {t:?}; there are: {}", all.join(", "));
            }
        }
        opts.targets.clone()
    };

    let started = Instant::now();
    cmd::run(&mut cargo_fuzz(
        &nightly,
        "build",
        &fuzz_dir,
        &target_dir,
        opts.dev,
    ))?;
    eprintln!(
        "fuzz targets built in {:.0} s",
        started.elapsed().as_secs_f64()
    );

    let logs = work_dir.join("logs");
    fs::create_dir_all(&logs)?;
    let mut outcomes = Vec::new();
    for target in &chosen {
        let work = work_dir.join("corpus").join(target);
        fs::create_dir_all(&work)?;
        let seeds = fuzz_dir.join("corpus").join(target);
        let log = logs.join(format!("{target}.log"));
        let mut c = cargo_fuzz(&nightly, "run", &fuzz_dir, &target_dir, opts.dev);
        c.arg(target).arg(&work);
        if seeds.is_dir() {
            c.arg(&seeds);
        }
        c.args([
            "--",
            &format!("-max_total_time={}", opts.time),
            "-timeout=10",
            "-print_final_stats=1",
        ]);
        let dict = fuzz_dir.join("dicts").join(format!("{target}.dict"));
        if dict.is_file() {
            c.arg(format!("-dict={}", dict.display()));
        }
        c.stdout(fs::File::create(&log)?)
            .stderr(fs::File::options().append(true).open(&log)?);
        eprintln!("+ {}  (log: {})", cmd::show(&c), log.display());
        let t0 = Instant::now();
        let status = c
            .status()
            .with_context(|| format!("starting {}", cmd::show(&c)))?;
        let text = fs::read_to_string(&log).unwrap_or_default();
        let outcome = Outcome {
            target: target.clone(),
            execs: executions(&text),
            seconds: t0.elapsed().as_secs_f64(),
            ok: status.success(),
            log,
        };
        if !outcome.ok {
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- {target} failed ({status}); end of its log:");
            for l in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("{l}");
            }
            eprintln!("---");
        }
        outcomes.push(outcome);
    }

    println!("{:<16} {:>12} {:>9}  result", "target", "execs", "seconds");
    for o in &outcomes {
        println!(
            "{:<16} {:>12} {:>9.1}  {}",
            o.target,
            o.execs.map_or("?".to_string(), |n| n.to_string()),
            o.seconds,
            if o.ok {
                "ok".to_string()
            } else {
                format!("CRASH (see {})", o.log.display())
            }
        );
    }
    let crashed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.ok)
        .map(|o| o.target.as_str())
        .collect();
    if !crashed.is_empty() {
        bail!(
            "fuzz targets failed: {}; inputs are in {}",
            crashed.join(", "),
            fuzz_dir.join("artifacts").display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::executions;

    #[test]
    fn reads_final_stats_or_done_line() {
        let log = "#2\tINITED cov: 10 ft: 10 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                   #123456\tDONE   cov: 99 ft: 300 corp: 40/2Kb lim: 4096 exec/s: 6172 rss: 60Mb\n\
                   Done 123456 runs in 21 second(s)\n\
                   stat::number_of_executed_units: 123457\n\
                   stat::average_exec_per_sec:     5878\n";
        assert_eq!(executions(log), Some(123457));
        let log = "#4096\tpulse  cov: 5\n#8000\tDONE   cov: 5\nDone 8000 runs in 2 second(s)\n";
        assert_eq!(executions(log), Some(8000));
        assert_eq!(executions("nothing here"), None);
    }
}
