// SSE fallback: with WebSockets unavailable in the page (the handshake always fails, as
// behind a proxy that blocks them), the client switches to SSE read with fetch streaming,
// writes over HTTP POST, and resumes after a relay restart with its own Last-Event-ID.
import assert from "node:assert/strict";
import { test } from "node:test";

import { openPage } from "../lib/browser.js";
import { sleep } from "../lib/relay.js";
import { withRelayAndBrowser } from "../lib/suite.js";

/** Runs before the page's scripts: every WebSocket fails to connect. */
const BLOCK_WEBSOCKETS = () => {
  window.__websocketAttempts = 0;
  window.WebSocket = class BlockedWebSocket {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSING = 2;
    static CLOSED = 3;
    constructor(url) {
      window.__websocketAttempts += 1;
      this.url = url;
      this.readyState = 0;
      this.binaryType = "blob";
      setTimeout(() => {
        this.readyState = 3;
        this.onerror?.(new Event("error"));
        this.onclose?.({ code: 1006, reason: "", wasClean: false });
      }, 5);
    }
    send() {
      throw new Error("not open");
    }
    close() {
      this.readyState = 3;
    }
  };
};

let relay;
let browser;
withRelayAndBrowser((started) => ({ relay, browser } = started));

test("falls back to SSE when WebSockets fail, writes over HTTP, resumes after a restart", async () => {
  const stream = "sse_todos";
  for (let index = 1; index <= 3; index += 1) {
    await relay.publish(stream, `t${index}`, "upsert", { index });
  }
  const page = await openPage(browser.context, relay.url, { initScript: BLOCK_WEBSOCKETS });
  await page.evaluate((stream) => {
    const index = harness.open(stream, { backoff: { initialMs: 200, maxMs: 1000 } });
    return harness.get(index).collection.ready();
  }, stream);
  let state = await page.evaluate(() => harness.state());
  assert.equal(state.transport, "sse");
  assert.equal(state.status, "live");
  assert.equal(state.size, 3);
  assert.ok((await page.evaluate(() => window.__websocketAttempts)) >= 1);

  // Live updates arrive over SSE.
  const seq = await relay.publish(stream, "t4", "upsert", { index: 4 });
  await page.waitForFunction((seq) => harness.get().collection.seq >= seq, seq);
  // Writes go over HTTP POST and resolve with the committed seq.
  const written = await page.evaluate(() => harness.get().collection.set("t5", { from: "page" }));
  assert.ok(written > seq);
  await page.waitForFunction((seq) => harness.get().collection.seq >= seq, written);
  const deleted = await page.evaluate(() => harness.get().collection.delete("t1"));
  await page.waitForFunction((seq) => harness.get().collection.seq >= seq, deleted);

  // A relay restart: the client reconnects over SSE and resumes from its position.
  await relay.kill();
  await sleep(500);
  await relay.start();
  const more = await relay.publish(stream, "t6", "upsert", { index: 6 });
  await page.waitForFunction((seq) => harness.get().collection.seq >= seq && harness.get().client.status === "live", more, {
    timeout: 60_000,
  });
  state = await page.evaluate(() => harness.state());
  const committed = await relay.snapshot(stream);
  assert.deepEqual(state.records, committed.records);
  assert.equal(state.transport, "sse");
  const changes = await page.evaluate(() => harness.get().log.changes);
  const events = changes.filter((change) => change.origin === "event").map((change) => change.seq);
  assert.equal(new Set(events).size, events.length, "no change reported twice");
  assert.equal(changes.filter((change) => change.origin === "snapshot").length, 3, "one snapshot only: the restart resumed");
  await page.close();
});
