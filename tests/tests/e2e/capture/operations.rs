//! What an operator meets in logical mode: schema changes followed or refused until fixed,
//! a transaction bigger than any batch, untracking, a lost slot (new epochs, nothing silently
//! missing), the way back to triggers, and `tidewire.publish` keeping its contract.

use tidewire_relay::pg::capture::CaptureMode;
use tidewire_tests::TestPg;
use tokio_postgres::Client;

use super::{assert_gap_free, count, eventually, logical, records, until_count};

async fn last_data(client: &Client, stream: &str) -> serde_json::Value {
    let text: String = client
        .query_one(
            "select data::text from tidewire.events where stream = $1 order by seq desc limit 1",
            &[&stream],
        )
        .await
        .expect("the last event")
        .get(0);
    serde_json::from_str(&text).expect("JSON")
}

#[tokio::test]
async fn schema_changes_are_followed_or_halt_capture_until_fixed() {
    let pg = TestPg::start().await;
    let relay = logical(&pg).spawn().await;
    let client = pg.client().await;
    client
        .batch_execute(
            "create table public.sc (id integer primary key, a integer, b text);
             select tidewire.track_table('public.sc', 'sc', 'id');
             insert into sc values (1, 1, 'one');",
        )
        .await
        .expect("setup");
    assert_eq!(until_count(&client, "sc", 1).await, 1, "the first event");

    client
        .batch_execute("alter table sc add column c boolean default true; insert into sc values (2, 2, 'two');")
        .await
        .expect("add a column");
    assert_eq!(until_count(&client, "sc", 2).await, 2, "the added column");
    assert_eq!(
        last_data(&client, "sc").await,
        serde_json::json!({"id": 2, "a": 2, "b": "two", "c": true})
    );

    client
        .batch_execute("alter table sc drop column b; alter table sc alter column a type text; update sc set a = 'x' where id = 1;")
        .await
        .expect("drop a column, change a type");
    assert_eq!(until_count(&client, "sc", 3).await, 3, "the changed row");
    assert_eq!(
        last_data(&client, "sc").await,
        serde_json::json!({"id": 1, "a": "x", "c": true})
    );

    // Renaming the key column breaks the definition: capture halts with a clear reason
    // instead of publishing rows it cannot address.
    client
        .batch_execute(
            "alter table sc rename column id to uid; insert into sc values (3, 'y', false);",
        )
        .await
        .expect("rename the key");
    let reason = eventually("capture to halt", || async {
        relay.hub().capture.snapshot().halted
    })
    .await;
    assert!(reason.contains("track_table"), "{reason}");
    let ready = http_text(&relay, "/readyz").await;
    assert!(ready.contains("HALTED"), "{ready}");
    assert_eq!(count(&client, "sc").await, 3);

    // Fixing the definition resumes capture; the row written meanwhile is not lost.
    client
        .batch_execute("select tidewire.track_table('public.sc', 'sc', 'uid')")
        .await
        .expect("re-track");
    assert_eq!(until_count(&client, "sc", 4).await, 4, "capture to resume");
    assert_eq!(
        last_data(&client, "sc").await,
        serde_json::json!({"uid": 3, "a": "y", "c": false})
    );
    eventually("the halt to clear", || async {
        relay
            .hub()
            .capture
            .snapshot()
            .halted
            .is_none()
            .then_some(())
    })
    .await;
    assert_gap_free(&client, "sc").await;
}

