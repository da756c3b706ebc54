// The browser side of one connection per browser (see src/share): a BroadcastChannel to the
// other tabs of the origin, and a Web Lock that elects the tab holding the connection. The
// lock is held for the page's lifetime (the browser releases it when the tab closes or
// crashes); the next tab waiting for it becomes the host.

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
      channel.close();
      if (release) release();
    },
  };
}
