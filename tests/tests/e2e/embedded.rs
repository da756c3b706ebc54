//! The embedded cluster (relay/src/pg/embedded.rs) and the harness's fault controls: start,
//! stop, restart on the same data, as an unprivileged user when we are root; crash recovery
//! (kill -9, immediate stop, stale postmaster.pid); freeze/thaw; terminating backends.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;
use tidewire_relay::pg::embedded::{EmbeddedConfig, EmbeddedPostgres, StopMode};
use tidewire_relay::pg::{schema, Error};
use tidewire_tests::TestPg;
use tokio_postgres::{Client, NoTls};

use crate::support::{events, publish};

fn temp_dir() -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("tidewire-embedded-")
        .tempdir()
        .expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(async move {
        // Ends with the client or the server.
        let _ = connection.await;
    });
    client
}

/// The real uid of a process, from /proc.
fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
        .expect("Uid line")
}

/// Server processes still running in `data_dir`.
fn processes_in(data_dir: &Path) -> usize {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.bytes().all(|byte| byte.is_ascii_digit()))
        })
        .filter(|entry| {
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let zombie = stat
                .rfind(')')
                .and_then(|close| stat.get(close + 2..close + 3))
                == Some("Z");
            !zombie && std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd == data_dir)
        })
        .count()
}

/// Start, stop, start again on the same data and port, restart, drop; then a new value on
/// the same directory reuses the cluster. As root the server runs as an unprivileged user.
#[tokio::test]
async fn embedded_cluster_starts_stops_and_reuses_its_data() {
    let dir = temp_dir();
    let config = EmbeddedConfig::default()
        .with_data_dir(dir.path().join("nested/pgdata"))
        .with_durable(false);
    let mut cluster = EmbeddedPostgres::launch(config.clone())
        .await
        .expect("launch");
    let data_dir = cluster.data_dir().to_path_buf();
    assert!(data_dir.join("PG_VERSION").exists());
    let port = cluster.port();
    assert!(cluster.is_running());
    assert_eq!(
        cluster.connection_string(),
        format!("postgresql://postgres@127.0.0.1:{port}/tidewire")
    );

    let client = connect(&cluster.connection_string()).await;
    let row = client
        .query_one(
            "select current_database()::text, current_setting('listen_addresses'),
                    current_setting('unix_socket_directories'), current_user::text",
            &[],
        )
        .await
        .expect("settings");
    assert_eq!(row.get::<_, String>(0), "tidewire");
    assert_eq!(row.get::<_, String>(1), "127.0.0.1");
    assert_eq!(row.get::<_, String>(2), "");
    assert_eq!(row.get::<_, String>(3), "postgres");
    let postmaster = cluster.postmaster_pid().expect("postmaster pid");
    if uid_of(std::process::id()) == 0 {
        assert_ne!(
            uid_of(u32::try_from(postmaster).expect("pid")),
            0,
            "as root, postgres runs as an unprivileged user"
        );
    }
    schema::migrate(&client).await.expect("migrate");
    publish(&client, "kept", "a", "upsert", "1")
        .await
        .expect("publish");
    drop(client);

    cluster.stop(StopMode::Fast).await.expect("stop");
    assert!(!cluster.is_running());
    assert_eq!(cluster.postmaster_pid(), None);
    assert_eq!(processes_in(&data_dir), 0);
    assert!(
        tokio_postgres::connect(&cluster.connection_string(), NoTls)
            .await
            .is_err(),
        "stopped server refuses connections"
    );
    cluster
        .stop(StopMode::Fast)
        .await
        .expect("stopping twice is fine");

    cluster.start().await.expect("start again");
    assert_eq!(cluster.port(), port, "the persisted port is reused");
    let client = connect(&cluster.connection_string()).await;
    assert_eq!(events(&client, "kept").await.len(), 1);
    drop(client);

    cluster.restart(StopMode::Fast).await.expect("restart");
    let client = connect(&cluster.connection_string()).await;
    assert_eq!(
        publish(&client, "kept", "b", "upsert", "2")
            .await
            .expect("publish"),
        2
    );
    drop(client);
    drop(cluster);
    assert_eq!(processes_in(&data_dir), 0, "drop stops the server");

    // A new owner reuses the cluster: same port, same data, no initdb.
    let cluster = EmbeddedPostgres::launch(config).await.expect("relaunch");
    assert_eq!(cluster.port(), port);
    let client = connect(&cluster.connection_string()).await;
    assert_eq!(
        schema::current_version(&client).await.expect("version"),
        Some(schema::latest_version())
    );
    assert_eq!(events(&client, "kept").await.len(), 2);
}

/// Only one owner per data directory; a server left running by a crashed owner is adopted.
#[tokio::test]
async fn data_dir_has_one_owner_and_a_left_running_server_is_adopted() {
    let dir = temp_dir();
    let config = EmbeddedConfig::default()
        .with_data_dir(dir.path().join("pgdata"))
        .with_durable(false)
        .with_stop_on_drop(None);
    let first = EmbeddedPostgres::launch(config.clone())
        .await
        .expect("launch");
    let second = EmbeddedPostgres::new(config.clone()).await;
    assert!(
        matches!(second, Err(Error::DataDirBusy { .. })),
        "{second:?}"
    );
    let pid = first.postmaster_pid().expect("pid");
    let port = first.port();
    drop(first);
    assert_eq!(
        Some(pid),
        read_pid(&dir.path().join("pgdata")),
        "left running"
    );

    let mut adopted = EmbeddedPostgres::launch(config.with_stop_on_drop(Some(StopMode::Immediate)))
        .await
        .expect("adopt");
    assert_eq!(adopted.postmaster_pid(), Some(pid));
    assert_eq!(adopted.port(), port);
    connect(&adopted.connection_string()).await;
    adopted.stop(StopMode::Fast).await.expect("stop");
    assert_eq!(processes_in(adopted.data_dir()), 0);
}

