//! What the listener knows about each listened stream, and how notifications, polls and
//! reconnects turn into bus deliveries in seq order.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tidewire_shared::message::{Advisory, AdvisoryKind};
use tidewire_shared::notify::{self, NotifyPayload};
use tidewire_shared::stored::StoredEvent;
use tidewire_shared::{Event, Op, ServerMessage, StreamKind, StreamName};
use tokio::sync::broadcast;
use tokio_postgres::Client;

use super::connection::{ListenConnection, Notification};
use super::stats::ListenerStats;
use super::Fanout;
use super::ListenerConfig;
use crate::delivery::{Change, Delivery};
use crate::pg::outbox::{self, Head, OutboxError};

/// The LISTEN connection (or PostgreSQL) is gone; the string says why.
#[derive(Debug)]
pub(super) struct Lost(pub(super) String);

impl From<OutboxError> for Lost {
    fn from(error: OutboxError) -> Self {
        Lost(format!("outbox read failed: {error}"))
    }
}

/// Per-stream progress.
#[derive(Debug, Clone, Copy)]
enum Progress {
    /// A durable stream: the epoch and the last seq handed to the bus. Epoch 0 means the
    /// stream did not exist yet (or was dropped): the next epoch seen is adopted.
    Durable { epoch: u64, last_seq: u64 },
    /// A raw channel: the last relay-local seq stamped.
    Raw { last_seq: u64 },
}

/// Every listened stream and the means to feed the bus.
pub(super) struct Streams {
    fanout: Arc<dyn Fanout>,
    /// The listener's read connection (see `connection`); `None` before the first connect.
    reader: Option<Client>,
    stats: Arc<ListenerStats>,
    presence: broadcast::Sender<NotifyPayload>,
    replay_page: usize,
    boot_epoch: u64,
    /// Longest an outbox read may take: the listener task must never hang on a dead
    /// connection, or its liveness check would never run.
    timeout: std::time::Duration,
    progress: HashMap<StreamName, Progress>,
    /// Shared with the handle: the last seq stamped per raw channel.
    raw_heads: Arc<std::sync::Mutex<HashMap<StreamName, u64>>>,
}

fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX)
        })
}

impl Streams {
    pub(super) fn new(
        fanout: Arc<dyn Fanout>,
        stats: Arc<ListenerStats>,
        presence: broadcast::Sender<NotifyPayload>,
        raw_heads: Arc<std::sync::Mutex<HashMap<StreamName, u64>>>,
        config: &ListenerConfig,
    ) -> Self {
        Self {
            fanout,
            reader: None,
            stats,
            presence,
            replay_page: config.replay_page.max(1),
            boot_epoch: config.boot_epoch,
            timeout: config.timeout,
            progress: HashMap::new(),
            raw_heads,
        }
    }

    /// Reads the outbox on `reader` from now on (a fresh connection's).
    pub(super) fn use_reader(&mut self, reader: Client) {
        self.reader = Some(reader);
    }

    fn reader(&self) -> Result<&Client, Lost> {
        self.reader
            .as_ref()
            .ok_or_else(|| Lost("the listener has no read connection".into()))
    }

    /// Runs an outbox read with the listener's timeout; a read that hangs means PostgreSQL is
    /// unreachable.
    async fn bounded<T>(
        &self,
        read: impl std::future::Future<Output = Result<T, OutboxError>>,
    ) -> Result<T, Lost> {
        match tokio::time::timeout(self.timeout, read).await {
            Ok(result) => result.map_err(Lost::from),
            Err(_) => Err(Lost(format!(
                "outbox read timed out after {:?}",
                self.timeout
            ))),
        }
    }

    /// Runs `statements` (LISTEN / UNLISTEN) on the LISTEN connection, bounded by the timeout
    /// like every other read of the listener; `what` names them in the error.
    async fn execute(
        &self,
        connection: &mut ListenConnection,
        statements: &str,
        what: &str,
    ) -> Result<(), Lost> {
        match tokio::time::timeout(self.timeout, connection.execute(statements)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(Lost(format!("{what} failed: {error}"))),
            Err(_) => Err(Lost(format!("{what} timed out after {:?}", self.timeout))),
        }
    }

