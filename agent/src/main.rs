//! The `seam` binary: parse the command line, set up logging, run the agent
//! (or `seam check`).
use std::io::IsTerminal as _;

use clap::Parser as _;
use seam::{
    cli::{CheckArgs, Cli, Command},
    config::AgentConfig,
    metrics::status_line,
    pipeline, preflight,
};
use tracing_subscriber::EnvFilter;

/// Turns glibc's fast bins off. They keep small freed chunks unmerged, and
/// every span's attribute list (~1.8 KB, above the small sizes) then makes
/// malloc merge them all first (`malloc_consolidate`, 6% of span assembly).
/// Without them (criterion, `GLIBC_TUNABLES=glibc.malloc.mxfast=0`):
/// `stitch/client_server_pair` -6.8%, `export/otlp_request_512` -3.0%.
#[cfg(target_env = "gnu")]
fn tune_malloc() {
    // SAFETY: a plain setting, made before any other thread exists.
    unsafe { libc::mallopt(libc::M_MXFAST, 0) };
}

#[cfg(not(target_env = "gnu"))]
fn tune_malloc() {}

fn main() -> anyhow::Result<()> {
    tune_malloc();
    let cli = Cli::parse();
    if let Some(Command::Check(check)) = &cli.command {
        std::process::exit(check_machine(check));
    }
    let args = cli.run_args().clone();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&args.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(status_line::Stderr)
        .with_target(false)
        .init();
    let file = match &args.config {
        Some(path) => match seam::policy::config::load(path) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("seam: configuration error: {e}");
                std::process::exit(2);
            }
        },
        None => None,
    };
    let mut config =
        match AgentConfig::from_sources(&args, &|k| std::env::var(k).ok(), file.as_ref()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("seam: configuration error: {e}");
                std::process::exit(2);
            }
        };
    if args.print_config {
        print!("{}", config.to_file_config().print_masked());
        return Ok(());
    }
    config.status_line = !args.no_status && std::io::stderr().is_terminal();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if let Err(e) = runtime.block_on(pipeline::run(config)) {
        // One line, and the exit code says it: returning the error would
        // print it a second time.
        status_line::clear();
        tracing::error!("{e:#}");
        drop(runtime);
        std::process::exit(1);
    }
    Ok(())
}

/// `seam check`: the report on stdout; 0 if seam can run here, else 1.
fn check_machine(args: &CheckArgs) -> i32 {
    let report = preflight::run(&args.disabled_features);
    if args.json {
        println!("{}", preflight::render::json(&report));
    } else {
        print!("{}", preflight::render::table(&report));
    }
    if report.can_run() { 0 } else { 1 }
}
