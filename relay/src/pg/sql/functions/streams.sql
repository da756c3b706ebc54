-- Tidewire SQL functions: stream administration (create, drop, retention) and the janitor's sweep (trim, trim_all, expire_temp_streams).
--
-- The one current definition of each function here. Applied with `create or replace` on every
-- migration run, before the numbered migrations (which hold tables, indexes and triggers only),
-- in the migration's transaction. A change that renames a parameter or changes a return type
-- needs a `drop function` first, here. See docs/SQL.md for the contract.

-- Creates `stream`, or updates the kind and ttl of an existing one (its epoch, seq and events
-- stay). A temp stream needs a positive ttl and expires at now() + ttl; calling this again
-- pushes the expiry out. Returns the stream's epoch.
create or replace function tidewire.create_stream(stream text, kind text default 'permanent', ttl interval default null)
returns bigint
language plpgsql
as $$
declare
    v_epoch bigint;
begin
    perform tidewire.check_stream(create_stream.stream);
    if create_stream.kind is null or create_stream.kind not in ('permanent', 'temp') then
        raise exception 'tidewire: stream kind must be permanent or temp, got %',
                coalesce(left(quote_literal(create_stream.kind), 40), 'NULL')
            using errcode = '22023';
    end if;
    if create_stream.kind = 'temp' and (create_stream.ttl is null or create_stream.ttl <= interval '0') then
        raise exception 'tidewire: a temp stream needs a positive ttl' using errcode = '22023';
    end if;
    if create_stream.kind = 'permanent' and create_stream.ttl is not null then
        raise exception 'tidewire: only temp streams have a ttl' using errcode = '22023';
    end if;

    insert into tidewire.streams as s (name, kind, ttl, expires_at)
    values (create_stream.stream, create_stream.kind, create_stream.ttl,
            case when create_stream.kind = 'temp' then now() + create_stream.ttl end)
    on conflict on constraint streams_pkey
    do update set kind = excluded.kind, ttl = excluded.ttl, expires_at = excluded.expires_at
    returning s.epoch into v_epoch;
    return v_epoch;
end
$$;

-- Deletes the stream's events, records, write ids and row, and tells subscribers on
-- 'tw:' || stream with {"t":"drop","stream":S,"epoch":E}. The next publish recreates it with a
-- new epoch (and a write id seen before the drop commits again). Returns whether the stream
-- existed.
create or replace function tidewire.drop_stream(stream text)
returns boolean
language plpgsql
as $$
declare
    v_epoch bigint;
begin
    perform tidewire.check_stream(drop_stream.stream);
    delete from tidewire.streams as s where s.name = drop_stream.stream returning s.epoch into v_epoch;
    if not found then
        return false;
    end if;
    delete from tidewire.events as e where e.stream = drop_stream.stream;
    delete from tidewire.records as r where r.stream = drop_stream.stream;
    delete from tidewire.writes as w where w.stream = drop_stream.stream;
    perform pg_notify('tw:' || drop_stream.stream,
        '{"t":"drop","stream":' || to_json(drop_stream.stream)::text || ',"epoch":' || v_epoch || '}');
    return true;
end
$$;

-- Sets how many events (max_events) and how much time (max_age) of history the stream keeps;
-- NULL means the default (10000 events, 7 days). Creates the stream if it is unknown.
create or replace function tidewire.set_retention(stream text, max_events bigint, max_age interval)
returns void
language plpgsql
as $$
begin
    perform tidewire.check_stream(set_retention.stream);
    if set_retention.max_events < 0 then
        raise exception 'tidewire: max_events must not be negative' using errcode = '22023';
    end if;
    if set_retention.max_age < interval '0' then
        raise exception 'tidewire: max_age must not be negative' using errcode = '22023';
    end if;
    insert into tidewire.streams as s (name, retain_count, retain_age)
    values (set_retention.stream, set_retention.max_events, set_retention.max_age)
    on conflict on constraint streams_pkey
    do update set retain_count = excluded.retain_count, retain_age = excluded.retain_age;
end
$$;

-- Applies the stream's retention: deletes events beyond the last retain_count (default 10000)
-- or older than retain_age (default 7 days), keeping the retained window contiguous, and moves
-- min_seq to the seq before the oldest kept event. Returns the number of events deleted.
-- Takes the stream row's lock only when something is deleted.
create or replace function tidewire.trim(stream text)
returns bigint
language plpgsql
as $$
declare
    v_name    text := $1;
    v_head    bigint;
    v_min     bigint;
    v_count   bigint;
    v_age     interval;
    v_new_min bigint;
    v_aged    bigint;
    v_deleted bigint;
begin
    select s.seq, s.min_seq, coalesce(s.retain_count, 10000), coalesce(s.retain_age, interval '7 days')
      into v_head, v_min, v_count, v_age
      from tidewire.streams as s
     where s.name = v_name;
    if not found then
        return 0;
    end if;
    v_new_min := greatest(v_min, v_head - v_count);
    -- committed_at grows with seq (both are taken under the stream row's lock), so the newest
    -- expired event bounds the expired prefix.
    select e.seq into v_aged
      from tidewire.events as e
     where e.stream = v_name and e.seq > v_new_min and e.committed_at < now() - v_age
     order by e.seq desc
     limit 1;
    v_new_min := greatest(v_new_min, v_aged);
    if v_new_min <= v_min then
        return 0;
    end if;
    delete from tidewire.events as e
     where e.stream = v_name and e.seq > v_min and e.seq <= v_new_min;
    get diagnostics v_deleted = row_count;
    update tidewire.streams as s
       set min_seq = greatest(s.min_seq, v_new_min)
     where s.name = v_name;
    return v_deleted;
end
$$;

-- tidewire.trim on every stream, plus forgetting tracked tables that were dropped. Returns the
-- total number of events deleted. Runs in one transaction: a janitor that wants shorter lock
-- holds calls tidewire.trim per stream in separate transactions instead.
create or replace function tidewire.trim_all()
returns bigint
language plpgsql
as $$
declare
    v_name  text;
    v_total bigint := 0;
begin
    delete from tidewire.tracked as t
     where not exists (select 1 from pg_catalog.pg_class as c where c.oid = t.tbl);
    for v_name in select s.name from tidewire.streams as s order by s.name loop
        v_total := v_total + tidewire.trim(v_name);
    end loop;
    return v_total;
end
$$;

-- Drops every temp stream whose expires_at has passed (each drop notifies its subscribers)
-- and returns their names. Streams locked by a concurrent publisher are left for the next run.
create or replace function tidewire.expire_temp_streams()
returns setof text
language plpgsql
as $$
declare
    v_name text;
begin
    for v_name in
        select s.name from tidewire.streams as s
         where s.kind = 'temp' and s.expires_at <= now()
         order by s.name
           for update skip locked
    loop
        perform tidewire.drop_stream(v_name);
        return next v_name;
    end loop;
    return;
end
$$;
