//! Native tests of the engine's rules: resume, dedupe, gaps, resync, backoff, fallback,
//! authentication failures, offline handling and writes.

use serde_json::json;
use tidewire_shared::Op;

use super::effect::{Effect, Origin};
use super::status::{State, TransportKind};
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

fn sent(effects: &[Effect]) -> Vec<serde_json::Value> {
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
    assert_eq!(engine.sse_streams(), vec![("todos".to_owned(), None)]);
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
        matches!(&effects[..], [Effect::Post { stream, body, .. }]
            if stream == "todos" && body == r#"{"data":{"x":1},"key":"a","op":"upsert"}"#),
        "{effects:?}"
    );
    engine.on_post_result(&id, Ok(8));
    assert_eq!(engine.take_effects(), vec![Effect::Resolve { id, seq: 8 }]);
    assert_eq!(
        engine.sse_streams(),
        vec![(
            "todos".to_owned(),
            Some(tidewire_shared::Position { epoch: 3, seq: 7 })
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
            json!({"type": "publish", "id": queued, "stream": "todos", "key": "a", "op": "upsert", "data": 1})
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
    assert!(effects.iter().any(|effect| matches!(effect,
        Effect::Reject { id, code, .. } if *id == queued && code == "connection_lost")));
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

#[test]
fn persistence_restores_then_resumes() {
    let config = Config {
        transport: TransportChoice::WebSocket,
        persist: true,
        ..Config::default()
    };
    let mut engine = Engine::new(config, 1);
    engine.start(0.0);
    engine.on_open(1.0);
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
            data: json!(1),
        }],
    };
    engine.restored("todos", Some(stored.clone()));
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
        Some(tidewire_shared::Snapshot {
            epoch: 4,
            seq: 11,
            records: vec![]
        })
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
