//! Stream patterns and the permissions built from them: exact names or prefix wildcards.
//!
//! A pattern is either a stream name (`todos`, exact match), `*` (every stream), or a prefix
//! followed by `*` (`board:42/*` matches every stream starting with `board:42/`).

use std::sync::Arc;

use tidewire_shared::{Filter, StreamName};

use super::access::Access;

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

/// One grant: a stream pattern, and optionally the filter its records must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The streams it covers.
    pub pattern: Pattern,
    /// `None`: every record; `Some`: only the records it matches.
    pub filter: Option<Arc<Filter>>,
}

impl From<Pattern> for Rule {
    fn from(pattern: Pattern) -> Self {
        Rule {
            pattern,
            filter: None,
        }
    }
}

/// What a connection may read and write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Streams (or records of them) that may be subscribed, snapshotted and replayed.
    pub read: Vec<Rule>,
    /// Streams (or records of them) that may be published to; creating or dropping a stream
    /// needs a rule without a filter.
    pub write: Vec<Rule>,
}

/// The access the rules matching `stream` give: an unfiltered rule gives every record,
/// several filtered ones the union of their filters.
fn access(rules: &[Rule], stream: &StreamName) -> Access {
    let mut filters = Vec::new();
    for rule in rules
        .iter()
        .filter(|rule| rule.pattern.matches(stream.as_str()))
    {
        match &rule.filter {
            None => return Access::All,
            Some(filter) => filters.push(Filter::clone(filter)),
        }
    }
    match Filter::any(filters) {
        None => Access::Denied,
        Some(filter) => Access::Only(Arc::new(filter)),
    }
}

impl Permissions {
    /// Everything allowed.
    pub fn open() -> Self {
        Self {
            read: vec![Pattern::Prefix(String::new()).into()],
            write: vec![Pattern::Prefix(String::new()).into()],
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
                .map(|pattern| Pattern::parse(pattern).map(Rule::from))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            read: parse_all(read)?,
            write: parse_all(write)?,
        })
    }

    /// What may be read of `stream`.
    pub fn read_access(&self, stream: &StreamName) -> Access {
        access(&self.read, stream)
    }

    /// What may be written to `stream`.
    pub fn write_access(&self, stream: &StreamName) -> Access {
        access(&self.write, stream)
    }

    /// Whether `stream` may be read at all (some or all of its records).
    pub fn can_read(&self, stream: &StreamName) -> bool {
        self.read_access(stream).allowed()
    }

    /// Whether every record of `stream` may be written: needed to create or drop it, or to
    /// write without a record check.
    pub fn can_write_all(&self, stream: &StreamName) -> bool {
        self.write_access(stream) == Access::All
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
        assert!(permissions.can_write_all(&stream("board:1/chat")));
        assert!(!permissions.can_write_all(&stream("todos")));
        assert!(Permissions::open().can_write_all(&stream("raw:x")));
    }

    #[test]
    fn bad_patterns() {
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse("a*b").is_err());
        assert!(Pattern::parse("**").is_err());
        assert_eq!(Pattern::parse(" * "), Ok(Pattern::Prefix(String::new())));
    }
}
