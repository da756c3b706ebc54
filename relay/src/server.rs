//! The accept loop and router: one hyper HTTP/1.1 connection per socket (but for an event
//! stream asked for first, see `sse::direct`), routed to the transports; graceful shutdown
//! of everything on SIGINT/SIGTERM (or the caller's future).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tidewire_shared::ErrorCode;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::hub::{Hub, StartError};
use crate::transport::reset::{Reset, Socket};
use crate::transport::sse::{self, direct::Sniffed};
use crate::transport::{self, error_response, Body};

/// Runs the relay on `listener` until `shutdown` completes: starts the hub (PostgreSQL,
/// listener, janitor), serves connections, then drains within the configured grace period
/// and stops the embedded cluster.
///
/// # Errors
///
/// [`StartError`] if the relay cannot start.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let hub = Hub::start(config, token.clone(), tracker.clone()).await?;
    serve(listener, Arc::clone(&hub), shutdown).await;
    // Close pooled connections before the embedded server goes away, so its shutdown is not
    // logged as a stream of connection errors.
    hub.pool.close();
    hub.stop_embedded().await;
    hub.cores.stop();
    Ok(())
}

/// Serves `hub` on `listener` until `shutdown` completes, then shuts down gracefully: the hub
/// token is cancelled (sessions send `shutdown` and close), HTTP connections are drained, and
/// everything gets `shutdown_grace` to finish.
pub async fn serve(listener: TcpListener, hub: Arc<Hub>, shutdown: impl Future<Output = ()>) {
    let options = &hub.config.options;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(hub.config.header_timeout())
        .max_buf_size(options.max_header_bytes.max(8192));
    // Shared: every connection's task would otherwise keep a copy (about 500 bytes).
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, _peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors and the like: back off briefly, keep serving.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small writes (events) must not wait for Nagle.
        let _ = socket.set_nodelay(true);
        limit_unsent(&socket, hub.config.options.socket_unsent_bytes);
        spawn_connection(&hub, &builder, socket);
    }
    tracing::info!("shutting down: closing connections");
    hub.token.cancel();
    hub.tracker.close();
    let grace = hub.config.shutdown_grace();
    if tokio::time::timeout(grace, hub.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(?grace, "connections did not drain in time; closing them");
    }
}

/// Runs an accepted connection's task on the next delivery thread (`--delivery-threads`), or
/// on this runtime without them. The socket moves to that thread's event loop, so its
/// readiness wakes that thread.
fn spawn_connection(hub: &Arc<Hub>, builder: &Arc<http1::Builder>, socket: TcpStream) {
    let (hub, builder) = (Arc::clone(hub), Arc::clone(builder));
    let Some(core) = hub.cores.next().cloned() else {
        hub.tracker
            .spawn(connection(Arc::clone(&hub), builder, socket));
        return;
    };
    let socket = match socket.into_std() {
        Ok(socket) => socket,
        Err(error) => {
            tracing::warn!(%error, "cannot hand a connection to a delivery thread");
            return;
        }
    };
    let tracker = hub.tracker.clone();
    core.spawn(tracker.track_future(async move {
        match TcpStream::from_std(socket) {
            Ok(socket) => connection(hub, builder, socket).await,
            Err(error) => tracing::warn!(%error, "cannot serve a connection on a delivery thread"),
        }
    }));
}

