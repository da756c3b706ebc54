// A client we did not write: Chromium's native EventSource. It resumes on its own after the
// relay is killed and restarted, sending the `Last-Event-ID` cursor it was given, and the
// relay resumes the stream from it: every event exactly once, in order, no snapshot again.
import assert from "node:assert/strict";
import { test } from "node:test";

import { openPage } from "../lib/browser.js";
import { waitFor } from "../lib/relay.js";
import { withRelayAndBrowser } from "../lib/suite.js";

let relay;
let browser;
withRelayAndBrowser((started) => ({ relay, browser } = started));

const seqs = (page) => page.evaluate(() => window.__es.events.map((event) => event.seq));

test("native EventSource resumes with its own Last-Event-ID across a relay restart", async () => {
  const page = await openPage(browser.context, relay.url);
  await page.evaluate(() => {
    window.__es = { events: [], subscribed: [], snapshots: 0, ids: [] };
    const source = new EventSource("/v1/sse?stream=native-es");
    source.addEventListener("event", (message) => {
      window.__es.events.push(JSON.parse(message.data));
      window.__es.ids.push(message.lastEventId);
    });
    source.addEventListener("subscribed", (message) => window.__es.subscribed.push(JSON.parse(message.data)));
    source.addEventListener("snapshot", () => (window.__es.snapshots += 1));
    window.__source = source;
  });
  await waitFor(async () => (await page.evaluate(() => window.__es.subscribed.length)) === 1, { what: "subscribed" });
  for (let n = 1; n <= 5; n += 1) await relay.publish("native-es", `k${n}`, "upsert", { n });
  await waitFor(async () => (await seqs(page)).length === 5, { what: "the first five events" });

  await relay.kill();
  await relay.start();
  for (let n = 6; n <= 9; n += 1) await relay.publish("native-es", `k${n}`, "upsert", { n });

  await waitFor(async () => (await seqs(page)).length >= 9, { timeoutMs: 60_000, what: "events after the restart" });
  const got = await seqs(page);
  const want = Array.from({ length: got.length }, (_, index) => index + 1);
  assert.deepEqual(got, want, "every event exactly once, in order");
  const state = await page.evaluate(() => window.__es);
  assert.equal(state.subscribed.length, 2, "subscribed again after the reconnect");
  assert.equal(state.subscribed[1].resumed, true, "the relay resumed from Last-Event-ID");
  assert.equal(state.snapshots, 1, "no second snapshot: a resume, not a resync");
  assert.match(state.ids.at(-1), /^1;native-es,\d+,\d+$/, "ids are cursors");
  await page.evaluate(() => window.__source.close());
  await page.close();
});
