//! What an authenticated (or anonymous) connection is allowed to do, and for how long.

use super::Permissions;

/// The result of authenticating a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Streams it may read and write (the token's patterns plus the anonymous ones).
    pub permissions: Permissions,
    /// When the grant ends, in seconds since the Unix epoch (the token's `exp`); `None` for
    /// anonymous access.
    pub expires_at: Option<u64>,
    /// The token's `sub`, for logs and presence (never the token itself).
    pub subject: Option<String>,
}

impl Grant {
    /// The grant of a connection without a token.
    pub fn anonymous(permissions: Permissions) -> Self {
        Self {
            permissions,
            expires_at: None,
            subject: None,
        }
    }
}
