// Writes as an application makes them, in headless Chromium against a real relay and
// PostgreSQL: shown at once (origin "local") and readable right after their promise resolves
// (read your writes), over WebSocket and over SSE (HTTP posts with an Idempotency-Key);
// rolled back when the relay refuses them; committed exactly once, each promise resolving
// with its own seq, while the relay dies between commit and acknowledgement again and again;
// kept in IndexedDB while the relay is down and sent after a reload; bounded.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { launch, openPage } from "../lib/browser.js";
import { sleep, startRelay, waitFor } from "../lib/relay.js";

let relay;
let browser;

before(async () => {
  // Small data limit, so a write can be refused for its size. (The exactly-once tests run a
  // relay of their own that dies after every 7th write, see below.)
  relay = await startRelay({ args: ["--max-data-bytes", "4000"] });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await relay?.close();
});

/** The events of `stream` in PostgreSQL: `[{seq, key, op}]` in seq order. */
async function events(target, stream) {
  const text = await target.psql(
    `select coalesce(json_agg(json_build_object('seq', seq, 'key', key, 'op', op) order by seq), '[]')
       from tidewire.events where stream = '${stream}'`,
  );
  return JSON.parse(text);
}

for (const transport of ["websocket", "sse"]) {
  test(`read your writes over ${transport}: shown at once, readable when resolved`, async () => {
    const stream = `rw_${transport}`;
    await relay.publish(stream, "t1", "upsert", { title: "milk" });
    const page = await openPage(browser.context, relay.url);
    const result = await page.evaluate(
      async ({ stream, transport }) => {
        const index = harness.open(stream, { transport });
        const { collection, log } = harness.get(index);
        await collection.ready();
        const promise = collection.set("t2", { title: "eggs" });
        const shownAtOnce = collection.get("t2");
        const sizeAtOnce = collection.size;
        const seq = await promise;
        const patched = collection.patch("t1", { done: true });
        const patchedAtOnce = collection.get("t1");
        const patchSeq = await patched;
        const deleted = collection.delete("t2");
        const deletedAtOnce = collection.has("t2");
        const deleteSeq = await deleted;
        return {
          shownAtOnce,
          sizeAtOnce,
          seq,
          afterResolve: { t1: collection.get("t1"), t2: collection.get("t2"), size: collection.size, seq: collection.seq },
          patchedAtOnce,
          patchSeq,
          deletedAtOnce,
          deleteSeq,
          changes: log.changes.map(({ key, origin, op }) => `${key}:${op}:${origin}`),
          writes: log.writes.map(({ key, status, seq }) => `${key}:${status}:${seq}`),
          pending: harness.get(index).client.pendingWrites.length,
        };
      },
      { stream, transport },
    );
    assert.deepEqual(result.shownAtOnce, { title: "eggs" });
    assert.equal(result.sizeAtOnce, 2);
    assert.ok(result.seq > 1, `seq ${result.seq}`);
    assert.deepEqual(result.patchedAtOnce, { title: "milk", done: true });
    assert.equal(result.deletedAtOnce, false);
    assert.equal(result.afterResolve.size, 1, "the delete resolved: reads show it");
    assert.deepEqual(result.afterResolve.t1, { title: "milk", done: true });
    assert.equal(result.afterResolve.t2, undefined);
    assert.ok(result.afterResolve.seq >= result.deleteSeq, JSON.stringify(result));
    // Each write is one change, shown before it committed; its committed event, equal to what
    // was shown, is not reported again (no flicker).
    assert.deepEqual(result.changes, ["t1:upsert:snapshot", "t2:upsert:local", "t1:upsert:local", "t2:delete:local"]);
    assert.deepEqual(result.writes, [
      `t2:confirmed:${result.seq}`,
      `t1:confirmed:${result.patchSeq}`,
      `t2:confirmed:${result.deleteSeq}`,
    ]);
    assert.equal(result.pending, 0);
    const committed = await events(relay, stream);
    assert.deepEqual(
      committed.map(({ key, op }) => `${key}:${op}`),
      ["t1:upsert", "t2:upsert", "t1:patch", "t2:delete"],
    );
    await page.close();
  });
}

