//! The native client (`tidewire_client`) against a real relay and PostgreSQL:
//! publish/subscribe round trip, a live collection converging under concurrent writers, and
//! resuming without loss or duplicates when the relay is killed and restarted on the same
//! port and database.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tidewire_client::{
    BackoffConfig, Client, ClientConfig, ClientError, SubscribeOptions, Subscription,
    SubscriptionEvent,
};
use tidewire_shared::{ErrorCode, Snapshot};
use tidewire_tests::relay::TestRelay;
use tidewire_tests::TestPg;
use tokio::task::JoinHandle;

use crate::support::publish;

/// Generous bound for anything awaited on a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(30);

fn config(addr: SocketAddr) -> ClientConfig {
    ClientConfig {
        reconnect: BackoffConfig {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
            max_attempts: None,
        },
        request_timeout: WAIT,
        ..ClientConfig::new(format!("ws://{addr}"))
    }
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The next subscription event other than advisories.
async fn next_event(subscription: &mut Subscription) -> SubscriptionEvent {
    loop {
        let event = within("a subscription event", subscription.next())
            .await
            .expect("the subscription is open");
        if !matches!(event, SubscriptionEvent::Advisory(_)) {
            return event;
        }
    }
}

/// Waits until the subscription is live; returns the snapshot it started from, if any.
async fn until_live(subscription: &mut Subscription) -> Option<Snapshot> {
    let mut snapshot = None;
    loop {
        match next_event(subscription).await {
            SubscriptionEvent::Snapshot(loaded) => snapshot = Some(loaded),
            SubscriptionEvent::Live { .. } => return snapshot,
            other => panic!("unexpected before live: {other:?}"),
        }
    }
}

/// `key -> (seq, value)` of a snapshot, for order-independent comparison.
fn by_key(snapshot: &Snapshot) -> BTreeMap<String, (u64, Value)> {
    snapshot
        .records
        .iter()
        .map(|record| (record.key.clone(), (record.seq, record.data.clone())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_and_publish_round_trip() {
    let pg = TestPg::start().await;
    let relay = TestRelay::spawn(&pg).await;
    let addr = relay.addr();
    let client = within("connect", Client::connect(config(addr)))
        .await
        .expect("connects");

    let mut todos = client
        .subscribe("todos", SubscribeOptions::default())
        .await
        .expect("subscribes");
    let snapshot = until_live(&mut todos)
        .await
        .expect("a fresh subscription starts with a snapshot");
    assert!(snapshot.records.is_empty());

    let first = client
        .upsert("todos", "a", json!({"title": "milk", "done": false}))
        .await
        .expect("upsert acked");
    let second = client
        .patch("todos", "a", json!({"done": true}))
        .await
        .expect("patch acked");
    let third = client.delete("todos", "a").await.expect("delete acked");
    assert_eq!((second, third), (first + 1, first + 2));
    let mut seen = Vec::new();
    while seen.len() < 3 {
        if let SubscriptionEvent::Event(event) = next_event(&mut todos).await {
            seen.push((event.seq, event.key, event.op));
        }
    }
    assert_eq!(
        seen.iter().map(|(seq, _, _)| *seq).collect::<Vec<_>>(),
        vec![first, second, third]
    );
    assert_eq!(todos.position().map(|position| position.seq), Some(third));

    // Ephemeral messages reach subscribers with seq 0 and are acked with seq 0.
    client
        .message("todos", "cursor", json!({"x": 1}))
        .await
        .expect("message acked");
    match next_event(&mut todos).await {
        SubscriptionEvent::Event(event) => {
            assert_eq!((event.seq, event.key.as_str()), (0, "cursor"))
        }
        other => panic!("expected the message, got {other:?}"),
    }

    // The relay's refusals carry its error code.
    let refused = client.upsert("raw:orders", "k", json!(1)).await;
    assert_eq!(
        refused.as_ref().map_err(ClientError::code),
        Err(Some(ErrorCode::BadStream))
    );

    // The HTTP helpers see the same history.
    let replayed = client.replay("todos", 0).await.expect("replay over http");
    assert_eq!(
        replayed.iter().map(|event| event.seq).collect::<Vec<_>>(),
        vec![first, second, third]
    );
    let over_http = client.snapshot("todos").await.expect("snapshot over http");
    assert!(over_http.records.is_empty());
    assert_eq!(over_http.seq, third);

    client.close().await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_collection_converges_with_concurrent_writers() {
    const WRITERS: usize = 2;
    const WRITES: usize = 120;
    let pg = TestPg::start().await;
    let relay = TestRelay::spawn(&pg).await;
    let addr = relay.addr();
    let reader = within("connect", Client::connect(config(addr)))
        .await
        .expect("connects");
    // Some history before the collection exists, so it starts from a real snapshot.
    for index in 0..10 {
        reader
            .upsert(
                "board",
                &format!("card{index}"),
                json!({"column": "todo", "index": index}),
            )
            .await
            .expect("seeded");
    }
    let board = reader.collection("board").await.expect("subscribes");
    within("the collection to go live", board.wait_live())
        .await
        .expect("live");
    assert_eq!(board.len(), 10);

    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let client = within("connect", Client::connect(config(addr)))
            .await
            .expect("connects");
        writers.push(tokio::spawn(async move {
            let mut last = 0;
            for index in 0..WRITES {
                let key = format!("card{}", (index * 7 + writer) % 25);
                let result = match index % 5 {
                    0 => client.delete("board", &key).await,
                    1 | 2 => {
                        client
                            .patch(
                                "board",
                                &key,
                                json!({"column": format!("w{writer}"), "touched": index}),
                            )
                            .await
                    }
                    _ => {
                        client
                            .upsert("board", &key, json!({"writer": writer, "index": index}))
                            .await
                    }
                };
                last = last.max(result.expect("write acked"));
            }
            client.close().await;
            last
        }));
    }
    let mut head = 0;
    for writer in writers {
        head = head.max(writer.await.expect("writer task"));
    }
    within("the collection to catch up", board.wait_for_seq(head))
        .await
        .expect("caught up");
    let relay_snapshot = reader.snapshot("board").await.expect("snapshot over http");
    assert_eq!(relay_snapshot.seq, head);
    assert_eq!(board.position().seq, head);
    assert_eq!(by_key(&board.snapshot()), by_key(&relay_snapshot));
    assert_eq!(board.len(), relay_snapshot.records.len());
    let stats = reader.stats();
    assert_eq!(stats.events, (WRITERS * WRITES) as u64);
    assert_eq!(stats.reconnects, 0);

    drop(board);
    reader.close().await;
    relay.shutdown().await;
}

/// Publishes `count` events to `stream` through SQL (independent of any relay), pacing them
/// so that the relay restarts happen mid-stream; returns the last seq.
fn sql_writer(pg: &TestPg, stream: &'static str, count: usize) -> JoinHandle<i64> {
    let url = pg.url();
    tokio::spawn(async move {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect the writer");
        tokio::spawn(async move {
            // Ends with the client; failures surface through it.
            let _ = connection.await;
        });
        let mut last = 0;
        for index in 0..count {
            let data = json!({"index": index}).to_string();
            last = publish(
                &client,
                stream,
                &format!("k{}", index % 40),
                "upsert",
                &data,
            )
            .await
            .expect("publish through SQL");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        last
    })
}

/// Collects the seqs of delivered events until `until` is reached.
async fn collect_until(subscription: &mut Subscription, seqs: &mut Vec<u64>, until: u64) {
    while seqs.last().is_none_or(|last| *last < until) {
        if let SubscriptionEvent::Event(event) = next_event(subscription).await {
            seqs.push(event.seq);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_without_loss_or_duplicates_when_the_relay_is_killed_and_restarted() {
    const EVENTS: usize = 400;
    let pg = TestPg::start().await;
    let relay = TestRelay::builder(&pg).killable().spawn().await;
    let addr = relay.addr();
    let client = within("connect", Client::connect(config(addr)))
        .await
        .expect("connects");
    let mut subscription = client
        .subscribe("resume", SubscribeOptions::default())
        .await
        .expect("subscribes");
    until_live(&mut subscription).await;

    let writer = sql_writer(&pg, "resume", EVENTS);
    let mut seqs = Vec::new();
    collect_until(&mut subscription, &mut seqs, 100).await;

    // Crash: every socket of the relay is dropped; writes keep committing meanwhile.
    relay.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let relay = TestRelay::builder(&pg).on(addr).killable().spawn().await;

    let last = i64::try_from(EVENTS).expect("small");
    let last_seq = within("the writer", writer).await.expect("writer task");
    assert_eq!(last_seq, last);
    let last_seq = u64::try_from(last_seq).expect("positive");
    within(
        "every event after the restart",
        collect_until(&mut subscription, &mut seqs, last_seq),
    )
    .await;
    let expected: Vec<u64> = (1..=last_seq).collect();
    assert_eq!(seqs, expected, "every seq exactly once, in order");
    let stats = client.stats();
    assert!(stats.reconnects >= 1, "{stats:?}");
    assert_eq!(stats.events, last_seq);
    assert_eq!(
        subscription.position().map(|position| position.seq),
        Some(last_seq)
    );

    // No late duplicate trails behind.
    let late = tokio::time::timeout(Duration::from_millis(300), subscription.next()).await;
    assert!(
        !matches!(late, Ok(Some(SubscriptionEvent::Event(_)))),
        "unexpected late event: {late:?}"
    );
    client.close().await;
    relay.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_after_a_graceful_relay_restart_on_the_same_port() {
    let pg = TestPg::start().await;
    let relay = TestRelay::spawn(&pg).await;
    let addr = relay.addr();
    let client = within("connect", Client::connect(config(addr)))
        .await
        .expect("connects");
    let collection = client.collection("notes").await.expect("subscribes");
    within("live", collection.wait_live()).await.expect("live");
    for index in 0..20 {
        collection
            .upsert(&format!("n{index}"), json!({"index": index}))
            .await
            .expect("acked");
    }

    // Graceful stop: the relay sends `shutdown` and a going-away close; writes continue in
    // SQL while no relay runs.
    relay.shutdown().await;
    let db = pg.client().await;
    for index in 20..40 {
        publish(
            &db,
            "notes",
            &format!("n{index}"),
            "upsert",
            &json!({"index": index}).to_string(),
        )
        .await
        .expect("publish through SQL");
    }
    let relay = TestRelay::builder(&pg).on(addr).spawn().await;
    within("the collection to catch up", collection.wait_for_seq(40))
        .await
        .expect("caught up");
    // Writes through the client work again after the reconnect.
    let seq = collection
        .upsert("n40", json!({"index": 40}))
        .await
        .expect("acked");
    assert_eq!(seq, 41);
    within(
        "the collection to see its own write",
        collection.wait_for_seq(41),
    )
    .await
    .expect("caught up");
    assert_eq!(collection.len(), 41);
    let relay_snapshot = client.snapshot("notes").await.expect("snapshot over http");
    assert_eq!(by_key(&collection.snapshot()), by_key(&relay_snapshot));
    let stats = client.stats();
    assert_eq!(stats.reconnects, 1, "{stats:?}");
    assert_eq!(stats.events, 41);

    drop(collection);
    client.close().await;
    relay.shutdown().await;
}

/// A filtered live collection (a view) converges while records move in and out, across a
/// relay kill, without a gap; a filter the relay would refuse is refused before sending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_collection_converges_through_moves_and_a_relay_kill() {
    let pg = TestPg::start().await;
    let sql = pg.client().await;
    let relay = TestRelay::builder(&pg).killable().spawn().await;
    let addr = relay.addr();
    let client = within("connect", Client::connect(config(addr)))
        .await
        .expect("connects");
    let refused = client
        .collection_where("tasks", json!({"prio": {"gte": 1}}))
        .await;
    assert!(
        matches!(refused, Err(ClientError::Invalid(_))),
        "{refused:?}"
    );

    let filter = json!({"owner": "u1"});
    let mine = client
        .collection_where("tasks", filter.clone())
        .await
        .expect("a view");
    within("live", mine.wait_live()).await.expect("live");
    let converged = |mine: &tidewire_client::LiveCollection| {
        let mine: BTreeMap<String, Value> = mine.entries().into_iter().collect();
        let sql = &sql;
        let filter = filter.clone();
        async move { mine == crate::views::truth(sql, "tasks", &filter).await }
    };
    let write = |round: usize| {
        let sql = &sql;
        async move {
            for index in 0..30 {
                let key = format!("t{}", (index * 7 + round) % 10);
                let owner = ["u1", "u2"][(index + round) % 2];
                let (op, data) = match index % 3 {
                    0 => ("upsert", json!({"owner": owner, "n": index})),
                    1 => ("patch", json!({"owner": owner})),
                    _ => ("patch", json!({"n": round})),
                };
                crate::views::publish(sql, "tasks", &key, op, data).await;
            }
        }
    };
    write(1).await;
    within("the view converges", async {
        while !converged(&mine).await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    relay.kill();
    write(2).await;
    let relay = TestRelay::builder(&pg).on(addr).killable().spawn().await;
    within("the view converges after the restart", async {
        while !converged(&mine).await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let stats = client.stats();
    assert_eq!(stats.gaps, 0, "skipped seqs are not gaps: {stats:?}");
    assert!(stats.reconnects >= 1, "{stats:?}");
    client.close().await;
    relay.kill();
}
