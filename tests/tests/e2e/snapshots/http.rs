//! `GET /v1/streams/{s}/snapshot` in pages: every page of one position is the state at its
//! seq while writers commit, a page fetched again is byte for byte the same with the same
//! `ETag` (and `304` for `If-None-Match`), cache headers say what may be kept, the events after
//! the seq complete the state, and an expired cursor is answered 409 `resync`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::HeaderMap;
use hyper::StatusCode;
use serde_json::{json, Value};
use tidewire_tests::relay::TestRelay;
use tidewire_tests::TestPg;

use super::{seed, truth, Writers};
use crate::support::WAIT;
use crate::transport::client::{get, get_json};

async fn fetch(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Bytes) {
    let (status, headers, body) = get(addr, path, headers).await;
    let body = tokio::time::timeout(WAIT, body.collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    (status, headers, body)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_pages_are_consistent_identical_and_cacheable() {
    let pg = TestPg::start().await;
    let relay = TestRelay::spawn_with(&pg, |options| options.snapshot_share_ms = 0).await;
    let db = pg.client().await;
    seed(&db, "pages", 3000).await;
    let (at, before) = truth(&db, "pages").await;

    let base = "/v1/streams/pages/snapshot?limit=200";
    let (status, headers, body) = fetch(relay.addr(), base, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "cache-control"), "public, no-cache");
    let first: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(first["seq"].as_u64(), Some(at));
    let epoch = first["epoch"].as_u64().expect("epoch");

    let writers = Writers::start(&pg, "pages", 2).await;

    let mut assembled = BTreeMap::new();
    let mut pages = vec![(base.to_owned(), body, headers)];
    let mut page = first;
    loop {
        for record in page["records"].as_array().expect("records") {
            let key = record["key"].as_str().expect("key").to_owned();
            let seq = record["seq"].as_u64().expect("seq");
            assert!(assembled
                .insert(key, (seq, record["data"].clone()))
                .is_none());
        }
        let Some(next) = page["next"].as_str() else {
            break;
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let path = format!("/v1/streams/pages/snapshot?cursor={next}&limit=200");
        let (status, headers, body) = fetch(relay.addr(), &path, &[]).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        assert_eq!(
            header(&headers, "cache-control"),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(header(&headers, "vary"), "Authorization");
        page = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(
            (page["epoch"].as_u64(), page["seq"].as_u64()),
            (Some(epoch), Some(at))
        );
        pages.push((path, body, headers));
    }
    assert_eq!(pages.len(), 15, "3000 records in pages of 200");
    assert_eq!(assembled, before, "the pages are the state at their seq");
    writers.stop().await;
    let (head, after) = truth(&db, "pages").await;
    assert!(head > at + 20, "writes committed while paging");

    // Fetched again (after all those writes): the same bytes and ETag, and 304 when asked so.
    for (path, body, headers) in pages.iter().skip(1) {
        let (status, again_headers, again) = fetch(relay.addr(), path, &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&again, body, "{path} changed");
        let etag = header(headers, "etag");
        assert!(etag.starts_with('"') && etag.len() > 8, "{etag}");
        assert_eq!(header(&again_headers, "etag"), etag);
        let (status, revalidated, empty) =
            fetch(relay.addr(), path, &[("if-none-match", etag)]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(empty.is_empty());
        assert_eq!(header(&revalidated, "etag"), etag);
    }

    // The events after the snapshot's seq complete it.
    let mut state = before;
    let mut since = at;
    loop {
        let (status, events) = get_json(
            relay.addr(),
            &format!("/v1/streams/pages/events?since={since}"),
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{events}");
        for event in events["events"].as_array().expect("events") {
            let key = event["key"].as_str().expect("key").to_owned();
            let seq = event["seq"].as_u64().expect("seq");
            match event["op"].as_str() {
                Some("upsert") => {
                    state.insert(key, (seq, event["data"].clone()));
                }
                Some("patch") => {
                    let entry = state.entry(key).or_insert((seq, json!({})));
                    if !entry.1.is_object() {
                        entry.1 = json!({});
                    }
                    for (name, value) in event["data"].as_object().expect("object") {
                        entry.1[name] = value.clone();
                    }
                    entry.0 = seq;
                }
                _ => {
                    state.remove(&key);
                }
            }
        }
        since = events["next"].as_u64().expect("next");
        if events["more"] != true {
            break;
        }
    }
    assert_eq!(since, head);
    assert_eq!(
        state, after,
        "snapshot + events after its seq = the final state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_cursor_is_a_resync_and_bad_ones_are_refused() {
    let pg = TestPg::start().await;
    let relay = TestRelay::spawn(&pg).await;
    let db = pg.client().await;
    seed(&db, "short", 300).await;
    let (status, first) = get_json(relay.addr(), "/v1/streams/short/snapshot?limit=100", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let next = first["next"].as_str().expect("a next page").to_owned();
    // A page read now is kept (and stays served: it cannot change); the next is not read yet.
    let (status, second) = get_json(
        relay.addr(),
        &format!("/v1/streams/short/snapshot?cursor={next}&limit=100"),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let third = second["next"].as_str().expect("a third page").to_owned();
    let cursor_path = format!("/v1/streams/short/snapshot?cursor={third}&limit=100");

    // Retention drops the events after the snapshot's seq: the position cannot be read.
    for statement in [
        "select tidewire.set_retention('short', 5, null)",
        "select tidewire.publish('short', 'k' || i, 'upsert', '{}') from generate_series(1, 20) i",
        "select tidewire.trim('short')",
    ] {
        db.execute(statement, &[]).await.expect(statement);
    }
    let (status, body) = get_json(relay.addr(), &cursor_path, &[]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{}", body["code"]);
    assert_eq!(body["code"], "bad_since");
    assert_eq!(body["resync"], true);
    let (head, _) = truth(&db, "short").await;
    assert_eq!(body["seq"].as_u64(), Some(head));
    // Starting over works.
    let (status, again) = get_json(relay.addr(), "/v1/streams/short/snapshot", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["seq"].as_u64(), Some(head));

    for bad in ["nope", "%%", "MTIz"] {
        let (status, body) = get_json(
            relay.addr(),
            &format!("/v1/streams/short/snapshot?cursor={bad}"),
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["code"], "bad_since");
    }
    let (status, body) = get_json(relay.addr(), "/v1/streams/short/snapshot?limit=0", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_a_token_is_needed_for_are_private() {
    const SECRET: &str = "snapshot-pages-secret";
    let pg = TestPg::start().await;
    let relay = TestRelay::builder(&pg)
        .jwt_secret(SECRET)
        .options(|options| {
            options.anon_read = vec!["public:*".to_owned()];
            options.snapshot_chunk = 10;
        })
        .spawn()
        .await;
    let db = pg.client().await;
    seed(&db, "public:board", 30).await;
    seed(&db, "team", 30).await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
        + 600;
    let claims = json!({"sub": "e2e", "exp": exp, "tidewire": {"read": ["team"], "write": []}});
    let token = tidewire_relay::auth::jwt::sign_hs256(SECRET.as_bytes(), &claims).expect("sign");
    let bearer = format!("Bearer {token}");

    for (stream, headers, scope) in [
        ("public:board", vec![], "public"),
        ("team", vec![("authorization", bearer.as_str())], "private"),
    ] {
        let path = format!("/v1/streams/{stream}/snapshot");
        let (status, first_headers, body) = fetch(relay.addr(), &path, &headers).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            header(&first_headers, "cache-control"),
            format!("{scope}, no-cache")
        );
        let first: Value = serde_json::from_slice(&body).expect("JSON");
        let next = first["next"].as_str().expect("a second page");
        let (status, headers, _) =
            fetch(relay.addr(), &format!("{path}?cursor={next}"), &headers).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            header(&headers, "cache-control"),
            format!("{scope}, max-age=31536000, immutable")
        );
        assert_eq!(header(&headers, "vary"), "Authorization");
    }
    // Without the token the private stream's pages are refused, cursor or not.
    let (status, _) = get_json(relay.addr(), "/v1/streams/team/snapshot", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
