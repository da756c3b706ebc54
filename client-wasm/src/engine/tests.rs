//! Native tests of the engine's rules: resume, dedupe, gaps, resync, backoff, fallback,
//! authentication failures, offline handling and writes.

use serde_json::json;
use tidewire_shared::{Json, Op};

use super::effect::{Effect, Origin};
use super::status::{State, TransportKind};
use super::view::Scope;
use super::{CloseInfo, Config, Engine, TransportChoice};

fn engine(transport: TransportChoice) -> Engine {
    let config = Config {
        transport,
        backoff_initial_ms: 100.0,
        backoff_max_ms: 1000.0,
        ..Config::default()
    };
    Engine::new(config, 42)
}

/// The effects without status updates.
fn io(effects: Vec<Effect>) -> Vec<Effect> {
    effects
        .into_iter()
        .filter(|effect| !matches!(effect, Effect::Status(_)))
        .collect()
}

/// Every message sent, decoded (also used by the tests of `fetch`).
pub(super) fn sent(effects: &[Effect]) -> Vec<serde_json::Value> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Send(text) => serde_json::from_str(text).ok(),
            _ => None,
        })
        .collect()
}

fn changes(effects: &[Effect]) -> Vec<(String, Op, u64, Origin)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Changes {
                changes, origin, ..
            } => Some(
                changes
                    .iter()
                    .map(|change| (change.key.clone(), change.op, change.seq, *origin))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect()
}

fn snapshot(epoch: u64, seq: u64, records: serde_json::Value) -> String {
    json!({"type": "snapshot", "stream": "todos", "epoch": epoch, "seq": seq, "chunk": 0,
           "last": true, "records": records})
    .to_string()
}

fn subscribed(epoch: u64, seq: u64, resumed: bool) -> String {
    json!({"type": "subscribed", "stream": "todos", "epoch": epoch, "seq": seq, "resumed": resumed})
        .to_string()
}

fn event(epoch: u64, seq: u64, key: &str, data: serde_json::Value) -> String {
    json!({"type": "event", "stream": "todos", "epoch": epoch, "seq": seq, "key": key,
           "op": "upsert", "data": data})
    .to_string()
}

/// A WebSocket engine with `todos` live at epoch 1, seq 2 (records a, b).
fn live_engine() -> Engine {
    let mut engine = engine(TransportChoice::WebSocket);
    engine.start(0.0);
    engine.open_stream("todos").expect("valid");
    engine.on_open(1.0);
    engine.on_text(
        &snapshot(
            1,
            2,
            json!([{"key": "a", "seq": 1, "data": 1}, {"key": "b", "seq": 2, "data": 2}]),
        ),
        2.0,
    );
    engine.on_text(&subscribed(1, 2, false), 3.0);
    assert_eq!(engine.status().state, State::Live);
    engine.take_effects();
    engine
}

#[test]
fn snapshot_then_live_then_dedupe() {
    let mut engine = engine(TransportChoice::WebSocket);
    engine.start(0.0);
    assert_eq!(
        io(engine.take_effects()),
        vec![Effect::Connect(TransportKind::WebSocket)]
    );
    engine.open_stream("todos").expect("valid");
    assert!(sent(&engine.take_effects()).is_empty(), "not connected yet");
    engine.on_open(1.0);
    let effects = engine.take_effects();
    assert_eq!(
        sent(&effects),
        vec![json!({"type": "subscribe", "stream": "todos", "snapshot": true})]
    );
    engine.on_text(
        &snapshot(
            1,
            2,
            json!([{"key": "a", "seq": 1, "data": 1}, {"key": "b", "seq": 2, "data": 2}]),
        ),
        2.0,
    );
    assert_eq!(engine.status().state, State::Connecting);
    engine.on_text(&subscribed(1, 2, false), 3.0);
    let effects = engine.take_effects();
    assert_eq!(
        changes(&effects),
        vec![
            ("a".into(), Op::Upsert, 1, Origin::Snapshot),
            ("b".into(), Op::Upsert, 2, Origin::Snapshot)
        ]
    );
    assert!(!effects
        .iter()
        .any(|effect| matches!(effect, Effect::Resync { .. })));
    assert_eq!(engine.status().state, State::Live);
    engine.on_text(&event(1, 3, "a", json!(3)), 4.0);
    engine.on_text(&event(1, 3, "a", json!(3)), 4.0);
    engine.on_text(&event(1, 2, "b", json!(2)), 4.0);
    let effects = engine.take_effects();
    assert_eq!(
        changes(&effects),
        vec![("a".into(), Op::Upsert, 3, Origin::Event)]
    );
    assert_eq!(engine.stats().duplicates, 2);
    assert_eq!(engine.collection("todos").map(|c| c.applied()), Some(3));
}

#[test]
fn reconnect_resumes_from_applied_position_with_backoff() {
    let mut engine = live_engine();
    engine.on_text(&event(1, 3, "c", json!(3)), 5.0);
    engine.take_effects();
    engine.on_closed(
        CloseInfo {
            close_code: Some(1006),
            ..CloseInfo::default()
        },
        10.0,
    );
    let effects = engine.take_effects();
    let delay = effects.iter().find_map(|effect| match effect {
        Effect::RetryIn(delay) => Some(*delay),
        _ => None,
    });
    assert!(delay.is_some_and(|delay| delay <= 100), "{effects:?}");
    assert_eq!(engine.status().state, State::Connecting);
    assert_eq!(engine.status().code.as_deref(), Some("connection_lost"));
    // Further failures grow the cap; a success resets it.
    engine.on_retry_timer(200.0);
    assert_eq!(
        io(engine.take_effects()),
        vec![Effect::Connect(TransportKind::WebSocket)]
    );
    engine.on_closed(CloseInfo::default(), 210.0);
    assert_eq!(engine.status().attempt, 2);
    engine.take_effects();
    engine.on_retry_timer(500.0);
    engine.on_open(510.0);
    let effects = engine.take_effects();
    assert_eq!(
        sent(&effects),
        vec![
            json!({"type": "subscribe", "stream": "todos", "since": {"epoch": 1, "seq": 3}, "snapshot": true})
        ]
    );
    // The replay repeats seq 3 (dropped) and brings seq 4.
    engine.on_text(&event(1, 3, "c", json!(3)), 520.0);
    engine.on_text(&event(1, 4, "d", json!(4)), 520.0);
    engine.on_text(&subscribed(1, 4, true), 530.0);
    let effects = engine.take_effects();
    assert_eq!(
        changes(&effects),
        vec![("d".into(), Op::Upsert, 4, Origin::Event)]
    );
    assert_eq!(engine.status().state, State::Live);
    assert_eq!(engine.status().attempt, 0);
}

