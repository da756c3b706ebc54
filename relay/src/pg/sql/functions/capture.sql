-- Tidewire SQL functions: capture through logical replication: the sequencer's batched write to the outbox, TRUNCATE, and switching tracked tables between triggers and the publication.
--
-- The one current definition of each function here. Applied with `create or replace` on every
-- migration run, before the numbered migrations, in the migration's transaction. plpgsql only:
-- the bodies name tables that a later migration may create. See docs/SQL.md "Capture modes".

-- The publication logical capture reads. Created by tidewire.capture_switch.
create or replace function tidewire.capture_publication() returns text
language sql immutable
as $$ select 'tidewire' $$;

-- How tracked tables are captured now: 'trigger' or 'logical'.
create or replace function tidewire.capture_mode() returns text
language plpgsql stable
as $$
begin
    return coalesce((select c.mode from tidewire.capture as c), 'trigger');
end
$$;

-- Writes one batch of the sequencer: events in source commit order, each (stream, key, op,
-- data) with op 'upsert' or 'delete' and, in `committed`, its source transaction's commit time
-- in microseconds since 2000-01-01 (the event's committed_at, so `ts` and delivery latency
-- count from the application's commit; NULL: now). Streams are created on first use and
-- locked in name order; each event gets the next seq of its stream and the key's previous
-- value as `prior`, exactly as tidewire.publish would give it; records follow. Each stream
-- is notified with its events inline (up to 16, as tidewire.publish does: no outbox read
-- for a relay) or with one pointer to its new head. Returns the number of events.
--
-- Names and keys must be valid (the sequencer checks them with the same rules first).
create or replace function tidewire.capture_apply(
    streams text[], keys text[], ops text[], datas jsonb[], committed bigint[] default null
)
returns integer
language plpgsql
-- A batch touches a few thousand keys of tables that hold millions: every lookup must go
-- through the primary keys. Left to its estimates for the unnested arrays, the planner
-- hash-joined whole tables (measured: 5,300 events/s, most of it in seq scans; see
-- docs/BENCHMARKS.md, section 2c).
set enable_hashjoin = off
set enable_mergejoin = off
set enable_seqscan = off
-- Planning the statement each call cost half of a one-event batch (1.0 ms against 0.5 ms).
set plan_cache_mode = force_generic_plan
as $$
declare
    v_names    text[];
    v_locked   bigint;
    v_channels text[];
    v_payloads text[];
begin
    select array_agg(distinct u.name order by u.name) into v_names
      from unnest(capture_apply.streams) as u(name);
    if v_names is null then
        return 0;
    end if;
    insert into tidewire.streams as s (name)
    select u.name from unnest(v_names) as u(name)
    on conflict do nothing;
    -- The same lock tidewire.publish takes, in a fixed order: two sequencer batches cannot
    -- deadlock, and a publish waits like it waits for another publish. A stream dropped
    -- between the insert and the lock would lose its events: fail the batch instead (the
    -- sequencer writes it again, creating the stream anew).
    select count(*) into v_locked
      from (select 1 from tidewire.streams as s
             where s.name = any(v_names) order by s.name for update) as l;
    if v_locked <> array_length(v_names, 1) then
        raise exception 'tidewire: could not lock % of % streams (concurrently dropped)',
                array_length(v_names, 1) - v_locked, array_length(v_names, 1)
            using errcode = '40001';
    end if;

    -- One statement: every CTE reads the records as they were before it, which is what the
    -- first event of each key needs as its prior; later
    -- events of a key take the value the event before them left (`lag`).
    with input as (
        select u.ord, u.stream, u.key, u.op, u.data,
               coalesce(timestamptz '2000-01-01 00:00:00+00' + u.micros * interval '1 microsecond',
                        clock_timestamp()) as at
          from unnest(capture_apply.streams, capture_apply.keys, capture_apply.ops, capture_apply.datas,
                      capture_apply.committed)
               with ordinality as u(stream, key, op, data, micros, ord)
    ),
    counts as (
        select i.stream, count(*) as n from input as i group by i.stream
    ),
    bumped as (
        update tidewire.streams as s
           set seq = s.seq + c.n
          from counts as c
         where s.name = c.stream
        returning s.name, s.seq - c.n as base, s.epoch, c.n
    ),
    numbered as (
        select i.ord, i.stream, i.key, i.op, i.data, i.at, b.epoch, b.n,
               b.base + row_number() over (partition by i.stream order by i.ord) as seq,
               row_number() over (partition by i.stream order by i.ord desc) as tail,
               row_number() over (partition by i.stream, i.key order by i.ord desc) as last,
               -- The key's value before this event: the event before it in the batch, or the
               -- record (SQL NULL when there is none, JSON null when its value is null).
               case when row_number() over (partition by i.stream, i.key order by i.ord) = 1
                    then r.prior
                    else lag(case when i.op = 'delete' then null else coalesce(i.data, 'null'::jsonb) end)
                             over (partition by i.stream, i.key order by i.ord)
               end as prior,
               r.prior_seq as record_seq
          from input as i
          join bumped as b on b.name = i.stream
          -- A lookup by primary key per event: a join would scan every record of the table.
          left join lateral (select coalesce(rec.data, 'null'::jsonb) as prior, rec.seq as prior_seq
                               from tidewire.records as rec
                              where rec.stream = i.stream and rec.key = i.key) as r on true
    ),
    written as (
        insert into tidewire.events (stream, seq, key, op, data, committed_at, prior, prior_seq)
        select n.stream, n.seq, n.key, n.op, n.data, n.at, n.prior,
               -- The seq that wrote `prior` (paged snapshots read records as of a seq): the
               -- record's, or the event before in the batch (none after a delete).
               case when lag(n.seq) over k is null then n.record_seq
                    when lag(n.op) over k = 'delete' then null
                    else lag(n.seq) over k
               end
          from numbered as n
        window k as (partition by n.stream, n.key order by n.ord)
         order by n.ord
        returning 1
    ),
    -- Each key ends as its last event left it.
    upserted as (
        insert into tidewire.records as r (stream, key, seq, data)
        select n.stream, n.key, n.seq, n.data
          from numbered as n
         where n.last = 1 and n.op <> 'delete'
        on conflict on constraint records_pkey
        do update set seq = excluded.seq, data = excluded.data
        returning 1
    ),
    deleted as (
        delete from tidewire.records as r
         using numbered as n
         where n.last = 1 and n.op = 'delete' and r.stream = n.stream and r.key = n.key
        returning 1
    )
    select array_agg('tw:' || n.stream order by n.stream, n.seq),
           array_agg(case when n.n <= 16
                          then tidewire.event_payload(n.stream, n.epoch, n.seq, n.key, n.op, n.data, n.prior, n.at)
                          else '{"t":"ptr","stream":' || to_json(n.stream)::text
                               || ',"epoch":' || n.epoch || ',"seq":' || n.seq || '}'
                     end order by n.stream, n.seq)
      into v_channels, v_payloads
      from numbered as n
     where n.n <= 16 or n.tail = 1;

    -- In seq order within each stream.
    for i in 1 .. coalesce(array_length(v_channels, 1), 0) loop
        perform pg_notify(v_channels[i], v_payloads[i]);
    end loop;
    return array_length(capture_apply.streams, 1);
end
$$;

-- capture_apply, then the sequencer's durable position of `slot` moved from `from_lsn` to
-- `to_lsn` (source commit time `source_micros`), in the caller's transaction: false, with
-- nothing written, when the position is no longer `from_lsn` (the batch was written before,
-- or another sequencer took over).
create or replace function tidewire.capture_write(
    streams text[], keys text[], ops text[], datas jsonb[], committed bigint[],
    slot text, from_lsn pg_lsn, to_lsn pg_lsn, source_micros bigint
)
returns boolean
language plpgsql
as $$
begin
    update tidewire.capture as c
       set lsn = capture_write.to_lsn,
           source_at = timestamptz '2000-01-01 00:00:00+00' + capture_write.source_micros * interval '1 microsecond',
           updated_at = now()
     where c.slot = capture_write.slot and c.lsn = capture_write.from_lsn;
    if not found then
        return false;
    end if;
    perform tidewire.capture_apply(capture_write.streams, capture_write.keys, capture_write.ops,
                                   capture_write.datas, capture_write.committed);
    return true;
end
$$;

-- The deletes a TRUNCATE of tracked table `tbl` publishes in logical mode, as capture_apply
-- input (stream, key) in order: for a fixed stream every key the stream holds, for a
-- template every key of every stream the template can name (the rows are gone by the time
-- the sequencer reads the TRUNCATE, so the streams are matched by the template's shape).
create or replace function tidewire.capture_truncate_keys(tbl regclass)
returns table (stream text, key text)
language plpgsql stable
as $$
declare
    v_template text;
    v_parts    text[];
    v_pattern  text := '';
begin
    select t.stream into v_template from tidewire.tracked as t where t.tbl = capture_truncate_keys.tbl;
    if v_template is null then
        return;
    end if;
    v_parts := tidewire.track_template(v_template);
    if array_length(v_parts, 1) = 1 then
        return query
        select r.stream, r.key from tidewire.records as r where r.stream = v_template order by r.seq;
        return;
    end if;
    for i in 1 .. array_length(v_parts, 1) loop
        if i % 2 = 1 then
            v_pattern := v_pattern || regexp_replace(v_parts[i], '([^A-Za-z0-9_])', '\\\1', 'g');
        else
            v_pattern := v_pattern || '.+';
        end if;
    end loop;
    return query
    select r.stream, r.key from tidewire.records as r
     where r.stream like (replace(replace(replace(v_parts[1], '\', '\\'), '%', '\%'), '_', '\_') || '%')
       and r.stream ~ ('^' || v_pattern || '$')
     order by r.stream, r.seq;
end
$$;

-- Moves every tracked table to capture `mode` ('trigger' or 'logical') in one transaction,
-- so each row change is captured by exactly one path: its table's trigger before the switch
-- commits, the publication after (DROP TRIGGER and ALTER PUBLICATION wait for the table's
-- writers). Logical mode needs the publication (created here) and a replication slot made
-- before this commit; the relay makes it. Returns the number of tables moved.
create or replace function tidewire.capture_switch(mode text) returns integer
language plpgsql
as $$
declare
    v_table record;
    v_count integer := 0;
begin
    if capture_switch.mode is null or capture_switch.mode not in ('trigger', 'logical') then
        raise exception 'tidewire: unknown capture mode %, expected trigger or logical',
                coalesce(quote_literal(capture_switch.mode), 'NULL')
            using errcode = '22023';
    end if;
    if not exists (select 1 from pg_catalog.pg_publication as p where p.pubname = tidewire.capture_publication()) then
        execute format('create publication %I', tidewire.capture_publication());
    end if;
    update tidewire.capture as c set mode = capture_switch.mode, updated_at = now();
    for v_table in select t.tbl from tidewire.tracked as t order by t.tbl loop
        perform tidewire.capture_attach(v_table.tbl);
        v_count := v_count + 1;
    end loop;
    return v_count;
end
$$;

-- Makes `tbl` (tracked) captured the current mode's way: triggers (and out of the
-- publication) in trigger mode; in the publication with REPLICA IDENTITY FULL (deletes and
-- moves between streams need the whole old row) and without triggers in logical mode.
create or replace function tidewire.capture_attach(tbl regclass) returns void
language plpgsql
as $$
declare
    v_tracked boolean;
    v_target text := tidewire.qualified_name(capture_attach.tbl);
    v_in_pub boolean;
begin
    v_tracked := exists (select 1 from tidewire.tracked as t where t.tbl = capture_attach.tbl);
    select exists (select 1 from pg_catalog.pg_publication_rel as pr
                     join pg_catalog.pg_publication as p on p.oid = pr.prpubid
                    where p.pubname = tidewire.capture_publication() and pr.prrelid = capture_attach.tbl)
      into v_in_pub;
    if tidewire.capture_mode() = 'logical' and v_tracked then
        perform tidewire.drop_track_triggers(capture_attach.tbl);
        execute format('alter table %s replica identity full', v_target);
        if not v_in_pub then
            execute format('alter publication %I add table %s', tidewire.capture_publication(), v_target);
        end if;
    else
        if v_in_pub then
            execute format('alter publication %I drop table %s', tidewire.capture_publication(), v_target);
        end if;
        if v_tracked then
            perform tidewire.track_install_triggers(capture_attach.tbl);
        end if;
    end if;
    if tidewire.capture_mode() = 'logical' then
        -- Tells the sequencer, in commit order, that the definition changed from here on.
        perform pg_logical_emit_message(true, 'tidewire.track', capture_attach.tbl::oid::text);
    end if;
end
$$;

-- Starts tracked table `tbl`'s streams over after capture lost changes (the replication
-- slot was dropped or invalidated): every stream the table can name that holds records is
-- dropped (its subscribers resync, its next event starts a new epoch), then every current
-- row is published as an upsert. The caller holds a SHARE lock on the table, so the rows
-- read are exactly those committed before the new slot position it records. Returns the
-- number of rows published.
create or replace function tidewire.capture_resync(tbl regclass) returns bigint
language plpgsql
as $$
declare
    v_def     record;
    v_parts   text[];
    v_expr    text;
    v_stream  text;
    v_streams text[];
    v_keys    text[];
    v_datas   jsonb[];
begin
    select * into v_def from tidewire.tracked as t where t.tbl = capture_resync.tbl;
    if not found then
        return 0;
    end if;
    for v_stream in select distinct k.stream from tidewire.capture_truncate_keys(capture_resync.tbl) as k loop
        perform tidewire.drop_stream(v_stream);
    end loop;
    v_parts := tidewire.track_template(v_def.stream);
    v_expr := format('%L', v_parts[1]);
    for i in 1 .. (array_length(v_parts, 1) - 1) / 2 loop
        v_expr := v_expr || format(' || t.%I::text || %L', v_parts[2 * i], v_parts[2 * i + 1]);
    end loop;
    execute format(
        'select array_agg(x.s), array_agg(x.k), array_agg(x.d) from ('
        'select %s as s, t.%I::text as k, tidewire.track_project(to_jsonb(t), %L, %L) as d from %s as t'
        ') as x where x.s is not null and x.k is not null',
        v_expr, v_def.key_column,
        case when v_def.columns is not null then 'columns' when v_def.exclude is not null then 'exclude' end,
        coalesce(v_def.columns, v_def.exclude),
        tidewire.qualified_name(capture_resync.tbl))
      into v_streams, v_keys, v_datas;
    perform tidewire.capture_apply(v_streams, v_keys,
                                   array_fill('upsert'::text, array[coalesce(array_length(v_keys, 1), 0)]),
                                   v_datas);
    return coalesce(array_length(v_keys, 1), 0);
end
$$;
