//! The HTTP API: health, readiness, and the stream endpoints under `/v1/streams/`.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tidewire_shared::ErrorCode;

use super::{error_response, full, Body};
use crate::hub::Hub;

/// `GET /healthz`: the process is up.
pub fn healthz() -> Response<Body> {
    Response::new(full("ok\n"))
}

/// `GET /readyz`: PostgreSQL is reachable and the LISTEN connection is active.
pub async fn readyz(hub: &Hub) -> Response<Body> {
    let listening = hub.listener.is_up();
    let queryable = match hub.pool.get().await {
        Ok(client) => client.simple_query("select 1").await.is_ok(),
        Err(_) => false,
    };
    if listening && queryable {
        Response::new(full("ready\n"))
    } else {
        let mut response = Response::new(full(format!(
            "not ready: listen={listening} query={queryable}\n"
        )));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response
    }
}

/// `/v1/streams/...`.
pub async fn streams(_hub: Arc<Hub>, _request: Request<Incoming>) -> Response<Body> {
    error_response(ErrorCode::Unavailable, "the HTTP stream API is being built")
}
