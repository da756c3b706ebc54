//! Publishing one client write through the query pool: `tidewire.publish`, or
//! `tidewire.publish_once` when the write carries a write id (exactly once per stream and write
//! id: a resend answers the original seq), optionally kept inside a filtered write grant. The
//! SQL side is `sql/functions/publish.sql` and `sql/functions/writes.sql`.

use deadpool_postgres::Pool;
use serde_json::Value;
use tidewire_shared::{view, Filter, Op, StreamName};
use tokio_postgres::error::SqlState;
use tokio_postgres::GenericClient;

use super::outbox::{to_u64, OutboxError};

/// The SQLSTATE `tidewire.lookup_write` raises for a write id used for a different write.
pub const CONFLICT_SQLSTATE: &str = "TW409";

/// One write as a client asked for it.
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    /// The durable stream.
    pub stream: &'a StreamName,
    /// The record key.
    pub key: &'a str,
    /// The operation.
    pub op: Op,
    /// The value, fields or message payload.
    pub data: &'a Value,
    /// The write's id (the publish's `write_id`, the HTTP `Idempotency-Key`), already checked
    /// against `tidewire_shared::message::check_write_id`. Ignored for an ephemeral `message`,
    /// which has no seq to answer a resend with.
    pub write_id: Option<&'a str>,
}

impl Write<'_> {
    /// The write id that makes this write exactly-once: none for a message.
    pub fn once(&self) -> Option<&str> {
        self.write_id.filter(|_| self.op != Op::Message)
    }
}

/// What a publish answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The committed seq (0 for an ephemeral message).
    pub seq: u64,
    /// The write id was seen before: `seq` is the original commit's and nothing was written.
    pub replayed: bool,
}

const PUBLISH: &str = "select tidewire.publish($1, $2, $3, $4::jsonb) as seq, false as replayed";

const PUBLISH_ONCE: &str =
    "select seq, replayed from tidewire.publish_once($1, $2, $3, $4, $5::jsonb)";

/// Publishes `write` in one transaction of its own.
///
/// # Errors
///
/// [`OutboxError::Rejected`] when PostgreSQL refuses the input (the message says why),
/// [`OutboxError::Conflict`] when the write id was used for another write; other variants
/// when the database is unreachable.
pub async fn publish(pool: &Pool, write: &Write<'_>) -> Result<Published, OutboxError> {
    let client = pool.get().await?;
    publish_on(&**client, write).await
}

/// [`publish`] on a connection or transaction the caller holds.
async fn publish_on(
    client: &impl GenericClient,
    write: &Write<'_>,
) -> Result<Published, OutboxError> {
    let stream = write.stream.as_str();
    let op = write.op.as_str();
    let row = match write.once() {
        None => {
            client
                .query_one(PUBLISH, &[&stream, &write.key, &op, write.data])
                .await
        }
        Some(write_id) => {
            client
                .query_one(
                    PUBLISH_ONCE,
                    &[&stream, &write_id, &write.key, &op, write.data],
                )
                .await
        }
    }
    .map_err(rejected)?;
    Ok(Published {
        seq: to_u64(row.try_get("seq")?, "seq")?,
        replayed: row.try_get("replayed")?,
    })
}

/// PostgreSQL's refusals of bad input are the caller's fault ([`OutboxError::Rejected`]), and
/// so is a write id reused for another write ([`OutboxError::Conflict`]).
fn rejected(error: tokio_postgres::Error) -> OutboxError {
    match error.as_db_error() {
        Some(db) if db.code().code() == CONFLICT_SQLSTATE => {
            OutboxError::Conflict(db.message().to_owned())
        }
        Some(db)
            if *db.code() == SqlState::INVALID_PARAMETER_VALUE
                || *db.code() == SqlState::PROGRAM_LIMIT_EXCEEDED
                || db.code().code().starts_with("22") =>
        {
            OutboxError::Rejected(db.message().to_owned())
        }
        _ => OutboxError::Db(error),
    }
}

/// [`publish`], or [`publish_within`] when the writer's grant has a filter.
///
/// # Errors
///
/// As [`publish`] and [`publish_within`].
pub async fn publish_checked(
    pool: &Pool,
    write: &Write<'_>,
    within: Option<&Filter>,
) -> Result<Published, OutboxError> {
    match within {
        None => publish(pool, write).await,
        Some(filter) => publish_within(pool, write, filter).await,
    }
}

/// [`publish`] for a writer whose grant covers only the records `filter` matches: the record
/// before the write (if any) and after it must match (a message's data must match), checked
/// in the publish's own transaction. The stream's publish lock is taken first, so no other
/// write to the stream can slip between the check and the publish.
///
/// A write id seen before is answered right after the lock, before the grant check: the
/// original commit passed it, and the record may have moved out of the filter since.
///
/// # Errors
///
/// [`OutboxError::OutsideGrant`] when the write leaves the filter; as [`publish`] otherwise.
pub async fn publish_within(
    pool: &Pool,
    write: &Write<'_>,
    filter: &Filter,
) -> Result<Published, OutboxError> {
    if write.op == Op::Message {
        if !filter.matches(write.data) {
            return Err(OutboxError::OutsideGrant(
                "the message's data is outside your grant's filter".into(),
            ));
        }
        return publish(pool, write).await;
    }
    let stream = write.stream.as_str();
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    // The same lock tidewire.publish takes first (see functions/publish.sql).
    transaction
        .execute(
            "select pg_advisory_xact_lock(1953955840, hashtext($1))",
            &[&stream],
        )
        .await?;
    if let Some(write_id) = write.once() {
        let row = transaction
            .query_one(
                "select tidewire.lookup_write($1, $2, $3, $4, $5::jsonb) as seq",
                &[
                    &stream,
                    &write_id,
                    &write.key,
                    &write.op.as_str(),
                    write.data,
                ],
            )
            .await
            .map_err(rejected)?;
        if let Some(seq) = row.try_get::<_, Option<i64>>("seq")? {
            // Nothing was written; ending the transaction releases the lock.
            transaction.commit().await?;
            return Ok(Published {
                seq: to_u64(seq, "seq")?,
                replayed: true,
            });
        }
    }
    let prior: Option<Value> = transaction
        .query_opt(
            "select coalesce(data, 'null'::jsonb) as data from tidewire.records \
             where stream = $1 and key = $2",
            &[&stream, &write.key],
        )
        .await?
        .map(|row| row.try_get("data"))
        .transpose()?;
    let key = write.key;
    if prior.as_ref().is_some_and(|record| !filter.matches(record)) {
        return Err(OutboxError::OutsideGrant(format!(
            "record {key:?} is outside your grant's filter"
        )));
    }
    if let Some(after) = view::after(write.op, prior.as_ref(), write.data) {
        if !filter.matches(&after) {
            return Err(OutboxError::OutsideGrant(format!(
                "the write would leave record {key:?} outside your grant's filter"
            )));
        }
    }
    let published = publish_on(&*transaction, write).await?;
    transaction.commit().await?;
    Ok(published)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_ignore_write_ids() {
        let stream = StreamName::new("todos").expect("valid");
        let data = Value::Null;
        let mut write = Write {
            stream: &stream,
            key: "k",
            op: Op::Upsert,
            data: &data,
            write_id: Some("w.1"),
        };
        assert_eq!(write.once(), Some("w.1"));
        write.op = Op::Message;
        assert_eq!(write.once(), None);
    }
}
