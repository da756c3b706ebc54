//! Stragglers: the clients still behind a head when a run ends, each named with what it last
//! heard (its relay connection id, the last message and how long ago), so that one can be
//! found in the relay's log and a dead connection told from a session that went quiet.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

use super::client::ClientOutcome;

/// Stragglers named in a report; the rest are only counted.
pub const MAX_NAMED: usize = 10;

/// One client stream behind its head at the end of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Straggler {
    /// The client's index.
    pub client: usize,
    /// The stream.
    pub stream: String,
    /// The last seq the client applied.
    pub applied: u64,
    /// The stream's head.
    pub head: u64,
    /// Connections the client made.
    pub connects: u64,
    /// `lagged` advisories it received on the stream.
    pub lagged: u64,
    /// The relay's name for its last connection (`relay=.. connection=..`).
    pub connection: Option<String>,
    /// The last message (type and advisory kind).
    pub last_message: Option<String>,
    /// Seconds since that message.
    pub last_message_ago_s: Option<f64>,
    /// Seconds since the last sign of life (messages, pings, SSE heartbeats).
    pub alive_ago_s: Option<f64>,
}

/// The first [`MAX_NAMED`] client streams behind their heads.
pub fn find(outcomes: &[ClientOutcome], heads: &HashMap<String, u64>) -> Vec<Straggler> {
    let now = Instant::now();
    let ago = |at: Option<Instant>| at.map(|at| now.duration_since(at).as_secs_f64());
    outcomes
        .iter()
        .flat_map(|outcome| {
            outcome.tracks.iter().filter_map(move |(stream, track)| {
                let head = heads.get(stream).copied().unwrap_or(0);
                (track.applied() < head).then(|| Straggler {
                    client: outcome.id,
                    stream: stream.clone(),
                    applied: track.applied(),
                    head,
                    connects: outcome.connects,
                    lagged: track.counts().lagged,
                    connection: outcome.last_heard.connection.clone(),
                    last_message: outcome.last_heard.message.clone(),
                    last_message_ago_s: ago(outcome.last_heard.message_at),
                    alive_ago_s: ago(outcome.last_heard.alive_at),
                })
            })
        })
        .take(MAX_NAMED)
        .collect()
}

/// One line per straggler, for the human report.
pub fn render(stragglers: &[Straggler]) -> String {
    let seconds = |value: Option<f64>| value.map_or("never".into(), |s| format!("{s:.1} s ago"));
    stragglers
        .iter()
        .map(|straggler| {
            format!(
                "straggler: client {} {} at {} of {} ({} connects, {} lagged), {}; last message {} {}, alive {}\n",
                straggler.client,
                straggler.stream,
                straggler.applied,
                straggler.head,
                straggler.connects,
                straggler.lagged,
                straggler.connection.as_deref().unwrap_or("no connect advisory"),
                straggler.last_message.as_deref().unwrap_or("none"),
                seconds(straggler.last_message_ago_s),
                seconds(straggler.alive_ago_s),
            )
        })
        .collect()
}
