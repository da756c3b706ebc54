//! [`TestRelay`]: a real relay for one test, serving on `127.0.0.1:0` (or a chosen address, to
//! restart on the same port) against a [`TestPg`] cluster, with a handle to shut it down
//! gracefully (as SIGTERM would) or, when built [`killable`](TestRelayBuilder::killable), to
//! kill it (every task and socket dropped at once, as a crash would). The one relay harness of
//! the end-to-end tests: [`TestRelay::builder`] sets a JWT secret, options and the address.

use std::net::SocketAddr;
use std::sync::Arc;

use tidewire_relay::config::Options;
use tidewire_relay::hub::Hub;
use tidewire_relay::Config;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::TestPg;

/// A running relay. Dropping it starts a graceful shutdown in the background (a killable one
/// is killed); [`TestRelay::shutdown`] waits for it.
#[derive(Debug)]
pub struct TestRelay {
    addr: SocketAddr,
    hub: Arc<Hub>,
    /// Completing this ends `server::serve`'s accept loop (the shutdown future).
    stop: Option<oneshot::Sender<()>>,
    /// What runs `server::serve`; it ends once connections drained.
    served: Option<Served>,
}

/// Where a relay runs.
#[derive(Debug)]
enum Served {
    /// A task of the test's runtime.
    Task(JoinHandle<()>),
    /// A runtime of its own, which [`TestRelay::kill`] drops with everything on it; `done`
    /// fires when `serve` returned.
    Runtime {
        runtime: tokio::runtime::Runtime,
        done: oneshot::Receiver<()>,
    },
}

/// Builds a [`TestRelay`]: [`Config::for_tests`] on a cluster, then what the test sets.
#[derive(Debug)]
#[must_use = "a builder does nothing until spawned"]
pub struct TestRelayBuilder {
    config: Config,
    addr: SocketAddr,
    killable: bool,
}

impl TestRelayBuilder {
    /// `config` on `127.0.0.1:0`, not killable.
    fn new(config: Config) -> Self {
        Self {
            config,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            killable: false,
        }
    }

    /// Requires tokens signed with this HS256 secret (anonymous clients get `anon_read` /
    /// `anon_write` only).
    pub fn jwt_secret(mut self, secret: &str) -> Self {
        self.config.options.jwt_secret = Some(secret.to_owned());
        self
    }

    /// Adjusts the options (small keepalive, heartbeat or limits, for example).
    pub fn options(mut self, configure: impl FnOnce(&mut Options)) -> Self {
        configure(&mut self.config.options);
        self
    }

    /// Listens on `addr` (a port a relay used before, to restart on it) instead of port 0.
    pub fn on(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Runs the relay on a runtime of its own, so that [`TestRelay::kill`] can drop it all at
    /// once.
    pub fn killable(mut self) -> Self {
        self.killable = true;
        self
    }

    /// Starts the relay.
    ///
    /// # Panics
    ///
    /// When the relay cannot start or bind.
    pub async fn spawn(self) -> TestRelay {
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            // A dropped sender means the same as a sent stop.
            let _ = stopped.await;
        };
        let (config, addr) = (self.config, self.addr);
        if !self.killable {
            let (listener, addr, hub) = start(config, addr).await;
            let served = tokio::spawn(tidewire_relay::server::serve(
                listener,
                Arc::clone(&hub),
                shutdown,
            ));
            return TestRelay {
                addr,
                hub,
                stop: Some(stop),
                served: Some(Served::Task(served)),
            };
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("build the relay's runtime");
        let (started, on_start) = oneshot::channel();
        let (finished, done) = oneshot::channel();
        runtime.spawn(async move {
            let (listener, addr, hub) = start(config, addr).await;
            let _ = started.send((addr, Arc::clone(&hub)));
            tidewire_relay::server::serve(listener, hub, shutdown).await;
            let _ = finished.send(());
        });
        let (addr, hub) = on_start.await.expect("the relay starts");
        TestRelay {
            addr,
            hub,
            stop: Some(stop),
            served: Some(Served::Runtime { runtime, done }),
        }
    }
}

/// Binds `addr` and starts the relay's hub, on the runtime it is called on.
async fn start(config: Config, addr: SocketAddr) -> (TcpListener, SocketAddr, Arc<Hub>) {
    let listener = TcpListener::bind(addr).await.expect("bind the relay");
    let addr = listener.local_addr().expect("the relay's address");
    let hub = Hub::start(config, CancellationToken::new(), TaskTracker::new())
        .await
        .unwrap_or_else(|error| panic!("start the relay: {error:?}"));
    (listener, addr, hub)
}

impl TestRelay {
    /// A builder for a relay on `pg` with [`Config::for_tests`].
    pub fn builder(pg: &TestPg) -> TestRelayBuilder {
        TestRelayBuilder::new(Config::for_tests(&pg.url()))
    }

    /// A relay with [`Config::for_tests`] on `pg`.
    ///
    /// # Panics
    ///
    /// When the relay cannot start.
    pub async fn spawn(pg: &TestPg) -> Self {
        Self::builder(pg).spawn().await
    }

    /// A relay with [`Config::for_tests`] on `pg`, adjusted by `configure` (small keepalive,
    /// heartbeat or limits, for example).
    ///
    /// # Panics
    ///
    /// When the relay cannot start.
    pub async fn spawn_with(pg: &TestPg, configure: impl FnOnce(&mut Options)) -> Self {
        Self::builder(pg).options(configure).spawn().await
    }

    /// A relay with exactly `config` (its `listen` address is ignored: port 0 is used).
    ///
    /// # Panics
    ///
    /// When the relay cannot start.
    pub async fn spawn_config(config: Config) -> Self {
        TestRelayBuilder::new(config).spawn().await
    }

    /// The address the relay listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The relay's hub (configuration, counters, connection permits).
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// `http://ADDR{path}`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `ws://ADDR/v1/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// Shuts the relay down gracefully (clients get `shutdown` and a going-away close) and
    /// waits until every connection drained or the grace period passed.
    ///
    /// # Panics
    ///
    /// When the relay did not stop within 30 s or its serving task panicked.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            // The receiver lives in the serving task; if it ended, there is nothing to stop.
            let _ = stop.send(());
        }
        let limit = std::time::Duration::from_secs(30);
        match self.served.take() {
            Some(Served::Task(served)) => tokio::time::timeout(limit, served)
                .await
                .expect("the relay stops in time")
                .expect("the relay's serving task"),
            Some(Served::Runtime { runtime, done }) => {
                // A dropped sender means the serving task ended too.
                let _ = tokio::time::timeout(limit, done)
                    .await
                    .expect("the relay stops in time");
                runtime.shutdown_background();
            }
            None => {}
        }
        self.hub.pool.close();
        self.hub.cores.stop();
    }

    /// Drops every task and socket of a [`killable`](TestRelayBuilder::killable) relay at
    /// once: connections are reset, nothing is drained (as a crash would).
    ///
    /// # Panics
    ///
    /// When the relay was not built killable.
    pub fn kill(mut self) {
        match self.served.take() {
            Some(Served::Runtime { runtime, .. }) => {
                // Connections run on the delivery threads: their event loops go too.
                self.hub.cores.stop();
                runtime.shutdown_background();
            }
            other => panic!("bug: kill() needs TestRelay::builder(..).killable(), got {other:?}"),
        }
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // Nothing to do if the relay already stopped.
            let _ = stop.send(());
        }
        if let Some(Served::Runtime { runtime, .. }) = self.served.take() {
            self.hub.cores.stop();
            runtime.shutdown_background();
        }
    }
}
