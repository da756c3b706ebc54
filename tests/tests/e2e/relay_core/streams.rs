//! Payload sizes, raw channels (reference-counted LISTEN, JSON and non-JSON payloads, gaps
//! after a lost connection), drops with resync, temp-stream expiry and lagged consumers.

use std::time::Duration;

use serde_json::json;
use tidewire_tests::TestPg;

use super::probe::{assert_exactly, hub, publish, Probe};

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_pointer_and_one_mebibyte_events_reach_subscribers() {
    let pg = TestPg::start().await;
    let hub = hub(&pg.url(), |_| {}).await;
    let mut probe = Probe::open(&hub);
    probe.subscribe("big").await;
    probe.until(WAIT, |m| m["type"] == "subscribed").await;
    let client = pg.client().await;
    let sizes = [7_900usize, 7_999, 8_000, 1024 * 1024];
    for (index, size) in sizes.iter().enumerate() {
        publish(
            &client,
            "big",
            &format!("k{index}"),
            "upsert",
            json!("x".repeat(*size)),
        )
        .await;
    }
    probe.until_seq("big", sizes.len() as u64, WAIT).await;
    assert_exactly(&probe.seqs("big"), 1, sizes.len() as u64, "big");
    let lengths: Vec<usize> = probe
        .received
        .iter()
        .filter(|m| m["type"] == "event")
        .map(|m| m["data"].as_str().map_or(0, str::len))
        .collect();
    assert_eq!(lengths, sizes);
    let stats = hub.listener.stats().snapshot();
    assert!(
        stats.outbox_reads >= 1,
        "pointer payloads were read from the outbox"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_reads_the_outbox_while_sessions_hold_the_whole_pool() {
    let pg = TestPg::start().await;
    let hub = hub(&pg.url(), |config| config.options.pg_pool_size = 1).await;
    let mut probe = Probe::open(&hub);
    probe.subscribe("busy").await;
    probe.until(WAIT, |m| m["type"] == "subscribed").await;
    // Sessions replaying at once can keep every pooled connection busy for longer than the
    // listener's timeout: take the only one.
    let held = hub.pool.get().await.expect("the pool's only connection");
    let client = pg.client().await;
    // Too large to travel inline: the listener must read it from the outbox.
    publish(&client, "busy", "k", "upsert", json!("x".repeat(10_000))).await;
    probe.until_seq("busy", 1, WAIT).await;
    // Several liveness checks and outbox polls, each bounded by the 1.5 s timeout.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    publish(&client, "busy", "k", "upsert", json!("y".repeat(10_000))).await;
    probe.until_seq("busy", 2, WAIT).await;
    drop(held);
    assert_exactly(&probe.seqs("busy"), 1, 2, "busy");
    let stats = hub.listener.stats().snapshot();
    assert!(stats.outbox_reads >= 2, "pointers read from the outbox");
    assert_eq!(
        stats.failures, 0,
        "the listener never took a busy pool for a dead PostgreSQL"
    );
    assert!(hub.listener.is_up());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_notifications_does_not_fail_the_liveness_check() {
    const EVENTS: i64 = 40_000;
    let pg = TestPg::start().await;
    // A liveness query every 20 ms: many of them run while the burst fills the listener's
    // notification channel, and each must still get its answer.
    let hub = hub(&pg.url(), |config| {
        config.options.pg_health_interval_ms = 20
    })
    .await;
    let mut probe = Probe::open(&hub);
    probe.subscribe("burst").await;
    probe.until(WAIT, |m| m["type"] == "subscribed").await;
    let client = pg.client().await;
    // Keep every event, so that the subscriber can be checked against all of them.
    client
        .execute(
            "select tidewire.set_retention('burst', $1::bigint, interval '1 day')",
            &[&EVENTS],
        )
        .await
        .expect("retention");
    // One transaction: PostgreSQL sends all its notifications at the commit.
    client
        .query_one(
            "select count(tidewire.publish('burst', 'k' || (g % 100), 'upsert', \
               jsonb_build_object('n', g))) from generate_series(1, $1::bigint) as g",
            &[&EVENTS],
        )
        .await
        .expect("publish the burst");
    probe
        .until_seq("burst", EVENTS as u64, Duration::from_secs(60))
        .await;
    assert_exactly(&probe.seqs("burst"), 1, EVENTS as u64, "burst");
    // The outbox poll may deliver the tail before the listener has counted every
    // notification: wait for the counter, then judge.
    let deadline = tokio::time::Instant::now() + WAIT;
    while hub.listener.stats().snapshot().notifications < EVENTS as u64
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = hub.listener.stats().snapshot();
    assert_eq!(
        stats.failures, 0,
        "the liveness query answered behind the burst; the listener never reconnected"
    );
    assert!(stats.notifications >= EVENTS as u64, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_channels_listen_on_demand_and_report_gaps() {
    let pg = TestPg::start().await;
    let hub = hub(&pg.url(), |_| {}).await;
    let client = pg.client().await;
    let mut first = Probe::open(&hub);
    let mut second = Probe::open(&hub);
    first.subscribe("raw:orders").await;
    second.subscribe("raw:orders").await;
    first.until(WAIT, |m| m["type"] == "subscribed").await;
    second.until(WAIT, |m| m["type"] == "subscribed").await;
    assert_eq!(
        hub.listener.stats().snapshot().listens,
        1,
        "one LISTEN for two subscribers"
    );
    client
        .execute("select pg_notify('orders', '{\"id\": 1}')", &[])
        .await
        .expect("notify");
    client
        .execute("select pg_notify('orders', 'not json')", &[])
        .await
        .expect("notify");
    for probe in [&mut first, &mut second] {
        probe.until_seq("raw:orders", 2, WAIT).await;
        let data: Vec<_> = probe
            .received
            .iter()
            .filter(|m| m["type"] == "event")
            .map(|m| m["data"].clone())
            .collect();
        assert_eq!(data, vec![json!({"id": 1}), json!("not json")]);
    }
    // The LISTEN connection dies: raw subscribers are told about the gap.
    let killed = pg
        .terminate_backends_where("application_name = 'tidewire-relay listen'")
        .await;
    assert_eq!(killed, 1);
    first
        .until(WAIT, |m| m["type"] == "advisory" && m["kind"] == "gap")
        .await;
    client
        .execute("select pg_notify('orders', '3')", &[])
        .await
        .expect("notify");
    // Seq 3 stands for what was lost while the LISTEN connection was down; the advisory
    // says so and the next notification continues at 4 with no second advisory.
    first.until_seq("raw:orders", 4, WAIT).await;
    let gaps: Vec<_> = first
        .advisories("gap")
        .iter()
        .map(|advisory| advisory["from"].clone())
        .collect();
    assert_eq!(
        gaps,
        vec![json!(3)],
        "one gap advisory, from the skipped seq"
    );
    assert_eq!(first.seqs("raw:orders"), vec![1, 2, 4]);
    let epoch = first
        .received
        .iter()
        .find(|m| m["type"] == "event")
        .and_then(|m| m["epoch"].as_u64())
        .expect("an event carries the epoch");
    // Last subscriber leaves: UNLISTEN exactly once.
    first
        .send(json!({"type": "unsubscribe", "stream": "raw:orders"}))
        .await;
    first.until(WAIT, |m| m["type"] == "unsubscribed").await;
    assert_eq!(
        hub.listener.stats().snapshot().unlistens,
        0,
        "one subscriber is left"
    );
    drop(second);
    tokio::time::timeout(WAIT, async {
        while hub.listener.stats().snapshot().unlistens < 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("UNLISTEN after the last subscriber left");
    // Nobody listens now, so this notification is seen by no relay. A client resuming from
    // its last seq (4) must be told, and seqs keep increasing within the relay's epoch.
    client
        .execute("select pg_notify('orders', 'unheard')", &[])
        .await
        .expect("notify");
    let mut third = Probe::open(&hub);
    third
        .send(json!({"type": "subscribe", "stream": "raw:orders", "since": {"epoch": epoch, "seq": 4}}))
        .await;
    third
        .until(WAIT, |m| m["type"] == "advisory" && m["kind"] == "gap")
        .await;
    assert_eq!(third.advisories("gap")[0]["from"], json!(5));
    third.until(WAIT, |m| m["type"] == "subscribed").await;
    client
        .execute("select pg_notify('orders', '6')", &[])
        .await
        .expect("notify");
    third.until_seq("raw:orders", 6, WAIT).await;
    assert_eq!(third.seqs("raw:orders"), vec![6]);
    assert_eq!(third.advisories("gap").len(), 1, "told once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_and_aliasing_names_are_refused_or_kept_apart() {
    let pg = TestPg::start().await;
    let hub = hub(&pg.url(), |_| {}).await;
    let mut probe = Probe::open(&hub);
    for name in [
        "raw:a\";drop table x;--",
        "a b",
        "raw:tw:secret",
        &"a".repeat(61),
    ] {
        probe
            .send(json!({"type": "subscribe", "stream": name}))
            .await;
        let answer = probe.until(WAIT, |m| m["type"] == "error").await;
        assert_eq!(answer["code"], "bad_stream", "{name:?} -> {answer}");
        assert_eq!(answer["stream"], name, "the refusal names the stream");
    }
    let long_a = format!("{}a", "p".repeat(59));
    let long_b = format!("{}b", "p".repeat(59));
    probe.subscribe(&long_a).await;
    probe.until(WAIT, |m| m["type"] == "subscribed").await;
    let client = pg.client().await;
    publish(&client, &long_b, "k", "upsert", json!(1)).await;
    publish(&client, &long_a, "k", "upsert", json!(2)).await;
    probe.until_seq(&long_a, 1, WAIT).await;
    assert!(
        probe.seqs(&long_b).is_empty(),
        "a 63-byte-prefix sibling never leaks in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_and_expired_streams_tell_subscribers() {
    let pg = TestPg::start().await;
    let hub = hub(&pg.url(), |_| {}).await;
    let client = pg.client().await;
    publish(&client, "doomed", "k", "upsert", json!(1)).await;
    client
        .execute(
            "select tidewire.create_stream('fleeting', 'temp', interval '1 second')",
            &[],
        )
        .await
        .expect("temp stream");
    let mut probe = Probe::open(&hub);
    probe.subscribe("doomed").await;
    probe.subscribe("fleeting").await;
    probe
        .until(WAIT, |m| {
            m["type"] == "subscribed" && m["stream"] == "fleeting"
        })
        .await;
    let old_epoch = probe
        .received
        .iter()
        .find(|m| m["type"] == "subscribed" && m["stream"] == "doomed")
        .map(|m| m["epoch"].clone());
    client
        .execute("select tidewire.drop_stream('doomed')", &[])
        .await
        .expect("drop");
    probe
        .until(WAIT, |m| {
            m["type"] == "advisory" && m["kind"] == "dropped" && m["stream"] == "doomed"
        })
        .await;
    publish(&client, "doomed", "k2", "upsert", json!(2)).await;
    let resync = probe
        .until(WAIT, |m| {
            m["type"] == "advisory" && m["kind"] == "resync" && m["stream"] == "doomed"
        })
        .await;
    assert_ne!(
        Some(resync["epoch"].clone()),
        old_epoch,
        "a recreated stream has a new epoch"
    );
    let snapshot = probe
        .until(WAIT, |m| m["type"] == "snapshot" && m["stream"] == "doomed")
        .await;
    assert_eq!(
        snapshot["records"],
        json!([{"key": "k2", "seq": 1, "data": 2}])
    );
    // The janitor expires the temp stream and tells its subscribers.
    probe
        .until(WAIT, |m| {
            m["type"] == "advisory" && m["kind"] == "dropped" && m["stream"] == "fleeting"
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagged_consumer_resumes_from_the_outbox_without_loss() {
    let pg = TestPg::start().await;
    let hub = hub(&pg.url(), |config| {
        config.options.queue_capacity = 4;
        config.options.queue_spare = 0;
    })
    .await;
    let mut slow = Probe::open(&hub);
    let mut healthy = Probe::open(&hub);
    slow.subscribe("busy").await;
    healthy.subscribe("busy").await;
    slow.until(WAIT, |m| m["type"] == "subscribed").await;
    healthy.until(WAIT, |m| m["type"] == "subscribed").await;
    let client = pg.client().await;
    for n in 1..=200u64 {
        publish(&client, "busy", &format!("k{n}"), "upsert", json!(n)).await;
        if n % 20 == 0 {
            // The healthy one keeps reading; the slow one does not read at all.
            while healthy.recv(Duration::from_millis(1)).await.is_some() {}
        }
    }
    healthy.until_seq("busy", 200, WAIT).await;
    slow.until_seq("busy", 200, WAIT).await;
    assert_exactly(&healthy.seqs("busy"), 1, 200, "healthy");
    assert_exactly(&slow.seqs("busy"), 1, 200, "slow");
    assert!(
        !slow.advisories("lagged").is_empty(),
        "the slow consumer was told it lagged"
    );
    assert!(hub.bus.stats().snapshot().dropped_lagged > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_borrows_shared_room_before_it_lags() {
    let pg = TestPg::start().await;
    // Four slots of its own per connection, 40 shared, at most 30 borrowed by one: a burst
    // of 30 fits one connection that is not reading, not two.
    let hub = hub(&pg.url(), |config| {
        config.options.queue_capacity = 4;
        config.options.queue_spare = 40;
        config.options.queue_burst = 30;
    })
    .await;
    let mut first = Probe::open(&hub);
    let mut second = Probe::open(&hub);
    for probe in [&mut first, &mut second] {
        probe.subscribe("bursty").await;
        probe.until(WAIT, |m| m["type"] == "subscribed").await;
    }
    let client = pg.client().await;
    for n in 1..=30u64 {
        publish(&client, "bursty", &format!("k{n}"), "upsert", json!(n)).await;
    }
    // Neither has read: wait until the bus has offered all 30 to both (on the delivery
    // thread, after `publish` handed them over).
    let deadline = tokio::time::Instant::now() + WAIT;
    let offered =
        |stats: tidewire_relay::bus::BusStatsSnapshot| stats.delivered + stats.dropped_lagged;
    while offered(hub.bus.stats().snapshot()) < 60 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bus saw every event"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = hub.bus.stats().snapshot();
    assert_eq!(
        stats.lagged_events, 1,
        "only the one left without room lagged"
    );
    assert_eq!(
        hub.bus.registry().spare().borrowed(),
        40,
        "the pool is lent out"
    );
    for (probe, who) in [(&mut first, "first"), (&mut second, "second")] {
        probe.until_seq("bursty", 30, WAIT).await;
        // A replay may reach 30 before the queue is drained: read until silence.
        while probe.recv(Duration::from_millis(300)).await.is_some() {}
        assert_exactly(&probe.seqs("bursty"), 1, 30, who);
    }
    let lagged = [&first, &second].map(|probe| probe.advisories("lagged").len());
    assert_eq!(
        lagged.iter().sum::<usize>(),
        1,
        "one was told it lagged: {lagged:?}"
    );
    assert_eq!(
        hub.bus.registry().spare().borrowed(),
        0,
        "drained queues returned the loan"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagged_raw_subscriber_is_told_where_its_drop_began() {
    let pg = TestPg::start().await;
    let hub = hub(&pg.url(), |config| {
        config.options.queue_capacity = 4;
        config.options.queue_spare = 0;
    })
    .await;
    let client = pg.client().await;
    // `started` has read an event before the burst; `unstarted` has read nothing, so the
    // relay has no position for it yet when it lags.
    let mut started = Probe::open(&hub);
    let mut unstarted = Probe::open(&hub);
    for probe in [&mut started, &mut unstarted] {
        probe.subscribe("raw:burst").await;
        probe.until(WAIT, |m| m["type"] == "subscribed").await;
    }
    client
        .execute("select pg_notify('burst', 'first')", &[])
        .await
        .expect("notify");
    started.until_seq("raw:burst", 1, WAIT).await;
    // Twenty more in one transaction while nobody reads: what fits in each queue is kept,
    // the rest is dropped, and the last one dropped is the last one published.
    client
        .execute(
            "select pg_notify('burst', n::text) from generate_series(2, 21) as n",
            &[],
        )
        .await
        .expect("notify");
    // `started` keeps 4 of the 20 and drops 16; `unstarted` still holds seq 1, keeps 3 and
    // drops 17.
    tokio::time::timeout(WAIT, async {
        while hub.bus.stats().snapshot().dropped_lagged < 32 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the relay published all 21 and both queues overflowed");
    for (probe, who) in [(&mut started, "started"), (&mut unstarted, "unstarted")] {
        while probe.recv(Duration::from_millis(300)).await.is_some() {}
        assert_gap_follows_the_last_event(probe, who);
    }

    // The next notification closes the gap and needs no second advisory.
    client
        .execute("select pg_notify('burst', 'after')", &[])
        .await
        .expect("notify");
    for probe in [&mut started, &mut unstarted] {
        probe.until_seq("raw:burst", 22, WAIT).await;
        assert_eq!(probe.seqs("raw:burst").last(), Some(&22));
        assert_eq!(probe.advisories("gap").len(), 1, "told once");
    }
}

/// The probe got `raw:burst`'s seqs 1 to some `last` < 21, each once and in order, then one
/// open-ended `gap` from `last + 1` and one `lagged`.
fn assert_gap_follows_the_last_event(probe: &Probe, who: &str) {
    let seqs = probe.seqs("raw:burst");
    let last = *seqs.last().expect("events");
    assert_eq!(
        seqs,
        (1..=last).collect::<Vec<_>>(),
        "{who}: what was queued arrives"
    );
    assert!(last < 21, "{who}: some were dropped: {seqs:?}");
    let gaps = probe.advisories("gap");
    assert_eq!(gaps.len(), 1, "{who}: one gap: {gaps:?}");
    assert_eq!(
        gaps[0]["from"],
        json!(last + 1),
        "{who}: the gap starts right after the last event delivered"
    );
    assert!(
        gaps[0].get("to").is_none(),
        "{who}: its end is not known yet"
    );
    let at = |kind: &str| {
        probe
            .received
            .iter()
            .rposition(|m| m["kind"] == kind || m["type"] == kind)
    };
    assert!(
        at("gap") > at("event"),
        "{who}: the gap follows the events queued before the drop"
    );
    assert_eq!(probe.advisories("lagged").len(), 1, "{who}");
}
