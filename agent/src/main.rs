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
    let config = match AgentConfig::from_sources(&args, &|k| std::env::var(k).ok(), file.as_ref()) {
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(pipeline::run(config)).inspect_err(|e| {
        tracing::error!("{e:#}");
    })
}
