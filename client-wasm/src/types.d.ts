/** Options of `new TidewireClient(url, options)`. Every field is optional. */
export interface TidewireOptions {
  /** Bearer token (JWT). Sent as `?access_token=` on the WebSocket and as an
   * `Authorization` header over HTTP/SSE. Replace it later with `client.setToken()`. */
  token?: string;
  /** `"auto"` (default): WebSocket, falling back to SSE when a WebSocket cannot open.
   * `"websocket"` or `"sse"` force one transport. Writes go over HTTP POST on SSE. */
  transport?: "auto" | "websocket" | "sse";
  /** How a collection that has nothing to resume from loads its snapshot. `"socket"`
   * (default): in its subscription, on the WebSocket or SSE connection. `"http"`: page by
   * page from `GET /v1/streams/{stream}/snapshot` (with the collection's filter and the
   * token), applied at once when the last page is in (changes with origin `"snapshot"`),
   * then the subscription resumes from the snapshot's position. For large collections:
   * pages may come from the browser's cache or a CDN, and the relay holds at most one page
   * per reader. A failed load falls back to the socket snapshot. */
  snapshot?: "socket" | "http";
  /** Store collections so a reload resumes from the stored position instead of loading a
   * full snapshot. Default: no persistence. */
  persist?: "indexeddb" | "localstorage" | false;
  /** Reconnect delays: full jitter between 0 and `min(maxMs, initialMs * 2^attempt)`.
   * Defaults: `initialMs` 500, `maxMs` 15000. Attempts never stop. */
  backoff?: { initialMs?: number; maxMs?: number };
  /** Wait for the page to be visible before reconnecting. Default: true. A live
   * connection stays open while the page is hidden either way. */
  pauseWhenHidden?: boolean;
  /** Ping after this much silence; replace a connection silent 2.5x as long. Default: 20000. */
  keepaliveMs?: number;
  /** Give up on a connection attempt after this long. Default: 10000. */
  connectTimeoutMs?: number;
  /** Share one connection between the tabs of this origin that use the same relay and
   * token. `true` (default): the package's shared worker holds it; where there is no
   * SharedWorker (or the worker cannot start), one tab elected with a Web Lock holds it and
   * relays it over a BroadcastChannel, and when that tab closes another takes over.
   * `"tabs"`: always an elected tab. `false`: a connection of this client's own. */
  share?: boolean | "tabs";
  /** Most writes waiting for the relay's answer at once (sent or queued, for example while
   * offline); one more throws a `TidewireError` with code `"queue_full"`. Default: 1000. */
  maxPendingWrites?: number;
}

/** A scalar a filter compares with. */
export type FilterScalar = string | number | boolean;

/** The condition on one field: operators that must all hold. */
export interface FieldCondition {
  eq?: FilterScalar;
  ne?: FilterScalar;
  lt?: FilterScalar;
  le?: FilterScalar;
  gt?: FilterScalar;
  ge?: FilterScalar;
  /** The field equals one of these (`[]`: never). */
  in?: FilterScalar[];
  /** `true`: the field is missing or `null`; `false`: present and not `null`. */
  null?: boolean;
}

/** A filter over the top-level fields of a record's value (docs/PROTOCOL.md, "Views"):
 * `{ owner: "u1" }` (equality), `{ prio: { gt: 2 } }`, `{ status: { in: ["open", "doing"] } }`,
 * `{ due: { null: true } }`, `{ and: [...] }`, `{ or: [...] }`, `{ not: {...} }`; several keys
 * must all hold, and `{}` matches every record. */
export type Filter = {
  [field: string]: FilterScalar | FieldCondition | Filter | Filter[];
};

/** Options of `client.collection(stream, options)`. */
export interface CollectionOptions {
  /** Only the records whose value matches this filter. Collections of one stream with
   * different filters are independent views over one subscription (for the union of their
   * filters). An invalid filter throws a `TidewireError` with code `"bad_filter"`. */
  where?: Filter;
}

/** The coarse connection state. */
export type ConnectionState = "connecting" | "live" | "resyncing" | "offline" | "closed";

/** The status with its reason, passed to `client.on("status")` and `client.statusInfo`. */
export interface StatusInfo {
  status: ConnectionState;
  /** Human-readable reason (empty when live). */
  reason: string;
  /** Machine-readable code of the last problem: `"unauthorized"`, `"forbidden"`,
   * `"token_expired"`, `"policy_violation"`, `"unavailable"`, `"rate_limited"`,
   * `"going_away"`, `"keepalive_timeout"`, `"connection_lost"`, `"connect_failed"`,
   * `"offline"`, `"hidden"`, `"timeout"`, ... (every close code's name is in PROTOCOL.md's
   * close-code table). */
  code?: string;
  /** The WebSocket close code behind it, if any (4001 unauthorized, 4004 token expired,
   * 1001 going away, 1006 dropped, ...). */
  closeCode?: number;
  transport?: "websocket" | "sse";
  /** Failed attempts since the client was last live. */
  attempt: number;
  /** Milliseconds until the next attempt, when one is scheduled. */
  retryInMs?: number;
}

