//! Views: several collections of one stream, each with its own filter, over one subscription.
//!
//! The relay keeps one subscription per stream and connection, so the engine subscribes once
//! with the union of the stream's filters (its [`Scope`]) and keeps the records of that union
//! in the stream's shared [`Collection`]. Each collection the application holds is a [`View`]
//! of it: reads keep the records its own filter matches, and every change of the union is
//! judged for it with the protocol's rules (see `docs/PROTOCOL.md`, "Views"): in before and
//! after, the change as it is; only after, an `upsert` (move-in); only before, a `delete`
//! (move-out); neither, nothing.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use tidewire_shared::view::Verdict;
use tidewire_shared::{Change, Collection, Filter, Json, Op};

use super::optimistic::Overlay;
use crate::error::ClientError;

/// Which records of a stream a subscription asks for, or the collection holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Scope {
    /// Every record (no filter).
    #[default]
    All,
    /// The records at least one of these filters matches, by canonical JSON text (so the
    /// union is the same whatever order the collections were made in).
    Any(BTreeMap<String, Value>),
}

impl Scope {
    /// Whether the records of this scope include every record of `view`'s filter.
    pub fn covers(&self, key: Option<&str>) -> bool {
        match (self, key) {
            (Scope::All, _) => true,
            (Scope::Any(_), None) => false,
            (Scope::Any(members), Some(key)) => members.contains_key(key),
        }
    }

    /// True when the scope is exactly the one filter `key`.
    pub fn is_only(&self, key: &str) -> bool {
        matches!(self, Scope::Any(members) if members.len() == 1 && members.contains_key(key))
    }

    /// The `where` of the subscription: none for every record, the filter itself for one,
    /// else `{"or": [...]}`, or `{"field": {"in": [...]}}` when every filter is an equality
    /// on one field (which the relay indexes, where it evaluates an `or` for every event).
    pub fn filter(&self) -> Option<Value> {
        let Scope::Any(members) = self else {
            return None;
        };
        if members.len() == 1 {
            return members.values().next().cloned();
        }
        if let Some(merged) = merge_equalities(members.values()) {
            return Some(merged);
        }
        let mut or = Map::new();
        or.insert(
            "or".into(),
            Value::Array(members.values().cloned().collect()),
        );
        Some(Value::Object(or))
    }

    /// The filters, for storage (`None` for every record).
    pub fn members(&self) -> Option<Vec<Value>> {
        match self {
            Scope::All => None,
            Scope::Any(members) => Some(members.values().cloned().collect()),
        }
    }

    /// A scope from stored filters (`None`: every record); `None` if one does not parse.
    pub fn from_members(members: Option<Vec<Value>>) -> Option<Scope> {
        let Some(members) = members else {
            return Some(Scope::All);
        };
        let mut scope = BTreeMap::new();
        for value in members {
            let (key, _) = canonical(&value).ok()??;
            scope.insert(key, value);
        }
        Some(Scope::Any(scope))
    }
}

/// `{"f": v}` and `{"f": {"in": [..]}}` filters on one field `f`, as one `in`.
fn merge_equalities<'a>(filters: impl Iterator<Item = &'a Value>) -> Option<Value> {
    let mut field: Option<&str> = None;
    let mut values: Vec<Value> = Vec::new();
    for filter in filters {
        let Value::Object(object) = filter else {
            return None;
        };
        let mut entries = object.iter();
        let (name, condition) = entries.next()?;
        if entries.next().is_some() || matches!(name.as_str(), "and" | "or" | "not") {
            return None;
        }
        if field.is_some_and(|field| field != name) {
            return None;
        }
        field = Some(name);
        let scalar =
            |value: &Value| matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_));
        match condition {
            Value::Object(operators) => {
                let (Some(Value::Array(items)), 1) = (operators.get("in"), operators.len()) else {
                    return None;
                };
                if !items.iter().all(scalar) {
                    return None;
                }
                values.extend(items.iter().cloned());
            }
            value if scalar(value) => values.push(value.clone()),
            _ => return None,
        }
    }
    let mut unique: Vec<Value> = Vec::with_capacity(values.len());
    for value in values {
        if !unique.contains(&value) {
            unique.push(value);
        }
    }
    let mut operators = Map::new();
    operators.insert("in".into(), Value::Array(unique));
    let mut merged = Map::new();
    merged.insert(field?.to_owned(), Value::Object(operators));
    Some(Value::Object(merged))
}

