//! A scripted fake relay for the client tests: a real fastwebsockets server whose accepted
//! connections are handed to the test, which reads client messages and writes server
//! messages one by one (or drops the connection, or closes it with a code).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tidewire_shared::message::{decode_client, Advisory, AdvisoryKind};
use tidewire_shared::{ClientMessage, DecodeLimits, ServerMessage};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Generous bound for anything the tests wait for.
pub(super) const WAIT: Duration = Duration::from_secs(10);

/// A WebSocket server that hands each accepted connection to the test.
pub(super) struct FakeRelay {
    addr: SocketAddr,
    connections: mpsc::UnboundedReceiver<FakeConn>,
    accept: JoinHandle<()>,
}

impl Drop for FakeRelay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FakeRelay {
    pub(super) async fn start() -> Self {
        Self::bind("127.0.0.1:0".parse().expect("valid address"), None).await
    }

    /// Listens on `addr`; answers every upgrade with `reject` instead, if given.
    pub(super) async fn bind(addr: SocketAddr, reject: Option<StatusCode>) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind the fake relay");
        let addr = listener.local_addr().expect("bound address");
        let (sender, connections) = mpsc::unbounded_channel();
        let accept = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let sender = sender.clone();
                let service = service_fn(move |request: Request<Incoming>| {
                    let sender = sender.clone();
                    async move { Ok::<_, Infallible>(upgrade(request, &sender, reject)) }
                });
                tokio::spawn(async move {
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .with_upgrades();
                    let _ = connection.await;
                });
            }
        });
        Self {
            addr,
            connections,
            accept,
        }
    }

    pub(super) fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    pub(super) async fn next_connection(&mut self) -> FakeConn {
        let mut connection = tokio::time::timeout(WAIT, self.connections.recv())
            .await
            .expect("a connection in time")
            .expect("the accept loop runs");
        connection
            .send(&ServerMessage::Advisory(
                Advisory::new(AdvisoryKind::Connect).reason("relay=fake connection=1"),
            ))
            .await;
        connection
    }
}

fn upgrade(
    mut request: Request<Incoming>,
    connections: &mpsc::UnboundedSender<FakeConn>,
    reject: Option<StatusCode>,
) -> Response<Empty<Bytes>> {
    let refusal = |status| {
        let mut response = Response::new(Empty::new());
        *response.status_mut() = status;
        response
    };
    if let Some(status) = reject {
        return refusal(status);
    }
    assert_eq!(request.uri().path(), "/v1/ws");
    let Ok((response, upgrade)) = fastwebsockets::upgrade::upgrade(&mut request) else {
        return refusal(StatusCode::BAD_REQUEST);
    };
    let connections = connections.clone();
    tokio::spawn(async move {
        if let Ok(websocket) = upgrade.await {
            let _ = connections.send(FakeConn {
                websocket: FragmentCollector::new(websocket),
            });
        }
    });
    response
}

/// One accepted connection, driven by the test. Dropping it resets the connection.
pub(super) struct FakeConn {
    pub(super) websocket: FragmentCollector<TokioIo<Upgraded>>,
}

impl FakeConn {
    /// The next client message other than a keepalive ping.
    pub(super) async fn recv(&mut self) -> ClientMessage {
        loop {
            let frame = tokio::time::timeout(WAIT, self.websocket.read_frame())
                .await
                .expect("a client message in time")
                .expect("a frame");
            assert_eq!(frame.opcode, OpCode::Text, "the client sends text frames");
            let message =
                decode_client(&frame.payload, &DecodeLimits::default()).expect("a valid message");
            if !matches!(message, ClientMessage::Ping { .. }) {
                return message;
            }
        }
    }

    pub(super) async fn send(&mut self, message: &ServerMessage) {
        self.websocket
            .write_frame(Frame::text(Payload::Owned(message.encode().into_bytes())))
            .await
            .expect("write to the client");
    }

    pub(super) async fn close(&mut self, code: u16, reason: &str) {
        self.websocket
            .write_frame(Frame::close(code, reason.as_bytes()))
            .await
            .expect("write the close frame");
    }
}
