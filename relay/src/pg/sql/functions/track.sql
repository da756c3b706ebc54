-- Tidewire SQL functions: tidewire.track_table / untrack_table: an ordinary table's row changes published to a durable stream through triggers.
--
-- The one current definition of each function here. Applied with `create or replace` on every
-- migration run, before the numbered migrations (which hold tables, indexes and triggers only),
-- in the migration's transaction. A change that renames a parameter or changes a return type
-- needs a `drop function` first, here. See docs/SQL.md for the contract.

-- Row trigger. TG_ARGV[0] is the stream, TG_ARGV[1] the key column. The key is the column's
-- value cast to text; the column name reaches SQL only through format('%I').
create or replace function tidewire.track_trigger() returns trigger
language plpgsql
as $$
declare
    v_stream  text := TG_ARGV[0];
    v_column  text := TG_ARGV[1];
    v_old_key text;
    v_new_key text;
begin
    if TG_OP in ('UPDATE', 'DELETE') then
        execute format('select ($1).%I::text', v_column) into v_old_key using OLD;
    end if;
    if TG_OP in ('INSERT', 'UPDATE') then
        execute format('select ($1).%I::text', v_column) into v_new_key using NEW;
        if v_new_key is null then
            raise exception 'tidewire: tracked table %.% has a NULL key column %',
                    quote_ident(TG_TABLE_SCHEMA), quote_ident(TG_TABLE_NAME), quote_ident(v_column)
                using errcode = '23502';
        end if;
    end if;

    if TG_OP = 'DELETE' then
        perform tidewire.publish(v_stream, v_old_key, 'delete', null);
    elsif TG_OP = 'UPDATE' and v_old_key is distinct from v_new_key then
        if v_old_key is not null then
            perform tidewire.publish(v_stream, v_old_key, 'delete', null);
        end if;
        perform tidewire.publish(v_stream, v_new_key, 'upsert', to_jsonb(NEW));
    else
        perform tidewire.publish(v_stream, v_new_key, 'upsert', to_jsonb(NEW));
    end if;
    return null;
end
$$;

-- Statement trigger for TRUNCATE, which fires no row triggers: publishes a delete for every
-- key the stream still holds, so subscribers see the table empty.
create or replace function tidewire.track_truncate_trigger() returns trigger
language plpgsql
as $$
declare
    v_key text;
begin
    for v_key in
        select r.key from tidewire.records as r where r.stream = TG_ARGV[0] order by r.seq
    loop
        perform tidewire.publish(TG_ARGV[0], v_key, 'delete', null);
    end loop;
    return null;
end
$$;

-- Schema-qualified, quoted name of a table, for dynamic DDL.
create or replace function tidewire.qualified_name(tbl regclass) returns text
language sql stable strict
as $$
    select format('%I.%I', n.nspname, c.relname)
      from pg_catalog.pg_class as c
      join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
     where c.oid = $1
$$;

-- Drops the triggers track_table created on `tbl`, if any (without "does not exist" notices).
create or replace function tidewire.drop_track_triggers(tbl regclass) returns void
language plpgsql
as $$
declare
    v_trigger name;
begin
    for v_trigger in
        select t.tgname from pg_catalog.pg_trigger as t
         where t.tgrelid = drop_track_triggers.tbl
           and t.tgname in ('tidewire_track', 'tidewire_track_truncate')
    loop
        execute format('drop trigger %I on %s', v_trigger, tidewire.qualified_name(drop_track_triggers.tbl));
    end loop;
end
$$;

-- Publishes every INSERT/UPDATE/DELETE (and TRUNCATE) of `tbl` to `stream`, keyed by
-- `key_column`::text: upsert with to_jsonb(NEW), delete on DELETE, delete of the old key then
-- upsert of the new one when an UPDATE changes the key. Calling it again re-targets the table.
create or replace function tidewire.track_table(tbl regclass, stream text, key_column text)
returns void
language plpgsql
as $$
declare
    v_target text;
    v_kind   "char";
begin
    perform tidewire.check_stream(track_table.stream);
    select c.relkind into v_kind from pg_catalog.pg_class as c where c.oid = track_table.tbl;
    if v_kind is null or v_kind not in ('r', 'p') then
        raise exception 'tidewire: % is not a table', track_table.tbl using errcode = '42809';
    end if;
    if track_table.key_column is null or not exists (
        select 1 from pg_catalog.pg_attribute as a
         where a.attrelid = track_table.tbl
           and a.attname = track_table.key_column
           and a.attnum > 0
           and not a.attisdropped
    ) then
        raise exception 'tidewire: table % has no column %',
                track_table.tbl, coalesce(quote_ident(track_table.key_column), 'NULL')
            using errcode = '42703';
    end if;
    v_target := tidewire.qualified_name(track_table.tbl);

    perform tidewire.drop_track_triggers(track_table.tbl);
    execute format(
        'create trigger tidewire_track after insert or update or delete on %s '
        'for each row execute function tidewire.track_trigger(%L, %L)',
        v_target, track_table.stream, track_table.key_column);
    execute format(
        'create trigger tidewire_track_truncate after truncate on %s '
        'for each statement execute function tidewire.track_truncate_trigger(%L)',
        v_target, track_table.stream);

    insert into tidewire.tracked as t (tbl, stream, key_column)
    values (track_table.tbl, track_table.stream, track_table.key_column)
    on conflict on constraint tracked_pkey
    do update set stream = excluded.stream, key_column = excluded.key_column;
end
$$;

-- Stops publishing `tbl`'s changes. Returns whether it was tracked.
create or replace function tidewire.untrack_table(tbl regclass)
returns boolean
language plpgsql
as $$
begin
    perform tidewire.drop_track_triggers(untrack_table.tbl);
    delete from tidewire.tracked as t where t.tbl = untrack_table.tbl;
    return found;
end
$$;
