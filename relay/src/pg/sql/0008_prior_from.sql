-- Tidewire migration 8: how far each stream's history goes without pre-images. Events stored
-- before migration 6 have none, so a view cannot be judged on them: a filtered subscriber
-- resuming from a position before `prior_from` gets a fresh snapshot instead of a replay.
-- Streams created from now on have pre-images from their first event (default 0). On a
-- database that already had migration 6, this is conservative: it also covers the events
-- stored since, which do have pre-images.
alter table tidewire.streams add column prior_from bigint not null default 0;
update tidewire.streams set prior_from = seq;
