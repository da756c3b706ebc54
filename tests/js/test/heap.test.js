// Leaks: 1,000 create/close cycles (each one connecting, subscribing, listening) must not
// grow the JavaScript heap or the wasm memory meaningfully. Measured after forced garbage
// collections through the Chrome DevTools Protocol.
import assert from "node:assert/strict";
import { test } from "node:test";

import { openPage } from "../lib/browser.js";
import { sleep } from "../lib/relay.js";
import { withRelayAndBrowser } from "../lib/suite.js";

let relay;
let browser;
withRelayAndBrowser((started) => ({ relay, browser } = started));

async function cycles(page, count, share) {
  await page.evaluate(async ({ count, share }) => {
    const { TidewireClient } = harness.tidewire;
    for (let index = 0; index < count; index += 1) {
      const client = new TidewireClient(location.origin, { share, backoff: { initialMs: 50, maxMs: 100 } });
      const collection = client.collection("heap");
      collection.subscribe(() => {});
      collection.on("presence", () => {});
      client.on("status", () => {});
      if (index % 100 === 0) await collection.ready();
      if (index % 25 === 0) collection.set("k", { index }).catch(() => {});
      client.close();
    }
  }, { count, share });
}

async function measure(page, session) {
  await sleep(300);
  for (let round = 0; round < 3; round += 1) {
    await session.send("HeapProfiler.collectGarbage");
    await sleep(100);
  }
  const { usedSize } = await session.send("Runtime.getHeapUsage");
  const wasm = await page.evaluate(async () => (await harness.tidewire.init()).memory.buffer.byteLength);
  return { heap: usedSize, wasm };
}

for (const [share, label, warmups] of [
  // Through the shared worker (the default): each client joins and quits the worker's group.
  // The wasm allocator's high-water mark settles after two batches here.
  [true, "through the shared worker", 2],
  // A connection of its own per client.
  [false, "each with its own connection", 1],
]) {
  test(`1,000 create/close cycles do not grow the heap (${label})`, async () => {
    await relay.publish("heap", "k", "upsert", { index: -1 });
    const page = await openPage(browser.context, relay.url);
    const session = await browser.context.newCDPSession(page);
    // Warm up with as many cycles as are measured: closed clients are freed when the
    // garbage collector finalizes their JavaScript objects, so the first batches set the
    // wasm allocator's high-water mark (the linear memory never shrinks).
    for (let round = 0; round < warmups; round += 1) await cycles(page, 1000, share);
    const before = await measure(page, session);
    const started = Date.now();
    await cycles(page, 1000, share);
    const elapsed = Date.now() - started;
    const after = await measure(page, session);
    const heapGrowth = after.heap - before.heap;
    const wasmGrowth = after.wasm - before.wasm;
    console.log(
      `# heap (${label}): JS heap ${before.heap} -> ${after.heap} bytes ` +
        `(${heapGrowth >= 0 ? "+" : ""}${heapGrowth}), wasm memory ${before.wasm} -> ${after.wasm} bytes, ` +
        `1000 cycles in ${elapsed} ms`,
    );
    // A leaked client (closures, socket, listeners) costs several KB: 1,000 of them would
    // grow the heap by megabytes.
    assert.ok(heapGrowth < 512 * 1024, `JS heap grew by ${heapGrowth} bytes`);
    assert.ok(wasmGrowth <= 256 * 1024, `wasm memory grew by ${wasmGrowth} bytes`);
    await page.close();
  });
}
