//! Delivery threads get each delivery once, in publish order, as copies of their own.

use std::num::NonZeroUsize;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::bus::{BusConfig, ConnReceiver, Received};

const THREADS: usize = 3;
const PER_THREAD: usize = 4;
const EVENTS: u64 = 400;

fn event(stream: &str, seq: u64) -> Arc<Delivery> {
    let json = Bytes::from(format!(r#"{{"stream":"{stream}","seq":{seq}}}"#));
    Arc::new(Delivery::event(stream.into(), 1, seq, json))
}

fn sharded_bus(threads: usize) -> Arc<Bus> {
    let capacity = NonZeroUsize::new(4096).expect("not zero");
    Arc::new(Bus::new(
        BusConfig::default()
            .with_queue_capacity(capacity)
            .with_shards(threads),
    ))
}

/// Takes deliveries until `count` arrived or a minute passed.
async fn take(receiver: &mut ConnReceiver, count: usize) -> Vec<Arc<Delivery>> {
    let mut out = Vec::new();
    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        while out.len() < count {
            match receiver.recv().await {
                Some(Received::Delivery(delivery)) => out.push(delivery),
                Some(Received::Lagged(streams)) => panic!("unexpected lag on {streams:?}"),
                Some(Received::Nudged) => {}
                None => break,
            }
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "only {} of {count} deliveries arrived",
        out.len()
    );
    out
}

#[test]
fn each_thread_offers_each_delivery_to_its_own_connections_in_order() {
    let bus = sharded_bus(THREADS);
    let published = event("a", 0);
    let ready = Arc::new(Barrier::new(THREADS + 1));
    let threads: Vec<_> = bus
        .take_inboxes()
        .into_iter()
        .map(|inbox| {
            let (bus, ready) = (Arc::clone(&bus), Arc::clone(&ready));
            std::thread::spawn(move || {
                let index = inbox.index();
                enter(index);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                let mut receivers: Vec<ConnReceiver> =
                    (0..PER_THREAD).map(|_| bus.registry().register()).collect();
                for (position, receiver) in receivers.iter().enumerate() {
                    let followed: &[&str] = if position == 0 { &["a", "b"] } else { &["a"] };
                    for stream in followed {
                        bus.registry()
                            .subscribe(receiver.id(), stream)
                            .expect("registered");
                    }
                }
                ready.wait();
                runtime.spawn(inbox.run(Arc::clone(&bus)));
                runtime.block_on(async {
                    let mut got = Vec::new();
                    for (position, receiver) in receivers.iter_mut().enumerate() {
                        let count = if position == 0 { 2 } else { 1 } * EVENTS as usize;
                        got.push(take(receiver, count).await);
                    }
                    (index, got)
                })
            })
        })
        .collect();
    ready.wait();
    for seq in 1..=EVENTS {
        for stream in ["a", "b"] {
            let stats = bus.publish(event(stream, seq));
            let expected = if stream == "a" {
                THREADS * PER_THREAD
            } else {
                THREADS
            };
            assert_eq!(stats.subscribers, expected);
        }
    }
    for thread in threads {
        let (index, got) = thread.join().expect("the thread's checks");
        for (position, deliveries) in got.iter().enumerate() {
            for stream in ["a", "b"] {
                let seqs: Vec<u64> = deliveries
                    .iter()
                    .filter(|delivery| &*delivery.stream == stream)
                    .map(|delivery| delivery.seq)
                    .collect();
                let expected: Vec<u64> = if stream == "a" || position == 0 {
                    (1..=EVENTS).collect()
                } else {
                    Vec::new()
                };
                assert_eq!(
                    seqs, expected,
                    "thread {index}, connection {position}, {stream}"
                );
            }
        }
        // One copy per thread: every connection of the thread shares it, no other thread does.
        let first = got[0][0].json.as_ptr();
        assert!(got
            .iter()
            .all(|deliveries| deliveries[0].json.as_ptr() == first));
        assert_ne!(first, published.json.as_ptr());
    }
    let stats = bus.stats().snapshot();
    assert_eq!(stats.published, 2 * EVENTS);
    assert_eq!(
        stats.delivered,
        EVENTS * (THREADS * PER_THREAD + THREADS) as u64
    );
    assert_eq!(stats.dropped_lagged, 0);
}

#[test]
fn a_thread_that_is_gone_is_offered_for_from_the_publisher() {
    let bus = sharded_bus(1);
    drop(bus.take_inboxes());
    assert!(bus.take_inboxes().is_empty(), "taken once");
    let mut receiver = bus.registry().register();
    bus.registry()
        .subscribe(receiver.id(), "a")
        .expect("registered");
    for seq in 1..=3 {
        bus.publish(event("a", seq));
    }
    let mut seqs = Vec::new();
    while let Some(Received::Delivery(delivery)) = receiver.try_recv() {
        seqs.push(delivery.seq);
    }
    assert_eq!(seqs, [1, 2, 3]);
}

#[test]
fn connections_are_grouped_by_the_thread_they_registered_on() {
    let bus = sharded_bus(2);
    let on = |index: usize| {
        enter(index);
        let receiver = bus.registry().register();
        bus.registry()
            .subscribe(receiver.id(), "a")
            .expect("registered");
        receiver
    };
    // A thread beyond the groups (none is, in the relay) lands in the last one.
    let receivers = [on(0), on(1), on(1), on(7)];
    enter(0);
    let fanout = bus.registry().subscribers("a").expect("subscribers");
    let sizes: Vec<usize> = fanout.groups().iter().map(|group| group.len()).collect();
    assert_eq!((sizes, fanout.len()), (vec![1, 3], receivers.len()));
}
