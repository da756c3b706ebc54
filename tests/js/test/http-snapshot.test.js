// Snapshots over HTTP pages (`snapshot: "http"`): a 100,000-record collection loads page by
// page while a writer keeps committing (the pages after the first are held until the writer
// committed past the snapshot's position), then resumes live from the snapshot's position
// with `since` and converges to exactly the records PostgreSQL holds.
import assert from "node:assert/strict";
import { test } from "node:test";

import { openPage } from "../lib/browser.js";
import { waitFor } from "../lib/relay.js";
import { withRelayAndBrowser } from "../lib/suite.js";

let relay;
let browser;
withRelayAndBrowser((started) => ({ relay, browser } = started));

const STREAM = "big";
const RECORDS = 100_000;
/** Writes committed after the first page before the other pages may be read. */
const WRITES_DURING_LOAD = 150;
/** Events the client must apply live (after its resume) before the writer stops. */
const LIVE_EVENTS = 100;

/** A deterministic writer: patches, replaces, deletes and creates records until stopped. */
function writer() {
  let state = 12345;
  const random = (n) => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return state % n;
  };
  const run = { writes: 0, stop: false, error: null };
  run.done = (async () => {
    while (!run.stop) {
      const i = run.writes;
      const key = `k${1 + random(RECORDS)}`;
      const dice = random(100);
      if (dice < 50) await relay.publish(STREAM, key, "patch", { v: i + 1 });
      else if (dice < 70) await relay.publish(STREAM, key, "upsert", { n: -1, v: i + 1 });
      else if (dice < 85) await relay.publish(STREAM, key, "delete", null);
      else await relay.publish(STREAM, `x${i}`, "upsert", { n: i, v: i + 1 });
      run.writes += 1;
    }
  })().catch((error) => {
    run.error = error;
  });
  return run;
}

/** `count sha256(key:n:v:fields, ... in key order)` of PostgreSQL's records of the stream. */
async function committed() {
  return relay.psql(
    `select count(*) || ' ' || coalesce(encode(sha256(convert_to(string_agg(
       key || ':' || coalesce(data->>'n', '') || ':' || coalesce(data->>'v', '') || ':' ||
       (select count(*) from jsonb_object_keys(data)), ',' order by key collate "C"), 'UTF8')), 'hex'), '')
       from tidewire.records where stream = '${STREAM}'`,
  );
}

