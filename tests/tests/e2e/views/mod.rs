//! Views end to end: filtered subscriptions over WebSocket, SSE and HTTP against real
//! PostgreSQL, exact across moves, resumes, relay kills and PostgreSQL restarts, and the
//! claim-bound grants no client can widen.

mod grants;
mod live;
mod resume;
mod sse;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidewire_shared::Filter;
use tokio_postgres::Client;

use crate::transport::client::{WsClient, WsItem};

/// How long a view may take to converge on a loaded 2-core machine.
pub(crate) const CONVERGE: Duration = Duration::from_secs(30);

/// A client's view of one stream built only from what the relay sends, checking the
/// protocol's promises as it goes: `prev` always names the position it has (nothing missed),
/// seqs only grow (nothing repeated or reordered).
pub(crate) struct ViewReader {
    pub(crate) stream: String,
    pub(crate) filter: Value,
    pub(crate) records: BTreeMap<String, Value>,
    /// `(epoch, seq)` after the last positioned message.
    pub(crate) position: Option<(u64, u64)>,
    /// Seqs of the events applied, in order.
    pub(crate) seqs: Vec<u64>,
    snapshot: Option<BTreeMap<String, Value>>,
    pub(crate) live: bool,
}

impl ViewReader {
    pub(crate) fn new(stream: &str, filter: Value) -> Self {
        Self {
            stream: stream.to_owned(),
            filter,
            records: BTreeMap::new(),
            position: None,
            seqs: Vec::new(),
            snapshot: None,
            live: false,
        }
    }

    /// The subscribe message: fresh (snapshot) or resuming from the position.
    pub(crate) fn subscribe_message(&self) -> Value {
        let mut message = json!({"type": "subscribe", "stream": self.stream, "where": self.filter});
        if let Some((epoch, seq)) = self.position {
            message["since"] = json!({"epoch": epoch, "seq": seq});
        }
        message
    }

    /// Applies one server message; panics on a broken promise.
    pub(crate) fn apply(&mut self, message: &Value) {
        if message["stream"] != self.stream.as_str() {
            return;
        }
        let epoch = message["epoch"].as_u64().unwrap_or(0);
        let seq = message["seq"].as_u64().unwrap_or(0);
        match message["type"].as_str() {
            Some("snapshot") => {
                let records = self.snapshot.get_or_insert_with(BTreeMap::new);
                if message["chunk"] == 0 {
                    records.clear();
                }
                for record in message["records"].as_array().expect("records") {
                    let key = record["key"].as_str().expect("key").to_owned();
                    records.insert(key, record["data"].clone());
                }
                if message["last"] == true {
                    self.records = self.snapshot.take().unwrap_or_default();
                    self.position = Some((epoch, seq));
                }
            }
            Some("subscribed") => {
                self.position = Some((epoch, seq));
                self.live = true;
            }
            Some("event") => {
                let (known_epoch, known) = self.position.expect("an event before any position");
                assert_eq!(epoch, known_epoch, "event of another epoch: {message}");
                assert_eq!(
                    message["prev"].as_u64(),
                    Some(known),
                    "prev must name my position {known}: {message}"
                );
                assert!(seq > known, "seq {seq} not after {known}: {message}");
                let key = message["key"].as_str().expect("key").to_owned();
                match message["op"].as_str() {
                    Some("upsert") => {
                        self.records.insert(key, message["data"].clone());
                    }
                    Some("patch") => {
                        let record = self.records.get_mut(&key).unwrap_or_else(|| {
                            panic!("a patch for {key}, which my view does not hold: {message}")
                        });
                        for (name, value) in message["data"].as_object().expect("patch object") {
                            record[name] = value.clone();
                        }
                    }
                    Some("delete") => {
                        assert!(
                            self.records.remove(&key).is_some(),
                            "a delete for {key}, which my view does not hold: {message}"
                        );
                    }
                    other => panic!("unexpected op {other:?}"),
                }
                self.position = Some((epoch, seq));
                self.seqs.push(seq);
            }
            Some("advisory") if message["kind"] == "resync" => self.live = false,
            _ => {}
        }
    }

    /// Reads from `ws` until the view equals the filtered stream (or the time is up). The
    /// truth is read from PostgreSQL whenever the connection has been quiet for a moment.
    pub(crate) async fn until_equal(&mut self, ws: &mut WsClient, pg: &Client) -> bool {
        let deadline = Instant::now() + CONVERGE;
        let mut quiet = true;
        loop {
            if quiet && self.live && self.records == truth(pg, &self.stream, &self.filter).await {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            quiet = false;
            match ws.item_within(left.min(Duration::from_millis(200))).await {
                Some(WsItem::Json(message)) => {
                    assert_ne!(message["type"], "error", "{message}");
                    self.apply(&message);
                }
                Some(WsItem::Ping | WsItem::Pong) => {}
                None => quiet = true,
                Some(other) => panic!("connection ended: {other:?}"),
            }
        }
    }

    /// Subscribes on `ws` and reads until `subscribed`.
    pub(crate) async fn subscribe(&mut self, ws: &mut WsClient) {
        self.live = false;
        ws.send(self.subscribe_message()).await;
        while !self.live {
            let message = ws.json().await;
            assert_ne!(message["type"], "error", "{message}");
            self.apply(&message);
        }
    }
}

/// What the view must hold: the stream's records, filtered by the one shared evaluator.
pub(crate) async fn truth(pg: &Client, stream: &str, filter: &Value) -> BTreeMap<String, Value> {
    let filter = Filter::parse(filter).expect("a valid filter");
    pg.query(
        "select key, data::text from tidewire.records where stream = $1",
        &[&stream],
    )
    .await
    .expect("read the records")
    .iter()
    .map(|row| {
        let data: Option<String> = row.get(1);
        let data = data.map_or(Value::Null, |text| {
            serde_json::from_str(&text).expect("JSON")
        });
        (row.get::<_, String>(0), data)
    })
    .filter(|(_, data)| filter.matches(data))
    .collect()
}

/// `tidewire.publish` from SQL; returns the seq.
pub(crate) async fn publish(pg: &Client, stream: &str, key: &str, op: &str, data: Value) -> i64 {
    pg.query_one(
        "select tidewire.publish($1, $2, $3, $4::text::jsonb)",
        &[&stream, &key, &op, &data.to_string()],
    )
    .await
    .expect("publish")
    .get(0)
}

/// A relay address as a `ws` path with a token.
pub(crate) fn with_token(token: &str) -> String {
    format!("/v1/ws?access_token={token}")
}
