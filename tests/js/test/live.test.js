// Snapshot then live updates; two pages converging after concurrent writes to the same
// keys; ephemeral messages and presence between pages.
import assert from "node:assert/strict";
import { test } from "node:test";

import { openPage } from "../lib/browser.js";
import { waitFor } from "../lib/relay.js";
import { withRelayAndBrowser } from "../lib/suite.js";

let relay;
let browser;
withRelayAndBrowser((started) => ({ relay, browser } = started));

test("snapshot then live updates, each change reported once", async () => {
  const stream = "live_todos";
  for (let index = 1; index <= 5; index += 1) {
    await relay.publish(stream, `t${index}`, "upsert", { title: `todo ${index}`, done: false });
  }
  const page = await openPage(browser.context, relay.url);
  await page.evaluate((stream) => {
    const index = harness.open(stream);
    return harness.get(index).collection.ready();
  }, stream);
  let state = await page.evaluate(() => harness.state());
  assert.equal(state.status, "live");
  assert.equal(state.transport, "websocket");
  assert.equal(state.size, 5);
  assert.deepEqual(state.records.t3, { title: "todo 3", done: false });
  const snapshotChanges = await page.evaluate(() => harness.get().log.changes.map((c) => [c.key, c.op, c.origin]));
  assert.equal(snapshotChanges.length, 5);
  assert.ok(snapshotChanges.every(([, op, origin]) => op === "upsert" && origin === "snapshot"));

  // Live: an upsert, a patch, a delete, committed elsewhere (HTTP API).
  const seqs = [];
  seqs.push(await relay.publish(stream, "t6", "upsert", { title: "todo 6", done: false }));
  seqs.push(await relay.publish(stream, "t1", "patch", { done: true }));
  seqs.push(await relay.publish(stream, "t2", "delete", null));
  await page.waitForFunction((seq) => harness.get().collection.seq >= seq, seqs[2]);
  state = await page.evaluate(() => harness.state());
  const committed = await relay.snapshot(stream);
  assert.deepEqual(state.records, committed.records);
  assert.equal(state.seq, committed.seq);
  const live = await page.evaluate(() => harness.get().log.changes.filter((c) => c.origin === "event"));
  assert.deepEqual(
    live.map((change) => [change.key, change.op, change.seq]),
    [["t6", "upsert", seqs[0]], ["t1", "patch", seqs[1]], ["t2", "delete", seqs[2]]],
  );
  assert.deepEqual(live[1].oldValue, { title: "todo 1", done: false });
  assert.deepEqual(live[1].newValue, { title: "todo 1", done: true });
  assert.equal(live[2].newValue, undefined);

  // Writes from the page resolve with the committed seq and come back as changes.
  const written = await page.evaluate(() => harness.get().collection.set("t7", { title: "from page" }));
  assert.equal(typeof written, "number");
  await page.waitForFunction((seq) => harness.get().collection.seq >= seq, written);
  const error = await page.evaluate(() =>
    harness.get().collection.patch("t7", 42).then(
      () => null,
      (error) => ({ name: error.name, code: error.code, isError: error instanceof Error }),
    ),
  );
  assert.deepEqual(error, { name: "TidewireError", code: "bad_data", isError: true });
  await page.close();
});

test("two pages converge after concurrent writes to the same keys", async () => {
  const stream = "live_converge";
  const pages = [await openPage(browser.context, relay.url), await openPage(browser.context, relay.url)];
  for (const page of pages) {
    await page.evaluate((stream) => harness.get(harness.open(stream)).collection.ready(), stream);
  }
  // Both pages write the same ten keys at the same time, with upserts and patches.
  const writes = pages.map((page, pageIndex) =>
    page.evaluate(async (pageIndex) => {
      const { collection } = harness.get();
      const promises = [];
      for (let round = 0; round < 10; round += 1) {
        for (let key = 0; key < 10; key += 1) {
          promises.push(
            round % 3 === 2
              ? collection.patch(`k${key}`, { [`p${pageIndex}`]: round })
              : collection.set(`k${key}`, { page: pageIndex, round }),
          );
        }
      }
      return Promise.all(promises);
    }, pageIndex),
  );
  const seqs = (await Promise.all(writes)).flat();
  assert.equal(new Set(seqs).size, seqs.length, "every write committed at its own seq");
  const head = Math.max(...seqs);
  for (const page of pages) {
    await page.waitForFunction((head) => harness.get().collection.seq >= head, head);
  }
  const committed = await relay.snapshot(stream);
  const states = await Promise.all(pages.map((page) => page.evaluate(() => harness.state())));
  for (const state of states) {
    assert.deepEqual(state.records, committed.records);
    assert.equal(state.seq, committed.seq);
  }
  for (const page of pages) {
    const seqsSeen = await page.evaluate(() => harness.get().log.changes.filter((c) => c.origin === "event").map((c) => c.seq));
    assert.equal(new Set(seqsSeen).size, seqsSeen.length, "no change reported twice");
    await page.close();
  }
});

