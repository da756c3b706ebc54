//! Tests of the JavaScript bindings in headless Chromium (`wasm_bindgen_test`), with the
//! manual transport: messages are injected as if the relay had sent them, so no relay is
//! needed. Includes the shared crate's collection and server-message vectors, run through
//! the client exactly as JavaScript uses it.
#![cfg(target_family = "wasm")]

use js_sys::{Array, Function, Object, Reflect, JSON};
use serde_json::{json, Value};
use tidewire_wasm::TidewireClient;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

fn manual() -> TidewireClient {
    let options = JSON::parse(r#"{"transport":"manual"}"#).expect("options");
    TidewireClient::new("http://localhost:1", Some(options)).expect("client")
}

/// Calls `object[name](...arguments)` as JavaScript would.
fn call(object: &JsValue, name: &str, arguments: &[JsValue]) -> Result<JsValue, JsValue> {
    let function: Function = Reflect::get(object, &name.into())?.dyn_into()?;
    function.apply(object, &arguments.iter().collect::<Array>())
}

fn get(object: &JsValue, name: &str) -> JsValue {
    Reflect::get(object, &name.into()).expect("property")
}

fn to_json(value: &JsValue) -> Value {
    if value.is_undefined() {
        return Value::Null;
    }
    let text = JSON::stringify(value).expect("stringify");
    serde_json::from_str(&String::from(text)).expect("json")
}

fn js(value: &Value) -> JsValue {
    JSON::parse(&value.to_string()).expect("parse")
}

/// Records every argument a callback receives.
fn recorder() -> (Function, Array) {
    let calls = Array::new();
    let function = Function::new_with_args("calls", "return (value) => calls.push(value)")
        .call1(&JsValue::UNDEFINED, &calls)
        .expect("recorder")
        .dyn_into::<Function>()
        .expect("function");
    (function, calls)
}

fn inject(client: &TidewireClient, message: &Value) {
    client.inject(JsValue::from_str(&message.to_string()));
}

fn snapshot(stream: &str, epoch: u64, seq: u64, records: Value) -> Value {
    json!({"type": "snapshot", "stream": stream, "epoch": epoch, "seq": seq, "chunk": 0,
           "last": true, "records": records})
}

fn subscribed(stream: &str, epoch: u64, seq: u64) -> Value {
    json!({"type": "subscribed", "stream": stream, "epoch": epoch, "seq": seq, "resumed": false})
}

/// A manual client with `todos` live at epoch 1, seq 2.
fn live_todos() -> (TidewireClient, JsValue) {
    let client = manual();
    let todos = client.collection("todos", None).expect("collection");
    inject(
        &client,
        &snapshot(
            "todos",
            1,
            2,
            json!([{"key": "a", "seq": 1, "data": {"title": "milk"}},
                                        {"key": "b", "seq": 2, "data": 2}]),
        ),
    );
    inject(&client, &subscribed("todos", 1, 2));
    (client, todos)
}

#[wasm_bindgen_test]
fn collection_vectors_through_the_bindings() {
    let cases: Vec<Value> =
        serde_json::from_str(include_str!("../../shared/vectors/collection.json"))
            .expect("vectors");
    assert!(cases.len() >= 8);
    for case in &cases {
        let name = case["name"].as_str().unwrap_or("?");
        let epoch = case["epoch"].as_u64().expect("epoch");
        let client = manual();
        let collection = client.collection("vectors", None).expect("collection");
        let (on_change, changes) = recorder();
        call(&collection, "subscribe", &[on_change.into()]).expect("subscribe");
        let (on_message, messages) = recorder();
        call(&collection, "on", &["message".into(), on_message.into()]).expect("on");
        let start = case
            .get("snapshot")
            .cloned()
            .unwrap_or_else(|| json!({"epoch": epoch, "seq": 0, "records": []}));
        let mut first = snapshot(
            "vectors",
            start["epoch"].as_u64().expect("epoch"),
            start["seq"].as_u64().expect("seq"),
            start["records"].clone(),
        );
        first["records"] = start["records"].clone();
        inject(&client, &first);
        inject(
            &client,
            &subscribed(
                "vectors",
                first["epoch"].as_u64().expect("epoch"),
                first["seq"].as_u64().expect("seq"),
            ),
        );
        changes.set_length(0);
        let outcomes = case["expect"]["outcomes"].as_array().expect("outcomes");
        for (raw, outcome) in case["events"]
            .as_array()
            .expect("events")
            .iter()
            .zip(outcomes)
        {
            let mut message = raw.clone();
            message["type"] = json!("event");
            message["stream"] = json!("vectors");
            if message.get("epoch").is_none() {
                message["epoch"] = json!(epoch);
            }
            let before = (changes.length(), messages.length());
            inject(&client, &message);
            let after = (changes.length(), messages.length());
            let outcome = outcome.as_str().expect("outcome");
            let expected = if outcome.starts_with("applied") {
                (before.0 + 1, before.1)
            } else if outcome == "ephemeral" {
                (before.0, before.1 + 1)
            } else {
                before
            };
            assert_eq!(
                after, expected,
                "case {name:?}, event {raw}, outcome {outcome}"
            );
            if outcome.starts_with("applied") {
                let change = to_json(&changes.get(before.0));
                assert_eq!(change["seq"], raw["seq"], "case {name:?}");
                assert_eq!(change["origin"], "event");
            }
        }
        let expect = &case["expect"];
        assert_eq!(
            to_json(&call(&collection, "toJSON", &[]).expect("toJSON")),
            expect["records"],
            "case {name:?}"
        );
        assert_eq!(
            get(&collection, "seq").as_f64(),
            expect["applied"].as_f64(),
            "case {name:?}"
        );
        assert_eq!(
            get(&collection, "epoch").as_f64(),
            expect["epoch"].as_f64(),
            "case {name:?}"
        );
        client.close();
    }
}

#[wasm_bindgen_test]
fn server_message_vectors_never_break_the_client() {
    let cases: Vec<Value> =
        serde_json::from_str(include_str!("../../shared/vectors/server_messages.json"))
            .expect("vectors");
    let client = manual();
    let todos = client.collection("todos", None).expect("collection");
    inject(
        &client,
        &snapshot(
            "todos",
            7,
            41,
            json!([{"key": "a", "seq": 40, "data": {"title": "x"}}]),
        ),
    );
    inject(&client, &subscribed("todos", 7, 41));
    for case in &cases {
        client.inject(case["input"].as_str().expect("input").into());
    }
    // The `event` vector (seq 42, patch of "a") applied; the snapshot vector (seq 42, an
    // older snapshot position) was then loaded as a resync.
    assert_eq!(get(&todos, "seq").as_f64(), Some(42.0));
    assert!(to_json(&get(&client.stats(), "malformed")).as_u64() >= Some(1));
    // The `resync` advisory vector announced a new snapshot: until it comes, resyncing.
    assert_eq!(client.status(), "resyncing");
    inject(&client, &snapshot("todos", 8, 50, json!([])));
    inject(&client, &subscribed("todos", 8, 50));
    assert_eq!(client.status(), "live");
    assert_eq!(get(&todos, "size").as_f64(), Some(0.0));
    // Garbage of every kind is ignored.
    for garbage in ["", "{", "[]", "null", "{\"type\":7}", &"[".repeat(10_000)] {
        client.inject(garbage.into());
    }
    assert_eq!(client.status(), "live");
}

#[wasm_bindgen_test]
fn reads_and_iteration() {
    let (client, todos) = live_todos();
    assert_eq!(
        to_json(&call(&todos, "get", &["a".into()]).expect("get")),
        json!({"title": "milk"})
    );
    assert_eq!(
        to_json(&call(&todos, "get", &["b".into()]).expect("get")),
        json!(2)
    );
    assert!(call(&todos, "get", &["zz".into()])
        .expect("get")
        .is_undefined());
    assert_eq!(
        call(&todos, "has", &["a".into()]).expect("has").as_bool(),
        Some(true)
    );
    assert_eq!(get(&todos, "size").as_f64(), Some(2.0));
    assert_eq!(get(&todos, "name").as_string().as_deref(), Some("todos"));
    assert_eq!(get(&todos, "live").as_bool(), Some(true));
    let mut keys: Vec<String> = Array::from(&call(&todos, "keys", &[]).expect("keys"))
        .iter()
        .filter_map(|key| key.as_string())
        .collect();
    keys.sort();
    assert_eq!(keys, vec!["a", "b"]);
    assert_eq!(
        Array::from(&call(&todos, "values", &[]).expect("values")).length(),
        2
    );
    // `Array.from(collection)` uses `[Symbol.iterator]`, which yields [key, value] pairs.
    let mut pairs: Vec<Value> = Array::from(&todos)
        .iter()
        .map(|pair| to_json(&pair))
        .collect();
    pairs.sort_by_key(|pair| pair[0].as_str().unwrap_or_default().to_owned());
    assert_eq!(
        pairs,
        vec![json!(["a", {"title": "milk"}]), json!(["b", 2])]
    );
    let text = JSON::stringify(&todos).expect("stringify");
    assert_eq!(
        serde_json::from_str::<Value>(&String::from(text)).expect("json"),
        json!({"a": {"title": "milk"}, "b": 2})
    );
    // The same object comes back for the same stream.
    assert_eq!(client.collection("todos", None).expect("again"), todos);
    client.close();
}

#[wasm_bindgen_test]
fn change_callbacks_and_unsubscribe() {
    let (client, todos) = live_todos();
    let (callback, calls) = recorder();
    let unsubscribe: Function = call(&todos, "subscribe", &[callback.into()])
        .expect("subscribe")
        .dyn_into()
        .expect("function");
    inject(
        &client,
        &json!({"type": "event", "stream": "todos", "epoch": 1, "seq": 3, "key": "a",
                            "op": "patch", "data": {"done": true}}),
    );
    inject(
        &client,
        &json!({"type": "event", "stream": "todos", "epoch": 1, "seq": 3, "key": "a",
                            "op": "patch", "data": {"done": true}}),
    );
    inject(
        &client,
        &json!({"type": "event", "stream": "todos", "epoch": 1, "seq": 4, "key": "b",
                            "op": "delete"}),
    );
    assert_eq!(calls.length(), 2, "the duplicate is not reported");
    assert_eq!(
        to_json(&calls.get(0)),
        json!({"key": "a", "op": "patch", "seq": 3, "origin": "event",
               "oldValue": {"title": "milk"}, "newValue": {"title": "milk", "done": true}})
    );
    assert_eq!(
        to_json(&calls.get(1)),
        json!({"key": "b", "op": "delete", "seq": 4, "origin": "event", "oldValue": 2})
    );
    assert_eq!(to_json(&get(&client.stats(), "duplicates")), json!(1));
    unsubscribe.call0(&JsValue::UNDEFINED).expect("unsubscribe");
    unsubscribe
        .call0(&JsValue::UNDEFINED)
        .expect("unsubscribing twice is harmless");
    inject(
        &client,
        &json!({"type": "event", "stream": "todos", "epoch": 1, "seq": 5, "key": "c",
                            "op": "upsert", "data": 5}),
    );
    assert_eq!(calls.length(), 2);
    client.close();
}

#[wasm_bindgen_test]
fn resync_reports_what_changed() {
    let (client, todos) = live_todos();
    let (on_change, changes) = recorder();
    let (on_resync, resyncs) = recorder();
    call(&todos, "on", &["change".into(), on_change.into()]).expect("on");
    call(&todos, "on", &["resync".into(), on_resync.into()]).expect("on");
    let (on_status, statuses) = recorder();
    client.on("status", on_status).expect("on status");
    // An event of another epoch: the client asks for a fresh snapshot.
    inject(
        &client,
        &json!({"type": "event", "stream": "todos", "epoch": 2, "seq": 1, "key": "x",
                            "op": "upsert", "data": 1}),
    );
    assert_eq!(client.status(), "resyncing");
    let sent: Vec<Value> = client
        .take_sent()
        .iter()
        .map(|text| serde_json::from_str(text).expect("json"))
        .collect();
    assert_eq!(
        sent.last(),
        Some(&json!({"type": "subscribe", "stream": "todos", "snapshot": true}))
    );
    inject(
        &client,
        &snapshot("todos", 2, 1, json!([{"key": "x", "seq": 1, "data": 1}])),
    );
    inject(&client, &subscribed("todos", 2, 1));
    assert_eq!(client.status(), "live");
    assert_eq!(resyncs.length(), 1);
    let mut keys: Vec<(String, String)> = changes
        .iter()
        .map(|change| {
            let change = to_json(&change);
            (
                change["key"].as_str().unwrap_or_default().into(),
                change["op"].as_str().unwrap_or_default().into(),
            )
        })
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            ("a".into(), "delete".into()),
            ("b".into(), "delete".into()),
            ("x".into(), "upsert".into())
        ]
    );
    let states: Vec<String> = statuses
        .iter()
        .map(|status| {
            to_json(&status)["status"]
                .as_str()
                .unwrap_or_default()
                .into()
        })
        .collect();
    assert_eq!(states, vec!["resyncing", "live"]);
    assert_eq!(get(&todos, "epoch").as_f64(), Some(2.0));
    client.close();
}

