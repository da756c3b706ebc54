-- Tidewire SQL functions: tidewire.track_table / untrack_table: an ordinary table's row changes published to durable streams through triggers.
--
-- The one current definition of each function here. Applied with `create or replace` on every
-- migration run, before the numbered migrations (which hold tables, indexes and triggers only),
-- in the migration's transaction. A change that renames a parameter or changes a return type
-- needs a `drop function` first, here. See docs/SQL.md for the contract.

-- track_table gained `columns` and `exclude`. The three-argument version of older schemas
-- would stay beside the new one as an overload and make three-argument calls ambiguous.
drop function if exists tidewire.track_table(regclass, text, text);

-- The parts of a stream template: literal text and `{column}` placeholders alternating, with
-- literal text (maybe empty) first and last. 'board:{board_id}/tasks' gives
-- {'board:', 'board_id', '/tasks'}; a name without placeholders gives {name}. So the
-- placeholders are the even elements. A placeholder is 1 or more characters other than
-- braces: the column name as it is, unquoted. Raises 22023 for an empty, unterminated or
-- nested placeholder or a stray '}'. Checks the syntax only: track_table checks the name rule.
create or replace function tidewire.track_template(template text) returns text[]
language plpgsql immutable parallel safe
as $$
declare
    v_open integer := 0;  -- position of the '{' of the open placeholder; 0 outside one
begin
    if template is null then
        raise exception 'tidewire: stream name must not be null' using errcode = '22023';
    end if;
    -- The row trigger calls this for every row: a well-formed template costs one match.
    if template ~ '^([^{}]|\{[^{}]+\})*$' then
        return regexp_split_to_array(template, '[{}]');
    end if;
    for i in 1 .. length(template) loop
        if substr(template, i, 1) = '{' then
            if v_open > 0 then
                raise exception 'tidewire: stream template % has a { inside a placeholder',
                        left(quote_literal(template), 80)
                    using errcode = '22023',
                          hint = 'A placeholder is {column}: a column name between braces, without braces in it.';
            end if;
            v_open := i;
        elsif substr(template, i, 1) = '}' then
            if v_open = 0 then
                raise exception 'tidewire: stream template % has a } without a {',
                        left(quote_literal(template), 80)
                    using errcode = '22023',
                          hint = 'A placeholder is {column}: a column name between braces, without braces in it.';
            end if;
            if v_open = i - 1 then
                raise exception 'tidewire: stream template % has an empty placeholder {}',
                        left(quote_literal(template), 80)
                    using errcode = '22023',
                          hint = 'A placeholder is {column}: a column name between braces, without braces in it.';
            end if;
            v_open := 0;
        end if;
    end loop;
    raise exception 'tidewire: stream template % has an unterminated placeholder',
            left(quote_literal(template), 80)
        using errcode = '22023',
              hint = 'A placeholder is {column}: a column name between braces, without braces in it.';
end
$$;

-- The stream of a row: the template's parts (see track_template) with the i-th placeholder
-- replaced by vals[i]. NULL when one of the values is NULL.
create or replace function tidewire.track_stream(parts text[], vals text[]) returns text
language plpgsql immutable parallel safe
as $$
declare
    v_stream text := parts[1];
begin
    for i in 1 .. (array_length(parts, 1) - 1) / 2 loop
        v_stream := v_stream || vals[i] || parts[2 * i + 1];
    end loop;
    return v_stream;
end
$$;

-- The published form of a row, to_jsonb(row) without the columns left out. `mode` is NULL
-- (every column), 'columns' (only the columns in `list`) or 'exclude' (all but those).
create or replace function tidewire.track_project(data jsonb, mode text, list text[]) returns jsonb
language sql immutable parallel safe
as $$
    select case $2
        when 'columns' then (select coalesce(jsonb_object_agg(e.key, e.value), '{}'::jsonb)
                               from jsonb_each($1) as e
                              where e.key = any($3))
        when 'exclude' then $1 - $3
        else $1
    end
$$;

-- Whether `tbl` has a (not dropped, not system) column named `name`.
create or replace function tidewire.track_has_column(tbl regclass, name text) returns boolean
language sql stable
as $$
    select exists (
        select 1 from pg_catalog.pg_attribute as a
         where a.attrelid = $1 and a.attname = $2 and a.attnum > 0 and not a.attisdropped
    )
$$;

