// Filtered collections (views) in a real browser against a real relay and PostgreSQL: a
// collection with `where` converges while records move in and out of its filter, and two
// filtered collections of one stream in one client (one union subscription) stay independent.
// Over WebSocket and over SSE (`where.<stream>=`). Every expectation is computed here from
// what was published, with the relay's merge rule.
import assert from "node:assert/strict";
import { test } from "node:test";

import { openPage } from "../lib/browser.js";
import { waitFor } from "../lib/relay.js";
import { withRelayAndBrowser } from "../lib/suite.js";

let relay;
let browser;
withRelayAndBrowser((started) => ({ relay, browser } = started));

/** Runs in the page: helpers to open filtered collections and record what they report. */
function installViews() {
  window.views = {
    clients: [],
    entries: {},
    /** A client (index returned) with the given options. */
    client(options) {
      const client = new harness.tidewire.TidewireClient(location.origin, { share: false, ...options });
      window.views.clients.push(client);
      return window.views.clients.length - 1;
    },
    /** Opens `collection(stream, { where })` on client `index` under `name`, with a mirror
     * built only from its change events. */
    open(name, index, stream, where) {
      const collection = window.views.clients[index].collection(stream, where === undefined ? undefined : { where });
      const entry = { collection, where, log: [], mirror: {}, resyncs: 0, errors: [] };
      collection.subscribe((change) => {
        entry.log.push(change);
        if (change.newValue === undefined) delete entry.mirror[change.key];
        else entry.mirror[change.key] = change.newValue;
      });
      collection.on("resync", () => (entry.resyncs += 1));
      collection.on("error", (error) => entry.errors.push(error.code));
      window.views.entries[name] = entry;
      const late = new Promise((_, reject) => setTimeout(() => reject(new Error(`${name} was not ready in 30 s`)), 30_000));
      return Promise.race([collection.ready(), late]);
    },
    state(name) {
      const entry = window.views.entries[name];
      const { collection } = entry;
      const sorted = (object) => Object.fromEntries(Object.entries(object).sort(([a], [b]) => a.localeCompare(b)));
      return {
        records: sorted(collection.toJSON()),
        mirror: sorted(entry.mirror),
        size: collection.size,
        keys: [...collection.keys()].sort(),
        live: collection.live,
        changes: entry.log.length,
        resyncs: entry.resyncs,
        errors: entry.errors,
      };
    },
    /** The changes of `name` from the `from`-th on, checked against its filter: a change
     * shows only records inside the view, a move-in has no old value, a move-out no new. */
    changes(name, from = 0) {
      const entry = window.views.entries[name];
      const { matches } = harness.tidewire;
      const inside = (value) => entry.where === undefined || matches(entry.where, value);
      return entry.log.slice(from).map((change) => ({
        key: change.key,
        op: change.op,
        origin: change.origin,
        hasOld: change.oldValue !== undefined,
        hasNew: change.newValue !== undefined,
        oldInside: change.oldValue === undefined || inside(change.oldValue),
        newInside: change.newValue === undefined || inside(change.newValue),
      }));
    },
  };
}

/** The relay's merge rule: upsert replaces, patch sets fields on an object (and replaces
 * anything else), delete removes. */
function apply(state, key, op, data) {
  if (op === "upsert") state.set(key, data);
  else if (op === "delete") state.delete(key);
  else {
    const prior = state.get(key);
    const base = prior !== null && typeof prior === "object" && !Array.isArray(prior) ? prior : {};
    state.set(key, { ...base, ...data });
  }
}

/** The records of `state` a predicate keeps, as a plain object sorted by key. */
function expected(state, keep) {
  return Object.fromEntries([...state].filter(([, value]) => keep(value)).sort(([a], [b]) => a.localeCompare(b)));
}