test("ephemeral messages and presence reach the other page (two tabs sharing a connection)", async () => {
  const stream = "live_room";
  const pages = [await openPage(browser.context, relay.url), await openPage(browser.context, relay.url)];
  for (const page of pages) {
    // Through the shared worker: presence stays per tab.
    await page.evaluate((stream) => harness.get(harness.open(stream, { share: true })).collection.ready(), stream);
  }
  assert.deepEqual(
    await Promise.all(pages.map((page) => page.evaluate(() => harness.get().client.sharing.worker))),
    [true, true],
  );
  await pages[0].evaluate(() => harness.get().collection.setPresence({ name: "ann" }));
  await pages[1].evaluate(() => harness.get().collection.setPresence({ name: "bob" }));
  for (const page of pages) {
    await page.waitForFunction(() => harness.get().collection.presence.length === 2);
  }
  const members = await pages[0].evaluate(() => harness.get().collection.presence);
  assert.deepEqual(members.map((member) => member.data.name).sort(), ["ann", "bob"]);
  assert.equal(members.filter((member) => member.self).length, 1);
  assert.equal(members.find((member) => member.self).data.name, "ann");

  const seq = await pages[0].evaluate(() => harness.get().collection.send("cursor", { x: 1, y: 2 }));
  assert.equal(seq, 0);
  await pages[1].waitForFunction(() => harness.get().log.messages.length >= 1);
  const message = await pages[1].evaluate(() => harness.get().log.messages[0]);
  assert.deepEqual(message, { key: "cursor", data: { x: 1, y: 2 } });
  assert.equal(await pages[1].evaluate(() => harness.get().collection.size), 0, "messages are not stored");

  await pages[0].evaluate(() => harness.get().client.close());
  await pages[1].waitForFunction(() => harness.get().collection.presence.length === 1);
  for (const page of pages) await page.close();
});

test("records are frozen objects that keep their identity until they change", async () => {
  const stream = "live_identity";
  await relay.publish(stream, "a", "upsert", { title: "a", tags: ["x"], owner: { id: 1 } });
  await relay.publish(stream, "b", "upsert", { title: "b" });
  const page = await openPage(browser.context, relay.url);
  await page.evaluate((stream) => harness.get(harness.open(stream)).collection.ready(), stream);
  await page.evaluate(() => {
    const { collection } = harness.get();
    window.kept = { a: collection.get("a"), b: collection.get("b") };
  });
  const seq = await relay.publish(stream, "b", "patch", { done: true });
  await page.waitForFunction((seq) => harness.get().collection.seq >= seq, seq);
  const seen = await page.evaluate(() => {
    const { collection, log } = harness.get();
    const a = collection.get("a");
    const last = log.changes.at(-1);
    let threw = false;
    try {
      // As application modules run: in strict mode, where writing a frozen field throws.
      (() => {
        "use strict";
        a.owner.id = 2;
      })();
    } catch {
      threw = true;
    }
    return {
      sameA: a === window.kept.a,
      sameB: collection.get("b") === window.kept.b,
      oldIsKept: last.oldValue === window.kept.b,
      newIsShown: last.newValue === collection.get("b"),
      iterated: [...collection.values()].includes(a),
      frozen: Object.isFrozen(a) && Object.isFrozen(a.tags) && Object.isFrozen(a.owner),
      threw,
      owner: a.owner.id,
      b: collection.get("b"),
    };
  });
  assert.deepEqual(seen, {
    sameA: true,
    sameB: false,
    oldIsKept: true,
    newIsShown: true,
    iterated: true,
    frozen: true,
    threw: true,
    owner: 1,
    b: { title: "b", done: true },
  });
  await page.close();
});