#[test]
fn gap_asks_for_a_replay_once() {
    let mut engine = live_engine();
    engine.on_text(&event(1, 5, "e", json!(5)), 5.0);
    engine.on_text(&event(1, 6, "f", json!(6)), 5.0);
    let effects = engine.take_effects();
    assert_eq!(
        sent(&effects),
        vec![
            json!({"type": "subscribe", "stream": "todos", "since": {"epoch": 1, "seq": 2}, "snapshot": true})
        ]
    );
    assert_eq!(engine.stats().gaps, 1);
    // The replay fills 3 and 4, repeats 5 and 6.
    for seq in 3..=6 {
        engine.on_text(&event(1, seq, &format!("k{seq}"), json!(seq)), 6.0);
    }
    engine.on_text(&subscribed(1, 6, true), 7.0);
    let effects = engine.take_effects();
    let keys: Vec<String> = changes(&effects).into_iter().map(|c| c.0).collect();
    assert_eq!(keys, vec!["k3", "k4"]);
    assert_eq!(engine.collection("todos").map(|c| c.applied()), Some(6));
    assert_eq!(engine.status().state, State::Live);
}

#[test]
fn epoch_change_reloads_the_snapshot_and_reports_it() {
    let mut engine = live_engine();
    engine.on_text(&event(2, 1, "x", json!(1)), 5.0);
    let effects = engine.take_effects();
    assert_eq!(
        sent(&effects),
        vec![json!({"type": "subscribe", "stream": "todos", "snapshot": true})]
    );
    assert_eq!(engine.status().state, State::Resyncing);
    engine.on_text(
        &snapshot(2, 1, json!([{"key": "a", "seq": 1, "data": 10}])),
        6.0,
    );
    engine.on_text(&subscribed(2, 1, false), 7.0);
    let effects = engine.take_effects();
    assert!(effects
        .iter()
        .any(|effect| matches!(effect, Effect::Resync { .. })));
    assert_eq!(
        changes(&effects),
        vec![
            ("a".into(), Op::Upsert, 1, Origin::Snapshot),
            ("b".into(), Op::Delete, 1, Origin::Snapshot)
        ]
    );
    assert_eq!(engine.status().state, State::Live);
    assert_eq!(engine.stats().resyncs, 1);
}

#[test]
fn resync_advisory_shows_resyncing_until_the_snapshot() {
    let mut engine = live_engine();
    engine.on_text(
        r#"{"type":"advisory","kind":"resync","stream":"todos","epoch":1,"reason":"outside retention"}"#,
        5.0,
    );
    assert_eq!(engine.status().state, State::Resyncing);
    assert_eq!(engine.status().reason, "outside retention");
    engine.on_text(
        &snapshot(1, 9, json!([{"key": "a", "seq": 1, "data": 1}])),
        6.0,
    );
    engine.on_text(&subscribed(1, 9, false), 7.0);
    assert_eq!(engine.status().state, State::Live);
    let effects = engine.take_effects();
    assert_eq!(
        changes(&effects),
        vec![("b".into(), Op::Delete, 9, Origin::Snapshot)]
    );
}

#[test]
fn auto_falls_back_to_sse_then_backs_off() {
    let mut engine = engine(TransportChoice::Auto);
    engine.start(0.0);
    engine.open_stream("todos").expect("valid");
    engine.take_effects();
    engine.on_closed(
        CloseInfo {
            close_code: Some(1006),
            ..CloseInfo::default()
        },
        1.0,
    );
    assert_eq!(
        io(engine.take_effects()),
        vec![Effect::Connect(TransportKind::Sse)]
    );
    assert_eq!(engine.sse_streams(), vec![("todos".to_owned(), None, None)]);
    engine.on_closed(CloseInfo::default(), 2.0);
    let effects = engine.take_effects();
    assert!(
        matches!(effects.as_slice(), [Effect::RetryIn(_), ..]),
        "{effects:?}"
    );
    // The next round starts with a WebSocket again.
    engine.on_retry_timer(1000.0);
    assert_eq!(
        io(engine.take_effects()),
        vec![Effect::Connect(TransportKind::WebSocket)]
    );
}

#[test]
fn sse_writes_go_over_http_and_positions_resume() {
    let mut engine = engine(TransportChoice::Sse);
    engine.start(0.0);
    engine.open_stream("todos").expect("valid");
    engine.on_open(1.0);
    engine.on_text(&snapshot(3, 7, json!([])), 2.0);
    engine.on_text(&subscribed(3, 7, false), 3.0);
    engine.take_effects();
    let id = engine
        .write("todos", "a", Op::Upsert, json!({"x": 1}))
        .expect("valid");
    let effects = engine.take_effects();
    assert!(
        matches!(&effects[..], [Effect::Changes { origin: Origin::Local, .. }, Effect::Post { stream, body, write_id: Some(_), .. }]
            if stream == "todos" && body == r#"{"data":{"x":1},"key":"a","op":"upsert"}"#),
        "{effects:?}"
    );
    engine.on_post_result(&id, Ok(8));
    // Resolved once the event at that seq is applied here (read your writes).
    assert!(engine.take_effects().is_empty());
    engine.on_text(&event(3, 8, "a", json!({"x": 1})), 4.0);
    let effects = io(engine.take_effects());
    assert!(
        matches!(&effects[..], [Effect::WriteSettled(_), Effect::Resolve { id: resolved, seq: 8 }] if *resolved == id),
        "{effects:?}"
    );
    assert_eq!(
        engine.sse_streams(),
        vec![(
            "todos".to_owned(),
            Some(tidewire_shared::Position { epoch: 3, seq: 8 }),
            None
        )]
    );
}

#[test]
fn auth_failure_waits_for_a_new_token() {
    let mut engine = live_engine();
    engine.on_closed(
        CloseInfo {
            close_code: Some(4001),
            reason: "unauthorized".into(),
            ..CloseInfo::default()
        },
        5.0,
    );
    let effects = engine.take_effects();
    assert!(!effects
        .iter()
        .any(|effect| matches!(effect, Effect::RetryIn(_) | Effect::Connect(_))));
    let status = engine.status();
    assert_eq!(status.state, State::Offline);
    assert_eq!(status.code.as_deref(), Some("unauthorized"));
    assert_eq!(status.close_code, Some(4001));
    engine.token_changed("fresh");
    assert!(engine
        .take_effects()
        .contains(&Effect::Connect(TransportKind::WebSocket)));
    assert_eq!(engine.status().state, State::Connecting);
}

fn closed_with(engine: &mut Engine, close_code: u16) -> Vec<Effect> {
    engine.on_closed(
        CloseInfo {
            close_code: Some(close_code),
            opened: true,
            ..CloseInfo::default()
        },
        5.0,
    );
    engine.take_effects()
}

fn reconnects(effects: &[Effect]) -> bool {
    effects
        .iter()
        .any(|effect| matches!(effect, Effect::RetryIn(_) | Effect::Connect(_)))
}

#[test]
fn an_expired_token_waits_for_a_new_one() {
    let mut engine = live_engine();
    assert!(!reconnects(&closed_with(&mut engine, 4004)));
    assert_eq!(engine.status().code.as_deref(), Some("token_expired"));
    engine.token_changed("fresh");
    assert!(engine
        .take_effects()
        .contains(&Effect::Connect(TransportKind::WebSocket)));
}

#[test]
fn a_policy_violation_is_final_even_with_a_new_token() {
    let mut engine = live_engine();
    assert!(!reconnects(&closed_with(&mut engine, 1008)));
    let status = engine.status();
    assert_eq!(
        (status.state, status.code.as_deref()),
        (State::Offline, Some("policy_violation"))
    );
    engine.token_changed("fresh");
    assert!(!reconnects(&engine.take_effects()));
}

#[test]
fn an_overloaded_relay_is_retried_later() {
    let mut engine = live_engine();
    let effects = closed_with(&mut engine, 4503);
    let delays: Vec<u32> = effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::RetryIn(delay) => Some(*delay),
            _ => None,
        })
        .collect();
    assert_eq!(delays.len(), 1, "{effects:?}");
    assert!(
        u64::from(delays[0]) >= tidewire_shared::ending::LATER_MIN_MS,
        "{delays:?}"
    );
}