/** A small deterministic generator (mulberry32), so a failure can be replayed. */
function random(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const OWNERS = ["u1", "u2", "u3"];
/** A test that waits for something that never comes fails instead of hanging. */
const TIMEOUT = 180_000;

/** Publishes `count` random writes over HTTP: upserts, patches that move records between
 * owners (in and out of filters), patches that change other fields, deletes. */
async function publishMoves(stream, state, count, seed) {
  const next = random(seed);
  const pick = (list) => list[Math.floor(next() * list.length)];
  const keys = Array.from({ length: 16 }, (_, index) => `t${index}`);
  for (let index = 0; index < count; index += 1) {
    const key = pick(keys);
    const roll = next();
    let op;
    let data;
    if (!state.has(key) || roll < 0.2) {
      op = "upsert";
      data = { owner: pick(OWNERS), prio: Math.floor(next() * 5), title: `${key} v${index}` };
    } else if (roll < 0.55) {
      op = "patch";
      data = { owner: pick(OWNERS) };
    } else if (roll < 0.75) {
      op = "patch";
      data = roll < 0.65 ? { prio: Math.floor(next() * 5) } : { title: `${key} edit ${index}` };
    } else if (roll < 0.85) {
      op = "delete";
      data = null;
    } else {
      op = "patch";
      data = { owner: pick(OWNERS), prio: Math.floor(next() * 5) };
    }
    await relay.publish(stream, key, op, data);
    apply(state, key, op, data);
  }
}

/** Waits until view `name` holds exactly `want`, then checks what it reported. */
async function converged(page, name, want, what) {
  let state;
  await waitFor(
    async () => {
      state = await page.evaluate((name) => views.state(name), name);
      return JSON.stringify(state.records) === JSON.stringify(want);
    },
    { timeoutMs: 30_000, what: `${what} to converge` },
  ).catch((error) => {
    assert.deepEqual(state?.records, want, `${what}: ${error.message}`);
  });
  assert.deepEqual(state.records, want, what);
  assert.deepEqual(state.mirror, want, `${what}: the change events rebuild the view`);
  assert.equal(state.size, Object.keys(want).length, `${what}: size`);
  assert.deepEqual(state.keys, Object.keys(want), `${what}: keys()`);
  assert.deepEqual(state.errors, [], `${what}: errors`);
  const changes = await page.evaluate((name) => views.changes(name), name);
  const outside = changes.filter((change) => !change.oldInside || !change.newInside);
  assert.deepEqual(outside, [], `${what}: changes show only records inside the view`);
  return { state, changes };
}

for (const transport of ["websocket", "sse"]) {
  test(`a filtered collection converges while records move in and out (${transport})`, { timeout: TIMEOUT }, async () => {
    const stream = `views_moves_${transport}`;
    const state = new Map();
    await publishMoves(stream, state, 30, 7);
    const page = await openPage(browser.context, relay.url);
    await page.evaluate(installViews);
    await page.evaluate(
      ([stream, transport]) => views.open("mine", views.client({ transport }), stream, { owner: "u1" }),
      [stream, transport],
    );
    const mine = (value) => value.owner === "u1";
    const first = await converged(page, "mine", expected(state, mine), "the snapshot of the view");
    assert.ok(first.changes.every((change) => change.origin === "snapshot" && change.op === "upsert"));
    assert.equal(await page.evaluate(() => views.clients[0].transport), transport);

    await publishMoves(stream, state, 120, 11);
    const { changes } = await converged(page, "mine", expected(state, mine), "the view after moves");
    const live = changes.filter((change) => change.origin === "event");
    assert.ok(live.some((change) => change.op === "upsert" && !change.hasOld), "a move-in arrives as an upsert");
    assert.ok(live.some((change) => change.op === "delete" && change.hasOld), "a move-out arrives as a delete");
    const stats = await page.evaluate(() => views.clients[0].stats);
    assert.equal(stats.resyncs, 0);
    assert.equal(stats.gaps, 0, "events whose prev is our position are not gaps");

    // A move-in by a patch of a field the filter does not name still brings the whole record.
    const outsider = [...state].find(([, value]) => value.owner !== "u1");
    assert.ok(outsider, "a record outside the view");
    await relay.publish(stream, outsider[0], "patch", { owner: "u1" });
    apply(state, outsider[0], "patch", { owner: "u1" });
    const { state: view } = await converged(page, "mine", expected(state, mine), "a single move-in");
    assert.deepEqual(view.records[outsider[0]], state.get(outsider[0]));
    assert.ok(Object.keys(view.records[outsider[0]]).length > 1, "the whole record, not the patch");
    await page.evaluate(() => views.clients[0].close());
    await page.close();
  });

  test(`two filtered collections of one stream in one client are independent (${transport})`, { timeout: TIMEOUT }, async () => {
    const stream = `views_two_${transport}`;
    const state = new Map();
    await publishMoves(stream, state, 30, 21);
    const page = await openPage(browser.context, relay.url);
    await page.evaluate(installViews);
    const client = await page.evaluate((transport) => views.client({ transport }), transport);
    await page.evaluate(([client, stream]) => views.open("mine", client, stream, { owner: "u1" }), [client, stream]);
    const mine = (value) => value.owner === "u1";
    const urgent = (value) => value.prio >= 3;
    await converged(page, "mine", expected(state, mine), "u1's view");
    const before = await page.evaluate(() => views.state("mine"));

    // A second filter on the same stream: the client subscribes again for the union, and the
    // first collection hears nothing about it (its records did not change).
    await page.evaluate(([client, stream]) => views.open("urgent", client, stream, { prio: { ge: 3 } }), [client, stream]);
    await converged(page, "urgent", expected(state, urgent), "the urgent view");
    const after = await page.evaluate(() => views.state("mine"));
    assert.equal(after.changes, before.changes, "no change reported to the first view when the union widened");
    assert.equal(after.resyncs, 0);
    assert.ok(after.live);
    assert.deepEqual(after.records, before.records);
    const same = await page.evaluate(([client, stream]) => {
      const { clients, entries } = views;
      return {
        same: clients[client].collection(stream, { where: { owner: "u1" } }) === entries.mine.collection,
        other: clients[client].collection(stream, { where: { prio: { ge: 3 } } }) === entries.mine.collection,
      };
    }, [client, stream]);
    assert.deepEqual(same, { same: true, other: false });

    // Moves in and out of either view, some records in both.
    const counts = await page.evaluate(() => [views.state("mine").changes, views.state("urgent").changes]);
    await publishMoves(stream, state, 120, 23);
    const mineAfter = await converged(page, "mine", expected(state, mine), "u1's view after moves");
    const urgentAfter = await converged(page, "urgent", expected(state, urgent), "the urgent view after moves");
    assert.notDeepEqual(mineAfter.state.records, urgentAfter.state.records);
    assert.ok(
      Object.keys(mineAfter.state.records).some((key) => !(key in urgentAfter.state.records)),
      "the views differ (else the test proves nothing)",
    );
    // Each view heard its own changes only: the changes of one view are not the other's.
    const mineLive = mineAfter.changes.slice(counts[0]);
    const urgentLive = urgentAfter.changes.slice(counts[1]);
    assert.ok(mineLive.length > 0 && urgentLive.length > 0);
    assert.ok(mineLive.every((change) => change.origin === "event"));
    assert.ok(urgentLive.every((change) => change.origin === "event"));

    // A patch that takes a record out of one view and into the other.
    const both = [...state].find(([, value]) => value.owner === "u1" && value.prio < 3);
    assert.ok(both, "a record of u1's view only");
    const [key] = both;
    const marks = await page.evaluate(() => [views.state("mine").changes, views.state("urgent").changes]);
    await relay.publish(stream, key, "patch", { owner: "u2", prio: 4 });
    apply(state, key, "patch", { owner: "u2", prio: 4 });
    await converged(page, "mine", expected(state, mine), "the move out of u1's view");
    await converged(page, "urgent", expected(state, urgent), "the move into the urgent view");
    const [outOfMine, intoUrgent] = await page.evaluate(
      (marks) => [views.changes("mine", marks[0]), views.changes("urgent", marks[1])],
      marks,
    );
    assert.deepEqual(outOfMine.map((change) => [change.key, change.op, change.hasNew]), [[key, "delete", false]]);
    assert.deepEqual(intoUrgent.map((change) => [change.key, change.op, change.hasOld]), [[key, "upsert", false]]);
    const stats = await page.evaluate((client) => views.clients[client].stats, client);
    assert.equal(stats.resyncs, 0);
    assert.equal(stats.gaps, 0);

    // An invalid filter is refused before anything is sent.
    const refused = await page.evaluate(
      ([client, stream]) => {
        try {
          views.clients[client].collection(stream, { where: { prio: { gte: 3 } } });
          return null;
        } catch (error) {
          return { name: error.name, code: error.code, message: error.message };
        }
      },
      [client, stream],
    );
    assert.equal(refused?.code, "bad_filter");
    assert.match(refused.message, /where\.prio\.gte/);
    await page.evaluate((client) => views.clients[client].close(), client);
    await page.close();
  });
}

test("a filtered collection next to the unfiltered one of its stream shares its records", { timeout: TIMEOUT }, async () => {
  const stream = "views_beside_all";
  const state = new Map();
  await publishMoves(stream, state, 30, 31);
  const page = await openPage(browser.context, relay.url);
  await page.evaluate(installViews);
  const client = await page.evaluate(() => views.client({ transport: "websocket" }));
  await page.evaluate(([client, stream]) => views.open("all", client, stream, undefined), [client, stream]);
  await converged(page, "all", expected(state, () => true), "the whole stream");
  // The subscription already holds every record: the filtered collection is shown from them
  // (its records arrive as snapshot changes once its listeners are attached), no resubscribe.
  const before = await page.evaluate(() => views.state("all"));
  await page.evaluate(([client, stream]) => views.open("mine", client, stream, { owner: "u1" }), [client, stream]);
  const mine = (value) => value.owner === "u1";
  const shown = await converged(page, "mine", expected(state, mine), "the filtered collection");
  assert.ok(shown.changes.length > 0 && shown.changes.every((change) => change.origin === "snapshot"));
  assert.equal((await page.evaluate(() => views.state("all"))).changes, before.changes);
  await publishMoves(stream, state, 80, 37);
  await converged(page, "all", expected(state, () => true), "the whole stream after moves");
  await converged(page, "mine", expected(state, mine), "the filtered collection after moves");
  const stats = await page.evaluate((client) => views.clients[client].stats, client);
  assert.equal(stats.connections, 1);
  assert.equal(stats.resyncs, 0);
  await page.evaluate((client) => views.clients[client].close(), client);
  await page.close();
});
