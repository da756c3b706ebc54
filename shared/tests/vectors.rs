//! Runs the JSON test vectors in `shared/vectors/`, natively and (compiled to wasm32) in
//! headless Chromium, so both builds are checked against the same expectations.

use serde_json::{json, Value};
use tidewire_shared::cursor::Cursor;
use tidewire_shared::message::{decode_client, decode_server};
use tidewire_shared::snapshot::Snapshot;
use tidewire_shared::{
    notify, Collection, DecodeError, DecodeLimits, Event, Json, Outcome, StreamName,
};

#[cfg(target_family = "wasm")]
use wasm_bindgen_test::wasm_bindgen_test as test;
#[cfg(target_family = "wasm")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

fn cases(text: &str) -> Vec<Value> {
    match serde_json::from_str(text) {
        Ok(Value::Array(cases)) => cases,
        other => panic!("vector file is not an array: {other:?}"),
    }
}

fn name(case: &Value) -> &str {
    case["name"].as_str().unwrap_or("?")
}

fn input(case: &Value) -> &str {
    case["input"].as_str().expect("case has an input string")
}

/// Checks a decode result against the case's `ok` (canonical JSON) or `error` (kind).
fn check<T: serde::Serialize>(case: &Value, result: Result<T, DecodeError>) {
    match (result, case.get("ok"), case.get("error")) {
        (Ok(decoded), Some(expected), None) => {
            let decoded = serde_json::to_value(&decoded).expect("serializes");
            assert_eq!(&decoded, expected, "case {:?}", name(case));
        }
        (Err(error), None, Some(kind)) => {
            assert_eq!(
                Some(error.kind()),
                kind.as_str(),
                "case {:?}: {error}",
                name(case)
            );
        }
        (Ok(_), _, _) => panic!("case {:?}: decoded, expected an error", name(case)),
        (Err(error), _, _) => panic!("case {:?}: {error}", name(case)),
    }
}

#[test]
fn stream_names() {
    let cases = cases(include_str!("../vectors/stream_names.json"));
    assert!(cases.len() >= 10);
    for case in &cases {
        match (
            StreamName::new(input(case)),
            case.get("channel"),
            case.get("error"),
        ) {
            (Ok(stream), Some(channel), None) => {
                assert_eq!(
                    Some(stream.pg_channel().as_str()),
                    channel.as_str(),
                    "{}",
                    name(case)
                );
            }
            (Err(error), None, Some(kind)) => assert_eq!(Some(error.kind()), kind.as_str()),
            (result, _, _) => panic!("case {:?}: unexpected {result:?}", name(case)),
        }
    }
}

#[test]
fn client_messages() {
    for case in &cases(include_str!("../vectors/client_messages.json")) {
        check(
            case,
            decode_client(input(case).as_bytes(), &DecodeLimits::default()),
        );
    }
}

#[test]
fn server_messages() {
    for case in &cases(include_str!("../vectors/server_messages.json")) {
        check(
            case,
            decode_server(input(case).as_bytes(), &DecodeLimits::default()),
        );
    }
}

#[test]
fn notify_payloads() {
    for case in &cases(include_str!("../vectors/notify.json")) {
        check(case, notify::decode(input(case)));
    }
}

#[test]
fn cursors() {
    for case in &cases(include_str!("../vectors/cursor.json")) {
        let result = Cursor::decode(input(case)).map(|cursor| {
            cursor
                .entries
                .iter()
                .map(|(stream, position)| json!([stream.as_str(), position.epoch, position.seq]))
                .collect::<Vec<_>>()
        });
        check(case, result);
        if let Ok(cursor) = Cursor::decode(input(case)) {
            assert_eq!(
                cursor.encode(),
                input(case),
                "canonical form of {:?}",
                name(case)
            );
        }
    }
}

fn outcome_name(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Applied { change, gap } => {
            let base = if change.is_some() {
                "applied"
            } else {
                "superseded"
            };
            if gap.is_some() {
                format!("{base}+gap")
            } else {
                base.to_owned()
            }
        }
        Outcome::Unfollowed { .. } => "unfollowed".into(),
        Outcome::Duplicate => "duplicate".into(),
        Outcome::Ephemeral => "ephemeral".into(),
        Outcome::EpochMismatch { .. } => "epoch_mismatch".into(),
    }
}

#[test]
fn collections() {
    for case in &cases(include_str!("../vectors/collection.json")) {
        let epoch = case["epoch"].as_u64().expect("epoch");
        let mut collection = Collection::new(epoch);
        if let Some(snapshot) = case.get("snapshot") {
            let snapshot: Snapshot<Json> =
                serde_json::from_value(snapshot.clone()).expect("snapshot");
            collection.load_snapshot(snapshot);
        }
        let mut outcomes = Vec::new();
        for raw in case["events"].as_array().expect("events") {
            let mut raw = raw.clone();
            raw["stream"] = json!("vectors");
            if raw.get("epoch").is_none() {
                raw["epoch"] = json!(epoch);
            }
            let event: Event<Json> = serde_json::from_value(raw).expect("event");
            outcomes.push(outcome_name(&collection.apply(&event)));
        }
        let expect = &case["expect"];
        let records: serde_json::Map<String, Value> = collection
            .iter()
            .map(|(key, value)| (key.to_owned(), value.to_value()))
            .collect();
        let missing: Vec<Value> = collection
            .missing()
            .iter()
            .map(|gap| json!([gap.from, gap.to]))
            .collect();
        let actual = json!({
            "epoch": collection.epoch(),
            "applied": collection.applied(),
            "records": records,
            "outcomes": outcomes,
            "missing": missing,
        });
        assert_eq!(&actual, expect, "case {:?}", name(case));
    }
}

#[test]
fn filter_vectors() {
    use tidewire_shared::Filter;
    for case in cases(include_str!("../vectors/filters.json")) {
        let parsed = Filter::parse(&case["filter"]);
        if let Some(path) = case.get("error") {
            let error = parsed.expect_err(name(&case));
            assert_eq!(
                Some(error.path.as_str()),
                path.as_str(),
                "case {:?}",
                name(&case)
            );
            continue;
        }
        let filter = parsed.unwrap_or_else(|error| panic!("case {:?}: {error}", name(&case)));
        // Both evaluations: on a tree (the relay) and on the text (the clients' records).
        for record in case["match"].as_array().expect("match list") {
            assert!(
                filter.matches(record) && filter.matches_json(&Json::from(record)),
                "case {:?}: {record} should match",
                name(&case)
            );
        }
        for record in case["miss"].as_array().expect("miss list") {
            assert!(
                !filter.matches(record) && !filter.matches_json(&Json::from(record)),
                "case {:?}: {record} should not match",
                name(&case)
            );
        }
    }
}