#[test]
fn token_change_on_a_live_socket_sends_auth() {
    let mut engine = live_engine();
    engine.token_changed("fresh");
    assert_eq!(
        sent(&engine.take_effects()),
        vec![json!({"type": "auth", "token": "fresh"})]
    );
}

#[test]
fn offline_pauses_and_online_resumes_at_once() {
    let mut engine = live_engine();
    engine.set_online(false, 5.0);
    engine.on_closed(CloseInfo::default(), 6.0);
    let effects = engine.take_effects();
    assert!(!effects
        .iter()
        .any(|effect| matches!(effect, Effect::RetryIn(_))));
    assert_eq!(engine.status().state, State::Offline);
    engine.set_online(true, 7.0);
    assert!(engine
        .take_effects()
        .contains(&Effect::Connect(TransportKind::WebSocket)));
}

#[test]
fn hidden_page_waits_for_visibility_before_reconnecting() {
    let mut engine = live_engine();
    engine.set_visible(false, 5.0);
    assert_eq!(
        engine.status().state,
        State::Live,
        "a live connection stays"
    );
    engine.on_closed(CloseInfo::default(), 6.0);
    engine.take_effects();
    engine.on_retry_timer(1000.0);
    assert!(!engine
        .take_effects()
        .iter()
        .any(|effect| matches!(effect, Effect::Connect(_))));
    assert_eq!(engine.status().state, State::Offline);
    engine.set_visible(true, 2000.0);
    assert!(engine
        .take_effects()
        .contains(&Effect::Connect(TransportKind::WebSocket)));
}

#[test]
fn writes_queue_while_down_and_fail_when_lost() {
    let mut engine = engine(TransportChoice::WebSocket);
    engine.start(0.0);
    let queued = engine
        .write("todos", "a", Op::Upsert, json!(1))
        .expect("valid");
    assert!(sent(&engine.take_effects()).is_empty());
    engine.on_open(1.0);
    let effects = engine.take_effects();
    assert_eq!(
        sent(&effects),
        vec![
            json!({"type": "publish", "id": queued, "stream": "todos", "key": "a", "op": "upsert", "data": 1,
                   "write_id": format!("{}.1", engine.writer)})
        ]
    );
    let acked = engine
        .write("todos", "b", Op::Delete, json!(null))
        .expect("valid");
    engine.on_text(
        &json!({"type": "ack", "id": acked, "stream": "todos", "seq": 5}).to_string(),
        2.0,
    );
    engine.take_effects();
    engine.on_closed(CloseInfo::default(), 3.0);
    let effects = engine.take_effects();
    // A durable write is not failed: it is sent again, with its write id, once reconnected.
    assert!(!effects
        .iter()
        .any(|effect| matches!(effect, Effect::Reject { .. })));
    let message = engine
        .write("todos", "m", Op::Message, json!(1))
        .expect("valid");
    engine.on_retry_timer(1000.0);
    engine.on_open(1001.0);
    let again = sent(&engine.take_effects());
    let publishes: Vec<_> = again
        .iter()
        .filter(|message| message["type"] == "publish")
        .collect();
    assert_eq!(publishes.len(), 2, "{again:?}");
    assert_eq!(publishes[0]["id"], json!(queued));
    assert_eq!(
        publishes[0]["write_id"],
        json!(format!("{}.1", engine.writer))
    );
    assert_eq!(publishes[1]["op"], json!("message"));
    assert_eq!(publishes[1].get("write_id"), None);
    // Ephemeral messages are sent at most once.
    engine.on_closed(CloseInfo::default(), 1002.0);
    assert!(engine.take_effects().iter().any(|effect| matches!(effect,
        Effect::Reject { id, code, .. } if *id == message && code == "connection_lost")));
    assert!(engine
        .write("todos", "", Op::Upsert, json!(1))
        .is_err_and(|error| error.code() == "bad_key"));
    assert!(engine
        .write("todos", "k", Op::Patch, json!(1))
        .is_err_and(|error| error.code() == "bad_data"));
}

#[test]
fn relay_errors_reject_writes_and_fail_subscriptions() {
    let mut engine = live_engine();
    let id = engine
        .write("todos", "a", Op::Upsert, json!(1))
        .expect("valid");
    engine.on_text(
        &json!({"type": "error", "id": id, "code": "forbidden", "message": "no"}).to_string(),
        5.0,
    );
    engine.open_stream("secret").expect("valid");
    engine.on_text(
        r#"{"type":"error","stream":"secret","code":"forbidden","message":"no read access"}"#,
        6.0,
    );
    let effects = engine.take_effects();
    assert!(effects.iter().any(|effect| matches!(effect,
        Effect::Reject { code, .. } if code == "forbidden")));
    assert!(effects.iter().any(|effect| matches!(effect,
        Effect::StreamError { stream, code, .. } if stream == "secret" && code == "forbidden")));
    assert_eq!(
        engine.status().state,
        State::Live,
        "a refused stream does not block"
    );
}

