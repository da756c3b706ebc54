//! [`TestPg`]: a throwaway PostgreSQL cluster for one test, in its own temp directory on its
//! own free port, so tests run in parallel. Built on the relay's
//! [`EmbeddedPostgres`]; it adds only the temp directory, fast non-durable settings and
//! panicking convenience wrappers for the fault controls.

use std::os::unix::fs::PermissionsExt;

use tempfile::TempDir;
use tidewire_relay::pg::embedded::{EmbeddedConfig, EmbeddedPostgres, StopMode};
use tidewire_relay::pg::schema;
use tokio_postgres::{Client, NoTls};

/// Any error, boxed (the harness mixes I/O and [`tidewire_relay::pg::Error`]).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A private cluster, stopped (immediate mode) and deleted on drop.
#[derive(Debug)]
pub struct TestPg {
    /// Declared before `dir` so that it is dropped (server stopped) before the directory is
    /// removed.
    cluster: EmbeddedPostgres,
    /// The temp directory holding PGDATA; removed on drop.
    dir: TempDir,
}

impl TestPg {
    /// A running cluster with database `tidewire` and the `tidewire` schema migrated.
    ///
    /// # Panics
    ///
    /// When the cluster cannot start (the message says why, e.g. missing binaries).
    pub async fn start() -> Self {
        let pg = Self::start_unmigrated().await;
        let client = pg.client().await;
        schema::migrate(&client)
            .await
            .expect("migrate the test database");
        pg
    }

    /// A running cluster with an empty database `tidewire` (no schema).
    ///
    /// # Panics
    ///
    /// When the cluster cannot start.
    pub async fn start_unmigrated() -> Self {
        Self::start_with_settings(&[]).await
    }

    /// [`TestPg::start_unmigrated`] with extra server settings (e.g. `track_commit_timestamp`).
    ///
    /// # Panics
    ///
    /// When the cluster cannot start.
    pub async fn start_with_settings(settings: &[(&str, &str)]) -> Self {
        Self::try_start(settings)
            .await
            .unwrap_or_else(|error| panic!("start a test cluster: {}", anyhow_like(&*error)))
    }

    /// The fallible form of [`TestPg::start_with_settings`].
    ///
    /// # Errors
    ///
    /// As [`EmbeddedPostgres::launch`] ([`tidewire_relay::pg::Error`]), or the temp directory
    /// cannot be made.
    pub async fn try_start(settings: &[(&str, &str)]) -> Result<Self, BoxError> {
        let dir = tempfile::Builder::new()
            .prefix("tidewire-testpg-")
            .tempdir()?;
        // The server may run as another user (we are root): it must be able to enter the dir.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let mut config = EmbeddedConfig::default()
            .with_data_dir(dir.path().join("pgdata"))
            .with_durable(false)
            .with_stop_on_drop(Some(StopMode::Immediate))
            .with_setting("max_connections", "100")
            .with_setting("log_min_messages", "warning");
        for (name, value) in settings {
            config = config.with_setting(*name, *value);
        }
        let cluster = EmbeddedPostgres::launch(config).await?;
        Ok(Self { cluster, dir })
    }

    /// A new connection to database `tidewire`, its connection task spawned.
    ///
    /// # Panics
    ///
    /// When the connection fails.
    pub async fn client(&self) -> Client {
        self.try_client()
            .await
            .expect("connect to the test cluster")
    }

    /// The fallible form of [`TestPg::client`].
    ///
    /// # Errors
    ///
    /// When the connection fails (e.g. the server is frozen or down).
    pub async fn try_client(&self) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(&self.url(), NoTls).await?;
        tokio::spawn(async move {
            // Ends with the client or the server; tests see failures through the client.
            let _ = connection.await;
        });
        Ok(client)
    }

    /// `postgresql://postgres@127.0.0.1:PORT/tidewire`.
    pub fn url(&self) -> String {
        self.cluster.connection_string()
    }

    /// The underlying cluster.
    pub fn cluster(&self) -> &EmbeddedPostgres {
        &self.cluster
    }

    /// The underlying cluster, for the lower-level controls.
    pub fn cluster_mut(&mut self) -> &mut EmbeddedPostgres {
        &mut self.cluster
    }

    /// The temp directory (PGDATA is its `pgdata` subdirectory).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// `pg_ctl restart -m fast`: clients are disconnected, committed data survives.
    ///
    /// # Panics
    ///
    /// When the restart fails.
    pub async fn restart_fast(&mut self) {
        self.cluster
            .restart(StopMode::Fast)
            .await
            .expect("restart -m fast");
    }

    /// `pg_ctl stop -m immediate` then start (crash recovery on start).
    ///
    /// Test clusters run with `synchronous_commit=off`, so the last few hundred milliseconds
    /// of commits may be lost here and in [`TestPg::kill9_and_restart`]. A test that asserts
    /// nothing committed is lost starts with
    /// `TestPg::start_with_settings(&[("synchronous_commit", "on")])`.
    ///
    /// # Panics
    ///
    /// When the restart fails.
    pub async fn restart_immediate(&mut self) {
        self.cluster
            .restart(StopMode::Immediate)
            .await
            .expect("restart -m immediate");
    }

    /// kill -9 of the postmaster, wait for its children to exit, start again (see
    /// [`TestPg::restart_immediate`] about `synchronous_commit`).
    ///
    /// # Panics
    ///
    /// When the kill or the start fails.
    pub async fn kill9_and_restart(&mut self) {
        self.cluster.kill9().await.expect("kill -9 the postmaster");
        self.cluster.start().await.expect("start after kill -9");
    }

    /// SIGSTOP the postmaster and its children (queries and connects hang).
    ///
    /// # Panics
    ///
    /// When the server is not running.
    pub fn freeze(&mut self) {
        self.cluster.freeze().expect("SIGSTOP the server");
    }

    /// SIGCONT what [`TestPg::freeze`] stopped.
    ///
    /// # Panics
    ///
    /// When a signal fails.
    pub fn thaw(&mut self) {
        self.cluster.thaw().expect("SIGCONT the server");
    }

    /// `pg_terminate_backend` of every other backend in `pg_stat_activity` matching the SQL
    /// `predicate` (for example `application_name = 'relay-listen'`); returns how many.
    ///
    /// # Panics
    ///
    /// When the query fails (including a malformed predicate).
    pub async fn terminate_backends_where(&self, predicate: &str) -> u64 {
        let client = self.client().await;
        let sql = format!(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity \
             where pid <> pg_backend_pid() and backend_type = 'client backend' and ({predicate})"
        );
        let row = client
            .query_one(&sql, &[])
            .await
            .expect("terminate backends");
        let count: i64 = row.get(0);
        u64::try_from(count).unwrap_or(0)
    }
}

/// The error and its sources, joined like anyhow's `{:#}`.
fn anyhow_like(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