test("a refused write is rolled back with a change and a typed rejection", async () => {
  const stream = "refused";
  await relay.publish(stream, "a", "upsert", { n: 1 });
  const page = await openPage(browser.context, relay.url);
  const result = await page.evaluate(async (stream) => {
    const index = harness.open(stream);
    const { collection, log } = harness.get(index);
    await collection.ready();
    const promise = collection.set("a", { n: 2, blob: "x".repeat(5000) });
    const shown = collection.get("a").n;
    let error = null;
    try {
      await promise;
    } catch (caught) {
      error = { name: caught.name, code: caught.code };
    }
    return {
      shown,
      error,
      now: collection.get("a"),
      changes: log.changes.map(({ key, origin, newValue }) => `${key}:${origin}:${newValue?.n}`),
      writes: log.writes.map(({ status, code }) => `${status}:${code}`),
    };
  }, stream);
  assert.equal(result.shown, 2);
  assert.deepEqual(result.error, { name: "TidewireError", code: "too_large" });
  assert.deepEqual(result.now, { n: 1 });
  assert.deepEqual(result.changes, ["a:snapshot:1", "a:local:2", "a:rollback:1"]);
  assert.deepEqual(result.writes, ["refused:too_large"]);
  assert.equal((await events(relay, stream)).length, 1);
  await page.close();
});

test("the queue is bounded: queue_full while the relay is unreachable", async () => {
  const page = await openPage(browser.context, relay.url);
  const result = await page.evaluate(async () => {
    // A relay that is not there: every write stays queued.
    const client = new harness.tidewire.TidewireClient("http://127.0.0.1:9", { maxPendingWrites: 2 });
    const collection = client.collection("bounded");
    const first = collection.set("a", 1);
    const second = collection.set("b", 2);
    let error = null;
    try {
      await collection.set("c", 3);
    } catch (caught) {
      error = caught.code;
    }
    const pending = client.pendingWrites.map(({ key }) => key);
    client.close();
    const closed = await Promise.allSettled([first, second]);
    return { error, pending, closed: closed.map((outcome) => outcome.reason?.code) };
  });
  assert.equal(result.error, "queue_full");
  assert.deepEqual(result.pending, ["a", "b"]);
  assert.deepEqual(result.closed, ["closed", "closed"]);
  await page.close();
});

test("writes made while the relay is unreachable survive a reload and commit once", async () => {
  const stream = "offline";
  await relay.publish(stream, "seed", "upsert", { n: 0 });
  const page = await openPage(browser.context, relay.url);
  // The page's WebSockets reach the relay only while `reachable` (the page itself is
  // served by the relay, so the relay keeps running).
  let reachable = true;
  const sockets = [];
  await page.routeWebSocket(/\/v1\/ws/, (socket) => {
    if (!reachable) return socket.close({ code: 4000, reason: "unreachable" });
    sockets.push(socket);
    socket.connectToServer();
  });
  const open = (stream) => {
    const index = harness.open(stream, { persist: "indexeddb", transport: "websocket", backoff: { initialMs: 100, maxMs: 500 } });
    return harness.get(index).collection.ready();
  };
  await page.evaluate(open, stream);
  reachable = false;
  for (const socket of sockets) await socket.close({ code: 4000, reason: "unreachable" });
  await page.waitForFunction(() => harness.get().client.status !== "live", null, { timeout: 30_000 });
  const offline = await page.evaluate(() => {
    const { client, collection } = harness.get();
    for (let index = 1; index <= 5; index += 1) collection.set(`w${index}`, { n: index }).catch(() => {});
    collection.delete("seed").catch(() => {});
    return { pending: client.pendingWrites.length, size: collection.size, seed: collection.has("seed") };
  });
  assert.deepEqual(offline, { pending: 6, size: 5, seed: false });
  // IndexedDB writes are asynchronous: give them a moment, then reload the page.
  await sleep(500);
  assert.equal((await events(relay, stream)).length, 1, "nothing reached the relay");
  await page.reload();
  await page.waitForFunction(() => window.harness !== undefined, null, { timeout: 30_000 });
  reachable = true;
  await page.evaluate(open, stream);
  await page.waitForFunction(() => harness.get().log.writes.length >= 6, null, { timeout: 30_000 });
  const state = await page.evaluate(() => ({
    writes: harness.get().log.writes.map(({ key, status }) => `${key}:${status}`),
    pending: harness.get().client.pendingWrites.length,
    records: harness.get().collection.toJSON(),
  }));
  assert.deepEqual(state.writes, ["w1:confirmed", "w2:confirmed", "w3:confirmed", "w4:confirmed", "w5:confirmed", "seed:confirmed"]);
  assert.equal(state.pending, 0);
  assert.deepEqual(state.records, { w1: { n: 1 }, w2: { n: 2 }, w3: { n: 3 }, w4: { n: 4 }, w5: { n: 5 } });
  const committed = await events(relay, stream);
  assert.deepEqual(
    committed.map(({ key, op }) => `${key}:${op}`),
    ["seed:upsert", "w1:upsert", "w2:upsert", "w3:upsert", "w4:upsert", "w5:upsert", "seed:delete"],
  );
  // A second reload finds nothing left to send.
  await page.reload();
  await page.waitForFunction(() => window.harness !== undefined, null, { timeout: 30_000 });
  await page.evaluate(open, stream);
  await sleep(500);
  assert.equal(await page.evaluate(() => harness.get().client.pendingWrites.length), 0);
  assert.equal((await events(relay, stream)).length, 7);
  await page.close();
});

