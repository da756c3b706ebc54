//! What a grant allows on one stream: nothing, every record, or the records a filter matches.
//! The one place a client's `where` meets the grant's: the grant's filter is ANDed in, so a
//! client can narrow its view but never widen it.

use std::sync::Arc;

use tidewire_shared::Filter;

/// No rule of the grant covers the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no access to the stream")]
pub struct Denied;

/// Access to one stream, from [`Permissions::read_access`](super::Permissions::read_access)
/// or [`Permissions::write_access`](super::Permissions::write_access).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No rule covers the stream.
    Denied,
    /// A rule without a filter covers it: every record.
    All,
    /// Only filtered rules cover it: the records this filter (their union) matches.
    Only(Arc<Filter>),
}

impl Access {
    /// Whether anything is allowed.
    pub fn allowed(&self) -> bool {
        !matches!(self, Access::Denied)
    }

    /// The filter a subscription or read runs with, given the one the client asked for:
    /// `Ok(None)` for every record, `Ok(Some(filter))` for a view.
    ///
    /// # Errors
    ///
    /// [`Denied`] when no rule covers the stream.
    pub fn view(&self, asked: Option<Filter>) -> Result<Option<Arc<Filter>>, Denied> {
        match (self, asked) {
            (Access::Denied, _) => Err(Denied),
            (Access::All, asked) => Ok(asked.map(Arc::new)),
            (Access::Only(granted), None) => Ok(Some(Arc::clone(granted))),
            (Access::Only(granted), Some(asked)) => {
                Ok(Some(Arc::new(asked.and(Filter::clone(granted)))))
            }
        }
    }

    /// The grant's own filter, if it has one (writes are checked against it).
    pub fn filter(&self) -> Option<&Arc<Filter>> {
        match self {
            Access::Only(filter) => Some(filter),
            Access::Denied | Access::All => None,
        }
    }
}
