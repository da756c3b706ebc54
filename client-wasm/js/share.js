// The browser side of one connection per browser (see src/share): the package's shared
// worker holds the connection; where there is none, a BroadcastChannel to the other tabs of
// the origin and a Web Lock elect the tab holding it. The lock is held for the page's
// lifetime (the browser releases it when the tab closes or crashes); the next tab waiting
// for it becomes the host.

// Whether this browser can share a connection between tabs.
export function shareSupported() {
  return typeof BroadcastChannel === "function" && typeof navigator !== "undefined" && !!navigator.locks;
}

// Joins the group `name` as `id`. `onMessage(kind, from, to, text)` receives the group's
// messages (not our own); `onHost()` is called once this tab holds the lock. Returns
// `{ post(kind, to, text), close() }`.
export function shareJoin(name, id, onMessage, onHost) {
  const channel = new BroadcastChannel(name);
  let release = null;
  let closed = false;
  channel.onmessage = (event) => {
    const message = event.data;
    if (closed || !message || message.from === id) return;
    if (message.to && message.to !== id) return;
    onMessage(message.kind, message.from, message.to ?? "", message.text ?? "");
  };
  navigator.locks
    .request(name, () => {
      if (closed) return undefined;
      return new Promise((resolve) => {
        release = resolve;
        onHost();
      });
    })
    .catch(() => {});
  return {
    post(kind, to, text) {
      if (!closed) channel.postMessage({ kind, from: id, to: to || undefined, text: text || undefined });
    },
    close() {
      closed = true;
      channel.onmessage = null;
      channel.close();
      if (release) release();
    },
  };
}

// Joins through the package's shared worker (`worker.js`, next to the package's entry),
// which holds the connection for every tab of the origin; `config` (the client's URL and
// options, as JSON) travels with each `hello`. Falls back to `shareJoin` (a host tab elected
// with a Web Lock) where SharedWorker is missing or the worker cannot start (a bundler that
// did not emit worker.js, a Content-Security-Policy).
export function shareConnect(name, id, config, useWorker, onMessage, onHost) {
  if (useWorker && typeof SharedWorker === "function") {
    try {
      // This file is snippets/<crate>/js/share.js in the package. Written as one expression
      // so bundlers (Vite, webpack 5, Parcel) recognise a worker and emit it with its imports.
      const worker = new SharedWorker(new URL("../../../worker.js", import.meta.url), { type: "module", name });
      return viaWorker(worker, name, id, config, onMessage, onHost);
    } catch {
      // Fall through to an elected tab.
    }
  }
  return shareJoin(name, id, onMessage, onHost);
}

function viaWorker(worker, name, id, config, onMessage, onHost) {
  const port = worker.port;
  let fallback = null;
  let closed = false;
  let welcomed = false;
  const fail = () => {
    if (closed || fallback || welcomed) return;
    port.close();
    fallback = shareJoin(name, id, onMessage, onHost);
    // Guests waiting for a host ask again.
    onMessage("host", "", "", "");
  };
  worker.onerror = fail;
  const timer = setTimeout(fail, 5000);
  port.onmessage = (event) => {
    const message = event.data;
    if (closed || fallback || !message) return;
    if (message.kind === "welcome") {
      welcomed = true;
      clearTimeout(timer);
    }
    onMessage(message.kind, message.from, message.to ?? "", message.text ?? "");
  };
  port.start();
  return {
    post(kind, to, text) {
      if (fallback) return fallback.post(kind, to, text);
      if (closed) return;
      const body = kind === "hello" ? config : text;
      port.postMessage({ kind, from: id, to: to || undefined, text: body || undefined });
    },
    close() {
      closed = true;
      clearTimeout(timer);
      // Chrome keeps a SharedWorker object alive while its worker runs: drop what it holds.
      worker.onerror = null;
      port.onmessage = null;
      if (fallback) {
        fallback.close();
      } else {
        // The worker lets go of this port (and its handler) on `quit`.
        port.postMessage({ kind: "quit", from: id });
        port.close();
      }
    },
  };
}
