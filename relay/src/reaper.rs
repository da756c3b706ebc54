//! The reaper: one thread that drops what dead connections leave behind (a session with its
//! full queue, a reset socket), so that tearing many down at once does not stall the runtime's
//! workers and the live connections queued behind them.
//!
//! Why: 1,000 consumers that stopped reading at the same moment hit the slow-consumer deadline
//! at the same moment. Each teardown releases a queue of up to `--queue-capacity` shared
//! deliveries (atomic decrements on cache lines every other teardown touches too) and resets
//! a socket (the kernel frees its unsent bytes inside `close`). Done on the workers, the
//! healthy clients' tasks waited behind 1,000 of them; measured on 2 cores, their p99 in that
//! second went from about 3 ms to 60-140 ms (docs/BENCHMARKS.md, section 3). On a thread of
//! its own the work is scheduled by the kernel beside the workers instead of in front of them.

use std::sync::mpsc;

/// Something to drop later.
type Remains = Box<dyn Send>;

/// A handle to the reaper thread; cheap to clone. The thread ends when every handle is gone.
#[derive(Debug, Clone, Default)]
pub struct Reaper {
    /// `None`: drop in place (no thread; tests and tools).
    sender: Option<mpsc::Sender<Remains>>,
}

impl Reaper {
    /// Starts the reaper thread. Dropping a session can spawn a task (a presence leave), so
    /// the thread runs inside the current tokio runtime's context.
    ///
    /// # Errors
    ///
    /// When the thread cannot be started.
    pub fn spawn() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok();
        let (sender, receiver) = mpsc::channel::<Remains>();
        std::thread::Builder::new()
            .name("tidewire-reaper".into())
            .spawn(move || {
                let _context = runtime.as_ref().map(tokio::runtime::Handle::enter);
                for remains in receiver {
                    drop(remains);
                }
            })?;
        Ok(Self {
            sender: Some(sender),
        })
    }

    /// Drops `value` on the reaper thread (in place if there is none or it is gone).
    pub fn bury<T: Send + 'static>(&self, value: T) {
        match &self.sender {
            Some(sender) => {
                if let Err(mpsc::SendError(value)) = sender.send(Box::new(value)) {
                    drop(value);
                }
            }
            None => drop(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::thread::ThreadId;
    use std::time::{Duration, Instant};

    use super::*;

    /// Records the thread that drops it.
    struct Witness(Arc<std::sync::Mutex<Option<ThreadId>>>, Arc<AtomicBool>);

    impl Drop for Witness {
        fn drop(&mut self) {
            if let Ok(mut thread) = self.0.lock() {
                *thread = Some(std::thread::current().id());
            }
            self.1.store(true, Ordering::Release);
        }
    }

    fn witness() -> (
        Witness,
        Arc<std::sync::Mutex<Option<ThreadId>>>,
        Arc<AtomicBool>,
    ) {
        let thread = Arc::new(std::sync::Mutex::new(None));
        let dropped = Arc::new(AtomicBool::new(false));
        (
            Witness(Arc::clone(&thread), Arc::clone(&dropped)),
            thread,
            dropped,
        )
    }

    #[tokio::test]
    async fn remains_are_dropped_on_the_reaper_thread() {
        let reaper = Reaper::spawn().expect("thread");
        let (value, thread, dropped) = witness();
        reaper.bury(value);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !dropped.load(Ordering::Acquire) {
            assert!(Instant::now() < deadline, "never dropped");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let dropped_on = thread.lock().expect("lock").expect("recorded");
        assert_ne!(dropped_on, std::thread::current().id());
    }

    #[test]
    fn without_a_thread_remains_are_dropped_in_place() {
        let (value, thread, dropped) = witness();
        Reaper::default().bury(value);
        assert!(dropped.load(Ordering::Acquire));
        assert_eq!(
            thread.lock().expect("lock").expect("recorded"),
            std::thread::current().id()
        );
    }
}
