//! The HTTP API's refusals: every bad input gets its documented status and code, never a
//! 500 or a hang.

use super::*;

/// Every bad input gets its documented status and code, never a 500 or a hang.
#[tokio::test]
async fn bad_requests_get_typed_errors() {
    let relay = Relay::start(|_| {}).await;
    let created = relay
        .post_json(
            "/v1/streams/todos/events",
            &json!({"key": "a", "op": "upsert", "data": 1}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let epoch = relay.get("/v1/streams/todos/snapshot").await.json()["epoch"]
        .as_u64()
        .expect("epoch");

    let long_name = "a".repeat(70);
    let garbage: String = (0..4096)
        .map(|index| char::from(b"AZaz09-._~"[index % 10]))
        .collect();
    let gets: Vec<(String, u16, &str)> = vec![
        // Stream names.
        ("/v1/streams/%22;drop/snapshot".into(), 400, "bad_stream"),
        (
            "/v1/streams/%22;drop%20table/events?since=0".into(),
            400,
            "bad_stream",
        ),
        (
            format!("/v1/streams/{long_name}/snapshot"),
            400,
            "bad_stream",
        ),
        (format!("/v1/streams/{garbage}/snapshot"), 400, "bad_stream"),
        ("/v1/streams/-x/snapshot".into(), 400, "bad_stream"),
        ("/v1/streams/a%ZZ/snapshot".into(), 400, "bad_stream"),
        ("/v1/streams/t%C3%B6do/snapshot".into(), 400, "bad_stream"),
        ("/v1/streams//snapshot".into(), 404, "not_found"),
        ("/v1/streams/raw:orders/snapshot".into(), 400, "bad_stream"),
        (
            "/v1/streams/raw:orders/events?since=0".into(),
            400,
            "bad_stream",
        ),
        // since values.
        ("/v1/streams/todos/events".into(), 400, "bad_since"),
        (
            "/v1/streams/todos/events?since=abc".into(),
            400,
            "bad_since",
        ),
        ("/v1/streams/todos/events?since=-1".into(), 400, "bad_since"),
        (
            "/v1/streams/todos/events?since=1e30".into(),
            400,
            "bad_since",
        ),
        (
            "/v1/streams/todos/events?since=100000000000000000000000000000".into(),
            400,
            "bad_since",
        ),
        (
            format!("/v1/streams/todos/events?since={garbage}"),
            400,
            "bad_since",
        ),
        (
            "/v1/streams/todos/events?since=0&since=1".into(),
            400,
            "bad_since",
        ),
        (
            "/v1/streams/todos/events?since=0&epoch=x".into(),
            400,
            "bad_since",
        ),
        (
            "/v1/streams/todos/events?since=0&limit=0".into(),
            400,
            "bad_message",
        ),
        // Positions the outbox cannot continue: resync.
        ("/v1/streams/todos/events?since=2".into(), 409, "bad_since"),
        (
            "/v1/streams/todos/events?since=9007199254740991".into(),
            409,
            "bad_since",
        ),
        (
            format!("/v1/streams/todos/events?since=0&epoch={}", epoch + 1),
            409,
            "bad_since",
        ),
        // Routes.
        ("/v1/streams".into(), 404, "not_found"),
        ("/v1/streams/".into(), 404, "not_found"),
        ("/v1/streams/never-created".into(), 404, "not_found"),
    ];
    for (path, status, code) in &gets {
        let reply = relay.get(path).await;
        let shown: String = path.chars().take(80).collect();
        reply.assert_error(*status, code, &shown);
    }
    let resync = relay.get("/v1/streams/todos/events?since=2").await.json();
    assert_eq!(resync["resync"], true);
    assert_eq!(
        (resync["epoch"].as_u64(), resync["seq"].as_u64()),
        (Some(epoch), Some(1))
    );
    assert_eq!(resync["stream"], "todos");

    // Publish bodies.
    let posts: Vec<(&str, Bytes, u16, &str)> = vec![
        (
            "todos",
            Bytes::from_static(b"{not json"),
            400,
            "bad_message",
        ),
        ("todos", Bytes::from_static(b""), 400, "bad_message"),
        (
            "todos",
            Bytes::from_static(br#"["a","upsert",1]"#),
            400,
            "bad_message",
        ),
        (
            "todos",
            Bytes::from_static(br#"{"key":"a","op":"upsert","data":1,"extra":2}"#),
            400,
            "bad_message",
        ),
        (
            "todos",
            Bytes::from_static(br#"{"key":"a","op":"patch","data":[1,2]}"#),
            400,
            "bad_data",
        ),
        (
            "todos",
            Bytes::from_static(br#"{"key":"a","op":"upsert","data":"x\u0000y"}"#),
            400,
            "bad_data",
        ),
        (
            "todos",
            Bytes::from_static(br#"{"key":"","op":"upsert","data":1}"#),
            400,
            "bad_key",
        ),
        (
            "todos",
            Bytes::from_static(br#"{"key":"a","op":"replace","data":1}"#),
            400,
            "bad_op",
        ),
        (
            "todos",
            Bytes::from(format!(
                r#"{{"key":"a","op":"upsert","data":"{}"}}"#,
                "x".repeat(40_000)
            )),
            413,
            "too_large",
        ),
        (
            "todos",
            Bytes::from(vec![b' '; MAX_MESSAGE_BYTES + 1]),
            413,
            "too_large",
        ),
        (
            "todos",
            Bytes::from(format!(
                r#"{{"key":"a","op":"message","data":"{}"}}"#,
                "x".repeat(7_500)
            )),
            413,
            "too_large",
        ),
        (
            "raw:orders",
            Bytes::from_static(br#"{"key":"a","op":"upsert","data":1}"#),
            400,
            "bad_stream",
        ),
        (
            "%22;drop",
            Bytes::from_static(br#"{"key":"a","op":"upsert","data":1}"#),
            400,
            "bad_stream",
        ),
    ];
    for (stream, body, status, code) in posts {
        let what = format!(
            "POST {stream}: {}",
            String::from_utf8_lossy(&body[..body.len().min(60)])
        );
        let reply = relay
            .send_json(Method::POST, &format!("/v1/streams/{stream}/events"), body)
            .await;
        reply.assert_error(status, code, &what);
    }
    let text = relay
        .send(
            Method::POST,
            "/v1/streams/todos/events",
            &[("content-type", "text/plain")],
            Bytes::from_static(br#"{"key":"a","op":"upsert"}"#),
        )
        .await;
    assert_eq!(
        text.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "{}",
        text.text()
    );

    // An oversize body without Content-Length is cut off while it streams in.
    let chunks = (0..32)
        .map(|_| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![b' '; 4096]))));
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/streams/todos/events")
        .header("host", relay.addr.to_string())
        .header("content-type", "application/json")
        .body(StreamBody::new(futures_util::stream::iter(chunks)))
        .expect("valid request");
    exchange(relay.addr, request)
        .await
        .assert_error(413, "too_large", "chunked oversize body");

    // Methods.
    let patch = relay
        .send(Method::PATCH, "/v1/streams/todos/events", &[], Bytes::new())
        .await;
    assert_eq!(patch.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(patch.header("allow"), Some("GET, HEAD, POST, OPTIONS"));
    let post_snapshot = relay
        .send_json(Method::POST, "/v1/streams/todos/snapshot", "{}")
        .await;
    assert_eq!(post_snapshot.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post_snapshot.header("allow"), Some("GET, HEAD, OPTIONS"));
    let options = relay
        .send(Method::OPTIONS, "/v1/streams/todos", &[], Bytes::new())
        .await;
    assert_eq!(options.status, StatusCode::NO_CONTENT);
    assert_eq!(
        options.header("allow"),
        Some("GET, HEAD, PUT, DELETE, OPTIONS")
    );

    // Nothing above reached the outbox.
    let page = relay.get("/v1/streams/todos/events?since=0").await.json();
    assert_eq!(events_of(&page), [1]);
    relay.stop().await;
}
