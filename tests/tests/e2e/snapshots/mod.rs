//! Paged snapshots end to end against real PostgreSQL: a snapshot read page by page while
//! writers commit is exactly the state at its seq (over WebSocket, SSE-free HTTP pages and a
//! filtered view), its pages are shared and cacheable, a reader that stops holds a page or
//! two and is reset, and an expired position is answered, never served wrong.

mod bounded;
mod consistency;
mod http;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::transport::client::{WsClient, WsItem};

/// `n` records `k00001`.. with an owner among three and a counter, in one transaction.
pub(crate) async fn seed(pg: &Client, stream: &str, n: i64) -> i64 {
    pg.query_one(
        "select max(tidewire.publish($1, 'k' || lpad(i::text, 5, '0'), 'upsert', \
             jsonb_build_object('owner', 'u' || (i % 3), 'n', i, 'pad', repeat('x', 40)))) \
         from generate_series(1, $2::bigint) i",
        &[&stream, &n],
    )
    .await
    .expect("seed")
    .get(0)
}

/// The stream's records and head seq, read in one statement: `key -> (seq, data)`.
pub(crate) async fn truth(pg: &Client, stream: &str) -> (u64, BTreeMap<String, (u64, Value)>) {
    let rows = pg
        .query(
            "select r.key, r.seq, r.data::text, s.seq as head from tidewire.streams s \
             left join tidewire.records r on r.stream = s.name where s.name = $1",
            &[&stream],
        )
        .await
        .expect("read the records");
    let head = rows.first().map_or(0, |row| {
        u64::try_from(row.get::<_, i64>("head")).expect("seq")
    });
    let records = rows
        .iter()
        .filter_map(|row| {
            let key: Option<String> = row.get(0);
            key.map(|key| {
                let seq: i64 = row.get(1);
                let data: Option<String> = row.get(2);
                let data = data.map_or(Value::Null, |text| {
                    serde_json::from_str(&text).expect("JSON")
                });
                (key, (u64::try_from(seq).expect("seq"), data))
            })
        })
        .collect();
    (head, records)
}

