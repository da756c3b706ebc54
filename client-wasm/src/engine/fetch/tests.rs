//! Native tests of snapshots over HTTP: the pages replace the subscription's snapshot, the
//! subscription resumes from their position, 409 starts over, other failures fall back to the
//! socket, and nothing an older subscription sends meanwhile is applied.

use serde_json::{json, Value};
use tidewire_shared::{Json, Op, Record, Snapshot};

use super::{FetchError, MAX_RESTARTS};
use crate::engine::effect::{Effect, Origin};
use crate::engine::status::{State, TransportKind};
use crate::engine::tests::{sent, view_changes as changes};
use crate::engine::view::Scope;
use crate::engine::{CloseInfo, Config, Engine, SnapshotVia, TransportChoice};

fn http_engine(transport: TransportChoice) -> Engine {
    let config = Config {
        transport,
        snapshot: SnapshotVia::Http,
        backoff_initial_ms: 100.0,
        backoff_max_ms: 1000.0,
        ..Config::default()
    };
    Engine::new(config, 7)
}

/// A WebSocket engine, open, with no stream yet.
fn open_ws() -> Engine {
    let mut engine = http_engine(TransportChoice::WebSocket);
    engine.start(0.0);
    engine.on_open(1.0);
    engine.take_effects();
    engine
}

/// The `(stream, id, filter)` of every fetch asked for.
fn fetches(effects: &[Effect]) -> Vec<(String, u32, Option<Value>)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::FetchSnapshot { stream, id, filter } => {
                Some((stream.clone(), *id, filter.clone()))
            }
            _ => None,
        })
        .collect()
}

fn resyncs(effects: &[Effect]) -> usize {
    effects
        .iter()
        .filter(|effect| matches!(effect, Effect::Resync { .. }))
        .count()
}

fn pages(epoch: u64, seq: u64, records: &[(&str, u64, Value)]) -> Snapshot<Json> {
    Snapshot {
        epoch,
        seq,
        records: records
            .iter()
            .map(|(key, seq, data)| Record {
                key: (*key).to_owned(),
                seq: *seq,
                data: Json::from(data),
            })
            .collect(),
    }
}

fn message(value: Value) -> String {
    value.to_string()
}

fn subscribe(stream: &str, since: Option<(u64, u64)>) -> Value {
    match since {
        None => json!({"type": "subscribe", "stream": stream, "snapshot": true}),
        Some((epoch, seq)) => json!({"type": "subscribe", "stream": stream,
                                     "since": {"epoch": epoch, "seq": seq}, "snapshot": true}),
    }
}

fn event(stream: &str, epoch: u64, seq: u64, key: &str, data: Value) -> String {
    message(
        json!({"type": "event", "stream": stream, "epoch": epoch, "seq": seq, "key": key,
                   "op": "upsert", "data": data}),
    )
}

fn subscribed(stream: &str, epoch: u64, seq: u64, resumed: bool) -> String {
    message(
        json!({"type": "subscribed", "stream": stream, "epoch": epoch, "seq": seq,
                   "resumed": resumed}),
    )
}

fn socket_snapshot(stream: &str, epoch: u64, seq: u64, records: Value) -> String {
    message(
        json!({"type": "snapshot", "stream": stream, "epoch": epoch, "seq": seq,
                   "chunk": 0, "last": true, "records": records}),
    )
}

/// The fallback: a snapshot in the subscription ("a" at seq 3) is loaded and reported.
fn assert_socket_snapshot_loads(engine: &mut Engine) {
    engine.on_text(
        &socket_snapshot("todos", 1, 3, json!([{"key": "a", "seq": 3, "data": 1}])),
        2.0,
    );
    engine.on_text(&subscribed("todos", 1, 3, false), 2.0);
    assert_eq!(
        changes(&engine.take_effects()),
        vec![(1, "a".into(), Op::Upsert, 3, Origin::Snapshot)]
    );
}

