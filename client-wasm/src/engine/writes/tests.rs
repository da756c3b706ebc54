//! Native tests of a write's life: optimistic state, read your writes, rollback, sending
//! again with the same write id, holding after a passing failure, the bound and restoring.

use serde_json::{json, Value};
use tidewire_shared::message::Publish;
use tidewire_shared::{Json, Op, StreamName};

use crate::engine::effect::{Effect, Origin};
use crate::engine::{CloseInfo, Config, Engine, TransportChoice};

fn engine(max_pending_writes: usize) -> Engine {
    let config = Config {
        transport: TransportChoice::WebSocket,
        max_pending_writes,
        writer: Some("tab1".into()),
        ..Config::default()
    };
    Engine::new(config, 7)
}

fn text(value: Value) -> String {
    value.to_string()
}

fn event(seq: u64, key: &str, op: &str, data: Value) -> String {
    text(
        json!({"type": "event", "stream": "todos", "epoch": 1, "seq": seq, "key": key,
                "op": op, "data": data}),
    )
}

fn ack(id: &str, seq: u64) -> String {
    text(json!({"type": "ack", "id": id, "stream": "todos", "seq": seq}))
}

/// `todos` live at epoch 1, seq 2: a = {n: 1, k: "x"}, b = {n: 2, k: "y"}; view 1 is the
/// whole stream.
fn live(max_pending_writes: usize) -> Engine {
    let mut engine = engine(max_pending_writes);
    engine.start(0.0);
    engine.open_stream("todos").expect("valid");
    engine.on_open(1.0);
    engine.on_text(
        &text(
            json!({"type": "snapshot", "stream": "todos", "epoch": 1, "seq": 2, "chunk": 0,
            "last": true, "records": [{"key": "a", "seq": 1, "data": {"n": 1, "k": "x"}},
                                       {"key": "b", "seq": 2, "data": {"n": 2, "k": "y"}}]}),
        ),
        2.0,
    );
    engine.on_text(
        &text(
            json!({"type": "subscribed", "stream": "todos", "epoch": 1, "seq": 2,
                     "resumed": false}),
        ),
        3.0,
    );
    engine.take_effects();
    engine
}

/// `(view, key, old, new, origin)` of every change, in order.
type Seen = Vec<(u32, String, Option<Value>, Option<Value>, Origin)>;

fn seen(effects: &[Effect]) -> Seen {
    let mut out = Vec::new();
    for effect in effects {
        if let Effect::Changes {
            view,
            changes,
            origin,
            ..
        } = effect
        {
            for change in changes {
                out.push((
                    *view,
                    change.key.clone(),
                    change.old.as_ref().map(Json::to_value),
                    change.new.as_ref().map(Json::to_value),
                    *origin,
                ));
            }
        }
    }
    out
}

fn resolved(effects: &[Effect]) -> Vec<(String, u64)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Resolve { id, seq } => Some((id.clone(), *seq)),
            _ => None,
        })
        .collect()
}

fn publishes(effects: &[Effect]) -> Vec<Value> {
    super::super::tests::sent(effects)
        .into_iter()
        .filter(|message| message["type"] == "publish")
        .collect()
}

#[test]
fn a_write_shows_at_once_and_its_promise_waits_for_its_event() {
    let mut engine = live(10);
    let id = engine
        .write("todos", "a", Op::Patch, json!({"n": 5}))
        .expect("valid");
    let effects = engine.take_effects();
    assert_eq!(
        seen(&effects),
        vec![(
            1,
            "a".into(),
            Some(json!({"n": 1, "k": "x"})),
            Some(json!({"n": 5, "k": "x"})),
            Origin::Local
        )]
    );
    assert_eq!(publishes(&effects)[0]["write_id"], json!("tab1.1"));
    let view = engine.view(1).expect("view");
    assert_eq!(view.get("a"), Some(Json::from(json!({"n": 5, "k": "x"}))));
    // The ack comes first: the promise waits for the event at that seq.
    engine.on_text(&ack(&id, 4), 4.0);
    assert!(resolved(&engine.take_effects()).is_empty());
    // Someone else's write to the same record comes before ours: the patch stays on top.
    engine.on_text(&event(3, "a", "upsert", json!({"n": 9, "k": "z"})), 5.0);
    let effects = engine.take_effects();
    assert_eq!(
        seen(&effects),
        vec![(
            1,
            "a".into(),
            Some(json!({"n": 5, "k": "x"})),
            Some(json!({"n": 5, "k": "z"})),
            Origin::Event
        )]
    );
    assert!(resolved(&effects).is_empty());
    // Our event: the committed value is what was shown, so no change, and the promise
    // resolves with reads showing the write.
    engine.on_text(&event(4, "a", "patch", json!({"n": 5})), 6.0);
    let effects = engine.take_effects();
    assert_eq!(seen(&effects), vec![]);
    assert_eq!(resolved(&effects), vec![(id, 4)]);
    assert_eq!(
        engine.view(1).expect("view").get("a"),
        Some(Json::from(json!({"n": 5, "k": "z"})))
    );
}