/// Writes to `stream` until `stop`: updates, patches, deletes and new keys spread over the
/// whole key range (so keys of pages already read and of pages still to come change), each
/// its own transaction. Returns how many writes committed.
pub(crate) async fn write_until(
    pg: Client,
    stream: String,
    writer: i64,
    stop: tokio::sync::watch::Receiver<bool>,
) -> i64 {
    let mut i = 0i64;
    while !*stop.borrow() {
        i += 1;
        let n = (i * 7919 + writer * 104_729) % 3500 + 1;
        let key = format!("k{n:05}");
        let (op, data) = match i % 4 {
            0 => ("delete", Value::Null),
            1 => ("patch", json!({"n": -i, "by": writer})),
            _ => (
                "upsert",
                json!({"owner": format!("u{}", (i + writer) % 3), "n": i, "w": writer}),
            ),
        };
        pg.execute(
            "select tidewire.publish($1, $2, $3, $4::text::jsonb)",
            &[&stream, &key, &op, &data.to_string()],
        )
        .await
        .expect("write");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    i
}

/// Writers running [`write_until`] on `stream`, each on a connection of its own.
pub(crate) struct Writers {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<i64>>,
}

impl Writers {
    /// Starts `count` writers.
    pub(crate) async fn start(pg: &tidewire_tests::TestPg, stream: &str, count: i64) -> Self {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for writer in 0..count {
            let client = pg.client().await;
            tasks.push(tokio::spawn(write_until(
                client,
                stream.to_owned(),
                writer,
                stopped.clone(),
            )));
        }
        Self { stop, tasks }
    }

    /// Stops them; returns how many writes committed.
    pub(crate) async fn stop(self) -> i64 {
        // Fails only when every writer is gone already.
        let _ = self.stop.send(true);
        let mut written = 0;
        for task in self.tasks {
            written += task.await.expect("writer");
        }
        written
    }
}

/// A WebSocket reader of one unfiltered stream that checks the protocol's promises: snapshot
/// chunks numbered 0, 1, .. of one position with keys ascending, then `subscribed` at that
/// position, then events each one seq after the last.
pub(crate) struct Reader {
    pub(crate) stream: String,
    pub(crate) snapshot: BTreeMap<String, (u64, Value)>,
    pub(crate) position: Option<(u64, u64)>,
    pub(crate) chunks: u32,
    pub(crate) records: BTreeMap<String, (u64, Value)>,
    pub(crate) live: bool,
    last_key: Option<String>,
}

impl Reader {
    pub(crate) fn new(stream: &str) -> Self {
        Self {
            stream: stream.to_owned(),
            snapshot: BTreeMap::new(),
            position: None,
            chunks: 0,
            records: BTreeMap::new(),
            live: false,
            last_key: None,
        }
    }

    /// Applies one message; panics on a broken promise. Returns true for a snapshot chunk.
    pub(crate) fn apply(&mut self, message: &Value) -> bool {
        assert_ne!(message["type"], "error", "{message}");
        if message["stream"] != self.stream.as_str() {
            return false;
        }
        let epoch = message["epoch"].as_u64().unwrap_or(0);
        let seq = message["seq"].as_u64().unwrap_or(0);
        match message["type"].as_str() {
            Some("snapshot") => {
                assert_eq!(
                    message["chunk"].as_u64(),
                    Some(u64::from(self.chunks)),
                    "{message}"
                );
                if self.chunks == 0 {
                    self.position = Some((epoch, seq));
                } else {
                    assert_eq!(self.position, Some((epoch, seq)), "chunks of one position");
                }
                self.chunks += 1;
                for record in message["records"].as_array().expect("records") {
                    let key = record["key"].as_str().expect("key").to_owned();
                    if let Some(last) = &self.last_key {
                        assert!(&key > last, "keys ascend across pages: {key} after {last}");
                    }
                    self.last_key = Some(key.clone());
                    let record_seq = record["seq"].as_u64().expect("seq");
                    assert!(
                        record_seq <= seq,
                        "a record newer than its snapshot: {record}"
                    );
                    self.snapshot
                        .insert(key, (record_seq, record["data"].clone()));
                }
                if message["last"] == true {
                    self.records = self.snapshot.clone();
                }
                true
            }
            Some("subscribed") => {
                assert_eq!(
                    self.position,
                    Some((epoch, seq)),
                    "subscribed at the snapshot"
                );
                self.live = true;
                false
            }
            Some("event") => {
                let (known_epoch, known) = self.position.expect("an event before any position");
                assert_eq!(epoch, known_epoch);
                assert_eq!(seq, known + 1, "events follow each other: {message}");
                let key = message["key"].as_str().expect("key").to_owned();
                match message["op"].as_str() {
                    Some("upsert") => {
                        self.records.insert(key, (seq, message["data"].clone()));
                    }
                    Some("patch") => {
                        let entry = self.records.entry(key).or_insert((seq, json!({})));
                        if !entry.1.is_object() {
                            entry.1 = json!({});
                        }
                        for (name, value) in message["data"].as_object().expect("object") {
                            entry.1[name] = value.clone();
                        }
                        entry.0 = seq;
                    }
                    Some("delete") => {
                        self.records.remove(&key);
                    }
                    other => panic!("unexpected op {other:?}"),
                }
                self.position = Some((epoch, seq));
                false
            }
            _ => false,
        }
    }

    /// Reads until live and equal to the stream's records in PostgreSQL (or panics after
    /// `within`). The truth is read only when the connection has been quiet for a moment, so
    /// the reader keeps up with the relay.
    pub(crate) async fn until_equal(&mut self, ws: &mut WsClient, pg: &Client, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        let mut quiet = false;
        loop {
            if quiet && self.live {
                let (head, truth) = truth(pg, &self.stream).await;
                if self.position.map(|(_, seq)| seq) == Some(head) {
                    assert_eq!(self.records, truth, "snapshot + events = the stream");
                    return;
                }
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(!left.is_zero(), "did not converge in {within:?}");
            quiet = false;
            match ws.item_within(left.min(Duration::from_millis(200))).await {
                Some(WsItem::Json(message)) => {
                    self.apply(&message);
                }
                Some(WsItem::Ping | WsItem::Pong) => {}
                None => quiet = true,
                Some(other) => panic!("connection ended: {other:?}"),
            }
        }
    }
}
