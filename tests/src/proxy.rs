//! A network-fault proxy of our own (tokio): sits between a client and the relay, or between
//! the relay and PostgreSQL, and adds latency, limits bandwidth, slices writes into small
//! pieces, resets every connection, or blackholes traffic (sockets stay open, bytes stop).
//!
//! `tc netem` is not available here and no toxiproxy server installs, so the fault tests use
//! this. Faults can be changed while connections are open through the [`ProxyHandle`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The faults applied to bytes flowing in both directions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Added before each chunk is forwarded.
    pub latency: Duration,
    /// Bytes per second in each direction; `None` for unlimited.
    pub bandwidth: Option<u64>,
    /// Forward at most this many bytes per write (slices frames across TCP segments).
    pub slice: Option<usize>,
    /// Stop forwarding anything (sockets stay open: the peer sees silence, not a reset).
    pub blackhole: bool,
}

/// Controls a running proxy.
#[derive(Debug, Clone)]
pub struct ProxyHandle {
    address: SocketAddr,
    faults: watch::Sender<Faults>,
    /// Bumped to reset every open connection.
    resets: watch::Sender<u64>,
    connections: Arc<Mutex<u64>>,
}

impl ProxyHandle {
    /// The address clients connect to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Replaces the faults (applies to open connections too).
    pub fn set(&self, faults: Faults) {
        self.faults.send_replace(faults);
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.set(Faults::default());
    }

    /// Closes every open connection at once (both sides see the socket close).
    pub fn reset_all(&self) {
        self.resets.send_modify(|generation| *generation += 1);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        *self
            .connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Starts a proxy on 127.0.0.1 (free port) forwarding to `upstream`. It runs until the
/// runtime ends.
///
/// # Panics
///
/// If no local port can be bound.
pub async fn start(upstream: SocketAddr) -> ProxyHandle {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy");
    let address = listener.local_addr().expect("proxy address");
    let (faults, faults_receiver) = watch::channel(Faults::default());
    let (resets, resets_receiver) = watch::channel(0u64);
    let connections = Arc::new(Mutex::new(0));
    let handle = ProxyHandle {
        address,
        faults,
        resets,
        connections: Arc::clone(&connections),
    };
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            *connections
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
            let faults = faults_receiver.clone();
            let mut resets = resets_receiver.clone();
            resets.borrow_and_update();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let upstream_pipe = pipe(client_read, server_write, faults.clone());
                let downstream_pipe = pipe(server_read, client_write, faults);
                tokio::select! {
                    () = async { tokio::join!(upstream_pipe, downstream_pipe); } => {}
                    _ = resets.changed() => {}
                }
            });
        }
    });
    handle
}

/// Copies `from` to `to` applying the current faults, until either side closes.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut faults: watch::Receiver<Faults>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let mut chunk = &buffer[..read];
        while !chunk.is_empty() {
            let current = faults.borrow_and_update().clone();
            if current.blackhole {
                // Hold the bytes until the blackhole is lifted (or the connection is reset).
                if faults.changed().await.is_err() {
                    return;
                }
                continue;
            }
            if !current.latency.is_zero() {
                tokio::time::sleep(current.latency).await;
            }
            let piece = current
                .slice
                .map_or(chunk.len(), |slice| slice.max(1).min(chunk.len()));
            if to.write_all(&chunk[..piece]).await.is_err() {
                return;
            }
            if let Some(rate) = current.bandwidth {
                let seconds = piece as f64 / rate.max(1) as f64;
                tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
            }
            chunk = &chunk[piece..];
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    while let Ok(read) = socket.read(&mut buffer).await {
                        if read == 0 || socket.write_all(&buffer[..read]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        address
    }

    #[tokio::test]
    async fn forwards_delays_blackholes_and_resets() {
        let proxy = start(echo_server().await).await;
        let mut socket = TcpStream::connect(proxy.address()).await.expect("connect");
        let mut reply = [0u8; 5];
        socket.write_all(b"hello").await.expect("write");
        socket.read_exact(&mut reply).await.expect("echo");
        assert_eq!(&reply, b"hello");

        proxy.set(Faults {
            latency: Duration::from_millis(100),
            slice: Some(1),
            ..Faults::default()
        });
        let started = std::time::Instant::now();
        socket.write_all(b"again").await.expect("write");
        socket.read_exact(&mut reply).await.expect("echo");
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "latency applied both ways"
        );

        proxy.set(Faults {
            blackhole: true,
            ..Faults::default()
        });
        socket.write_all(b"lost?").await.expect("write");
        let silent =
            tokio::time::timeout(Duration::from_millis(300), socket.read_exact(&mut reply)).await;
        assert!(silent.is_err(), "nothing comes back through a blackhole");
        proxy.heal();
        socket
            .read_exact(&mut reply)
            .await
            .expect("held bytes arrive after healing");
        assert_eq!(&reply, b"lost?");

        proxy.reset_all();
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(2), socket.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "a reset closes the connection");
        assert_eq!(proxy.accepted(), 1);
    }
}
