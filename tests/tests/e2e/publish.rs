//! `tidewire.publish`: gap-free seq in commit order under concurrency, the NOTIFY payload
//! forms (inline, pointer, message) and their size limits, records maintenance, validation.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rand::Rng;
use serde_json::{json, Value};
use tidewire_tests::{sqlstate, Notifications, TestPg};
use tokio_postgres::SimpleQueryMessage;

use crate::support::{events, publish, records, stream_row, QUIET, WAIT};

const CONNECTIONS: usize = 32;
const TOTAL_EVENTS: i64 = 100_000;
/// Events per transaction are drawn from 1..=MAX_BATCH: the row lock is held through each
/// transaction's sleep, so transactions run one at a time and their count sets the run time.
const MAX_BATCH: i64 = 96;

/// 32 connections publish 100,000 events to one stream; every transaction sleeps a random
/// 0-2 ms between its publishes and COMMIT. The seqs must be exactly 1..=100000, each
/// transaction's seqs consecutive, commit timestamps must grow with seq, and a LISTEN client
/// must see the notifications in seq order with no skip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_is_gap_free_and_in_commit_order_under_concurrency() {
    let pg = TestPg::start_with_settings(&[("track_commit_timestamp", "on")]).await;
    let setup = pg.client().await;
    tidewire_relay::pg::schema::migrate(&setup)
        .await
        .expect("migrate");
    let mut listener = Notifications::listen(&pg.url(), &["tw:gapfree"]).await;

    let started = Instant::now();
    let next_index = Arc::new(AtomicI64::new(0));
    let mut workers = Vec::new();
    for worker in 0..CONNECTIONS {
        let client = pg.client().await;
        let next_index = Arc::clone(&next_index);
        workers.push(tokio::spawn(async move {
            let mut batches: Vec<Vec<i64>> = Vec::new();
            loop {
                let (size, sleep_micros) = {
                    let mut rng = rand::thread_rng();
                    (rng.gen_range(1..=MAX_BATCH), rng.gen_range(0..=2000))
                };
                let first = next_index.fetch_add(size, Ordering::SeqCst);
                if first >= TOTAL_EVENTS {
                    break;
                }
                let last = (first + size).min(TOTAL_EVENTS) - 1;
                // One round trip per transaction; the sleep sits between the publishes
                // (which take the stream's row lock) and COMMIT.
                let sql = format!(
                    "begin;
                     select tidewire.publish('gapfree', 'k' || (i % 1000), 'upsert',
                                             jsonb_build_object('worker', {worker}, 'i', i))
                       from generate_series({first}, {last}) as i;
                     select pg_sleep({sleep_micros} / 1000000.0);
                     commit;"
                );
                let messages = client.simple_query(&sql).await.expect("publish batch");
                let seqs: Vec<i64> = messages
                    .iter()
                    .filter_map(|message| match message {
                        SimpleQueryMessage::Row(row) => row.get(0)?.parse().ok(),
                        _ => None,
                    })
                    .collect();
                assert_eq!(seqs.len() as i64, last - first + 1, "one seq per publish");
                batches.push(seqs);
            }
            batches
        }));
    }
    let mut all_seqs = Vec::new();
    for worker in workers {
        for batch in worker.await.expect("worker") {
            // The row lock is held to COMMIT: nobody else's event lands inside a transaction.
            assert!(
                batch.windows(2).all(|pair| pair[1] == pair[0] + 1),
                "a transaction's seqs are consecutive: {batch:?}"
            );
            all_seqs.extend(batch);
        }
    }
    let publish_time = started.elapsed();
    all_seqs.sort_unstable();
    let expected: Vec<i64> = (1..=TOTAL_EVENTS).collect();
    assert!(all_seqs == expected, "seqs are exactly 1..=100000");

    let client = pg.client().await;
    assert_eq!(
        stream_row(&client, "gapfree").await.map(|row| row.1),
        Some(TOTAL_EVENTS)
    );
    let row = client
        .query_one(
            "select count(*), min(seq), max(seq),
                    count(*) filter (where next_seq is not null and next_seq <> seq + 1),
                    count(*) filter (where next_commit < commit_ts)
               from (select seq,
                            lead(seq) over (order by seq) as next_seq,
                            pg_xact_commit_timestamp(xmin) as commit_ts,
                            lead(pg_xact_commit_timestamp(xmin)) over (order by seq) as next_commit
                       from tidewire.events where stream = 'gapfree') as outbox",
            &[],
        )
        .await
        .expect("inspect the outbox");
    assert_eq!(row.get::<_, i64>(0), TOTAL_EVENTS, "outbox rows");
    assert_eq!(row.get::<_, i64>(1), 1);
    assert_eq!(row.get::<_, i64>(2), TOTAL_EVENTS);
    assert_eq!(row.get::<_, i64>(3), 0, "holes in the outbox");
    assert_eq!(
        row.get::<_, i64>(4),
        0,
        "an event with a higher seq committed earlier"
    );

    // NOTIFY is delivered in commit order: the doorbells must come in seq order, none missing.
    let mut expected_seq = 1;
    while expected_seq <= TOTAL_EVENTS {
        let notification = listener
            .recv(WAIT)
            .await
            .unwrap_or_else(|| panic!("notification for seq {expected_seq} never came"));
        let payload: Value = serde_json::from_str(notification.payload()).expect("payload is JSON");
        assert_eq!(payload["t"], "ev");
        assert_eq!(
            payload["seq"].as_i64(),
            Some(expected_seq),
            "notification out of order or skipped"
        );
        expected_seq += 1;
    }
    assert!(
        listener.recv(QUIET).await.is_none(),
        "no extra notification"
    );
    eprintln!("published {TOTAL_EVENTS} events from {CONNECTIONS} connections in {publish_time:?}");
}

