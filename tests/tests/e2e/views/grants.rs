//! The grant escape matrix: a token's filter is ANDed with whatever the client asks, claims
//! fill patterns and filters without ever widening them, writes stay inside the filter, and
//! a refreshed token narrows a live view.

use serde_json::{json, Value};
use tidewire_tests::relay::TestRelay;
use tidewire_tests::TestPg;

use super::{publish, with_token, ViewReader};
use crate::transport::client::WsClient;

const SECRET: &str = "an-hs256-secret-of-enough-length-for-views";

fn token(claims: Value) -> String {
    crate::support::signed_token(SECRET, claims)
}

/// The usual claim-bound grant: boards by claim, tasks by owner.
fn grant(sub: Value, boards: Value) -> Value {
    json!({
        "sub": sub,
        "boards": boards,
        "tidewire": {
            "read": ["board:{claims.boards}/*", {"stream": "tasks", "where": {"owner": "{sub}"}}],
            "write": [{"stream": "tasks", "where": {"owner": "{sub}"}}]
        }
    })
}

async fn seeded() -> (TestPg, TestRelay) {
    let pg = TestPg::start().await;
    let sql = pg.client().await;
    for (key, owner) in [("t1", "u1"), ("t2", "u2"), ("t3", "u1"), ("t4", "*")] {
        publish(
            &sql,
            "tasks",
            key,
            "upsert",
            json!({"owner": owner, "title": key}),
        )
        .await;
    }
    let relay = TestRelay::builder(&pg).jwt_secret(SECRET).spawn().await;
    (pg, relay)
}

/// The keys of the snapshot a subscribe with `filter` gets, or the error code.
async fn snapshot_keys(
    ws: &mut WsClient,
    stream: &str,
    filter: Option<Value>,
) -> Result<Vec<String>, String> {
    let mut message = json!({"type": "subscribe", "stream": stream});
    if let Some(filter) = filter {
        message["where"] = filter;
    }
    ws.send(message).await;
    let mut keys = Vec::new();
    loop {
        let message = ws.json().await;
        match message["type"].as_str() {
            Some("error") => return Err(message["code"].as_str().unwrap_or_default().to_owned()),
            Some("snapshot") => keys.extend(
                message["records"]
                    .as_array()
                    .expect("records")
                    .iter()
                    .map(|record| record["key"].as_str().unwrap_or_default().to_owned()),
            ),
            Some("subscribed") => return Ok(keys),
            _ => {}
        }
    }
}

