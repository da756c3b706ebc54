//! Presence: who is connected to a stream, with a small state each (name, cursor, "editing"),
//! consistent across several relays.
//!
//! Every relay keeps one [`MergePool`] per stream. A client's `presence` message is not
//! stored anywhere: its relay sends it to all relays (itself included) as a NOTIFY on the
//! stream's channel, and each relay's listener feeds it back here, where it updates the pool
//! (last writer wins by version) and tells local subscribers. Each relay refreshes its own
//! clients' entries every [`HEARTBEAT`]; an entry not refreshed within [`TTL`] expires, so a
//! relay that dies takes its clients out of every presence set within [`TTL`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::Pool;
use serde_json::Value;
use tidewire_shared::merge_pool::{MergePool, PoolChange};
use tidewire_shared::message::server::PresenceEntry;
use tidewire_shared::notify::NotifyPayload;
use tidewire_shared::{ServerMessage, StreamName};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::{Bus, Delivery};
use crate::pg::outbox::OutboxError;

/// How long a presence entry lives without a refresh.
pub const TTL: Duration = Duration::from_secs(15);
/// How often a relay refreshes its own clients' entries.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// Largest presence state in bytes (it travels inside NOTIFY).
pub const MAX_PRESENCE_BYTES: usize = 4096;

/// A presence entry as the pool stores it: the state and the relay that holds the client.
type Entry = (Value, String);

/// A local client's state with the version it was set with. The heartbeat re-announces this
/// very version: a refresh must never outrank a newer `set` that raced with it (which a fresh
/// version did: the heartbeat copied the old state, the client set a new one, and the
/// heartbeat's copy went out with the higher version and won everywhere until the next
/// heartbeat), and a refresh with an unchanged version only extends the entry's expiry, so
/// subscribers are not sent every member again every [`HEARTBEAT`].
#[derive(Debug, Clone, PartialEq)]
struct Stamped {
    data: Value,
    version: u64,
}

/// The presence sets of every stream this relay serves.
#[derive(Debug)]
pub struct Presence {
    relay_id: String,
    pool: Pool,
    bus: Arc<Bus>,
    /// Per-stream pools. Locked briefly, never across an await.
    pools: Mutex<HashMap<StreamName, MergePool<Entry>>>,
    /// This relay's own clients, their last state and the version it was set with, refreshed
    /// by the heartbeat. Locked briefly, never across an await.
    local: Mutex<HashMap<(StreamName, String), Stamped>>,
    version: AtomicU64,
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

impl Presence {
    /// A presence registry for relay `relay_id`.
    pub fn new(relay_id: String, pool: Pool, bus: Arc<Bus>) -> Self {
        Self {
            relay_id,
            pool,
            bus,
            pools: Mutex::new(HashMap::new()),
            local: Mutex::new(HashMap::new()),
            version: AtomicU64::new(0),
        }
    }

