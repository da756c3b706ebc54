-- The demo's schema: run by scripts/demo and the demo's tests on every start (idempotent).
--
-- The board is the durable stream `demo:tasks`. Browsers write to it with the npm package
-- (`collection.set/patch/delete`, which call tidewire.publish() inside PostgreSQL), and the
-- ordinary table `demo_tasks` is the SQL door into the same stream: after
-- tidewire.track_table() any INSERT/UPDATE/DELETE on it is published to every open tab (read
-- from the WAL by the relay on the embedded PostgreSQL, by a trigger where the server has no
-- logical replication; docs/OPERATIONS.md).
--
--   insert into demo_tasks (title) values ('Hello from SQL');
--   select * from demo_board;          -- the whole board, whoever wrote it

create table if not exists demo_tasks (
  id         text primary key default 'sql-' || substr(md5(random()::text || clock_timestamp()::text), 1, 8),
  title      text not null check (length(title) between 1 and 200),
  done       boolean not null default false,
  -- Sort position (fractional, so a move is one write): new rows go to the bottom.
  pos        double precision not null default extract(epoch from clock_timestamp()) * 1000,
  author     text not null default 'psql',
  created_at timestamptz not null default now()
);

-- Re-targeting an already tracked table is allowed, so this is safe on every start.
select tidewire.track_table('demo_tasks', 'demo:tasks', 'id');

-- The board as the browsers see it (the stream's current records), for reading from SQL.
create or replace view demo_board as
  select r.key                              as id,
         r.data ->> 'title'                 as title,
         coalesce((r.data ->> 'done')::boolean, false) as done,
         (r.data ->> 'pos')::double precision as pos,
         r.data ->> 'author'                as author,
         r.seq                              as seq
    from tidewire.records r
   where r.stream = 'demo:tasks'
   order by (r.data ->> 'pos')::double precision, r.key;
