//! [`TestRelay`]: a real relay for one test, serving on `127.0.0.1:0` against a [`TestPg`]
//! cluster, with a handle to shut it down gracefully (as SIGTERM would).

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

/// A running relay. Dropping it starts a graceful shutdown in the background;
/// [`TestRelay::shutdown`] waits for it.
#[derive(Debug)]
pub struct TestRelay {
    addr: SocketAddr,
    hub: Arc<Hub>,
    /// Completing this ends `server::serve`'s accept loop (the shutdown future).
    stop: Option<oneshot::Sender<()>>,
    /// The task running `server::serve`; it ends once connections drained.
    served: Option<JoinHandle<()>>,
}

impl TestRelay {
    /// A relay with [`Config::for_tests`] on `pg`.
    ///
    /// # Panics
    ///
    /// When the relay cannot start.
    pub async fn spawn(pg: &TestPg) -> Self {
        Self::spawn_with(pg, |_| {}).await
    }

    /// A relay with [`Config::for_tests`] on `pg`, adjusted by `configure` (small keepalive,
    /// heartbeat or limits, for example).
    ///
    /// # Panics
    ///
    /// When the relay cannot start.
    pub async fn spawn_with(pg: &TestPg, configure: impl FnOnce(&mut Options)) -> Self {
        let mut config = Config::for_tests(&pg.url());
        configure(&mut config.options);
        Self::spawn_config(config).await
    }

    /// A relay with exactly `config` (its `listen` address is ignored: port 0 is used).
    ///
    /// # Panics
    ///
    /// When the relay cannot start.
    pub async fn spawn_config(config: Config) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the relay to 127.0.0.1:0");
        let addr = listener.local_addr().expect("the relay's address");
        let hub = Hub::start(config, CancellationToken::new(), TaskTracker::new())
            .await
            .unwrap_or_else(|error| panic!("start the relay: {error:?}"));
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            // A dropped sender means the same as a sent stop.
            let _ = stopped.await;
        };
        let served = tokio::spawn(tidewire_relay::server::serve(
            listener,
            Arc::clone(&hub),
            shutdown,
        ));
        Self {
            addr,
            hub,
            stop: Some(stop),
            served: Some(served),
        }
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
    /// When the serving task panicked.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            // The receiver lives in the serving task; if it ended, there is nothing to stop.
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            served.await.expect("the relay's serving task");
        }
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // Nothing to do if the relay already stopped.
            let _ = stop.send(());
        }
    }
}
