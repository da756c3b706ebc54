//! Migrations: idempotent, safe when several relays migrate at once, transactional.

use tidewire_relay::pg::schema::{self, MIGRATIONS};
use tidewire_relay::pg::Error;
use tidewire_tests::TestPg;

use crate::support::publish;

async fn object_counts(client: &tokio_postgres::Client) -> (i64, i64, i64) {
    let row = client
        .query_one(
            "select (select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace
                      where n.nspname = 'tidewire'),
                    (select count(*) from pg_proc p join pg_namespace n on n.oid = p.pronamespace
                      where n.nspname = 'tidewire'),
                    (select count(*) from tidewire.schema_version)",
            &[],
        )
        .await
        .expect("count schema objects");
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn migrate_twice_is_idempotent() {
    let pg = TestPg::start_unmigrated().await;
    let client = pg.client().await;
    assert_eq!(
        schema::current_version(&client).await.expect("version"),
        None
    );

    let first = schema::migrate(&client).await.expect("first migration");
    assert_eq!(first, schema::latest_version());
    let after_first = object_counts(&client).await;
    assert_eq!(after_first.2, MIGRATIONS.len() as i64);

    let second = schema::migrate(&client).await.expect("second migration");
    assert_eq!(second, first);
    assert_eq!(object_counts(&client).await, after_first);
    assert_eq!(
        schema::current_version(&client).await.expect("version"),
        Some(schema::latest_version())
    );
    // The installed API works.
    assert_eq!(
        publish(&client, "smoke", "k", "upsert", "1")
            .await
            .expect("publish"),
        1
    );
}

#[tokio::test]
async fn four_concurrent_migrators_are_safe() {
    let pg = TestPg::start_unmigrated().await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(pg.client().await);
    }
    let results = futures_util::future::join_all(clients.iter().map(schema::migrate)).await;
    for result in results {
        assert_eq!(
            result.expect("concurrent migration"),
            schema::latest_version()
        );
    }
    let client = &clients[0];
    let rows = client
        .query(
            "select version from tidewire.schema_version order by version",
            &[],
        )
        .await
        .expect("versions");
    let versions: Vec<i32> = rows.iter().map(|row| row.get(0)).collect();
    let expected: Vec<i32> = (1..=MIGRATIONS.len() as i32).collect();
    assert_eq!(versions, expected);
}

#[tokio::test]
async fn failed_migration_rolls_back_everything() {
    let pg = TestPg::start_unmigrated().await;
    let client = pg.client().await;
    // A foreign object where migration 1 wants to create a table.
    client
        .batch_execute("create schema tidewire; create table tidewire.events (x int);")
        .await
        .expect("sabotage");
    let error = schema::migrate(&client)
        .await
        .expect_err("migration must fail");
    match &error {
        Error::Migration { version, .. } => assert_eq!(*version, 1),
        other => panic!("expected a migration error, got {other:?}"),
    }
    assert_eq!(error.sqlstate().map(|code| code.code()), Some("42P07"));
    // Nothing of the failed run remains: no version table, no streams table.
    let row = client
        .query_one(
            "select to_regclass('tidewire.schema_version') is null
                and to_regclass('tidewire.streams') is null",
            &[],
        )
        .await
        .expect("inspect");
    assert!(row.get::<_, bool>(0));
    // And the client is usable (not stuck in an aborted transaction).
    client
        .batch_execute("drop table tidewire.events")
        .await
        .expect("cleanup");
    assert_eq!(
        schema::migrate(&client).await.expect("migrate"),
        schema::latest_version()
    );
}

/// Every SQL function has one current definition, in `sql/functions/`: each function of the
/// schema is defined there exactly once, and a database holding an older definition (as one
/// migrated by an older relay does) gets the current one on the next migration run.
#[tokio::test]
async fn functions_have_one_definition_and_are_reapplied() {
    let pg = TestPg::start_unmigrated().await;
    let client = pg.client().await;
    schema::migrate(&client).await.expect("migrate");
    let rows = client
        .query(
            "select p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace
              where n.nspname = 'tidewire' order by 1",
            &[],
        )
        .await
        .expect("functions");
    let sources: String = schema::FUNCTIONS.iter().map(|file| file.sql).collect();
    for row in &rows {
        let name: String = row.get(0);
        let definitions = sources
            .matches(&format!("create or replace function tidewire.{name}("))
            .count();
        assert_eq!(
            definitions, 1,
            "tidewire.{name} is defined {definitions} times"
        );
    }
    for migration in MIGRATIONS {
        assert!(
            !migration.sql.contains("create function")
                && !migration.sql.contains("or replace function"),
            "{} defines a function; functions live in sql/functions/",
            migration.name
        );
    }

    // An older definition (here: one that accepts any key) is replaced on the next run.
    client
        .batch_execute(
            "create or replace function tidewire.check_key(key text) returns text
             language plpgsql immutable as $$ begin return key; end $$;",
        )
        .await
        .expect("an older definition");
    assert!(publish(&client, "s", "", "upsert", "1").await.is_ok());
    schema::migrate(&client).await.expect("migrate again");
    let refused = publish(&client, "s", "", "upsert", "1").await;
    assert!(
        refused.is_err(),
        "the current check_key refuses an empty key"
    );
}
