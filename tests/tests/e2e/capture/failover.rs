//! The sequencer is elected through PostgreSQL: when it dies, another relay takes over and
//! resumes from the last committed batch; a crash between a batch's commit and its
//! confirmation to the slot writes nothing twice. Clients on any relay see every event once.

use std::time::{Duration, Instant};

use serde_json::json;
use tidewire_tests::TestPg;
use tokio_postgres::Client;

use super::{assert_gap_free, count, eventually, logical, until_count};
use crate::transport::client::WsClient;
use crate::views::ViewReader;

const TABLE: &str = "
create table public.jobs (id integer primary key, grp integer not null, n integer not null);
select tidewire.track_table('public.jobs', 'fo:{grp}', 'id');
";

/// Inserts rows `from..to` on a connection of its own, one per transaction, pausing a
/// little every ten.
async fn insert(url: String, from: i32, to: i32) {
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    for id in from..to {
        client
            .execute("insert into jobs values ($1, $1 % 3, $1)", &[&id])
            .await
            .expect("insert");
        if id % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Every id in `0..rows` has exactly one upsert, and the streams are gap-free.
async fn assert_exactly_once(client: &Client, rows: i32) {
    let doubled: Vec<(String, i64)> = client
        .query(
            "select key, count(*) from tidewire.events where starts_with(stream, 'fo:') \
              group by key having count(*) <> 1",
            &[],
        )
        .await
        .expect("count per key")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert!(
        doubled.is_empty(),
        "keys not published exactly once: {doubled:?}"
    );
    assert_eq!(count(client, "fo:").await, i64::from(rows));
    assert_gap_free(client, "fo:").await;
}

#[tokio::test]
async fn another_relay_takes_over_when_the_sequencer_dies() {
    let pg = TestPg::start().await;
    let first = logical(&pg).killable().spawn().await;
    let client = pg.client().await;
    client.batch_execute(TABLE).await.expect("table");
    eventually("the first relay to lead", || async {
        first.hub().capture.snapshot().sequencer.then_some(())
    })
    .await;
    let second = logical(&pg).spawn().await;
    assert!(!second.hub().capture.snapshot().sequencer);

    // A client of the second relay follows one partition through the failover.
    insert(pg.url(), 0, 3).await;
    until_count(&client, "fo:", 3).await;
    let mut ws = WsClient::connected(second.addr()).await;
    let mut reader = ViewReader::new("fo:0", json!({"n": {"ge": 0}}));
    reader.subscribe(&mut ws).await;
    let from = reader.position.map_or(0, |(_, seq)| seq);

    let writes = tokio::spawn(insert(pg.url(), 3, 600));
    until_count(&client, "fo:", 100 + 1).await;
    first.kill();
    let killed = Instant::now();
    eventually("the second relay to lead", || async {
        second.hub().capture.snapshot().sequencer.then_some(())
    })
    .await;
    println!("failover took {:?}", killed.elapsed());
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "failover within a few seconds"
    );
    writes.await.expect("the writer");
    until_count(&client, "fo:", 600).await;
    assert_exactly_once(&client, 600).await;
    assert!(
        reader.until_equal(&mut ws, &client).await,
        "the client converges"
    );
    let expected: Vec<u64> =
        (from + 1..=u64::try_from(reader.records.len()).expect("small")).collect();
    assert_eq!(
        reader.seqs, expected,
        "the client saw every event of fo:0 once, in order"
    );
}

#[tokio::test]
async fn a_crash_between_commit_and_confirmation_writes_nothing_twice() {
    let pg = TestPg::start().await;
    let relay = logical(&pg)
        .options(|options| options.capture_crash_after_batches = 3)
        .spawn()
        .await;
    let client = pg.client().await;
    client.batch_execute(TABLE).await.expect("table");
    insert(pg.url(), 0, 400).await;
    until_count(&client, "fo:", 400).await;
    // Let any replayed batch arrive, then check nothing came twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_exactly_once(&client, 400).await;
    let snapshot = relay.hub().capture.snapshot();
    assert!(
        snapshot.elections >= 3,
        "the sequencer crashed and came back several times: {snapshot:?}"
    );
}
