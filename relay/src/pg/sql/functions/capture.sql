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
-- data) with op 'upsert' or 'delete'. Streams are created on first use and locked in name
-- order; each event gets the next seq of its stream and the key's previous value as `prior`,
-- exactly as tidewire.publish would give it; records follow; every stream is notified once
-- with a pointer to its new head. Returns each stream's epoch and last seq.
--
-- Names and keys must be valid (the sequencer checks them with the same rules first).
create or replace function tidewire.capture_apply(
    streams text[], keys text[], ops text[], datas jsonb[]
)
returns table (stream text, epoch bigint, last_seq bigint)
language plpgsql
as $$
declare
    v_names text[];
begin
    select array_agg(distinct u.name order by u.name) into v_names
      from unnest(capture_apply.streams) as u(name);
    if v_names is null then
        return;
    end if;
    insert into tidewire.streams as s (name)
    select u.name from unnest(v_names) as u(name)
    on conflict do nothing;
    -- The same lock tidewire.publish takes, in a fixed order: two sequencer batches cannot
    -- deadlock, and a publish waits like it waits for another publish.
    perform 1 from tidewire.streams as s where s.name = any(v_names) order by s.name for update;

    -- One statement: every CTE reads the records as they were before it, which is what the
    -- first event of each key needs as its prior; later events of a key take the value the
    -- event before them left (`lag`).
    return query
    with input as (
        select u.ord, u.stream, u.key, u.op, u.data
          from unnest(capture_apply.streams, capture_apply.keys, capture_apply.ops, capture_apply.datas)
               with ordinality as u(stream, key, op, data, ord)
    ),
    counts as (
        select i.stream, count(*) as n from input as i group by i.stream
    ),
    bumped as (
        update tidewire.streams as s
           set seq = s.seq + c.n
          from counts as c
         where s.name = c.stream
        returning s.name, s.seq - c.n as base, s.epoch
    ),
    numbered as (
        select i.ord, i.stream, i.key, i.op, i.data, b.epoch,
               b.base + row_number() over (partition by i.stream order by i.ord) as seq,
               row_number() over (partition by i.stream, i.key order by i.ord) as nth,
               row_number() over (partition by i.stream, i.key order by i.ord desc) as last,
               lag(case when i.op = 'delete' then null else coalesce(i.data, 'null'::jsonb) end)
                   over (partition by i.stream, i.key order by i.ord) as before
          from input as i
          join bumped as b on b.name = i.stream
    ),
    written as (
        insert into tidewire.events (stream, seq, key, op, data, prior)
        select n.stream, n.seq, n.key, n.op, n.data,
               case when n.nth = 1 then (select coalesce(r.data, 'null'::jsonb)
                                           from tidewire.records as r
                                          where r.stream = n.stream and r.key = n.key)
                    else n.before end
          from numbered as n
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
    select n.stream, max(n.epoch), max(n.seq)
      from numbered as n
     group by n.stream;

    perform pg_notify('tw:' || b.name,
                      '{"t":"ptr","stream":' || to_json(b.name)::text
                      || ',"epoch":' || b.epoch || ',"seq":' || b.seq || '}')
       from tidewire.streams as b
      where b.name = any(v_names);
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
