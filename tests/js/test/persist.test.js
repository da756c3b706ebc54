// Persistence: a reload resumes from the stored (epoch, seq) with `since` (no snapshot on
// the wire), shows the stored records at once (origin "restore"), then applies only what
// was committed meanwhile.
import assert from "node:assert/strict";
import { test } from "node:test";

import { openPage } from "../lib/browser.js";
import { sleep } from "../lib/relay.js";
import { withRelayAndBrowser } from "../lib/suite.js";

let relay;
let browser;
withRelayAndBrowser((started) => ({ relay, browser } = started));

for (const persist of ["indexeddb", "localstorage"]) {
  test(`reload resumes from ${persist} without a snapshot`, async () => {
    const stream = `persist_${persist}`;
    for (let index = 1; index <= 20; index += 1) {
      await relay.publish(stream, `k${index}`, "upsert", { index });
    }
    const page = await openPage(browser.context, relay.url);
    const open = (persist) => (stream) => {
      const index = harness.open(stream, { persist });
      return harness.get(index).collection.ready();
    };
    await page.evaluate(`(${open.toString()})(${JSON.stringify(persist)})(${JSON.stringify(stream)})`);
    const before = await page.evaluate(() => harness.state());
    assert.equal(before.size, 20);
    // close() flushes the stored state.
    await page.evaluate(() => harness.get().client.close());

    const committedMeanwhile = [];
    committedMeanwhile.push(await relay.publish(stream, "k21", "upsert", { index: 21 }));
    committedMeanwhile.push(await relay.publish(stream, "k1", "delete", null));
    committedMeanwhile.push(await relay.publish(stream, "k2", "patch", { seen: true }));

    const frames = { sent: [], received: [] };
    page.on("websocket", (socket) => {
      socket.on("framesent", (frame) => frames.sent.push(String(frame.payload)));
      socket.on("framereceived", (frame) => frames.received.push(String(frame.payload)));
    });
    await page.reload();
    await page.waitForFunction(() => window.harness !== undefined);
    await page.evaluate(`(${open.toString()})(${JSON.stringify(persist)})(${JSON.stringify(stream)})`);
    const after = await page.evaluate(() => harness.state());
    const committed = await relay.snapshot(stream);
    assert.deepEqual(after.records, committed.records);
    assert.equal(after.seq, committed.seq);

    const subscribe = frames.sent.map((text) => JSON.parse(text)).find((message) => message.type === "subscribe");
    assert.deepEqual(subscribe.since, { epoch: before.epoch, seq: before.seq });
    const received = frames.received.map((text) => JSON.parse(text));
    assert.equal(received.filter((message) => message.type === "snapshot").length, 0, "no snapshot was sent");
    assert.equal(received.find((message) => message.type === "subscribed").resumed, true);
    const changes = await page.evaluate(() => harness.get().log.changes);
    assert.equal(changes.filter((change) => change.origin === "restore").length, 20);
    assert.deepEqual(
      changes.filter((change) => change.origin === "event").map((change) => change.seq),
      committedMeanwhile,
    );
    await sleep(400);
    await page.close();
  });
}