/// The canonical form of a filter given by the application: `None` for one that matches
/// every record (`{}`), else its JSON text with sorted keys (serde_json's map is ordered)
/// and the parsed filter.
///
/// # Errors
///
/// [`ClientError::BadFilter`] if it is not a filter or is over the protocol's bounds.
pub fn canonical(value: &Value) -> Result<Option<(String, Filter)>, ClientError> {
    let filter =
        Filter::parse_bounded(value).map_err(|error| ClientError::BadFilter(error.to_string()))?;
    Ok((!filter.is_everything()).then(|| (value.to_string(), filter)))
}

/// Checks that the union of a stream's filters is itself a filter the relay accepts (the
/// `or` adds a level of nesting, and the bounds apply to the whole).
pub(crate) fn check_union(stream: &str, scope: &Scope) -> Result<(), ClientError> {
    let Some(union) = scope.filter() else {
        return Ok(());
    };
    canonical(&union).map(drop).map_err(|error| {
        ClientError::BadFilter(format!(
            "the union of the filters of the collections of {stream} is not a valid filter \
             ({error}); use fewer or simpler filters"
        ))
    })
}

/// One collection of a stream, as the application sees it.
#[derive(Debug)]
pub(crate) struct View {
    /// Unique among the engine's views.
    pub(crate) id: u32,
    /// The canonical filter text; `None` for every record.
    pub(crate) key: Option<String>,
    pub(crate) filter: Option<Filter>,
    /// Whether the view has been shown the records: before that it reads as empty and hears
    /// no changes (its first records arrive as `snapshot` changes).
    pub(crate) loaded: bool,
}

impl View {
    /// The filter to apply to records of a collection holding `data`: none when the data is
    /// exactly this view.
    pub(crate) fn narrowing(&self, data: &Scope) -> Option<&Filter> {
        match &self.key {
            Some(key) if !data.is_only(key) => self.filter.as_ref(),
            _ => None,
        }
    }
}

/// What one change of the union is for a view with `filter`.
pub(crate) fn judge_change(filter: &Filter, change: &Change) -> Option<Change> {
    let matches = |value: &Option<Json>| {
        value
            .as_ref()
            .is_some_and(|value| filter.matches_json(value))
    };
    match Verdict::of(matches(&change.old), matches(&change.new)) {
        Verdict::Skip => None,
        Verdict::Pass => Some(change.clone()),
        Verdict::MoveIn => Some(Change {
            op: Op::Upsert,
            old: None,
            ..change.clone()
        }),
        Verdict::MoveOut => Some(Change {
            op: Op::Delete,
            new: None,
            ..change.clone()
        }),
    }
}

/// Every record of `collection` (as `overlay` shows it) that `filter` matches, as the
/// `upsert`s that show them (in seq order, then key; optimistic records last).
pub(crate) fn whole_view(
    collection: &Collection,
    overlay: &Overlay,
    filter: Option<&Filter>,
) -> Vec<Change> {
    let read = ViewRead::new(Some(collection), Some(overlay), filter);
    let mut changes: Vec<Change> = collection
        .snapshot()
        .records
        .into_iter()
        .filter(|record| overlay.get(&record.key).is_none())
        .filter(|record| read.keep(&record.data))
        .map(|record| Change {
            key: record.key,
            op: Op::Upsert,
            seq: record.seq,
            old: None,
            new: Some(record.data),
        })
        .collect();
    for (key, value) in overlay.visible() {
        if let Some(value) = value.as_ref().filter(|value| read.keep(value)) {
            changes.push(Change {
                key: key.clone(),
                op: Op::Upsert,
                seq: collection.key_seq(key).unwrap_or(0),
                old: None,
                new: Some(value.clone()),
            });
        }
    }
    changes
}

