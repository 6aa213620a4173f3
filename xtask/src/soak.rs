//! `cargo xtask soak`: the long variants of the reliability tests. The same
//! end-to-end tests CI runs briefly (tests/tests/lifecycle.rs, overload.rs),
//! with their knobs turned up: process churn for N minutes with the agent's
//! memory sampled every 10 s, many attach/detach cycles under continuous
//! traffic, repeated overload bursts. Each test prints a `soak-result` line;
//! the figures end up in one table.
use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    cmd::{self, root},
    setup, tasks,
};

/// Options of `cargo xtask soak`.
#[derive(clap::Args)]
pub struct Options {
    /// Minutes of process churn (short-lived curl clients).
    #[arg(long, default_value_t = 10)]
    pub minutes: u64,
    /// Curl processes per churn round (memory is sampled between rounds'
    /// batches).
    #[arg(long, default_value_t = 1000)]
    pub clients: u64,
    /// Agent start/stop cycles while an application serves continuously.
    #[arg(long, default_value_t = 20)]
    pub cycles: u64,
    /// Overload bursts (10 s of wrk each) over the smallest ring buffer.
    #[arg(long, default_value_t = 5)]
    pub bursts: u64,
}

struct Scenario {
    name: &'static str,
    test_file: &'static str,
    test: &'static str,
    env: Vec<(&'static str, String)>,
}

/// One `soak-result` line's figures.
#[derive(Default)]
struct Figures {
    fields: Vec<(String, String)>,
}

impl Figures {
    fn parse(line: &str) -> Option<(String, Figures)> {
        let mut words = line.strip_prefix("soak-result ")?.split_whitespace();
        let name = words.next()?.to_string();
        let fields = words
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some((name, Figures { fields }))
    }

    fn get(&self, key: &str) -> String {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map_or_else(|| "-".to_string(), |(_, v)| v.clone())
    }

    fn mib(&self, key: &str) -> String {
        match self.get(key).parse::<f64>() {
            Ok(kib) if kib > 0.0 => format!("{:.1}", kib / 1024.0),
            _ => "-".to_string(),
        }
    }
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    setup::ensure(setup::Tier::Agent)?;
    tasks::become_root()?;
    tasks::mount_kernel_fs()?;
    let _machine = cmd::machine_lock()?;
    let bin = tasks::build(false)?;
    let scenarios = [
        Scenario {
            name: "churn",
            test_file: "lifecycle",
            test: "process_churn_keeps_pids_right_and_frees_state",
            env: vec![
                ("SEAM_CHURN_MINUTES", opts.minutes.to_string()),
                ("SEAM_CHURN_CLIENTS", opts.clients.to_string()),
            ],
        },
        Scenario {
            name: "cycles",
            test_file: "lifecycle",
            test: "applications_keep_serving_through_attach_and_detach",
            env: vec![("SEAM_CYCLES", opts.cycles.to_string())],
        },
        Scenario {
            name: "overload",
            test_file: "overload",
            test: "burst_over_the_smallest_ring_buffer_loses_counted_and_resyncs",
            env: vec![
                ("SEAM_OVERLOAD_BURSTS", opts.bursts.to_string()),
                ("SEAM_OVERLOAD_SECS", "10".to_string()),
            ],
        },
    ];
    let mut rows = Vec::new();
    for s in &scenarios {
        let started = Instant::now();
        let (passed, figures) = run_one(s, &bin)?;
        rows.push((s.name, passed, started.elapsed(), figures));
    }
    print_table(&rows);
    if rows.iter().any(|r| !r.1) {
        bail!("a soak scenario failed (its output is above)");
    }
    Ok(())
}

/// Runs one test with the scenario's knobs, echoing its output; returns
/// whether it passed and the figures it printed.
fn run_one(s: &Scenario, bin: &std::path::Path) -> anyhow::Result<(bool, Figures)> {
    let mut c = Command::new("cargo");
    c.current_dir(root())
        .args(["test", "-p", "seam-tests", "--test", s.test_file, "--"])
        .args(["--exact", s.test, "--nocapture"])
        .env("SEAM_BIN", bin)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped());
    for (k, v) in &s.env {
        c.env(k, v);
    }
    eprintln!("+ {}", cmd::show(&c));
    let mut child = c.spawn().context("starting cargo test")?;
    let stdout = child.stdout.take().context("cargo test's stdout")?;
    let mut figures = Figures::default();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some((name, f)) = Figures::parse(&line)
            && name == s.name
        {
            figures = f;
        }
    }
    Ok((child.wait()?.success(), figures))
}

fn print_table(rows: &[(&str, bool, Duration, Figures)]) {
    println!();
    println!(
        "{:<10} {:<6} {:>8} {:>10} {:>7} {:>9} {:>11} {:>10} {:>10}",
        "scenario",
        "result",
        "time",
        "requests",
        "failed",
        "spans",
        "lost events",
        "RSS min",
        "RSS max"
    );
    for (name, passed, took, f) in rows {
        println!(
            "{:<10} {:<6} {:>7.0}s {:>10} {:>7} {:>9} {:>11} {:>7} MiB {:>6} MiB",
            name,
            if *passed { "ok" } else { "FAILED" },
            took.as_secs_f64(),
            f.get("sent"),
            f.get("failed"),
            f.get("spans"),
            f.get("lost"),
            f.mib("rss_min"),
            f.mib("rss_max"),
        );
    }
}
