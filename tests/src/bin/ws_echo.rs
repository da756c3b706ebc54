//! `ws_echo`: a WebSocket echo server running the relay's own WebSocket code
//! (`tidewire_relay::transport::ws::echo`: the relay's reader, fragment assembler, writer,
//! pong ordering and close codes) for the Autobahn server cases
//! (`scripts/test.d/30-conformance`, run by kosoku). Only the accept loop and the HTTP upgrade
//! are here.
//!
//! ```text
//! ws_echo --listen 127.0.0.1:9001 --max-message-bytes 67108864
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "WebSocket echo server on the relay's fastwebsockets configuration")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Largest message or frame in bytes (the relay's --max-message-bytes; Autobahn case 9
    /// needs 16 MiB).
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    max_message_bytes: usize,
    /// How long a write may make no progress before the connection is dropped.
    #[arg(long, default_value_t = 10_000)]
    stall_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen).await?;
    println!("ws_echo listening on {}", listener.local_addr()?);
    let limit = args.max_message_bytes;
    let stall = Duration::from_millis(args.stall_ms);
    loop {
        let (socket, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(error) => {
                eprintln!("accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Same as the relay: small frames must not wait for Nagle.
        let _ = socket.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(move |request| upgrade(request, limit, stall));
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service)
                .with_upgrades();
            if let Err(error) = connection.await {
                eprintln!("http connection: {error}");
            }
        });
    }
}

async fn upgrade(
    mut request: Request<Incoming>,
    limit: usize,
    stall: Duration,
) -> Result<Response<Empty<Bytes>>, std::convert::Infallible> {
    if !fastwebsockets::upgrade::is_upgrade_request(&request) {
        let mut response = Response::new(Empty::new());
        *response.status_mut() = StatusCode::UPGRADE_REQUIRED;
        return Ok(response);
    }
    match fastwebsockets::upgrade::upgrade(&mut request) {
        Ok((response, upgrade)) => {
            tokio::spawn(tidewire_relay::transport::ws::echo::echo(
                upgrade, limit, stall,
            ));
            Ok(response)
        }
        Err(_) => {
            let mut response = Response::new(Empty::new());
            *response.status_mut() = StatusCode::BAD_REQUEST;
            Ok(response)
        }
    }
}
