//! The HTTP API's stream administration (PUT, DELETE) and its permissions.

use super::*;

/// PUT creates and updates streams, DELETE drops them; a client of the old epoch resyncs.
#[tokio::test]
async fn stream_admin_create_update_drop() {
    let relay = Relay::start(|_| {}).await;
    let created = relay
        .send_json(
            Method::PUT,
            "/v1/streams/chat:room-1",
            r#"{"kind":"temp","ttl_seconds":60}"#,
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let created = created.json();
    assert_eq!(
        (
            created["created"].as_bool(),
            created["kind"].as_str(),
            created["ttl_seconds"].as_u64()
        ),
        (Some(true), Some("temp"), Some(60))
    );
    let epoch = created["epoch"].as_u64().expect("epoch");

    let info = relay.get("/v1/streams/chat:room-1").await.json();
    assert_eq!(
        (
            info["kind"].as_str(),
            info["ttl_seconds"].as_u64(),
            info["epoch"].as_u64()
        ),
        (Some("temp"), Some(60), Some(epoch))
    );
    assert!(info["expires_at"].as_i64().is_some());

    let updated = relay
        .send_json(
            Method::PUT,
            "/v1/streams/chat:room-1",
            r#"{"kind":"temp","ttl_seconds":120}"#,
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.text());
    assert_eq!(
        (
            updated.json()["created"].as_bool(),
            updated.json()["epoch"].as_u64()
        ),
        (Some(false), Some(epoch))
    );
    // An empty body makes it permanent.
    let permanent = relay
        .send(Method::PUT, "/v1/streams/chat:room-1", &[], Bytes::new())
        .await;
    assert_eq!(permanent.status, StatusCode::OK, "{}", permanent.text());
    assert_eq!(
        relay.get("/v1/streams/chat:room-1").await.json()["kind"],
        "permanent"
    );

    for (body, code) in [
        (r#"{"kind":"temp"}"#, "bad_data"),
        (r#"{"kind":"temp","ttl_seconds":0}"#, "bad_data"),
        (r#"{"kind":"permanent","ttl_seconds":5}"#, "bad_data"),
        (r#"{"kind":"forever"}"#, "bad_data"),
        (r#"{"kind":"temp","ttl_seconds":-5}"#, "bad_message"),
        (r#"{"kind":"temp","ttl_seconds":1e3}"#, "bad_message"),
        (r#"{"type":"temp"}"#, "bad_message"),
        ("[]", "bad_message"),
    ] {
        relay
            .send_json(Method::PUT, "/v1/streams/chat:room-2", body)
            .await
            .assert_error(400, code, body);
    }
    relay
        .send_json(
            Method::PUT,
            "/v1/streams/raw:orders",
            r#"{"kind":"permanent"}"#,
        )
        .await
        .assert_error(400, "bad_stream", "PUT raw");
    relay
        .send(Method::DELETE, "/v1/streams/raw:orders", &[], Bytes::new())
        .await
        .assert_error(400, "bad_stream", "DELETE raw");

    let publish = relay
        .post_json(
            "/v1/streams/chat:room-1/events",
            &json!({"key": "m1", "op": "upsert", "data": "hi"}),
        )
        .await;
    assert_eq!(publish.json()["seq"], 1);
    let dropped = relay
        .send(Method::DELETE, "/v1/streams/chat:room-1", &[], Bytes::new())
        .await;
    assert_eq!(dropped.status, StatusCode::NO_CONTENT, "{}", dropped.text());
    assert!(dropped.body.is_empty());
    relay
        .get("/v1/streams/chat:room-1")
        .await
        .assert_error(404, "not_found", "info after drop");
    relay
        .send(Method::DELETE, "/v1/streams/chat:room-1", &[], Bytes::new())
        .await
        .assert_error(404, "not_found", "second drop");

    // Reading recreates the stream with a new epoch; a client of the old one must resync.
    let fresh = relay.get("/v1/streams/chat:room-1/snapshot").await.json();
    assert_ne!(fresh["epoch"].as_u64(), Some(epoch));
    assert_eq!(fresh["records"], json!([]));
    let stale = relay
        .get(&format!(
            "/v1/streams/chat:room-1/events?since=1&epoch={epoch}"
        ))
        .await;
    stale.assert_error(409, "bad_since", "old epoch");
    assert_eq!(stale.json()["resync"], true);
    relay.stop().await;
}

/// With a JWT key configured, anonymous access is limited to the listed patterns.
#[tokio::test]
async fn permissions_are_enforced() {
    let relay = Relay::start(|options| {
        options.jwt_secret = Some("an-hs256-secret-of-enough-length-for-tests".into());
        options.anon_read = vec!["public:*".into()];
        options.anon_write = vec![];
    })
    .await;
    let read = relay.get("/v1/streams/public:news/snapshot").await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text());
    relay
        .get("/v1/streams/private/snapshot")
        .await
        .assert_error(403, "forbidden", "read without grant");
    relay
        .post_json(
            "/v1/streams/public:news/events",
            &json!({"key": "a", "op": "upsert", "data": 1}),
        )
        .await
        .assert_error(403, "forbidden", "write without grant");
    relay
        .send(Method::DELETE, "/v1/streams/public:news", &[], Bytes::new())
        .await
        .assert_error(403, "forbidden", "drop without grant");
    let bad_token = relay
        .send(
            Method::GET,
            "/v1/streams/public:news/snapshot",
            &[("authorization", "Bearer not-a-jwt")],
            Bytes::new(),
        )
        .await;
    bad_token.assert_error(401, "unauthorized", "garbage token");
    assert!(bad_token.header("www-authenticate").is_some());
    let metrics = relay.get("/metrics").await.text();
    assert!(
        metrics.contains("tidewire_auth_failures_total 1\n"),
        "{metrics}"
    );
    relay.stop().await;
}
