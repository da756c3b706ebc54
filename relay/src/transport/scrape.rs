//! `GET /metrics`: reads the live values (registry, listener) from the hub and serves the
//! document [`crate::metrics::render`] writes, so the metrics module builds no HTTP response.

use hyper::Response;

use crate::hub::Hub;
use crate::metrics::{render, Gauges, CONTENT_TYPE};
use crate::transport::{full, Body};

/// Renders every metric.
pub fn handle(hub: &Hub) -> Response<Body> {
    let registry = hub.bus.registry();
    let streams = registry.streams();
    let subscriptions = streams
        .iter()
        .map(|stream| registry.subscriber_count(stream))
        .sum::<usize>();
    let gauges = Gauges {
        registered: to_u64(registry.connection_count()),
        streams: to_u64(streams.len()),
        subscriptions: to_u64(subscriptions),
        spare_borrowed: to_u64(registry.spare().borrowed()),
        listen_up: hub.listener.is_up(),
    };
    let text = render(
        &hub.metrics.snapshot(),
        &hub.bus.stats().snapshot(),
        &hub.listener.stats().snapshot(),
        gauges,
        &hub.capture.snapshot(),
        &crate::metrics::Caches {
            replay: hub.replay.stats(),
            snapshot: hub.snapshots.stats(),
        },
    );
    let mut response = Response::new(full(text));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
    );
    response.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    response
}

fn to_u64(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}
