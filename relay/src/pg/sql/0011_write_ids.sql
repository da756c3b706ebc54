-- Tidewire migration 11: exactly-once writes (functions/writes.sql, docs/SQL.md "Write ids").
-- One row per write id a publish carried: the seq it committed at and a fingerprint of what it
-- wrote, inserted in the publish's own transaction, so the write and its id commit together. A
-- write id seen again on the stream answers the stored seq instead of publishing again. Rows
-- older than the relay's --write-id-window are deleted by its janitor (oldest first, by `at`);
-- tidewire.drop_stream deletes a stream's rows with it.
create table tidewire.writes (
    stream      text not null,
    write_id    text not null,
    seq         bigint not null,
    fingerprint text not null,
    at          timestamptz not null default now(),
    constraint writes_pkey primary key (stream, write_id)
);

create index writes_at on tidewire.writes (at);
