//! Presence across two relays on one PostgreSQL: a join on one relay shows on the other, a
//! late subscriber gets the full set, and a closed connection leaves everywhere.

use std::time::Duration;

use serde_json::json;
use tidewire_tests::TestPg;

use super::probe::{hub, Probe};

const WAIT: Duration = Duration::from_secs(15);

/// A client of `relay` subscribed to `room`, past its first (full) presence message.
async fn in_room(relay: &std::sync::Arc<tidewire_relay::hub::Hub>) -> Probe {
    let mut probe = Probe::open(relay);
    probe.subscribe("room").await;
    probe
        .until(WAIT, |m| m["type"] == "presence" && m["full"] == true)
        .await;
    probe
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_shared_between_relays_and_drops_on_close() {
    let pg = TestPg::start().await;
    let first_relay = hub(&pg.url(), |_| {}).await;
    let second_relay = hub(&pg.url(), |_| {}).await;
    assert_ne!(first_relay.relay_id, second_relay.relay_id);

    let mut ann = in_room(&first_relay).await;
    let mut bob = in_room(&second_relay).await;
    let ann_id = ann.session.presence_id();
    ann.send(json!({"type": "presence", "stream": "room", "data": {"name": "Ann"}}))
        .await;
    let seen = bob
        .until(WAIT, |m| {
            m["type"] == "presence" && m["present"][0]["client"] == ann_id.as_str()
        })
        .await;
    assert_eq!(seen["present"][0]["data"], json!({"name": "Ann"}));

    // A subscriber arriving later on the second relay gets Ann in its full set.
    let mut carol = Probe::open(&second_relay);
    carol.subscribe("room").await;
    let full = carol
        .until(WAIT, |m| m["type"] == "presence" && m["full"] == true)
        .await;
    assert_eq!(
        full["present"],
        json!([{"client": ann_id, "data": {"name": "Ann"}}])
    );

    // Ann's connection closes: she leaves on every relay.
    drop(ann);
    bob.until(WAIT, |m| {
        m["type"] == "presence" && m["left"][0] == ann_id.as_str()
    })
    .await;
    carol
        .until(WAIT, |m| {
            m["type"] == "presence" && m["left"][0] == ann_id.as_str()
        })
        .await;
    assert!(second_relay
        .presence
        .members(&"room".parse().expect("valid"))
        .is_empty());
}

/// A heartbeat refreshes an unchanged presence state with the version it was set with: the
/// other relays only extend its expiry, so no subscriber is sent it again, and a heartbeat
/// can never outrank (and undo) a newer state set while it was going out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_refresh_presence_without_resending_or_undoing_it() {
    let pg = TestPg::start().await;
    let first_relay = hub(&pg.url(), |_| {}).await;
    let second_relay = hub(&pg.url(), |_| {}).await;
    let mut ann = in_room(&first_relay).await;
    let mut bob = in_room(&second_relay).await;
    let ann_id = ann.session.presence_id();
    // Ann changes her state every 100 ms across a heartbeat (while it goes out).
    let rounds = (tidewire_relay::presence::HEARTBEAT.as_millis() / 100 + 10) as u64;
    for round in 1..=rounds {
        ann.send(json!({"type": "presence", "stream": "room", "data": {"round": round}}))
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bob.until(WAIT, |m| {
        m["type"] == "presence" && m["present"][0]["data"]["round"] == rounds
    })
    .await;

    // Through more than one more heartbeat: Bob is sent nothing, and both relays still
    // hold Ann's last state.
    let quiet = tidewire_relay::presence::HEARTBEAT + Duration::from_millis(1500);
    let deadline = tokio::time::Instant::now() + quiet;
    while let Some(message) = bob
        .recv(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        assert_ne!(
            message["type"], "presence",
            "an unchanged presence state was sent again: {message}"
        );
    }
    for relay in [&first_relay, &second_relay] {
        let members = relay.presence.members(&"room".parse().expect("valid"));
        let ann = members
            .iter()
            .find(|member| member.client == ann_id)
            .expect("Ann is present");
        assert_eq!(ann.data, json!({"round": rounds}));
    }
}
