//! The process table of the embedded cluster's host (`/proc`) and signals: which postgres
//! processes are alive and where they run, for kill -9 recovery, stale `postmaster.pid`
//! detection and the fault controls.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::pg::Error;

/// One line of `/proc/PID/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub(crate) pid: i32,
    pub(crate) comm: String,
    pub(crate) state: char,
    pub(crate) ppid: i32,
}

/// Reads `/proc/PID/stat`; `None` when the process does not exist.
pub(crate) fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_proc_stat(&text)
}

/// `1234 (postgres) S 1 ...`; `comm` may contain spaces and parentheses, so split at the last
/// `)`.
fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text.get(..open)?.trim().parse().ok()?;
    let comm = text.get(open + 1..close)?.to_owned();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        comm,
        state,
        ppid,
    })
}

/// Whether `pid` is a running (not zombie, not dead) process. Zombies matter here: when PID 1
/// does not reap orphans (some containers), a killed postmaster lingers as a zombie, and
/// `kill(pid, 0)` still succeeds for it.
pub(crate) fn is_live(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|stat| !matches!(stat.state, 'Z' | 'X' | 'x'))
}

/// Live processes whose parent is `ppid` (the postmaster's backends and auxiliary processes).
pub(crate) fn live_children(ppid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(proc_stat)
        .filter(|stat| stat.ppid == ppid && !matches!(stat.state, 'Z' | 'X' | 'x'))
        .map(|stat| stat.pid)
        .collect()
}

/// Live `postgres` processes whose working directory is `dir`: every process of a server
/// runs in its data directory, and this still finds them after their postmaster died and
/// they were re-parented.
pub(crate) fn live_postgres_in(dir: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(proc_stat)
        .filter(|stat| stat.comm == "postgres" && !matches!(stat.state, 'Z' | 'X' | 'x'))
        .filter(|stat| cwd_of(stat.pid).is_some_and(|cwd| cwd == dir))
        .map(|stat| stat.pid)
        .collect()
}

/// The working directory of `pid` (a postmaster's is its data directory), if we may read it.
pub(crate) fn cwd_of(pid: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
}

/// Sends `signal` to `pid`. A process that is already gone is not an error.
pub(crate) fn send_signal(pid: i32, sig: Signal) -> Result<(), Error> {
    match signal::kill(Pid::from_raw(pid), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(source) => Err(Error::Signal {
            signal: sig.as_str(),
            pid,
            source,
        }),
    }
}

/// Waits until none of `pids` is live; false on timeout.
pub(crate) async fn wait_for_exit(pids: &[i32], timeout: Duration) -> bool {
    let started = Instant::now();
    while pids.iter().any(|pid| is_live(*pid)) {
        if started.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_odd_comm() {
        let stat = parse_proc_stat("42 (post gres) (x)) S 7 42 42 0").expect("parses");
        assert_eq!(
            stat,
            ProcStat {
                pid: 42,
                comm: "post gres) (x)".to_owned(),
                state: 'S',
                ppid: 7
            }
        );
        assert_eq!(parse_proc_stat("garbage"), None);
    }

    #[test]
    fn own_process_is_live() {
        assert!(is_live(std::process::id() as i32));
        assert!(!is_live(i32::MAX));
    }
}
