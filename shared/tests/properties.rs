//! Property tests of the merge laws and the codecs (native only; proptest needs std I/O).
#![cfg(not(target_family = "wasm"))]

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use tidewire_shared::cursor::Cursor;
use tidewire_shared::ledger::{Head, How, Ledger, Won};
use tidewire_shared::message::{decode_client, decode_server, decode_server_json};
use tidewire_shared::notify::{self, NotifyPayload};
use tidewire_shared::{
    ClientMessage, Collection, DecodeLimits, Event, Json, Op, Outcome, Position, ServerMessage,
    StreamName,
};

/// The relay's `records` table semantics, applied in seq order: the reference model.
fn reference(events: &[Event]) -> BTreeMap<String, Value> {
    let mut records = BTreeMap::new();
    for event in events {
        match event.op {
            Op::Upsert => {
                records.insert(event.key.clone(), event.data.clone());
            }
            Op::Delete => {
                records.remove(&event.key);
            }
            Op::Patch => {
                let mut object = match records.get(&event.key) {
                    Some(Value::Object(map)) => map.clone(),
                    _ => Map::new(),
                };
                if let Value::Object(patch) = &event.data {
                    for (name, value) in patch {
                        object.insert(name.clone(), value.clone());
                    }
                }
                records.insert(event.key.clone(), Value::Object(object));
            }
            Op::Message => {}
        }
    }
    records
}

fn state(collection: &Collection) -> BTreeMap<String, Value> {
    collection
        .iter()
        .map(|(key, value)| (key.to_owned(), value.to_value()))
        .collect()
}

/// The events as the clients' collections take them (data as JSON text).
fn texts(events: &[Event]) -> Vec<Event<Json>> {
    events
        .iter()
        .cloned()
        .map(|event| event.map_data(Json::from))
        .collect()
}

fn stream() -> StreamName {
    StreamName::new("props").expect("valid")
}

/// Random writes on a few keys (so they collide), numbered 1..=n in order.
fn events() -> impl Strategy<Value = Vec<Event>> {
    let write = (0..4u8, 0..5u8, 0..3u8, 0..5i64);
    prop::collection::vec(write, 0..40).prop_map(|writes| {
        writes
            .into_iter()
            .enumerate()
            .map(|(index, (key, op, field, value))| {
                let (op, data) = match op {
                    0 => (
                        Op::Upsert,
                        json!({ format!("f{field}"): value, "base": value }),
                    ),
                    1 => (Op::Delete, Value::Null),
                    2 => (Op::Patch, json!({ format!("f{field}"): value })),
                    3 => (
                        Op::Patch,
                        json!({ format!("f{field}"): value, format!("f{}", (field + 1) % 3): -value }),
                    ),
                    _ => (Op::Upsert, json!(value)),
                };
                Event {
                    stream: stream(),
                    epoch: 1,
                    seq: index as u64 + 1,
                    key: format!("k{key}"),
                    op,
                    data,
                    prev: None,
                    ts: None,
                }
            })
            .collect()
    })
}

/// The events shuffled, with some repeated.
fn shuffled_with_duplicates() -> impl Strategy<Value = (Vec<Event>, Vec<Event>)> {
    events().prop_flat_map(|events| {
        let count = events.len();
        let duplicates = prop::collection::vec(0..count.max(1), 0..count + 1);
        (Just(events), duplicates).prop_flat_map(|(events, duplicates)| {
            let mut delivered = events.clone();
            if !events.is_empty() {
                delivered.extend(duplicates.iter().map(|&index| events[index].clone()));
            }
            (Just(events), Just(delivered).prop_shuffle())
        })
    })
}

