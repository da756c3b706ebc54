//! The `GET /metrics` document: every metric family of the relay, from
//! [`Metrics`](super::Metrics), the bus and registry, and the LISTEN path, in the Prometheus
//! text format. The transport gathers the values and serves the text.

use super::text::Exposition;
pub use super::text::CONTENT_TYPE;
use super::{MetricsSnapshot, Transport};
use crate::bus::BusStatsSnapshot;
use crate::pg::capture::CaptureSnapshot;
use crate::pg::listener::ListenerStatsSnapshot;
use crate::pg::replay_cache::ReplayCacheStats;
use crate::pg::snapshot::SnapshotCacheStats;

/// The counters of the relay's shared read caches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caches {
    /// Replay pages (`--replay-cache-bytes`).
    pub replay: ReplayCacheStats,
    /// Snapshot pages (`--snapshot-cache-bytes`).
    pub snapshot: SnapshotCacheStats,
}

/// Live values that are not counters of [`Metrics`](super::Metrics): read from the registry
/// and the listener at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Connections in the registry (every transport).
    pub registered: u64,
    /// Streams with at least one subscriber on this relay.
    pub streams: u64,
    /// Subscriptions, summed over streams.
    pub subscriptions: u64,
    /// Shared queue slots lent to connections (`--queue-spare`).
    pub spare_borrowed: u64,
    /// Whether the LISTEN connection is up.
    pub listen_up: bool,
}

/// The whole exposition document.
pub fn render(
    metrics: &MetricsSnapshot,
    bus: &BusStatsSnapshot,
    listener: &ListenerStatsSnapshot,
    gauges: Gauges,
    capture: &CaptureSnapshot,
    caches: &Caches,
) -> String {
    let mut out = Exposition::new();
    out.gauge_family(
        "tidewire_build_info",
        "Always 1; the label carries the relay version.",
        "version",
        &[(env!("CARGO_PKG_VERSION"), 1)],
    );
    render_connections(&mut out, metrics, gauges);
    render_events(&mut out, metrics, bus, listener);
    render_listener(&mut out, listener, gauges);
    render_capture(&mut out, capture);
    render_caches(&mut out, caches);
    out.histogram(
        "tidewire_publish_duration_seconds",
        "Time of successful tidewire.publish calls made by the relay (WebSocket and HTTP publishes).",
        &metrics.publish_latency,
    );
    out.histogram(
        "tidewire_delivery_latency_seconds",
        "Time from an event's commit in PostgreSQL to its write to a client socket.",
        &metrics.delivery_latency,
    );
    out.finish()
}

