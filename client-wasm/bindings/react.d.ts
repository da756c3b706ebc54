// Types of `tidewire/react` (react.js).
import type { ReactNode } from "react";
import type { CollectionOptions, LiveCollection, PresenceMember, StatusInfo, TidewireClient } from "./index.js";

/** One record of a collection: the same object until the record changes. */
export interface Row<T = any> {
  readonly key: string;
  readonly value: T;
}

/** Makes `client` available to the hooks below it. */
export declare function TidewireProvider(props: { client: TidewireClient; children?: ReactNode }): ReactNode;

/** The client of the nearest `<TidewireProvider>` (throws without one). */
export declare function useTidewireClient(): TidewireClient;

/** The live collection of `stream` (with `{ where }`, the view that filter matches). */
export declare function useLiveCollection<T = any>(stream: string, options?: CollectionOptions): LiveCollection<T>;

/** Every record of `stream` (or of its view `{ where }`), in arrival order: the same array
 * until a record changes, and the same row object until its record changes. */
export declare function useCollection<T = any>(stream: string, options?: CollectionOptions): readonly Row<T>[];

/** The value of `key` in `stream` (undefined while absent). */
export declare function useRecord<T = any>(stream: string, key: string): T | undefined;

/** Who is present on `stream`. */
export declare function usePresence<T = any>(stream: string): PresenceMember<T>[];

/** The client's connection status. */
export declare function useStatus(): StatusInfo;