#[test]
fn degraded_relay_and_ephemeral_messages() {
    let mut engine = live_engine();
    engine.on_text(
        r#"{"type":"advisory","kind":"disconnect","reason":"pg down"}"#,
        5.0,
    );
    assert_eq!(engine.status().state, State::Connecting);
    assert_eq!(engine.status().code.as_deref(), Some("unavailable"));
    engine.on_text(r#"{"type":"advisory","kind":"reconnect"}"#, 6.0);
    assert_eq!(engine.status().state, State::Live);
    engine.on_text(
        r#"{"type":"event","stream":"todos","epoch":1,"seq":0,"key":"cursor","op":"message","data":{"x":1}}"#,
        7.0,
    );
    let effects = engine.take_effects();
    assert!(effects.iter().any(|effect| matches!(effect,
        Effect::Message { key, .. } if key == "cursor")));
    assert!(changes(&effects).is_empty());
}

#[test]
fn keepalive_pings_then_replaces_a_silent_socket() {
    let mut engine = live_engine();
    engine.tick(3.0 + 21_000.0);
    assert_eq!(sent(&engine.take_effects()), vec![json!({"type": "ping"})]);
    engine.tick(3.0 + 51_000.0);
    let effects = engine.take_effects();
    assert!(effects.contains(&Effect::Disconnect));
    assert!(effects
        .iter()
        .any(|effect| matches!(effect, Effect::RetryIn(_))));
    assert_eq!(engine.status().code.as_deref(), Some("keepalive_timeout"));
}

/// A started engine that persists its collections, its WebSocket open.
fn persisting_engine() -> Engine {
    let config = Config {
        transport: TransportChoice::WebSocket,
        persist: true,
        ..Config::default()
    };
    let mut engine = Engine::new(config, 1);
    engine.start(0.0);
    engine.on_open(1.0);
    engine
}

#[test]
fn persistence_restores_then_resumes() {
    let mut engine = persisting_engine();
    engine.open_stream("todos").expect("valid");
    assert!(engine
        .take_effects()
        .contains(&Effect::Restore("todos".into())));
    let stored = tidewire_shared::Snapshot {
        epoch: 4,
        seq: 10,
        records: vec![tidewire_shared::Record {
            key: "a".into(),
            seq: 10,
            data: Json::from(json!(1)),
        }],
    };
    engine.restored("todos", Some((Scope::All, stored.clone())));
    let effects = engine.take_effects();
    assert_eq!(
        changes(&effects),
        vec![("a".into(), Op::Upsert, 10, Origin::Restore)]
    );
    assert_eq!(
        sent(&effects),
        vec![
            json!({"type": "subscribe", "stream": "todos", "since": {"epoch": 4, "seq": 10}, "snapshot": true})
        ]
    );
    engine.on_text(&subscribed(4, 10, true), 2.0);
    engine.on_text(
        &json!({"type": "event", "stream": "todos", "epoch": 4, "seq": 11, "key": "a",
                "op": "delete"})
        .to_string(),
        3.0,
    );
    assert!(engine
        .take_effects()
        .contains(&Effect::Persist("todos".into())));
    assert_eq!(
        engine.persistable("todos"),
        Some((
            Scope::All,
            tidewire_shared::Snapshot {
                epoch: 4,
                seq: 11,
                records: vec![]
            }
        ))
    );
}

#[test]
fn close_rejects_everything_and_is_final() {
    let mut engine = engine(TransportChoice::WebSocket);
    engine.start(0.0);
    let id = engine
        .write("todos", "a", Op::Upsert, json!(1))
        .expect("valid");
    engine.close();
    let effects = engine.take_effects();
    assert!(effects.contains(&Effect::Disconnect));
    assert!(effects.iter().any(|effect| matches!(effect,
        Effect::Reject { id: rejected, code, .. } if *rejected == id && code == "closed")));
    assert_eq!(engine.status().state, State::Closed);
    assert!(engine.open_stream("x").is_err());
    engine.on_closed(CloseInfo::default(), 1.0);
    assert!(engine.take_effects().is_empty());
}

#[test]
fn sse_waits_for_a_stream_before_connecting() {
    let mut engine = engine(TransportChoice::Sse);
    engine.start(0.0);
    assert!(io(engine.take_effects()).is_empty());
    engine.open_stream("todos").expect("valid");
    assert_eq!(
        io(engine.take_effects()),
        vec![Effect::Connect(TransportKind::Sse)]
    );
}

#[test]
fn forced_websocket_probes_why_it_could_not_open() {
    let mut engine = engine(TransportChoice::WebSocket);
    engine.start(0.0);
    engine.open_stream("todos").expect("valid");
    engine.take_effects();
    engine.on_closed(CloseInfo::default(), 1.0);
    let effects = io(engine.take_effects());
    assert!(
        effects.contains(&Effect::Probe("todos".into())),
        "{effects:?}"
    );
    engine.on_probe(Some(401), Some("unauthorized".into()), "bad token".into());
    assert!(io(engine.take_effects()).contains(&Effect::CancelRetry));
    assert_eq!(engine.status().state, State::Offline);
    assert_eq!(engine.status().code.as_deref(), Some("unauthorized"));
}

#[test]
fn a_stream_added_while_sse_connects_restarts_the_request() {
    let mut engine = engine(TransportChoice::Sse);
    engine.start(0.0);
    engine.open_stream("todos").expect("valid");
    engine.take_effects();
    engine.open_stream("notes").expect("valid");
    let effects = io(engine.take_effects());
    assert_eq!(
        effects,
        vec![Effect::Disconnect, Effect::Connect(TransportKind::Sse)]
    );
    assert_eq!(engine.sse_streams().len(), 2);
}

// Views: several collections of one stream with their own filters, over one subscription of
// the union of their filters.

/// Every change effect as `(view, key, op, seq, origin)` (also used by the tests of `fetch`).
pub(super) fn view_changes(effects: &[Effect]) -> Vec<(u32, String, Op, u64, Origin)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Changes {
                view,
                changes,
                origin,
                ..
            } => Some(
                changes
                    .iter()
                    .map(|change| (*view, change.key.clone(), change.op, change.seq, *origin))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect()
}

fn tasks_snapshot(seq: u64, records: serde_json::Value) -> String {
    json!({"type": "snapshot", "stream": "tasks", "epoch": 1, "seq": seq, "chunk": 0,
           "last": true, "records": records})
    .to_string()
}

fn tasks_subscribed(seq: u64, resumed: bool) -> String {
    json!({"type": "subscribed", "stream": "tasks", "epoch": 1, "seq": seq, "resumed": resumed})
        .to_string()
}

/// An event of a view: `prev` is the position the relay says we are at.
fn tasks_event(seq: u64, prev: u64, key: &str, op: &str, data: serde_json::Value) -> String {
    json!({"type": "event", "stream": "tasks", "epoch": 1, "seq": seq, "key": key, "op": op,
           "data": data, "prev": prev})
    .to_string()
}

/// The keys view `id` holds, sorted.
fn keys_of(engine: &Engine, id: u32) -> Vec<String> {
    let mut keys: Vec<String> = engine
        .view(id)
        .expect("view")
        .keys()
        .into_iter()
        .map(str::to_owned)
        .collect();
    keys.sort();
    keys
}

fn live_ws() -> Engine {
    let mut engine = engine(TransportChoice::WebSocket);
    engine.start(0.0);
    engine.on_open(1.0);
    engine.take_effects();
    engine
}

/// Views of u1's and u2's tasks, live at seq 10 (t1 is u1's, t2 u2's).
fn two_views() -> (Engine, u32, u32) {
    let mut engine = live_ws();
    let u1 = engine
        .open_view("tasks", Some(&json!({"owner": "u1"})))
        .expect("valid");
    engine.on_text(
        &tasks_snapshot(
            10,
            json!([{"key": "t1", "seq": 4, "data": {"owner": "u1", "n": 1}}]),
        ),
        2.0,
    );
    engine.on_text(&tasks_subscribed(10, false), 3.0);
    let u2 = engine
        .open_view("tasks", Some(&json!({"owner": "u2"})))
        .expect("valid");
    engine.on_text(
        &tasks_snapshot(
            12,
            json!([{"key": "t1", "seq": 4, "data": {"owner": "u1", "n": 1}},
                   {"key": "t2", "seq": 11, "data": {"owner": "u2", "n": 2}}]),
        ),
        4.0,
    );
    engine.on_text(&tasks_subscribed(12, false), 5.0);
    engine.take_effects();
    (engine, u1, u2)
}

#[test]
fn one_subscription_for_the_union_of_the_filters() {
    let mut engine = live_ws();
    let u1 = engine
        .open_view("tasks", Some(&json!({"owner": "u1"})))
        .expect("valid");
    assert_eq!(
        sent(&engine.take_effects()),
        vec![
            json!({"type": "subscribe", "stream": "tasks", "where": {"owner": "u1"}, "snapshot": true})
        ]
    );
    // The same filter (in any key order) is the same view; `{}` is no filter.
    let same = engine
        .open_view("tasks", Some(&json!({"owner": "u1"})))
        .expect("valid");
    assert_eq!(same, u1);
    let everything = engine.open_view("tasks", Some(&json!({}))).expect("valid");
    assert_eq!(engine.open_view("tasks", None).expect("valid"), everything);
    assert_ne!(everything, u1);
    engine.take_effects();

    let mut engine = live_ws();
    engine
        .open_view("tasks", Some(&json!({"prio": {"gt": 2}, "done": false})))
        .expect("valid");
    engine.on_text(&tasks_snapshot(3, json!([])), 2.0);
    engine.on_text(&tasks_subscribed(3, false), 3.0);
    engine.take_effects();
    engine
        .open_view("tasks", Some(&json!({"owner": "u1"})))
        .expect("valid");
    // The union, from a fresh snapshot: positions of the old union mean nothing for it.
    assert_eq!(
        sent(&engine.take_effects()),
        vec![
            json!({"type": "subscribe", "stream": "tasks", "snapshot": true,
                    "where": {"or": [{"done": false, "prio": {"gt": 2}}, {"owner": "u1"}]}})
        ]
    );
    // Equalities on one field become one `in`, which the relay indexes.
    engine.open_view("tasks", None).expect("valid");
    engine.take_effects();
    let mut engine = live_ws();
    engine
        .open_view("tasks", Some(&json!({"owner": "u1"})))
        .expect("valid");
    engine
        .open_view("tasks", Some(&json!({"owner": "u2"})))
        .expect("valid");
    let subscribes = sent(&engine.take_effects());
    assert_eq!(
        subscribes.last(),
        Some(
            &json!({"type": "subscribe", "stream": "tasks", "snapshot": true,
                     "where": {"owner": {"in": ["u1", "u2"]}}})
        )
    );
}

#[test]
fn an_unfiltered_collection_makes_the_subscription_unfiltered() {
    let (mut engine, _, _) = two_views();
    let all = engine.open_view("tasks", None).expect("valid");
    assert_eq!(
        sent(&engine.take_effects()),
        vec![json!({"type": "subscribe", "stream": "tasks", "snapshot": true})]
    );
    engine.on_text(
        &tasks_snapshot(
            13,
            json!([{"key": "t1", "seq": 4, "data": {"owner": "u1", "n": 1}},
                   {"key": "t2", "seq": 11, "data": {"owner": "u2", "n": 2}},
                   {"key": "t3", "seq": 13, "data": {"owner": "u3"}}]),
        ),
        6.0,
    );
    engine.on_text(&tasks_subscribed(13, false), 7.0);
    let effects = engine.take_effects();
    // The new collection gets its records; the others hear nothing (t3 is not theirs).
    assert_eq!(
        view_changes(&effects),
        vec![
            (all, "t1".into(), Op::Upsert, 4, Origin::Snapshot),
            (all, "t2".into(), Op::Upsert, 11, Origin::Snapshot),
            (all, "t3".into(), Op::Upsert, 13, Origin::Snapshot)
        ]
    );
    assert_eq!(keys_of(&engine, all), vec!["t1", "t2", "t3"]);
}

#[test]
fn views_are_independent() {
    let (mut engine, u1, u2) = two_views();
    assert_eq!(keys_of(&engine, u1), vec!["t1"]);
    assert_eq!(keys_of(&engine, u2), vec!["t2"]);
    assert_eq!(engine.view(u1).expect("view").len(), 1);
    assert_eq!(engine.view(u1).expect("view").get("t2"), None);
    assert!(engine.view(u2).expect("view").contains_key("t2"));
    assert!(engine.is_view_live(u1) && engine.is_view_live(u2));

    // A change inside u1's view; t2 moves from u2 to u1 (a patch: the relay judges it for
    // the union, where it stays, and sends it as it is); t1 leaves both.
    engine.on_text(&tasks_event(13, 12, "t1", "patch", json!({"n": 5})), 6.0);
    engine.on_text(
        &tasks_event(14, 13, "t2", "patch", json!({"owner": "u1"})),
        6.0,
    );
    engine.on_text(&tasks_event(15, 14, "t1", "delete", json!(null)), 6.0);
    let effects = engine.take_effects();
    assert_eq!(
        view_changes(&effects),
        vec![
            (u1, "t1".into(), Op::Patch, 13, Origin::Event),
            (u1, "t2".into(), Op::Upsert, 14, Origin::Event),
            (u2, "t2".into(), Op::Delete, 14, Origin::Event),
            (u1, "t1".into(), Op::Delete, 15, Origin::Event)
        ]
    );
    // The move-in comes with the whole record and no old value; the move-out with no new one.
    let moved: Vec<_> = effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Changes { changes, .. } => changes.iter().find(|change| change.seq == 14),
            _ => None,
        })
        .collect();
    assert_eq!(moved[0].old, None);
    assert_eq!(
        moved[0].new,
        Some(Json::from(json!({"owner": "u1", "n": 2})))
    );
    assert_eq!(moved[1].new, None);
    assert_eq!(keys_of(&engine, u1), vec!["t2"]);
    assert!(keys_of(&engine, u2).is_empty());
    assert_eq!(engine.stats().gaps, 0);

    // Ephemeral messages reach the views whose filter their data matches.
    engine.on_text(
        &json!({"type": "event", "stream": "tasks", "epoch": 1, "seq": 0, "key": "ping",
                "op": "message", "data": {"owner": "u2"}})
        .to_string(),
        7.0,
    );
    let effects = engine.take_effects();
    let views: Vec<u32> = effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Message { view, .. } => Some(*view),
            _ => None,
        })
        .collect();
    assert_eq!(views, vec![u2]);
}