/// The body of `GET path` on `relay`, as text.
async fn http_text(relay: &tidewire_tests::relay::TestRelay, path: &str) -> String {
    use http_body_util::BodyExt;
    let (_, _, body) = crate::transport::client::get(relay.addr(), path, &[]).await;
    let bytes = body.collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn a_transaction_bigger_than_a_chunk_is_written_whole_and_in_order() {
    let pg = TestPg::start().await;
    let relay = logical(&pg)
        .options(|options| {
            options.capture_chunk_rows = 1000;
            options.capture_batch_rows = 5000;
        })
        .spawn()
        .await;
    let client = pg.client().await;
    client
        .batch_execute(
            "create table public.big (id integer primary key, v text);
             select tidewire.track_table('public.big', 'big', 'id');
             insert into big select g, 'v' || g from generate_series(1, 60000) as g;",
        )
        .await
        .expect("a big transaction");
    until_count(&client, "big", 60_000).await;
    assert_eq!(count(&client, "big").await, 60_000);
    assert_gap_free(&client, "big").await;
    // In key order, as the rows were inserted.
    let out_of_order: i64 = client
        .query_one(
            "select count(*) from tidewire.events where stream = 'big' and key::int <> seq",
            &[],
        )
        .await
        .expect("order")
        .get(0);
    assert_eq!(out_of_order, 0);
    assert_eq!(relay.hub().capture.snapshot().transactions, 1);
}

#[tokio::test]
async fn untracking_takes_the_table_out_of_the_publication() {
    let pg = TestPg::start().await;
    let _relay = logical(&pg).spawn().await;
    let client = pg.client().await;
    client
        .batch_execute(
            "create table public.u (id integer primary key);
             select tidewire.track_table('public.u', 'u', 'id');
             insert into u values (1);",
        )
        .await
        .expect("setup");
    async fn published(client: &Client) -> i64 {
        client
            .query_one("select count(*) from pg_publication_tables where pubname = 'tidewire' and tablename = 'u'", &[])
            .await
            .expect("publication")
            .get::<_, i64>(0)
    }
    assert_eq!(published(&client).await, 1);
    assert_eq!(until_count(&client, "u", 1).await, 1, "the first event");
    let untracked: bool = client
        .query_one("select tidewire.untrack_table('public.u')", &[])
        .await
        .expect("untrack")
        .get(0);
    assert!(untracked);
    assert_eq!(published(&client).await, 0);
    client.batch_execute("insert into u values (2); select tidewire.track_table('public.u', 'u', 'id'); insert into u values (3);").await.expect("more");
    assert_eq!(
        until_count(&client, "u", 2).await,
        2,
        "the row after tracking again"
    );
    let keys: Vec<String> = records(&client, "u")
        .await
        .into_iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(
        keys,
        ["1", "3"],
        "the row written while untracked is not published"
    );
}

#[tokio::test]
async fn a_lost_slot_starts_tracked_streams_over_in_a_new_epoch() {
    let pg = TestPg::start().await;
    let relay = logical(&pg).spawn().await;
    let client = pg.client().await;
    client
        .batch_execute(
            "create table public.l (id integer primary key, v text);
             select tidewire.track_table('public.l', 'lost', 'id');
             insert into l values (1, 'a'), (2, 'b'), (3, 'c');",
        )
        .await
        .expect("setup");
    assert_eq!(until_count(&client, "lost", 3).await, 3, "the first events");
    let before: i64 = client
        .query_one(
            "select epoch from tidewire.streams where name = 'lost'",
            &[],
        )
        .await
        .expect("epoch")
        .get(0);
    relay.shutdown().await;
    // The walsender of the stopped relay ends a moment after its connection closes.
    eventually("the slot to be released", || async {
        let active: bool = client
            .query_one(
                "select active from pg_replication_slots where slot_name = 'tidewire'",
                &[],
            )
            .await
            .expect("slot")
            .get(0);
        (!active).then_some(())
    })
    .await;
    // While no relay runs, the slot is dropped (as an invalidation would) and rows change.
    client
        .batch_execute(
            "select pg_drop_replication_slot('tidewire');
             delete from l where id = 2; update l set v = 'C' where id = 3; insert into l values (4, 'd');",
        )
        .await
        .expect("changes without a slot");
    let relay = logical(&pg).spawn().await;
    eventually("a new epoch", || async {
        let after = client
            .query_opt(
                "select epoch from tidewire.streams where name = 'lost'",
                &[],
            )
            .await
            .expect("epoch")
            .map(|row| row.get::<_, i64>(0));
        after.filter(|after| *after != before).map(|_| ())
    })
    .await;
    let rows: Vec<(String, Option<String>)> = records(&client, "lost")
        .await
        .into_iter()
        .map(|(_, key, _, data)| (key, data))
        .collect();
    assert_eq!(
        rows,
        [
            ("1".to_owned(), Some(r#"{"v": "a", "id": 1}"#.to_owned())),
            ("3".to_owned(), Some(r#"{"v": "C", "id": 3}"#.to_owned())),
            ("4".to_owned(), Some(r#"{"v": "d", "id": 4}"#.to_owned())),
        ]
    );
    assert_gap_free(&client, "lost").await;
    // Capture goes on from the new slot.
    client
        .batch_execute("insert into l values (5, 'e')")
        .await
        .expect("insert");
    eventually("capture after the resync", || async {
        (records(&client, "lost").await.len() == 4).then_some(())
    })
    .await;
    drop(relay);
}

#[tokio::test]
async fn switching_back_to_triggers_drains_the_slot_first() {
    let pg = TestPg::start().await;
    let relay = logical(&pg).spawn().await;
    let client = pg.client().await;
    client
        .batch_execute(
            "create table public.sw (id integer primary key);
             select tidewire.track_table('public.sw', 'sw', 'id');",
        )
        .await
        .expect("setup");
    relay.shutdown().await;
    // Written in logical mode with no sequencer: only the WAL has these.
    client
        .batch_execute("insert into sw select generate_series(1, 50)")
        .await
        .expect("insert");
    let relay = tidewire_tests::relay::TestRelay::builder(&pg)
        .options(|options| options.capture = CaptureMode::Trigger)
        .spawn()
        .await;
    assert_eq!(until_count(&client, "sw", 50).await, 50, "the drain");
    eventually("the slot to go", || async {
        let slots: i64 = client
            .query_one(
                "select count(*) from pg_replication_slots where slot_name = 'tidewire'",
                &[],
            )
            .await
            .expect("slots")
            .get(0);
        (slots == 0).then_some(())
    })
    .await;
    // Triggers again: a write is in the outbox when it commits.
    client
        .batch_execute("insert into sw values (51)")
        .await
        .expect("insert");
    assert_eq!(count(&client, "sw").await, 51);
    assert_gap_free(&client, "sw").await;
    assert!(!relay.hub().capture.snapshot().logical);
}

#[tokio::test]
async fn publish_keeps_its_contract_in_logical_mode() {
    let pg = TestPg::start().await;
    let relay = logical(&pg).spawn().await;
    assert!(relay.hub().capture.snapshot().logical);
    let client = pg.client().await;
    let seq: i64 = client
        .query_one(
            "select tidewire.publish('pub', 'k', 'upsert', '{\"a\": 1}')",
            &[],
        )
        .await
        .expect("publish")
        .get(0);
    assert_eq!(seq, 1);
    assert_eq!(
        count(&client, "pub").await,
        1,
        "the event is in the outbox at commit"
    );
}

#[tokio::test]
async fn the_slot_is_watched_and_stale_slots_are_reported() {
    let pg = TestPg::start().await;
    let relay = logical(&pg).spawn().await;
    let client = pg.client().await;
    client
        .batch_execute(
            "create table public.w (id integer primary key);
             select tidewire.track_table('public.w', 'w', 'id');
             insert into w select generate_series(1, 1000);",
        )
        .await
        .expect("setup");
    client
        .batch_execute(
            "select pg_create_logical_replication_slot('tidewire_left_behind', 'pgoutput')",
        )
        .await
        .expect("a slot nobody reads");
    assert_eq!(until_count(&client, "w", 1000).await, 1000, "the rows");
    // Once caught up, the sequencer's confirmations bring the slot's lag down.
    eventually("a small slot lag", || async {
        let snapshot = relay.hub().capture.snapshot();
        (snapshot.stale_slots == 1 && snapshot.lag_bytes < 64 * 1024).then_some(())
    })
    .await;
    let text = http_text(&relay, "/metrics").await;
    for line in [
        "tidewire_capture_logical 1",
        "tidewire_capture_sequencer 1",
        "tidewire_capture_stale_slots 1",
        "tidewire_capture_halted 0",
    ] {
        assert!(text.lines().any(|l| l == line), "/metrics lacks {line:?}");
    }
    assert!(text.contains("tidewire_capture_slot_lag_bytes "), "{text}");
    let ready = http_text(&relay, "/readyz").await;
    assert!(ready.contains("1 stale slot(s)"), "{ready}");
}