fn per_transport(values: &[(Transport, u64); 2]) -> [(&'static str, u64); 2] {
    values.map(|(transport, value)| (transport.label(), value))
}

fn render_connections(out: &mut Exposition, metrics: &MetricsSnapshot, gauges: Gauges) {
    out.gauge_family(
        "tidewire_connections",
        "Open client connections by transport.",
        "transport",
        &per_transport(&metrics.open),
    );
    out.counter_family(
        "tidewire_connections_opened_total",
        "Client connections opened by transport.",
        "transport",
        &per_transport(&metrics.opened),
    );
    out.counter_family(
        "tidewire_connections_refused_total",
        "Client connections refused at --max-connections, by transport.",
        "transport",
        &per_transport(&metrics.refused),
    );
    out.counter_family(
        "tidewire_slow_consumer_drops_total",
        "Client connections reset because they took nothing for --slow-consumer-ms, by transport.",
        "transport",
        &per_transport(&metrics.slow_consumer_drops),
    );
    out.gauge(
        "tidewire_registered_connections",
        "Connections in the fan-out registry.",
        gauges.registered,
    );
    out.gauge(
        "tidewire_subscriptions",
        "Stream subscriptions over all connections.",
        gauges.subscriptions,
    );
    out.gauge(
        "tidewire_queue_spare_borrowed",
        "Shared queue slots (--queue-spare) lent to connections whose burst outgrew their own queue.",
        gauges.spare_borrowed,
    );
    out.gauge(
        "tidewire_subscribed_streams",
        "Streams with at least one subscriber on this relay.",
        gauges.streams,
    );
    out.counter(
        "tidewire_auth_failures_total",
        "Requests and connections refused for missing, invalid or expired credentials or a refused Origin.",
        metrics.auth_failures,
    );
    let codes: Vec<(String, u64)> = metrics
        .disconnects
        .iter()
        .map(|(code, count)| (code.code().to_string(), *count))
        .collect();
    let codes: Vec<(&str, u64)> = codes
        .iter()
        .map(|(code, count)| (code.as_str(), *count))
        .collect();
    out.counter_family(
        "tidewire_disconnects_total",
        "Connections closed by the relay, by close code.",
        "code",
        &codes,
    );
}

fn render_events(
    out: &mut Exposition,
    metrics: &MetricsSnapshot,
    bus: &BusStatsSnapshot,
    listener: &ListenerStatsSnapshot,
) {
    out.counter_family(
        "tidewire_events_in_total",
        "Events handed to the bus by the listener: durable events, raw-channel notifications and ephemeral messages.",
        "kind",
        &[
            ("durable", listener.events),
            ("raw", listener.raw_events),
            ("message", listener.messages),
        ],
    );
    out.counter(
        "tidewire_bus_published_total",
        "Deliveries published on the bus, once each whatever the number of subscribers.",
        bus.published,
    );
    out.counter(
        "tidewire_events_out_total",
        "Deliveries queued to connections (one per subscriber reached).",
        bus.delivered,
    );
    out.counter(
        "tidewire_dropped_total",
        "Deliveries dropped because the connection's queue was full or it was lagged.",
        bus.dropped_lagged,
    );
    out.counter(
        "tidewire_lagged_total",
        "Times a connection fell behind on a stream (each costs a replay or a gap).",
        bus.lagged_events,
    );
    out.counter(
        "tidewire_reaped_connections_total",
        "Connections unregistered because their receiver was dropped.",
        bus.reaped,
    );
    out.gauge(
        "tidewire_queue_high_water",
        "Deepest any connection's queue has been, in deliveries.",
        bus.queue_high_water,
    );
    out.counter_family(
        "tidewire_resyncs_total",
        "Resyncs: origin=stream for epoch changes and drops seen by the listener, origin=client for clients whose position could not be resumed.",
        "origin",
        &[("stream", listener.resyncs), ("client", metrics.resyncs)],
    );
    out.counter(
        "tidewire_write_replays_total",
        "Publishes answered with the seq their write id (write_id, Idempotency-Key) committed at, without writing again (WebSocket and HTTP).",
        metrics.write_replays,
    );
    out.counter(
        "tidewire_raw_gaps_total",
        "Gap advisories sent on raw channels after a lost LISTEN connection.",
        listener.raw_gaps,
    );
}

fn render_listener(out: &mut Exposition, listener: &ListenerStatsSnapshot, gauges: Gauges) {
    out.gauge(
        "tidewire_listen_up",
        "1 if the LISTEN connection to PostgreSQL is up.",
        u64::from(gauges.listen_up),
    );
    out.gauge(
        "tidewire_listen_channels",
        "PostgreSQL channels currently listened to.",
        listener.listens.saturating_sub(listener.unlistens),
    );
    out.counter(
        "tidewire_notifications_total",
        "NOTIFY messages received.",
        listener.notifications,
    );
    out.counter(
        "tidewire_bad_notifications_total",
        "NOTIFY payloads that did not decode.",
        listener.bad_notifications,
    );
    out.counter(
        "tidewire_listen_failures_total",
        "Failed liveness queries and lost LISTEN connections.",
        listener.failures,
    );
    out.counter(
        "tidewire_listen_reconnects_total",
        "Successful reconnects of the LISTEN connection.",
        listener.reconnects,
    );
    out.counter(
        "tidewire_outbox_reads_total",
        "Outbox reads by the listener (catch-up, pointers, reconnects, polls).",
        listener.outbox_reads,
    );
    out.gauge(
        "tidewire_listen_queue_high_water",
        "Most notifications ever waiting between the LISTEN connection and the listener.",
        listener.queue_high_water,
    );
}

fn render_capture(out: &mut Exposition, capture: &CaptureSnapshot) {
    out.gauge(
        "tidewire_capture_logical",
        "1 when tracked tables are captured through logical replication, 0 with triggers.",
        u64::from(capture.logical),
    );
    out.gauge(
        "tidewire_capture_sequencer",
        "1 while this relay is the capture sequencer.",
        u64::from(capture.sequencer),
    );
    out.gauge(
        "tidewire_capture_halted",
        "1 while capture is halted (a tracked definition no longer fits its table; see the log).",
        u64::from(capture.halted.is_some()),
    );
    out.gauge(
        "tidewire_capture_slot_lag_bytes",
        "WAL bytes the replication slot holds that the sequencer has not confirmed.",
        capture.lag_bytes,
    );
    out.gauge(
        "tidewire_capture_slot_lag_milliseconds",
        "How far the sequencer's confirmed position trails the server (flush_lag), in ms.",
        capture.lag_millis,
    );
    out.gauge(
        "tidewire_capture_stale_slots",
        "Inactive replication slots named tidewire* other than this deployment's.",
        capture.stale_slots,
    );
    out.gauge(
        "tidewire_capture_failover_milliseconds",
        "Time from winning the sequencer election to streaming, at this relay's last election.",
        capture.failover_millis,
    );
    out.counter(
        "tidewire_capture_events_total",
        "Events this relay's sequencer wrote to the outbox.",
        capture.events,
    );
    out.counter(
        "tidewire_capture_batches_total",
        "Outbox transactions this relay's sequencer committed.",
        capture.batches,
    );
    out.counter(
        "tidewire_capture_transactions_total",
        "Source transactions this relay's sequencer wrote.",
        capture.transactions,
    );
    out.counter(
        "tidewire_capture_rejected_rows_total",
        "Row changes of tracked tables that could not be published (NULL key or placeholder, invalid stream name or key); each is logged.",
        capture.rejected_rows,
    );
    out.counter(
        "tidewire_capture_elections_total",
        "Times this relay became the capture sequencer.",
        capture.elections,
    );
}

fn render_caches(out: &mut Exposition, caches: &Caches) {
    let to_u64 = |value: usize| u64::try_from(value).unwrap_or(u64::MAX);
    out.counter(
        "tidewire_replay_cache_hits_total",
        "Replay pages answered by a read made for another session.",
        caches.replay.hits,
    );
    out.counter(
        "tidewire_replay_cache_reads_total",
        "Outbox queries made for replays.",
        caches.replay.reads,
    );
    out.gauge(
        "tidewire_replay_cache_bytes",
        "Encoded bytes of the replay pages kept.",
        to_u64(caches.replay.kept_bytes),
    );
    out.counter(
        "tidewire_snapshot_cache_hits_total",
        "Snapshot pages answered by a read made for another reader (kept or in flight).",
        caches.snapshot.hits,
    );
    out.counter(
        "tidewire_snapshot_page_reads_total",
        "Snapshot pages read from PostgreSQL (the cache's misses).",
        caches.snapshot.reads,
    );
    out.counter(
        "tidewire_snapshot_cache_evictions_total",
        "Kept snapshot pages dropped to stay within --snapshot-cache-bytes.",
        caches.snapshot.evictions,
    );
    out.gauge(
        "tidewire_snapshot_cache_bytes",
        "Bytes of the snapshot pages kept.",
        to_u64(caches.snapshot.kept_bytes),
    );
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::text::tests::parse;
    use crate::metrics::Metrics;

    #[test]
    fn the_whole_document_parses_and_has_every_family() {
        let metrics = Metrics::default();
        metrics.connection_opened(Transport::WebSocket);
        metrics.connection_opened(Transport::WebSocket);
        metrics.connection_opened(Transport::Sse);
        metrics.observe_publish(Duration::from_millis(2));
        metrics.observe_delivery(Duration::from_millis(40));
        metrics.disconnect(tidewire_shared::CloseCode::Slow);
        let bus = BusStatsSnapshot {
            delivered: 12,
            dropped_lagged: 3,
            ..BusStatsSnapshot::default()
        };
        let listener = ListenerStatsSnapshot {
            events: 5,
            raw_events: 2,
            listens: 3,
            unlistens: 1,
            ..ListenerStatsSnapshot::default()
        };
        let gauges = Gauges {
            registered: 3,
            streams: 2,
            subscriptions: 4,
            spare_borrowed: 256,
            listen_up: true,
        };
        let text = render(
            &metrics.snapshot(),
            &bus,
            &listener,
            gauges,
            &CaptureSnapshot::default(),
            &Caches::default(),
        );
        let samples = parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
        let value = |name: &str, label: Option<(&str, &str)>| {
            samples
                .iter()
                .find(|sample| {
                    sample.name == name
                        && match label {
                            None => sample.labels.is_empty(),
                            Some((key, val)) => {
                                sample.labels.iter().any(|(k, v)| k == key && v == val)
                            }
                        }
                })
                .map(|sample| sample.value)
        };
        assert_eq!(
            value("tidewire_connections", Some(("transport", "ws"))),
            Some(2.0)
        );
        assert_eq!(
            value("tidewire_connections", Some(("transport", "sse"))),
            Some(1.0)
        );
        assert_eq!(value("tidewire_subscriptions", None), Some(4.0));
        assert_eq!(value("tidewire_queue_spare_borrowed", None), Some(256.0));
        assert_eq!(value("tidewire_events_out_total", None), Some(12.0));
        assert_eq!(value("tidewire_dropped_total", None), Some(3.0));
        assert_eq!(
            value("tidewire_events_in_total", Some(("kind", "raw"))),
            Some(2.0)
        );
        assert_eq!(value("tidewire_listen_channels", None), Some(2.0));
        assert_eq!(value("tidewire_listen_up", None), Some(1.0));
        assert_eq!(
            value("tidewire_disconnects_total", Some(("code", "4008"))),
            Some(1.0)
        );
        assert_eq!(
            value(
                "tidewire_publish_duration_seconds_bucket",
                Some(("le", "0.0025"))
            ),
            Some(1.0)
        );
        assert_eq!(
            value("tidewire_delivery_latency_seconds_count", None),
            Some(1.0)
        );
        for family in [
            "tidewire_lagged_total",
            "tidewire_resyncs_total",
            "tidewire_write_replays_total",
            "tidewire_auth_failures_total",
            "tidewire_slow_consumer_drops_total",
            "tidewire_listen_reconnects_total",
            "tidewire_notifications_total",
            "tidewire_outbox_reads_total",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} counter\n")),
                "{family}"
            );
        }
    }
}