#[test]
fn a_new_filter_resubscribes_from_a_snapshot_and_reports_only_real_differences() {
    let mut engine = live_ws();
    let u1 = engine
        .open_view("tasks", Some(&json!({"owner": "u1"})))
        .expect("valid");
    engine.on_text(
        &tasks_snapshot(
            10,
            json!([{"key": "t1", "seq": 4, "data": {"owner": "u1"}},
                   {"key": "t5", "seq": 9, "data": {"owner": "u1", "n": 1}}]),
        ),
        2.0,
    );
    engine.on_text(&tasks_subscribed(10, false), 3.0);
    engine.take_effects();

    let u2 = engine
        .open_view("tasks", Some(&json!({"owner": "u2"})))
        .expect("valid");
    let effects = engine.take_effects();
    let subscribe = &sent(&effects)[0];
    assert_eq!(subscribe.get("since"), None, "{subscribe}");
    assert!(!effects
        .iter()
        .any(|effect| matches!(effect, Effect::Attach(_))));
    assert!(
        engine.is_view_live(u1),
        "u1 stays live while the union widens"
    );
    assert!(!engine.is_view_live(u2));
    assert!(engine.view(u2).expect("view").is_empty());

    // Until the new snapshot, the old subscription's events still arrive: applied when they
    // follow, and a gap among them asks for nothing (the snapshot is on its way).
    engine.on_text(&tasks_event(11, 10, "t5", "patch", json!({"n": 2})), 4.0);
    engine.on_text(&tasks_event(30, 25, "t1", "delete", json!(null)), 4.0);
    engine.on_text(&tasks_subscribed(11, true), 4.0);
    let effects = engine.take_effects();
    assert_eq!(
        view_changes(&effects),
        vec![(u1, "t5".into(), Op::Patch, 11, Origin::Event)]
    );
    assert!(sent(&effects).is_empty(), "{effects:?}");
    assert!(engine.is_view_live(u1));

    // The union's snapshot: t5 changed since, t1 is gone, t2 and t3 are u2's.
    engine.on_text(
        &tasks_snapshot(
            20,
            json!([{"key": "t2", "seq": 12, "data": {"owner": "u2"}},
                   {"key": "t3", "seq": 13, "data": {"owner": "u2"}},
                   {"key": "t5", "seq": 19, "data": {"owner": "u1", "n": 3}}]),
        ),
        5.0,
    );
    engine.on_text(&tasks_subscribed(20, false), 6.0);
    let effects = engine.take_effects();
    let mut seen = view_changes(&effects);
    seen.sort_by_key(|change| (change.0, change.1.clone()));
    assert_eq!(
        seen,
        vec![
            (u1, "t1".into(), Op::Delete, 20, Origin::Snapshot),
            (u1, "t5".into(), Op::Upsert, 19, Origin::Snapshot),
            (u2, "t2".into(), Op::Upsert, 12, Origin::Snapshot),
            (u2, "t3".into(), Op::Upsert, 13, Origin::Snapshot)
        ]
    );
    assert!(
        !effects
            .iter()
            .any(|effect| matches!(effect, Effect::Resync { .. })),
        "widening the union is not a resync of the views"
    );
    assert_eq!(engine.stats().resyncs, 0);
    assert!(engine.is_view_live(u1) && engine.is_view_live(u2));
    assert_eq!(keys_of(&engine, u1), vec!["t5"]);
    assert_eq!(keys_of(&engine, u2), vec!["t2", "t3"]);
    assert_eq!(engine.status().state, State::Live);
}

