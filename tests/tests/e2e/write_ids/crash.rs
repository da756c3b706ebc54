//! The relay process killed between commit and ack: run as a child process with
//! `--crash-before-ack 1`, it exits right after the first write with a write id commits and
//! before it answers. The write is sent again to the restarted relay, which answers it from
//! its write id (`replayed`) with the seq it committed at. 100 writes, alternately over
//! WebSocket and HTTP, each killing a relay: every write is stored exactly once, in order, and
//! every resend is answered with its seq. Then the native client does the same by itself: its
//! publishes resolve with the right seqs through ten crashes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidewire_client::{BackoffConfig, Client, ClientConfig};
use tidewire_relay::fault::CRASH_EXIT_CODE;
use tidewire_tests::load::relay_process::RelayProcess;
use tidewire_tests::TestPg;
use tokio_postgres::Client as Sql;

use super::{is_gone, publish_message, try_post};
use crate::support::{event, events};
use crate::transport::client::{WsClient, WsItem};

/// The relay as a child process of this package (the relay's own `main` glue).
fn relay_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_relay_proc"))
}

/// A relay that exits after its first fresh commit of a write with a write id.
async fn crashing_relay(pg: &TestPg) -> RelayProcess {
    let args = [
        "--crash-before-ack",
        "1",
        "--capture",
        "trigger",
        "--pg-pool-size",
        "2",
        "--log",
        "warn",
    ]
    .map(String::from);
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let log = pg.dir().join("relay.log");
    RelayProcess::spawn(&relay_binary(), &pg.url(), listen, &args, Some(log))
        .await
        .expect("the relay process starts")
}

/// Waits for the injected crash and checks it was that one.
async fn crashed(relay: &mut RelayProcess, what: &str) {
    let status = relay
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("{what}: the relay did not exit after the commit"));
    assert_eq!(status.code(), Some(CRASH_EXIT_CODE), "{what}: {status}");
}

/// The seq of the one event stored for `key`.
async fn stored_seq(sql: &Sql, stream: &str, key: &str) -> u64 {
    let rows = sql
        .query(
            "select seq from tidewire.events where stream = $1 and key = $2",
            &[&stream, &key],
        )
        .await
        .expect("read the outbox");
    assert_eq!(rows.len(), 1, "{key} is stored exactly once");
    u64::try_from(rows[0].get::<_, i64>(0)).expect("a positive seq")
}

#[derive(Debug, Clone, Copy)]
enum Via {
    WebSocket,
    Http,
}

/// Sends `write` under `write_id` on a new connection: `Ok((seq, replayed))` when answered,
/// `Err` (why) when the connection ended first.
async fn send(
    via: Via,
    addr: SocketAddr,
    write: &Value,
    write_id: &str,
) -> Result<(u64, bool), String> {
    match via {
        Via::WebSocket => {
            let mut ws = WsClient::connected(addr).await;
            ws.send(publish_message("p", STREAM, write, Some(write_id)))
                .await;
            loop {
                let item = ws.item_within(Duration::from_secs(10)).await;
                match &item {
                    Some(WsItem::Json(answer)) if answer["type"] == "ack" => {
                        let seq = answer["seq"].as_u64().expect("a seq");
                        return Ok((seq, answer["replayed"] == true));
                    }
                    Some(WsItem::Json(answer)) if answer["type"] == "error" => {
                        panic!("{write_id} refused: {answer}")
                    }
                    Some(WsItem::Json(_) | WsItem::Ping | WsItem::Pong) => {}
                    _ if is_gone(item.as_ref()) => return Err(format!("{item:?}")),
                    _ => panic!("{write_id}: nothing within 10 s"),
                }
            }
        }
        Via::Http => {
            let reply = try_post(addr, STREAM, write, &[("idempotency-key", write_id)]).await?;
            let seq = reply.json()["seq"].as_u64().expect("a seq");
            match (reply.status.as_u16(), reply.header("idempotent-replayed")) {
                (201, None) => Ok((seq, false)),
                (200, Some("true")) => Ok((seq, true)),
                _ => panic!("{write_id}: {:?} {:?}", reply.status, reply.body),
            }
        }
    }
}

const STREAM: &str = "kill";

const WRITES: u64 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_between_commit_and_ack_100_times_commits_every_write_once() {
    let pg = TestPg::start().await;
    let sql = pg.client().await;
    let mut relay = crashing_relay(&pg).await;
    let started = Instant::now();
    for index in 0..WRITES {
        let via = if index % 2 == 0 {
            Via::WebSocket
        } else {
            Via::Http
        };
        let (key, write_id) = (format!("k{index}"), format!("t.{index}"));
        let write = json!({"key": key, "op": "upsert", "data": {"index": index}});
        let lost = send(via, relay.addr(), &write, &write_id).await;
        assert!(
            lost.is_err(),
            "{write_id} over {via:?} was answered: {lost:?}"
        );
        crashed(&mut relay, &write_id).await;
        let committed = stored_seq(&sql, STREAM, &key).await;
        assert_eq!(committed, index + 1, "{write_id} committed in order");

        relay.start().await.expect("the relay restarts");
        let answer = send(via, relay.addr(), &write, &write_id).await;
        assert_eq!(answer, Ok((committed, true)), "{write_id} over {via:?}");
    }
    let elapsed = started.elapsed();
    relay.terminate(Duration::from_secs(5)).await;
    let expected: Vec<_> = (0..WRITES)
        .map(|index| {
            let data = json!({ "index": index });
            event(
                (index + 1) as i64,
                &format!("k{index}"),
                "upsert",
                Some(data),
            )
        })
        .collect();
    assert_eq!(events(&sql, STREAM).await, expected);
    eprintln!("{WRITES} relays killed between commit and ack in {elapsed:.1?}");
}

/// The native client resends a write whose answer a crash took, and its publish resolves
/// with the seq the write committed at: ten writes, ten crashes, each write stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_native_client_resolves_every_publish_through_crashes() {
    const CLIENT_WRITES: u64 = 10;
    let pg = TestPg::start().await;
    let sql = pg.client().await;
    let mut relay = crashing_relay(&pg).await;
    let config = ClientConfig {
        reconnect: BackoffConfig {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            max_attempts: None,
        },
        request_timeout: Duration::from_secs(30),
        ..ClientConfig::new(format!("ws://{}", relay.addr()))
    };
    let client = Client::connect(config).await.expect("connects");
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    // Restarts the relay whenever the injected crash ends it.
    let supervisor = tokio::spawn(async move {
        let mut crashes = 0;
        loop {
            if let Some(status) = relay.wait_exit(Duration::from_millis(50)).await {
                assert_eq!(status.code(), Some(CRASH_EXIT_CODE), "{status}");
                crashes += 1;
                relay.start().await.expect("the relay restarts");
            }
            if stopped.try_recv().is_ok() {
                relay.terminate(Duration::from_secs(5)).await;
                return crashes;
            }
        }
    });
    for index in 0..CLIENT_WRITES {
        let key = format!("c{index}");
        let seq = client
            .upsert("client", &key, json!({ "index": index }))
            .await
            .unwrap_or_else(|error| panic!("{key}: {error}"));
        assert_eq!(seq, stored_seq(&sql, "client", &key).await, "{key}");
        assert_eq!(seq, index + 1, "{key}");
    }
    let _ = stop.send(());
    let crashes = supervisor.await.expect("the supervisor");
    assert_eq!(crashes, CLIENT_WRITES);
    assert_eq!(client.stats().publishes_resent, CLIENT_WRITES);
    assert_eq!(events(&sql, "client").await.len() as u64, CLIENT_WRITES);
    client.close().await;
}
