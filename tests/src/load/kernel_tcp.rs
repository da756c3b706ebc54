//! The kernel's TCP trouble counters over a run (`/proc/net/netstat`, `/proc/net/snmp`):
//! memory pressure, segments dropped for lack of receive memory, retransmissions and
//! retransmission timeouts. Clients and relay share this host's TCP memory, so a benchmark
//! that buffers too much ends in kernel drops and backoff that look like a stuck relay; every
//! report says whether that happened.

use std::collections::HashMap;

use serde::Serialize;

/// Counters at one moment (host-wide, since boot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KernelTcp {
    /// Times TCP entered memory pressure (`TcpExt: TCPMemoryPressures`).
    pub memory_pressures: u64,
    /// Segments dropped because the receive queue had no memory (`TcpExt: TCPRcvQDrop`).
    pub receive_queue_drops: u64,
    /// Connections aborted for lack of memory (`TcpExt: TCPAbortOnMemory`).
    pub aborts_on_memory: u64,
    /// Retransmitted segments (`Tcp: RetransSegs`).
    pub retransmits: u64,
    /// Retransmission timeouts (`TcpExt: TCPTimeouts`).
    pub timeouts: u64,
}

impl KernelTcp {
    /// Reads the counters now; `None` where `/proc/net` is not readable.
    pub fn sample() -> Option<Self> {
        let netstat = table(
            &std::fs::read_to_string("/proc/net/netstat").ok()?,
            "TcpExt:",
        );
        let snmp = table(&std::fs::read_to_string("/proc/net/snmp").ok()?, "Tcp:");
        let get = |map: &HashMap<String, u64>, name: &str| map.get(name).copied().unwrap_or(0);
        Some(Self {
            memory_pressures: get(&netstat, "TCPMemoryPressures"),
            receive_queue_drops: get(&netstat, "TCPRcvQDrop"),
            aborts_on_memory: get(&netstat, "TCPAbortOnMemory"),
            retransmits: get(&snmp, "RetransSegs"),
            timeouts: get(&netstat, "TCPTimeouts"),
        })
    }

    /// What happened between `before` and `self`.
    pub fn since(&self, before: &Self) -> Self {
        Self {
            memory_pressures: self
                .memory_pressures
                .saturating_sub(before.memory_pressures),
            receive_queue_drops: self
                .receive_queue_drops
                .saturating_sub(before.receive_queue_drops),
            aborts_on_memory: self
                .aborts_on_memory
                .saturating_sub(before.aborts_on_memory),
            retransmits: self.retransmits.saturating_sub(before.retransmits),
            timeouts: self.timeouts.saturating_sub(before.timeouts),
        }
    }

    /// True if the kernel dropped or aborted anything for lack of memory.
    pub fn starved(&self) -> bool {
        self.memory_pressures > 0 || self.receive_queue_drops > 0 || self.aborts_on_memory > 0
    }
}

/// The `name value` pairs of the two-line table starting with `prefix` (a header line of
/// names, then a line of values).
fn table(text: &str, prefix: &str) -> HashMap<String, u64> {
    let mut lines = text.lines().filter(|line| line.starts_with(prefix));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return HashMap::new();
    };
    names
        .split_whitespace()
        .skip(1)
        .zip(values.split_whitespace().skip(1))
        .filter_map(|(name, value)| Some((name.to_owned(), value.parse().ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pair_names_with_values() {
        let text = "TcpExt: A TCPRcvQDrop B\nTcpExt: 1 42 3\nIpExt: X\nIpExt: 9\n";
        let map = table(text, "TcpExt:");
        assert_eq!(map.get("TCPRcvQDrop"), Some(&42));
        assert_eq!(map.get("X"), None);
        let later = KernelTcp {
            receive_queue_drops: 50,
            ..KernelTcp::default()
        };
        let before = KernelTcp {
            receive_queue_drops: 42,
            ..KernelTcp::default()
        };
        assert_eq!(later.since(&before).receive_queue_drops, 8);
        assert!(later.since(&before).starved());
        assert!(!before.since(&before).starved());
    }
}
