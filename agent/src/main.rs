//! The `seam` binary: parse the command line, set up logging, run the agent.
use clap::Parser as _;
use seam::{cli::Cli, config::AgentConfig, pipeline};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let args = cli.run_args().clone();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&args.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let config = match AgentConfig::from_args(&args, &|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("seam: configuration error: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(pipeline::run(config)).inspect_err(|e| {
        tracing::error!("{e:#}");
    })
}
