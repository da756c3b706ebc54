//! Retention: trim by count and by age keeps a contiguous window and moves min_seq; trim_all
//! applies the defaults (10000 events, 7 days).

use tidewire_tests::{sqlstate, TestPg};

use crate::support::{events, publish, stream_row};

async fn trim(client: &tokio_postgres::Client, stream: &str) -> i64 {
    client
        .query_one("select tidewire.trim($1)", &[&stream])
        .await
        .expect("trim")
        .get(0)
}

#[tokio::test]
async fn trim_by_count_and_age_moves_min_seq() {
    let pg = TestPg::start().await;
    let client = pg.client().await;

    // By count: keep the last 5 of 12.
    client
        .batch_execute("select tidewire.set_retention('logs', 5, null)")
        .await
        .expect("set retention");
    for index in 1..=12 {
        publish(
            &client,
            "logs",
            &format!("k{}", index % 3),
            "upsert",
            &index.to_string(),
        )
        .await
        .expect("publish");
    }
    assert_eq!(trim(&client, "logs").await, 7);
    assert_eq!(
        stream_row(&client, "logs").await.map(|row| (row.1, row.2)),
        Some((12, 7))
    );
    let kept: Vec<i64> = events(&client, "logs")
        .await
        .iter()
        .map(|event| event.seq)
        .collect();
    assert_eq!(kept, vec![8, 9, 10, 11, 12]);
    assert_eq!(trim(&client, "logs").await, 0, "trim is idempotent");
    // Records are not history: every key keeps its latest value.
    let records: i64 = client
        .query_one(
            "select count(*) from tidewire.records where stream = 'logs'",
            &[],
        )
        .await
        .expect("records")
        .get(0);
    assert_eq!(records, 3);

    // By age: events older than max_age go even when the count limit would keep them.
    client
        .batch_execute(
            "select tidewire.set_retention('logs', 100, '1 hour');
             update tidewire.events set committed_at = now() - interval '2 hours'
              where stream = 'logs' and seq <= 10;",
        )
        .await
        .expect("age events");
    assert_eq!(trim(&client, "logs").await, 3);
    assert_eq!(stream_row(&client, "logs").await.map(|row| row.2), Some(10));
    let kept: Vec<i64> = events(&client, "logs")
        .await
        .iter()
        .map(|event| event.seq)
        .collect();
    assert_eq!(kept, vec![11, 12]);

    // Everything aged out: min_seq reaches the head, a client at the head can still resume.
    client
        .batch_execute(
            "update tidewire.events set committed_at = now() - interval '2 hours' where stream = 'logs';",
        )
        .await
        .expect("age all");
    assert_eq!(trim(&client, "logs").await, 2);
    assert_eq!(
        stream_row(&client, "logs").await.map(|row| (row.1, row.2)),
        Some((12, 12))
    );
    assert_eq!(
        publish(&client, "logs", "k", "upsert", "13")
            .await
            .expect("publish"),
        13
    );

    // Bad retention values and unknown streams.
    for sql in [
        "select tidewire.set_retention('logs', -1, null)",
        "select tidewire.set_retention('logs', null, '-1 day')",
        "select tidewire.set_retention('raw:logs', 1, null)",
    ] {
        let error = client.query_one(sql, &[]).await.expect_err(sql);
        assert_eq!(sqlstate(&error), Some("22023"), "{sql}");
    }
    assert_eq!(trim(&client, "never-published").await, 0);
}

#[tokio::test]
async fn trim_all_applies_the_defaults() {
    let pg = TestPg::start().await;
    let client = pg.client().await;
    client
        .batch_execute(
            "select tidewire.publish('busy', 'k' || (i % 10), 'upsert', to_jsonb(i))
               from generate_series(1, 10005) as i;
             select tidewire.publish('old', 'k', 'upsert', to_jsonb(i)) from generate_series(1, 4) as i;
             update tidewire.events set committed_at = now() - interval '8 days'
              where stream = 'old' and seq <= 3;
             select tidewire.publish('quiet', 'k', 'upsert', '1');",
        )
        .await
        .expect("fill streams");
    let deleted: i64 = client
        .query_one("select tidewire.trim_all()", &[])
        .await
        .expect("trim_all")
        .get(0);
    assert_eq!(deleted, 5 + 3);
    assert_eq!(stream_row(&client, "busy").await.map(|row| row.2), Some(5));
    assert_eq!(stream_row(&client, "old").await.map(|row| row.2), Some(3));
    assert_eq!(stream_row(&client, "quiet").await.map(|row| row.2), Some(0));
    let busy: (i64, i64, i64) = {
        let row = client
            .query_one(
                "select count(*), min(seq), max(seq) from tidewire.events where stream = 'busy'",
                &[],
            )
            .await
            .expect("busy");
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!(busy, (10_000, 6, 10_005));
    let deleted_again: i64 = client
        .query_one("select tidewire.trim_all()", &[])
        .await
        .expect("trim_all again")
        .get(0);
    assert_eq!(deleted_again, 0);
}
