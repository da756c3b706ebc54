-- Tidewire migration 7: placeholder (partitioned) streams and column lists for tracked tables.
-- `stream` now holds the template ('board:{board_id}/tasks'); `columns` names the only columns
-- published, `exclude` the columns never published; at most one of the two is set. The
-- functions are in functions/track.sql.
alter table tidewire.tracked
    add column columns text[],
    add column exclude text[],
    add constraint tracked_one_column_list check (columns is null or exclude is null);
