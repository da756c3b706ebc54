//! Routing a decoded row change of a tracked table to stream events by the table's tracked
//! definition, with the rules of the trigger (`track_trigger` in `functions/track.sql`): the
//! key and `{column}` placeholders are the columns' text values; an INSERT is an upsert, a
//! DELETE a delete, an UPDATE an upsert when the record stays (only if what subscribers see
//! changed) or a delete from the old address and an upsert to the new one when it moves.

use tidewire_shared::event::validate_key;
use tidewire_shared::StreamName;

use super::pgoutput::{Relation, Value};

/// A tracked table's definition, as `tidewire.tracked` holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Definition {
    /// The stream template split by `tidewire.track_template`: literal text and placeholder
    /// column names alternating, literal first and last.
    pub(crate) parts: Vec<String>,
    /// The key column.
    pub(crate) key_column: String,
    /// `columns`, `exclude` or none.
    pub(crate) mode: Option<String>,
    /// The column list of `mode`.
    pub(crate) list: Vec<String>,
}

/// Where a definition's columns are in a relation's column list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    key: usize,
    placeholders: Vec<usize>,
}

/// A definition that does not fit the table as the WAL describes it (a column renamed or
/// dropped since `track_table`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tracked table {table}: {problem}; call tidewire.track_table again with the current column names")]
pub(crate) struct LayoutError {
    table: String,
    problem: String,
}

/// Why one row change cannot be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RowError {
    /// The key column or a placeholder is NULL in the new row.
    #[error("column {0} is NULL")]
    Null(String),
    /// A value arrived as "unchanged" without the old row to take it from.
    #[error("column {0} came as an unchanged TOAST value without the old row (set REPLICA IDENTITY FULL)")]
    Unchanged(String),
    /// The stream name the template makes is invalid.
    #[error("stream name {0:?} is invalid: {1}")]
    Stream(String, String),
    /// The key is invalid.
    #[error("key is invalid: {0}")]
    Key(String),
}

impl Definition {
    /// The positions of the key and placeholder columns in `relation`, checking that every
    /// column the definition names is still there.
    pub(crate) fn layout(&self, relation: &Relation) -> Result<Layout, LayoutError> {
        let table = format!("{}.{}", relation.schema, relation.name);
        let find = |name: &str, role: &str| {
            relation
                .columns
                .iter()
                .position(|column| column.name == name)
                .ok_or_else(|| LayoutError {
                    table: table.clone(),
                    problem: format!("it has no column {name:?} ({role})"),
                })
        };
        let key = find(&self.key_column, "the key column")?;
        let placeholders = self
            .placeholder_names()
            .map(|name| find(name, "a placeholder of the stream template"))
            .collect::<Result<Vec<_>, _>>()?;
        // A column left out by `exclude` and renamed since would be published under its new
        // name: refuse, as the trigger refuses the write.
        if self.mode.as_deref() == Some("exclude") {
            for name in &self.list {
                find(name, "named in exclude")?;
            }
        }
        Ok(Layout { key, placeholders })
    }

    fn placeholder_names(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().skip(1).step_by(2).map(String::as_str)
    }

    /// The stream and key of a row image, `Ok(None)` when the key or a placeholder is NULL.
    fn address(
        &self,
        layout: &Layout,
        row: &[Option<String>],
    ) -> Result<Option<(String, String)>, RowError> {
        let Some(Some(key)) = row.get(layout.key) else {
            return Ok(None);
        };
        let mut stream = String::new();
        for (index, part) in self.parts.iter().enumerate() {
            if index % 2 == 0 {
                stream.push_str(part);
                continue;
            }
            let Some(Some(value)) = layout
                .placeholders
                .get(index / 2)
                .and_then(|&at| row.get(at))
            else {
                return Ok(None);
            };
            stream.push_str(value);
        }
        if let Err(error) = StreamName::new(&stream) {
            return Err(RowError::Stream(stream, error.to_string()));
        }
        validate_key(key).map_err(|error| RowError::Key(error.to_string()))?;
        Ok(Some((stream, key.clone())))
    }

    /// The name of the first NULL key or placeholder column of `row`, for the error.
    fn null_column(&self, layout: &Layout, row: &[Option<String>]) -> String {
        if !matches!(row.get(layout.key), Some(Some(_))) {
            return self.key_column.clone();
        }
        self.placeholder_names()
            .zip(&layout.placeholders)
            .find(|(_, &at)| !matches!(row.get(at), Some(Some(_))))
            .map(|(name, _)| name.to_owned())
            .unwrap_or_default()
    }
}

/// A row image with every value as text (`None` for NULL), unchanged TOAST values filled in
/// from the old row.
pub(crate) fn image(
    relation: &Relation,
    values: &[Value],
    old: Option<&[Option<String>]>,
) -> Result<Vec<Option<String>>, RowError> {
    values
        .iter()
        .enumerate()
        .map(|(index, value)| match value {
            Value::Null => Ok(None),
            Value::Text(text) => Ok(Some(text.clone())),
            Value::Unchanged => old.and_then(|old| old.get(index).cloned()).ok_or_else(|| {
                RowError::Unchanged(
                    relation
                        .columns
                        .get(index)
                        .map(|column| column.name.clone())
                        .unwrap_or_default(),
                )
            }),
        })
        .collect()
}

