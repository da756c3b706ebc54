-- Tidewire migration 6: every stored event keeps the key's value before it (its pre-image),
-- so a relay can tell whether a record entered or left a filtered view without asking
-- PostgreSQL per subscriber. Null when the key had no value (a first upsert or patch).
alter table tidewire.events add column prior jsonb;