/// `todos` loaded over HTTP at (1, 5) with a and b, then live at seq 5.
fn live_over_http() -> Engine {
    let mut engine = open_ws();
    engine.open_stream("todos").expect("valid");
    let asked = fetches(&engine.take_effects());
    assert_eq!(asked, vec![("todos".into(), 1, None)]);
    engine.snapshot_fetched(
        "todos",
        1,
        Ok(pages(1, 5, &[("a", 1, json!(1)), ("b", 4, json!(2))])),
    );
    engine.on_text(&subscribed("todos", 1, 5, true), 2.0);
    assert_eq!(engine.status().state, State::Live);
    engine.take_effects();
    engine
}

#[test]
fn the_first_load_reads_pages_then_resumes_from_their_position() {
    let mut engine = http_engine(TransportChoice::WebSocket);
    engine.start(0.0);
    engine.open_stream("todos").expect("valid");
    assert!(
        fetches(&engine.take_effects()).is_empty(),
        "not connected yet"
    );
    engine.on_open(1.0);
    let effects = engine.take_effects();
    assert_eq!(fetches(&effects), vec![("todos".into(), 1, None)]);
    assert!(
        sent(&effects).is_empty(),
        "no subscription before the snapshot"
    );
    assert!(engine.fetch_wanted("todos", 1));
    assert_eq!(engine.status().state, State::Connecting);
    engine.snapshot_fetched(
        "todos",
        1,
        Ok(pages(1, 5, &[("a", 1, json!(1)), ("b", 4, json!(2))])),
    );
    let effects = engine.take_effects();
    assert_eq!(
        changes(&effects),
        vec![
            (1, "a".into(), Op::Upsert, 1, Origin::Snapshot),
            (1, "b".into(), Op::Upsert, 4, Origin::Snapshot),
        ]
    );
    assert_eq!(resyncs(&effects), 0, "a first load is no resync");
    assert_eq!(sent(&effects), vec![subscribe("todos", Some((1, 5)))]);
    assert!(!engine.fetch_wanted("todos", 1));
    // The relay replays what was committed after the snapshot's position (one event twice).
    engine.on_text(&event("todos", 1, 6, "a", json!(3)), 2.0);
    engine.on_text(&event("todos", 1, 6, "a", json!(3)), 2.0);
    engine.on_text(&subscribed("todos", 1, 6, true), 3.0);
    let effects = engine.take_effects();
    assert_eq!(
        changes(&effects),
        vec![(1, "a".into(), Op::Upsert, 6, Origin::Event)]
    );
    assert_eq!(engine.status().state, State::Live);
    assert_eq!(engine.stats().resyncs, 0);
    assert_eq!(engine.stats().duplicates, 1);
}

#[test]
fn a_load_survives_a_lost_connection_and_subscribes_once_reconnected() {
    let mut engine = open_ws();
    engine.open_stream("todos").expect("valid");
    engine.take_effects();
    engine.on_closed(
        CloseInfo {
            close_code: Some(1006),
            opened: true,
            ..CloseInfo::default()
        },
        2.0,
    );
    assert!(
        fetches(&engine.take_effects()).is_empty(),
        "the load goes on"
    );
    engine.on_retry_timer(500.0);
    engine.on_open(510.0);
    let effects = engine.take_effects();
    assert!(sent(&effects).is_empty(), "still loading: {effects:?}");
    assert!(fetches(&effects).is_empty());
    engine.tick(3000.0);
    assert!(sent(&engine.take_effects()).is_empty());
    engine.snapshot_fetched("todos", 1, Ok(pages(1, 9, &[])));
    assert_eq!(
        sent(&engine.take_effects()),
        vec![subscribe("todos", Some((1, 9)))]
    );
    // Finished while no connection is open: subscribed by the next one.
    let mut engine = open_ws();
    engine.open_stream("todos").expect("valid");
    engine.on_closed(CloseInfo::default(), 2.0);
    engine.take_effects();
    engine.snapshot_fetched("todos", 1, Ok(pages(1, 9, &[])));
    assert!(sent(&engine.take_effects()).is_empty());
    engine.on_retry_timer(500.0);
    engine.on_open(510.0);
    assert_eq!(
        sent(&engine.take_effects()),
        vec![subscribe("todos", Some((1, 9)))]
    );
}

