-- Tidewire SQL functions: exactly-once writes. A publish that carries a write id commits once;
-- the same write id on the same stream later answers the seq it committed at (see docs/SQL.md
-- "Write ids" and migration 0011_write_ids.sql).
--
-- The one current definition of each function here. Applied with `create or replace` on every
-- migration run, before the numbered migrations (which hold tables, indexes and triggers only),
-- in the migration's transaction. A change that renames a parameter or changes a return type
-- needs a `drop function` first, here. See docs/SQL.md for the contract.

-- The write id rule, identical to tidewire_shared::message::check_write_id (and the HTTP
-- Idempotency-Key header): 1 to 64 bytes of A-Z a-z 0-9 . _ : -. Raises 22023.
create or replace function tidewire.check_write_id(write_id text) returns text
language plpgsql immutable parallel safe
as $$
begin
    if write_id is null or octet_length(write_id) < 1 or octet_length(write_id) > 64
       or translate(write_id, 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-', '') <> ''
    then
        raise exception 'tidewire: invalid write id %', coalesce(left(quote_literal(write_id), 80), 'NULL')
            using errcode = '22023',
                  hint = 'A write id is 1 to 64 bytes of A-Z a-z 0-9 . _ : -';
    end if;
    return write_id;
end
$$;

-- What a write wrote, to tell a retry of it from another write under the same id: the md5 of
-- the JSON array [key, op, data] as jsonb text (canonical: object keys sorted, whitespace
-- normalised; SQL NULL data counts as JSON null).
create or replace function tidewire.write_fingerprint(key text, op text, data jsonb) returns text
language sql stable parallel safe
as $$ select md5(jsonb_build_array($1, $2, $3)::text) $$;

-- The seq a write id committed at on `stream`, or NULL when the id is unknown there. Raises
-- TW409 (the relay's `conflict`) when the id was used for a different write (another key, op
-- or data). The caller holds the stream's publish lock (pg_advisory_xact_lock(1953955840,
-- hashtext(stream))), so no other transaction can commit the id between this lookup and the
-- caller's publish.
create or replace function tidewire.lookup_write(stream text, write_id text, key text, op text, data jsonb)
returns bigint
language plpgsql
as $$
declare
    v_seq         bigint;
    v_fingerprint text;
begin
    select w.seq, w.fingerprint into v_seq, v_fingerprint
      from tidewire.writes as w
     where w.stream = lookup_write.stream and w.write_id = lookup_write.write_id;
    if not found then
        return null;
    end if;
    if v_fingerprint is distinct from tidewire.write_fingerprint(lookup_write.key, lookup_write.op, lookup_write.data) then
        raise exception 'tidewire: write id % was used on stream % for another write (committed at seq %)',
                quote_literal(lookup_write.write_id), quote_literal(lookup_write.stream), v_seq
            using errcode = 'TW409',
                  hint = 'A write id names one write: give every new write a new id, and resend a write only with its own.';
    end if;
    return v_seq;
end
$$;

-- tidewire.publish, exactly once per (stream, write_id): the first call publishes and records
-- the write id in the caller's transaction (both commit or neither does) and returns (seq,
-- false); a later call with the same write id and the same key, op and data publishes nothing
-- and returns (the first call's seq, true); one with a different key, op or data raises TW409.
-- Ephemeral 'message' ops have no seq to answer with: they ignore the write id and are
-- published every time (at most once per call, like any message).
create or replace function tidewire.publish_once(stream text, write_id text, key text, op text, data jsonb)
returns table (seq bigint, replayed boolean)
language plpgsql
as $$
declare
    v_seq bigint;
begin
    if publish_once.op = 'message' then
        return query select tidewire.publish(publish_once.stream, publish_once.key, publish_once.op, publish_once.data), false;
        return;
    end if;
    perform tidewire.check_write_id(publish_once.write_id);
    perform tidewire.check_stream(publish_once.stream);
    -- The lock tidewire.publish takes first: a concurrent call with the same write id waits
    -- here until this transaction ends, then finds the row it committed.
    perform pg_advisory_xact_lock(1953955840, hashtext(publish_once.stream));
    v_seq := tidewire.lookup_write(publish_once.stream, publish_once.write_id, publish_once.key,
                                   publish_once.op, publish_once.data);
    if v_seq is not null then
        return query select v_seq, true;
        return;
    end if;
    v_seq := tidewire.publish(publish_once.stream, publish_once.key, publish_once.op, publish_once.data);
    insert into tidewire.writes (stream, write_id, seq, fingerprint)
    values (publish_once.stream, publish_once.write_id, v_seq,
            tidewire.write_fingerprint(publish_once.key, publish_once.op, publish_once.data));
    return query select v_seq, false;
end
$$;

-- Deletes up to `lim` write ids recorded more than `older_than` ago, oldest first, and returns
-- how many. The relay's janitor calls it in batches with --write-id-window; a write id it
-- deleted commits again when it is seen next.
create or replace function tidewire.forget_writes(older_than interval, lim integer)
returns bigint
language plpgsql
as $$
declare
    v_deleted bigint;
begin
    delete from tidewire.writes as w
     where (w.stream, w.write_id) in (select o.stream, o.write_id
                                        from tidewire.writes as o
                                       where o.at < now() - forget_writes.older_than
                                       order by o.at
                                       limit forget_writes.lim);
    get diagnostics v_deleted = row_count;
    return v_deleted;
end
$$;
