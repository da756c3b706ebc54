// Types of `tidewire/tanstack-db` (tanstack-db.js).
import type { CollectionConfig } from "@tanstack/db";
import type { Filter, LiveCollection, TidewireClient } from "./index.js";

/** What `tidewireCollectionOptions` takes: the client, the stream (and filter), and any
 * other TanStack DB collection option except the ones it fills in. */
export interface TidewireCollectionConfig<T extends object>
  extends Omit<CollectionConfig<T, string, never, TidewireUtils<T>>, "sync" | "getKey" | "onInsert" | "onUpdate" | "onDelete" | "utils"> {
  client: TidewireClient;
  stream: string;
  /** Only the records this filter matches (a tidewire view). */
  where?: Filter;
  /** The tidewire key of a record's value. Default: `value.id`. */
  getKey?: (value: T) => string;
}

/** `collection.utils` of a tidewire-backed collection. */
export interface TidewireUtils<T = any> {
  [name: string]: any;
  /** The tidewire live collection behind it. */
  live: () => LiveCollection<T>;
}

/** Options for TanStack DB's `createCollection`, backed by a tidewire live collection. */
export declare function tidewireCollectionOptions<T extends object>(
  config: TidewireCollectionConfig<T>,
): CollectionConfig<T, string, never, TidewireUtils<T>> & { utils: TidewireUtils<T> };
