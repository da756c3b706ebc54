// `tidewire/tanstack-db`: a TanStack DB collection backed by a tidewire live collection.
// TanStack DB's synced state is tidewire's committed state; its optimistic mutations are
// tidewire writes, and each one gives way to the committed value exactly when the event at
// the write's seq has been applied (tidewire resolves a write then), never on a timer.

/**
 * Options for TanStack DB's `createCollection`:
 * `createCollection(tidewireCollectionOptions({ client, stream, getKey }))`.
 * `getKey(value)` must give the tidewire key of a record (default: `value.id`).
 */
export function tidewireCollectionOptions(config) {
  const { client, stream, where, getKey = (value) => value.id, id, ...rest } = config;
  if (!client || typeof client.collection !== "function") {
    throw new TypeError("tidewireCollectionOptions: `client` must be a TidewireClient");
  }
  if (typeof stream !== "string") throw new TypeError("tidewireCollectionOptions: `stream` must be a string");
  const live = client.collection(stream, where === undefined ? undefined : { where });
  // The current sync session's `syncKeys(keys)`: copies tidewire's committed values of
  // `keys` into the synced state at once.
  let syncKeys = () => {};

  const sync = ({ begin, write, commit, markReady, markError }) => {
    const synced = new Set();
    let open = false;
    const flush = () => {
      if (open) {
        open = false;
        commit();
      }
    };
    // Changes applied in one task are one sync transaction.
    const put = (key, value) => {
      if (!open) {
        begin();
        open = true;
        queueMicrotask(flush);
      }
      if (value === undefined) {
        if (synced.delete(key)) write({ type: "delete", key });
      } else {
        write({ type: synced.has(key) ? "update" : "insert", value });
        synced.add(key);
      }
    };
    syncKeys = (keys) => {
      for (const key of keys) put(key, live.get(key));
      flush();
    };
    for (const [key, value] of live) put(key, value);
    flush();
    const offChange = live.subscribe((change) => {
      // A write of this client shown before the relay committed it, or taken back: TanStack
      // DB shows its own optimistic state; its synced state is what the relay committed.
      if (change.origin === "local" || change.origin === "rollback") return;
      put(change.key, change.newValue);
    });
    // A confirmed write whose committed value is what the collection already showed
    // reports no change: copy it (writes of other code than TanStack DB's handlers too).
    const offWrite = client.on("write", (write) => {
      if (write.stream === stream && write.status === "confirmed") syncKeys([write.key]);
    });
    let stopped = false;
    live.ready().then(
      () => {
        if (!stopped) markReady();
      },
      (error) => {
        if (!stopped) markError(error);
      },
    );
    return () => {
      stopped = true;
      offChange();
      offWrite();
      syncKeys = () => {};
    };
  };

  // Each mutation is a tidewire write; the handler returns once every write's event is
  // applied, after copying the committed values into the synced state, so TanStack DB
  // drops its optimistic state in the same step. A refused write throws its
  // `TidewireError` and TanStack DB rolls the transaction back.
  const persist = (run) => async ({ transaction }) => {
    const keys = transaction.mutations.map((mutation) => String(mutation.key));
    const seqs = await Promise.all(transaction.mutations.map((mutation) => run(mutation, String(mutation.key))));
    syncKeys(keys);
    return { seqs };
  };

  return {
    id: id ?? `tidewire:${stream}${where === undefined ? "" : `:${JSON.stringify(where)}`}`,
    getKey,
    sync: { sync },
    onInsert: persist((mutation, key) => live.set(key, mutation.modified)),
    onUpdate: persist((mutation, key) => live.patch(key, mutation.changes)),
    onDelete: persist((_mutation, key) => live.delete(key)),
    utils: {
      /** The tidewire live collection behind this collection. */
      live: () => live,
    },
    ...rest,
  };
}
