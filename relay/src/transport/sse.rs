//! Server-Sent Events transport (`GET /v1/sse`).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response};
use tidewire_shared::ErrorCode;

use super::{error_response, Body};
use crate::hub::Hub;

/// Runs a session over an SSE response.
pub async fn handle(_hub: Arc<Hub>, _request: Request<Incoming>) -> Response<Body> {
    error_response(ErrorCode::Unavailable, "the SSE transport is being built")
}
