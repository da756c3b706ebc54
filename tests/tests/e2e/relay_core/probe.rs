//! A test client built directly on a [`Session`]: sends client messages, collects what the
//! session yields, and checks the "every seq exactly once, in order" invariant.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tidewire_relay::auth::{Grant, Permissions};
use tidewire_relay::config::Config;
use tidewire_relay::hub::Hub;
use tidewire_relay::session::{Outgoing, Session};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A hub for tests: short health, poll and reconnect intervals so faults are noticed fast.
pub(crate) async fn hub(url: &str, tune: impl FnOnce(&mut Config)) -> Arc<Hub> {
    let mut config = Config::for_tests(url);
    config.options.pg_health_interval_ms = 300;
    config.options.pg_timeout_ms = 1500;
    config.options.outbox_poll_ms = 300;
    config.options.pg_reconnect_max_ms = 400;
    config.options.janitor_interval_ms = 300;
    config.options.publish_rate = 100_000;
    config.options.publish_burst = 100_000;
    tune(&mut config);
    Hub::start(config, CancellationToken::new(), TaskTracker::new())
        .await
        .expect("hub starts")
}

/// One client session and everything it received.
pub(crate) struct Probe {
    pub(crate) session: Session,
    pub(crate) received: Vec<Value>,
}

impl Probe {
    pub(crate) fn open(hub: &Arc<Hub>) -> Self {
        Self {
            session: Session::open(Arc::clone(hub), Grant::anonymous(Permissions::open())),
            received: Vec::new(),
        }
    }

    pub(crate) async fn send(&mut self, message: Value) {
        self.session
            .handle_text(message.to_string().as_bytes())
            .await;
    }

    pub(crate) async fn subscribe(&mut self, stream: &str) {
        self.send(json!({"type": "subscribe", "stream": stream}))
            .await;
    }

    /// The next message, or `None` after `wait` of silence.
    pub(crate) async fn recv(&mut self, wait: Duration) -> Option<Value> {
        match tokio::time::timeout(wait, self.session.next()).await {
            Ok(Some(Outgoing::Frame { json, .. })) => {
                let value: Value = serde_json::from_slice(&json).expect("the relay sends JSON");
                self.received.push(value.clone());
                Some(value)
            }
            Ok(Some(Outgoing::Close { code, reason })) => {
                panic!("session closed: {code:?} {reason}")
            }
            Ok(None) | Err(_) => None,
        }
    }

    /// Receives until a message matches `predicate`; panics after `wait` without one.
    pub(crate) async fn until(
        &mut self,
        wait: Duration,
        predicate: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await {
                Some(message) if predicate(&message) => return message,
                Some(_) => {}
                None => panic!(
                    "no matching message within {wait:?}; last received: {:?}",
                    self.received.iter().rev().take(5).collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Receives until an event of `stream` with seq >= `seq` arrived.
    pub(crate) async fn until_seq(&mut self, stream: &str, seq: u64, wait: Duration) {
        if self.seqs(stream).iter().any(|&received| received >= seq) {
            return;
        }
        self.until(wait, |message| {
            message["type"] == "event"
                && message["stream"] == stream
                && message["seq"].as_u64() >= Some(seq)
        })
        .await;
    }

    /// The seqs of the events of `stream` received, in order.
    pub(crate) fn seqs(&self, stream: &str) -> Vec<u64> {
        self.received
            .iter()
            .filter(|message| message["type"] == "event" && message["stream"] == stream)
            .filter_map(|message| message["seq"].as_u64())
            .collect()
    }

    /// The seq the stream's baseline (snapshot or `subscribed`) covered, from the first
    /// `subscribed` message.
    pub(crate) fn baseline(&self, stream: &str) -> Option<u64> {
        self.received
            .iter()
            .find(|message| message["type"] == "subscribed" && message["stream"] == stream)
            .and_then(|message| message["seq"].as_u64())
    }

    /// Advisories of `kind` received.
    pub(crate) fn advisories(&self, kind: &str) -> Vec<&Value> {
        self.received
            .iter()
            .filter(|message| message["type"] == "advisory" && message["kind"] == kind)
            .collect()
    }
}

/// Asserts that `seqs` is exactly `from..=to`: nothing lost, duplicated or reordered.
pub(crate) fn assert_exactly(seqs: &[u64], from: u64, to: u64, who: &str) {
    let expected: Vec<u64> = (from..=to).collect();
    if seqs != expected.as_slice() {
        let duplicates = seqs.windows(2).filter(|pair| pair[0] == pair[1]).count();
        let reordered = seqs.windows(2).filter(|pair| pair[0] > pair[1]).count();
        let missing: Vec<u64> = expected
            .iter()
            .filter(|seq| !seqs.contains(seq))
            .copied()
            .take(10)
            .collect();
        panic!(
            "{who}: expected seqs {from}..={to} ({} events), got {} (duplicates {duplicates}, \
             reordered {reordered}, first missing {missing:?})",
            expected.len(),
            seqs.len()
        );
    }
}

/// Publishes through the SQL function on its own connection, returns the seq.
pub(crate) async fn publish(
    client: &tokio_postgres::Client,
    stream: &str,
    key: &str,
    op: &str,
    data: Value,
) -> u64 {
    let row = client
        .query_one(
            "select tidewire.publish($1, $2, $3, $4::jsonb)",
            &[&stream, &key, &op, &data],
        )
        .await
        .expect("publish");
    u64::try_from(row.get::<_, i64>(0)).expect("positive seq")
}

/// The committed head of `stream`.
pub(crate) async fn head(client: &tokio_postgres::Client, stream: &str) -> u64 {
    let row = client
        .query_one(
            "select coalesce(max(seq), 0) from tidewire.events where stream = $1",
            &[&stream],
        )
        .await
        .expect("read head");
    u64::try_from(row.get::<_, i64>(0)).expect("positive seq")
}