#[test]
fn a_filter_added_while_the_first_snapshot_is_on_its_way_skips_that_snapshot() {
    let mut engine = live_ws();
    let u1 = engine
        .open_view("tasks", Some(&json!({"owner": "u1"})))
        .expect("valid");
    let u2 = engine
        .open_view("tasks", Some(&json!({"owner": "u2"})))
        .expect("valid");
    assert_eq!(sent(&engine.take_effects()).len(), 2);
    // The answer to the first subscribe (u1 only) would show u2 nothing: it is discarded.
    engine.on_text(
        &tasks_snapshot(
            10,
            json!([{"key": "t1", "seq": 4, "data": {"owner": "u1"}}]),
        ),
        2.0,
    );
    engine.on_text(&tasks_subscribed(10, false), 3.0);
    assert!(!engine.is_view_live(u1));
    assert!(view_changes(&engine.take_effects()).is_empty());
    engine.on_text(
        &tasks_snapshot(
            11,
            json!([{"key": "t1", "seq": 4, "data": {"owner": "u1"}},
                   {"key": "t2", "seq": 11, "data": {"owner": "u2"}}]),
        ),
        4.0,
    );
    engine.on_text(&tasks_subscribed(11, false), 5.0);
    assert_eq!(
        view_changes(&engine.take_effects()),
        vec![
            (u1, "t1".into(), Op::Upsert, 4, Origin::Snapshot),
            (u2, "t2".into(), Op::Upsert, 11, Origin::Snapshot)
        ]
    );
    assert!(engine.is_view_live(u1) && engine.is_view_live(u2));
    assert_eq!(engine.collection("tasks").map(|c| c.applied()), Some(11));
}

#[test]
fn events_whose_prev_is_our_position_follow_it() {
    let (mut engine, u1, _) = two_views();
    // Seqs 13 to 19 did not concern the union.
    engine.on_text(&tasks_event(20, 12, "t1", "patch", json!({"n": 2})), 6.0);
    engine.on_text(
        &tasks_event(25, 20, "t9", "upsert", json!({"owner": "u1"})),
        6.0,
    );
    let effects = engine.take_effects();
    assert!(sent(&effects).is_empty(), "no replay: {effects:?}");
    assert_eq!(engine.stats().gaps, 0);
    assert_eq!(engine.collection("tasks").map(|c| c.applied()), Some(25));
    assert_eq!(keys_of(&engine, u1), vec!["t1", "t9"]);

    // Resumed after a reconnect: the relay's position moved past our last event.
    engine.on_closed(CloseInfo::default(), 7.0);
    engine.on_retry_timer(5000.0);
    engine.on_open(5001.0);
    let effects = engine.take_effects();
    assert_eq!(
        sent(&effects),
        vec![
            json!({"type": "subscribe", "stream": "tasks", "since": {"epoch": 1, "seq": 25},
                    "snapshot": true, "where": {"owner": {"in": ["u1", "u2"]}}})
        ]
    );
    engine.on_text(&tasks_subscribed(40, true), 5002.0);
    assert!(sent(&engine.take_effects()).is_empty(), "complete up to 40");
    assert_eq!(engine.collection("tasks").map(|c| c.applied()), Some(40));
    engine.on_text(&tasks_event(44, 40, "t9", "delete", json!(null)), 5003.0);
    assert!(sent(&engine.take_effects()).is_empty());
    assert_eq!(keys_of(&engine, u1), vec!["t1"]);
    assert_eq!(engine.status().state, State::Live);
}