#[test]
fn an_event_before_its_ack_resolves_at_the_ack_and_a_different_commit_shows_once() {
    let mut engine = live(10);
    let id = engine
        .write("todos", "c", Op::Upsert, json!({"n": 3}))
        .expect("valid");
    assert_eq!(engine.view(1).expect("view").len(), 3);
    engine.take_effects();
    // A trigger in PostgreSQL changed the value. Until the ack says this event is ours, the
    // write stays on top; then one change goes from the optimistic value to the committed.
    engine.on_text(
        &event(3, "c", "upsert", json!({"n": 3, "by": "trigger"})),
        4.0,
    );
    assert_eq!(seen(&engine.take_effects()), vec![]);
    engine.on_text(&ack(&id, 3), 5.0);
    let effects = engine.take_effects();
    assert_eq!(resolved(&effects), vec![(id, 3)]);
    assert_eq!(
        seen(&effects),
        vec![(
            1,
            "c".into(),
            Some(json!({"n": 3})),
            Some(json!({"n": 3, "by": "trigger"})),
            Origin::Event
        )]
    );
    assert_eq!(engine.view(1).expect("view").len(), 3);
}

#[test]
fn a_refused_write_rolls_back() {
    let mut engine = live(10);
    let id = engine
        .write("todos", "b", Op::Delete, Value::Null)
        .expect("valid");
    assert!(!engine.view(1).expect("view").contains_key("b"));
    assert_eq!(engine.view(1).expect("view").len(), 1);
    engine.take_effects();
    engine.on_text(
        &text(
            json!({"type": "error", "id": id, "stream": "todos", "code": "forbidden",
                     "message": "no write access to todos"}),
        ),
        4.0,
    );
    let effects = engine.take_effects();
    assert_eq!(
        seen(&effects),
        vec![(
            1,
            "b".into(),
            None,
            Some(json!({"n": 2, "k": "y"})),
            Origin::Rollback
        )]
    );
    assert!(effects.iter().any(|effect| matches!(effect,
        Effect::Reject { id: rejected, code, .. } if *rejected == id && code == "forbidden")));
    assert!(effects.iter().any(|effect| matches!(effect,
        Effect::WriteSettled(outcome) if outcome.outcome.is_err())));
    assert_eq!(engine.view(1).expect("view").len(), 2);
}

