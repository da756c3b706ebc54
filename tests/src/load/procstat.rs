//! CPU time and resident memory of a process from `/proc/<pid>/stat` and `/proc/<pid>/status`:
//! how the benchmarks measure the relay's CPU and RSS from outside it.

use std::time::Instant;

/// Clock ticks per second of `/proc/<pid>/stat` times (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    /// When it was read.
    pub at: Instant,
    /// User + system CPU seconds since the process started (children not included).
    pub cpu_seconds: f64,
    /// Resident set size in KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: u64,
}

/// Reads `pid` (`"self"` works too); `None` if the process is gone.
pub fn sample(pid: &str) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: fields start after `) `.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count() as u64)
        .unwrap_or(0);
    Some(ProcSample {
        at: Instant::now(),
        cpu_seconds: (utime + stime) / TICKS_PER_SECOND,
        rss_kib,
        fds,
    })
}

/// CPU use between two samples of one process, in cores (1.0 = one core busy).
pub fn cpu_cores(from: &ProcSample, to: &ProcSample) -> f64 {
    let wall = to.at.duration_since(from.at).as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    (to.cpu_seconds - from.cpu_seconds) / wall
}

/// Sums CPU seconds and RSS of several processes (missing ones count as zero).
pub fn sample_all(pids: &[u32]) -> ProcSample {
    let mut total = ProcSample {
        at: Instant::now(),
        cpu_seconds: 0.0,
        rss_kib: 0,
        fds: 0,
    };
    for pid in pids {
        if let Some(one) = sample(&pid.to_string()) {
            total.cpu_seconds += one.cpu_seconds;
            total.rss_kib += one.rss_kib;
            total.fds += one.fds;
        }
    }
    total
}

/// Every process whose parent is `pid` (for example a postmaster's backends), from /proc.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|candidate| {
            std::fs::read_to_string(format!("/proc/{candidate}/stat"))
                .ok()
                .and_then(|stat| {
                    let after = stat[stat.rfind(')')? + 2..].to_owned();
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let first = sample("self").expect("/proc/self is readable");
        let mut spin = 0u64;
        for step in 0..3_000_000u64 {
            spin = spin.wrapping_add(step * step);
        }
        assert!(spin > 0);
        let second = sample("self").expect("/proc/self is readable");
        assert!(first.rss_kib > 0);
        assert!(second.cpu_seconds >= first.cpu_seconds);
        assert!(first.fds > 0);
        assert!(sample("999999999").is_none());
    }
}
