//! Relay metrics: the [`Metrics`] counters and histograms the transports and sessions bump,
//! and `GET /metrics`, which renders them together with the bus, registry and listener
//! statistics in the Prometheus text format (0.0.4).
//!
//! # Layout
//!
//! - this file: [`Metrics`] (the API other modules call), [`Transport`], [`ConnectionGuard`]
//! - [`histogram`]: the lock-free fixed-bucket [`Histogram`]
//! - `render`: `GET /metrics`, every family with its HELP and TYPE
//! - [`text`]: the text-format writer

pub mod histogram;
mod render;
pub mod text;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tidewire_shared::codes::ALL_CLOSE_CODES;
use tidewire_shared::CloseCode;

pub use self::histogram::{Histogram, HistogramSnapshot, LocalHistogram};
pub use self::render::{render, Caches, Gauges, CONTENT_TYPE};

/// The client transports whose connections are counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// `GET /v1/ws`.
    WebSocket,
    /// `GET /v1/sse`.
    Sse,
}

impl Transport {
    /// Every transport, in rendering order.
    pub const ALL: [Transport; 2] = [Transport::WebSocket, Transport::Sse];

    /// The `transport` label value: `ws` or `sse`.
    pub fn label(self) -> &'static str {
        match self {
            Transport::WebSocket => "ws",
            Transport::Sse => "sse",
        }
    }

    fn index(self) -> usize {
        match self {
            Transport::WebSocket => 0,
            Transport::Sse => 1,
        }
    }
}

/// Relay-wide counters and histograms that the bus and the listener do not already keep
/// (those have their own stats, rendered next to these by `GET /metrics`).
///
/// Every method takes `&self`, is lock-free (relaxed atomics) and cheap enough to call on the
/// hot path. Reach it as `hub.metrics`.
///
/// # Who calls what
///
/// | call | when | metric |
/// |---|---|---|
/// | [`connection_opened`](Self::connection_opened) / [`connection_closed`](Self::connection_closed), or one [`ConnectionGuard::new`] held for the connection's life | a WebSocket is upgraded / an SSE response starts, and when it ends | `tidewire_connections{transport}`, `tidewire_connections_opened_total{transport}` |
/// | [`connection_refused`](Self::connection_refused) | a connection is turned away at `--max-connections` (503 / close 4503) | `tidewire_connections_refused_total{transport}` |
/// | [`slow_consumer_dropped`](Self::slow_consumer_dropped) | a connection is reset because it took nothing for `--slow-consumer-ms` | `tidewire_slow_consumer_drops_total{transport}` |
/// | [`auth_failure`](Self::auth_failure) | `Authenticator::authenticate` or a token check on a live connection fails (401/403, close 4001/4003/4004) | `tidewire_auth_failures_total` |
/// | [`resync`](Self::resync) | a client is told to reload (its `since` is unusable: other epoch, outside retention, ahead): the session's `resync` advisory, the HTTP API's 409 | `tidewire_resyncs_total{origin="client"}` |
/// | [`disconnect`](Self::disconnect) | the relay closes a connection with a close code (WebSocket close frame, or the same reason ending an SSE stream) | `tidewire_disconnects_total{code}` |
/// | [`observe_publish`](Self::observe_publish) | around a successful `pg::publish::publish_checked` (WebSocket and HTTP publishes) | `tidewire_publish_duration_seconds` |
/// | [`write_replayed`](Self::write_replayed) | a publish's write id was seen before and its original seq answered (WebSocket `ack` with `replayed`, HTTP 200 with `Idempotent-Replayed`) | `tidewire_write_replays_total` |
/// | [`DeliveryClock`] (merged with [`merge_delivery_latencies`](Self::merge_delivery_latencies)), or [`observe_delivery`](Self::observe_delivery) | when an event that carries `Delivery::committed_at_micros` is handed to the socket | `tidewire_delivery_latency_seconds` |
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open connections per transport (a gauge; never below zero).
    open: [AtomicU64; 2],
    /// Connections ever opened per transport.
    opened: [AtomicU64; 2],
    /// Connections refused at the connection limit, per transport.
    refused: [AtomicU64; 2],
    /// Connections reset as slow consumers, per transport.
    slow_consumer_drops: [AtomicU64; 2],
    /// Failed authentications (any transport, including the HTTP API).
    auth_failures: AtomicU64,
    /// Clients told to resync (take a snapshot).
    resyncs: AtomicU64,
    /// Publishes answered with the seq their write id committed at, nothing written again.
    write_replays: AtomicU64,
    /// Connections closed by the relay, indexed like `ALL_CLOSE_CODES`.
    disconnects: [AtomicU64; ALL_CLOSE_CODES.len()],
    /// Time of `tidewire.publish` calls as the relay sees them.
    publish_latency: Histogram,
    /// From commit in PostgreSQL to the event being written to a client socket.
    delivery_latency: Histogram,
}

