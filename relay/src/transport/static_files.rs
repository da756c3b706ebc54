//! Static files from `--static-dir` (the demo site).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response};
use tidewire_shared::ErrorCode;

use super::{error_response, Body};
use crate::hub::Hub;

/// Serves a file, or 404.
pub async fn handle(_hub: Arc<Hub>, _request: Request<Incoming>) -> Response<Body> {
    error_response(ErrorCode::NotFound, "not found")
}
