//! What a client does when its connection to the relay ends: the one rule both clients (the
//! native Rust client and the browser client) follow, from the close code, the HTTP status of
//! a refused request, or the error code of an answer. docs/PROTOCOL.md's close-code table is
//! checked against it by a test.

use crate::codes::CloseCode;

/// Whether and when to reconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reconnect {
    /// Reconnect after the backoff delay and resume from the stored positions.
    Resume,
    /// Reconnect after the backoff delay, but no sooner than [`LATER_MIN_MS`]: the relay is
    /// full or limited this client, and asks it to come back later (`retry-after`).
    Later,
    /// Do not reconnect with the same credentials: wait for the application to supply a new
    /// token (the token was refused, has expired, or does not grant the stream).
    NewToken,
    /// Do not reconnect: the relay will refuse this client whatever it sends (a disallowed
    /// Origin, a policy violation).
    Never,
}

impl Reconnect {
    /// The word PROTOCOL.md's tables use: `resume`, `later`, `new token`, `never`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reconnect::Resume => "resume",
            Reconnect::Later => "later",
            Reconnect::NewToken => "new token",
            Reconnect::Never => "never",
        }
    }
}

/// Shortest wait before a [`Reconnect::Later`] reconnect, in milliseconds (the relay's
/// `retry-after: 1`).
pub const LATER_MIN_MS: u64 = 1000;

/// How a connection (or an attempt to open one) ended, as a client observes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Closed<'a> {
    /// The WebSocket close code, or the `code` of an SSE `close` event.
    pub close_code: Option<u16>,
    /// The HTTP status of a refused upgrade or SSE request.
    pub http_status: Option<u16>,
    /// The `code` of the JSON error body that came with a refusal.
    pub error_code: Option<&'a str>,
    /// Whether the connection had opened (a lost connection) or not (a failed attempt).
    pub opened: bool,
}

/// The verdict on an ending: what to do, and the stable name applications see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    /// Whether and when to reconnect.
    pub reconnect: Reconnect,
    /// The name shown to applications (`status.code` in the npm package, the reason of the
    /// native client's errors): `unauthorized`, `token_expired`, `connection_lost`, ...
    pub name: &'static str,
}

impl CloseCode {
    /// What a client does after the relay closed with this code.
    pub fn reconnect(self) -> Reconnect {
        match self {
            CloseCode::Unauthorized | CloseCode::Forbidden | CloseCode::TokenExpired => {
                Reconnect::NewToken
            }
            CloseCode::PolicyViolation => Reconnect::Never,
            CloseCode::RateLimited | CloseCode::Overloaded => Reconnect::Later,
            CloseCode::Normal
            | CloseCode::GoingAway
            | CloseCode::ProtocolError
            | CloseCode::InvalidData
            | CloseCode::TooBig
            | CloseCode::InternalError
            | CloseCode::Slow
            | CloseCode::KeepaliveTimeout => Reconnect::Resume,
        }
    }

    /// The name applications see for a close with this code.
    pub fn ending_name(self) -> &'static str {
        match self {
            CloseCode::Normal => "closed",
            CloseCode::GoingAway => "going_away",
            CloseCode::ProtocolError => "protocol_error",
            CloseCode::InvalidData => "invalid_data",
            CloseCode::PolicyViolation => "policy_violation",
            CloseCode::TooBig => "too_large",
            CloseCode::InternalError => "internal_error",
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::Forbidden => "forbidden",
            CloseCode::TokenExpired => "token_expired",
            CloseCode::Slow => "slow",
            CloseCode::KeepaliveTimeout => "keepalive_timeout",
            CloseCode::RateLimited => "rate_limited",
            CloseCode::Overloaded => "unavailable",
        }
    }
}