/** What the page's WebSockets send (parsed) and receive (counted by message type). */
function watchFrames(page) {
  const frames = { sent: [], received: {} };
  page.on("websocket", (socket) => {
    socket.on("framesent", (frame) => frames.sent.push(JSON.parse(String(frame.payload))));
    socket.on("framereceived", (frame) => {
      const type = /^\{"type":"(\w+)"/.exec(String(frame.payload))?.[1] ?? "?";
      frames.received[type] = (frames.received[type] ?? 0) + 1;
    });
  });
  return frames;
}

test("100,000 records load over HTTP pages during writes, then converge live", async () => {
  await relay.psql(
    `select count(tidewire.publish('${STREAM}', 'k' || g, 'upsert', jsonb_build_object('n', g, 'v', 0)))
       from generate_series(1, ${RECORDS}) as g`,
  );
  const page = await openPage(browser.context, relay.url);
  const pages = [];
  page.on("request", (request) => {
    if (new URL(request.url()).pathname === `/v1/streams/${STREAM}/snapshot`) pages.push(request.url());
  });
  const frames = watchFrames(page);
  // The first page fixes the snapshot's position; the others wait until the writer has
  // committed past it, so the pages are read while the stream moves on.
  let firstPageSeq = null;
  page.on("response", async (response) => {
    const url = new URL(response.url());
    if (url.pathname === `/v1/streams/${STREAM}/snapshot` && !url.searchParams.has("cursor")) {
      firstPageSeq = (await response.json()).seq;
    }
  });
  const write = writer();
  let writesAtFirstPage = null;
  const laterPages = (url) => url.pathname === `/v1/streams/${STREAM}/snapshot` && url.searchParams.has("cursor");
  await page.route(laterPages, async (route) => {
    writesAtFirstPage ??= write.writes;
    await waitFor(() => write.error || write.writes >= writesAtFirstPage + WRITES_DURING_LOAD, {
      timeoutMs: 30_000,
      intervalMs: 20,
      what: "writes during the load",
    });
    await route.continue();
  });

  try {
    const started = Date.now();
    await page.evaluate((stream) => {
      const { TidewireClient } = harness.tidewire;
      const client = new TidewireClient(location.origin, { snapshot: "http", share: false });
      const collection = client.collection(stream);
      const log = { snapshot: 0, events: [], order: [], resyncs: 0 };
      collection.subscribe((change) => {
        if (change.origin === "snapshot") {
          log.snapshot += 1;
          if (log.order.at(-1) !== "snapshot") log.order.push("snapshot");
        } else {
          log.events.push(change.seq);
          if (log.order.at(-1) !== change.origin) log.order.push(change.origin);
        }
      });
      collection.on("resync", () => {
        log.resyncs += 1;
      });
      window.big = { client, collection, log };
    }, STREAM);
    await page.waitForFunction(() => window.big.collection.live, null, { timeout: 45_000, polling: 100 });
    const loadedMs = Date.now() - started;
    await page.unroute(laterPages);
    const liveAt = await page.evaluate(() => window.big.collection.seq);
    await waitFor(
      async () => write.error || (await page.evaluate(() => window.big.collection.seq)) >= liveAt + LIVE_EVENTS,
      { timeoutMs: 30_000, what: "live events" },
    );
    write.stop = true;
    await write.done;
    assert.equal(write.error, null, `the writer failed: ${write.error}`);

    const head = await (await fetch(`${relay.url}/v1/streams/${STREAM}`)).json();
    await waitFor(async () => (await page.evaluate(() => window.big.collection.seq)) === head.seq, {
      timeoutMs: 20_000,
      what: `the client to reach seq ${head.seq}`,
    });
    const client = await page.evaluate(async () => {
      const { client, collection, log } = window.big;
      const entries = [...collection.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      const text = entries
        .map(([key, value]) => `${key}:${value.n ?? ""}:${value.v ?? ""}:${Object.keys(value).length}`)
        .join(",");
      const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
      const hex = [...new Uint8Array(digest)].map((byte) => byte.toString(16).padStart(2, "0")).join("");
      return {
        summary: `${entries.length} ${hex}`,
        size: collection.size,
        stats: client.stats,
        log: { snapshot: log.snapshot, order: log.order, resyncs: log.resyncs, events: log.events },
      };
    });
    const expected = await committed();
    console.log(
      `# http snapshot: ${pages.length} pages, loaded and live in ${loadedMs} ms; snapshot at seq ` +
        `${firstPageSeq}, ${write.writes} writes, head ${head.seq}, ${expected.split(" ")[0]} records`,
    );

    // Exactly PostgreSQL's records.
    assert.equal(client.summary, expected);
    assert.equal(client.size, Number(expected.split(" ")[0]));

    // The snapshot came over HTTP pages, the subscription resumed from its position.
    const atSnapshot = Number(
      await relay.psql(`select count(*) from tidewire.snapshot_page('${STREAM}', ${firstPageSeq}, null, ${2 * RECORDS})`),
    );
    assert.ok(pages.length >= Math.floor(atSnapshot / 500), `${pages.length} snapshot pages of 500 for ${atSnapshot}`);
    assert.equal(frames.received.snapshot ?? 0, 0, "no snapshot on the WebSocket");
    const subscribes = frames.sent.filter((message) => message.type === "subscribe");
    assert.equal(subscribes.length, 1, JSON.stringify(subscribes));
    assert.deepEqual(subscribes[0].since, { epoch: head.epoch, seq: firstPageSeq });
    assert.ok(head.seq - firstPageSeq >= WRITES_DURING_LOAD + LIVE_EVENTS, "writes after the snapshot's position");

    // One snapshot, applied at once, then every later event once, in order.
    assert.deepEqual(client.log.order, ["snapshot", "event"]);
    assert.equal(client.log.snapshot, atSnapshot, "one change per record of the snapshot");
    assert.equal(client.log.resyncs, 0);
    assert.equal(client.stats.resyncs, 0);
    const events = client.log.events;
    assert.ok(events[0] > firstPageSeq, `first event ${events[0]} after ${firstPageSeq}`);
    for (let index = 1; index < events.length; index += 1) {
      assert.ok(events[index] > events[index - 1], `event seqs ${events[index - 1]} then ${events[index]}`);
    }
  } finally {
    write.stop = true;
    await write.done;
    await page.evaluate(() => window.big?.client.close()).catch(() => {});
    await page.close();
  }
});

test("a 409 resync starts the pages over; a failed page falls back to the socket snapshot", async () => {
  const stream = "pages-fallback";
  const count = 1200;
  await relay.psql(
    `select count(tidewire.publish('${stream}', 'k' || g, 'upsert', jsonb_build_object('n', g)))
       from generate_series(1, ${count}) as g`,
  );
  const page = await openPage(browser.context, relay.url);
  const frames = watchFrames(page);
  // The first page with a cursor answers 409 resync, the next one fails: two starts, no load.
  const requests = [];
  await page.route(
    (url) => url.pathname === `/v1/streams/${stream}/snapshot`,
    async (route) => {
      const cursor = new URL(route.request().url()).searchParams.has("cursor");
      requests.push(cursor ? "cursor" : "first");
      if (!cursor) return route.continue();
      if (requests.filter((kind) => kind === "cursor").length === 1) {
        return route.fulfill({
          status: 409,
          contentType: "application/json",
          body: JSON.stringify({ type: "error", code: "bad_since", message: "expired", resync: true, epoch: 1, seq: 1 }),
        });
      }
      return route.abort("failed");
    },
  );
  try {
    await page.evaluate((stream) => {
      const { TidewireClient } = harness.tidewire;
      const client = new TidewireClient(location.origin, { snapshot: "http", share: false });
      const collection = client.collection(stream);
      const log = { origins: {}, resyncs: 0 };
      collection.subscribe((change) => {
        log.origins[change.origin] = (log.origins[change.origin] ?? 0) + 1;
      });
      collection.on("resync", () => {
        log.resyncs += 1;
      });
      window.fallback = { client, collection, log };
    }, stream);
    await page.waitForFunction(() => window.fallback.collection.live, null, { timeout: 20_000, polling: 50 });
    const state = await page.evaluate(() => {
      const { collection, log } = window.fallback;
      return { records: collection.toJSON(), seq: collection.seq, log };
    });
    const expected = await relay.snapshot(stream);
    assert.deepEqual(requests, ["first", "cursor", "first", "cursor"]);
    assert.equal(frames.received.snapshot > 0, true, "the snapshot came on the WebSocket");
    const subscribes = frames.sent.filter((message) => message.type === "subscribe");
    assert.deepEqual(subscribes.map((message) => message.since), [undefined]);
    assert.equal(Object.keys(state.records).length, count);
    assert.deepEqual(state.records, expected.records);
    assert.equal(state.seq, expected.seq);
    assert.deepEqual(state.log, { origins: { snapshot: count }, resyncs: 0 });
  } finally {
    await page.evaluate(() => window.fallback?.client.close()).catch(() => {});
    await page.close();
  }
});
