//! Choosing and preparing a capture mode: `auto` resolved against what the server allows;
//! logical mode's publication, slot and switch of the tracked tables (with a resync of their
//! streams when the slot was lost); the way back to triggers (drain the slot, then drop it);
//! and the slot's health (lag, invalidation, slots left behind by other deployments).

use pgwire_replication::Lsn;
use tokio_postgres::Client;

use super::CaptureError;

/// How tracked tables are captured (`--capture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CaptureMode {
    /// Logical replication when the server allows it (`wal_level=logical` and a role with
    /// REPLICATION), else triggers.
    Auto,
    /// Read committed changes from a replication slot; one relay (elected) is the sequencer.
    Logical,
    /// Row triggers publish inside the writing transaction.
    Trigger,
}

/// The mode `requested` comes to on this server, and why.
pub(crate) async fn resolve(
    client: &Client,
    requested: CaptureMode,
) -> Result<(bool, String), CaptureError> {
    let row = client
        .query_one(
            "select current_setting('wal_level'), \
                    (select r.rolsuper or r.rolreplication from pg_catalog.pg_roles as r \
                      where r.rolname = current_user), \
                    current_setting('max_replication_slots')::int",
            &[],
        )
        .await?;
    let wal_level: String = row.try_get(0)?;
    let may_replicate: bool = row.try_get::<_, Option<bool>>(1)?.unwrap_or(false);
    let slots: i32 = row.try_get(2)?;
    let missing = if wal_level != "logical" {
        Some(format!("wal_level is {wal_level}, not logical"))
    } else if !may_replicate {
        Some("the relay's role has neither REPLICATION nor SUPERUSER".to_owned())
    } else if slots < 1 {
        Some("max_replication_slots is 0".to_owned())
    } else {
        None
    };
    match (requested, missing) {
        (CaptureMode::Trigger, _) => Ok((false, "trigger (--capture trigger)".into())),
        (CaptureMode::Logical, None) => Ok((true, "logical (--capture logical)".into())),
        (CaptureMode::Logical, Some(why)) => Err(CaptureError::Unavailable(why)),
        (CaptureMode::Auto, None) => Ok((
            true,
            "logical (--capture auto: the server allows it)".into(),
        )),
        (CaptureMode::Auto, Some(why)) => Ok((false, format!("trigger (--capture auto: {why})"))),
    }
}

/// Makes logical capture ready on `slot`: the publication, the slot (a lost one replaced,
/// and the tracked tables' streams resynced), the durable position, and every tracked table
/// switched from triggers to the publication.
pub(crate) async fn prepare_logical(client: &Client, slot: &str) -> Result<(), CaptureError> {
    client
        .batch_execute(
            "do $$ begin \
               if not exists (select 1 from pg_catalog.pg_publication as p \
                               where p.pubname = tidewire.capture_publication()) then \
                 execute format('create publication %I', tidewire.capture_publication()); \
               end if; \
             end $$",
        )
        .await?;
    let existing = client
        .query_opt(
            "select coalesce(wal_status, '') from pg_catalog.pg_replication_slots \
              where slot_name = $1 and database = current_database()",
            &[&slot],
        )
        .await?;
    let lost = matches!(&existing, Some(row) if row.try_get::<_, String>(0)? == "lost");
    if lost {
        tracing::error!(slot, "capture: the replication slot was invalidated (max_slot_wal_keep_size); replacing it and resyncing tracked streams");
        client
            .execute("select pg_drop_replication_slot($1)", &[&slot])
            .await?;
    }
    let created = if existing.is_none() || lost {
        let row = client
            .query_one(
                "select lsn::text from pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&slot],
            )
            .await?;
        let lsn: String = row.try_get(0)?;
        tracing::info!(slot, %lsn, "capture: created the replication slot");
        Some(lsn)
    } else {
        None
    };
    let state = client
        .query_one("select slot, lsn::text from tidewire.capture", &[])
        .await?;
    let known_slot: Option<String> = state.try_get(0)?;
    let known_lsn: Option<String> = state.try_get(1)?;
    let had_position = known_slot.as_deref() == Some(slot) && known_lsn.is_some();
    match created {
        Some(_) if had_position => {
            // The slot we were reading is gone: changes since our position are unknown.
            tracing::error!(
                slot,
                "capture: the replication slot was lost; every tracked stream starts a new epoch"
            );
            resync(client, slot).await?;
        }
        Some(lsn) => {
            client
                .execute(
                    "update tidewire.capture set slot = $1, lsn = $2::text::pg_lsn, updated_at = now()",
                    &[&slot, &lsn],
                )
                .await?;
        }
        None if !had_position => {
            // A slot of this name exists but we never read it (made by hand, or by another
            // deployment): start where it stands.
            let row = client
                .query_one(
                    "select confirmed_flush_lsn::text from pg_catalog.pg_replication_slots where slot_name = $1",
                    &[&slot],
                )
                .await?;
            let lsn: Option<String> = row.try_get(0)?;
            client
                .execute(
                    "update tidewire.capture set slot = $1, lsn = $2::text::pg_lsn, updated_at = now()",
                    &[&slot, &lsn],
                )
                .await?;
        }
        None => {}
    }
    switch(client, "logical").await
}