for (const transport of ["websocket", "sse"]) {
  test(`exactly once over ${transport} while the relay dies between commit and ack`, async () => {
    const crashing = await startRelay({ args: ["--crash-before-ack", "6"] });
    try {
      const stream = `once_${transport}`;
      const page = await openPage(browser.context, crashing.url);
      await page.evaluate(
        async ({ stream, transport }) => {
          const index = harness.open(stream, { transport, backoff: { initialMs: 100, maxMs: 400 } });
          await harness.get(index).collection.ready();
          window.outcomes = [];
          const { collection } = harness.get(index);
          for (let index = 0; index < 30; index += 1) {
            const key = `k${index}`;
            collection.set(key, { index }).then(
              (seq) => window.outcomes.push({ key, seq }),
              (error) => window.outcomes.push({ key, error: error.code }),
            );
          }
        },
        { stream, transport },
      );
      // Each time the relay exits (after a commit, before its answer), start it again.
      let restarts = 0;
      const started = Date.now();
      for (;;) {
        const settled = await page.evaluate(() => window.outcomes.length);
        if (settled === 30) break;
        if (crashing.child.exitCode !== null) {
          restarts += 1;
          // The client writes as soon as the relay listens, so it may die again before it
          // reports ready: the next turn starts it again.
          await crashing.start().catch(() => {});
        }
        await sleep(100);
        assert.ok(restarts < 40, "the writes never settled");
      }
      const outcomes = await page.evaluate(() => window.outcomes);
      console.log(`# ${transport}: ${restarts} restarts in ${Date.now() - started} ms`);
      assert.ok(restarts >= 4, `the relay died ${restarts} times`);
      assert.deepEqual(outcomes.filter((outcome) => outcome.error), [], "no write failed");
      const committed = await events(crashing, stream);
      assert.equal(committed.length, 30, "every write committed exactly once");
      const byKey = Object.fromEntries(committed.map(({ key, seq }) => [key, seq]));
      for (const { key, seq } of outcomes) assert.equal(seq, byKey[key], `the promise of ${key} resolved with its seq`);
      // In order, too: a connection's writes commit in the order they were made.
      assert.deepEqual(
        committed.map(({ key }) => key),
        Array.from({ length: 30 }, (_, index) => `k${index}`),
      );
      const records = await page.evaluate(() => harness.get().collection.toJSON());
      assert.equal(Object.keys(records).length, 30);
      await page.close();
    } finally {
      await crashing.close();
    }
  });
}