-- Row trigger. TG_ARGV[0] is the stream template, TG_ARGV[1] the key column; with a column
-- list, TG_ARGV[2] is 'columns' or 'exclude' and the list's names follow. (Triggers made
-- before column lists and templates pass only the first two: a fixed stream, every column.)
-- The key and the placeholder values are the columns' values cast to text.
create or replace function tidewire.track_trigger() returns trigger
language plpgsql
as $$
declare
    v_parts      text[] := tidewire.track_template(TG_ARGV[0]);
    v_mode       text := TG_ARGV[2];
    v_list       text[] := TG_ARGV[3:];
    v_names      text[] := array[TG_ARGV[1]];  -- the key column, then the placeholders
    v_select     text := format('select array[($1).%I::text', TG_ARGV[1]);
    v_values     text[];
    v_missing    integer;
    v_old_stream text;
    v_old_key    text;
    v_new_stream text;
    v_new_key    text;
    v_new_data   jsonb;
begin
    -- One dynamic statement per row image reads them all as text. Column names reach SQL only
    -- through format('%I').
    for i in 1 .. (array_length(v_parts, 1) - 1) / 2 loop
        v_names := v_names || v_parts[2 * i];
        v_select := v_select || format(', ($1).%I::text', v_parts[2 * i]);
    end loop;
    v_select := v_select || ']';

    if TG_OP in ('UPDATE', 'DELETE') then
        execute v_select into v_values using OLD;
        -- A row with a NULL key or placeholder could not be published: it is in no stream.
        if array_position(v_values, null) is null then
            v_old_key := v_values[1];
            v_old_stream := tidewire.track_stream(v_parts, v_values[2:]);
        end if;
    end if;
    if TG_OP in ('INSERT', 'UPDATE') then
        execute v_select into v_values using NEW;
        v_missing := array_position(v_values, null);
        if v_missing = 1 then
            raise exception 'tidewire: tracked table %.% has a NULL key column %',
                    quote_ident(TG_TABLE_SCHEMA), quote_ident(TG_TABLE_NAME), quote_ident(v_names[1])
                using errcode = '23502';
        elsif v_missing is not null then
            raise exception 'tidewire: tracked table %.% has a NULL in column %, a placeholder of stream template %',
                    quote_ident(TG_TABLE_SCHEMA), quote_ident(TG_TABLE_NAME), quote_ident(v_names[v_missing]),
                    quote_literal(TG_ARGV[0])
                using errcode = '23502';
        end if;
        v_new_key := v_values[1];
        v_new_stream := tidewire.track_stream(v_parts, v_values[2:]);
        v_new_data := to_jsonb(NEW);
        -- exclude names the columns to hide. One renamed since track_table would be published
        -- under its new name: refuse the write instead of leaking the column.
        if v_mode = 'exclude' and not v_new_data ?& v_list then
            raise exception 'tidewire: tracked table %.% no longer has every column its exclude list names (%)',
                    quote_ident(TG_TABLE_SCHEMA), quote_ident(TG_TABLE_NAME), array_to_string(v_list, ', ')
                using errcode = '42703',
                      hint = 'Call tidewire.track_table again with the current column names.';
        end if;
        if v_mode is not null then
            v_new_data := tidewire.track_project(v_new_data, v_mode, v_list);
        end if;
    end if;

    if TG_OP = 'INSERT' then
        perform tidewire.publish(v_new_stream, v_new_key, 'upsert', v_new_data);
    elsif TG_OP = 'DELETE' then
        if v_old_key is not null then
            perform tidewire.publish(v_old_stream, v_old_key, 'delete', null);
        end if;
    elsif v_old_key is not null and v_old_stream = v_new_stream and v_old_key = v_new_key then
        -- The same record: publish only when what subscribers see changed (not when only
        -- left-out columns did).
        if v_new_data is distinct from tidewire.track_project(to_jsonb(OLD), v_mode, v_list) then
            perform tidewire.publish(v_new_stream, v_new_key, 'upsert', v_new_data);
        end if;
    else
        -- A new key or a move to another stream: the record leaves where it was.
        if v_old_key is not null then
            perform tidewire.publish(v_old_stream, v_old_key, 'delete', null);
        end if;
        perform tidewire.publish(v_new_stream, v_new_key, 'upsert', v_new_data);
    end if;
    return null;
end
$$;

