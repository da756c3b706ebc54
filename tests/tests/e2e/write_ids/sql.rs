//! `tidewire.publish_once` called from SQL (docs/SQL.md "Write ids"): a write id commits once
//! with its write and answers its seq afterwards, another write under it raises `TW409`,
//! messages ignore it, a rollback frees it, `drop_stream` forgets it, and a concurrent
//! duplicate waits for the first and is answered from it.

use std::time::Duration;

use tidewire_tests::{sqlstate, TestPg};
use tokio_postgres::Client;

use super::recorded;
use crate::support::events;

/// `(seq, replayed)` of `tidewire.publish_once`, or the SQLSTATE it raised.
async fn publish_once(
    sql: &Client,
    stream: &str,
    write_id: &str,
    key: &str,
    op: &str,
    data: &str,
) -> Result<(i64, bool), String> {
    sql.query_one(
        "select seq, replayed from tidewire.publish_once($1, $2, $3, $4, $5::text::jsonb)",
        &[&stream, &write_id, &key, &op, &data],
    )
    .await
    .map(|row| (row.get(0), row.get(1)))
    .map_err(|error| sqlstate(&error).unwrap_or("?").to_owned())
}

#[tokio::test]
async fn publish_once_answers_a_write_id_it_has_seen() {
    let pg = TestPg::start().await;
    let sql = pg.client().await;
    let once = |write_id: &'static str, data: &'static str| {
        publish_once(&sql, "s", write_id, "k", "upsert", data)
    };
    assert_eq!(once("w1", r#"{"a": 1, "b": 2}"#).await, Ok((1, false)));
    assert_eq!(once("w1", r#"{"a": 1, "b": 2}"#).await, Ok((1, true)));
    // The fingerprint is of the jsonb value: key order and spacing do not matter.
    assert_eq!(once("w1", r#"{"b":2,"a":1}"#).await, Ok((1, true)));
    assert_eq!(once("w1", r#"{"a": 1}"#).await, Err("TW409".into()));
    assert_eq!(
        publish_once(&sql, "s", "w1", "k", "patch", r#"{"a": 1, "b": 2}"#).await,
        Err("TW409".into()),
        "another op is another write"
    );
    assert_eq!(once("w2", "1").await, Ok((2, false)));
    assert_eq!(once("bad id", "1").await, Err("22023".into()));
    assert_eq!(
        publish_once(&sql, "s", "w3", "k", "patch", "[1]").await,
        Err("22023".into()),
        "publish's own checks still apply"
    );
    assert_eq!(recorded(&sql, "s", "w3").await, None);

    // Messages: no seq, no row, published every time.
    for _ in 0..2 {
        assert_eq!(
            publish_once(&sql, "s", "w4", "k", "message", "1").await,
            Ok((0, false))
        );
    }
    assert_eq!(recorded(&sql, "s", "w4").await, None);

    // A rolled back write takes its write id with it.
    sql.batch_execute(
        "begin; select * from tidewire.publish_once('s', 'w5', 'k', 'delete', null); rollback;",
    )
    .await
    .expect("publish, then roll back");
    assert_eq!(once("w5", "5").await, Ok((3, false)));
    assert_eq!(events(&sql, "s").await.len(), 3);

    // Dropping the stream forgets its write ids: the next life of the stream starts over.
    sql.execute("select tidewire.drop_stream('s')", &[])
        .await
        .expect("drop");
    assert_eq!(recorded(&sql, "s", "w1").await, None);
    assert_eq!(once("w1", r#"{"a": 1}"#).await, Ok((1, false)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_duplicate_waits_and_is_answered_from_the_first() {
    let pg = TestPg::start().await;
    let first = pg.client().await;
    let second = pg.client().await;
    first.batch_execute("begin").await.expect("begin");
    assert_eq!(
        publish_once(&first, "c", "dup", "k", "upsert", "1").await,
        Ok((1, false))
    );
    let waiting =
        tokio::spawn(async move { publish_once(&second, "c", "dup", "k", "upsert", "1").await });
    // The duplicate queues on the stream's lock until the first transaction ends.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the duplicate did not wait");
    first.batch_execute("commit").await.expect("commit");
    let answer = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the duplicate is answered")
        .expect("joins");
    assert_eq!(answer, Ok((1, true)));
    assert_eq!(events(&first, "c").await.len(), 1);
}
