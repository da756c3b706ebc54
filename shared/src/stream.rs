//! Stream names: the validated identifier of a durable stream or a raw `pg_notify` channel.
//!
//! # The rule
//!
//! A stream name is 1 to 60 bytes of ASCII from `[A-Za-z0-9_.:/-]`, starting with
//! `[A-Za-z0-9_]`. Names are case-sensitive. Names that begin with `raw:` address a raw
//! PostgreSQL channel (the part after the prefix, which may not be empty and may not start
//! with the reserved `tw:`); every other name is a durable stream.
//!
//! # Mapping to PostgreSQL channels
//!
//! A durable stream `todos` is notified on the channel `tw:todos`; the raw name `raw:orders`
//! listens on the channel `orders`. Both forms are at most 63 bytes, the length at which
//! PostgreSQL truncates identifiers, so no channel is ever truncated; durable channels always
//! start with `tw:` and raw channels never do. Hence the mapping is injective: two distinct
//! valid names can never share a channel.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::NameError;

/// Longest stream name in bytes. `tw:` plus 60 bytes is exactly PostgreSQL's 63-byte
/// identifier limit.
pub const MAX_STREAM_NAME_LEN: usize = 60;

/// Prefix of names that address raw `pg_notify` channels.
pub const RAW_PREFIX: &str = "raw:";

/// Prefix of the PostgreSQL channel of every durable stream.
pub const DURABLE_CHANNEL_PREFIX: &str = "tw:";

/// What a stream name addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// A durable stream: stored in the outbox, gap-free, replayable.
    Durable,
    /// A raw `pg_notify` channel: live only; loss is signalled with `gap`.
    Raw,
}

/// A validated stream name. Cheap to clone (shared string).
///
/// # Examples
///
/// ```
/// use tidewire_shared::{StreamKind, StreamName};
/// let todos = StreamName::new("board:42/todos")?;
/// assert_eq!(todos.kind(), StreamKind::Durable);
/// assert_eq!(todos.pg_channel(), "tw:board:42/todos");
///
/// let raw = StreamName::new("raw:orders_changed")?;
/// assert_eq!(raw.kind(), StreamKind::Raw);
/// assert_eq!(raw.pg_channel(), "orders_changed");
///
/// assert!(StreamName::new("bad name").is_err());
/// assert!(StreamName::new("raw:tw:todos").is_err());
/// # Ok::<(), tidewire_shared::NameError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamName(Arc<str>);

impl StreamName {
    /// Validates `name` against the rule in the module docs.
    ///
    /// # Errors
    ///
    /// A [`NameError`] saying which part of the rule failed.
    pub fn new(name: &str) -> Result<Self, NameError> {
        validate(name)?;
        Ok(Self(Arc::from(name)))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a shared string (no copy).
    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }

    /// Whether this is a durable stream or a raw channel.
    pub fn kind(&self) -> StreamKind {
        if self.0.starts_with(RAW_PREFIX) {
            StreamKind::Raw
        } else {
            StreamKind::Durable
        }
    }

    /// The PostgreSQL channel this name is notified on (at most 63 bytes, never truncated).
    pub fn pg_channel(&self) -> String {
        match self.kind() {
            StreamKind::Raw => self.0[RAW_PREFIX.len()..].to_owned(),
            StreamKind::Durable => format!("{DURABLE_CHANNEL_PREFIX}{}", self.0),
        }
    }

    /// The inverse of [`StreamName::pg_channel`]: which stream a notification channel belongs to.
    ///
    /// # Errors
    ///
    /// A [`NameError`] if no valid name maps to `channel`.
    pub fn from_pg_channel(channel: &str) -> Result<Self, NameError> {
        match channel.strip_prefix(DURABLE_CHANNEL_PREFIX) {
            Some(durable) if !durable.starts_with(RAW_PREFIX) => Self::new(durable),
            Some(_) => Err(NameError::ReservedChannel),
            None => Self::new(&format!("{RAW_PREFIX}{channel}")),
        }
    }
}

fn validate(name: &str) -> Result<(), NameError> {
    let bytes = name.as_bytes();
    let Some(&first) = bytes.first() else {
        return Err(NameError::Empty);
    };
    if bytes.len() > MAX_STREAM_NAME_LEN {
        return Err(NameError::TooLong(bytes.len()));
    }
    if let Some(position) = bytes.iter().position(|byte| !allowed(*byte)) {
        return Err(NameError::BadCharacter(position));
    }
    if !(first.is_ascii_alphanumeric() || first == b'_') {
        return Err(NameError::BadStart);
    }
    if let Some(channel) = name.strip_prefix(RAW_PREFIX) {
        if channel.is_empty() {
            return Err(NameError::EmptyChannel);
        }
        if channel.starts_with(DURABLE_CHANNEL_PREFIX) {
            return Err(NameError::ReservedChannel);
        }
    }
    Ok(())
}

fn allowed(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b':' | b'/' | b'-')
}

impl TryFrom<String> for StreamName {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        validate(&value)?;
        Ok(Self(Arc::from(value)))
    }
}

impl std::str::FromStr for StreamName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl From<StreamName> for String {
    fn from(value: StreamName) -> Self {
        value.0.to_string()
    }
}

impl AsRef<str> for StreamName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for StreamName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamName({:?})", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_names() {
        let long = "a".repeat(61);
        let cases: &[(&str, NameError)] = &[
            ("", NameError::Empty),
            (&long, NameError::TooLong(61)),
            ("a b", NameError::BadCharacter(1)),
            ("a\"b", NameError::BadCharacter(1)),
            ("a'b", NameError::BadCharacter(1)),
            ("a\nb", NameError::BadCharacter(1)),
            ("a\0b", NameError::BadCharacter(1)),
            ("\";drop", NameError::BadCharacter(0)),
            ("tödo", NameError::BadCharacter(1)),
            ("-abc", NameError::BadStart),
            ("/abc", NameError::BadStart),
            ("raw:", NameError::EmptyChannel),
            ("raw:tw:x", NameError::ReservedChannel),
        ];
        for (name, expected) in cases {
            assert_eq!(
                StreamName::new(name).err().as_ref(),
                Some(expected),
                "{name:?}"
            );
        }
    }

    #[test]
    fn long_names_never_alias() {
        let prefix = "a".repeat(59);
        let one = StreamName::new(&format!("{prefix}1")).expect("valid");
        let two = StreamName::new(&format!("{prefix}2")).expect("valid");
        assert_ne!(one.pg_channel(), two.pg_channel());
        assert!(one.pg_channel().len() <= 63);
        assert!(StreamName::new(&format!("{prefix}12")).is_err());
    }

    #[test]
    fn channel_round_trip() {
        for name in ["todos", "raw:orders", "a.b:c/d-e_f", "raw:x", "tw"] {
            let stream = StreamName::new(name).expect("valid");
            let back = StreamName::from_pg_channel(&stream.pg_channel()).expect("maps back");
            assert_eq!(stream, back);
        }
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<StreamName>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<StreamName>("\"not ok\"").is_err());
    }
}
