// A collection's records as `{ key, value }` rows with stable identity, for the React
// bindings (react.js): one store per live collection. The records themselves are the
// collection's (frozen, the same object until they change); a row keeps its object while its
// record does, so frameworks compare rows by reference. Listeners hear once per task, however
// many changes the task applied (a 10,000-record snapshot is one notification, not 10,000).

const stores = new WeakMap();

/** The store of `collection` (one per collection, created on first use). */
export function storeOf(collection) {
  let store = stores.get(collection);
  if (!store) {
    store = new RecordStore(collection);
    stores.set(collection, store);
  }
  return store;
}

class RecordStore {
  constructor(collection) {
    this.collection = collection;
    this.listeners = new Set();
    this.changed = true;
    this.notifying = false;
    /** The last rows handed out, by key, and as one array. */
    this.rows = new Map();
    this.list = [];
    collection.subscribe(() => this.apply());
  }

  apply() {
    this.changed = true;
    if (!this.notifying) {
      this.notifying = true;
      queueMicrotask(() => {
        this.notifying = false;
        for (const listener of [...this.listeners]) listener();
      });
    }
  }

  /** Calls `listener` after the tasks that changed records; returns the unsubscribe. */
  subscribe = (listener) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  /** Every row, in the collection's order, as one array that is the same object until a
   * record changes; a row is the same object while its record is. */
  all = () => {
    if (this.changed) {
      const rows = new Map();
      for (const [key, value] of this.collection) {
        const row = this.rows.get(key);
        rows.set(key, row?.value === value ? row : Object.freeze({ key, value }));
      }
      this.rows = rows;
      this.list = Object.freeze([...rows.values()]);
      this.changed = false;
    }
    return this.list;
  };
}