impl Metrics {
    /// A connection of `transport` opened. Pair with [`Metrics::connection_closed`], or hold a
    /// [`ConnectionGuard`] instead so that every exit path (errors, panics, cancellation)
    /// closes it.
    pub fn connection_opened(&self, transport: Transport) {
        self.open[transport.index()].fetch_add(1, Ordering::Relaxed);
        self.opened[transport.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// A connection of `transport` closed. Extra calls never push the gauge below zero.
    pub fn connection_closed(&self, transport: Transport) {
        // The closure never fails (it always returns `Some`), so the result carries no news.
        let _ = self.open[transport.index()].fetch_update(
            Ordering::Relaxed,
            Ordering::Relaxed,
            |open| Some(open.saturating_sub(1)),
        );
    }

    /// A connection of `transport` was refused because the relay is at `--max-connections`.
    pub fn connection_refused(&self, transport: Transport) {
        self.refused[transport.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// A connection of `transport` took nothing for `--slow-consumer-ms` and was reset.
    pub fn slow_consumer_dropped(&self, transport: Transport) {
        self.slow_consumer_drops[transport.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Authentication failed (missing/invalid/expired token or refused Origin).
    pub fn auth_failure(&self) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A client was told to resync (its position cannot be resumed).
    pub fn resync(&self) {
        self.resyncs.fetch_add(1, Ordering::Relaxed);
    }

    /// A publish's write id was seen before: its original seq was answered.
    pub fn write_replayed(&self) {
        self.write_replays.fetch_add(1, Ordering::Relaxed);
    }

    /// The relay closed a connection with `code`.
    pub fn disconnect(&self, code: CloseCode) {
        if let Some(index) = ALL_CLOSE_CODES.iter().position(|known| *known == code) {
            self.disconnects[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One successful publish took `elapsed` (from before `pg::publish::publish_checked` to
    /// its answer).
    pub fn observe_publish(&self, elapsed: Duration) {
        self.publish_latency.observe(elapsed);
    }

    /// One event reached a client socket `latency` after it committed.
    pub fn observe_delivery(&self, latency: Duration) {
        self.delivery_latency.observe(latency);
    }

    /// Adds a connection's batched delivery latencies (see [`DeliveryClock`]).
    pub fn merge_delivery_latencies(&self, local: &mut LocalHistogram) {
        self.delivery_latency.merge(local);
    }

    /// Open connections of `transport`.
    pub fn open_connections(&self, transport: Transport) -> u64 {
        self.open[transport.index()].load(Ordering::Relaxed)
    }

    /// A plain copy of every value, for rendering and tests.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        MetricsSnapshot {
            open: Transport::ALL.map(|transport| (transport, load(&self.open[transport.index()]))),
            opened: Transport::ALL
                .map(|transport| (transport, load(&self.opened[transport.index()]))),
            refused: Transport::ALL
                .map(|transport| (transport, load(&self.refused[transport.index()]))),
            slow_consumer_drops: Transport::ALL.map(|transport| {
                (
                    transport,
                    load(&self.slow_consumer_drops[transport.index()]),
                )
            }),
            auth_failures: load(&self.auth_failures),
            resyncs: load(&self.resyncs),
            write_replays: load(&self.write_replays),
            disconnects: ALL_CLOSE_CODES
                .iter()
                .zip(&self.disconnects)
                .map(|(code, counter)| (*code, load(counter)))
                .collect(),
            publish_latency: self.publish_latency.snapshot(),
            delivery_latency: self.delivery_latency.snapshot(),
        }
    }
}

/// A plain copy of [`Metrics`] at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    /// Open connections per transport.
    pub open: [(Transport, u64); 2],
    /// Connections opened per transport.
    pub opened: [(Transport, u64); 2],
    /// Connections refused at the limit per transport.
    pub refused: [(Transport, u64); 2],
    /// Connections reset as slow consumers per transport.
    pub slow_consumer_drops: [(Transport, u64); 2],
    /// Failed authentications.
    pub auth_failures: u64,
    /// Clients told to resync.
    pub resyncs: u64,
    /// Publishes answered from their write id.
    pub write_replays: u64,
    /// Relay-initiated closes per close code.
    pub disconnects: Vec<(CloseCode, u64)>,
    /// Publish latency.
    pub publish_latency: HistogramSnapshot,
    /// Commit-to-socket latency.
    pub delivery_latency: HistogramSnapshot,
}

/// Counts one open connection for as long as it lives: [`Metrics::connection_opened`] on
/// creation, [`Metrics::connection_closed`] on drop (whatever ends the connection).
///
/// # Examples
///
/// ```no_run
/// # fn example(hub: std::sync::Arc<tidewire_relay::hub::Hub>) {
/// use tidewire_relay::metrics::{ConnectionGuard, Transport};
/// let _counted = ConnectionGuard::new(&hub.metrics, Transport::WebSocket);
/// // ... run the session; the gauge goes down when `_counted` is dropped.
/// # }
/// ```
#[derive(Debug)]
#[must_use = "the connection is counted as closed as soon as the guard is dropped"]
pub struct ConnectionGuard {
    /// Keeps the metrics alive until the guard is dropped.
    metrics: Arc<Metrics>,
    transport: Transport,
}

impl ConnectionGuard {
    /// Counts a connection of `transport` as open until the guard is dropped.
    pub fn new(metrics: &Arc<Metrics>, transport: Transport) -> Self {
        metrics.connection_opened(transport);
        Self {
            metrics: Arc::clone(metrics),
            transport,
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.metrics.connection_closed(self.transport);
    }
}

/// A connection's delivery-latency recorder: one clock reading per burst of deliveries, kept
/// in a [`LocalHistogram`] and merged into [`Metrics`] when the connection runs out of work
/// ([`DeliveryClock::flush`]), so a delivery costs no clock call and no shared atomic.
#[derive(Debug, Default)]
pub struct DeliveryClock {
    /// Microseconds since the Unix epoch at the start of the current burst.
    now_micros: Option<i64>,
    local: LocalHistogram,
}

impl DeliveryClock {
    /// Most observations kept before they are merged anyway.
    const MAX_BATCH: u32 = 4096;

    /// An event that committed at `committed_at_micros` is being handed to the socket. A commit
    /// time in the future (clock skew between PostgreSQL and the relay) counts as 0.
    pub fn observe(&mut self, metrics: &Metrics, committed_at_micros: i64) {
        let now = *self.now_micros.get_or_insert_with(now_micros);
        let elapsed = u64::try_from(now.saturating_sub(committed_at_micros)).unwrap_or(0);
        self.local.observe_nanos(elapsed.saturating_mul(1000));
        if self.local.len() >= Self::MAX_BATCH {
            self.flush(metrics);
        }
    }

    /// The burst is over: merge what was recorded and read the clock afresh next time.
    pub fn flush(&mut self, metrics: &Metrics) {
        self.now_micros = None;
        metrics.merge_delivery_latencies(&mut self.local);
    }
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_gauge_never_goes_negative() {
        let metrics = Metrics::default();
        metrics.connection_opened(Transport::WebSocket);
        metrics.connection_opened(Transport::Sse);
        metrics.connection_closed(Transport::WebSocket);
        metrics.connection_closed(Transport::WebSocket);
        assert_eq!(metrics.open_connections(Transport::WebSocket), 0);
        assert_eq!(metrics.open_connections(Transport::Sse), 1);
        let snapshot = metrics.snapshot();
        assert_eq!(
            snapshot.opened,
            [(Transport::WebSocket, 1), (Transport::Sse, 1)]
        );
    }

    #[test]
    fn counters_and_disconnect_codes() {
        let metrics = Metrics::default();
        metrics.auth_failure();
        metrics.resync();
        metrics.resync();
        metrics.write_replayed();
        metrics.disconnect(CloseCode::Slow);
        metrics.connection_refused(Transport::Sse);
        metrics.slow_consumer_dropped(Transport::WebSocket);
        let snapshot = metrics.snapshot();
        assert_eq!((snapshot.auth_failures, snapshot.resyncs), (1, 2));
        assert_eq!(snapshot.write_replays, 1);
        assert!(snapshot.disconnects.contains(&(CloseCode::Slow, 1)));
        assert!(snapshot.disconnects.contains(&(CloseCode::Normal, 0)));
        assert_eq!(snapshot.refused[1], (Transport::Sse, 1));
        assert_eq!(
            snapshot.slow_consumer_drops,
            [(Transport::WebSocket, 1), (Transport::Sse, 0)]
        );
    }

    #[test]
    fn delivery_since_commit() {
        let metrics = Metrics::default();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_micros();
        let now = i64::try_from(now).expect("fits");
        let mut clock = DeliveryClock::default();
        clock.observe(&metrics, now - 2_000); // 2 ms ago
        clock.observe(&metrics, now + 60_000_000); // in the future: counted as 0
        clock.observe(&metrics, i64::MIN); // absurd: lands in +Inf, no panic
        clock.flush(&metrics);
        let snapshot = metrics.snapshot().delivery_latency;
        assert_eq!(snapshot.count, 3);
        let at = |label: &str| {
            snapshot
                .buckets
                .iter()
                .find(|(le, _)| *le == label)
                .map(|(_, count)| *count)
        };
        assert_eq!(at("0.0005"), Some(1));
        assert_eq!(at("5"), Some(2));
    }
}
