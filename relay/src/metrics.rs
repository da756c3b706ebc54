//! `GET /metrics`: counters and histograms in the Prometheus text format.

use hyper::Response;

use crate::hub::Hub;

/// Relay-wide counters and histograms that are not owned by the bus or the listener.
#[derive(Debug, Default)]
pub struct Metrics {}
use crate::transport::{full, Body};

/// Renders every metric.
pub fn handle(hub: &Hub) -> Response<Body> {
    let bus = hub.bus.stats().snapshot();
    let listener = hub.listener.stats().snapshot();
    let registry = hub.bus.registry();
    let mut text = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, value: u64| {
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
    };
    gauge("tidewire_connections", "Open client connections.", "gauge", registry.connection_count() as u64);
    gauge("tidewire_events_in_total", "Durable events handed to the bus.", "counter", listener.events);
    gauge("tidewire_deliveries_total", "Deliveries queued to connections.", "counter", bus.delivered);
    gauge("tidewire_dropped_total", "Deliveries dropped for lagged connections.", "counter", bus.dropped_lagged);
    gauge("tidewire_listen_reconnects_total", "LISTEN connection reconnects.", "counter", listener.reconnects);
    let mut response = Response::new(full(text));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}
