//! Delivery threads: `--delivery-threads` threads, each with an event loop of its own, that
//! serve the client connections. Each accepted connection stays on one of them (taken in
//! turn), and the bus hands each delivery once to each thread ([`crate::bus::shard`]), so a
//! connection's offers, wake-ups and writes stay on one core.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::bus::Bus;

/// The running delivery threads (none: connections run on the runtime that accepts them).
#[derive(Debug, Default)]
pub struct Cores {
    threads: Vec<Core>,
    /// The next thread to take a connection.
    next: AtomicUsize,
}

#[derive(Debug)]
struct Core {
    handle: Handle,
    /// Taken to stop the thread's event loop; its tasks are dropped with it.
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

impl Cores {
    /// Starts one thread for each of `bus`'s inboxes, each running its inbox.
    ///
    /// # Errors
    ///
    /// When a thread or its event loop cannot be started.
    pub fn start(bus: &Arc<Bus>) -> std::io::Result<Self> {
        let mut threads = Vec::new();
        for inbox in bus.take_inboxes() {
            let index = inbox.index();
            let bus = Arc::clone(bus);
            let (stop, stopped) = oneshot::channel::<()>();
            let (started, handle) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name(format!("tidewire-delivery-{index}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(error) => {
                            let _ = started.send(Err(error));
                            return;
                        }
                    };
                    crate::bus::shard::enter(index);
                    let _ = started.send(Ok(runtime.handle().clone()));
                    runtime.spawn(inbox.run(bus));
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            let handle = handle
                .recv()
                .map_err(|_| std::io::Error::other("a delivery thread ended at start"))??;
            threads.push(Core {
                handle,
                stop: Mutex::new(Some(stop)),
            });
        }
        Ok(Self {
            threads,
            next: AtomicUsize::new(0),
        })
    }

    /// The event loop of the thread that takes the next connection, or `None` without
    /// delivery threads.
    pub fn next(&self) -> Option<&Handle> {
        if self.threads.is_empty() {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.threads.len();
        self.threads.get(turn).map(|core| &core.handle)
    }

    /// Stops every thread; what still runs on them is dropped.
    pub fn stop(&self) {
        for core in &self.threads {
            let stop = core
                .stop
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(stop) = stop {
                let _ = stop.send(());
            }
        }
    }
}

impl Drop for Cores {
    fn drop(&mut self) {
        self.stop();
    }
}