/// Read access to one view: the records of the stream's collection its filter matches, as
/// the client's pending writes show them.
#[derive(Debug, Clone, Copy)]
pub struct ViewRead<'a> {
    collection: Option<&'a Collection>,
    overlay: Option<&'a Overlay>,
    filter: Option<&'a Filter>,
}

impl<'a> ViewRead<'a> {
    pub(crate) fn new(
        collection: Option<&'a Collection>,
        overlay: Option<&'a Overlay>,
        filter: Option<&'a Filter>,
    ) -> Self {
        let overlay = overlay.filter(|overlay| !overlay.visible().is_empty());
        Self {
            collection,
            overlay,
            filter,
        }
    }

    fn keep(&self, value: &Json) -> bool {
        self.filter.is_none_or(|filter| filter.matches_json(value))
    }

    /// The value of `key`, if the view holds it.
    pub fn get(&self, key: &str) -> Option<Json> {
        let collection = self.collection?;
        let value = match self.overlay.and_then(|overlay| overlay.get(key)) {
            Some(shown) => shown.cloned(),
            None => collection.get(key),
        };
        value.filter(|value| self.keep(value))
    }

    /// Whether the view holds `key`.
    pub fn contains_key(&self, key: &str) -> bool {
        match (self.collection, self.filter, self.overlay) {
            (None, _, _) => false,
            (Some(collection), None, None) => collection.contains_key(key),
            _ => self.get(key).is_some(),
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        match (self.collection, self.filter, self.overlay) {
            (None, _, _) => 0,
            (Some(collection), None, None) => collection.len(),
            _ => self.iter().count(),
        }
    }

    /// True if the view holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every `(key, value)` of the view, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Json)> + '_ {
        let overlay = self.overlay;
        let committed = self
            .collection
            .into_iter()
            .flat_map(Collection::iter)
            .filter(move |(key, _)| overlay.is_none_or(|overlay| overlay.get(key).is_none()));
        let shown = overlay
            .into_iter()
            .flat_map(|overlay| overlay.visible().iter())
            .filter(|_| self.collection.is_some())
            .filter_map(|(key, value)| value.clone().map(|value| (key.as_str(), value)));
        committed.chain(shown).filter(|(_, value)| self.keep(value))
    }

