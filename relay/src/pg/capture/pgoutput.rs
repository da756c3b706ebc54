//! Turns the `pgoutput` bytes that the replication transport hands over into typed changes.
//!
//! Sans-IO: the capture sequencer passes [`decode`] the payload of one `XLogData` message
//! (protocol version 1, text format) and gets back a [`Change`], so the wire format is parsed
//! and tested apart from the replication socket. Format reference:
//! <https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html>.
//! Every read is bounds-checked; no input, however hostile, can panic or force a large allocation.

/// Flag bit of a column that is part of the replica identity key.
pub(crate) const KEY_FLAG: u8 = 1;

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    /// The column is part of the replica identity key ([`KEY_FLAG`]).
    pub(crate) key: bool,
    /// The column name.
    pub(crate) name: String,
    /// OID of the column's data type.
    pub(crate) type_oid: u32,
    /// Type modifier of the column (`atttypmod`), -1 if none.
    pub(crate) type_modifier: i32,
}

/// A relation ('R') message: the shape of a table, sent before its first change in a session
/// and again whenever it changes. Later changes refer to it by [`Relation::id`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Relation {
    /// The relation OID, as used by the change messages.
    pub(crate) id: u32,
    /// The namespace, as sent (an empty string means `pg_catalog`).
    pub(crate) schema: String,
    /// The relation name.
    pub(crate) name: String,
    /// Replica identity setting (`relreplident`: b'd', b'n', b'f' or b'i').
    pub(crate) replica_identity: u8,
    /// The columns, in tuple order.
    pub(crate) columns: Vec<Column>,
}

/// One column value of a [`Tuple`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    /// 'n': SQL NULL.
    Null,
    /// 'u': an unchanged TOAST value, not sent; the old value still holds.
    Unchanged,
    /// 't': a value in its text representation.
    Text(String),
}

/// A row: one [`Value`] per column of the relation.
pub(crate) type Tuple = Vec<Value>;

/// One decoded `pgoutput` message. `relation` fields are a [`Relation::id`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// 'R': a relation's shape.
    Relation(Relation),
    /// 'I': the row `new` inserted.
    Insert { relation: u32, new: Tuple },
    /// 'U': a row updated to `new`.
    /// `old` is Some for 'K' (key columns only; other columns Null) or 'O' (the whole old row); `old_is_key` says which.
    Update {
        relation: u32,
        old: Option<Tuple>,
        old_is_key: bool,
        new: Tuple,
    },
    /// 'D': a row deleted; `old` is its key ('K', `old_is_key`) or the whole row ('O').
    Delete {
        relation: u32,
        old: Tuple,
        old_is_key: bool,
    },
    /// 'T': `relations` truncated together, with CASCADE (option bit 1) and/or RESTART IDENTITY
    /// (option bit 2).
    Truncate {
        relations: Vec<u32>,
        cascade: bool,
        restart_identity: bool,
    },
    /// 'Y': a type's namespace and name (for user types); decoded but callers may ignore it.
    Type {
        oid: u32,
        schema: String,
        name: String,
    },
    /// Any other tag (B, C, M, O, ...), not decoded further.
    Other(u8),
}

/// Why a `pgoutput` message could not be decoded: `tag` is the message's tag, `at` an offset
/// from the start of the message (where the bad field starts).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The message has no bytes at all.
    #[error("pgoutput message is empty")]
    Empty,
    /// A field runs past the end of the message.
    #[error("pgoutput message {tag:?} ends early at byte {at}")]
    Truncated { tag: char, at: usize },
    /// A tuple marker (or the 'N'/'K'/'O' before a tuple) is not one this decoder knows.
    #[error("pgoutput message {tag:?} has an unknown tuple marker {marker:?} at byte {at}")]
    BadMarker { tag: char, marker: char, at: usize },
    /// A name or text value is not valid UTF-8.
    #[error("pgoutput message {tag:?} has a string that is not UTF-8 at byte {at}")]
    NotUtf8 { tag: char, at: usize },
    /// A text value's length field is negative.
    #[error("pgoutput message {tag:?} has a negative length at byte {at}")]
    NegativeLength { tag: char, at: usize },
    /// `extra` bytes are left over after the last field.
    #[error("pgoutput message {tag:?} has {extra} unexpected bytes at its end")]
    Trailing { tag: char, extra: usize },
    /// A column value in binary format ('b'): the subscription must not ask for binary.
    #[error("pgoutput binary column values are not supported (byte {at})")]
    Binary { at: usize },
}