    /// LISTENs on `stream` (if not yet) and records its head.
    pub(super) async fn listen(
        &mut self,
        stream: &StreamName,
        connection: &mut ListenConnection,
    ) -> Result<(), Lost> {
        if self.progress.contains_key(stream) {
            return Ok(());
        }
        let statement = format!("LISTEN {}", quote_identifier(&stream.pg_channel()));
        self.execute(connection, &statement, &statement).await?;
        ListenerStats::add(&self.stats.listens, 1);
        let progress = match stream.kind() {
            StreamKind::Raw => Progress::Raw {
                last_seq: self.raw_relisten_seq(stream),
            },
            StreamKind::Durable => {
                let heads = self
                    .bounded(outbox::heads_on(self.reader()?, &[stream.as_str()]))
                    .await?;
                let head = heads.first().map(|(_, head)| *head);
                Progress::Durable {
                    epoch: head.map_or(0, |head| head.epoch),
                    last_seq: head.map_or(0, |head| head.seq),
                }
            }
        };
        self.progress.insert(stream.clone(), progress);
        Ok(())
    }

    /// UNLISTENs `stream` if the registry confirms nobody subscribes to it any more.
    pub(super) async fn release(
        &mut self,
        stream: &StreamName,
        connection: &mut ListenConnection,
    ) -> Result<(), Lost> {
        if self.fanout.has_subscribers(stream.as_str()) || self.progress.remove(stream).is_none() {
            return Ok(());
        }
        let statement = format!("UNLISTEN {}", quote_identifier(&stream.pg_channel()));
        self.execute(connection, &statement, &statement).await?;
        ListenerStats::add(&self.stats.unlistens, 1);
        Ok(())
    }

    /// After a (re)connect: LISTEN on every known stream again.
    pub(super) async fn relisten_all(
        &mut self,
        connection: &mut ListenConnection,
    ) -> Result<(), Lost> {
        if self.progress.is_empty() {
            return Ok(());
        }
        let statements: String = self
            .progress
            .keys()
            .map(|stream| format!("LISTEN {};", quote_identifier(&stream.pg_channel())))
            .collect();
        self.execute(connection, &statements, "re-LISTEN").await?;
        ListenerStats::add(&self.stats.listens, self.progress.len() as u64);
        Ok(())
    }

    /// After a (re)connect: catch every durable stream up from the outbox; after a reconnect,
    /// tell raw-channel subscribers about the gap.
    pub(super) async fn catch_up_all(&mut self, reconnected: bool) -> Result<(), Lost> {
        self.poll_heads().await?;
        if reconnected {
            let raw: Vec<(StreamName, u64)> = self
                .progress
                .iter()
                .filter_map(|(stream, progress)| match progress {
                    Progress::Raw { last_seq } => Some((stream.clone(), *last_seq)),
                    Progress::Durable { .. } => None,
                })
                .collect();
            for (stream, last_seq) in raw {
                // The skipped seq stands for the notifications lost meanwhile, so a client
                // resuming later from `last_seq` is told too (its `since` is behind the head).
                let skipped = last_seq + 1;
                self.progress
                    .insert(stream.clone(), Progress::Raw { last_seq: skipped });
                self.set_raw_head(&stream, skipped);
                let advisory = Advisory::new(AdvisoryKind::Gap)
                    .stream(stream.clone())
                    .epoch(self.boot_epoch)
                    .reason("the relay's LISTEN connection was lost; notifications sent meanwhile are gone");
                let advisory = Advisory {
                    from: Some(skipped),
                    ..advisory
                };
                self.publish_advisory(&stream, self.boot_epoch, skipped, advisory);
                ListenerStats::add(&self.stats.raw_gaps, 1);
            }
        }
        Ok(())
    }

    /// Polls the heads of every listened durable stream and catches up the ones that moved.
    pub(super) async fn poll_heads(&mut self) -> Result<(), Lost> {
        let durable: Vec<StreamName> = self
            .progress
            .iter()
            .filter(|(_, progress)| matches!(progress, Progress::Durable { .. }))
            .map(|(stream, _)| stream.clone())
            .collect();
        if durable.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = durable.iter().map(StreamName::as_str).collect();
        let heads: HashMap<String, Head> = self
            .bounded(outbox::heads_on(self.reader()?, &names))
            .await?
            .into_iter()
            .collect();
        for stream in durable {
            match heads.get(stream.as_str()) {
                Some(head) => self.reach(&stream, head.epoch, head.seq).await?,
                None => self.forget_epoch(&stream, None),
            }
        }
        Ok(())
    }

    /// Handles a batch of notifications in arrival order.
    pub(super) async fn on_notifications(&mut self, batch: Vec<Notification>) -> Result<(), Lost> {
        ListenerStats::add(&self.stats.notifications, batch.len() as u64);
        for notification in batch {
            self.on_notification(notification).await?;
        }
        Ok(())
    }