/// The inline payload `tidewire.publish` builds for an upsert of the JSON string `value`.
fn inline_payload(stream: &str, epoch: i64, seq: i64, key: &str, value: &str, ts: i64) -> String {
    format!(
        r#"{{"t":"ev","stream":{},"epoch":{epoch},"seq":{seq},"key":{},"op":"upsert","data":{},"ts":{ts}}}"#,
        json!(stream),
        json!(key),
        json!(value)
    )
}

/// A JSON string value whose inline payload is exactly `target` bytes (ts has 16 digits until
/// the year 2286).
fn value_for_payload_len(epoch: i64, seq: i64, target: usize) -> String {
    let overhead = inline_payload("sizes", epoch, seq, "k", "", 1_000_000_000_000_000).len();
    "x".repeat(target - overhead)
}

/// Payloads under 8000 bytes are inline, from 8000 bytes on they are pointers (counted in
/// bytes, not characters), a 1 MiB value publishes fine, and every event is in the outbox.
#[tokio::test]
async fn notify_payload_is_inline_below_8000_bytes_else_pointer() {
    let pg = TestPg::start().await;
    let client = pg.client().await;
    let mut listener = Notifications::listen(&pg.url(), &["tw:sizes"]).await;
    let epoch: i64 = client
        .query_one("select tidewire.create_stream('sizes')", &[])
        .await
        .expect("create stream")
        .get(0);

    // seq 1: a payload of exactly 7999 bytes is sent inline, byte for byte.
    let value = value_for_payload_len(epoch, 1, 7999);
    let seq = publish(&client, "sizes", "k", "upsert", &json!(value).to_string())
        .await
        .expect("publish 7999");
    assert_eq!(seq, 1);
    let notification = listener.recv(WAIT).await.expect("notification");
    assert_eq!(notification.channel(), "tw:sizes");
    assert_eq!(notification.payload().len(), 7999);
    let payload: Value = serde_json::from_str(notification.payload()).expect("JSON");
    let ts = payload["ts"].as_i64().expect("ts");
    assert_eq!(ts.to_string().len(), 16, "ts is in microseconds");
    assert_eq!(
        notification.payload(),
        inline_payload("sizes", epoch, 1, "k", &value, ts)
    );
    let committed_micros: i64 = client
        .query_one(
            "select tidewire.micros(committed_at) from tidewire.events where stream = 'sizes' and seq = 1",
            &[],
        )
        .await
        .expect("committed_at")
        .get(0);
    assert_eq!(ts, committed_micros, "ts is committed_at");

    // seq 2: exactly 8000 bytes becomes a pointer.
    let value = value_for_payload_len(epoch, 2, 8000);
    publish(&client, "sizes", "k", "upsert", &json!(value).to_string())
        .await
        .expect("publish 8000");
    let pointer = listener.next_json(WAIT).await;
    assert_eq!(
        pointer,
        json!({"t": "ptr", "stream": "sizes", "epoch": epoch, "seq": 2})
    );

    // seq 3: 4000 two-byte characters are 8000 bytes: a pointer although under 8000 chars.
    let wide = "é".repeat(4000);
    publish(&client, "sizes", "wide", "upsert", &json!(wide).to_string())
        .await
        .expect("publish multibyte");
    assert_eq!(listener.next_json(WAIT).await["t"], "ptr");

    // seq 4..6: data of 7,999 and 8,000 bytes and of 1 MiB: pointers, stored intact.
    let mut big_values = Vec::new();
    for len in [7999, 8000, 1 << 20] {
        let text = json!("y".repeat(len - 2)).to_string();
        assert_eq!(text.len(), len);
        let seq = publish(&client, "sizes", &format!("big{len}"), "upsert", &text)
            .await
            .expect("publish big");
        let pointer = listener.next_json(WAIT).await;
        assert_eq!(
            pointer,
            json!({"t": "ptr", "stream": "sizes", "epoch": epoch, "seq": seq})
        );
        big_values.push((seq, text));
    }
    let outbox = events(&client, "sizes").await;
    assert_eq!(
        outbox.iter().map(|event| event.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    for (seq, text) in big_values {
        let stored = &outbox[usize::try_from(seq - 1).expect("seq")];
        assert_eq!(
            stored.data,
            Some(serde_json::from_str(&text).expect("JSON"))
        );
    }
    assert!(listener.recv(QUIET).await.is_none());
}

/// op 'message' notifies without storing anything or using a seq; too large is error 54000.
#[tokio::test]
async fn message_is_ephemeral_and_size_limited() {
    let pg = TestPg::start().await;
    let client = pg.client().await;
    let mut listener = Notifications::listen(&pg.url(), &["tw:chat"]).await;
    assert_eq!(
        publish(&client, "chat", "m1", "upsert", "1")
            .await
            .expect("upsert"),
        1
    );
    listener.next_json(WAIT).await;

    let seq = publish(&client, "chat", "cursor:7", "message", r#"{"x":1,"y":2}"#)
        .await
        .expect("message");
    assert_eq!(seq, 0);
    let message = listener.next_json(WAIT).await;
    assert_eq!(message["t"], "msg");
    assert_eq!(message["stream"], "chat");
    assert_eq!(message["key"], "cursor:7");
    assert_eq!(message["data"], json!({"x": 1, "y": 2}));
    assert!(message["ts"].as_i64().is_some());
    assert!(message.get("seq").is_none());

    let too_large = json!("z".repeat(8000)).to_string();
    let error = publish(&client, "chat", "big", "message", &too_large)
        .await
        .expect_err("too large");
    assert_eq!(sqlstate(&error), Some("54000"));
    let text = error
        .as_db_error()
        .map(|db| db.message().to_owned())
        .unwrap_or_default();
    assert!(text.contains("ephemeral message too large"), "{text}");

    // Nothing stored, no seq used: the next durable event is seq 2.
    assert_eq!(events(&client, "chat").await.len(), 1);
    assert_eq!(stream_row(&client, "chat").await.map(|row| row.1), Some(1));
    assert_eq!(
        publish(&client, "chat", "m2", "upsert", "2")
            .await
            .expect("upsert"),
        2
    );
    assert_eq!(listener.next_json(WAIT).await["seq"], 2);
    assert!(listener.recv(QUIET).await.is_none());
}

/// upsert replaces, patch merges into objects (and replaces non-objects), delete removes; each
/// record carries the seq that last wrote it; rolled-back publishes leave no hole.
#[tokio::test]
async fn records_follow_upsert_patch_and_delete() {
    let pg = TestPg::start().await;
    let client = pg.client().await;
    let steps = [
        ("a", "upsert", r#"{"title":"one","done":false}"#),
        ("a", "patch", r#"{"done":true,"tags":["x"]}"#),
        ("b", "patch", r#"{"fresh":1}"#),
        ("c", "upsert", r#""just text""#),
        ("c", "patch", r#"{"now":"object"}"#),
        ("d", "upsert", "1"),
        ("d", "delete", "null"),
        ("a", "patch", r#"{"title":"uno"}"#),
    ];
    for (index, (key, op, data)) in steps.iter().enumerate() {
        let seq = publish(&client, "recs", key, op, data)
            .await
            .expect("publish");
        assert_eq!(seq, index as i64 + 1);
    }
    let expected = vec![
        (
            "a".to_owned(),
            8,
            Some(json!({"title": "uno", "done": true, "tags": ["x"]})),
        ),
        ("b".to_owned(), 3, Some(json!({"fresh": 1}))),
        ("c".to_owned(), 5, Some(json!({"now": "object"}))),
    ];
    assert_eq!(records(&client, "recs").await, expected);

    // A rolled-back publish consumes nothing.
    client
        .batch_execute("begin; select tidewire.publish('recs', 'e', 'upsert', '1'); rollback;")
        .await
        .expect("rolled back publish");
    assert_eq!(
        publish(&client, "recs", "e", "upsert", "2")
            .await
            .expect("publish"),
        9
    );
    let outbox = events(&client, "recs").await;
    assert_eq!(outbox.len(), 9);
    assert_eq!(outbox[6].op, "delete");
    assert_eq!(outbox[1].data, Some(json!({"done": true, "tags": ["x"]})));
}

/// Bad stream names, keys, ops and patch data are rejected with SQLSTATE 22023 and change
/// nothing; the boundary cases that are valid are accepted.
#[tokio::test]
async fn invalid_arguments_are_rejected_with_22023() {
    let pg = TestPg::start().await;
    let client = pg.client().await;
    let long_ok = "s".repeat(60);
    let long_bad = "s".repeat(61);
    let key_ok = "k".repeat(512);
    let key_bad = "k".repeat(513);
    let wide_key_bad = "é".repeat(257);
    // (stream, key, op, data, accepted)
    let cases: Vec<(&str, &str, &str, &str, bool)> = vec![
        ("todos", "k", "upsert", "1", true),
        ("board:42/todos.v1-x_y", "k", "upsert", "1", true),
        ("_private", "k", "upsert", "1", true),
        ("9lives", "k", "upsert", "1", true),
        (&long_ok, "k", "upsert", "1", true),
        ("", "k", "upsert", "1", false),
        (&long_bad, "k", "upsert", "1", false),
        (".hidden", "k", "upsert", "1", false),
        ("-dash", "k", "upsert", "1", false),
        ("/root", "k", "upsert", "1", false),
        (":colon", "k", "upsert", "1", false),
        ("has space", "k", "upsert", "1", false),
        ("quote\"s", "k", "upsert", "1", false),
        (
            "x\";drop table tidewire.events;--",
            "k",
            "upsert",
            "1",
            false,
        ),
        ("new\nline", "k", "upsert", "1", false),
        ("tоdos", "k", "upsert", "1", false), // Cyrillic о
        ("café", "k", "upsert", "1", false),
        ("raw:orders", "k", "upsert", "1", false),
        ("raw:", "k", "upsert", "1", false),
        ("todos", "", "upsert", "1", false),
        ("todos", &key_ok, "upsert", "1", true),
        ("todos", &key_bad, "upsert", "1", false),
        ("todos", &wide_key_bad, "upsert", "1", false),
        ("todos", "k", "insert", "1", false),
        ("todos", "k", "UPSERT", "1", false),
        ("todos", "k", "patch", "[1]", false),
        ("todos", "k", "patch", "null", false),
        ("todos", "k", "patch", "{}", true),
        ("todos", "k", "delete", "null", true),
    ];
    let mut accepted_streams = HashSet::new();
    for (stream, key, op, data, accepted) in &cases {
        let result = publish(&client, stream, key, op, data).await;
        match (result, accepted) {
            (Ok(_), true) => {
                accepted_streams.insert(stream.to_string());
            }
            (Err(error), false) => {
                assert_eq!(
                    sqlstate(&error),
                    Some("22023"),
                    "case {stream:?}/{key:?}/{op:?}: {error:?}"
                );
            }
            (outcome, _) => panic!("case {stream:?}/{key:?}/{op:?}/{data}: unexpected {outcome:?}"),
        }
    }
    // NULL arguments are rejected too.
    for sql in [
        "select tidewire.publish(null, 'k', 'upsert', '1')",
        "select tidewire.publish('todos', null, 'upsert', '1')",
        "select tidewire.publish('todos', 'k', null, '1')",
    ] {
        let error = client.query_one(sql, &[]).await.expect_err(sql);
        assert_eq!(sqlstate(&error), Some("22023"), "{sql}");
    }
    let streams: Vec<String> = client
        .query("select name from tidewire.streams", &[])
        .await
        .expect("streams")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        streams.into_iter().collect::<HashSet<_>>(),
        accepted_streams
    );
}

/// A big transaction (a bulk INSERT into a tracked table plus more publishes, a savepoint
/// rolled back, SET CONSTRAINTS ALL IMMEDIATE, a drop and a re-creation) gets consecutive seqs, leaves streams.seq equal to
/// the last seq at COMMIT, and updates each stream row once instead of once per event (which
/// made such transactions quadratic).
#[tokio::test]
async fn one_big_transaction_stays_gap_free_and_updates_the_stream_row_once() {
    const ROWS: i64 = 20_000;
    let pg = TestPg::start().await;
    let client = pg.client().await;
    let mut listener = Notifications::listen(&pg.url(), &["tw:bulk"]).await;
    client
        .batch_execute(
            "create table bulk (id bigint primary key, payload text);
             select tidewire.track_table('bulk', 'bulk', 'id');
             select tidewire.publish('bulk', 'before', 'upsert', '0');
             -- Counts row versions written to tidewire.streams by UPDATE.
             create table stream_updates (n bigint not null);
             insert into stream_updates values (0);
             create function count_stream_update() returns trigger language plpgsql as $$
             begin
                 update stream_updates set n = n + 1;
                 return null;
             end $$;
             create trigger count_updates after update on tidewire.streams
                 for each row execute function count_stream_update();",
        )
        .await
        .expect("setup");
    let started = Instant::now();
    client
        .batch_execute(&format!(
            "begin;
             insert into bulk select i, 'row ' || i from generate_series(1, {ROWS}) as i;
             select tidewire.publish('bulk', 'extra', 'patch', '{{\"a\": 1}}');
             savepoint undo;
             select tidewire.publish('bulk', 'gone', 'upsert', '1');
             rollback to savepoint undo;
             select tidewire.publish('bulk', 'extra', 'patch', '{{\"b\": 2}}');
             set constraints all immediate;
             select tidewire.publish('bulk', 'late', 'upsert', '1');
             set constraints all deferred;
             select tidewire.publish('bulk', 'later', 'upsert', '1');
             select tidewire.publish('other', 'o', 'upsert', '1');
             select tidewire.publish('other', 'o', 'upsert', '2');
             select tidewire.drop_stream('other');
             select tidewire.publish('other', 'o', 'upsert', '3');
             select tidewire.publish('other', 'o', 'upsert', '4');"
        ))
        .await
        .expect("big transaction");
    let stream_updates = || async {
        client
            .query_one("select n from stream_updates", &[])
            .await
            .expect("count of stream row updates")
            .get::<_, i64>(0)
    };
    // Before COMMIT: one UPDATE per stream ('bulk', and 'other' when first created; after
    // its drop and re-creation in this transaction it needs none), not one per event; plus
    // the syncs that SET CONSTRAINTS ALL IMMEDIATE forced early (for 'extra' and 'late').
    assert_eq!(
        stream_updates().await,
        4,
        "stream rows are updated per stream, not per event"
    );
    client.batch_execute("commit").await.expect("commit");
    // At COMMIT the deferred trigger stored the final seq of 'bulk' and of 'other', once each.
    assert_eq!(stream_updates().await, 6);
    let elapsed = started.elapsed();

    let head = ROWS + 5; // 'before', the rows, two patches of 'extra', 'late', 'later'
    assert_eq!(
        stream_row(&client, "bulk").await.map(|row| row.1),
        Some(head)
    );
    let outbox = events(&client, "bulk").await;
    assert_eq!(outbox.len() as i64, head);
    assert!(outbox
        .iter()
        .enumerate()
        .all(|(index, event)| event.seq == index as i64 + 1));
    assert!(outbox.iter().all(|event| event.key != "gone"));
    let extra = records(&client, "bulk")
        .await
        .into_iter()
        .find(|record| record.0 == "extra")
        .expect("extra record");
    assert_eq!(
        (extra.1, extra.2),
        (head - 2, Some(json!({"a": 1, "b": 2})))
    );
    assert_eq!(stream_row(&client, "other").await.map(|row| row.1), Some(2));
    let other: Vec<(i64, Option<Value>)> = events(&client, "other")
        .await
        .into_iter()
        .map(|event| (event.seq, event.data))
        .collect();
    assert_eq!(other, vec![(1, Some(json!(3))), (2, Some(json!(4)))]);

    // The next transaction continues the sequence.
    assert_eq!(
        publish(&client, "bulk", "after", "upsert", "1")
            .await
            .expect("publish"),
        head + 1
    );
    for expected_seq in 1..=head + 1 {
        let payload = listener.next_json(WAIT).await;
        assert_eq!(payload["seq"].as_i64(), Some(expected_seq));
    }
    eprintln!("{ROWS} tracked rows in one transaction committed in {elapsed:?}");
}
