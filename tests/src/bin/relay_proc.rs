//! `relay_proc`: the relay as a child process of the test package (the same glue as
//! `relay/src/main.rs`: the relay's own `Cli`, `Config` and `run`), so that the fault tests in
//! `tests/e2e/load.rs` and the long fault runs can kill -9 and restart a real relay process.
//! Cargo builds it for the package's integration tests (`CARGO_BIN_EXE_relay_proc`).

use anyhow::Context as _;
use clap::Parser as _;
use tidewire_relay::config::{Cli, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::new(cli.options).context("invalid configuration")?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.options.log)
                .context("invalid --log filter")?,
        )
        .with_writer(std::io::stderr)
        .init();
    let address = config.options.listen;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let local = listener.local_addr().context("reading the bound address")?;
    // The parent reads this line to learn the port when --listen ends in :0.
    println!("listening {local}");
    tidewire_relay::run(listener, config, tidewire_relay::server::shutdown_signal())
        .await
        .map_err(anyhow::Error::new)
        .context("relay failed")?;
    Ok(())
}
