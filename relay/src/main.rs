//! `tidewire-relay` binary: parses flags and environment, starts the async runtime with the
//! threads `--worker-threads` asks for, sets up logging, binds the listen address and runs
//! the relay library until SIGINT/SIGTERM.

use anyhow::Context as _;
use clap::Parser as _;
use tidewire_relay::config::{Cli, Command, Config};
use tidewire_relay::hub::Migrated;

/// mimalloc instead of glibc's malloc: see "Allocator" in docs/BENCHMARKS.md for what it
/// bought (memory per connection and CPU per delivery, measured side by side).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::new(cli.options).context("invalid configuration")?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.worker_threads() {
        runtime.worker_threads(threads);
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(start(cli.command, config))
}

async fn start(command: Option<Command>, config: Config) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.options.log)
                .context("invalid --log filter")?,
        )
        .init();
    match command.unwrap_or(Command::Serve) {
        Command::Migrate => migrate(config).await,
        Command::Serve => serve(config).await,
    }
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let migrated = tidewire_relay::hub::migrate(config)
        .await
        .map_err(anyhow::Error::new)
        .context("migrating the tidewire schema")?;
    match migrated {
        Migrated::Version(version) => println!("tidewire schema is at version {version}"),
        Migrated::Embedded => println!("tidewire schema is up to date (embedded cluster)"),
    }
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let address = config.options.listen;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let local = listener.local_addr().context("reading the bound address")?;
    eprintln!("tidewire-relay listening on http://{local}");
    if config.options.static_dir.is_some() {
        eprintln!("  open http://{local}/ in a browser");
    }
    tidewire_relay::run(listener, config, tidewire_relay::server::shutdown_signal())
        .await
        .map_err(anyhow::Error::new)
        .context("relay failed")?;
    eprintln!("tidewire-relay stopped");
    Ok(())
}
