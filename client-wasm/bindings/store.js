// A collection's records as JavaScript objects with stable identity, for the framework
// bindings (react.js, tanstack-db.js): one store per live collection, fed by its change
// callbacks. A record keeps its object until it changes, so frameworks compare rows by
// reference; listeners hear once per task, however many changes the task applied (a
// 10,000-record snapshot is one notification, not 10,000).

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

export class RecordStore {
  constructor(collection) {
    this.collection = collection;
    /** key -> frozen `{ key, value }` row, in arrival order. */
    this.rows = new Map();
    this.listeners = new Set();
    this.version = 0;
    this.list = [];
    this.listVersion = 0;
    this.notifying = false;
    for (const [key, value] of collection) this.rows.set(key, Object.freeze({ key, value }));
    this.off = collection.subscribe((change) => this.apply(change));
  }

  apply(change) {
    if (change.newValue === undefined) {
      if (!this.rows.delete(change.key)) return;
    } else {
      this.rows.set(change.key, Object.freeze({ key: change.key, value: change.newValue }));
    }
    this.version += 1;
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

  /** Every row, as one array that is the same object until a record changes. */
  all = () => {
    if (this.listVersion !== this.version || this.list === null) {
      this.list = Object.freeze([...this.rows.values()]);
      this.listVersion = this.version;
    }
    return this.list;
  };

  /** The row of `key`, or undefined. */
  row(key) {
    return this.rows.get(key);
  }
}
