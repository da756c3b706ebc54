//! Health, readiness and metrics; without a static dir, unknown paths are JSON 404s.

use super::*;

/// Health, readiness and metrics; without a static dir, unknown paths are JSON 404s.
#[tokio::test]
async fn health_readiness_and_metrics() {
    let relay = Relay::start(|_| {}).await;
    let health = relay.get("/healthz").await;
    assert_eq!(
        (health.status, health.text()),
        (StatusCode::OK, "ok\n".into())
    );

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ready = relay.get("/readyz").await;
        if ready.status == StatusCode::OK {
            assert!(
                ready.text().starts_with("ready\ncapture: "),
                "{}",
                ready.text()
            );
            break;
        }
        assert_eq!(
            ready.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            ready.text()
        );
        assert!(Instant::now() < deadline, "never ready: {}", ready.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    relay
        .get("/index.html")
        .await
        .assert_error(404, "not_found", "no static dir");

    let metrics = relay.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = metrics.text();
    assert!(text.ends_with('\n'));
    let mut types = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "TYPE twice: {name}"
            );
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        // `name{labels} value` or `name value`, the value a number.
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        assert!(value.parse::<f64>().is_ok(), "bad value in {line:?}");
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name in {line:?}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line:?}"
            );
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| types.get(*base).is_some_and(|kind| kind == "histogram"))
            })
            .unwrap_or(name);
        assert!(
            types.contains_key(family),
            "sample before its TYPE: {line:?}"
        );
    }
    for expected in [
        "tidewire_connections{transport=\"ws\"} ",
        "tidewire_connections{transport=\"sse\"} ",
        "tidewire_subscriptions ",
        "tidewire_queue_spare_borrowed 0",
        "tidewire_events_in_total{kind=\"durable\"} ",
        "tidewire_events_out_total ",
        "tidewire_dropped_total ",
        "tidewire_lagged_total ",
        "tidewire_resyncs_total{origin=\"client\"} ",
        "tidewire_auth_failures_total ",
        "tidewire_listen_reconnects_total ",
        "tidewire_notifications_total ",
        "tidewire_outbox_reads_total ",
        "tidewire_listen_up 1",
        "tidewire_publish_duration_seconds_bucket{le=\"0.0005\"} ",
        "tidewire_publish_duration_seconds_bucket{le=\"+Inf\"} ",
        "tidewire_delivery_latency_seconds_count ",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert_eq!(
        types
            .get("tidewire_publish_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );
    assert_eq!(
        types.get("tidewire_connections").map(String::as_str),
        Some("gauge")
    );
    relay.stop().await;
}
