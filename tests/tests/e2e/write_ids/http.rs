//! `Idempotency-Key` on `POST /v1/streams/{stream}/events`: the first commit answers 201, a
//! resend 200 with the same body and `Idempotent-Replayed: true`, another body under the key
//! 409 `conflict`, a bad key 400; browsers may send the header and read the answer's; and a
//! writer whose grant has a filter gets its original seq back even after the record left
//! the filter.

use hyper::StatusCode;
use serde_json::{json, Value};
use tidewire_tests::relay::TestRelay;
use tidewire_tests::TestPg;

use super::{post, recorded, ws_publish};
use crate::support::events;
use crate::transport::client::WsClient;
use crate::views::publish as sql_publish;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_commits_once() {
    let pg = TestPg::start().await;
    let sql = pg.client().await;
    let relay = TestRelay::spawn(&pg).await;
    let addr = relay.addr();
    let write = json!({"key": "o1", "op": "upsert", "data": {"total": 12}});
    let key = [("idempotency-key", "order-1")];

    let first = post(addr, "orders", &write, &key).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.json(), json!({"stream": "orders", "seq": 1}));
    assert_eq!(first.header("idempotent-replayed"), None);

    // The resend, from a page on the relay's own origin: CORS lets it read the header.
    let origin = format!("http://{addr}");
    let again = post(
        addr,
        "orders",
        &write,
        &[("idempotency-key", "order-1"), ("origin", &origin)],
    )
    .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json(), json!({"stream": "orders", "seq": 1}));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert!(again
        .header("access-control-expose-headers")
        .is_some_and(|exposed| exposed.contains("Idempotent-Replayed")));

    // The structured-field form of the header names the same key.
    let quoted = post(
        addr,
        "orders",
        &write,
        &[("idempotency-key", "\"order-1\"")],
    )
    .await;
    assert_eq!(quoted.status, StatusCode::OK);

    let other = json!({"key": "o1", "op": "upsert", "data": {"total": 13}});
    let refused = post(addr, "orders", &other, &key).await;
    refused.assert_error(409, "conflict", "another body under the key");
    assert_eq!(refused.json()["stream"], "orders");

    for bad in ["has space", "", "a/b"] {
        let refused = post(addr, "orders", &write, &[("idempotency-key", bad)]).await;
        refused.assert_error(400, "bad_message", &format!("key {bad:?}"));
    }

    // Without a key every POST is a write of its own.
    for seq in [2, 3] {
        let plain = post(addr, "orders", &write, &[]).await;
        assert_eq!(plain.json(), json!({"stream": "orders", "seq": seq}));
    }
    assert_eq!(events(&sql, "orders").await.len(), 3);
    assert_eq!(relay.hub().metrics.snapshot().write_replays, 2);

    // Browsers may send the header cross-origin.
    let preflight = crate::http_api::try_exchange(
        addr,
        hyper::Request::options("/v1/streams/orders/events")
            .header("host", addr.to_string())
            .header("origin", &origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type, idempotency-key",
            )
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("a request"),
    )
    .await
    .expect("a preflight answer");
    assert!(preflight
        .header("access-control-allow-headers")
        .is_some_and(|allowed| allowed.contains("Idempotency-Key")));
    relay.shutdown().await;
}

const SECRET: &str = "an-hs256-secret-for-the-write-id-tests";

fn token(claims: Value) -> String {
    crate::support::signed_token(SECRET, claims)
}

/// The write that committed inside the writer's filter passed its grant check then; a resend
/// after someone moved the record out of the filter is answered from the write id, before the
/// grant is checked again (which would refuse it), over HTTP and over WebSocket alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_writer_gets_its_seq_after_the_record_moved_away() {
    let pg = TestPg::start().await;
    let sql = pg.client().await;
    let relay = TestRelay::builder(&pg).jwt_secret(SECRET).spawn().await;
    let addr = relay.addr();
    let token = token(json!({
        "sub": "u1",
        "tidewire": {"read": ["tasks"], "write": [{"stream": "tasks", "where": {"owner": "{sub}"}}]}
    }));
    let bearer = format!("Bearer {token}");
    let write = json!({"key": "t1", "op": "upsert", "data": {"owner": "u1", "title": "milk"}});
    let headers = [
        ("authorization", bearer.as_str()),
        ("idempotency-key", "u1-write-1"),
    ];
    let first = post(addr, "tasks", &write, &headers).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    assert_eq!(first.json()["seq"], 1);

    // Someone else gives the task to u2: u1 may no longer write it.
    sql_publish(&sql, "tasks", "t1", "patch", json!({"owner": "u2"})).await;
    let fresh = post(
        addr,
        "tasks",
        &write,
        &[
            ("authorization", bearer.as_str()),
            ("idempotency-key", "u1-write-2"),
        ],
    )
    .await;
    fresh.assert_error(
        403,
        "forbidden",
        "a new write of a record outside the filter",
    );

    let again = post(addr, "tasks", &write, &headers).await;
    assert_eq!(again.status, StatusCode::OK, "{:?}", again.body);
    assert_eq!(again.json(), json!({"stream": "tasks", "seq": 1}));
    let mut ws = WsClient::connected_to(addr, &format!("/v1/ws?access_token={token}")).await;
    let ack = ws_publish(&mut ws, "p1", "tasks", &write, Some("u1-write-1")).await;
    assert_eq!(
        ack,
        json!({"type": "ack", "id": "p1", "stream": "tasks", "seq": 1, "replayed": true})
    );
    // A different write under the id is still a conflict, not a grant question.
    let other = json!({"key": "t1", "op": "upsert", "data": {"owner": "u1", "title": "tea"}});
    let refused = ws_publish(&mut ws, "p2", "tasks", &other, Some("u1-write-1")).await;
    assert_eq!(refused["code"], "conflict", "{refused}");
    assert_eq!(
        events(&sql, "tasks").await.len(),
        2,
        "the write and the move"
    );
    assert_eq!(recorded(&sql, "tasks", "u1-write-1").await, Some(1));
    relay.shutdown().await;
}
