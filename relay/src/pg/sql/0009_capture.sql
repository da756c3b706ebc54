-- Tidewire migration 9: capture through logical replication (see functions/capture.sql and
-- docs/SQL.md "Capture modes"). One row says how tracked tables are captured and how far the
-- sequencer has written: `lsn` is the end of the last source transaction whose events are in
-- the outbox, written in the same transaction as those events, so a sequencer that crashes
-- after a batch commits and before it confirms the slot skips that batch when it reads it again.
create table tidewire.capture (
    id          boolean primary key default true check (id),
    mode        text not null default 'trigger' check (mode in ('trigger', 'logical')),
    slot        text,
    lsn         pg_lsn,
    source_at   timestamptz,
    updated_at  timestamptz not null default now()
);
insert into tidewire.capture default values;