/// Serves one accepted connection: an event stream asked for by its first request without
/// hyper (`sse::direct`), everything else through hyper.
///
/// Each part is boxed: the task keeps room for the largest future it awaits, and hyper's
/// connection (2 KB, heaptrack) would otherwise be part of every event stream's task, and the
/// sniffing's buffers and timers part of every connection's for its whole life.
async fn connection(hub: Arc<Hub>, builder: Arc<http1::Builder>, socket: TcpStream) {
    // A transport that drops this connection as a slow consumer resets it (see `Reset`).
    let reset = Reset::new();
    let options = &hub.config.options;
    let serving: Pin<Box<dyn Future<Output = ()> + Send>> = {
        let sniffing = sse::direct::sniff(
            &socket,
            options.max_header_bytes,
            hub.config.header_timeout(),
        );
        // A connection that has not sent its first request yet is closed at shutdown, as
        // hyper closes an idle one; waiting for the header timeout (10 s) would outlast the
        // shutdown grace (5 s).
        let sniffed = tokio::select! {
            sniffed = Box::pin(sniffing) => sniffed,
            () = hub.token.cancelled() => return,
        };
        // Matched inside this block: a `match` on the sniffed request kept it (about 240
        // bytes) in the task for as long as the connection is served.
        match sniffed {
            Sniffed::Sse { request, head_len } => {
                Box::pin(sse::direct::serve(hub, socket, request, head_len, reset))
            }
            Sniffed::Silent => return,
            Sniffed::Other => Box::pin(through_hyper(hub, builder, socket, reset)),
        }
    };
    serving.await;
}

/// Serves a connection with hyper, until it ends or its [`Reset`] is thrown.
async fn through_hyper(
    hub: Arc<Hub>,
    builder: Arc<http1::Builder>,
    socket: TcpStream,
    reset: Reset,
) {
    let socket = Socket::new(socket, reset.clone(), hub.reaper.clone());
    let hub_for_service = Arc::clone(&hub);
    let reset_for_service = reset.clone();
    let service = service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(reset_for_service.clone());
        route(Arc::clone(&hub_for_service), request)
    });
    let connection = builder
        .serve_connection(TokioIo::new(socket), service)
        .with_upgrades();
    let mut connection = Box::pin(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        // An SSE body given up on: dropping the connection drops (and resets) the
        // socket hyper was stuck writing to, with the events queued for it (on the
        // reaper, like the session).
        () = reset.requested() => {
            hub.reaper.bury(connection);
            return;
        }
        () = hub.token.cancelled() => {
            // Finish the request in flight, then close; upgraded sockets (WebSocket)
            // and SSE bodies watch the same token and close themselves.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "http connection ended with an error");
    }
}

async fn route(
    hub: Arc<Hub>,
    request: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let path = request.uri().path().to_owned();
    let request_headers = request.headers().clone();
    let cors_hub = Arc::clone(&hub);
    let mut response = match (request.method(), path.as_str()) {
        // A CORS preflight (an OPTIONS with an Origin); a plain OPTIONS reaches the API's own
        // `Allow` answer.
        (&Method::OPTIONS, _) if request_headers.contains_key(hyper::header::ORIGIN) => {
            crate::transport::preflight::respond(cors_hub.auth.preflight(&request_headers))
        }
        (&Method::GET, "/healthz") => transport::http::healthz(),
        (&Method::GET, "/readyz") => transport::http::readyz(&hub).await,
        (&Method::GET, "/metrics") => crate::transport::scrape::handle(&hub),
        (&Method::GET, "/v1/ws") => transport::ws::handle(hub, request).await,
        (&Method::GET, "/v1/sse") => transport::sse::handle(hub, request).await,
        (_, path) if path.starts_with("/v1/streams") => {
            transport::http::streams(hub, request).await
        }
        (&Method::GET | &Method::HEAD, _) => transport::static_files::handle(hub, request).await,
        _ => error_response(ErrorCode::NotFound, format!("no route for {path}")),
    };
    cors_hub
        .auth
        .apply_cors(&request_headers, response.headers_mut());
    Ok(response)
}

/// Waits for SIGINT (ctrl-c) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Caps the bytes a connection may queue in the kernel unsent (`--socket-unsent-bytes`);
/// 0 keeps the kernel default. Best effort: an error only costs the cap.
fn limit_unsent(socket: &tokio::net::TcpStream, bytes: u32) {
    if bytes == 0 {
        return;
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(error) = socket2::SockRef::from(socket).set_tcp_notsent_lowat(bytes) {
        tracing::debug!(%error, "TCP_NOTSENT_LOWAT not set");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = socket;
}
