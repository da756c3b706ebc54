//! `tidewire-relay` binary: parses flags and environment, sets up logging, binds the listen
//! address and runs the relay library until SIGINT/SIGTERM.

use anyhow::Context as _;
use clap::Parser as _;
use tidewire_relay::config::{Cli, Command, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::new(cli.options).context("invalid configuration")?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.options.log)
                .context("invalid --log filter")?,
        )
        .init();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => migrate(config).await,
        Command::Serve => serve(config).await,
    }
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let Some(url) = config.options.database_url.clone() else {
        // Without DATABASE_URL, migrating means starting the embedded cluster.
        let token = tokio_util::sync::CancellationToken::new();
        let tracker = tokio_util::task::TaskTracker::new();
        let hub = tidewire_relay::hub::Hub::start(config, token.clone(), tracker.clone())
            .await
            .map_err(anyhow::Error::new)
            .context("starting the embedded postgres")?;
        token.cancel();
        tracker.close();
        tracker.wait().await;
        hub.stop_embedded().await;
        println!("tidewire schema is up to date (embedded cluster)");
        return Ok(());
    };
    let version = tidewire_relay::hub::migrate(&url, config.pg_timeout())
        .await
        .map_err(anyhow::Error::new)
        .context("migrating the tidewire schema")?;
    println!("tidewire schema is at version {version}");
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
