//! Stream patterns and the permissions built from them: exact names or prefix wildcards.
//!
//! A pattern is either a stream name (`todos`, exact match), `*` (every stream), or a prefix
//! followed by `*` (`board:42/*` matches every stream starting with `board:42/`).

use tidewire_shared::StreamName;

/// One read or write pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// Matches exactly this name.
    Exact(String),
    /// Matches every name starting with this prefix (`*` alone is the empty prefix).
    Prefix(String),
}

impl Pattern {
    /// Parses a pattern. Whitespace around it is ignored.
    ///
    /// # Errors
    ///
    /// A message if the pattern is empty or has a `*` anywhere but at the end.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("empty stream pattern".into());
        }
        match text.strip_suffix('*') {
            Some(prefix) if !prefix.contains('*') => Ok(Pattern::Prefix(prefix.to_owned())),
            Some(_) => Err(format!("`*` may only end a stream pattern: {text:?}")),
            None if text.contains('*') => {
                Err(format!("`*` may only end a stream pattern: {text:?}"))
            }
            None => Ok(Pattern::Exact(text.to_owned())),
        }
    }

    /// Whether `stream` matches.
    pub fn matches(&self, stream: &str) -> bool {
        match self {
            Pattern::Exact(name) => name == stream,
            Pattern::Prefix(prefix) => stream.starts_with(prefix.as_str()),
        }
    }
}

/// What a connection may read and write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Streams that may be subscribed, snapshotted and replayed.
    pub read: Vec<Pattern>,
    /// Streams that may be published to (and created or dropped).
    pub write: Vec<Pattern>,
}

impl Permissions {
    /// Everything allowed.
    pub fn open() -> Self {
        Self {
            read: vec![Pattern::Prefix(String::new())],
            write: vec![Pattern::Prefix(String::new())],
        }
    }

    /// Parses lists of read and write patterns.
    ///
    /// # Errors
    ///
    /// The first pattern that does not parse.
    pub fn parse(read: &[String], write: &[String]) -> Result<Self, String> {
        let parse_all = |patterns: &[String]| {
            patterns
                .iter()
                .filter(|pattern| !pattern.trim().is_empty())
                .map(|pattern| Pattern::parse(pattern))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            read: parse_all(read)?,
            write: parse_all(write)?,
        })
    }

    /// Whether `stream` may be read.
    pub fn can_read(&self, stream: &StreamName) -> bool {
        self.read
            .iter()
            .any(|pattern| pattern.matches(stream.as_str()))
    }

    /// Whether `stream` may be written.
    pub fn can_write(&self, stream: &StreamName) -> bool {
        self.write
            .iter()
            .any(|pattern| pattern.matches(stream.as_str()))
    }

    /// The union of two permission sets (a token's grants plus the anonymous ones).
    #[must_use]
    pub fn union(mut self, other: &Permissions) -> Self {
        self.read.extend(other.read.iter().cloned());
        self.write.extend(other.write.iter().cloned());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(name: &str) -> StreamName {
        StreamName::new(name).expect("valid")
    }

    #[test]
    fn exact_and_prefix() {
        let permissions = Permissions::parse(
            &["todos".into(), "board:1/*".into()],
            &["board:1/chat".into()],
        )
        .expect("valid");
        assert!(permissions.can_read(&stream("todos")));
        assert!(!permissions.can_read(&stream("todos2")));
        assert!(permissions.can_read(&stream("board:1/x")));
        assert!(!permissions.can_read(&stream("board:10/x")));
        assert!(permissions.can_write(&stream("board:1/chat")));
        assert!(!permissions.can_write(&stream("todos")));
        assert!(Permissions::open().can_write(&stream("raw:x")));
    }

    #[test]
    fn bad_patterns() {
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse("a*b").is_err());
        assert!(Pattern::parse("**").is_err());
        assert_eq!(Pattern::parse(" * "), Ok(Pattern::Prefix(String::new())));
    }
}