/// Decodes one `pgoutput` message (the payload of an `XLogData` message,
/// a [`Bytes`](bytes::Bytes) derefs to one).
///
/// # Errors
///
/// Returns a [`DecodeError`] if the message is empty, ends early, has bytes left over, or holds
/// an unknown marker, a non-UTF-8 string, a negative length or a binary column value.
pub(crate) fn decode(data: &[u8]) -> Result<Change, DecodeError> {
    let Some(&tag) = data.first() else {
        return Err(DecodeError::Empty);
    };
    let mut c = Cursor {
        data,
        pos: 1,
        tag: char::from(tag),
    };
    let change = match tag {
        b'R' => Change::Relation(c.relation()?),
        b'I' => {
            let relation = c.u32()?;
            c.expect_marker(b'N')?;
            Change::Insert {
                relation,
                new: c.tuple()?,
            }
        }
        b'U' => {
            let relation = c.u32()?;
            let at = c.pos;
            let (old, old_is_key) = match c.u8()? {
                b'N' => (None, false),
                marker @ (b'K' | b'O') => {
                    let old = c.tuple()?;
                    c.expect_marker(b'N')?;
                    (Some(old), marker == b'K')
                }
                marker => return Err(c.bad_marker(marker, at)),
            };
            Change::Update {
                relation,
                old,
                old_is_key,
                new: c.tuple()?,
            }
        }
        b'D' => {
            let relation = c.u32()?;
            let at = c.pos;
            let old_is_key = match c.u8()? {
                b'K' => true,
                b'O' => false,
                marker => return Err(c.bad_marker(marker, at)),
            };
            Change::Delete {
                relation,
                old: c.tuple()?,
                old_is_key,
            }
        }
        b'T' => {
            let count = c.u32()?;
            let options = c.u8()?;
            let mut relations = Vec::with_capacity(c.capacity(count, 4));
            for _ in 0..count {
                relations.push(c.u32()?);
            }
            Change::Truncate {
                relations,
                cascade: options & 1 != 0,
                restart_identity: options & 2 != 0,
            }
        }
        b'Y' => Change::Type {
            oid: c.u32()?,
            schema: c.string()?,
            name: c.string()?,
        },
        other => return Ok(Change::Other(other)),
    };
    match data.len().saturating_sub(c.pos) {
        0 => Ok(change),
        extra => Err(DecodeError::Trailing { tag: c.tag, extra }),
    }
}