/// A case: its name, the client's `where`, and the keys it gets (or the error code).
type Narrowing = (
    &'static str,
    Option<Value>,
    Result<Vec<&'static str>, &'static str>,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_can_narrow_its_grant_never_widen_it() {
    let (_pg, relay) = seeded().await;
    let path = with_token(&token(grant(json!("u1"), json!([1, 2]))));
    let cases: [Narrowing; 6] = [
        ("no where: the grant's filter", None, Ok(vec!["t1", "t3"])),
        ("another owner", Some(json!({"owner": "u2"})), Ok(vec![])),
        (
            "or trick",
            Some(json!({"or": [{"owner": "u2"}, {"owner": "u1"}]})),
            Ok(vec!["t1", "t3"]),
        ),
        (
            "not trick",
            Some(json!({"not": {"owner": "u1"}})),
            Ok(vec![]),
        ),
        ("everything", Some(json!({})), Ok(vec!["t1", "t3"])),
        (
            "a narrower view",
            Some(json!({"title": "t3"})),
            Ok(vec!["t3"]),
        ),
    ];
    for (name, filter, expected) in cases {
        let mut ws = WsClient::connected_to(relay.addr(), &path).await;
        let expected = expected
            .map(|keys| keys.into_iter().map(str::to_owned).collect::<Vec<_>>())
            .map_err(str::to_owned);
        assert_eq!(
            snapshot_keys(&mut ws, "tasks", filter).await,
            expected,
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_fill_patterns_and_filters_and_bad_claims_grant_nothing() {
    let (_pg, relay) = seeded().await;
    let cases: [(&str, Value, &str, Result<(), &str>); 11] = [
        (
            "array claim, first board",
            grant(json!("u1"), json!([1, 2])),
            "board:1/chat",
            Ok(()),
        ),
        (
            "array claim, second board",
            grant(json!("u1"), json!([1, 2])),
            "board:2/x",
            Ok(()),
        ),
        (
            "another board",
            grant(json!("u1"), json!([1, 2])),
            "board:3/x",
            Err("forbidden"),
        ),
        (
            "a prefix of a board",
            grant(json!("u1"), json!([1])),
            "board:10/x",
            Err("forbidden"),
        ),
        (
            "star in a claim",
            grant(json!("u1"), json!(["*"])),
            "board:9/x",
            Err("forbidden"),
        ),
        (
            "brace in a claim",
            grant(json!("u1"), json!(["1}"])),
            "board:1/x",
            Err("forbidden"),
        ),
        (
            "slash in a claim",
            grant(json!("u1"), json!(["1/x"])),
            "board:1/x/y",
            Err("forbidden"),
        ),
        (
            "quote in a claim",
            grant(json!("u1"), json!(["1\""])),
            "board:1/x",
            Err("forbidden"),
        ),
        (
            "missing claim",
            json!({"sub": "u1", "tidewire": {"read": ["board:{claims.boards}/*"]}}),
            "board:1/x",
            Err("forbidden"),
        ),
        (
            "missing sub",
            json!({"boards": [1], "tidewire": {"read": [{"stream": "tasks", "where": {"owner": "{sub}"}}]}}),
            "tasks",
            Err("forbidden"),
        ),
        (
            "a star sub matches only the literal owner",
            grant(json!("*"), json!([])),
            "tasks",
            Ok(()),
        ),
    ];
    for (name, claims, stream, expected) in cases {
        let mut ws = WsClient::connected_to(relay.addr(), &with_token(&token(claims))).await;
        let got = snapshot_keys(&mut ws, stream, None).await;
        match (&got, expected) {
            (Ok(keys), Ok(())) if stream == "tasks" => assert_eq!(keys, &["t4"], "{name}"),
            (Ok(_), Ok(())) => {}
            (Err(code), Err(expected)) => assert_eq!(code, expected, "{name}"),
            _ => panic!("{name}: got {got:?}, expected {expected:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_stay_inside_the_grant_filter() {
    let (pg, relay) = seeded().await;
    let mut ws = WsClient::connected_to(
        relay.addr(),
        &with_token(&token(grant(json!("u1"), json!([])))),
    )
    .await;
    let cases = [
        (
            "another owner's record",
            json!({"key": "t2", "op": "patch", "data": {"title": "mine now"}}),
            "forbidden",
        ),
        (
            "a new record for another owner",
            json!({"key": "t9", "op": "upsert", "data": {"owner": "u2"}}),
            "forbidden",
        ),
        (
            "moving my record out",
            json!({"key": "t1", "op": "patch", "data": {"owner": "u2"}}),
            "forbidden",
        ),
        (
            "deleting another owner's record",
            json!({"key": "t2", "op": "delete"}),
            "forbidden",
        ),
        (
            "a message about another owner",
            json!({"key": "m", "op": "message", "data": {"owner": "u2"}}),
            "forbidden",
        ),
        (
            "my record",
            json!({"key": "t1", "op": "patch", "data": {"title": "done"}}),
            "ack",
        ),
        (
            "a new record of mine",
            json!({"key": "t5", "op": "upsert", "data": {"owner": "u1"}}),
            "ack",
        ),
    ];
    for (index, (name, write, expected)) in cases.into_iter().enumerate() {
        let mut message = write;
        message["type"] = json!("publish");
        message["id"] = json!(format!("w{index}"));
        message["stream"] = json!("tasks");
        ws.send(message).await;
        let answer = ws.json().await;
        let got = match answer["type"].as_str() {
            Some("ack") => "ack",
            _ => answer["code"].as_str().unwrap_or("?"),
        };
        assert_eq!(got, expected, "{name}: {answer}");
    }
    let sql = pg.client().await;
    let owner_of_t2: Value = sql
        .query_one(
            "select data from tidewire.records where stream = 'tasks' and key = 't2'",
            &[],
        )
        .await
        .expect("t2")
        .get(0);
    assert_eq!(
        owner_of_t2,
        json!({"owner": "u2", "title": "t2"}),
        "refused writes changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refreshed_token_narrows_then_ends_a_live_view() {
    let (pg, relay) = seeded().await;
    let all = token(json!({"sub": "u1", "tidewire": {"read": ["tasks"]}}));
    let mut ws = WsClient::connected_to(relay.addr(), &with_token(&all)).await;
    let mut view = ViewReader::new("tasks", json!({}));
    view.subscribe(&mut ws).await;
    assert_eq!(view.records.len(), 4);

    // The new token only grants u1's tasks: resync, then a snapshot without the others.
    ws.send(json!({"type": "auth", "token": token(grant(json!("u1"), json!([])))}))
        .await;
    let resync = ws.expect("advisory").await;
    assert_eq!(resync["kind"], "resync", "{resync}");
    view.apply(&resync);
    while !view.live {
        let message = ws.json().await;
        view.apply(&message);
    }
    assert_eq!(view.records.keys().collect::<Vec<_>>(), ["t1", "t3"]);
    // Live events outside the new grant no longer arrive.
    view.filter = json!({"owner": "u1"});
    let sql = pg.client().await;
    publish(&sql, "tasks", "t6", "upsert", json!({"owner": "u2"})).await;
    publish(&sql, "tasks", "t7", "upsert", json!({"owner": "u1"})).await;
    assert!(view.until_equal(&mut ws, &sql).await);
    assert_eq!(view.seqs, [6], "only u1's write reached the view");

    // A token without the stream ends the subscription.
    ws.send(json!({"type": "auth", "token": token(json!({"sub": "u1", "tidewire": {"read": ["other"]}}))})).await;
    let error = ws.expect("error").await;
    assert_eq!(
        (error["code"].as_str(), error["stream"].as_str()),
        (Some("forbidden"), Some("tasks"))
    );
    assert_eq!(ws.expect("unsubscribed").await["stream"], "tasks");
}