proptest! {
    #[test]
    fn any_order_and_duplication_converges((events, delivered) in shuffled_with_duplicates()) {
        let mut in_order = Collection::new(1);
        for event in &texts(&events) {
            in_order.apply(event);
        }
        let mut shuffled = Collection::new(1);
        for event in &texts(&delivered) {
            shuffled.apply(event);
        }
        prop_assert_eq!(state(&in_order), reference(&events));
        prop_assert_eq!(state(&shuffled), reference(&events));
        prop_assert_eq!(shuffled.applied(), events.len() as u64);
        prop_assert_eq!(shuffled.len(), reference(&events).len());
        prop_assert!(shuffled.missing().is_empty());
    }

    #[test]
    fn a_ledger_with_the_values_kept_elsewhere_converges(
        (events, delivered) in shuffled_with_duplicates(),
    ) {
        // What a client that keeps its values outside the ledger does with its answers (the
        // ledger's module docs), with the values as trees.
        let mut ledger: Ledger = Ledger::new(1);
        let mut values: BTreeMap<String, Value> = BTreeMap::new();
        for event in &delivered {
            let names: Vec<&str> = event
                .data
                .as_object()
                .map(|object| object.keys().map(String::as_str).collect())
                .unwrap_or_default();
            let head = Head { epoch: 1, seq: event.seq, prev: None, key: event.key.as_str(), op: event.op };
            let object = |value: Option<&Value>| match value {
                Some(Value::Object(map)) => map.clone(),
                _ => Map::new(),
            };
            let how = match ledger.apply(head, event.data.is_object(), || names.clone()) {
                Outcome::Applied { change: Some(how), .. } => how,
                _ => continue,
            };
            let old = values.get(&event.key);
            let new = match how {
                How::Replaced { kept: [] } => {
                    (event.op == Op::Upsert).then(|| event.data.clone())
                }
                How::Replaced { kept } => {
                    let mut new = object((event.op == Op::Upsert).then_some(&event.data));
                    let old = object(old);
                    for name in kept {
                        prop_assert!(old.contains_key(name), "a kept field is in the old value");
                        new.insert(name.clone(), old[name].clone());
                    }
                    Some(Value::Object(new))
                }
                How::Patched { won } => {
                    let mut new = object(old);
                    let won: Vec<&str> = match won {
                        Won::All => names.clone(),
                        Won::Some(won) => won.iter().map(|&at| names[at]).collect(),
                    };
                    for name in won {
                        new.insert(name.to_owned(), event.data[name].clone());
                    }
                    Some(Value::Object(new))
                }
            };
            match new {
                Some(new) => values.insert(event.key.clone(), new),
                None => values.remove(&event.key),
            };
        }
        prop_assert_eq!(&values, &reference(&events));
        prop_assert_eq!(ledger.applied(), events.len() as u64);
        // Everything was seen: no key's seqs are still needed.
        prop_assert_eq!(ledger.remembered(), 0);
    }

    #[test]
    fn snapshot_plus_tail_equals_full_replay(events in events(), cut in 0usize..41) {
        let cut = cut.min(events.len());
        let mut head = Collection::new(1);
        for event in &texts(&events[..cut]) {
            head.apply(event);
        }
        let mut resumed = Collection::from_snapshot(head.snapshot());
        for event in &texts(&events) {
            resumed.apply(event);
        }
        prop_assert_eq!(state(&resumed), reference(&events));
        prop_assert_eq!(resumed.applied(), events.len() as u64);
    }

    #[test]
    fn client_messages_round_trip(key in "[a-z]{1,10}", seq in 0u64..1u64 << 53, text in ".{0,20}") {
        let text = text.replace('\0', "");
        let messages = [
            ClientMessage::Subscribe(tidewire_shared::message::Subscribe {
                stream: stream(), since: Some(Position { epoch: seq, seq }), snapshot: false,
                filter: (seq % 2 == 0).then(|| json!({"owner": {"in": [key.clone(), 1]}})),
            }),
            ClientMessage::Publish(tidewire_shared::message::Publish {
                id: key.clone(), stream: stream(), key: key.clone(), op: Op::Patch,
                data: json!({ "text": text }),
                write_id: (seq % 2 == 1).then(|| format!("c{seq}.{}", seq + 1)),
            }),
            ClientMessage::Ping { id: Some(key.clone()) },
            ClientMessage::Unsubscribe { stream: stream() },
        ];
        for message in messages {
            let decoded = decode_client(message.encode().as_bytes(), &DecodeLimits::default());
            prop_assert_eq!(decoded, Ok(message));
        }
    }

    #[test]
    fn server_and_notify_round_trip(key in "[a-z]{1,10}", seq in 1u64..1u64 << 53, text in ".{0,64}") {
        let event = Event {
            stream: stream(), epoch: seq, seq, key, op: Op::Upsert,
            data: json!({ "text": text, "n": seq }), prev: (seq % 2 == 0).then_some(seq - 1), ts: Some(seq as i64),
        };
        let message = ServerMessage::Event(event.clone());
        let encoded = message.encode();
        prop_assert!(!encoded.contains('\n') && !encoded.contains('\r'));
        prop_assert_eq!(decode_server(encoded.as_bytes(), &DecodeLimits::default()), Ok(message));
        // The clients' decoding keeps the data as the relay's text of it.
        let as_text = ServerMessage::Event(event.clone().map_data(Json::from));
        prop_assert_eq!(decode_server_json(encoded.as_bytes(), &DecodeLimits::default()), Ok(as_text));
        // `prev` belongs to a filtered subscription, never to NOTIFY.
        let event = Event { prev: None, ..event };
        prop_assert_eq!(notify::decode(&notify::encode_event(&event)), Ok(NotifyPayload::Event(tidewire_shared::stored::StoredEvent::new(event))));
    }

    #[test]
    fn cursor_round_trips(positions in prop::collection::vec((0u64..u64::MAX, 0u64..u64::MAX), 0..20)) {
        let mut cursor = Cursor::default();
        for (index, (epoch, seq)) in positions.iter().enumerate() {
            let name = StreamName::new(&format!("s{index}:x/y")).expect("valid");
            cursor.set(&name, Position { epoch: *epoch, seq: *seq });
        }
        let text = cursor.encode();
        prop_assert!(!text.contains(['\r', '\n', '\0']));
        prop_assert_eq!(Cursor::decode(&text), Ok(cursor));
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let limits = DecodeLimits::default();
        let _ = decode_client(&bytes, &limits);
        agree(&bytes, &limits)?;
        let text = String::from_utf8_lossy(&bytes);
        let _ = notify::decode(&text);
        let _ = Cursor::decode(&text);
        let _ = StreamName::new(&text);
    }

    #[test]
    fn decoding_json_shaped_noise_never_panics(text in r#"\{("[a-z]{1,6}":("[a-z:]{0,8}"|-?[0-9]{1,22}|\[|\{|null|true),?){0,8}\}?"#) {
        let limits = DecodeLimits::default();
        let _ = decode_client(text.as_bytes(), &limits);
        agree(text.as_bytes(), &limits)?;
        let _ = notify::decode(&text);
    }
}

/// Both decodings of the relay's messages take the same inputs and read the same values.
fn agree(input: &[u8], limits: &DecodeLimits) -> Result<(), TestCaseError> {
    let tree = decode_server(input, limits);
    let text = decode_server_json(input, limits);
    match (tree, text) {
        (Ok(ServerMessage::Event(tree)), Ok(ServerMessage::Event(text))) => {
            prop_assert_eq!(tree.clone(), text.map_data(|data| data.to_value()));
        }
        (Ok(_), Ok(_)) | (Err(_), Err(_)) => {}
        (tree, text) => prop_assert!(false, "decodings differ: {:?} and {:?}", tree, text),
    }
    Ok(())
}
