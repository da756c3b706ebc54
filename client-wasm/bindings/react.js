// `tidewire/react`: React bindings for the tidewire client. Hooks read live collections
// through `useSyncExternalStore`, so a component re-renders only when what it reads
// changed, and a record that did not change keeps its object (React.memo rows skip).
import { createContext, createElement, useCallback, useContext, useMemo, useSyncExternalStore } from "react";

import { storeOf } from "./store.js";

const ClientContext = createContext(null);

/** Makes `client` (a `TidewireClient`) available to the hooks below it. */
export function TidewireProvider({ client, children }) {
  return createElement(ClientContext.Provider, { value: client }, children);
}

/** The client of the nearest `<TidewireProvider>`. */
export function useTidewireClient() {
  const client = useContext(ClientContext);
  if (!client) throw new Error("tidewire/react: wrap your components in <TidewireProvider client={client}>");
  return client;
}

/** The live collection of `stream` (with `{ where }`, the view that filter matches). */
export function useLiveCollection(stream, options) {
  const client = useTidewireClient();
  const where = options?.where;
  const filter = where === undefined ? "" : JSON.stringify(where);
  // Collections are cached by the client per stream and filter: the same object each time.
  return useMemo(
    () => client.collection(stream, filter ? { where: JSON.parse(filter) } : undefined),
    [client, stream, filter],
  );
}

/** Every record of `stream` (or of its view `{ where }`) as `{ key, value }` rows: the same
 * array until a record changes, and the same row object until its record changes. */
export function useCollection(stream, options) {
  const store = storeOf(useLiveCollection(stream, options));
  return useSyncExternalStore(store.subscribe, store.all, store.all);
}

/** The value of `key` in `stream` (undefined while absent); re-renders only when it changes
 * (records keep their object until they change). */
export function useRecord(stream, key) {
  const collection = useLiveCollection(stream);
  const read = useCallback(() => collection.get(key), [collection, key]);
  return useSyncExternalStore(storeOf(collection).subscribe, read, read);
}

/** A value that `listen(callback)` reports changes of (it returns the unsubscribe), read
 * first with `read()`; `deps` say when the source changes. */
function useListened(deps, read, listen) {
  // eslint-disable-next-line react-hooks/exhaustive-deps
  const state = useMemo(() => {
    let value = read();
    return {
      subscribe: (notify) => {
        value = read();
        return listen((next) => {
          value = next;
          notify();
        });
      },
      read: () => value,
    };
  }, deps);
  return useSyncExternalStore(state.subscribe, state.read, state.read);
}

/** Who is present on `stream`: `[{ client, data, self }]`, updated as members come and go. */
export function usePresence(stream) {
  const collection = useLiveCollection(stream);
  return useListened(
    [collection],
    () => collection.presence,
    (callback) => collection.on("presence", callback),
  );
}

/** The client's connection status (`StatusInfo`: `status`, `reason`, `code`, ...). */
export function useStatus() {
  const client = useTidewireClient();
  return useListened(
    [client],
    () => client.statusInfo,
    (callback) => client.on("status", callback),
  );
}
