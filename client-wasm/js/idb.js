// IndexedDB helpers for the tidewire client (persist: "indexeddb"): one database
// "tidewire" with one object store "state" mapping a key to the JSON text of a collection.
// The database connection is opened once per page and shared by every client.
let opening = null;

function database() {
  if (opening === null) {
    opening = new Promise((resolve, reject) => {
      const request = indexedDB.open("tidewire", 1);
      request.onupgradeneeded = () => request.result.createObjectStore("state");
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => {
        opening = null;
        reject(request.error);
      };
    });
  }
  return opening;
}

export function idbGet(key) {
  return database().then(
    (db) =>
      new Promise((resolve, reject) => {
        const request = db.transaction("state").objectStore("state").get(key);
        request.onsuccess = () => resolve(typeof request.result === "string" ? request.result : null);
        request.onerror = () => reject(request.error);
      }),
  );
}

export function idbPut(key, value) {
  return database()
    .then(
    (db) =>
      new Promise((resolve, reject) => {
        const transaction = db.transaction("state", "readwrite");
        transaction.objectStore("state").put(value, key);
        transaction.oncomplete = () => resolve();
        transaction.onerror = () => reject(transaction.error);
      }),
    )
    .catch(() => {});
}

// Every [key, value] whose key starts with `prefix` (values that are not strings are left out).
export function idbEntries(prefix) {
  return database().then(
    (db) =>
      new Promise((resolve, reject) => {
        const range = IDBKeyRange.bound(prefix, prefix + "\uffff");
        const store = db.transaction("state").objectStore("state");
        const keys = store.getAllKeys(range);
        const values = store.getAll(range);
        values.onsuccess = () =>
          resolve(
            keys.result
              .map((key, index) => [key, values.result[index]])
              .filter(([, value]) => typeof value === "string"),
          );
        values.onerror = () => reject(values.error);
      }),
  );
}

export function idbDelete(key) {
  return database()
    .then(
      (db) =>
        new Promise((resolve, reject) => {
          const transaction = db.transaction("state", "readwrite");
          transaction.objectStore("state").delete(key);
          transaction.oncomplete = () => resolve();
          transaction.onerror = () => reject(transaction.error);
        }),
    )
    .catch(() => {});
}