#[test]
fn a_resync_answer_starts_over_then_the_socket_snapshot_is_used() {
    let mut engine = open_ws();
    engine.open_stream("todos").expect("valid");
    engine.take_effects();
    let mut id = 1;
    for _ in 0..MAX_RESTARTS {
        engine.snapshot_fetched("todos", id, Err(FetchError::Resync));
        let effects = engine.take_effects();
        assert_eq!(fetches(&effects), vec![("todos".into(), id + 1, None)]);
        assert!(sent(&effects).is_empty());
        assert!(!engine.fetch_wanted("todos", id));
        id += 1;
        assert!(engine.fetch_wanted("todos", id));
    }
    // A stale answer of a load that was started over is ignored.
    engine.snapshot_fetched("todos", 1, Ok(pages(1, 1, &[("old", 1, json!(0))])));
    assert!(engine.take_effects().is_empty());
    engine.snapshot_fetched("todos", id, Err(FetchError::Resync));
    let effects = engine.take_effects();
    assert!(fetches(&effects).is_empty());
    assert_eq!(sent(&effects), vec![subscribe("todos", None)]);
    assert_socket_snapshot_loads(&mut engine);
    assert_eq!(engine.status().state, State::Live);
}

#[test]
fn other_failures_fall_back_to_the_socket_for_that_load_only() {
    let mut engine = open_ws();
    engine.open_stream("todos").expect("valid");
    engine.take_effects();
    engine.snapshot_fetched("todos", 1, Err(FetchError::Failed("network error".into())));
    let effects = engine.take_effects();
    assert!(changes(&effects).is_empty(), "nothing of a failed load");
    assert_eq!(sent(&effects), vec![subscribe("todos", None)]);
    assert_socket_snapshot_loads(&mut engine);
    // The stream is dropped: the next load is over HTTP again.
    engine.on_text(
        &message(json!({"type": "advisory", "kind": "dropped", "stream": "todos"})),
        3.0,
    );
    engine.take_effects();
    engine.tick(4.0);
    assert_eq!(
        fetches(&engine.take_effects()),
        vec![("todos".into(), 2, None)]
    );
}

#[test]
fn an_older_subscription_is_ignored_while_loading() {
    let mut engine = live_over_http();
    // Dropped and recreated: the old subscription keeps talking while the new load runs.
    engine.on_text(
        &message(json!({"type": "advisory", "kind": "dropped", "stream": "todos"})),
        3.0,
    );
    let effects = engine.take_effects();
    assert_eq!(
        changes(&effects)
            .iter()
            .map(|change| (change.1.clone(), change.2))
            .collect::<Vec<_>>(),
        vec![("a".into(), Op::Delete), ("b".into(), Op::Delete)]
    );
    engine.tick(4.0);
    assert_eq!(
        fetches(&engine.take_effects()),
        vec![("todos".into(), 2, None)]
    );
    engine.on_text(
        &message(json!({"type": "advisory", "kind": "resync", "stream": "todos"})),
        5.0,
    );
    engine.on_text(
        &socket_snapshot("todos", 2, 1, json!([{"key": "x", "seq": 1, "data": 1}])),
        5.0,
    );
    engine.on_text(&subscribed("todos", 2, 1, false), 5.0);
    engine.on_text(&event("todos", 2, 2, "y", json!(2)), 5.0);
    let effects = engine.take_effects();
    assert!(changes(&effects).is_empty(), "{effects:?}");
    assert!(!engine.is_live("todos"));
    assert!(engine.fetch_wanted("todos", 2));
    engine.snapshot_fetched("todos", 2, Ok(pages(2, 1, &[("x", 1, json!(1))])));
    let effects = engine.take_effects();
    assert_eq!(
        changes(&effects),
        vec![(1, "x".into(), Op::Upsert, 1, Origin::Snapshot)]
    );
    assert_eq!(sent(&effects), vec![subscribe("todos", Some((2, 1)))]);
    engine.on_text(&event("todos", 2, 2, "y", json!(2)), 6.0);
    engine.on_text(&subscribed("todos", 2, 2, true), 6.0);
    assert_eq!(
        changes(&engine.take_effects()),
        vec![(1, "y".into(), Op::Upsert, 2, Origin::Event)]
    );
    assert!(engine.is_live("todos"));
}