#[test]
fn an_event_whose_prev_is_not_our_position_asks_for_a_replay() {
    let (mut engine, u1, _) = two_views();
    // We are at 12; the relay says the event follows 16: we missed 16.
    engine.on_text(&tasks_event(20, 16, "t1", "patch", json!({"n": 2})), 6.0);
    let effects = engine.take_effects();
    assert_eq!(
        sent(&effects),
        vec![
            json!({"type": "subscribe", "stream": "tasks", "since": {"epoch": 1, "seq": 12},
                    "snapshot": true, "where": {"owner": {"in": ["u1", "u2"]}}})
        ]
    );
    assert!(view_changes(&effects).is_empty(), "not applied over a hole");
    assert_eq!(engine.stats().gaps, 1);
    // Only one replay for the burst.
    engine.on_text(&tasks_event(21, 20, "t1", "patch", json!({"n": 3})), 6.0);
    assert!(sent(&engine.take_effects()).is_empty());
    // The replay from 12: 16, then 20 and 21 again.
    engine.on_text(
        &tasks_event(16, 12, "t8", "upsert", json!({"owner": "u1"})),
        7.0,
    );
    engine.on_text(&tasks_event(20, 16, "t1", "patch", json!({"n": 2})), 7.0);
    engine.on_text(&tasks_event(21, 20, "t1", "patch", json!({"n": 3})), 7.0);
    engine.on_text(&tasks_subscribed(21, true), 8.0);
    let effects = engine.take_effects();
    assert_eq!(
        view_changes(&effects),
        vec![
            (u1, "t8".into(), Op::Upsert, 16, Origin::Event),
            (u1, "t1".into(), Op::Patch, 20, Origin::Event),
            (u1, "t1".into(), Op::Patch, 21, Origin::Event)
        ]
    );
    assert!(sent(&effects).is_empty());
    assert_eq!(engine.collection("tasks").map(|c| c.applied()), Some(21));
    assert!(engine
        .collection("tasks")
        .is_some_and(|c| c.missing().is_empty()));
    assert_eq!(
        engine.view(u1).expect("view").get("t1"),
        Some(Json::from(json!({"owner": "u1", "n": 3})))
    );
    assert_eq!(engine.status().state, State::Live);
}

#[test]
fn a_view_of_the_tokens_grant_is_complete_up_to_subscribed() {
    // An unfiltered collection, but the token's grant filters it: events carry prev.
    let mut engine = live_engine();
    engine.on_text(
        &json!({"type": "event", "stream": "todos", "epoch": 1, "seq": 9, "key": "a",
                "op": "upsert", "data": 9, "prev": 2})
        .to_string(),
        4.0,
    );
    assert!(sent(&engine.take_effects()).is_empty());
    engine.on_closed(CloseInfo::default(), 5.0);
    engine.on_retry_timer(5000.0);
    engine.on_open(5001.0);
    engine.take_effects();
    engine.on_text(&subscribed(1, 15, true), 5002.0);
    assert!(sent(&engine.take_effects()).is_empty());
    assert_eq!(engine.collection("todos").map(|c| c.applied()), Some(15));

    // Without an event to tell, a replay that brings nothing settles it (once).
    let mut engine = live_engine();
    engine.on_closed(CloseInfo::default(), 5.0);
    engine.on_retry_timer(5000.0);
    engine.on_open(5001.0);
    engine.take_effects();
    engine.on_text(&subscribed(1, 15, true), 5002.0);
    assert_eq!(sent(&engine.take_effects()).len(), 1, "one replay");
    engine.on_text(&subscribed(1, 15, true), 5003.0);
    assert!(sent(&engine.take_effects()).is_empty());
    assert_eq!(engine.collection("todos").map(|c| c.applied()), Some(15));
    assert_eq!(engine.status().state, State::Live);
}

#[test]
fn a_view_over_records_already_here_is_shown_without_resubscribing() {
    let mut engine = live_ws();
    let all = engine.open_view("tasks", None).expect("valid");
    engine.on_text(
        &tasks_snapshot(
            5,
            json!([{"key": "t1", "seq": 1, "data": {"owner": "u1"}},
                   {"key": "t2", "seq": 2, "data": {"owner": "u2"}}]),
        ),
        2.0,
    );
    engine.on_text(&tasks_subscribed(5, false), 3.0);
    engine.take_effects();
    let u2 = engine
        .open_view("tasks", Some(&json!({"owner": "u2"})))
        .expect("valid");
    let effects = engine.take_effects();
    assert!(sent(&effects).is_empty());
    assert_eq!(io(effects), vec![Effect::Attach(u2)]);
    // Empty until attached (a microtask later, after the application added listeners).
    assert!(engine.view(u2).expect("view").is_empty());
    assert!(!engine.is_view_live(u2));
    engine.attach_view(u2);
    assert_eq!(
        view_changes(&engine.take_effects()),
        vec![(u2, "t2".into(), Op::Upsert, 2, Origin::Snapshot)]
    );
    assert!(engine.is_view_live(u2));
    engine.on_text(&event_on("tasks", 6, "t1", json!({"owner": "u2"})), 4.0);
    assert_eq!(
        view_changes(&engine.take_effects()),
        vec![
            (all, "t1".into(), Op::Upsert, 6, Origin::Event),
            (u2, "t1".into(), Op::Upsert, 6, Origin::Event)
        ]
    );
    assert_eq!(keys_of(&engine, u2), vec!["t1", "t2"]);
}

fn event_on(stream: &str, seq: u64, key: &str, data: serde_json::Value) -> String {
    json!({"type": "event", "stream": stream, "epoch": 1, "seq": seq, "key": key,
           "op": "upsert", "data": data})
    .to_string()
}

#[test]
fn bad_filters_are_refused_before_subscribing() {
    let mut engine = live_ws();
    let error = engine
        .open_view("tasks", Some(&json!({"prio": {"gte": 1}})))
        .expect_err("unknown operator");
    assert_eq!(error.code(), "bad_filter");
    assert!(error.to_string().contains("where.prio.gte"), "{error}");
    assert!(engine
        .open_view("tasks", Some(&json!(["owner"])))
        .is_err_and(|error| error.code() == "bad_filter"));
    assert!(engine
        .open_view("raw:orders", Some(&json!({"owner": "u1"})))
        .is_err_and(|error| error.code() == "bad_filter"));
    assert!(sent(&engine.take_effects()).is_empty());
    // Each filter is fine alone, their union is nested too deep: the second is refused and
    // the subscription stays the first's.
    let deep = json!({"not": {"not": {"not": {"not": {"not": {"not": {"a": 1}}}}}}});
    engine.open_view("tasks", Some(&deep)).expect("valid");
    engine.take_effects();
    let error = engine
        .open_view("tasks", Some(&json!({"b": 1})))
        .expect_err("union too deep");
    assert_eq!(error.code(), "bad_filter");
    assert!(sent(&engine.take_effects()).is_empty());
    // A relay refusal reaches the stream's collections like other subscription errors.
    engine.on_text(
        r#"{"type":"error","stream":"tasks","code":"bad_filter","message":"bad filter at where: no"}"#,
        2.0,
    );
    assert!(engine.take_effects().iter().any(|effect| matches!(effect,
        Effect::StreamError { stream, code, .. } if stream == "tasks" && code == "bad_filter")));
}