    /// The keys of the view, in no particular order.
    pub fn keys(&self) -> Vec<&'a str> {
        match (self.collection, self.filter, self.overlay) {
            (None, _, _) => Vec::new(),
            (Some(collection), None, None) => collection.keys().collect(),
            _ => self.iter().map(|(key, _)| key).collect(),
        }
    }

    /// The last applied seq (0 before the view has records).
    pub fn applied(&self) -> u64 {
        self.collection.map_or(0, Collection::applied)
    }

    /// The stream's epoch (0 before the view has records).
    pub fn epoch(&self) -> u64 {
        self.collection.map_or(0, Collection::epoch)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn scope(filters: &[Value]) -> Scope {
        Scope::from_members(Some(filters.to_vec())).expect("filters")
    }

    #[test]
    fn canonical_text_ignores_key_order_and_everything_is_no_filter() {
        let a = canonical(&json!({"b": 1, "a": {"gt": 2}})).expect("valid");
        let b = canonical(&json!({"a": {"gt": 2}, "b": 1})).expect("valid");
        assert_eq!(a.map(|(text, _)| text), b.map(|(text, _)| text));
        assert!(canonical(&json!({})).expect("valid").is_none());
        assert_eq!(
            canonical(&json!({"prio": {"gte": 1}})).map(drop),
            Err(ClientError::BadFilter(
                "bad filter at where.prio.gte: unknown operator \"gte\": expected one of eq ne lt le gt ge in null".into()
            ))
        );
    }

    #[test]
    fn union_forms() {
        assert_eq!(Scope::All.filter(), None);
        assert_eq!(
            scope(&[json!({"owner": "u1"})]).filter(),
            Some(json!({"owner": "u1"}))
        );
        assert_eq!(
            scope(&[
                json!({"owner": "u2"}),
                json!({"owner": {"in": ["u1", "u2"]}})
            ])
            .filter(),
            Some(json!({"owner": {"in": ["u2", "u1"]}}))
        );
        assert_eq!(
            scope(&[json!({"owner": "u1"}), json!({"prio": {"gt": 2}})]).filter(),
            Some(json!({"or": [{"owner": "u1"}, {"prio": {"gt": 2}}]}))
        );
        // The members are ordered by their text, whatever order they came in.
        assert_eq!(
            scope(&[json!({"prio": {"gt": 2}}), json!({"owner": "u1"})]),
            scope(&[json!({"owner": "u1"}), json!({"prio": {"gt": 2}})])
        );
    }

    #[test]
    fn a_merged_union_matches_what_the_or_matches() {
        let filters = [
            json!({"o": 1}),
            json!({"o": {"in": ["1", true]}}),
            json!({"o": 2.0}),
        ];
        let merged = Filter::parse(&scope(&filters).filter().expect("filter")).expect("valid");
        let parsed: Vec<Filter> = filters
            .iter()
            .map(|filter| Filter::parse(filter).expect("valid"))
            .collect();
        for record in [
            json!({"o": 1}),
            json!({"o": 1.0}),
            json!({"o": "1"}),
            json!({"o": true}),
            json!({"o": 2}),
            json!({"o": false}),
            json!({"o": null}),
            json!({}),
            json!(7),
        ] {
            let any = parsed.iter().any(|filter| filter.matches(&record));
            assert_eq!(merged.matches(&record), any, "{record}");
        }
    }

    #[test]
    fn a_union_over_the_bounds_is_refused() {
        let deep = json!({"not": {"not": {"not": {"not": {"not": {"not": {"a": 1}}}}}}});
        canonical(&deep).expect("as deep as a filter may be");
        let union = scope(&[deep, json!({"b": 1})]);
        assert!(check_union("tasks", &union).is_err_and(|error| error.code() == "bad_filter"));
    }

    #[test]
    fn judging_a_change_for_a_view() {
        let filter = Filter::parse(&json!({"owner": "u1"})).expect("valid");
        let change = |op, old: Option<Value>, new: Option<Value>| Change {
            key: "t".into(),
            op,
            seq: 5,
            old: old.map(Json::from),
            new: new.map(Json::from),
        };
        let mine = json!({"owner": "u1", "n": 1});
        let mine2 = json!({"owner": "u1", "n": 2});
        let theirs = json!({"owner": "u2"});
        let pass = change(Op::Patch, Some(mine.clone()), Some(mine2.clone()));
        assert_eq!(judge_change(&filter, &pass), Some(pass.clone()));
        assert_eq!(
            judge_change(
                &filter,
                &change(Op::Patch, Some(theirs.clone()), Some(mine.clone()))
            ),
            Some(change(Op::Upsert, None, Some(mine.clone())))
        );
        assert_eq!(
            judge_change(
                &filter,
                &change(Op::Upsert, Some(mine.clone()), Some(theirs.clone()))
            ),
            Some(change(Op::Delete, Some(mine.clone()), None))
        );
        assert_eq!(
            judge_change(
                &filter,
                &change(Op::Upsert, Some(theirs.clone()), Some(theirs))
            ),
            None
        );
        assert_eq!(
            judge_change(&filter, &change(Op::Upsert, None, Some(mine.clone()))),
            Some(change(Op::Upsert, None, Some(mine.clone())))
        );
        assert_eq!(
            judge_change(&filter, &change(Op::Delete, Some(mine.clone()), None)),
            Some(change(Op::Delete, Some(mine), None))
        );
    }
}
