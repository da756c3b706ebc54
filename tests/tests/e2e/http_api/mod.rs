//! The HTTP API end to end: a real relay on 127.0.0.1:0 over a real PostgreSQL, driven with a
//! plain hyper client; one file per resource, sharing the harness here.
//!
//! | module | what |
//! |---|---|
//! | `events` | publish, snapshot and replay pages, resync of an old `since` |
//! | `errors` | typed errors for bad input |
//! | `admin` | stream create, update and drop; permissions |
//! | `static_site` | the static site and its path-traversal defences |
//! | `health` | health, readiness and metrics |

mod admin;
mod errors;
mod events;
mod health;
mod static_site;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::HeaderMap;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tidewire_relay::config::Options;
use tidewire_tests::relay::TestRelay;
use tidewire_tests::TestPg;
use tokio::net::TcpStream;

/// Request body limit configured for these relays (small, so oversize bodies are cheap).
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A relay for one test (the shared harness) with small body limits, on a cluster of its own
/// that outlives it.
struct Relay {
    addr: SocketAddr,
    relay: TestRelay,
    /// Declared last: the cluster outlives the relay.
    pg: TestPg,
}

impl Relay {
    async fn start(tune: impl FnOnce(&mut Options)) -> Self {
        let pg = TestPg::start().await;
        let relay = TestRelay::builder(&pg)
            .options(|options| {
                options.max_message_bytes = MAX_MESSAGE_BYTES;
                options.max_data_bytes = 32 * 1024;
                options.replay_page = 3;
                options.shutdown_grace_ms = 1000;
                tune(options);
            })
            .spawn()
            .await;
        Self {
            addr: relay.addr(),
            relay,
            pg,
        }
    }

    /// Stops the relay and waits for it.
    async fn stop(self) {
        self.relay.shutdown().await;
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[], Bytes::new()).await
    }

    async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.send_json(Method::POST, path, body.to_string()).await
    }

    async fn send_json(&self, method: Method, path: &str, body: impl Into<Bytes>) -> Reply {
        self.send(
            method,
            path,
            &[("content-type", "application/json")],
            body.into(),
        )
        .await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Reply {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Full::new(body)).expect("valid request");
        exchange(self.addr, request).await
    }
}

/// What came back.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Asserts an `error` reply with this status and code.
    #[track_caller]
    pub(crate) fn assert_error(&self, status: u16, code: &str, what: &str) {
        assert_eq!(self.status.as_u16(), status, "{what}: {}", self.text());
        let body = self.json();
        assert_eq!(body["type"], "error", "{what}: {body}");
        assert_eq!(body["code"], code, "{what}: {body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|message| !message.is_empty()),
            "{what}"
        );
    }
}

/// One request on a fresh connection.
async fn exchange<B>(addr: SocketAddr, request: Request<B>) -> Reply
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    try_exchange(addr, request)
        .await
        .unwrap_or_else(|error| panic!("no answer: {error}"))
}

/// [`exchange`] for a relay that may be gone: why there is no answer, instead of a panic.
pub(crate) async fn try_exchange<B>(addr: SocketAddr, request: Request<B>) -> Result<Reply, String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|error| format!("connect to the relay: {error}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| format!("http handshake: {error}"))?;
    tokio::spawn(async move {
        // Ends when the response is read or the relay closes; errors show in the response.
        let _ = connection.await;
    });
    let response = tokio::time::timeout(Duration::from_secs(20), sender.send_request(request))
        .await
        .map_err(|_| "no answer within 20 s".to_owned())?
        .map_err(|error| format!("no response: {error}"))?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|error| format!("the body: {error}"))?
        .to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

fn events_of(page: &Value) -> Vec<u64> {
    page["events"]
        .as_array()
        .expect("events array")
        .iter()
        .map(|event| event["seq"].as_u64().expect("seq"))
        .collect()
}
