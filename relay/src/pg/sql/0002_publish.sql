-- Tidewire migration 2: the naming rules and tidewire.publish, the one way events enter a
-- durable stream (track_table's triggers call it too). See docs/SQL.md.

-- Microseconds since the Unix epoch, the `ts` of NOTIFY payloads.
create function tidewire.micros(moment timestamptz) returns bigint
language sql immutable strict parallel safe
as $$ select (extract(epoch from $1) * 1000000)::bigint $$;

-- The stream-name rule, identical to tidewire_shared::StreamName: 1 to 60 bytes of ASCII
-- [A-Za-z0-9_.:/-], the first one of [A-Za-z0-9_]. Written with explicit character lists, not
-- regex ranges, so that no collation can change its meaning. Names starting with `raw:` are
-- raw pg_notify channels, never durable streams. Raises 22023 (invalid_parameter_value).
create function tidewire.check_stream(stream text) returns text
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
create function tidewire.check_key(key text) returns text
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

-- Publishes one event and returns its seq (0 for an ephemeral 'message').
-- (Migration 5 replaces this function with one that stays linear in big transactions.)
--
--   upsert  stores `data` as the key's value
--   patch   merges the JSON object `data` into the key's object value (creating it)
--   delete  removes the key
--   message ephemeral: not stored, no seq, NOTIFY only (payload must be < 8000 bytes)
--
-- NOTIFY on 'tw:' || stream carries the event inline when the payload is under 8000 bytes,
-- else a pointer {"t":"ptr",...} and the reader fetches the row from tidewire.events.
create function tidewire.publish(stream text, key text, op text, data jsonb)
returns bigint
language plpgsql
as $$
declare
    v_seq     bigint;
    v_epoch   bigint;
    v_at      timestamptz;
    v_payload text;
begin
    perform tidewire.check_stream(publish.stream);
    perform tidewire.check_key(publish.key);
    if publish.op is null or publish.op not in ('upsert', 'delete', 'patch', 'message') then
        raise exception 'tidewire: unknown op %, expected upsert, delete, patch or message',
                coalesce(left(quote_literal(publish.op), 40), 'NULL')
            using errcode = '22023';
    end if;
    if publish.op = 'patch' and jsonb_typeof(publish.data) is distinct from 'object' then
        raise exception 'tidewire: patch data must be a JSON object, got %',
                coalesce(jsonb_typeof(publish.data), 'NULL')
            using errcode = '22023';
    end if;

    if publish.op = 'message' then
        v_payload := '{"t":"msg","stream":' || to_json(publish.stream)::text
            || ',"key":' || to_json(publish.key)::text
            || ',"data":' || coalesce(publish.data::text, 'null')
            || ',"ts":' || tidewire.micros(clock_timestamp()) || '}';
        if octet_length(v_payload) >= 8000 then
            raise exception 'tidewire: ephemeral message too large (% bytes of NOTIFY payload, limit 7999)',
                    octet_length(v_payload)
                using errcode = '54000',
                      hint = 'Publish large values with op upsert or patch: those are stored and sent by reference.';
        end if;
        perform pg_notify('tw:' || publish.stream, v_payload);
        return 0;
    end if;

    -- Queue for the stream first. Correctness comes from the row lock below; this advisory
    -- lock (class 0x74770000 = 'tw', key hashtext(stream)) only makes the wait fair and
    -- cheap: every commit wakes all waiters of a row lock at once (a thundering herd that
    -- cut throughput fourfold with 32 publishers on 2 cores), a heavyweight lock wakes one.
    -- Like the row lock it is held until the transaction ends.
    perform pg_advisory_xact_lock(1953955840, hashtext(publish.stream));

    -- Take the stream row's lock and the next seq; create the stream on first use. A drop
    -- committed while we waited for the lock makes the UPDATE find nothing: create it anew.
    for attempt in 1..3 loop
        update tidewire.streams as s
           set seq = s.seq + 1
         where s.name = publish.stream
        returning s.seq, s.epoch into v_seq, v_epoch;
        exit when found;
        insert into tidewire.streams as s (name) values (publish.stream) on conflict do nothing;
    end loop;
    if v_seq is null then
        raise exception 'tidewire: could not lock stream % (concurrently dropped)', publish.stream
            using errcode = '40001';
    end if;

    insert into tidewire.events as e (stream, seq, key, op, data)
    values (publish.stream, v_seq, publish.key, publish.op, publish.data)
    returning e.committed_at into v_at;

    if publish.op = 'upsert' then
        insert into tidewire.records as r (stream, key, seq, data)
        values (publish.stream, publish.key, v_seq, publish.data)
        on conflict on constraint records_pkey
        do update set seq = excluded.seq, data = excluded.data;
    elsif publish.op = 'patch' then
        insert into tidewire.records as r (stream, key, seq, data)
        values (publish.stream, publish.key, v_seq, publish.data)
        on conflict on constraint records_pkey
        do update set seq = excluded.seq,
                      data = case when jsonb_typeof(r.data) = 'object'
                                  then r.data || excluded.data
                                  else excluded.data end;
    else
        delete from tidewire.records as r
         where r.stream = publish.stream and r.key = publish.key;
    end if;

    v_payload := '{"t":"ev","stream":' || to_json(publish.stream)::text
        || ',"epoch":' || v_epoch
        || ',"seq":' || v_seq
        || ',"key":' || to_json(publish.key)::text
        || ',"op":"' || publish.op || '"'
        || ',"data":' || coalesce(publish.data::text, 'null')
        || ',"ts":' || tidewire.micros(v_at) || '}';
    if octet_length(v_payload) >= 8000 then
        v_payload := '{"t":"ptr","stream":' || to_json(publish.stream)::text
            || ',"epoch":' || v_epoch
            || ',"seq":' || v_seq || '}';
    end if;
    perform pg_notify('tw:' || publish.stream, v_payload);
    return v_seq;
end
$$;
