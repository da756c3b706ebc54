//! `pg_cluster`: a throwaway PostgreSQL cluster for the benchmark scripts (the harness's
//! [`TestPg`], migrated), printed as `DATABASE_URL=...` and written to `--url-file`, running
//! until SIGINT/SIGTERM, then stopped and deleted. Its postmaster pid is written to
//! `--pid-file` so scripts can freeze or kill it for fault runs.
//!
//! ```text
//! pg_cluster --url-file /tmp/pg.url [--durable] [--max-connections 200]
//! ```

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use tidewire_tests::TestPg;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Run a throwaway PostgreSQL cluster until SIGINT/SIGTERM")]
struct Args {
    /// File to write the connection string to.
    #[arg(long)]
    url_file: Option<PathBuf>,
    /// File to write the postmaster's pid to.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// fsync and synchronous_commit on (default: off, like the test harness).
    #[arg(long)]
    durable: bool,
    /// max_connections of the server.
    #[arg(long, default_value_t = 200)]
    max_connections: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let max_connections = args.max_connections.to_string();
    let mut settings = vec![("max_connections", max_connections.as_str())];
    if args.durable {
        settings.push(("fsync", "on"));
        settings.push(("synchronous_commit", "on"));
    }
    let pg = TestPg::try_start(&settings)
        .await
        .map_err(|error| anyhow::anyhow!("start the cluster: {error}"))?;
    let client = pg.try_client().await.context("connect")?;
    tidewire_relay::pg::schema::migrate(&client)
        .await
        .map_err(|error| anyhow::anyhow!("migrate: {error:#}"))?;
    drop(client);
    let url = pg.url();
    if let Some(path) = &args.url_file {
        std::fs::write(path, format!("{url}\n")).context("write --url-file")?;
    }
    if let Some(path) = &args.pid_file {
        let pid = pg
            .cluster()
            .postmaster_pid()
            .context("the postmaster's pid")?;
        std::fs::write(path, format!("{pid}\n")).context("write --pid-file")?;
    }
    println!("DATABASE_URL={url}");
    tidewire_relay::server::shutdown_signal().await;
    drop(pg);
    Ok(())
}