#[test]
fn writes_lost_with_the_connection_are_sent_again_with_their_ids() {
    let mut engine = live(10);
    let first = engine
        .write("todos", "a", Op::Patch, json!({"n": 2}))
        .expect("valid");
    let second = engine
        .write("todos", "d", Op::Upsert, json!({"n": 4}))
        .expect("valid");
    engine.take_effects();
    engine.on_closed(CloseInfo::default(), 10.0);
    let effects = engine.take_effects();
    assert!(!effects
        .iter()
        .any(|effect| matches!(effect, Effect::Reject { .. })));
    // Still shown while disconnected.
    assert_eq!(
        engine.view(1).expect("view").get("d"),
        Some(Json::from(json!({"n": 4})))
    );
    engine.on_retry_timer(5000.0);
    engine.on_open(5001.0);
    let again = publishes(&engine.take_effects());
    let ids: Vec<_> = again
        .iter()
        .map(|message| (message["id"].clone(), message["write_id"].clone()))
        .collect();
    assert_eq!(
        ids,
        vec![
            (json!(first), json!("tab1.1")),
            (json!(second), json!("tab1.2"))
        ]
    );
    // The first had committed before the connection dropped: the relay answers its seq.
    engine.on_text(
        &text(json!({"type": "ack", "id": first, "stream": "todos", "seq": 3, "replayed": true})),
        5002.0,
    );
    engine.on_text(&ack(&second, 4), 5003.0);
    engine.on_text(
        &text(
            json!({"type": "subscribed", "stream": "todos", "epoch": 1, "seq": 2,
                     "resumed": true}),
        ),
        5004.0,
    );
    engine.on_text(&event(3, "a", "patch", json!({"n": 2})), 5005.0);
    engine.on_text(&event(4, "d", "upsert", json!({"n": 4})), 5006.0);
    let effects = engine.take_effects();
    assert_eq!(resolved(&effects), vec![(first, 3), (second, 4)]);
    assert_eq!(seen(&effects), vec![]);
}

#[test]
fn a_passing_failure_holds_the_queue_until_the_next_tick() {
    let mut engine = live(10);
    let id = engine
        .write("todos", "a", Op::Upsert, json!(1))
        .expect("valid");
    engine.take_effects();
    engine.on_text(
        &text(
            json!({"type": "error", "id": id, "stream": "todos", "code": "unavailable",
                     "message": "the relay lost PostgreSQL"}),
        ),
        4.0,
    );
    let later = engine
        .write("todos", "b", Op::Upsert, json!(2))
        .expect("valid");
    let effects = engine.take_effects();
    assert!(publishes(&effects).is_empty(), "held, in order");
    assert!(!effects
        .iter()
        .any(|effect| matches!(effect, Effect::Reject { .. })));
    engine.tick(5.0);
    let sent: Vec<_> = publishes(&engine.take_effects())
        .into_iter()
        .map(|message| message["id"].clone())
        .collect();
    assert_eq!(sent, vec![json!(id), json!(later)]);
}

#[test]
fn the_queue_is_bounded() {
    let mut engine = engine(2);
    engine.start(0.0);
    engine
        .write("todos", "a", Op::Upsert, json!(1))
        .expect("one");
    engine
        .write("todos", "b", Op::Upsert, json!(1))
        .expect("two");
    let error = engine
        .write("todos", "c", Op::Upsert, json!(1))
        .expect_err("full");
    assert_eq!(error.code(), "queue_full");
}

#[test]
fn filtered_collections_filter_optimistic_state_and_unseen_writes_resolve_at_the_ack() {
    let mut engine = live(10);
    let mine = engine
        .open_view("todos", Some(&json!({"k": "x"})))
        .expect("view");
    engine.attach_view(mine);
    engine.take_effects();
    // Moves b into the filtered view.
    engine
        .write("todos", "b", Op::Patch, json!({"k": "x"}))
        .expect("valid");
    let effects = engine.take_effects();
    let changes = seen(&effects);
    assert!(changes.contains(&(
        mine,
        "b".into(),
        None,
        Some(json!({"n": 2, "k": "x"})),
        Origin::Local
    )));
    assert_eq!(engine.view(mine).expect("view").len(), 2);
    // A write outside the filter shows only in the whole-stream view.
    engine
        .write("todos", "e", Op::Upsert, json!({"k": "q"}))
        .expect("valid");
    assert_eq!(engine.view(mine).expect("view").len(), 2);
    assert_eq!(engine.view(1).expect("view").len(), 3);
}

#[test]
fn a_write_no_collection_would_show_resolves_at_its_ack() {
    let mut engine = engine(10);
    engine.start(0.0);
    let view = engine
        .open_view("todos", Some(&json!({"k": "x"})))
        .expect("view");
    engine.on_open(1.0);
    engine.on_text(
        &text(
            json!({"type": "snapshot", "stream": "todos", "epoch": 1, "seq": 2, "chunk": 0,
            "last": true, "records": []}),
        ),
        2.0,
    );
    engine.on_text(
        &text(
            json!({"type": "subscribed", "stream": "todos", "epoch": 1, "seq": 2,
                     "resumed": false}),
        ),
        3.0,
    );
    let id = engine
        .write("todos", "z", Op::Upsert, json!({"k": "other"}))
        .expect("valid");
    assert_eq!(engine.view(view).expect("view").len(), 0);
    engine.take_effects();
    engine.on_text(&ack(&id, 3), 4.0);
    assert_eq!(resolved(&engine.take_effects()), vec![(id, 3)]);
}

