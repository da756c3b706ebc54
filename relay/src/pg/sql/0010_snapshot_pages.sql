-- Tidewire migration 10: snapshots read page by page "as of" a seq (functions/snapshot.sql).
-- A record changed after the snapshot's seq is read from the first later event's pre-image:
-- `prior` holds its value, and `prior_seq` (new) the seq of the event that had written it
-- (SQL NULL when the key had no record). Events stored before this migration have no
-- `prior_seq`, so `asof_from` says from which seq on a stream can be read as of a seq: a
-- snapshot position before it is refused as expired (the reader starts a new snapshot).
-- Streams created from now on can be read as of any retained seq (default 0).
alter table tidewire.events add column prior_seq bigint;
alter table tidewire.streams add column asof_from bigint not null default 0;
update tidewire.streams set asof_from = seq;
