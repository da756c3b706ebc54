-- Tidewire migration 5: tidewire.publish stays linear in big transactions (a bulk INSERT
-- into a tracked table, many publishes before one COMMIT): the deferred trigger that syncs a
-- stream's seq at COMMIT. Its function, tidewire.sync_stream_seq, and tidewire.publish live
-- in functions/publish.sql.

-- Queued only while tidewire.publish sets the transaction-local flag tidewire.sync_seq, for
-- the second event of a stream in a transaction.
create constraint trigger tidewire_sync_seq
    after insert on tidewire.events
    deferrable initially deferred
    for each row
    when (current_setting('tidewire.sync_seq', true) = 'on')
    execute function tidewire.sync_stream_seq();