-- Statement trigger for TRUNCATE, which fires no row triggers. TG_ARGV[0] is the stream
-- template, TG_ARGV[1] the key column (absent in triggers made before templates).
--
-- A fixed stream (an AFTER trigger): a delete for every key the stream still holds. A
-- template (a BEFORE trigger, so the rows are still there): a delete for every row's key in
-- the stream the row names, when that stream holds the key. Either way subscribers see the
-- table empty.
create or replace function tidewire.track_truncate_trigger() returns trigger
language plpgsql
as $$
declare
    v_parts  text[] := tidewire.track_template(TG_ARGV[0]);
    v_stream text;
    v_key    text;
    v_expr   text;
begin
    if array_length(v_parts, 1) = 1 then
        for v_key in
            select r.key from tidewire.records as r where r.stream = TG_ARGV[0] order by r.seq
        loop
            perform tidewire.publish(TG_ARGV[0], v_key, 'delete', null);
        end loop;
        return null;
    end if;

    -- The stream of row t as an SQL expression: literals through %L, columns through %I, each
    -- value cast to text as the row trigger does.
    v_expr := format('%L', v_parts[1]);
    for i in 1 .. (array_length(v_parts, 1) - 1) / 2 loop
        v_expr := v_expr || format(' || t.%I::text || %L', v_parts[2 * i], v_parts[2 * i + 1]);
    end loop;
    for v_stream, v_key in execute format(
        'select r.stream, r.key from tidewire.records as r '
        'where (r.stream, r.key) in (select %s, t.%I::text from %s as t) '
        'order by r.stream, r.seq',
        v_expr, TG_ARGV[1], tidewire.qualified_name(TG_RELID))
    loop
        perform tidewire.publish(v_stream, v_key, 'delete', null);
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

-- Installs (or replaces) the triggers that publish the changes of tracked table `tbl` (its
-- row in tidewire.tracked) in trigger mode (see tidewire.capture_attach).
create or replace function tidewire.track_install_triggers(tbl regclass) returns void
language plpgsql
as $$
declare
    def      record;
    v_mode   text;
    v_args   text;
    v_target text := tidewire.qualified_name(track_install_triggers.tbl);
begin
    select * into def from tidewire.tracked as t where t.tbl = track_install_triggers.tbl;
    v_mode := case when def.columns is not null then 'columns'
                   when def.exclude is not null then 'exclude' end;
    -- Trigger arguments are string literals: every name goes through %L.
    v_args := format('%L, %L', def.stream, def.key_column);
    if v_mode is not null then
        v_args := v_args || format(', %L', v_mode)
            || coalesce((select string_agg(format(', %L', u.name), '' order by u.n)
                           from unnest(coalesce(def.columns, def.exclude)) with ordinality as u(name, n)), '');
    end if;

    perform tidewire.drop_track_triggers(def.tbl);
    execute format(
        'create trigger tidewire_track after insert or update or delete on %s '
        'for each row execute function tidewire.track_trigger(%s)',
        v_target, v_args);
    -- After TRUNCATE the rows are gone: a template needs them to know which streams hold
    -- which keys, so its trigger runs before.
    execute format(
        'create trigger tidewire_track_truncate %s truncate on %s '
        'for each statement execute function tidewire.track_truncate_trigger(%L, %L)',
        case when array_length(tidewire.track_template(def.stream), 1) = 1 then 'after' else 'before' end,
        v_target, def.stream, def.key_column);
end
$$;

-- Publishes every INSERT/UPDATE/DELETE (and TRUNCATE) of `tbl` to the stream its template
-- names for the row (`{column}` placeholders take the row's values), keyed by
-- `key_column`::text: upsert of the row's published columns (all, only `columns`, or all but
-- `exclude`), delete on DELETE, delete from the old key and stream then upsert to the new
-- ones when an UPDATE changes the key or a placeholder's value; an UPDATE that changes none
-- of these nor the published data publishes nothing. Calling it again re-targets the table.
create or replace function tidewire.track_table(
    tbl regclass,
    stream text,
    key_column text,
    columns text[] default null,
    exclude text[] default null
)
returns void
language plpgsql
as $$
declare
    v_parts    text[];
    v_sample   text;
    v_message  text;
    v_hint     text;
    v_kind     "char";
    v_mode     text;
    v_list     text[];
    v_names    text[];
    v_column   text;
