//! `cargo xtask <task>`: everything that needs root, mounts, packages or
//! toolchains lives here, not in the agent.
mod bench;
mod cmd;
mod demo;
mod fuzz;
mod setup;
mod soak;
mod tasks;

use clap::{Parser, Subcommand};

/// Developer tasks for seam.
#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what this machine lacks: the pinned nightly with rust-src,
    /// bpf-linker, the packages the tests use and Arize Phoenix (a real
    /// tracing backend, in its own virtualenv). Safe to run again.
    Setup {
        /// Only report what is missing; install nothing.
        #[arg(long)]
        check: bool,
        /// Also chromium, for `demo --screenshot` (screenshots of the
        /// Phoenix UI).
        #[arg(long)]
        all: bool,
    },
    /// Build the agent (and its probes).
    Build {
        /// Optimised build.
        #[arg(long)]
        release: bool,
    },
    /// Build and run the agent as root; arguments after `--` go to `seam`.
    Run {
        /// Debug build instead of release.
        #[arg(long)]
        debug: bool,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The checkout example of the tracing guides under seam: five services,
    /// a slow log write, a slow notification; prints each order's waterfall
    /// (and, with --backend phoenix, shows it in Arize Phoenix).
    Demo(demo::Options),
    /// Measure what tracing costs: nginx (plaintext, TLS) and the checkout
    /// chain without tracing, under seam and under the OTel Python SDK.
    Bench(bench::Options),
    /// Fuzz the parsers: run every cargo-fuzz target in fuzz/ for a while.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        time: u64,
        /// Only this target (repeatable).
        #[arg(long = "target")]
        targets: Vec<String>,
        /// Unoptimised build: quicker to build, slower to run.
        #[arg(long)]
        dev: bool,
        /// Cargo target directory of the fuzz build (default target/fuzz).
        #[arg(long)]
        target_dir: Option<std::path::PathBuf>,
    },
    /// Long reliability runs: process churn for N minutes with the agent's
    /// memory sampled every 10 s, attach/detach cycles under continuous
    /// traffic, overload bursts; ends with a summary table.
    Soak(soak::Options),
    /// Run every test: unit tests and end-to-end tests with real probes.
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup { check, all } => setup::run(check, all),
        Task::Build { release } => tasks::build(release).map(|_| ()),
        Task::Run { debug, args } => tasks::run(!debug, &args),
        Task::Test { args } => tasks::test(&args),
        Task::Demo(opts) => demo::run(&opts),
        Task::Bench(opts) => bench::run(opts),
        Task::Soak(opts) => soak::run(opts),
        Task::Fuzz {
            time,
            targets,
            dev,
            target_dir,
        } => fuzz::run(&fuzz::Options {
            time,
            targets,
            dev,
            target_dir,
        }),
    }
}
