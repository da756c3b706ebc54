//! Capture through logical replication end to end, against real PostgreSQL with
//! `wal_level=logical`: the same workload gives the same streams in trigger and logical
//! mode; the sequencer fails over between relays and survives crashes between commit and
//! slot confirmation without duplicates; schema changes, big transactions, TRUNCATE,
//! untracking and a lost slot behave as docs/SQL.md says.

mod equivalence;
mod failover;
mod operations;

use std::future::Future;
use std::time::{Duration, Instant};

use tidewire_relay::pg::capture::CaptureMode;
use tidewire_tests::relay::{TestRelay, TestRelayBuilder};
use tidewire_tests::TestPg;
use tokio_postgres::Client;

/// How long capture may take to catch up on a loaded 2-core machine.
pub(crate) const CATCH_UP: Duration = Duration::from_secs(60);

/// A relay builder in logical mode with a quick election.
pub(crate) fn logical(pg: &TestPg) -> TestRelayBuilder {
    TestRelay::builder(pg).options(|options| {
        options.capture = CaptureMode::Logical;
        options.capture_election_ms = 100;
    })
}

/// Polls `check` until it returns `Some`, or panics with `what` after [`CATCH_UP`].
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + CATCH_UP;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the streams starting with `prefix` hold at least `at_least` events; returns
/// how many they hold then.
pub(crate) async fn until_count(client: &Client, prefix: &str, at_least: i64) -> i64 {
    eventually(&format!("{at_least} events in {prefix}*"), || async {
        let n = count(client, prefix).await;
        (n >= at_least).then_some(n)
    })
    .await
}

/// Every event of the streams starting with `prefix`: (stream, seq, key, op, data, prior),
/// data and prior as canonical jsonb text, prior followed by ` @<prior_seq>` (the seq that
/// wrote it, which paged snapshots read records as of).
pub(crate) async fn outbox(
    client: &Client,
    prefix: &str,
) -> Vec<(String, i64, String, String, Option<String>, Option<String>)> {
    client
        .query(
            "select stream, seq, key, op, data::text, \
                    prior::text || coalesce(' @' || prior_seq, ' @none') from tidewire.events \
              where starts_with(stream, $1) order by stream, seq",
            &[&prefix],
        )
        .await
        .expect("read the outbox")
        .iter()
        .map(|row| {
            (
                row.get(0),
                row.get(1),
                row.get(2),
                row.get(3),
                row.get(4),
                row.get(5),
            )
        })
        .collect()
}

/// Every record of the streams starting with `prefix`: (stream, key, seq, data).
pub(crate) async fn records(
    client: &Client,
    prefix: &str,
) -> Vec<(String, String, i64, Option<String>)> {
    client
        .query(
            "select stream, key, seq, data::text from tidewire.records \
              where starts_with(stream, $1) order by stream, key",
            &[&prefix],
        )
        .await
        .expect("read the records")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect()
}

/// Events in streams starting with `prefix`.
pub(crate) async fn count(client: &Client, prefix: &str) -> i64 {
    client
        .query_one(
            "select count(*) from tidewire.events where starts_with(stream, $1)",
            &[&prefix],
        )
        .await
        .expect("count events")
        .get(0)
}

/// Asserts every stream starting with `prefix` is gap-free from 1 and its head matches.
pub(crate) async fn assert_gap_free(client: &Client, prefix: &str) {
    let rows = client
        .query(
            "select s.name, s.seq, count(e.seq), coalesce(min(e.seq), 0), coalesce(max(e.seq), 0) \
               from tidewire.streams as s left join tidewire.events as e on e.stream = s.name \
              where starts_with(s.name, $1) group by s.name, s.seq",
            &[&prefix],
        )
        .await
        .expect("read the heads");
    for row in rows {
        let (name, head, n, min, max): (String, i64, i64, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        assert_eq!(
            (n, min.min(1), max),
            (head, 1.min(head), head),
            "{name} is not gap-free"
        );
    }
}
