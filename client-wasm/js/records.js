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
 * every reader sees without the relay knowing. (Exported from this module, not from the
 * package, for the benchmark's floor: tests/js/bench/client-wasm.js.) */
export function freeze(value) {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    // Arrays by index: `for...in` makes each index a string (freezing 10,000 parsed records
    // in Node 20: 3.5 -> 0.6 ms, the whole record list's parse 8.5 ms).
    if (Array.isArray(value)) for (let index = 0; index < value.length; index += 1) freeze(value[index]);
    else for (const key in value) freeze(value[key]);
  }
  return value;
}

/** The ops by the index wasm gives them (`OPS` in src/parsed.rs). (Exported like `freeze`.) */
export const OPS = ["upsert", "delete", "patch", "message"];
const NONE = [];

/** `base` (when a plain object; `{}` otherwise) with every field of `patch` written over it,
 * keys sorted: the record a patch makes when each of its fields wins, which the engine saw
 * (the patch was newer than everything its stream had). Sorted as JavaScript sorts, by UTF-16
 * units, where the relay sorts by UTF-8 bytes: the two differ only between names with
 * characters above U+FFFF and names with characters from U+E000 to U+FFFF. (Exported like
 * `freeze`.) */
export function patched(base, patch) {
  const out = {};
  const plain = typeof base === "object" && base !== null && !Array.isArray(base);
  const names = plain ? Object.keys(base) : [];
  let sorted = true;
  for (const name in patch) {
    if (!plain || !Object.prototype.hasOwnProperty.call(base, name)) {
      names.push(name);
      sorted = false;
    }
  }
  // A patch of fields the record has keeps its names, most often in order already.
  for (let at = 1; sorted && at < names.length; at += 1) sorted = names[at - 1] <= names[at];
  if (!sorted) names.sort();
  for (const name of names) {
    const value = Object.prototype.hasOwnProperty.call(patch, name) ? patch[name] : base[name];
    // JSON.parse makes `__proto__` an own field; an assignment would set the prototype.
    if (name === "__proto__") Object.defineProperty(out, name, { value, enumerable: true, writable: true, configurable: true });
    else out[name] = value;
  }
  return out;
}

/**
 * Applies a batch of changes to `records` and tells `callbacks`. Each change is `{key, op,
 * seq, newValue?}` (no `newValue`: the record is gone), made one of two ways:
 *
 * - `plan` empty: every change is in `text`, a JSON array of them;
 * - otherwise `plan` holds five numbers per change: the slot in `messages` of the message it
 *   came in (-1: the next change of `text`), the index in that message's `records` (-1: the
 *   event itself), the op (an index in `OPS`), the seq, and how the value is made: 0 the
 *   message's `data` as it is, 1 the old record with that `data` written over it, 2 none (a
 *   removal). A message is parsed the first time a change needs it, and its object kept in
 *   its slot, so each message is parsed once and its records are the objects shown.
 *
 * Each change gets its `origin` and, from the Map, its `oldValue`. A callback that throws is
 * logged; the others still run.
 */
export function applyChanges(records, text, origin, callbacks, plan, messages) {
  const listed = text === undefined ? NONE : JSON.parse(text);
  if (plan.length === 0) {
    for (let index = 0; index < listed.length; index += 1) apply(records, listed[index], origin, callbacks);
    return;
  }
  let next = 0;
  for (let at = 0; at < plan.length; at += 5) {
    const slot = plan[at];
    if (slot < 0) {
      apply(records, listed[next], origin, callbacks);
      next += 1;
      continue;
    }
    let message = messages[slot];
    if (typeof message === "string") {
      message = JSON.parse(message);
      messages[slot] = message;
    }
    const index = plan[at + 1];
    const holder = index < 0 ? message : message.records[index];
    const change = { key: holder.key, op: OPS[plan[at + 2]], seq: plan[at + 3] };
    const how = plan[at + 4];
    if (how === 0) change.newValue = holder.data;
    else if (how === 1) change.newValue = patched(records.get(holder.key), holder.data);
    apply(records, change, origin, callbacks);
  }
}

function apply(records, change, origin, callbacks) {
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