#[test]
fn restored_writes_are_shown_and_sent_with_their_ids_once() {
    let mut engine = live(10);
    let stored = Publish {
        id: "old".into(),
        stream: StreamName::new("todos").expect("valid"),
        key: "r".into(),
        op: Op::Upsert,
        data: json!({"n": 7}),
        write_id: Some("tab0.9".into()),
    };
    engine.restore_writes(vec![stored.clone(), stored]);
    let effects = engine.take_effects();
    let sent = publishes(&effects);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["write_id"], json!("tab0.9"));
    assert_eq!(
        engine.view(1).expect("view").get("r"),
        Some(Json::from(json!({"n": 7})))
    );
    assert_eq!(
        engine
            .pending_writes()
            .map(|publish| publish.write_id.clone())
            .collect::<Vec<_>>(),
        vec![Some("tab0.9".to_owned())]
    );
    let id = sent[0]["id"].as_str().expect("id").to_owned();
    engine.on_text(&ack(&id, 3), 4.0);
    engine.on_text(&event(3, "r", "upsert", json!({"n": 7})), 5.0);
    let effects = engine.take_effects();
    assert!(effects.iter().any(|effect| matches!(effect,
        Effect::WriteSettled(outcome) if outcome.outcome == Ok(3) && outcome.key == "r")));
    assert_eq!(engine.pending_writes().count(), 0);
}

#[test]
fn a_view_loading_after_restored_writes_is_shown_them() {
    // Writes restored from storage before the stream's first collection: the view's first
    // load must report them with the committed records (a view's changes are all the
    // application learns of its records).
    let mut engine = engine(10);
    engine.start(0.0);
    engine.restore_writes(vec![Publish {
        id: "old".into(),
        stream: StreamName::new("todos").expect("valid"),
        key: "w".into(),
        op: Op::Upsert,
        data: json!({"n": 5}),
        write_id: Some("tab0.3".into()),
    }]);
    engine.open_stream("todos").expect("valid");
    engine.on_open(1.0);
    engine.on_text(
        &text(
            json!({"type": "snapshot", "stream": "todos", "epoch": 1, "seq": 1, "chunk": 0,
            "last": true, "records": [{"key": "a", "seq": 1, "data": {"n": 1}}]}),
        ),
        2.0,
    );
    let mut shown: Vec<(String, Option<Value>)> = seen(&engine.take_effects())
        .into_iter()
        .filter(|(view, ..)| *view == 1)
        .map(|(_, key, _, new, _)| (key, new))
        .collect();
    shown.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        shown,
        vec![
            ("a".to_owned(), Some(json!({"n": 1}))),
            ("w".to_owned(), Some(json!({"n": 5})))
        ]
    );
}

#[test]
fn a_write_made_before_an_empty_stream_loads_is_shown_when_it_does() {
    // No snapshot comes for an empty stream: `subscribed` makes its views shown, and a write
    // made before then must reach them.
    let mut engine = engine(10);
    engine.start(0.0);
    engine.open_stream("todos").expect("valid");
    engine
        .write("todos", "w", Op::Upsert, json!({"n": 1}))
        .expect("valid");
    engine.on_open(1.0);
    engine.take_effects();
    engine.on_text(
        &text(
            json!({"type": "subscribed", "stream": "todos", "epoch": 1, "seq": 0,
                     "resumed": false}),
        ),
        2.0,
    );
    let shown: Vec<(String, Option<Value>)> = seen(&engine.take_effects())
        .into_iter()
        .filter(|(view, ..)| *view == 1)
        .map(|(_, key, _, new, _)| (key, new))
        .collect();
    assert_eq!(shown, vec![("w".to_owned(), Some(json!({"n": 1})))]);
}