/// What one row change publishes, before its data is converted: images are referred to by
/// their index in the chunk's list of images to convert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Upsert the converted image `new` at (stream, key).
    Upsert {
        stream: String,
        key: String,
        new: usize,
    },
    /// Delete (stream, key).
    Delete { stream: String, key: String },
    /// The record stays at (stream, key): upsert `new` if its published form differs from
    /// `old`'s.
    Update {
        stream: String,
        key: String,
        old: usize,
        new: usize,
    },
}

/// Plans an INSERT (`old` None), an UPDATE (both) or a DELETE (`new` None). `push` stores an
/// image to convert and returns its index.
pub(crate) fn plan(
    definition: &Definition,
    layout: &Layout,
    old: Option<Vec<Option<String>>>,
    new: Option<Vec<Option<String>>>,
    push: &mut impl FnMut(Vec<Option<String>>) -> usize,
) -> Result<Vec<Plan>, RowError> {
    let old_address = match &old {
        Some(row) => definition.address(layout, row)?,
        None => None,
    };
    let Some(new) = new else {
        return Ok(old_address
            .map(|(stream, key)| Plan::Delete { stream, key })
            .into_iter()
            .collect());
    };
    let Some(new_address) = definition.address(layout, &new)? else {
        return Err(RowError::Null(definition.null_column(layout, &new)));
    };
    match (old, old_address) {
        (Some(old), Some(old_address)) if old_address == new_address => {
            let (stream, key) = new_address;
            let old = push(old);
            let new = push(new);
            Ok(vec![Plan::Update {
                stream,
                key,
                old,
                new,
            }])
        }
        (_, old_address) => {
            let mut plans = Vec::with_capacity(2);
            if let Some((stream, key)) = old_address {
                plans.push(Plan::Delete { stream, key });
            }
            let (stream, key) = new_address;
            plans.push(Plan::Upsert {
                stream,
                key,
                new: push(new),
            });
            Ok(plans)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::pgoutput::Column;
    use super::*;

    fn relation() -> Relation {
        let column = |name: &str| Column {
            key: false,
            name: name.into(),
            type_oid: 25,
            type_modifier: -1,
        };
        Relation {
            id: 1,
            schema: "public".into(),
            name: "tasks".into(),
            replica_identity: b'f',
            columns: vec![column("id"), column("board"), column("title")],
        }
    }

    fn definition() -> Definition {
        Definition {
            parts: vec!["board:".into(), "board".into(), "/tasks".into()],
            key_column: "id".into(),
            mode: None,
            list: vec![],
        }
    }

    fn row(values: &[Option<&str>]) -> Vec<Option<String>> {
        values.iter().map(|v| v.map(str::to_owned)).collect()
    }

    fn run(
        old: Option<Vec<Option<String>>>,
        new: Option<Vec<Option<String>>>,
    ) -> Result<Vec<Plan>, RowError> {
        let relation = relation();
        let definition = definition();
        let layout = definition.layout(&relation).expect("layout");
        let mut images = Vec::new();
        plan(&definition, &layout, old, new, &mut |image| {
            images.push(image);
            images.len() - 1
        })
    }

    #[test]
    fn insert_update_move_and_delete_follow_the_trigger() {
        let a = row(&[Some("1"), Some("7"), Some("x")]);
        let b = row(&[Some("1"), Some("8"), Some("x")]);
        assert_eq!(
            run(None, Some(a.clone())),
            Ok(vec![Plan::Upsert {
                stream: "board:7/tasks".into(),
                key: "1".into(),
                new: 0
            }])
        );
        assert_eq!(
            run(Some(a.clone()), Some(a.clone())),
            Ok(vec![Plan::Update {
                stream: "board:7/tasks".into(),
                key: "1".into(),
                old: 0,
                new: 1
            }])
        );
        assert_eq!(
            run(Some(a.clone()), Some(b)),
            Ok(vec![
                Plan::Delete {
                    stream: "board:7/tasks".into(),
                    key: "1".into()
                },
                Plan::Upsert {
                    stream: "board:8/tasks".into(),
                    key: "1".into(),
                    new: 0
                },
            ])
        );
        assert_eq!(
            run(Some(a), None),
            Ok(vec![Plan::Delete {
                stream: "board:7/tasks".into(),
                key: "1".into()
            }])
        );
    }

    #[test]
    fn null_placeholders_and_bad_names_are_row_errors() {
        assert_eq!(
            run(None, Some(row(&[Some("1"), None, Some("x")]))),
            Err(RowError::Null("board".into()))
        );
        // A row that had a NULL placeholder was in no stream: its delete publishes nothing.
        assert_eq!(run(Some(row(&[Some("1"), None, None])), None), Ok(vec![]));
        let long = "9".repeat(200);
        assert!(matches!(
            run(None, Some(row(&[Some("1"), Some(&long), None]))),
            Err(RowError::Stream(..))
        ));
    }

    #[test]
    fn a_renamed_column_is_a_layout_error() {
        let mut definition = definition();
        definition.mode = Some("exclude".into());
        definition.list = vec!["secret".into()];
        assert!(definition.layout(&relation()).is_err());
        definition.list = vec!["title".into()];
        assert!(definition.layout(&relation()).is_ok());
        definition.key_column = "uuid".into();
        assert!(definition.layout(&relation()).is_err());
    }
}
