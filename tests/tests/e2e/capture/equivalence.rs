//! One workload, two capture modes, identical streams: inserts, updates, key changes, moves
//! between partition streams, deletes, updates of left-out columns only, a TRUNCATE, one big
//! transaction and small ones from concurrent writers. Each stream is written by one writer,
//! so its order is the same in both runs; keys, ops, data, pre-images and seqs must match.

use tidewire_tests::relay::TestRelay;
use tidewire_tests::TestPg;

use super::{assert_gap_free, count, logical, outbox, records, until_count};

const SCHEMA: &str = "
create table public.items (
    id integer primary key,
    grp integer not null,
    title text not null,
    secret text,
    n numeric,
    tags text[],
    at timestamptz,
    meta jsonb
);
select tidewire.track_table('public.items', 'eq:{grp}', 'id', exclude => array['secret']);
create table public.notes (id text primary key, body jsonb, score float8);
select tidewire.track_table('public.notes', 'eq-notes', 'id');
create table public.bulk (id integer primary key, title text, n integer, meta jsonb);
select tidewire.track_table('public.bulk', 'eq-bulk', 'id');
create table public.parts (id integer primary key, p integer not null, v text);
select tidewire.track_table('public.parts', 'eq-parts:{p}', 'id', columns => array['id', 'p']);
";

/// Writer `w`'s part of the workload: small transactions on streams eq:w and eq:(w+10).
async fn writer(pg: &TestPg, w: i32) {
    let client = pg.client().await;
    for i in 0..40 {
        let id = w * 1000 + i;
        client
            .execute(
                "insert into items values ($1::int, $2::int, 'item ' || $1::int, 'hidden', $3::int::numeric / 4, \
                 array['t' || $3::int, 'x'], timestamptz '2026-01-02 03:04:05.678+00' + $3::int * interval '1 hour', \
                 jsonb_build_object('i', $3::int, 'odd', $3::int % 2 = 1))",
                &[&id, &w, &i],
            )
            .await
            .expect("insert");
        if i % 3 == 0 {
            client
                .execute(
                    "update items set title = title || '!' where id = $1",
                    &[&id],
                )
                .await
                .expect("update");
        }
        if i % 4 == 1 {
            // A move to the writer's other stream, in a transaction with another change.
            client
                .batch_execute(&format!(
                    "begin; update items set grp = {} where id = {}; update items set n = n + 1 where id = {}; commit",
                    w + 10,
                    id - 1,
                    id
                ))
                .await
                .expect("move");
        }
        if i % 5 == 2 {
            client
                .execute("delete from items where id = $1", &[&(id - 2)])
                .await
                .expect("delete");
        }
        if i % 7 == 3 {
            // Only a left-out column: publishes nothing in either mode.
            client
                .execute("update items set secret = 'changed' where id = $1", &[&id])
                .await
                .expect("update the secret");
        }
        if i % 11 == 4 {
            client
                .execute("update items set id = id + 500 where id = $1", &[&id])
                .await
                .expect("change the key");
        }
    }
}

async fn workload(pg: &TestPg) {
    let client = pg.client().await;
    client.batch_execute(SCHEMA).await.expect("schema");
    let writers: Vec<_> = (0..4).map(|w| writer(pg, w)).collect();
    futures_util::future::join_all(writers).await;
    // One big transaction (chunked by the sequencer) with multi-row statements, on a table
    // of its own so that both runs scan its rows in the same physical order.
    client
        .batch_execute(
            "begin;
             insert into bulk select g, 'bulk ' || g, g, jsonb_build_object('g', g)
                    from generate_series(1, 3000) as g;
             update bulk set title = upper(title) where id % 2 = 0;
             delete from bulk where id % 7 = 0;
             commit;",
        )
        .await
        .expect("the big transaction");
    client
        .batch_execute(
            "insert into notes values ('a', '{\"x\": [1, 2]}', 1.5), ('b', null, 'NaN'), ('c', '\"s\"', 1e300);
             update notes set score = 'Infinity' where id = 'a';
             truncate notes;
             insert into notes values ('d', '{}', 0);",
        )
        .await
        .expect("notes");
    client
        .batch_execute(
            "insert into parts select g, g % 3, 'v' from generate_series(1, 30) as g;
             update parts set v = 'w' where id < 10;
             update parts set p = 5 where id = 1;
             truncate parts;
             insert into parts values (7, 1, 'again');",
        )
        .await
        .expect("parts");
}

#[tokio::test]
async fn the_same_workload_gives_the_same_streams_in_both_modes() {
    let trigger_pg = TestPg::start().await;
    let trigger_relay = TestRelay::spawn(&trigger_pg).await;
    let logical_pg = TestPg::start().await;
    let logical_relay = logical(&logical_pg)
        .options(|options| options.capture_chunk_rows = 500)
        .spawn()
        .await;
    assert!(!trigger_relay.hub().capture.snapshot().logical);

    workload(&trigger_pg).await;
    workload(&logical_pg).await;

    let trigger = trigger_pg.client().await;
    let logical_client = logical_pg.client().await;
    // Logical mode really ran: no trigger on the tables, and the sequencer wrote.
    let triggers: i64 = logical_client
        .query_one(
            "select count(*) from pg_trigger where tgname like 'tidewire_track%'",
            &[],
        )
        .await
        .expect("count triggers")
        .get(0);
    assert_eq!(triggers, 0, "logical mode must not install triggers");
    let expected = count(&trigger, "eq").await;
    assert!(expected > 3000, "the workload published {expected} events");
    until_count(&logical_client, "eq", expected).await;
    let snapshot = logical_relay.hub().capture.snapshot();
    assert!(snapshot.logical && snapshot.sequencer, "{snapshot:?}");
    assert_eq!(snapshot.events, u64::try_from(expected).expect("positive"));

    let (want, got) = (
        outbox(&trigger, "eq").await,
        outbox(&logical_client, "eq").await,
    );
    for (index, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(w, g, "event {index} differs (trigger, logical)");
    }
    assert_eq!(want.len(), got.len());
    assert_eq!(
        records(&trigger, "eq").await,
        records(&logical_client, "eq").await
    );
    assert_gap_free(&logical_client, "eq").await;
    // Nothing more arrives later (no duplicate from a replayed batch).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(count(&logical_client, "eq").await, expected);
}