begin
    v_parts := tidewire.track_template(track_table.stream);
    if array_length(v_parts, 1) = 1 then
        perform tidewire.check_stream(track_table.stream);
    else
        -- A placeholder may hold any value, so the template is tried with '0', the shortest
        -- value valid anywhere in a name. A longer or odd value can still make an invalid
        -- name at write time; that write fails then.
        v_sample := tidewire.track_stream(v_parts, array_fill('0'::text, array[(array_length(v_parts, 1) - 1) / 2]));
        begin
            perform tidewire.check_stream(v_sample);
        exception when invalid_parameter_value then
            get stacked diagnostics v_message = message_text, v_hint = pg_exception_hint;
            raise exception 'tidewire: stream template % cannot make a valid stream name (with 0 for every placeholder: %)',
                    left(quote_literal(track_table.stream), 80), substr(v_message, length('tidewire: ') + 1)
                using errcode = '22023', hint = v_hint;
        end;
    end if;

    select c.relkind into v_kind from pg_catalog.pg_class as c where c.oid = track_table.tbl;
    if v_kind is null or v_kind not in ('r', 'p') then
        raise exception 'tidewire: % is not a table', track_table.tbl using errcode = '42809';
    end if;
    if track_table.key_column is null or not tidewire.track_has_column(track_table.tbl, track_table.key_column) then
        raise exception 'tidewire: table % has no column %',
                track_table.tbl, coalesce(quote_ident(track_table.key_column), 'NULL')
            using errcode = '42703';
    end if;

    if track_table.columns is not null and track_table.exclude is not null then
        raise exception 'tidewire: track_table takes columns or exclude, not both'
            using errcode = '22023';
    end if;
    v_mode := case when track_table.columns is not null then 'columns'
                   when track_table.exclude is not null then 'exclude' end;
    v_list := coalesce(track_table.columns, track_table.exclude);
    if array_ndims(v_list) > 1 or array_position(v_list, null) is not null then
        raise exception 'tidewire: % must be a one-dimensional array of column names without NULL', v_mode
            using errcode = '22023';
    end if;
    foreach v_column in array coalesce(v_list, '{}') loop
        if not tidewire.track_has_column(track_table.tbl, v_column) then
            raise exception 'tidewire: table % has no column % (named in %)',
                    track_table.tbl, quote_ident(v_column), v_mode
                using errcode = '42703';
        end if;
    end loop;

    -- The key column and the placeholders must be published: subscribers need them to know
    -- the record and its stream.
    v_names := array[track_table.key_column];
    for i in 1 .. (array_length(v_parts, 1) - 1) / 2 loop
        if not tidewire.track_has_column(track_table.tbl, v_parts[2 * i]) then
            raise exception 'tidewire: table % has no column % (a placeholder of stream template %)',
                    track_table.tbl, quote_ident(v_parts[2 * i]), left(quote_literal(track_table.stream), 80)
                using errcode = '42703';
        end if;
        v_names := v_names || v_parts[2 * i];
    end loop;
    for i in 1 .. array_length(v_names, 1) loop
        if (v_mode = 'columns' and not v_names[i] = any(v_list))
           or (v_mode = 'exclude' and v_names[i] = any(v_list)) then
            raise exception 'tidewire: % leaves out column %, %, which must be published',
                    v_mode, quote_ident(v_names[i]),
                    case when i = 1 then 'the key column'
                         else 'a placeholder of stream template ' || left(quote_literal(track_table.stream), 80) end
                using errcode = '22023';
        end if;
    end loop;

    insert into tidewire.tracked as t (tbl, stream, key_column, columns, exclude)
    values (track_table.tbl, track_table.stream, track_table.key_column,
            track_table.columns, track_table.exclude)
    on conflict on constraint tracked_pkey
    do update set stream = excluded.stream, key_column = excluded.key_column,
                  columns = excluded.columns, exclude = excluded.exclude;
    -- Triggers in trigger mode; the publication in logical mode (functions/capture.sql).
    perform tidewire.capture_attach(track_table.tbl);
end
$$;

-- Stops publishing `tbl`'s changes. Returns whether it was tracked.
create or replace function tidewire.untrack_table(tbl regclass)
returns boolean
language plpgsql
as $$
declare
    v_found boolean;
begin
    perform tidewire.drop_track_triggers(untrack_table.tbl);
    delete from tidewire.tracked as t where t.tbl = untrack_table.tbl;
    v_found := found;
    -- Out of the publication too (logical mode), and the sequencer told.
    perform tidewire.capture_attach(untrack_table.tbl);
    return v_found;
end
$$;
