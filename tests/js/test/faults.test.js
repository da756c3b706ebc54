// Faults while a page is open: kill -9 and restart the relay, then restart PostgreSQL under
// it, with writes committing throughout. The page must end with exactly the committed state
// and must never report the same change twice.
import assert from "node:assert/strict";
import { test } from "node:test";

import { openPage } from "../lib/browser.js";
import { sleep, waitFor } from "../lib/relay.js";
import { withRelayAndBrowser } from "../lib/suite.js";

let relay;
let browser;
withRelayAndBrowser((started) => ({ relay, browser } = started));

/** Publishes random writes until stopped; remembers which committed. */
function startWriter(stream) {
  const committed = [];
  let failures = 0;
  let running = true;
  const done = (async () => {
    let index = 0;
    while (running) {
      index += 1;
      const key = `k${index % 17}`;
      const op = index % 11 === 0 ? "delete" : index % 3 === 0 ? "patch" : "upsert";
      const data = op === "delete" ? null : op === "patch" ? { [`f${index % 4}`]: index } : { index, text: `write ${index}` };
      try {
        committed.push(await relay.publish(stream, key, op, data));
      } catch {
        failures += 1;
      }
      await sleep(15);
    }
  })();
  return {
    committed,
    get failures() {
      return failures;
    },
    async stop() {
      running = false;
      await done;
    },
  };
}

async function waitLive(page, what) {
  await page.waitForFunction(() => harness.get().client.status === "live", null, { timeout: 90_000 });
  return what;
}

test("relay kill -9 + restart, then PostgreSQL restart: exact state, no duplicate callbacks", async () => {
  const stream = "faults";
  for (let index = 0; index < 20; index += 1) {
    await relay.publish(stream, `k${index}`, "upsert", { index, text: "seed" });
  }
  const page = await openPage(browser.context, relay.url);
  await page.evaluate((stream) => {
    const index = harness.open(stream, { backoff: { initialMs: 200, maxMs: 1000 }, keepaliveMs: 4000 });
    return harness.get(index).collection.ready();
  }, stream);
  const writer = startWriter(stream);
  await sleep(1000);

  // 1. kill -9 the relay; its PostgreSQL keeps running and is adopted by the new relay.
  await relay.kill();
  await page.waitForFunction(() => harness.get().client.status !== "live", null, { timeout: 30_000 });
  await sleep(1500);
  await relay.start();
  await waitLive(page, "after the relay restart");
  await sleep(1000);

  // 2. Restart PostgreSQL under the running relay.
  relay.restartPostgres();
  await sleep(1500);
  await waitLive(page, "after the PostgreSQL restart");
  await sleep(1000);
  await writer.stop();

  assert.ok(writer.committed.length > 50, `writes committed: ${writer.committed.length}`);
  const committed = await relay.snapshot(stream);
  await page.waitForFunction((seq) => harness.get().collection.seq >= seq, committed.seq, { timeout: 60_000 });
  const state = await page.evaluate(() => harness.state());
  assert.equal(state.seq, committed.seq);
  assert.equal(state.epoch, committed.epoch);
  assert.deepEqual(state.records, committed.records);

  const changes = await page.evaluate(() => harness.get().log.changes.map((c) => ({ seq: c.seq, origin: c.origin, key: c.key })));
  const eventSeqs = changes.filter((change) => change.origin === "event").map((change) => change.seq);
  assert.equal(new Set(eventSeqs).size, eventSeqs.length, "a change was reported twice");
  for (let index = 1; index < eventSeqs.length; index += 1) {
    assert.ok(eventSeqs[index] > eventSeqs[index - 1], `change order: ${eventSeqs[index - 1]} then ${eventSeqs[index]}`);
  }
  // Every committed write that changed something was reported (no resync happened, so all
  // of them arrived as events).
  const resyncs = await page.evaluate(() => harness.get().log.resyncs.length);
  if (resyncs === 0) {
    const seen = new Set(eventSeqs);
    const missing = writer.committed.filter((seq) => !seen.has(seq));
    // A write can be superseded before it is seen only if it was applied out of order,
    // which a replay never does: every committed write changes its key's value or fields.
    assert.ok(missing.length <= writer.committed.length * 0.1, `unreported seqs: ${missing.slice(0, 10)}`);
  }
  const statuses = await page.evaluate(() => harness.get().log.statuses.map((s) => s.status));
  assert.ok(statuses.includes("connecting"), "the outage was visible in the status");
  assert.equal(statuses.at(-1), "live");
  const stats = await page.evaluate(() => harness.get().client.stats);
  // The relay restart needs a new connection; the PostgreSQL restart does not (the relay
  // keeps its clients and reports `disconnect` / `reconnect` advisories).
  assert.ok(stats.connections >= 2, `connections: ${stats.connections}`);
  const codes = await page.evaluate(() => harness.get().log.statuses.map((s) => `${s.status}:${s.code ?? ""}`));
  console.log(
    `# faults: ${writer.committed.length} writes committed, ${writer.failures} refused while down; ` +
      `client stats ${JSON.stringify(stats)}; transport ${state.transport}; statuses ${codes.join(" ")}`,
  );
  await page.close();
});

test("no reconnect attempts while offline or hidden; back at once on online / visibilitychange", async () => {
  const stream = "faults_pause";
  await relay.publish(stream, "a", "upsert", 1);
  const page = await openPage(browser.context, relay.url);
  await page.evaluate((stream) => {
    // Let the test flip the page's visibility (headless pages are always visible).
    let hidden = false;
    Object.defineProperty(document, "visibilityState", { get: () => (hidden ? "hidden" : "visible") });
    Object.defineProperty(document, "hidden", { get: () => hidden });
    window.setHidden = (value) => {
      hidden = value;
      document.dispatchEvent(new Event("visibilitychange"));
    };
    return harness.get(harness.open(stream, { backoff: { initialMs: 100, maxMs: 200 } })).collection.ready();
  }, stream);

  // Offline: the relay goes away while the browser reports being offline.
  await browser.context.setOffline(true);
  await relay.kill();
  await page.waitForFunction(() => harness.get().client.status === "offline", null, { timeout: 30_000 });
  assert.equal((await page.evaluate(() => harness.get().client.statusInfo)).code, "offline");
  const attempts = await page.evaluate(() => harness.get().log.statuses.length);
  await sleep(1000);
  assert.equal(await page.evaluate(() => harness.get().log.statuses.length), attempts, "no attempts while offline");
  await relay.start();
  const seq = await relay.publish(stream, "b", "upsert", 2);
  await browser.context.setOffline(false);
  await page.waitForFunction((seq) => harness.get().client.status === "live" && harness.get().collection.seq >= seq, seq, {
    timeout: 30_000,
  });

  // Hidden: same, with the page in the background.
  await page.evaluate(() => window.setHidden(true));
  await relay.kill();
  await page.waitForFunction(() => harness.get().client.statusInfo.code === "hidden", null, { timeout: 30_000 });
  assert.equal(await page.evaluate(() => harness.get().client.status), "offline");
  const connections = await page.evaluate(() => harness.get().client.stats.connections);
  await relay.start();
  await sleep(1000);
  assert.equal(await page.evaluate(() => harness.get().client.stats.connections), connections, "no reconnect while hidden");
  await page.evaluate(() => window.setHidden(false));
  await page.waitForFunction(() => harness.get().client.status === "live", null, { timeout: 30_000 });
  await page.close();
});