    async fn on_notification(&mut self, notification: Notification) -> Result<(), Lost> {
        let stream = match StreamName::from_pg_channel(&notification.channel) {
            Ok(stream) => stream,
            Err(error) => {
                ListenerStats::add(&self.stats.bad_notifications, 1);
                tracing::warn!(channel = %notification.channel, %error, "notification on an unknown channel");
                return Ok(());
            }
        };
        if stream.kind() == StreamKind::Raw {
            self.on_raw(&stream, notification.payload);
            return Ok(());
        }
        let payload = match notify::decode(&notification.payload) {
            Ok(payload) if payload.stream() == &stream => payload,
            Ok(_) | Err(_) => {
                // Not ours or garbled: count it, and let the outbox say what really happened.
                ListenerStats::add(&self.stats.bad_notifications, 1);
                tracing::warn!(%stream, "undecodable notification; reading the outbox instead");
                return self.catch_up_from_head(&stream).await;
            }
        };
        match payload {
            NotifyPayload::Event(event) => self.on_event(event).await,
            NotifyPayload::Pointer { stream, epoch, seq } => self.reach(&stream, epoch, seq).await,
            NotifyPayload::Message {
                stream,
                key,
                data,
                ts,
                ..
            } => {
                self.on_message(stream, key, data, ts);
                Ok(())
            }
            NotifyPayload::Dropped { stream, epoch } => {
                self.forget_epoch(&stream, Some(epoch));
                Ok(())
            }
            presence @ NotifyPayload::Presence { .. } => {
                // Nobody may be listening for presence yet; that is fine.
                let _ = self.presence.send(presence);
                Ok(())
            }
        }
    }

    async fn catch_up_from_head(&mut self, stream: &StreamName) -> Result<(), Lost> {
        let heads = self
            .bounded(outbox::heads_on(self.reader()?, &[stream.as_str()]))
            .await?;
        match heads.first() {
            Some((_, head)) => self.reach(stream, head.epoch, head.seq).await,
            None => Ok(()),
        }
    }

    async fn on_event(&mut self, stored: StoredEvent) -> Result<(), Lost> {
        let event = &stored.event;
        let Some(Progress::Durable { epoch, last_seq }) = self.progress.get(&event.stream).copied()
        else {
            return Ok(());
        };
        if (epoch == event.epoch || epoch == 0) && event.seq == last_seq + 1 {
            self.progress.insert(
                event.stream.clone(),
                Progress::Durable {
                    epoch: event.epoch,
                    last_seq: event.seq,
                },
            );
            self.publish_event(stored);
            return Ok(());
        }
        let (stream, epoch, seq) = (event.stream.clone(), event.epoch, event.seq);
        self.reach(&stream, epoch, seq).await
    }

    /// Brings `stream` up to `(epoch, seq)`: adopts or changes the epoch (telling subscribers to
    /// resync on a change), then reads every missing event from the outbox.
    async fn reach(&mut self, stream: &StreamName, epoch: u64, seq: u64) -> Result<(), Lost> {
        let Some(Progress::Durable {
            epoch: known,
            last_seq,
        }) = self.progress.get(stream).copied()
        else {
            return Ok(());
        };
        let mut from = last_seq;
        if known != epoch {
            if known != 0 {
                self.resync(
                    stream,
                    epoch,
                    "the stream's epoch changed (dropped and recreated)",
                );
            }
            from = 0;
            self.progress
                .insert(stream.clone(), Progress::Durable { epoch, last_seq: 0 });
        }
        if seq <= from {
            return Ok(());
        }
        loop {
            ListenerStats::add(&self.stats.outbox_reads, 1);
            let events = self
                .bounded(outbox::replay_on(
                    self.reader()?,
                    stream,
                    epoch,
                    from,
                    self.replay_page,
                ))
                .await?;
            let count = events.len();
            for stored in events {
                if stored.event.seq != from + 1 {
                    // Trimmed by retention while we were away: subscribers must resync.
                    self.resync(
                        stream,
                        epoch,
                        "events were trimmed by retention before delivery",
                    );
                }
                from = stored.event.seq;
                self.progress.insert(
                    stream.clone(),
                    Progress::Durable {
                        epoch,
                        last_seq: from,
                    },
                );
                self.publish_event(stored);
            }
            if count < self.replay_page || from >= seq {
                return Ok(());
            }
        }
    }

