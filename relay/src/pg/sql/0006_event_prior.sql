-- Tidewire migration 6: every stored event keeps the key's value before it (its pre-image),
-- so a relay can tell whether a record entered or left a filtered view without asking
-- PostgreSQL per subscriber. Null when the key had no value (a first upsert or patch).
alter table tidewire.events add column prior jsonb;

-- Events stored before this migration have no pre-image, so a view cannot be judged on them:
-- a filtered subscriber resuming from a position before `prior_from` gets a fresh snapshot
-- instead of a replay. Streams created from now on have pre-images from their first event.
alter table tidewire.streams add column prior_from bigint not null default 0;
update tidewire.streams set prior_from = seq;
