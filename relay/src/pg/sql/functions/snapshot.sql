-- Tidewire SQL functions: paged snapshots, a stream's records read page by page as they were
-- at one seq (see docs/SQL.md "Paged snapshots").

-- Up to `lim` records of `stream` as they were right after event `at`, in key order, keys
-- after `after` only (NULL: from the first key). A record is `(key, seq, data)`, `seq` being
-- the event that last wrote it. Records changed since `at` are read from the first later
-- event's pre-image (`prior`, `prior_seq`); one deleted since comes back, one created since
-- is left out. So every page of one `at` belongs to the same consistent state, however
-- long the pages take to read and whatever commits meanwhile, for as long as the events after
-- `at` are retained (streams.min_seq <= at) and have pre-image seqs (streams.asof_from <= at).
-- The caller checks both, and the epoch, in the same transaction (REPEATABLE READ) or
-- statement: see relay/src/pg/snapshot/read.rs.
create or replace function tidewire.snapshot_page(stream text, at bigint, after text, lim integer)
returns table (key text, seq bigint, data jsonb)
language plpgsql
stable
as $$
begin
    return query
    with changed as (
        -- Each key changed after `at`, with its first later event's pre-image.
        select distinct on (e.key) e.key, e.prior_seq, e.prior
          from tidewire.events as e
         where e.stream = snapshot_page.stream
           and e.seq > snapshot_page.at
           and e.key > coalesce(snapshot_page.after, '')
         order by e.key, e.seq
    )
    select p.key, p.seq, p.data
      from ((select r.key, r.seq, r.data
               from tidewire.records as r
              where r.stream = snapshot_page.stream
                and r.key > coalesce(snapshot_page.after, '')
                and r.seq <= snapshot_page.at
              order by r.key
              limit snapshot_page.lim)
            union all
            (select c.key, c.prior_seq, c.prior
               from changed as c
              where c.prior is not null
              order by c.key
              limit snapshot_page.lim)) as p
     order by p.key
     limit snapshot_page.lim;
end
$$;
