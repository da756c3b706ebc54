//! Tests for the fan-out bus: ordering, slow consumers, reaping and the subscribe race.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

const EPOCH: u64 = 7;

fn bus(capacity: usize) -> Arc<Bus> {
    let capacity = NonZeroUsize::new(capacity).expect("test capacities are not zero");
    Arc::new(Bus::new(
        BusConfig::default()
            .with_queue_capacity(capacity)
            .with_spare(0, 0),
    ))
}

fn event(stream: &str, seq: u64) -> Arc<Delivery> {
    let json = Bytes::from(format!(
        r#"{{"type":"event","stream":"{stream}","seq":{seq}}}"#
    ));
    Arc::new(Delivery::event(stream.into(), EPOCH, seq, json))
}

/// Drains everything queued, panicking on a lag report.
fn drain(receiver: &mut ConnReceiver) -> Vec<Arc<Delivery>> {
    let mut out = Vec::new();
    while let Some(received) = receiver.try_recv() {
        match received {
            Received::Delivery(delivery) => out.push(delivery),
            Received::Lagged(streams) => panic!("unexpected lag on {streams:?}"),
            Received::Nudged => {}
        }
    }
    out
}

async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .expect("test finished in time")
}

#[test]
fn fan_out_reaches_every_subscriber_once_in_order_and_shares_bytes() {
    let bus = bus(1024);
    let streams = ["a", "b", "c"];
    let mut rng = StdRng::seed_from_u64(1);
    let mut receivers: Vec<(ConnReceiver, Vec<&str>)> = (0..12)
        .map(|index| {
            let receiver = bus.registry().register();
            // Every subscriber follows one or more streams; subscriber 0 follows all of them.
            let followed: Vec<&str> = streams
                .iter()
                .copied()
                .filter(|_| index == 0 || rng.gen_bool(0.5))
                .collect();
            for stream in &followed {
                bus.registry()
                    .subscribe(receiver.id(), stream)
                    .expect("registered");
            }
            (receiver, followed)
        })
        .collect();

    let mut next_seq: HashMap<&str, u64> = HashMap::new();
    for _ in 0..600 {
        let stream = streams[rng.gen_range(0..streams.len())];
        let seq = next_seq.entry(stream).or_insert(0);
        *seq += 1;
        let published = bus.publish(event(stream, *seq));
        assert_eq!(published.delivered, bus.registry().subscriber_count(stream));
        assert_eq!(published.dropped, 0);
    }

    let mut first_copy: HashMap<(Arc<str>, u64), Arc<Delivery>> = HashMap::new();
    for (receiver, followed) in &mut receivers {
        let mut got: HashMap<&str, Vec<u64>> = HashMap::new();
        for delivery in drain(receiver) {
            let stream = streams
                .iter()
                .copied()
                .find(|name| **name == *delivery.stream)
                .expect("a test stream");
            assert!(followed.contains(&stream), "{stream} was not subscribed");
            got.entry(stream).or_default().push(delivery.seq);
            let key = (Arc::clone(&delivery.stream), delivery.seq);
            let shared = first_copy
                .entry(key)
                .or_insert_with(|| Arc::clone(&delivery));
            assert!(Arc::ptr_eq(shared, &delivery), "one encoding, shared");
        }
        for stream in followed.iter() {
            let last = next_seq.get(stream).copied().unwrap_or(0);
            let expected: Vec<u64> = (1..=last).collect();
            assert_eq!(got.remove(stream).unwrap_or_default(), expected, "{stream}");
        }
        assert!(got.is_empty());
    }
    let stats = bus.stats().snapshot();
    assert_eq!(stats.published, 600);
    assert_eq!(stats.dropped_lagged, 0);
    assert_eq!(stats.lagged_events, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_consumers_receive_everything_in_order() {
    const EVENTS: u64 = 20_000;
    let bus = bus(usize::try_from(EVENTS).expect("fits"));
    let mut consumers = Vec::new();
    for _ in 0..8 {
        let mut receiver = bus.registry().register();
        bus.registry()
            .subscribe(receiver.id(), "s")
            .expect("registered");
        consumers.push(tokio::spawn(async move {
            let mut expected = 1;
            while expected <= EVENTS {
                match receiver.recv().await {
                    Some(Received::Delivery(delivery)) => {
                        assert_eq!(delivery.seq, expected, "in order, exactly once");
                        expected += 1;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert!(receiver.try_recv().is_none(), "nothing extra");
        }));
    }
    let publisher = {
        let bus = Arc::clone(&bus);
        tokio::spawn(async move {
            for seq in 1..=EVENTS {
                bus.publish(event("s", seq));
                if seq % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    within(async {
        publisher.await.expect("publisher ran");
        for consumer in consumers {
            consumer.await.expect("consumer got everything");
        }
    })
    .await;
    assert_eq!(bus.stats().snapshot().delivered, 8 * EVENTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_is_marked_lagged_and_never_delays_others() {
    const CAPACITY: u64 = 64;
    const EVENTS: u64 = CAPACITY * 50;
    let bus = bus(usize::try_from(CAPACITY).expect("fits"));
    let slow = bus.registry().register();
    bus.registry()
        .subscribe(slow.id(), "s")
        .expect("registered");

    let progress: Arc<[AtomicU64]> = (0..4).map(|_| AtomicU64::new(0)).collect();
    let mut fast = Vec::new();
    for index in 0..4 {
        let mut receiver = bus.registry().register();
        bus.registry()
            .subscribe(receiver.id(), "s")
            .expect("registered");
        let progress = Arc::clone(&progress);
        fast.push(tokio::spawn(async move {
            let mut expected = 1;
            while expected <= EVENTS {
                match receiver.recv().await {
                    Some(Received::Delivery(delivery)) => {
                        assert_eq!(delivery.seq, expected);
                        progress[index].store(expected, Ordering::Release);
                        expected += 1;
                    }
                    other => panic!("a fast consumer must never lag: {other:?}"),
                }
            }
        }));
    }

    let mut alive: Vec<Weak<Delivery>> = Vec::new();
    within(async {
        for seq in 1..=EVENTS {
            let delivery = event("s", seq);
            alive.push(Arc::downgrade(&delivery));
            let published = bus.publish(delivery);
            assert_eq!(published.subscribers, 5);
            assert_eq!(published.delivered + published.dropped, 5);
            assert!(slow.len() <= slow.capacity(), "the slow queue is bounded");
            // Pace on the fast consumers only (they share the queue size): the slow one is
            // never waited for.
            if seq % (CAPACITY / 2) == 0 {
                while progress
                    .iter()
                    .any(|done| done.load(Ordering::Acquire) < seq)
                {
                    tokio::task::yield_now().await;
                }
            }
        }
        for consumer in fast {
            consumer
                .await
                .expect("fast consumers got everything in order");
        }
    })
    .await;

    let stats = bus.stats().snapshot();
    assert_eq!(stats.published, EVENTS);
    assert_eq!(stats.delivered, 4 * EVENTS + CAPACITY);
    assert_eq!(stats.dropped_lagged, EVENTS - CAPACITY);
    assert_eq!(stats.lagged_events, 1, "one transition into lagged");
    assert_eq!(stats.queue_high_water, CAPACITY);
    let still_alive = alive.iter().filter(|weak| weak.strong_count() > 0).count();
    assert_eq!(
        u64::try_from(still_alive).expect("fits"),
        CAPACITY,
        "only the slow queue pins deliveries, and at most its capacity"
    );

    let mut slow = slow;
    assert!(slow.has_lagged());
    let lagged = slow.take_lagged();
    assert_eq!(lagged.len(), 1);
    assert_eq!(
        (&*lagged[0].stream, lagged[0].queued),
        ("s", usize::try_from(CAPACITY).expect("fits"))
    );
    assert!(slow.take_lagged().is_empty());
    let queued: Vec<u64> = drain(&mut slow)
        .iter()
        .map(|delivery| delivery.seq)
        .collect();
    assert_eq!(queued, (1..=CAPACITY).collect::<Vec<_>>());
    // Lag taken and queue drained: deliveries flow again. The fast consumers have finished and
    // dropped their receivers, so this publish reaps them.
    let after = bus.publish(event("s", EVENTS + 1));
    assert_eq!((after.delivered, after.reaped), (1, 4));
    assert_eq!(drain(&mut slow)[0].seq, EVENTS + 1);
}

#[tokio::test]
async fn lag_is_reported_before_queued_deliveries_and_only_on_its_stream() {
    let bus = bus(2);
    let mut receiver = bus.registry().register();
    bus.registry()
        .subscribe(receiver.id(), "a")
        .expect("registered");
    bus.registry()
        .subscribe(receiver.id(), "b")
        .expect("registered");
    bus.publish(event("a", 1));
    bus.publish(event("a", 2));
    let full = bus.publish(event("a", 3));
    assert_eq!((full.dropped, full.newly_lagged), (1, 1));
    let again = bus.publish(event("b", 1));
    assert_eq!((again.dropped, again.newly_lagged), (1, 1));
    assert_eq!(bus.publish(event("a", 4)).newly_lagged, 0, "already lagged");

    let Some(Received::Lagged(lagged)) = receiver.recv().await else {
        panic!("lag comes first");
    };
    let mut streams: Vec<(&str, usize)> = lagged.iter().map(|l| (&*l.stream, l.queued)).collect();
    streams.sort_unstable();
    assert_eq!(
        streams,
        vec![("a", 2), ("b", 0)],
        "a's two queued ones came before its drop"
    );
    for expected in [1, 2] {
        let Some(Received::Delivery(delivery)) = receiver.recv().await else {
            panic!("queued deliveries follow");
        };
        assert_eq!(delivery.seq, expected);
    }
    assert!(receiver.try_recv().is_none());
    // Unsubscribing clears a pending lag for that stream.
    bus.publish(event("b", 2));
    bus.publish(event("b", 3));
    bus.publish(event("b", 4));
    bus.registry()
        .unsubscribe(receiver.id(), "b")
        .expect("registered");
    assert!(!receiver.has_lagged());
}

#[tokio::test]
async fn closed_receivers_are_reaped_and_unregistered_receivers_end() {
    let bus = bus(8);
    let first = bus.registry().register();
    let mut second = bus.registry().register();
    for receiver in [&first, &second] {
        bus.registry()
            .subscribe(receiver.id(), "s")
            .expect("registered");
    }
    drop(first);
    let published = bus.publish(event("s", 1));
    assert_eq!((published.delivered, published.reaped), (1, 1));
    assert!(published.emptied_streams.is_empty());
    assert_eq!(bus.registry().subscriber_count("s"), 1);

    let emptied = bus.registry().unregister(second.id()).expect("registered");
    assert_eq!(emptied, vec![Arc::<str>::from("s")]);
    assert!(matches!(second.recv().await, Some(Received::Delivery(_))));
    assert!(
        second.recv().await.is_none(),
        "unregistered: the queue ends"
    );

    let third = bus.registry().register();
    bus.registry()
        .subscribe(third.id(), "t")
        .expect("registered");
    drop(third);
    let published = bus.publish(event("t", 1));
    assert_eq!(published.emptied_streams, vec![Arc::<str>::from("t")]);
    assert_eq!(bus.stats().snapshot().reaped, 2);
    assert_eq!(bus.registry().connection_count(), 0);
    bus.registry().check_invariants().expect("indexes agree");
}

#[derive(Debug, thiserror::Error)]
#[error("snapshot query failed")]
struct ReadFailed;

#[tokio::test]
async fn a_failed_baseline_rolls_the_subscription_back() {
    let bus = bus(8);
    let receiver = bus.registry().register();
    let mut cursor = LastSent::new();
    let failed = bus
        .subscribe_with(
            &mut cursor,
            receiver.id(),
            "s",
            None,
            |outcome| async move {
                assert!(outcome.first_for_stream);
                Err::<Baseline<()>, _>(ReadFailed)
            },
        )
        .await;
    match failed {
        Err(SubscribeError::Baseline {
            last_for_stream, ..
        }) => assert!(last_for_stream),
        other => panic!("expected a baseline error, got {other:?}"),
    }
    assert_eq!(bus.registry().subscriber_count("s"), 0);
    assert!(cursor.is_empty());

    bus.registry().unregister(receiver.id());
    let unknown = bus
        .subscribe_with(&mut cursor, receiver.id(), "s", None, |_| async {
            Ok::<_, ReadFailed>(Baseline {
                position: Position::new(EPOCH, 0),
                value: (),
            })
        })
        .await;
    assert!(matches!(unknown, Err(SubscribeError::Registry(_))));
}

/// One joiner of the subscribe race: waits until the head reaches `join_at`, subscribes with a
/// simulated snapshot read of the head, then flushes through the cursor until it has seq `last`.
/// With `replay`, lags and gaps are recovered from the simulated outbox (every seq up to the
/// head); without, any lag fails the test. Returns the baseline seq and what it admitted.
async fn join_and_follow(
    bus: Arc<Bus>,
    head: Arc<AtomicU64>,
    seed: u64,
    last: u64,
    replay: bool,
) -> (u64, Vec<u64>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let join_at = rng.gen_range(0..last);
    let (yields_before, yields_after) = (rng.gen_range(0..20), rng.gen_range(0..20));
    while head.load(Ordering::SeqCst) < join_at {
        tokio::task::yield_now().await;
    }
    let mut receiver = bus.registry().register();
    let mut cursor = LastSent::new();
    let read_head = Arc::clone(&head);
    let subscribed = bus
        .subscribe_with(&mut cursor, receiver.id(), "race", None, |_| async move {
            // Simulated Postgres latency on both sides of the snapshot's read point.
            for _ in 0..yields_before {
                tokio::task::yield_now().await;
            }
            let seq = read_head.load(Ordering::SeqCst);
            for _ in 0..yields_after {
                tokio::task::yield_now().await;
            }
            Ok::<_, Infallible>(Baseline {
                position: Position::new(EPOCH, seq),
                value: (),
            })
        })
        .await
        .expect("registered");
    let baseline = subscribed.baseline.position.seq;
    let mut admitted = Vec::new();
    let replay_from_outbox = |cursor: &mut LastSent, admitted: &mut Vec<u64>| {
        let from = cursor.position("race").expect("tracked").seq;
        for seq in from + 1..=head.load(Ordering::SeqCst) {
            assert!(cursor.admit(&event("race", seq)).is_send());
            admitted.push(seq);
        }
    };
    while cursor.position("race").expect("tracked").seq < last {
        match receiver.recv().await.expect("still registered") {
            Received::Delivery(delivery) => match cursor.admit(&delivery) {
                Admit::Send => admitted.push(delivery.seq),
                Admit::Duplicate => {}
                Admit::Gap { .. } if replay => replay_from_outbox(&mut cursor, &mut admitted),
                other => panic!("seq {} after baseline {baseline}: {other:?}", delivery.seq),
            },
            Received::Lagged(_) if replay => replay_from_outbox(&mut cursor, &mut admitted),
            Received::Lagged(streams) => panic!("queue sized never to lag: {streams:?}"),
            Received::Nudged => {}
        }
    }
    bus.registry()
        .unregister(receiver.id())
        .expect("registered");
    (baseline, admitted)
}

async fn run_subscribe_race(capacity: usize, joiners: u64, events: u64, replay: bool) -> Arc<Bus> {
    let bus = bus(capacity);
    // The committed head: bumped BEFORE publishing, as a commit precedes its NOTIFY.
    let head = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for seed in 0..joiners {
        let (bus, head) = (Arc::clone(&bus), Arc::clone(&head));
        tasks.push(tokio::spawn(join_and_follow(
            bus, head, seed, events, replay,
        )));
    }
    let publisher = {
        let (bus, head) = (Arc::clone(&bus), Arc::clone(&head));
        tokio::spawn(async move {
            for seq in 1..=events {
                head.store(seq, Ordering::SeqCst);
                bus.publish(event("race", seq));
                if seq % 4 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    within(async {
        publisher.await.expect("publisher ran");
        for task in tasks {
            let (baseline, admitted) = task.await.expect("joiner saw a clean sequence");
            let expected: Vec<u64> = (baseline + 1..=events).collect();
            assert_eq!(
                admitted, expected,
                "every seq after the snapshot, once, in order"
            );
        }
    })
    .await;
    assert!(bus.registry().streams().is_empty());
    bus
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_race_sees_every_seq_after_its_snapshot_exactly_once() {
    const EVENTS: u64 = 3_000;
    // Queues hold every event, so this exercises only snapshot-then-live, never lag recovery.
    let bus = run_subscribe_race(3_100, 1_000, EVENTS, false).await;
    assert_eq!(bus.stats().snapshot().lagged_events, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_race_with_tiny_queues_recovers_lags_from_replay() {
    let bus = run_subscribe_race(4, 200, 3_000, true).await;
    assert!(bus.stats().snapshot().lagged_events > 0, "the lag path ran");
}

#[test]
fn delivery_constructors_and_stats_defaults() {
    let delivery =
        Delivery::event("s".into(), 2, 3, Bytes::from_static(b"{}")).with_committed_at(9);
    assert_eq!(delivery.position(), Position::new(2, 3));
    assert_eq!(delivery.committed_at_micros, Some(9));
    assert_eq!(Delivery::message("s".into(), Bytes::new()).seq, 0);
    assert_eq!(BusConfig::default().queue_capacity.get(), 1024);
    let bus = bus(1);
    let nobody = bus.publish(event("nobody", 1));
    assert_eq!(nobody, PublishStats::default());
    assert_eq!(bus.stats().snapshot().published, 1);
}
