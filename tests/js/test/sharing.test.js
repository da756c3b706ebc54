// One connection per browser: ten tabs of one origin over SSE (where HTTP/1.1's six
// connections per origin would leave the seventh tab without one) share one connection,
// held by the package's shared worker (the default) or by an elected tab (`share: "tabs"`,
// and where there is no SharedWorker). All are live and converge; the relay counts one
// connection; closing tabs (the host tab, or the worker's last tab) loses nothing and
// repeats no change, and the others are live again within 2 s; a tab opened later gets the
// current state at once; a guest tab's writes are shown at once and confirmed;
// `share: false` opts out.
import assert from "node:assert/strict";
import { test } from "node:test";

import { openPage } from "../lib/browser.js";
import { sleep, waitFor } from "../lib/relay.js";
import { withRelayAndBrowser } from "../lib/suite.js";

let relay;
let browser;
withRelayAndBrowser((started) => ({ relay, browser } = started));

const TABS = 10;

/** The relay's open connections of `transport`, from /metrics. */
async function connections(transport) {
  const text = await (await fetch(`${relay.url}/metrics`)).text();
  const line = text.split("\n").find((row) => row.startsWith(`tidewire_connections{transport="${transport}"}`));
  return line ? Number(line.split(" ").pop()) : 0;
}

/** Records as text with keys in order, to compare states. */
function canonical(records) {
  return JSON.stringify(Object.keys(records).sort().map((key) => [key, records[key]]));
}

async function openTab(stream, options) {
  const page = await openPage(browser.context, relay.url);
  await page.evaluate(
    ({ stream, options }) => {
      harness.open(stream, options);
    },
    { stream, options },
  );
  return page;
}

/** Each tab's records, role and whether any change was reported twice. */
async function tabState(page) {
  return page.evaluate(() => {
    const { client, collection, log } = harness.get();
    const seen = new Set();
    let repeated = 0;
    for (const change of log.changes) {
      if (change.origin !== "event") continue;
      const id = `${change.seq}:${change.key}`;
      if (seen.has(id)) repeated += 1;
      seen.add(id);
    }
    return {
      status: client.status,
      role: client.sharing.role,
      worker: client.sharing.worker,
      transport: client.transport,
      records: collection.toJSON(),
      seq: collection.seq,
      repeated,
    };
  });
}

test("ten tabs over SSE share the shared worker's connection; tabs come and go", async () => {
  const stream = "worker_tabs";
  for (let index = 0; index < 20; index += 1) await relay.publish(stream, `k${index}`, "upsert", { index });
  const options = { transport: "sse", share: true, backoff: { initialMs: 100, maxMs: 500 } };
  const before = await connections("sse");
  const pages = [];
  for (let index = 0; index < TABS; index += 1) pages.push(await openTab(stream, options));
  for (const page of pages) {
    await page.waitForFunction(() => harness.get().client.status === "live", null, { timeout: 30_000 });
  }
  const states = await Promise.all(pages.map(tabState));
  assert.deepEqual(
    states.map((state) => `${state.role}:${state.worker}:${state.transport}`),
    pages.map(() => "guest:true:shared"),
  );
  await waitFor(async () => (await connections("sse")) === before + 1, { what: "one SSE connection at the relay" });

  // A guest's write, and writes from outside while half of the tabs close.
  const written = await pages[3].evaluate(async () => {
    const { collection } = harness.get();
    const promise = collection.set("from-tab", { by: "tab 3" });
    const shown = collection.get("from-tab");
    await promise;
    return { shown, after: collection.get("from-tab") };
  });
  assert.deepEqual(written, { shown: { by: "tab 3" }, after: { by: "tab 3" } });
  const writer = (async () => {
    for (let index = 20; index < 60; index += 1) {
      await relay.publish(stream, `k${index % 30}`, "patch", { index });
      await sleep(10);
    }
  })();
  for (const page of pages.slice(0, 5)) await page.close();
  await writer;
  const truth = (await relay.snapshot(stream)).records;
  for (const page of pages.slice(5)) {
    await waitFor(async () => canonical((await tabState(page)).records) === canonical(truth), {
      what: "the remaining tabs converged",
      timeoutMs: 10_000,
    });
    const state = await tabState(page);
    assert.equal(state.status, "live");
    assert.equal(state.repeated, 0, "no change reported twice");
  }

  // A tab opened later has the current state at once.
  const late = await openTab(stream, options);
  const openedAt = Date.now();
  await late.waitForFunction(() => harness.get().client.status === "live", null, { timeout: 10_000 });
  const lateMs = Date.now() - openedAt;
  assert.equal(canonical((await tabState(late)).records), canonical(truth));
  console.log(`# worker: a tab opened later was live after ${lateMs} ms`);
  assert.ok(lateMs < 2000, `the late tab was live after ${lateMs} ms`);

  // The worker's last tab closes: the connection goes with it; a new tab starts over.
  for (const page of [...pages.slice(5), late]) await page.close();
  await waitFor(async () => (await connections("sse")) === before, { what: "the worker's connection closed" });
  const again = await openTab(stream, options);
  await again.waitForFunction(() => harness.get().client.status === "live", null, { timeout: 10_000 });
  assert.equal(canonical((await tabState(again)).records), canonical(truth));
  await again.close();
});