/** One change of a record, passed to `collection.subscribe()` / `on("change")`. */
export interface Change<T = any> {
  key: string;
  /** What happened to the record. A snapshot reports `"upsert"` and `"delete"`. In a
   * filtered collection, a record that starts matching arrives as an `"upsert"` (no
   * `oldValue`) and one that stops matching as a `"delete"` (no `newValue`). */
  op: "upsert" | "patch" | "delete";
  /** The seq of the event (or snapshot) that caused the change. */
  seq: number;
  /** `"event"`: live or replayed (also a write of this client giving way to its committed
   * value, when that differs from what it showed); `"snapshot"`: first load or a resync;
   * `"restore"`: read from persistent storage; `"local"`: a write of this client, shown
   * before the relay committed it (`seq` 0); `"rollback"`: such a write the relay refused,
   * taken back. */
  origin: "event" | "snapshot" | "restore" | "local" | "rollback";
  /** The value before (absent if the key was absent). */
  oldValue?: T;
  /** The value after (absent if the key was deleted). */
  newValue?: T;
}

/** An ephemeral message, passed to `collection.on("message")`. */
export interface EphemeralMessage<T = any> {
  key: string;
  data: T;
}

/** One member of a presence set. */
export interface PresenceMember<T = any> {
  /** The member's presence id (see `client.presenceId`). */
  client: string;
  data: T;
  /** True for this client's own entry. */
  self: boolean;
}

/** Events of a live collection. */
export type CollectionEvent = "change" | "message" | "presence" | "resync" | "error";

/** Counters of `client.stats`. */
export interface ClientStats {
  /** Events dropped because their seq was already applied (never reported twice). */
  duplicates: number;
  /** Gaps detected (each asked the relay for a replay). */
  gaps: number;
  /** Snapshot reloads after the first snapshot of a stream. */
  resyncs: number;
  /** Connections opened. */
  connections: number;
  /** Messages that could not be decoded (ignored). */
  malformed: number;
}

/** `client.sharing`: this tab's part in the browser's shared connection. */
export interface SharingInfo {
  /** `"host"`: this tab holds the connection; `"guest"`: another tab does; `"off"`: not
   * shared. */
  role: "host" | "guest" | "off";
  /** Clients using this tab's connection (for a host). */
  guests: number;
  /** The package's shared worker holds the connection (for a guest). */
  worker: boolean;
}

/** A write the relay has not answered yet (`client.pendingWrites`). */
export interface PendingWrite<T = any> {
  /** Sent with the write; the relay commits a write id once. */
  writeId: string;
  stream: string;
  key: string;
  op: "upsert" | "patch" | "delete";
  data: T;
}

/** A write confirmed or refused, passed to `client.on("write")`. Writes restored from
 * storage after a reload have no promise: this event is how their outcome is known. */
export interface WriteEvent {
  /** The operation id (local to this client). */
  id: string;
  stream: string;
  key: string;
  op: "upsert" | "patch" | "delete";
  /** `"confirmed"`: committed at `seq`, and reads show it; `"refused"`: rolled back. */
  status: "confirmed" | "refused";
  seq?: number;
  code?: string;
  message?: string;
}

/** Every error from this package: a plain `Error` with `name === "TidewireError"` and a
 * machine-readable `code` (`"closed"`, `"bad_stream"`, `"bad_filter"`, `"bad_key"`,
 * `"bad_data"`, `"forbidden"`, `"unauthorized"`, `"rate_limited"`, `"conflict"`,
 * `"queue_full"`, `"connection_lost"` (ephemeral messages only), ...). Stream errors also
 * carry `stream`. */
export interface TidewireError extends Error {
  name: "TidewireError";
  code: string;
  stream?: string;
}

export interface TidewireClient {
  on(event: "status", callback: (status: StatusInfo) => void): () => void;
  on(event: "error", callback: (error: TidewireError) => void): () => void;
  on(event: "write", callback: (write: WriteEvent) => void): () => void;
}

export interface LiveCollection<T = any> {
  /** The value of `key`, or `undefined`: a frozen object (deeply), the same one until the
   * record changes. To change a record, write a new value (`set`, `patch`). */
  get(key: string): T | undefined;
  /** Whether `key` has a value. */
  has(key: string): boolean;
  /** Number of records. */
  readonly size: number;
  /** The keys (live, like a Map's iterators; in no particular order). */
  keys(): IterableIterator<string>;
  /** The values. */
  values(): IterableIterator<T>;
  /** `[key, value]` pairs. The collection itself is iterable the same way:
   * `for (const [key, value] of collection)`. */
  entries(): IterableIterator<[string, T]>;
  /** The records as a plain object `{ [key]: value }` (so `JSON.stringify(collection)` works). */
  toJSON(): Record<string, T>;
  [Symbol.iterator](): IterableIterator<[string, T]>;
  on(event: "change", callback: (change: Change<T>) => void): () => void;
  on(event: "message", callback: (message: EphemeralMessage) => void): () => void;
  on(event: "presence", callback: (members: PresenceMember[]) => void): () => void;
  on(event: "resync", callback: (info: { reason: string }) => void): () => void;
  on(event: "error", callback: (error: TidewireError) => void): () => void;
}
