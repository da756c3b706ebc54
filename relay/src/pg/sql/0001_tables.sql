-- Tidewire migration 1: streams, the outbox, the materialised records and tracked tables.
-- Applied once by relay/src/pg/schema.rs inside a transaction holding the migration lock.

-- One row per durable stream. `seq` is the last sequence number handed out; taking this row's
-- lock (UPDATE ... SET seq = seq + 1) serialises publishers per stream, so seq order is commit
-- order and there are no holes. `epoch` changes on every (re)creation: random, positive and
-- below 2^53 so that JavaScript holds it exactly.
create table tidewire.streams (
    name         text primary key,
    epoch        bigint not null default (floor(random() * 4503599627370495) + 1)::bigint,
    seq          bigint not null default 0,
    kind         text not null default 'permanent' check (kind in ('permanent', 'temp')),
    ttl          interval,
    expires_at   timestamptz,
    retain_count bigint check (retain_count >= 0),
    retain_age   interval,
    -- Seq of the oldest retained event minus 1: a resume from `since` < min_seq must resync.
    min_seq      bigint not null default 0,
    created_at   timestamptz not null default now(),
    constraint streams_temp_has_ttl check (kind = 'permanent' or ttl is not null)
);

create index streams_temp_expiry on tidewire.streams (expires_at) where kind = 'temp';

-- The outbox: every durable event, gap-free per stream.
create table tidewire.events (
    stream       text not null,
    seq          bigint not null,
    key          text not null,
    op           text not null check (op in ('upsert', 'delete', 'patch')),
    data         jsonb,
    committed_at timestamptz not null default clock_timestamp(),
    constraint events_pkey primary key (stream, seq)
);

-- The current value of every key, with the seq that last wrote it.
create table tidewire.records (
    stream text not null,
    key    text not null,
    seq    bigint not null,
    data   jsonb,
    constraint records_pkey primary key (stream, key)
);

-- Tables whose row changes are published by tidewire.track_table.
create table tidewire.tracked (
    tbl        regclass not null,
    stream     text not null,
    key_column text not null,
    created_at timestamptz not null default now(),
    constraint tracked_pkey primary key (tbl)
);
