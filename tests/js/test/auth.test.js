// Authentication failures surface as a status with a code (and no retry storm); a new token
// set with setToken() brings the client back. The clients share a connection through the
// shared worker, so the worker's refusals reach them the same way.
import assert from "node:assert/strict";
import { test } from "node:test";

import { openPage } from "../lib/browser.js";
import { token } from "../lib/jwt.js";
import { sleep } from "../lib/relay.js";
import { withRelayAndBrowser } from "../lib/suite.js";

const SECRET = "browser-test-secret";
let relay;
let browser;
withRelayAndBrowser((started) => ({ relay, browser } = started), { args: ["--jwt-secret", SECRET] });

for (const transport of ["auto", "websocket"]) {
  test(`a refused token shows status offline/unauthorized (${transport}); setToken recovers`, async () => {
    const stream = `auth_${transport}`;
    await relay.publish(stream, "a", "upsert", { secret: true }, token(SECRET));
    const page = await openPage(browser.context, relay.url);
    await page.evaluate(
      ({ stream, transport }) => harness.open(stream, { token: "not-a-jwt", transport, share: true, backoff: { initialMs: 100, maxMs: 500 } }),
      { stream, transport },
    );
    await page.waitForFunction(() => harness.get().client.status === "offline", null, { timeout: 30_000 });
    const info = await page.evaluate(() => harness.get().client.statusInfo);
    assert.equal(info.status, "offline");
    assert.equal(info.code, "unauthorized");
    assert.ok(info.reason.length > 0);
    // No retry storm while the token is bad.
    const connectionsBefore = await page.evaluate(() => harness.get().client.stats.connections);
    await sleep(1500);
    assert.equal(await page.evaluate(() => harness.get().client.status), "offline");
    assert.equal(await page.evaluate(() => harness.get().client.stats.connections), connectionsBefore);

    await page.evaluate((good) => harness.get().client.setToken(good), token(SECRET));
    await page.waitForFunction(() => harness.get().client.status === "live", null, { timeout: 30_000 });
    assert.deepEqual(await page.evaluate(() => harness.get().collection.toJSON()), { a: { secret: true } });
    await page.close();
  });
}

test("an expired token closes with 4004 (token_expired); a fresh token resumes", async () => {
  const stream = "auth_expiry";
  await relay.publish(stream, "a", "upsert", 1, token(SECRET));
  const page = await openPage(browser.context, relay.url);
  await page.evaluate(
    ({ stream, short }) => harness.get(harness.open(stream, { token: short, transport: "websocket", share: true })).collection.ready(),
    { stream, short: token(SECRET, { seconds: 2 }) },
  );
  await page.waitForFunction(() => harness.get().client.status === "offline", null, { timeout: 30_000 });
  const info = await page.evaluate(() => harness.get().client.statusInfo);
  assert.equal(info.code, "token_expired");
  assert.equal(info.closeCode, 4004);
  const seq = await relay.publish(stream, "b", "upsert", 2, token(SECRET));
  await page.evaluate((good) => harness.get().client.setToken(good), token(SECRET));
  await page.waitForFunction((seq) => harness.get().client.status === "live" && harness.get().collection.seq >= seq, seq, {
    timeout: 30_000,
  });
  await page.close();
});

test("a forbidden stream is reported on the collection without blocking the others", async () => {
  await relay.publish("auth_open", "a", "upsert", 1, token(SECRET));
  const page = await openPage(browser.context, relay.url);
  const limited = token(SECRET, { read: ["auth_open"], write: [] });
  const result = await page.evaluate(async (limited) => {
    const index = harness.open("auth_open", { token: limited, transport: "websocket", share: true });
    const { client, collection } = harness.get(index);
    await collection.ready();
    const errors = [];
    const secret = client.collection("auth_secret");
    secret.on("error", (error) => errors.push({ code: error.code, stream: error.stream }));
    const write = await collection.set("b", 2).then(
      () => null,
      (error) => error.code,
    );
    while (errors.length === 0) await new Promise((resolve) => setTimeout(resolve, 20));
    return { errors, write, status: client.status };
  }, limited);
  assert.deepEqual(result.errors, [{ code: "forbidden", stream: "auth_secret" }]);
  assert.equal(result.write, "forbidden");
  assert.equal(result.status, "live");
  await page.close();
});