#[test]
fn views_load_their_union_and_a_new_filter_loads_again() {
    let mut engine = open_ws();
    let u1 = engine
        .open_view("tasks", Some(&json!({"owner": "u1"})))
        .expect("valid");
    assert_eq!(
        fetches(&engine.take_effects()),
        vec![("tasks".into(), 1, Some(json!({"owner": "u1"})))]
    );
    let u2 = engine
        .open_view("tasks", Some(&json!({"owner": "u2"})))
        .expect("valid");
    let effects = engine.take_effects();
    assert!(sent(&effects).is_empty() && fetches(&effects).is_empty());
    // u1's pages arrive: shown in u1's view; the union changed, so it loads again.
    engine.snapshot_fetched(
        "tasks",
        1,
        Ok(pages(1, 10, &[("t1", 3, json!({"owner": "u1"}))])),
    );
    let effects = engine.take_effects();
    assert_eq!(
        changes(&effects),
        vec![(u1, "t1".into(), Op::Upsert, 3, Origin::Snapshot)]
    );
    let union = json!({"owner": {"in": ["u1", "u2"]}});
    assert_eq!(
        fetches(&effects),
        vec![("tasks".into(), 2, Some(union.clone()))]
    );
    assert!(sent(&effects).is_empty());
    engine.snapshot_fetched(
        "tasks",
        2,
        Ok(pages(
            1,
            12,
            &[
                ("t1", 3, json!({"owner": "u1"})),
                ("t2", 11, json!({"owner": "u2"})),
            ],
        )),
    );
    let effects = engine.take_effects();
    assert_eq!(
        changes(&effects),
        vec![(u2, "t2".into(), Op::Upsert, 11, Origin::Snapshot)],
        "u1 hears nothing: nothing changed for it"
    );
    assert_eq!(resyncs(&effects), 0);
    assert_eq!(
        sent(&effects),
        vec![
            json!({"type": "subscribe", "stream": "tasks", "since": {"epoch": 1, "seq": 12},
                     "where": union, "snapshot": true})
        ]
    );
    engine.on_text(&subscribed("tasks", 1, 12, true), 3.0);
    assert!(engine.is_view_live(u1) && engine.is_view_live(u2));
}

#[test]
fn sse_leaves_a_loading_stream_out_and_resyncs_over_http() {
    let mut engine = http_engine(TransportChoice::Sse);
    engine.start(0.0);
    engine.open_stream("todos").expect("valid");
    let effects = engine.take_effects();
    assert_eq!(fetches(&effects), vec![("todos".into(), 1, None)]);
    assert!(
        !effects.contains(&Effect::Connect(TransportKind::Sse)),
        "no stream to name yet"
    );
    assert!(engine.sse_streams().is_empty());
    engine.snapshot_fetched("todos", 1, Ok(pages(1, 5, &[("a", 5, json!(1))])));
    assert!(engine
        .take_effects()
        .contains(&Effect::Connect(TransportKind::Sse)));
    assert_eq!(
        engine.sse_streams(),
        vec![(
            "todos".into(),
            Some(tidewire_shared::Position { epoch: 1, seq: 5 }),
            None
        )]
    );
    engine.on_open(1.0);
    engine.on_text(&subscribed("todos", 1, 5, true), 2.0);
    assert_eq!(engine.status().state, State::Live);
    engine.take_effects();
    // The stream was recreated: a resync, whose snapshot is loaded over HTTP too.
    engine.on_text(&event("todos", 2, 1, "b", json!(2)), 3.0);
    let effects = engine.take_effects();
    assert_eq!(fetches(&effects), vec![("todos".into(), 2, None)]);
    assert!(effects.contains(&Effect::Disconnect));
    // No other stream to name: the SSE request waits for the load (status "connecting").
    assert!(!effects.contains(&Effect::Connect(TransportKind::Sse)));
    assert!(!engine.is_live("todos"));
    engine.snapshot_fetched("todos", 2, Ok(pages(2, 1, &[("b", 1, json!(2))])));
    let effects = engine.take_effects();
    assert_eq!(resyncs(&effects), 1);
    assert_eq!(
        changes(&effects),
        vec![
            (1, "b".into(), Op::Upsert, 1, Origin::Snapshot),
            (1, "a".into(), Op::Delete, 1, Origin::Snapshot),
        ]
    );
    assert_eq!(engine.stats().resyncs, 1);
    assert_eq!(
        engine.sse_streams()[0].1,
        Some(tidewire_shared::Position { epoch: 2, seq: 1 })
    );
    engine.on_open(4.0);
    engine.on_text(&subscribed("todos", 2, 1, true), 5.0);
    assert_eq!(engine.status().state, State::Live);
}

