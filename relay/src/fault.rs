//! Fault injection for tests and drills: `--crash-before-ack N` ends the relay process right
//! after the Nth write carrying a write id commits and before its answer is sent, the one
//! crash that exactly-once writes exist for. Both transports report their commits here (through
//! `session::publish::commit`).

use std::sync::atomic::{AtomicU64, Ordering};

/// The exit status of a process ended by [`CrashBeforeAck`] (no other path of the relay exits
/// with it), so a test can tell the injected crash from any other.
pub const CRASH_EXIT_CODE: i32 = 87;

/// Counts the commits of writes that carry a write id and ends the process at the configured
/// one. Inert when built with 0.
#[derive(Debug, Default)]
pub struct CrashBeforeAck {
    /// The commit to crash after (1-based); 0: never.
    after: u64,
    /// Commits counted so far (replayed answers are not commits).
    committed: AtomicU64,
}

impl CrashBeforeAck {
    /// Crashes after the `after`th commit; 0: never.
    pub fn new(after: u64) -> Self {
        Self {
            after,
            committed: AtomicU64::new(0),
        }
    }

    /// A write with a write id committed (not replayed) and its answer is about to be sent:
    /// exits the process with [`CRASH_EXIT_CODE`] if this is the configured commit.
    pub fn committed(&self, stream: &str, seq: u64) {
        if self.after == 0 {
            return;
        }
        let count = self.committed.fetch_add(1, Ordering::SeqCst) + 1;
        if count == self.after {
            tracing::error!(
                stream,
                seq,
                count,
                "--crash-before-ack: exiting after the commit, before the ack"
            );
            // The point of the flag: no destructor, no graceful shutdown, no answer. stderr is
            // unbuffered, so the line above is out.
            #[allow(clippy::exit)]
            std::process::exit(CRASH_EXIT_CODE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_never_crashes() {
        let never = CrashBeforeAck::new(0);
        for seq in 1..1000 {
            never.committed("s", seq);
        }
    }

    #[test]
    fn help_names_the_exit_code() {
        use clap::CommandFactory;
        let help = crate::config::Cli::command().render_long_help().to_string();
        assert!(help.contains(&format!("code {CRASH_EXIT_CODE}")), "{help}");
    }
}
