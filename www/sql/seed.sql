-- A few tasks for a brand-new board, inserted through the tracked table (so they reach the
-- browsers the same way a row written by any application would). Runs on every start of
-- scripts/demo but only seeds a stream that has never had an event.
insert into demo_tasks (id, title, done, pos, author)
select v.id, v.title, v.done, extract(epoch from clock_timestamp()) * 1000 + v.n * 1024, 'psql'
  from (values
    (1, 'sql-welcome', 'Open this page in a second window', false),
    (2, 'sql-edit',    'Click a title to rename it; watch the other window', false),
    (3, 'sql-psql',    'Insert a row from psql (see Write from SQL)', false),
    (4, 'sql-done',    'Start the relay with scripts/demo', true)
  ) as v(n, id, title, done)
 where coalesce((select seq from tidewire.streams where name = 'demo:tasks'), 0) = 0
on conflict (id) do nothing;
