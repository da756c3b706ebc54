//! `--write-id-window-ms`: within the window a resend is answered from its write id; the
//! janitor then forgets the id, and the same write sent after that commits again
//! (docs/PROTOCOL.md, "Exactly-once writes").

use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::json;
use tidewire_tests::relay::TestRelay;
use tidewire_tests::TestPg;

use super::{post, recorded};
use crate::support::events;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_id_past_its_window_commits_again() {
    let pg = TestPg::start().await;
    let sql = pg.client().await;
    let relay = TestRelay::spawn_with(&pg, |options| {
        options.write_id_window_ms = 1000;
        options.janitor_interval_ms = 100;
    })
    .await;
    let addr = relay.addr();
    let write = json!({"key": "k", "op": "patch", "data": {"n": 1}});
    let key = [("idempotency-key", "short-lived")];
    let started = Instant::now();
    assert_eq!(
        post(addr, "w", &write, &key).await.status,
        StatusCode::CREATED
    );
    let again = post(addr, "w", &write, &key).await;
    if started.elapsed() < Duration::from_millis(900) {
        assert_eq!(again.status, StatusCode::OK, "within the window");
    }

    // The janitor forgets the id once it is older than the window.
    let deadline = Instant::now() + Duration::from_secs(15);
    while recorded(&sql, "w", "short-lived").await.is_some() {
        assert!(
            Instant::now() < deadline,
            "the write id was never forgotten"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "not before the window"
    );
    let late = post(addr, "w", &write, &key).await;
    assert_eq!(late.status, StatusCode::CREATED, "after the window");
    assert_eq!(late.json()["seq"], 2);
    assert_eq!(events(&sql, "w").await.len(), 2);
    assert_eq!(recorded(&sql, "w", "short-lived").await, Some(2));
    relay.shutdown().await;
}