/// Bounds-checked reader over one message; `pos` is the offset of the next unread byte.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    tag: char,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n);
        let bytes = end.and_then(|end| Some((end, self.data.get(self.pos..end)?)));
        let (end, bytes) = bytes.ok_or(DecodeError::Truncated {
            tag: self.tag,
            at: self.pos,
        })?;
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let at = self.pos;
        let bytes = self.take(N)?.first_chunk::<N>().copied();
        bytes.ok_or(DecodeError::Truncated { tag: self.tag, at })
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn expect_marker(&mut self, marker: u8) -> Result<(), DecodeError> {
        let at = self.pos;
        match self.u8()? {
            found if found == marker => Ok(()),
            found => Err(self.bad_marker(found, at)),
        }
    }

    fn bad_marker(&self, marker: u8, at: usize) -> DecodeError {
        DecodeError::BadMarker {
            tag: self.tag,
            marker: char::from(marker),
            at,
        }
    }

    /// A safe `Vec` capacity for `count` items of at least `min_size` bytes each.
    fn capacity(&self, count: impl TryInto<usize>, min_size: usize) -> usize {
        let left = self
            .data
            .len()
            .saturating_sub(self.pos)
            .checked_div(min_size);
        let left = left.unwrap_or(0);
        count
            .try_into()
            .map_or(left, |count: usize| count.min(left))
    }

    fn utf8(&self, bytes: &[u8], at: usize) -> Result<String, DecodeError> {
        let text = std::str::from_utf8(bytes).map(str::to_owned);
        text.map_err(|_| DecodeError::NotUtf8 { tag: self.tag, at })
    }

    /// A NUL-terminated UTF-8 string.
    fn string(&mut self) -> Result<String, DecodeError> {
        let at = self.pos;
        let rest = self.data.get(at..).unwrap_or_default();
        let len = rest.iter().position(|&b| b == 0);
        let len = len.ok_or(DecodeError::Truncated { tag: self.tag, at })?;
        let bytes = self.take(len)?;
        self.take(1)?; // The NUL, found above.
        self.utf8(bytes, at)
    }

    fn relation(&mut self) -> Result<Relation, DecodeError> {
        let (id, schema, name) = (self.u32()?, self.string()?, self.string()?);
        let replica_identity = self.u8()?;
        let count = self.u16()?;
        let mut columns = Vec::with_capacity(self.capacity(count, 10));
        for _ in 0..count {
            let key = self.u8()? & KEY_FLAG != 0;
            let name = self.string()?;
            columns.push(Column {
                key,
                name,
                type_oid: self.u32()?,
                type_modifier: self.i32()?,
            });
        }
        Ok(Relation {
            id,
            schema,
            name,
            replica_identity,
            columns,
        })
    }

    /// `TupleData`: Int16 column count, then a marked value per column.
    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let count = self.u16()?;
        let mut values = Vec::with_capacity(self.capacity(count, 1));
        for _ in 0..count {
            let at = self.pos;
            values.push(match self.u8()? {
                b'n' => Value::Null,
                b'u' => Value::Unchanged,
                b't' => {
                    let len_at = self.pos;
                    let len = self.i32()?;
                    let len = usize::try_from(len).map_err(|_| DecodeError::NegativeLength {
                        tag: self.tag,
                        at: len_at,
                    })?;
                    let text_at = self.pos;
                    let bytes = self.take(len)?;
                    Value::Text(self.utf8(bytes, text_at)?)
                }
                b'b' => return Err(DecodeError::Binary { at }),
                marker => return Err(self.bad_marker(marker, at)),
            });
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Part::{Bin, Str, Txt, I16, I32, I8, U32};

    /// One field of a test message.
    enum Part<'a> {
        I8(u8),
        I16(u16),
        U32(u32),
        I32(i32),
        Str(&'a str),
        Txt(&'a str),
        Bin(&'a [u8]),
    }

    /// Builds a message from its fields, byte by byte.
    fn msg(parts: &[Part<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for part in parts {
            match *part {
                I8(v) => out.push(v),
                I16(v) => out.extend(v.to_be_bytes()),
                U32(v) => out.extend(v.to_be_bytes()),
                I32(v) => out.extend(v.to_be_bytes()),
                Str(v) => out.extend(v.bytes().chain([0])),
                Txt(v) => {
                    out.push(b't');
                    out.extend(u32::try_from(v.len()).unwrap_or(u32::MAX).to_be_bytes());
                    out.extend(v.bytes());
                }
                Bin(v) => out.extend(v),
            }
        }
        out
    }

    fn text(v: &str) -> Value {
        Value::Text(v.to_owned())
    }

    fn update(old: Option<Tuple>, old_is_key: bool, new: Tuple) -> Change {
        Change::Update {
            relation: 7,
            old,
            old_is_key,
            new,
        }
    }

    fn truncated(tag: char, at: usize) -> Result<Change, DecodeError> {
        Err(DecodeError::Truncated { tag, at })
    }

    fn bad_marker(tag: char, marker: char, at: usize) -> Result<Change, DecodeError> {
        Err(DecodeError::BadMarker { tag, marker, at })
    }

    #[rustfmt::skip] // One row per field group: easier to check against the format.
    const RELATION: &[Part<'static>] = &[
        I8(b'R'), U32(16384), Str("public"), Str("items"), I8(b'd'), I16(2),
        I8(KEY_FLAG), Str("id"), U32(20), I32(-1),
        I8(0), Str("title"), U32(1043), I32(104),
    ];
    const INSERT: &[Part<'static>] = &[I8(b'I'), U32(7), I8(b'N'), I16(2), Txt("1"), I8(b'n')];
    const UPDATE: &[Part<'static>] = &[I8(b'U'), U32(7), I8(b'N'), I16(1), Txt("x")];
    #[rustfmt::skip]
    const UPDATE_KEY: &[Part<'static>] =
        &[I8(b'U'), U32(7), I8(b'K'), I16(1), Txt("1"), I8(b'N'), I16(1), Txt("2")];
    #[rustfmt::skip]
    const UPDATE_OLD: &[Part<'static>] =
        &[I8(b'U'), U32(7), I8(b'O'), I16(1), I8(b'u'), I8(b'N'), I16(1), Txt("")];
    const DELETE: &[Part<'static>] = &[I8(b'D'), U32(7), I8(b'O'), I16(2), Txt("1"), I8(b'u')];
    const DELETE_KEY: &[Part<'static>] = &[I8(b'D'), U32(7), I8(b'K'), I16(1), Txt("9")];
    const TRUNCATE: &[Part<'static>] = &[I8(b'T'), U32(2), I8(3), U32(7), U32(8)];
    const TYPE: &[Part<'static>] = &[I8(b'Y'), U32(99), Str("public"), Str("mood")];
    const ALL: [&[Part<'static>]; 9] = [
        RELATION, INSERT, UPDATE, UPDATE_KEY, UPDATE_OLD, DELETE, DELETE_KEY, TRUNCATE, TYPE,
    ];

    #[test]
    fn decodes_relation() {
        let column = |key, name: &str, type_oid, type_modifier| Column {
            key,
            name: name.into(),
            type_oid,
            type_modifier,
        };
        let columns = vec![
            column(true, "id", 20, -1),
            column(false, "title", 1043, 104),
        ];
        let Ok(Change::Relation(relation)) = decode(&msg(RELATION)) else {
            panic!()
        };
        assert_eq!(
            (relation.id, relation.replica_identity, relation.columns),
            (16384, b'd', columns)
        );
        assert_eq!(
            (relation.schema.as_str(), relation.name.as_str()),
            ("public", "items")
        );
        let catalog = msg(&[I8(b'R'), U32(1), Str(""), Str("t"), I8(b'n'), I16(0)]);
        assert!(matches!(decode(&catalog), Ok(Change::Relation(r)) if r.schema.is_empty()));
    }

    #[test]
    fn decodes_changes() {
        let new = vec![text("1"), Value::Null];
        assert_eq!(
            decode(&msg(INSERT)),
            Ok(Change::Insert { relation: 7, new })
        );
        assert_eq!(
            decode(&msg(UPDATE)),
            Ok(update(None, false, vec![text("x")]))
        );
        let want = update(Some(vec![text("1")]), true, vec![text("2")]);
        assert_eq!(decode(&msg(UPDATE_KEY)), Ok(want));
        let want = update(Some(vec![Value::Unchanged]), false, vec![text("")]);
        assert_eq!(decode(&msg(UPDATE_OLD)), Ok(want));
        let old = vec![text("1"), Value::Unchanged];
        let want = Change::Delete {
            relation: 7,
            old,
            old_is_key: false,
        };
        assert_eq!(decode(&msg(DELETE)), Ok(want));
        let want = Change::Delete {
            relation: 7,
            old: vec![text("9")],
            old_is_key: true,
        };
        assert_eq!(decode(&msg(DELETE_KEY)), Ok(want));
        let want = Change::Truncate {
            relations: vec![7, 8],
            cascade: true,
            restart_identity: true,
        };
        assert_eq!(decode(&msg(TRUNCATE)), Ok(want));
        let restart = msg(&[I8(b'T'), U32(1), I8(2), U32(7)]);
        let want = Change::Truncate {
            relations: vec![7],
            cascade: false,
            restart_identity: true,
        };
        assert_eq!(decode(&restart), Ok(want));
        let want = Change::Type {
            oid: 99,
            schema: "public".into(),
            name: "mood".into(),
        };
        assert_eq!(decode(&msg(TYPE)), Ok(want));
        for tag in [b'B', b'C', b'M', b'O'] {
            assert_eq!(decode(&msg(&[I8(tag), U32(1)])), Ok(Change::Other(tag)));
        }
    }

    #[test]
    fn every_prefix_is_truncated() {
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        for parts in ALL {
            let whole = msg(parts);
            assert!(decode(&whole).is_ok());
            for len in 1..whole.len() {
                let err = decode(whole.get(..len).unwrap_or_default());
                assert!(
                    matches!(err, Err(DecodeError::Truncated { .. })),
                    "{len}: {err:?}"
                );
            }
        }
    }

    #[test]
    fn rejects_malformed_messages() {
        let insert = |rest: &[Part<'_>]| {
            let mut bytes = msg(&[I8(b'I'), U32(7), I8(b'N'), I16(2), Txt("1")]);
            bytes.extend(msg(rest));
            decode(&bytes)
        };
        assert_eq!(insert(&[I8(b'x')]), bad_marker('I', 'x', 14));
        assert_eq!(
            decode(&msg(&[I8(b'I'), U32(7), I8(b'K')])),
            bad_marker('I', 'K', 5)
        );
        assert_eq!(
            decode(&msg(&[I8(b'U'), U32(7), I8(b'Z'), I16(0)])),
            bad_marker('U', 'Z', 5)
        );
        let no_new = msg(&[I8(b'U'), U32(7), I8(b'K'), I16(0), I8(b'O'), I16(0)]);
        assert_eq!(decode(&no_new), bad_marker('U', 'O', 8));
        assert_eq!(
            decode(&msg(&[I8(b'D'), U32(7), I8(b'N'), I16(0)])),
            bad_marker('D', 'N', 5)
        );
        let not_utf8 = insert(&[I8(b't'), I32(2), Bin(&[0xc3, 0x28])]);
        assert_eq!(not_utf8, Err(DecodeError::NotUtf8 { tag: 'I', at: 19 }));
        let not_utf8 = decode(&msg(&[I8(b'Y'), U32(1), Str("public"), Bin(&[0xff, 0])]));
        assert_eq!(not_utf8, Err(DecodeError::NotUtf8 { tag: 'Y', at: 12 }));
        let negative = insert(&[I8(b't'), I32(-1)]);
        assert_eq!(
            negative,
            Err(DecodeError::NegativeLength { tag: 'I', at: 15 })
        );
        assert_eq!(
            insert(&[I8(b't'), I32(i32::MAX), Bin(b"abc")]),
            truncated('I', 19)
        );
        assert_eq!(
            insert(&[I8(b'b'), I32(1), Bin(b"x")]),
            Err(DecodeError::Binary { at: 14 })
        );
        let trailing = insert(&[I8(b'n'), Bin(b"xy")]);
        assert_eq!(trailing, Err(DecodeError::Trailing { tag: 'I', extra: 2 }));
        let trailing = decode(&msg(&[I8(b'T'), U32(0), I8(0), I8(1)]));
        assert_eq!(trailing, Err(DecodeError::Trailing { tag: 'T', extra: 1 }));
    }

    #[test]
    fn huge_counts_do_not_allocate() {
        let huge = msg(&[I8(b'T'), U32(u32::MAX), I8(0), U32(1)]);
        assert_eq!(decode(&huge), truncated('T', 10));
        let huge = msg(&[I8(b'I'), U32(7), I8(b'N'), I16(u16::MAX), I8(b'n')]);
        assert_eq!(decode(&huge), truncated('I', 9));
        let huge = msg(&[
            I8(b'R'),
            U32(1),
            Str("s"),
            Str("t"),
            I8(b'd'),
            I16(u16::MAX),
        ]);
        assert_eq!(decode(&huge), truncated('R', 12));
        assert_eq!(
            Cursor {
                data: &[0; 9],
                pos: 1,
                tag: 'T'
            }
            .capacity(u32::MAX, 4),
            2
        );
    }
}
