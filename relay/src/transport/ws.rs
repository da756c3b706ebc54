//! WebSocket transport (`GET /v1/ws`).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response};
use tidewire_shared::ErrorCode;

use super::{error_response, Body};
use crate::hub::Hub;

/// Upgrades the request and runs a session over the WebSocket.
pub async fn handle(_hub: Arc<Hub>, _request: Request<Incoming>) -> Response<Body> {
    error_response(ErrorCode::Unavailable, "the WebSocket transport is being built")
}