    /// A version greater than any this relay issued before (milliseconds, made monotonic).
    fn next_version(&self) -> u64 {
        let now = now_millis().saturating_mul(1000);
        let previous = self
            .version
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(last.max(now - 1) + 1)
            })
            .unwrap_or(now);
        previous.max(now - 1) + 1
    }

    /// Sets (or with `Value::Null`, clears) the presence of `client` on `stream`.
    ///
    /// # Errors
    ///
    /// [`OutboxError`] if the NOTIFY cannot be sent.
    pub async fn set(
        &self,
        stream: &StreamName,
        client: &str,
        data: Value,
    ) -> Result<(), OutboxError> {
        let version = {
            // The version is taken under the lock, so the map's order of sets is the order of
            // their versions.
            let mut local = self.lock_local();
            let version = self.next_version();
            let key = (stream.clone(), client.to_owned());
            if data.is_null() {
                local.remove(&key);
            } else {
                local.insert(
                    key,
                    Stamped {
                        data: data.clone(),
                        version,
                    },
                );
            }
            version
        };
        self.announce(stream, client, data, version).await
    }

    /// Removes `client` (and the members behind it, `<client>/<member>`) from `stream`, or
    /// from every stream when `None` (its connection closed), if it had joined. Runs in the
    /// background.
    pub fn leave(
        self: &Arc<Self>,
        client: &str,
        stream: Option<&StreamName>,
        tracker: &TaskTracker,
    ) {
        let behind = format!("{client}/");
        let left: Vec<(StreamName, String)> = {
            let mut local = self.lock_local();
            let left: Vec<(StreamName, String)> = local
                .keys()
                .filter(|(joined, owner)| {
                    (owner == client || owner.starts_with(&behind))
                        && stream.is_none_or(|stream| stream == joined)
                })
                .cloned()
                .collect();
            for key in &left {
                local.remove(key);
            }
            left
        };
        if left.is_empty() {
            return;
        }
        let presence = Arc::clone(self);
        tracker.spawn(async move {
            for (stream, client) in left {
                let version = presence.next_version();
                if let Err(error) = presence
                    .announce(&stream, &client, Value::Null, version)
                    .await
                {
                    tracing::debug!(%stream, %error, "presence leave not sent; it expires by TTL");
                }
            }
        });
    }

    async fn announce(
        &self,
        stream: &StreamName,
        client: &str,
        data: Value,
        version: u64,
    ) -> Result<(), OutboxError> {
        let payload = NotifyPayload::Presence {
            stream: stream.clone(),
            relay: self.relay_id.clone(),
            client: client.to_owned(),
            data,
            ttl_ms: u64::try_from(TTL.as_millis()).unwrap_or(u64::MAX),
            version,
        };
        let connection = self.pool.get().await?;
        connection
            .execute(
                "select pg_notify($1, $2)",
                &[&stream.pg_channel(), &payload.encode()],
            )
            .await?;
        Ok(())
    }

    /// The current members of `stream`.
    pub fn members(&self, stream: &StreamName) -> Vec<PresenceEntry> {
        let pools = self.lock_pools();
        let mut members: Vec<PresenceEntry> = pools
            .get(stream)
            .map(|pool| {
                pool.iter()
                    .map(|(client, entry)| PresenceEntry {
                        client: client.to_owned(),
                        data: entry.value.0.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        members.sort_by(|a, b| a.client.cmp(&b.client));
        members
    }

    /// Applies a presence notification (from any relay) and tells local subscribers.
    fn apply(&self, payload: &NotifyPayload) {
        let NotifyPayload::Presence {
            stream,
            relay,
            client,
            data,
            ttl_ms,
            version,
        } = payload
        else {
            return;
        };
        let now = now_millis();
        let change = {
            let mut pools = self.lock_pools();
            let pool = pools.entry(stream.clone()).or_default();
            if data.is_null() {
                pool.remove(client, *version)
            } else {
                pool.set(
                    client,
                    (data.clone(), relay.clone()),
                    *version,
                    now,
                    *ttl_ms,
                )
            }
        };
        let message = match change {
            PoolChange::Joined((data, _)) | PoolChange::Updated { new: (data, _), .. } => {
                presence_message(
                    stream,
                    vec![PresenceEntry {
                        client: client.clone(),
                        data,
                    }],
                    Vec::new(),
                )
            }
            PoolChange::Left(_) => presence_message(stream, Vec::new(), vec![client.clone()]),
            PoolChange::Ignored => return,
        };
        self.deliver(stream, &message);
    }

    fn expire(&self) {
        let now = now_millis();
        let expired: Vec<(StreamName, Vec<String>)> = {
            let mut pools = self.lock_pools();
            let expired = pools
                .iter_mut()
                .map(|(stream, pool)| {
                    (
                        stream.clone(),
                        pool.expire(now)
                            .into_iter()
                            .map(|(client, _)| client)
                            .collect::<Vec<_>>(),
                    )
                })
                .filter(|(_, clients)| !clients.is_empty())
                .collect();
            pools.retain(|_, pool| !pool.is_empty());
            expired
        };
        for (stream, clients) in expired {
            self.deliver(&stream, &presence_message(&stream, Vec::new(), clients));
        }
    }

    async fn heartbeat(&self) {
        let keys: Vec<(StreamName, String)> = self.lock_local().keys().cloned().collect();
        for key in keys {
            // Read each state just before it goes out: one set or left since the list was
            // taken is announced as it is now (or not at all), never as it was.
            let Some(stamped) = self.local_state(&key) else {
                continue;
            };
            let (stream, client) = key;
            if let Err(error) = self
                .announce(&stream, &client, stamped.data, stamped.version)
                .await
            {
                tracing::debug!(%stream, %error, "presence heartbeat failed");
            }
        }
    }

    fn local_state(&self, key: &(StreamName, String)) -> Option<Stamped> {
        self.lock_local().get(key).cloned()
    }

    fn deliver(&self, stream: &StreamName, message: &ServerMessage) {
        let json = Bytes::from(message.encode());
        self.bus.publish(Arc::new(Delivery::message(
            Arc::clone(stream.as_arc()),
            json,
        )));
    }

    fn lock_pools(&self) -> std::sync::MutexGuard<'_, HashMap<StreamName, MergePool<Entry>>> {
        self.pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_local(&self) -> std::sync::MutexGuard<'_, HashMap<(StreamName, String), Stamped>> {
        self.local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts the presence task: applies notifications, refreshes local clients, expires
    /// entries.
    pub fn spawn(
        self: &Arc<Self>,
        mut notifications: broadcast::Receiver<NotifyPayload>,
        token: CancellationToken,
        tracker: &TaskTracker,
    ) {
        let presence = Arc::clone(self);
        tracker.spawn(async move {
            let mut heartbeat = tokio::time::interval(HEARTBEAT);
            let mut expiry = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    () = token.cancelled() => return,
                    received = notifications.recv() => match received {
                        Ok(payload) => presence.apply(&payload),
                        // Missed some: the heartbeats repair the sets within one interval.
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = heartbeat.tick() => presence.heartbeat().await,
                    _ = expiry.tick() => presence.expire(),
                }
            }
        });
    }
}

/// A `presence` server message.
pub fn presence_message(
    stream: &StreamName,
    present: Vec<PresenceEntry>,
    left: Vec<String>,
) -> ServerMessage {
    ServerMessage::Presence {
        stream: stream.clone(),
        present,
        left,
        full: false,
    }
}