/// Decides what to do after `closed`. The error code of an answer wins over the HTTP status,
/// which wins over the close code; an unknown close code or status is a lost connection.
///
/// # Examples
///
/// ```
/// use tidewire_shared::ending::{ending, Closed, Reconnect};
/// let expired = ending(&Closed { close_code: Some(4004), opened: true, ..Closed::default() });
/// assert_eq!((expired.reconnect, expired.name), (Reconnect::NewToken, "token_expired"));
/// let lost = ending(&Closed { close_code: Some(1006), opened: true, ..Closed::default() });
/// assert_eq!((lost.reconnect, lost.name), (Reconnect::Resume, "connection_lost"));
/// ```
pub fn ending(closed: &Closed<'_>) -> Ending {
    let by_code = |name: &'static str, reconnect| Ending { reconnect, name };
    match closed.error_code {
        Some("unauthorized") => return by_code("unauthorized", Reconnect::NewToken),
        Some("forbidden") => return by_code("forbidden", Reconnect::NewToken),
        Some("overloaded" | "unavailable") => return by_code("unavailable", Reconnect::Later),
        Some("rate_limited") => return by_code("rate_limited", Reconnect::Later),
        _ => {}
    }
    match closed.http_status {
        Some(401) => return by_code("unauthorized", Reconnect::NewToken),
        Some(403) => return by_code("forbidden", Reconnect::NewToken),
        Some(429) => return by_code("rate_limited", Reconnect::Later),
        Some(503) => return by_code("unavailable", Reconnect::Later),
        Some(_) => return by_code("http_error", Reconnect::Resume),
        None => {}
    }
    if let Some(known) = closed.close_code.and_then(CloseCode::from_code) {
        return by_code(known.ending_name(), known.reconnect());
    }
    if closed.opened {
        by_code("connection_lost", Reconnect::Resume)
    } else {
        by_code("connect_failed", Reconnect::Resume)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::ALL_CLOSE_CODES;

    fn close(code: u16) -> Ending {
        ending(&Closed {
            close_code: Some(code),
            opened: true,
            ..Closed::default()
        })
    }

    #[test]
    fn credentials_problems_wait_for_a_new_token() {
        for code in [4001, 4003, 4004] {
            assert_eq!(close(code).reconnect, Reconnect::NewToken, "{code}");
        }
        for status in [401, 403] {
            let refused = ending(&Closed {
                http_status: Some(status),
                ..Closed::default()
            });
            assert_eq!(refused.reconnect, Reconnect::NewToken, "{status}");
        }
        assert_eq!(close(4004).name, "token_expired");
    }

    #[test]
    fn policy_violations_are_final_and_limits_come_back_later() {
        assert_eq!(close(1008).reconnect, Reconnect::Never);
        assert_eq!(close(4029).reconnect, Reconnect::Later);
        assert_eq!(close(4503).reconnect, Reconnect::Later);
        let full = ending(&Closed {
            http_status: Some(503),
            error_code: Some("overloaded"),
            ..Closed::default()
        });
        assert_eq!(
            (full.reconnect, full.name),
            (Reconnect::Later, "unavailable")
        );
    }

    #[test]
    fn everything_else_resumes() {
        for code in [1000, 1001, 1002, 1007, 1009, 1011, 4008, 4009, 1006, 4999] {
            assert_eq!(close(code).reconnect, Reconnect::Resume, "{code}");
        }
        let never_opened = ending(&Closed::default());
        assert_eq!(never_opened.name, "connect_failed");
    }

    /// docs/PROTOCOL.md's close-code table says what this module does, row for row.
    #[test]
    fn the_protocol_table_matches_the_rule() {
        let protocol = include_str!("../../docs/PROTOCOL.md");
        let section = protocol
            .split("### Close codes")
            .nth(1)
            .expect("PROTOCOL.md has a close-code section");
        let rows: Vec<Vec<&str>> = section
            .lines()
            .skip_while(|line| !line.starts_with("| code"))
            .skip(2)
            .take_while(|line| line.starts_with('|'))
            .map(|line| line.split('|').map(str::trim).collect())
            .collect();
        assert_eq!(rows.len(), ALL_CLOSE_CODES.len(), "one row per close code");
        for row in rows {
            let code: u16 = row[1].parse().expect("a close code");
            let known = CloseCode::from_code(code).expect("a close code the relay knows");
            assert_eq!(row[3], known.reconnect().as_str(), "close code {code}");
            assert_eq!(
                row[4],
                format!("`{}`", known.ending_name()),
                "close code {code}"
            );
            assert_eq!(close(code).name, known.ending_name());
        }
    }

    #[test]
    fn every_close_code_has_a_distinct_name() {
        let mut names: Vec<&str> = ALL_CLOSE_CODES
            .iter()
            .map(|code| code.ending_name())
            .collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL_CLOSE_CODES.len());
    }
}
