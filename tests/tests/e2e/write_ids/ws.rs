//! Write ids over WebSocket: a write sent again on a new connection answers its first seq with
//! `replayed: true` and is stored once; the same id for another write is a `conflict`, on
//! another stream it is another write; a bad write id is refused without closing the
//! connection; messages ignore write ids.

use serde_json::json;
use tidewire_tests::relay::TestRelay;
use tidewire_tests::TestPg;

use super::{recorded, ws_publish};
use crate::support::events;
use crate::transport::client::WsClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_sent_again_on_a_new_connection_commits_once() {
    let pg = TestPg::start().await;
    let sql = pg.client().await;
    let relay = TestRelay::spawn(&pg).await;
    let write = json!({"key": "t1", "op": "patch", "data": {"done": true}});

    let mut first = WsClient::connected(relay.addr()).await;
    let ack = ws_publish(&mut first, "a", "todos", &write, Some("tab-7.1")).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let seq = ack["seq"].as_u64().expect("a seq");
    assert!(ack.get("replayed").is_none(), "a first commit: {ack}");
    drop(first);

    // The answer was "lost": the client sends the write again, with another op id.
    let mut second = WsClient::connected(relay.addr()).await;
    let again = ws_publish(&mut second, "b", "todos", &write, Some("tab-7.1")).await;
    assert_eq!(
        again,
        json!({"type": "ack", "id": "b", "stream": "todos", "seq": seq, "replayed": true})
    );
    assert_eq!(events(&sql, "todos").await.len(), 1, "stored once");
    assert_eq!(recorded(&sql, "todos", "tab-7.1").await, Some(seq as i64));
    assert_eq!(relay.hub().metrics.snapshot().write_replays, 1);

    // The same id for a different write is refused, naming the request.
    let other = json!({"key": "t1", "op": "patch", "data": {"done": false}});
    let refused = ws_publish(&mut second, "c", "todos", &other, Some("tab-7.1")).await;
    assert_eq!(refused["code"], "conflict", "{refused}");
    assert_eq!(
        (&refused["id"], &refused["stream"]),
        (&json!("c"), &json!("todos"))
    );
    assert_eq!(events(&sql, "todos").await.len(), 1, "nothing written");

    // On another stream the same id is another write.
    let elsewhere = ws_publish(&mut second, "d", "lists", &other, Some("tab-7.1")).await;
    assert_eq!(
        elsewhere,
        json!({"type": "ack", "id": "d", "stream": "lists", "seq": 1})
    );

    // A write id that breaks the rule is refused; the connection stays open.
    for bad in ["", "has space", "é", &"x".repeat(65)] {
        let refused = ws_publish(&mut second, "e", "todos", &write, Some(bad)).await;
        assert_eq!(refused["code"], "bad_message", "{bad:?}: {refused}");
        assert_eq!(refused["id"], "e", "{refused}");
        assert!(
            refused["message"]
                .as_str()
                .is_some_and(|message| message.contains("write_id")),
            "{refused}"
        );
    }
    let fine = ws_publish(&mut second, "f", "todos", &other, Some("tab-7.2")).await;
    assert_eq!(fine["seq"].as_u64(), Some(seq + 1), "{fine}");

    // Messages have no seq to answer a resend with: each one is sent, none is replayed.
    let message = json!({"key": "cursor", "op": "message", "data": {"x": 1}});
    for id in ["g", "h"] {
        let ack = ws_publish(&mut second, id, "todos", &message, Some("tab-7.3")).await;
        assert_eq!(
            ack,
            json!({"type": "ack", "id": id, "stream": "todos", "seq": 0})
        );
    }
    assert_eq!(recorded(&sql, "todos", "tab-7.3").await, None);
    relay.shutdown().await;
}
