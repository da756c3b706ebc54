-- Tidewire migration 7: placeholder (partitioned) streams and column lists for tracked tables.
-- Filled in by the views work on tidewire.track_table (functions/track.sql).
select 1;