    /// The stream was dropped (or vanished): tell subscribers, and adopt whatever epoch comes
    /// next.
    fn forget_epoch(&mut self, stream: &StreamName, epoch: Option<u64>) {
        let Some(Progress::Durable {
            epoch: known,
            last_seq,
        }) = self.progress.get(stream).copied()
        else {
            return;
        };
        if known == 0 || epoch.is_some_and(|epoch| epoch != known) {
            return;
        }
        let advisory = Advisory::new(AdvisoryKind::Dropped)
            .stream(stream.clone())
            .epoch(known)
            .reason("the stream was dropped or expired");
        self.publish_advisory(stream, known, last_seq, advisory);
        ListenerStats::add(&self.stats.resyncs, 1);
        self.progress.insert(
            stream.clone(),
            Progress::Durable {
                epoch: 0,
                last_seq: 0,
            },
        );
    }

    fn resync(&mut self, stream: &StreamName, epoch: u64, reason: &str) {
        let advisory = Advisory::new(AdvisoryKind::Resync)
            .stream(stream.clone())
            .epoch(epoch)
            .reason(reason);
        self.publish_advisory(stream, epoch, 0, advisory);
        ListenerStats::add(&self.stats.resyncs, 1);
    }

    fn publish_advisory(&mut self, stream: &StreamName, epoch: u64, seq: u64, advisory: Advisory) {
        let json = Bytes::from(ServerMessage::Advisory(advisory).encode());
        let delivery = Delivery::advisory(Arc::clone(stream.as_arc()), epoch, seq, json);
        self.fanout.publish(Arc::new(delivery));
    }

    fn publish_event(&mut self, stored: StoredEvent) {
        self.fanout.publish(Arc::new(Delivery::stored(stored)));
        ListenerStats::add(&self.stats.events, 1);
    }

    fn on_message(&mut self, stream: StreamName, key: String, data: Value, ts: Option<i64>) {
        let message = Event {
            stream: stream.clone(),
            epoch: 0,
            seq: 0,
            key,
            op: Op::Message,
            data,
            prev: None,
            ts,
        };
        let json = Bytes::from(ServerMessage::encode_event(&message));
        // A filtered subscriber gets a message only if its data matches (see session::view).
        let change = Change {
            key: message.key,
            op: Op::Message,
            data: message.data,
            prior: None,
            ts,
        };
        let mut delivery = Delivery::message(Arc::clone(stream.as_arc()), json).with_change(change);
        if let Some(ts) = ts {
            delivery = delivery.with_committed_at(ts);
        }
        self.fanout.publish(Arc::new(delivery));
        ListenerStats::add(&self.stats.messages, 1);
    }

    /// The seq a raw channel starts from when it is LISTENed: 0 the first time in this boot;
    /// after an UNLISTEN, the old head plus one skipped seq that stands for the notifications
    /// nobody listened to, so seqs keep increasing within a boot epoch and a client resuming
    /// from the old head is told about the gap.
    fn raw_relisten_seq(&self, stream: &StreamName) -> u64 {
        let previous = self
            .raw_heads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(stream)
            .copied();
        match previous {
            None => 0,
            Some(head) => {
                self.set_raw_head(stream, head + 1);
                head + 1
            }
        }
    }

    fn set_raw_head(&self, stream: &StreamName, seq: u64) {
        self.raw_heads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(stream.clone(), seq);
    }

    /// A raw `pg_notify`: stamp the next relay-local seq and the boot epoch. The payload is
    /// passed on as JSON when it parses as JSON, otherwise as a string.
    fn on_raw(&mut self, stream: &StreamName, payload: String) {
        let Some(Progress::Raw { last_seq }) = self.progress.get_mut(stream) else {
            return;
        };
        *last_seq += 1;
        let seq = *last_seq;
        self.set_raw_head(stream, seq);
        let data = serde_json::from_str::<Value>(&payload).unwrap_or(Value::String(payload));
        let event = Event {
            stream: stream.clone(),
            epoch: self.boot_epoch,
            seq,
            key: stream.pg_channel(),
            op: Op::Message,
            data,
            prev: None,
            ts: Some(now_micros()),
        };
        let json = Bytes::from(ServerMessage::Event(event).encode());
        let delivery = Delivery::event(Arc::clone(stream.as_arc()), self.boot_epoch, seq, json)
            .with_committed_at(now_micros());
        self.fanout.publish(Arc::new(delivery));
        ListenerStats::add(&self.stats.raw_events, 1);
    }
}