#[wasm_bindgen_test]
async fn writes_resolve_with_the_committed_seq() {
    let (client, todos) = live_todos();
    client.take_sent();
    let set: js_sys::Promise = call(&todos, "set", &["c".into(), js(&json!({"x": [1, 2]}))])
        .expect("set")
        .dyn_into()
        .expect("promise");
    let sent: Value = serde_json::from_str(&client.take_sent()[0]).expect("json");
    assert_eq!(sent["type"], "publish");
    assert_eq!(sent["op"], "upsert");
    assert_eq!(sent["data"], json!({"x": [1, 2]}));
    // Shown at once; the promise resolves once the event at the acknowledged seq is applied.
    assert_eq!(
        call(&todos, "get", &["c".into()])
            .ok()
            .and_then(|value| js_sys::JSON::stringify(&value).ok())
            .and_then(|text| text.as_string())
            .as_deref(),
        Some(r#"{"x":[1,2]}"#)
    );
    inject(
        &client,
        &json!({"type": "ack", "id": sent["id"], "stream": "todos", "seq": 3}),
    );
    inject(
        &client,
        &json!({"type": "event", "stream": "todos", "epoch": 1, "seq": 3, "key": "c",
                "op": "upsert", "data": {"x": [1, 2]}}),
    );
    assert_eq!(
        JsFuture::from(set).await.expect("resolved").as_f64(),
        Some(3.0)
    );

    let patch: js_sys::Promise = call(&todos, "patch", &["c".into(), JsValue::from(5)])
        .expect("patch")
        .dyn_into()
        .expect("promise");
    let error = JsFuture::from(patch)
        .await
        .expect_err("a patch must be an object");
    assert!(error.is_instance_of::<js_sys::Error>());
    assert_eq!(get(&error, "code").as_string().as_deref(), Some("bad_data"));
    assert_eq!(
        get(&error, "name").as_string().as_deref(),
        Some("TidewireError")
    );

    let delete: js_sys::Promise = call(&todos, "delete", &["a".into()])
        .expect("delete")
        .dyn_into()
        .expect("promise");
    let sent: Value = serde_json::from_str(&client.take_sent()[0]).expect("json");
    inject(
        &client,
        &json!({"type": "error", "id": sent["id"], "code": "forbidden", "message": "no write access"}),
    );
    let error = JsFuture::from(delete).await.expect_err("refused");
    assert_eq!(
        get(&error, "code").as_string().as_deref(),
        Some("forbidden")
    );

    let pending: js_sys::Promise = call(&todos, "set", &["d".into(), JsValue::from(1)])
        .expect("set")
        .dyn_into()
        .expect("promise");
    client.close();
    let error = JsFuture::from(pending).await.expect_err("closed");
    assert_eq!(get(&error, "code").as_string().as_deref(), Some("closed"));
    assert_eq!(client.status(), "closed");
}

#[wasm_bindgen_test]
async fn ready_resolves_when_live() {
    let client = manual();
    let todos = client.collection("todos", None).expect("collection");
    let ready: js_sys::Promise = call(&todos, "ready", &[])
        .expect("ready")
        .dyn_into()
        .expect("promise");
    let client_ready = client.ready();
    inject(&client, &snapshot("todos", 1, 0, json!([])));
    inject(&client, &subscribed("todos", 1, 0));
    JsFuture::from(ready).await.expect("collection ready");
    JsFuture::from(client_ready).await.expect("client ready");
    client.close();
}

#[wasm_bindgen_test]
fn errors_are_error_objects_with_codes() {
    let bad_option = JSON::parse(r#"{"transport":"pigeon"}"#).expect("json");
    let error =
        TidewireClient::new("http://localhost:1", Some(bad_option)).expect_err("bad option");
    assert!(error.is_instance_of::<js_sys::Error>());
    assert_eq!(
        get(&error, "code").as_string().as_deref(),
        Some("bad_argument")
    );
    let bad_snapshot = JSON::parse(r#"{"snapshot":"pigeon"}"#).expect("json");
    let error =
        TidewireClient::new("http://localhost:1", Some(bad_snapshot)).expect_err("bad option");
    assert_eq!(
        get(&error, "code").as_string().as_deref(),
        Some("bad_argument")
    );
    let http = JSON::parse(r#"{"transport":"manual","snapshot":"http"}"#).expect("json");
    TidewireClient::new("http://localhost:1", Some(http))
        .expect("snapshot: http is an option")
        .close();
    let error = TidewireClient::new("ftp://x", None).expect_err("bad url");
    assert_eq!(
        get(&error, "code").as_string().as_deref(),
        Some("bad_argument")
    );
    let client = manual();
    let error = client
        .collection("no spaces", None)
        .expect_err("bad stream");
    assert_eq!(
        get(&error, "code").as_string().as_deref(),
        Some("bad_stream")
    );
    let error = client
        .on("nope", Function::new_no_args(""))
        .expect_err("bad event");
    assert_eq!(
        get(&error, "code").as_string().as_deref(),
        Some("bad_argument")
    );
    client.close();
    client.close();
    let error = client.collection("todos", None).expect_err("closed");
    assert_eq!(get(&error, "code").as_string().as_deref(), Some("closed"));
}

#[wasm_bindgen_test]
fn presence_and_ephemeral_messages() {
    let (client, todos) = live_todos();
    inject(
        &client,
        &json!({"type": "advisory", "kind": "connect", "reason": "relay=r1 connection=conn-7"}),
    );
    assert_eq!(client.presence_id().as_deref(), Some("r1-7"));
    client.take_sent();
    call(&todos, "setPresence", &[js(&json!({"name": "ann"}))]).expect("setPresence");
    let sent: Value = serde_json::from_str(&client.take_sent()[0]).expect("json");
    assert_eq!(
        sent,
        json!({"type": "presence", "stream": "todos", "data": {"name": "ann"}})
    );
    let (on_presence, presence) = recorder();
    call(&todos, "on", &["presence".into(), on_presence.into()]).expect("on");
    inject(
        &client,
        &json!({"type": "presence", "stream": "todos", "full": true,
                            "present": [{"client": "r1-7", "data": {"name": "ann"}}, {"client": "r2-1", "data": {"name": "bob"}}]}),
    );
    inject(
        &client,
        &json!({"type": "presence", "stream": "todos", "left": ["r2-1"]}),
    );
    assert_eq!(presence.length(), 2);
    assert_eq!(
        to_json(&get(&todos, "presence")),
        json!([{"client": "r1-7", "data": {"name": "ann"}, "self": true}])
    );
    let (on_message, messages) = recorder();
    call(&todos, "on", &["message".into(), on_message.into()]).expect("on");
    inject(
        &client,
        &json!({"type": "event", "stream": "todos", "epoch": 1, "seq": 0, "key": "cursor",
                            "op": "message", "data": {"x": 3}}),
    );
    assert_eq!(
        to_json(&messages.get(0)),
        json!({"key": "cursor", "data": {"x": 3}})
    );
    assert_eq!(
        get(&todos, "seq").as_f64(),
        Some(2.0),
        "messages are not stored"
    );
    client.close();
}

fn options(value: &Value) -> Option<js_sys::Object> {
    Some(js(value).dyn_into().expect("object"))
}

fn sorted_keys(collection: &JsValue) -> Vec<String> {
    let mut keys: Vec<String> = Array::from(&call(collection, "keys", &[]).expect("keys"))
        .iter()
        .filter_map(|key| key.as_string())
        .collect();
    keys.sort();
    keys
}

#[wasm_bindgen_test]
fn filtered_collections_of_one_stream_are_independent_views() {
    let client = manual();
    let mine = client
        .collection("tasks", options(&json!({"where": {"owner": "u1"}})))
        .expect("collection");
    let again = client
        .collection("tasks", options(&json!({"where": {"owner": "u1"}})))
        .expect("collection");
    assert_eq!(mine, again, "one object per stream and filter");
    let theirs = client
        .collection("tasks", options(&json!({"where": {"owner": "u2"}})))
        .expect("collection");
    assert_ne!(mine, theirs);
    let all = client
        .collection("tasks", options(&json!({})))
        .expect("collection");
    assert_eq!(all, client.collection("tasks", None).expect("collection"));
    assert_eq!(to_json(&get(&mine, "where")), json!({"owner": "u1"}));
    assert!(get(&all, "where").is_undefined());
    let (on_mine, mine_changes) = recorder();
    call(&mine, "subscribe", &[on_mine.into()]).expect("subscribe");
    let (on_theirs, theirs_changes) = recorder();
    call(&theirs, "subscribe", &[on_theirs.into()]).expect("subscribe");
    // The last subscribe is for the union (every record: `all` has no filter).
    let sent: Vec<Value> = client
        .take_sent()
        .iter()
        .map(|text| serde_json::from_str(text).expect("json"))
        .collect();
    assert_eq!(
        sent.last(),
        Some(&json!({"type": "subscribe", "stream": "tasks", "snapshot": true}))
    );
    // One snapshot per subscribe: only the last one's is shown.
    for _ in 1..sent.len() {
        inject(&client, &snapshot("tasks", 1, 1, json!([])));
    }
    inject(
        &client,
        &snapshot(
            "tasks",
            1,
            3,
            json!([{"key": "t1", "seq": 1, "data": {"owner": "u1", "title": "milk"}},
                   {"key": "t2", "seq": 2, "data": {"owner": "u2", "title": "eggs"}},
                   {"key": "t3", "seq": 3, "data": {"owner": "u3"}}]),
        ),
    );
    inject(&client, &subscribed("tasks", 1, 3));
    assert_eq!(get(&mine, "live").as_bool(), Some(true));
    assert_eq!(sorted_keys(&mine), vec!["t1"]);
    assert_eq!(sorted_keys(&theirs), vec!["t2"]);
    assert_eq!(sorted_keys(&all), vec!["t1", "t2", "t3"]);
    assert_eq!(get(&mine, "size").as_f64(), Some(1.0));
    assert!(call(&mine, "get", &["t2".into()])
        .expect("get")
        .is_undefined());
    assert_eq!(
        call(&theirs, "has", &["t2".into()]).expect("has").as_bool(),
        Some(true)
    );
    assert_eq!(
        serde_json::from_str::<Value>(&String::from(JSON::stringify(&theirs).expect("json")))
            .expect("json"),
        json!({"t2": {"owner": "u2", "title": "eggs"}})
    );
    assert_eq!(mine_changes.length(), 1);
    assert_eq!(theirs_changes.length(), 1);

    // t2 moves to u1: an insert for one, a delete for the other.
    inject(
        &client,
        &json!({"type": "event", "stream": "tasks", "epoch": 1, "seq": 4, "key": "t2",
                "op": "patch", "data": {"owner": "u1"}}),
    );
    assert_eq!(
        to_json(&mine_changes.get(1)),
        json!({"key": "t2", "op": "upsert", "seq": 4, "origin": "event",
               "newValue": {"owner": "u1", "title": "eggs"}})
    );
    assert_eq!(
        to_json(&theirs_changes.get(1)),
        json!({"key": "t2", "op": "delete", "seq": 4, "origin": "event",
               "oldValue": {"owner": "u2", "title": "eggs"}})
    );
    // u3's record concerns neither.
    inject(
        &client,
        &json!({"type": "event", "stream": "tasks", "epoch": 1, "seq": 5, "key": "t3",
                "op": "patch", "data": {"title": "tea"}}),
    );
    assert_eq!((mine_changes.length(), theirs_changes.length()), (2, 2));
    assert_eq!(sorted_keys(&mine), vec!["t1", "t2"]);
    assert!(sorted_keys(&theirs).is_empty());
    client.close();
}

#[wasm_bindgen_test]
fn bad_filters_throw_and_matches_evaluates_locally() {
    let client = manual();
    for (options_value, code) in [
        (json!({"where": {"prio": {"gte": 1}}}), "bad_filter"),
        (json!({"where": "owner"}), "bad_filter"),
        (json!({"where": [{"owner": "u1"}]}), "bad_filter"),
        (json!({"filter": {"owner": "u1"}}), "bad_argument"),
    ] {
        let error = client
            .collection("tasks", options(&options_value))
            .expect_err("refused");
        assert!(error.is_instance_of::<js_sys::Error>());
        assert_eq!(
            get(&error, "code").as_string().as_deref(),
            Some(code),
            "{options_value}"
        );
    }
    let error = client
        .collection("raw:orders", options(&json!({"where": {"a": 1}})))
        .expect_err("raw");
    assert_eq!(
        get(&error, "code").as_string().as_deref(),
        Some("bad_filter")
    );
    assert!(client.take_sent().is_empty(), "nothing subscribed");

    let filter = js(&json!({"owner": "u1", "prio": {"gt": 2}}));
    let matched = |value: Value| {
        tidewire_wasm::client::matches(filter.clone(), js(&value)).expect("valid filter")
    };
    assert!(matched(json!({"owner": "u1", "prio": 3})));
    assert!(!matched(json!({"owner": "u1", "prio": 2})));
    assert!(!matched(json!({"owner": "u1", "prio": "3"})));
    let error = tidewire_wasm::client::matches(js(&json!({"a": {"nope": 1}})), js(&json!({})))
        .expect_err("bad filter");
    assert_eq!(
        get(&error, "code").as_string().as_deref(),
        Some("bad_filter")
    );
    client.close();
}

/// Every record the application reads is the record the engine holds, and each change's
/// `newValue` is the object shown, whichever way the value reached JavaScript: made from the
/// message JavaScript parsed (a value as it arrived, a patch newer than everything, a removal)
/// or sent as text (a patch that arrived late, a record moving into a filtered collection,
/// a record under a pending write). 1,000 events over four keys, in order with swaps and
/// repeats, with values that are not objects and a `__proto__` field.
#[wasm_bindgen_test]
fn records_shown_are_the_records_held() {
    let client = manual();
    let all = client.collection("mix", None).expect("collection");
    let open = client
        .collection("mix", options(&json!({"where": {"done": false}})))
        .expect("collection");
    let (on_change, changes) = recorder();
    call(&all, "subscribe", &[on_change.into()]).expect("subscribe");
    inject(
        &client,
        &snapshot(
            "mix",
            1,
            2,
            json!([{"key": "k0", "seq": 1, "data": {"done": false, "n": 0}},
                   {"key": "k1", "seq": 2, "data": "not an object"}]),
        ),
    );
    inject(&client, &subscribed("mix", 1, 2));
    // A pending write (never answered here) over one key: events to it go through the
    // optimistic overlay.
    call(
        &all,
        "set",
        &["k7".into(), js(&json!({"done": false, "mine": true}))],
    )
    .expect("set");
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    let mut events: Vec<Value> = Vec::new();
    for seq in 3..1003u64 {
        // Few keys, so late patches often meet newer writes to their key.
        let key = if next(10) == 0 {
            "k7".to_owned()
        } else {
            format!("k{}", next(3))
        };
        let (op, data) = match next(20) {
            0..=5 => (
                "upsert",
                json!({"done": next(2) == 0, "n": seq, "tags": ["a", format!("t{}", next(5))]}),
            ),
            6 => ("upsert", json!([seq])),
            7..=17 => {
                let mut patch = json!({"n": seq});
                if next(2) == 0 {
                    patch["done"] = json!(next(2) == 0);
                }
                if next(10) == 0 {
                    patch["__proto__"] = json!({"polluted": seq});
                }
                ("patch", patch)
            }
            _ => ("delete", Value::Null),
        };
        events.push(
            json!({"type": "event", "stream": "mix", "epoch": 1, "seq": seq,
                           "key": key, "op": op, "data": data}),
        );
    }
    // In order, but a third of the events swapped with one up to two places on (a patch
    // may then arrive after a newer write to its key), and a tenth sent twice.
    let mut order: Vec<usize> = (0..events.len()).collect();
    for at in 0..order.len() - 2 {
        if next(3) == 0 {
            order.swap(at, at + 1 + next(2) as usize);
        }
    }
    let engine = |collection: &JsValue| -> Value {
        let text = call(collection, "_engineRecords", &[]).expect("engine records");
        serde_json::from_str(&text.as_string().expect("text")).expect("json")
    };
    for (step, &index) in order.iter().enumerate() {
        let times = if next(10) == 0 { 2 } else { 1 };
        for _ in 0..times {
            let before = changes.length();
            inject(&client, &events[index]);
            for at in before..changes.length() {
                let change = changes.get(at);
                let key = get(&change, "key");
                let new = get(&change, "newValue");
                assert!(
                    new.is_undefined()
                        || Object::is(&new, &call(&all, "get", &[key]).expect("get")),
                    "step {step}: a change's newValue is the record shown"
                );
            }
            for collection in [&all, &open] {
                let shown = to_json(&call(collection, "toJSON", &[]).expect("toJSON"));
                assert_eq!(
                    shown,
                    engine(collection),
                    "step {step}, event {}",
                    events[index]
                );
            }
        }
    }
    assert_eq!(get(&all, "seq").as_f64(), Some(1002.0));
    client.close();
}
