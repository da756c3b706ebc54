//! Stalled consumers: WebSocket clients with a tiny receive buffer that subscribe and then
//! never read. The relay must disconnect each within its slow-consumer deadline; whether and
//! when it did is read from the kernel's socket table (`ss`, or `/proc/net/tcp`; loopback
//! shows both ends): the relay's end of the connection leaves ESTABLISHED when the relay closes it. The
//! client's end may stay ESTABLISHED: the relay's FIN waits behind megabytes of unsent data
//! that a zero receive window never lets through.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::histogram::{Histogram, Summary};
use super::transport;

/// Receive buffer of a stalled socket (the kernel may round it up).
const RECV_BUFFER: u32 = 4096;

/// Stalled sockets being watched.
#[derive(Debug)]
pub struct Stalled {
    sockets: Vec<TcpStream>,
    failed: u64,
    opened_at: Instant,
    stop: CancellationToken,
    watcher: JoinHandle<HashMap<u16, Duration>>,
}

/// What happened to the stalled sockets.
#[derive(Debug, Clone, Serialize)]
pub struct StalledReport {
    /// Sockets opened and subscribed.
    pub opened: u64,
    /// Sockets that could not connect.
    pub failed: u64,
    /// Sockets the relay disconnected before the end.
    pub disconnected: u64,
    /// Time from subscribing to being disconnected, ms.
    pub disconnect_after_ms: Summary,
}

/// Opens `count` stalled consumers of `stream` on `relay`.
pub async fn open(relay: SocketAddr, stream: &str, count: usize, timeout: Duration) -> Stalled {
    let mut sockets = Vec::with_capacity(count);
    let mut failed = 0;
    let subscribe =
        serde_json::json!({"type": "subscribe", "stream": stream, "snapshot": false}).to_string();
    let frame = masked_text_frame(subscribe.as_bytes());
    for _ in 0..count {
        match open_one(relay, &frame, timeout).await {
            Ok(socket) => sockets.push(socket),
            Err(_) => failed += 1,
        }
    }
    let ports: Vec<u16> = sockets
        .iter()
        .filter_map(|socket| socket.local_addr().ok().map(|addr| addr.port()))
        .collect();
    let stop = CancellationToken::new();
    let opened_at = Instant::now();
    let watcher = tokio::spawn(watch(ports, relay.port(), opened_at, stop.clone()));
    Stalled {
        sockets,
        failed,
        opened_at,
        stop,
        watcher,
    }
}

async fn open_one(
    relay: SocketAddr,
    frame: &[u8],
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let attempt = async {
        let mut stream = transport::tcp(relay, Some(RECV_BUFFER)).await?;
        let request = format!(
            "GET /v1/ws HTTP/1.1\r\nHost: {relay}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        // The 101 head and whatever follows stay unread: this consumer never reads.
        stream.write_all(frame).await?;
        Ok(stream)
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// A client text frame (masked with a zero key, which RFC 6455 allows).
fn masked_text_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x81];
    match payload.len() {
        length @ 0..=125 => frame.push(0x80 | length as u8),
        length @ 126..=65535 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(length as u16).to_be_bytes());
        }
        length => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(length as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    frame
}

/// Polls the socket table until `stop`; returns when each local port was seen closed.
async fn watch(
    ports: Vec<u16>,
    relay_port: u16,
    opened_at: Instant,
    stop: CancellationToken,
) -> HashMap<u16, Duration> {
    let mut closed = HashMap::new();
    loop {
        // Off the runtime's workers (see `established`).
        let established = tokio::task::spawn_blocking(move || established(relay_port)).await;
        // No table this round (should not happen): learn nothing rather than guess.
        if let Ok(Some(established)) = established {
            for port in &ports {
                // The relay's end left ESTABLISHED (FIN_WAIT1, or gone): the relay closed it.
                if !closed.contains_key(port) && !established.contains(port) {
                    closed.insert(*port, opened_at.elapsed());
                }
            }
        }
        if closed.len() == ports.len() {
            return closed;
        }
        tokio::select! {
            () = stop.cancelled() => return closed,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// The client ports of the connections whose relay end (local port `relay_port`) is
/// ESTABLISHED.
///
/// Asked of the kernel through `ss` (netlink, filtered in the kernel by state and port), else
/// read from `/proc/net/tcp`. The text table costs far more: after a big run it lists ten
/// thousand TIME_WAIT sockets (1.5 MB of text, formatted by the kernel on every read), and
/// reading it four times a second took the healthy clients' p99 next to 1,000 stalled ones
/// from 2.2 to 70 ms on this 2-core machine (5.8 ms once moved off the runtime's workers).
fn established(relay_port: u16) -> Option<HashSet<u16>> {
    established_by_ss(relay_port).or_else(|| {
        let states = socket_states(relay_port);
        // 0x01 is ESTABLISHED.
        Some(
            states
                .into_iter()
                .filter(|&(_, state)| state == 0x01)
                .map(|(port, _)| port)
                .collect(),
        )
    })
}

fn established_by_ss(relay_port: u16) -> Option<HashSet<u16>> {
    let filter = format!("( sport = :{relay_port} )");
    let output = std::process::Command::new("ss")
        .args(["-tnH", "state", "established", &filter])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    // With a state filter the columns are: Recv-Q Send-Q Local:Port Peer:Port.
    Some(
        text.lines()
            .filter_map(|line| {
                line.split_whitespace()
                    .nth(3)?
                    .rsplit_once(':')?
                    .1
                    .parse()
                    .ok()
            })
            .collect(),
    )
}

/// Client port -> TCP state of the relay's end of each connection (local port
/// `relay_port`), from this host's IPv4 and IPv6 socket tables.
fn socket_states(relay_port: u16) -> HashMap<u16, u8> {
    let mut states = HashMap::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(state)) =
                (fields.get(1), fields.get(2), fields.get(3))
            else {
                continue;
            };
            let port = |address: &str| {
                address
                    .rsplit_once(':')
                    .and_then(|(_, port)| u16::from_str_radix(port, 16).ok())
            };
            if port(local) != Some(relay_port) {
                continue;
            }
            if let (Some(client_port), Ok(state)) = (port(remote), u8::from_str_radix(state, 16)) {
                states.insert(client_port, state);
            }
        }
    }
    states
}

impl Stalled {
    /// Stops watching, closes the sockets, and reports.
    pub async fn finish(self) -> StalledReport {
        self.stop.cancel();
        let closed = self.watcher.await.unwrap_or_default();
        let opened = self.sockets.len() as u64;
        drop(self.sockets);
        let histogram = Histogram::new();
        for after in closed.values() {
            histogram.record(after.as_millis() as u64);
        }
        let _ = self.opened_at;
        StalledReport {
            opened,
            failed: self.failed,
            disconnected: closed.len() as u64,
            disconnect_after_ms: histogram.summary(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_are_masked_text() {
        let frame = masked_text_frame(b"{}");
        assert_eq!(frame, vec![0x81, 0x82, 0, 0, 0, 0, b'{', b'}']);
        let long = masked_text_frame(&[b'x'; 300]);
        assert_eq!(&long[..4], &[0x81, 0x80 | 126, 1, 44]);
    }

    #[tokio::test]
    async fn closed_peers_are_seen_in_the_socket_table() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let client = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let local = client.local_addr().expect("local").port();
        let (server, _) = listener.accept().await.expect("accept");
        assert_eq!(socket_states(port).get(&local), Some(&0x01));
        drop(server);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_ne!(socket_states(port).get(&local), Some(&0x01));
        drop(client);
    }
}