#[test]
fn sse_names_the_union_per_stream_and_restarts_when_it_changes() {
    let mut engine = engine(TransportChoice::Sse);
    engine.start(0.0);
    engine
        .open_view("tasks", Some(&json!({"owner": "u1"})))
        .expect("valid");
    engine.on_open(1.0);
    engine.on_text(&tasks_snapshot(3, json!([])), 2.0);
    engine.on_text(&tasks_subscribed(3, false), 3.0);
    engine.take_effects();
    assert_eq!(
        engine.sse_streams(),
        vec![(
            "tasks".to_owned(),
            Some(tidewire_shared::Position { epoch: 1, seq: 3 }),
            Some(json!({"owner": "u1"}))
        )]
    );
    engine
        .open_view("tasks", Some(&json!({"prio": {"gt": 2}})))
        .expect("valid");
    assert_eq!(
        io(engine.take_effects()),
        vec![Effect::Disconnect, Effect::Connect(TransportKind::Sse)]
    );
    assert_eq!(
        engine.sse_streams(),
        vec![(
            "tasks".to_owned(),
            None,
            Some(json!({"or": [{"owner": "u1"}, {"prio": {"gt": 2}}]}))
        )]
    );
}

#[test]
fn stored_state_of_another_union_is_shown_but_not_resumed() {
    let mut engine = persisting_engine();
    let u1 = engine
        .open_view("tasks", Some(&json!({"owner": "u1"})))
        .expect("valid");
    let u2 = engine
        .open_view("tasks", Some(&json!({"owner": "u2"})))
        .expect("valid");
    assert!(engine
        .take_effects()
        .contains(&Effect::Restore("tasks".into())));
    // Stored by a page that had only u1's collection.
    let stored = tidewire_shared::Snapshot {
        epoch: 1,
        seq: 10,
        records: vec![tidewire_shared::Record {
            key: "t1".into(),
            seq: 4,
            data: Json::from(json!({"owner": "u1"})),
        }],
    };
    let scope = Scope::from_members(Some(vec![json!({"owner": "u1"})])).expect("scope");
    engine.restored("tasks", Some((scope.clone(), stored)));
    let effects = engine.take_effects();
    assert_eq!(
        view_changes(&effects),
        vec![(u1, "t1".into(), Op::Upsert, 4, Origin::Restore)]
    );
    assert!(engine.view(u2).expect("view").is_empty());
    assert_eq!(
        sent(&effects),
        vec![
            json!({"type": "subscribe", "stream": "tasks", "snapshot": true,
                    "where": {"owner": {"in": ["u1", "u2"]}}})
        ],
        "a position of u1's view says nothing about u2's"
    );
    // The same union is resumed.
    let mut engine = persisting_engine();
    engine
        .open_view("tasks", Some(&json!({"owner": "u1"})))
        .expect("valid");
    engine.take_effects();
    engine.restored(
        "tasks",
        Some((
            scope.clone(),
            tidewire_shared::Snapshot {
                epoch: 1,
                seq: 10,
                records: vec![],
            },
        )),
    );
    let subscribe = sent(&engine.take_effects());
    assert_eq!(subscribe[0]["since"], json!({"epoch": 1, "seq": 10}));
    engine.on_text(&tasks_subscribed(10, true), 2.0);
    assert_eq!(
        engine.persistable("tasks").map(|(scope, _)| scope),
        Some(scope)
    );
}

/// The last change the engine reported since its effects were last taken.
fn last_change(engine: &mut Engine) -> tidewire_shared::Change {
    engine
        .take_effects()
        .into_iter()
        .filter_map(|effect| match effect {
            Effect::Changes { mut changes, .. } => changes.pop(),
            _ => None,
        })
        .last()
        .expect("a change")
}

/// The values a message brought are noted with their place when the shell asks, with the
/// very values of the change the event made; a patch newer than everything is noted as such,
/// a patch that arrived after a newer write to its key is not (some of its fields lost).
#[test]
fn arrivals_note_where_values_came_from() {
    use super::arrival::Place;
    let mut engine = live_engine();
    engine.note_arrivals(true);
    let patch = |seq: u64, data: serde_json::Value| {
        json!({"type": "event", "stream": "todos", "epoch": 1, "seq": seq, "key": "a",
               "op": "patch", "data": data})
        .to_string()
    };
    engine.on_text(&event(1, 3, "a", json!({"n": 3})), 1.0);
    let arrivals: Vec<_> = engine.take_arrivals().collect();
    assert_eq!(arrivals.len(), 1);
    let noted = arrivals[0].value.clone();
    let Place::Data {
        seq: 3,
        made: Some(made),
    } = &arrivals[0].place
    else {
        panic!("an event's change is noted: {arrivals:?}");
    };
    assert!(made.newest);
    let shown = last_change(&mut engine).new.expect("a value");
    assert_eq!(
        shown.address(),
        noted.address(),
        "the change holds the value noted"
    );
    assert_eq!(
        made.after.as_ref().map(Json::address),
        Some(noted.address())
    );

    engine.on_text(&patch(4, json!({"done": true})), 1.0);
    let arrivals: Vec<_> = engine.take_arrivals().collect();
    let change = last_change(&mut engine);
    let Some(Place::Data {
        made: Some(made), ..
    }) = arrivals.first().map(|arrival| &arrival.place)
    else {
        panic!("a patch newer than everything notes its values: {arrivals:?}");
    };
    assert!(made.newest);
    assert_eq!(
        made.before.as_ref().map(Json::address),
        change.old.as_ref().map(Json::address)
    );
    assert_eq!(
        made.after.as_ref().map(Json::address),
        change.new.as_ref().map(Json::address)
    );

    // Seq 6 arrives before 5: the late patch's `n` loses to 6's.
    engine.on_text(&patch(6, json!({"n": 6})), 1.0);
    engine.take_arrivals();
    engine.on_text(&patch(5, json!({"n": 5, "x": 1})), 1.0);
    let arrivals: Vec<_> = engine.take_arrivals().collect();
    assert!(
        matches!(
            &arrivals[0].place,
            Place::Data {
                seq: 5,
                made: Some(made),
            } if !made.newest
        ),
        "{arrivals:?}"
    );
    assert_eq!(
        engine
            .collection("todos")
            .and_then(|collection| collection.get("a")),
        Some(Json::from(json!({"done": true, "n": 6, "x": 1})))
    );

    // A snapshot's records, with their index and whether the chunk is the last.
    engine.on_text(
        &snapshot(
            2,
            9,
            json!([{"key": "a", "seq": 9, "data": 1}, {"key": "b", "seq": 8, "data": 2}]),
        ),
        1.0,
    );
    let places: Vec<Place> = engine
        .take_arrivals()
        .map(|arrival| arrival.place)
        .collect();
    assert_eq!(
        places,
        vec![
            Place::Record {
                index: 0,
                last: true
            },
            Place::Record {
                index: 1,
                last: true
            }
        ]
    );
    engine.note_arrivals(false);
    engine.on_text(&event(2, 10, "a", json!(2)), 1.0);
    assert_eq!(
        engine.take_arrivals().len(),
        0,
        "nothing noted unless asked"
    );
}