fn read_pid(data_dir: &Path) -> Option<i32> {
    std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// A postmaster killed behind our back leaves postmaster.pid (and, where PID 1 does not
/// reap, a zombie holding its PID) plus exiting backends; the next start copes.
#[tokio::test]
async fn start_after_a_crash_behind_our_back() {
    let dir = temp_dir();
    let config = EmbeddedConfig::default()
        .with_data_dir(dir.path().join("pgdata"))
        .with_durable(false)
        .with_setting("synchronous_commit", "on")
        .with_stop_on_drop(None);
    let cluster = EmbeddedPostgres::launch(config.clone())
        .await
        .expect("launch");
    let client = connect(&cluster.connection_string()).await;
    schema::migrate(&client).await.expect("migrate");
    publish(&client, "survivor", "a", "upsert", "1")
        .await
        .expect("publish");
    let pid = cluster.postmaster_pid().expect("pid");
    let data_dir = cluster.data_dir().to_path_buf();
    drop(cluster);
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert_eq!(read_pid(&data_dir), Some(pid), "stale postmaster.pid stays");

    let cluster = EmbeddedPostgres::launch(config.with_stop_on_drop(Some(StopMode::Immediate)))
        .await
        .expect("start after crash");
    assert_ne!(cluster.postmaster_pid(), Some(pid));
    let client = connect(&cluster.connection_string()).await;
    assert_eq!(
        publish(&client, "survivor", "b", "upsert", "2")
            .await
            .expect("publish"),
        2
    );
}

/// kill -9, immediate and fast restarts keep every committed event (with synchronous_commit
/// on) and the seq continues without a hole; old connections are cut.
#[tokio::test]
async fn crash_and_restart_keep_committed_events() {
    let mut pg = TestPg::start_with_settings(&[("synchronous_commit", "on")]).await;
    let client = pg.client().await;
    schema::migrate(&client).await.expect("migrate");
    assert_eq!(
        publish(&client, "log", "a", "upsert", "1")
            .await
            .expect("publish"),
        1
    );
    let before = pg.cluster().postmaster_pid().expect("pid");

    pg.kill9_and_restart().await;
    assert_ne!(pg.cluster().postmaster_pid(), Some(before));
    assert!(
        client.query_one("select 1", &[]).await.is_err(),
        "old connection is gone"
    );
    let client = pg.client().await;
    assert_eq!(
        publish(&client, "log", "b", "upsert", "2")
            .await
            .expect("publish"),
        2
    );

    pg.restart_immediate().await;
    let client = pg.client().await;
    assert_eq!(
        publish(&client, "log", "c", "upsert", "3")
            .await
            .expect("publish"),
        3
    );

    pg.restart_fast().await;
    let client = pg.client().await;
    assert_eq!(
        publish(&client, "log", "d", "upsert", "4")
            .await
            .expect("publish"),
        4
    );
    let seqs: Vec<i64> = events(&client, "log")
        .await
        .iter()
        .map(|event| event.seq)
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
}

/// While frozen, queries and new connections hang; after thaw they complete.
#[tokio::test]
async fn freeze_hangs_the_server_until_thaw() {
    let mut pg = TestPg::start().await;
    let client = pg.client().await;
    pg.freeze();
    let hung = tokio::time::timeout(
        Duration::from_millis(500),
        client.query_one("select 1", &[]),
    )
    .await;
    assert!(hung.is_err(), "query hangs while frozen");
    let connecting = tokio::time::timeout(Duration::from_millis(500), pg.try_client()).await;
    assert!(connecting.is_err(), "connect hangs while frozen");
    pg.thaw();
    let row = tokio::time::timeout(
        Duration::from_secs(10),
        client.query_one("select 41 + 1", &[]),
    )
    .await
    .expect("answers after thaw")
    .expect("query");
    assert_eq!(row.get::<_, i32>(0), 42);
}

/// terminate_backends_where cuts exactly the matching sessions.
#[tokio::test]
async fn terminate_backends_where_cuts_matching_sessions() {
    let pg = TestPg::start().await;
    let victim = connect(&format!("{}?application_name=victim", pg.url())).await;
    let bystander = pg.client().await;
    victim
        .query_one("select 1", &[])
        .await
        .expect("victim alive");
    assert_eq!(
        pg.terminate_backends_where("application_name = 'victim'")
            .await,
        1
    );
    let mut cut = false;
    for _ in 0..50 {
        if victim.query_one("select 1", &[]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(cut, "victim connection is terminated");
    bystander
        .query_one("select 1", &[])
        .await
        .expect("bystander alive");
    assert_eq!(
        pg.terminate_backends_where("application_name = 'victim'")
            .await,
        0
    );
}

/// Without PostgreSQL binaries the error says how to install them.
#[tokio::test]
async fn missing_binaries_error_says_how_to_install() {
    let dir = temp_dir();
    let config = EmbeddedConfig::default()
        .with_data_dir(dir.path().join("pgdata"))
        .with_bin_dir(dir.path());
    let error = EmbeddedPostgres::new(config)
        .await
        .expect_err("no binaries there");
    assert!(matches!(error, Error::BinariesNotFound), "{error:?}");
    assert!(
        error.to_string().contains("apt-get install postgresql"),
        "{error}"
    );
}