test("ten tabs over SSE share one connection held by an elected tab; the host tab closes and another takes over", async () => {
  const stream = "tabs";
  for (let index = 0; index < 20; index += 1) await relay.publish(stream, `k${index}`, "upsert", { index });
  const options = { transport: "sse", share: "tabs", backoff: { initialMs: 100, maxMs: 500 } };
  const pages = [];
  for (let index = 0; index < TABS; index += 1) pages.push(await openTab(stream, options));
  for (const page of pages) {
    await page.waitForFunction(() => harness.get().client.status === "live", null, { timeout: 30_000 });
  }
  const roles = await Promise.all(pages.map((page) => page.evaluate(() => harness.get().client.sharing.role)));
  assert.equal(roles.filter((role) => role === "host").length, 1, roles.join(","));
  assert.equal(roles.filter((role) => role === "guest").length, TABS - 1);
  await waitFor(async () => (await connections("sse")) === 1, { what: "one SSE connection at the relay" });
  assert.equal(await connections("ws"), 0);

  // Writes from outside, and one from a guest tab.
  for (let index = 20; index < 40; index += 1) await relay.publish(stream, `k${index % 25}`, "upsert", { index });
  const guest = pages[roles.indexOf("guest")];
  const written = await guest.evaluate(async () => {
    const { collection } = harness.get();
    const promise = collection.set("from-guest", { by: "guest" });
    const shown = collection.get("from-guest");
    const seq = await promise;
    return { shown, seq, after: collection.get("from-guest") };
  });
  assert.deepEqual(written.shown, { by: "guest" });
  assert.deepEqual(written.after, { by: "guest" });
  const expected = async () => (await relay.snapshot(stream)).records;
  let truth = await expected();
  for (const page of pages) {
    await waitFor(async () => canonical((await tabState(page)).records) === canonical(truth), {
      what: "every tab converged",
      timeoutMs: 10_000,
    });
  }

  // Close the host tab while a writer keeps committing.
  const hostIndex = roles.indexOf("host");
  const writer = (async () => {
    for (let index = 40; index < 70; index += 1) {
      await relay.publish(stream, `k${index % 30}`, "patch", { index });
      await sleep(20);
    }
  })();
  await sleep(200);
  const closedAt = Date.now();
  await pages[hostIndex].close();
  const rest = pages.filter((_, index) => index !== hostIndex);
  for (const page of rest) {
    await page.waitForFunction(() => harness.get().client.status === "live", null, { timeout: 10_000 });
  }
  const liveAgainMs = Date.now() - closedAt;
  await writer;
  truth = await expected();
  for (const page of rest) {
    await waitFor(async () => canonical((await tabState(page)).records) === canonical(truth), {
      what: "every remaining tab converged after the takeover",
      timeoutMs: 10_000,
    });
  }
  const states = await Promise.all(rest.map(tabState));
  assert.equal(states.filter((state) => state.role === "host").length, 1, "a new host");
  assert.deepEqual(
    states.map((state) => state.repeated),
    rest.map(() => 0),
    "no change reported twice",
  );
  console.log(`# the other tabs were live ${liveAgainMs} ms after the host tab closed`);
  assert.ok(liveAgainMs < 2000, `live again after ${liveAgainMs} ms`);
  await waitFor(async () => (await connections("sse")) === 1, { what: "still one SSE connection" });

  // A tab opened later is a guest and has the current state at once.
  const late = await openTab(stream, options);
  const openedAt = Date.now();
  await late.waitForFunction(() => harness.get().client.status === "live", null, { timeout: 10_000 });
  const lateMs = Date.now() - openedAt;
  const lateState = await tabState(late);
  assert.equal(lateState.role, "guest");
  assert.equal(lateState.transport, "shared");
  assert.equal(canonical(lateState.records), canonical(truth));
  console.log(`# a tab opened later was live after ${lateMs} ms`);
  assert.ok(lateMs < 2000, `the late tab was live after ${lateMs} ms`);
  for (const page of [...rest, late]) await page.close();
});

test("share: false keeps a connection of its own", async () => {
  const stream = "alone";
  await relay.publish(stream, "a", "upsert", { n: 1 });
  const before = await connections("ws");
  const first = await openTab(stream, { share: false });
  const second = await openTab(stream, { share: false });
  for (const page of [first, second]) {
    await page.waitForFunction(() => harness.get().client.status === "live", null, { timeout: 30_000 });
    assert.equal(await page.evaluate(() => harness.get().client.sharing.role), "off");
  }
  await waitFor(async () => (await connections("ws")) === before + 2, { what: "two WebSockets" });
  await first.close();
  await second.close();
});
