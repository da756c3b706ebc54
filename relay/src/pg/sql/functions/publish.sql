-- Tidewire SQL functions: tidewire.publish, the one way events enter a durable stream, and the commit-time sync of a stream's seq for transactions that publish to it more than once.
--
-- The one current definition of each function here. Applied with `create or replace` on every
-- migration run, before the numbered migrations (which hold tables, indexes and triggers only),
-- in the migration's transaction. A change that renames a parameter or changes a return type
-- needs a `drop function` first, here. See docs/SQL.md for the contract.

-- The NOTIFY payload of a stored event: the event inline (with its pre-image `prior` when the
-- key had a record) when under 8000 bytes, else a pointer {"t":"ptr",...} and the reader
-- fetches the row from tidewire.events. Used by tidewire.publish and the capture sequencer.
create or replace function tidewire.event_payload(
    stream text, epoch bigint, seq bigint, key text, op text, data jsonb, prior jsonb, at timestamptz
)
returns text
language plpgsql stable
as $$
declare
    v_payload text;
begin
    v_payload := '{"t":"ev","stream":' || to_json(event_payload.stream)::text
        || ',"epoch":' || event_payload.epoch
        || ',"seq":' || event_payload.seq
        || ',"key":' || to_json(event_payload.key)::text
        || ',"op":"' || event_payload.op || '"'
        || ',"data":' || coalesce(event_payload.data::text, 'null')
        || case when event_payload.prior is null then '' else ',"prior":' || event_payload.prior::text end
        || ',"ts":' || tidewire.micros(event_payload.at) || '}';
    if octet_length(v_payload) >= 8000 then
        v_payload := '{"t":"ptr","stream":' || to_json(event_payload.stream)::text
            || ',"epoch":' || event_payload.epoch
            || ',"seq":' || event_payload.seq || '}';
    end if;
    return v_payload;
end
$$;

-- Publishes one event and returns its seq (0 for an ephemeral 'message').
--
--   upsert  stores `data` as the key's value
--   patch   merges the JSON object `data` into the key's object value (creating it)
--   delete  removes the key
--   message ephemeral: not stored, no seq, NOTIFY only (payload must be < 8000 bytes)
--
-- Every stored event keeps `prior`, the key's value before it (see below).
--
-- NOTIFY on 'tw:' || stream carries the event inline when the payload is under 8000 bytes,
-- else a pointer {"t":"ptr",...} and the reader fetches the row from tidewire.events.
create or replace function tidewire.publish(stream text, key text, op text, data jsonb)
returns bigint
language plpgsql
as $$
declare
    v_seq     bigint;
    v_epoch   bigint;
    v_at      timestamptz;
    v_payload text;
    v_sync    boolean := false;
    v_bucket  text;
    v_prior   jsonb;
    v_prior_seq bigint;
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

    -- Take the stream row's lock and the next seq; create the stream on first use.
    --
    -- The first publish to the stream in this transaction increments streams.seq with an
    -- UPDATE, which takes the row lock until the transaction ends, and notes the stream in a
    -- transaction-local setting (tidewire.lock_<bucket> = stream name). Repeating that UPDATE
    -- for every event of a big transaction would be quadratic: each new row version is found
    -- by walking the chain of all earlier versions of this transaction. So while the setting
    -- says we hold the lock, the next seq comes from our own events in the outbox, and the
    -- deferred trigger tidewire_sync_seq stores the final seq in the row at COMMIT: other
    -- sessions see streams.seq and the events change together. A subtransaction that rolls
    -- back releases the row lock and reverts the setting together. Two streams of one
    -- transaction that share a bucket only cost an extra UPDATE: the full name is compared.
    --
    -- A drop committed while we waited for the lock makes the UPDATE find nothing: create the
    -- stream anew.
    v_bucket := (hashtext(publish.stream) & 1023)::text;
    for attempt in 1..3 loop
        if current_setting('tidewire.lock_' || v_bucket, true) is not distinct from publish.stream then
            select s.seq, s.epoch into v_seq, v_epoch
              from tidewire.streams as s
             where s.name = publish.stream;
            if found then
                v_seq := greatest(v_seq, (select max(e.seq) from tidewire.events as e
                                           where e.stream = publish.stream and e.seq > v_seq)) + 1;
                -- One deferred sync per stream and transaction is enough: it stores the
                -- maximum seq found at COMMIT (tidewire.sync_<bucket> remembers it is queued).
                if current_setting('tidewire.sync_' || v_bucket, true) is distinct from publish.stream then
                    v_sync := true;
                    perform set_config('tidewire.sync_seq', 'on', true);
                    perform set_config('tidewire.sync_' || v_bucket, publish.stream, true);
                end if;
                exit;
            end if;
        else
            update tidewire.streams as s
               set seq = s.seq + 1
             where s.name = publish.stream
            returning s.seq, s.epoch into v_seq, v_epoch;
            if found then
                perform set_config('tidewire.lock_' || v_bucket, publish.stream, true);
                exit;
            end if;
        end if;
        v_seq := null;
        insert into tidewire.streams as s (name) values (publish.stream) on conflict do nothing;
    end loop;
    if v_seq is null then
        raise exception 'tidewire: could not lock stream % (concurrently dropped)', publish.stream
            using errcode = '40001';
    end if;

    -- The key's value before this event (its pre-image): SQL NULL when the key had no record,
    -- JSON null when its value was null. Stored and sent beside the event so a relay can tell
    -- a record entering or leaving a filtered view without a query per subscriber.
    select coalesce(r.data, 'null'::jsonb), r.seq into v_prior, v_prior_seq
      from tidewire.records as r
     where r.stream = publish.stream and r.key = publish.key;

    insert into tidewire.events as e (stream, seq, key, op, data, prior, prior_seq)
    values (publish.stream, v_seq, publish.key, publish.op, publish.data, v_prior, v_prior_seq)
    returning e.committed_at into v_at;
    if v_sync then
        perform set_config('tidewire.sync_seq', 'off', true);
    end if;

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

    perform pg_notify('tw:' || publish.stream,
                      tidewire.event_payload(publish.stream, v_epoch, v_seq, publish.key, publish.op,
                                             publish.data, v_prior, v_at));
    return v_seq;
end
$$;

-- Fired at COMMIT for a stream that a transaction published to more than once (see
-- tidewire.publish): stores the stream's final seq, the maximum in the outbox, in its row.
-- Should it fire more than once for a stream, the later firings find nothing to do. It may
-- also fire before COMMIT (SET CONSTRAINTS ... IMMEDIATE): then it clears the "queued" mark
-- so that the stream's next publish in the transaction queues a new sync.
create or replace function tidewire.sync_stream_seq() returns trigger
language plpgsql
as $$
declare
    v_mark text := 'tidewire.sync_' || (hashtext(NEW.stream) & 1023)::text;
begin
    update tidewire.streams as s
       set seq = (select max(e.seq) from tidewire.events as e where e.stream = NEW.stream)
     where s.name = NEW.stream and s.seq < NEW.seq;
    if current_setting(v_mark, true) is not distinct from NEW.stream then
        perform set_config(v_mark, '', true);
    end if;
    return null;
end
$$;