#[test]
fn a_resync_on_a_live_websocket_stays_in_the_subscription() {
    let mut engine = live_over_http();
    engine.on_text(&event("todos", 2, 1, "c", json!(3)), 3.0);
    let effects = engine.take_effects();
    assert!(fetches(&effects).is_empty());
    assert_eq!(sent(&effects), vec![subscribe("todos", None)]);
}

#[test]
fn raw_channels_and_the_default_never_load_over_http() {
    let mut engine = open_ws();
    engine.open_stream("raw:orders").expect("valid");
    let effects = engine.take_effects();
    assert!(fetches(&effects).is_empty());
    assert_eq!(sent(&effects), vec![subscribe("raw:orders", None)]);
    let mut engine = Engine::new(
        Config {
            transport: TransportChoice::WebSocket,
            ..Config::default()
        },
        1,
    );
    engine.start(0.0);
    engine.on_open(1.0);
    engine.open_stream("todos").expect("valid");
    let effects = engine.take_effects();
    assert!(fetches(&effects).is_empty());
    assert_eq!(sent(&effects), vec![subscribe("todos", None)]);
}

#[test]
fn stored_state_resumes_and_none_loads_over_http() {
    let config = Config {
        transport: TransportChoice::WebSocket,
        snapshot: SnapshotVia::Http,
        persist: true,
        ..Config::default()
    };
    let mut engine = Engine::new(config.clone(), 1);
    engine.start(0.0);
    engine.on_open(1.0);
    engine.open_stream("todos").expect("valid");
    engine.open_stream("notes").expect("valid");
    let effects = engine.take_effects();
    assert!(effects.contains(&Effect::Restore("todos".into())));
    assert!(fetches(&effects).is_empty());
    engine.restored(
        "todos",
        Some((Scope::All, pages(1, 4, &[("a", 4, json!(1))]))),
    );
    let effects = engine.take_effects();
    assert!(fetches(&effects).is_empty());
    assert_eq!(sent(&effects), vec![subscribe("todos", Some((1, 4)))]);
    engine.restored("notes", None);
    let effects = engine.take_effects();
    assert_eq!(fetches(&effects), vec![("notes".into(), 1, None)]);
    // A late `restored` does not disturb the load.
    engine.restored("notes", Some((Scope::All, pages(1, 1, &[]))));
    assert!(engine.take_effects().is_empty());
    engine.snapshot_fetched("notes", 1, Ok(pages(3, 8, &[("n", 8, json!(1))])));
    let effects = engine.take_effects();
    assert!(effects.contains(&Effect::Persist("notes".into())));
    assert_eq!(sent(&effects), vec![subscribe("notes", Some((3, 8)))]);
}

#[test]
fn close_abandons_a_load() {
    let mut engine = open_ws();
    engine.open_stream("todos").expect("valid");
    engine.take_effects();
    engine.close();
    engine.take_effects();
    assert!(!engine.fetch_wanted("todos", 1));
    engine.snapshot_fetched("todos", 1, Ok(pages(1, 1, &[("a", 1, json!(1))])));
    assert!(engine.take_effects().is_empty());
    assert_eq!(engine.collection("todos").map(|c| c.len()), Some(0));
}