/// Moves the database to capture `mode` (`trigger` or `logical`) if it is in the other one.
async fn switch(client: &Client, mode: &str) -> Result<(), CaptureError> {
    let current: String = client
        .query_one("select tidewire.capture_mode()", &[])
        .await?
        .try_get(0)?;
    if current != mode {
        let moved: i32 = client
            .query_one("select tidewire.capture_switch($1)", &[&mode])
            .await?
            .try_get(0)?;
        tracing::info!(tables = moved, from = %current, to = mode, "capture: tracked tables switched");
    }
    Ok(())
}

/// Restarts every tracked table's streams from the table's current rows, and sets the
/// durable position to now: under SHARE locks, so each row change is either in the rows
/// read or after the position.
async fn resync(client: &Client, slot: &str) -> Result<(), CaptureError> {
    client.batch_execute("begin").await?;
    let result = async {
        let tables = client
            .query("select t.tbl::oid, tidewire.qualified_name(t.tbl) from tidewire.tracked as t order by t.tbl", &[])
            .await?;
        for table in &tables {
            let name: String = table.try_get(1)?;
            client
                .batch_execute(&format!("lock table {name} in share mode"))
                .await?;
        }
        for table in &tables {
            let oid: u32 = table.try_get(0)?;
            client
                .execute("select tidewire.capture_resync($1::oid::regclass)", &[&oid])
                .await?;
        }
        client
            .execute(
                "update tidewire.capture set slot = $1, lsn = pg_current_wal_insert_lsn(), updated_at = now()",
                &[&slot],
            )
            .await?;
        Ok::<_, CaptureError>(())
    }
    .await;
    match result {
        Ok(()) => {
            client.batch_execute("commit").await?;
            Ok(())
        }
        Err(error) => {
            let _ = client.batch_execute("rollback").await;
            Err(error)
        }
    }
}

/// Switches tracked tables back to triggers (if logical mode had them).
pub(crate) async fn switch_to_trigger(client: &Client) -> Result<(), CaptureError> {
    switch(client, "trigger").await
}

/// In trigger mode, the position a drain of a slot logical mode left must reach
/// (everything committed before now), or `None` when there is no slot.
pub(crate) async fn drain_target(client: &Client, slot: &str) -> Result<Option<Lsn>, CaptureError> {
    let exists = client
        .query_opt(
            "select 1 from pg_catalog.pg_replication_slots where slot_name = $1 and database = current_database()",
            &[&slot],
        )
        .await?
        .is_some();
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_one(
            "select pg_logical_emit_message(false, $1, '')::text",
            &[&super::sequencer::DRAIN_MESSAGE],
        )
        .await?;
    let lsn: String = row.try_get(0)?;
    Lsn::parse(&lsn)
        .map(Some)
        .map_err(|error| CaptureError::Protocol(error.to_string()))
}

/// Drops `slot` after a drain, and forgets its position.
pub(crate) async fn drop_slot(client: &Client, slot: &str) -> Result<(), CaptureError> {
    client
        .execute(
            "select pg_drop_replication_slot(slot_name) from pg_catalog.pg_replication_slots \
              where slot_name = $1 and database = current_database()",
            &[&slot],
        )
        .await?;
    client
        .execute(
            "update tidewire.capture set slot = null, lsn = null, updated_at = now()",
            &[],
        )
        .await?;
    tracing::info!(slot, "capture: drained and dropped the replication slot");
    Ok(())
}

/// The slot's health: (WAL bytes not confirmed, lag in milliseconds, stale slots, lost).
pub(crate) async fn health(
    client: &Client,
    slot: &str,
) -> Result<(u64, u64, Vec<String>, bool), CaptureError> {
    let row = client
        .query_opt(
            "select greatest(pg_current_wal_lsn() - s.confirmed_flush_lsn, 0)::int8, \
                    coalesce((extract(epoch from r.flush_lag) * 1000)::int8, 0), \
                    coalesce(s.wal_status, '') = 'lost' \
               from pg_catalog.pg_replication_slots as s \
               left join pg_catalog.pg_stat_replication as r on r.pid = s.active_pid \
              where s.slot_name = $1 and s.database = current_database()",
            &[&slot],
        )
        .await?;
    let (bytes, millis, lost) = match row {
        Some(row) => (
            u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0),
            u64::try_from(row.try_get::<_, i64>(1)?).unwrap_or(0),
            row.try_get(2)?,
        ),
        None => (0, 0, false),
    };
    let stale = client
        .query(
            "select slot_name::text from pg_catalog.pg_replication_slots \
              where slot_type = 'logical' and not active and slot_name like 'tidewire%' \
                and slot_name <> $1 order by slot_name",
            &[&slot],
        )
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<Vec<String>, _>>()?;
    Ok((bytes, millis, stale, lost))
}
