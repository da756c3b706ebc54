-- Tidewire SQL functions: the naming rules of streams and keys, and the microsecond timestamps of events.
--
-- The one current definition of each function here. Applied with `create or replace` on every
-- migration run, before the numbered migrations (which hold tables, indexes and triggers only),
-- in the migration's transaction. A change that renames a parameter or changes a return type
-- needs a `drop function` first, here. See docs/SQL.md for the contract.

-- Microseconds since the Unix epoch, the `ts` of NOTIFY payloads.
create or replace function tidewire.micros(moment timestamptz) returns bigint
language sql immutable strict parallel safe
as $$ select (extract(epoch from $1) * 1000000)::bigint $$;

-- The stream-name rule, identical to tidewire_shared::StreamName: 1 to 60 bytes of ASCII
-- [A-Za-z0-9_.:/-], the first one of [A-Za-z0-9_]. Written with explicit character lists, not
-- regex ranges, so that no collation can change its meaning. Names starting with `raw:` are
-- raw pg_notify channels, never durable streams. Raises 22023 (invalid_parameter_value).
create or replace function tidewire.check_stream(stream text) returns text
language plpgsql immutable parallel safe
as $$
begin
    if stream is null then
        raise exception 'tidewire: stream name must not be null' using errcode = '22023';
    end if;
    if octet_length(stream) < 1 or octet_length(stream) > 60
       or strpos('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_', left(stream, 1)) = 0
       or translate(stream, 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:/-', '') <> ''
    then
        raise exception 'tidewire: invalid stream name %', left(quote_literal(stream), 80)
            using errcode = '22023',
                  hint = 'A stream name is 1 to 60 bytes of A-Z a-z 0-9 _ . : / -, starting with a letter, digit or underscore.';
    end if;
    if left(stream, 4) = 'raw:' then
        raise exception 'tidewire: % names a raw pg_notify channel, not a durable stream', quote_literal(stream)
            using errcode = '22023',
                  hint = 'Use pg_notify() for raw channels; durable streams cannot start with "raw:".';
    end if;
    return stream;
end
$$;

-- Keys are 1 to 512 bytes of any text.
create or replace function tidewire.check_key(key text) returns text
language plpgsql immutable parallel safe
as $$
begin
    if key is null or octet_length(key) < 1 or octet_length(key) > 512 then
        raise exception 'tidewire: key must be 1 to 512 bytes, got %',
                coalesce(octet_length(key)::text || ' bytes', 'NULL')
            using errcode = '22023';
    end if;
    return key;
end
$$;
