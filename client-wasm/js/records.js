// The records of each live collection as JavaScript objects, in a Map the wasm side keeps up
// to date with every change it reports (one JSON.parse per batch of changes). Reads (`get`,
// `has`, `size`, iteration, `toJSON`) are Map reads that never enter wasm, and a record keeps
// its object until it changes, so frameworks can compare records by reference. Records are
// frozen (deeply): to change one, write a new value.
// Measured (scripts/bench client-wasm): get() went from 4 µs to a Map lookup.

const RECORDS = Symbol("tidewire.records");
const INSTALLED = Symbol("tidewire.reads");

/** Gives `collection` its record Map (returned) and its class the reads over it. */
export function attachRecords(collection) {
  const records = new Map();
  Object.defineProperty(collection, RECORDS, { value: records });
  const prototype = Object.getPrototypeOf(collection);
  if (!Object.prototype.hasOwnProperty.call(prototype, INSTALLED)) {
    const method = (value) => ({ value, configurable: true, writable: true });
    Object.defineProperties(prototype, {
      [INSTALLED]: { value: true },
      get: method(function get(key) {
        return this[RECORDS].get(key);
      }),
      has: method(function has(key) {
        return this[RECORDS].has(key);
      }),
      size: {
        get() {
          return this[RECORDS].size;
        },
        configurable: true,
      },
      keys: method(function keys() {
        return this[RECORDS].keys();
      }),
      values: method(function values() {
        return this[RECORDS].values();
      }),
      entries: method(function entries() {
        return this[RECORDS].entries();
      }),
      [Symbol.iterator]: method(function iterator() {
        return this[RECORDS].entries();
      }),
      toJSON: method(function toJSON() {
        return Object.fromEntries(this[RECORDS]);
      }),
    });
  }
  return records;
}

/** Freezes a parsed JSON value and everything in it: records are shared by reference (the
 * Map, `get`, change callbacks, framework state), so changing one in place would change what
 * every reader sees without the relay knowing. */
function freeze(value) {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const key in value) freeze(value[key]);
  }
  return value;
}

/**
 * Applies a batch of changes to `records` and tells `callbacks`: `text` is the batch as
 * `[{key, op, seq, newValue?}]` (no `newValue`: the record is gone). Each change gets its
 * `origin` and, from the Map, its `oldValue`. A callback that throws is logged; the others
 * still run.
 */
export function applyChanges(records, text, origin, callbacks) {
  const changes = JSON.parse(text);
  for (let index = 0; index < changes.length; index += 1) {
    const change = changes[index];
    const old = records.get(change.key);
    change.origin = origin;
    if (old !== undefined) change.oldValue = old;
    if (change.newValue === undefined) records.delete(change.key);
    else records.set(change.key, freeze(change.newValue));
    for (let at = 0; at < callbacks.length; at += 1) {
      try {
        callbacks[at](change);
      } catch (error) {
        console.error("tidewire: change callback threw", error);
      }
    }
  }
}
