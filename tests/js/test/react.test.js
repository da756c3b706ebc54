// The framework bindings as a user gets them: the packed package installed into a React 19
// app with TanStack DB (tests/js/fixtures/react-app), type-checked with tsc, built with Vite
// and opened in two Chromium pages against a real relay and PostgreSQL.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";

import { launch } from "../lib/browser.js";
import { install, pack } from "../lib/pack.js";
import { ROOT, Relay, sleep, waitFor } from "../lib/relay.js";

const FIXTURE = path.join(ROOT, "tests/js/fixtures/react-app");
const VITE = path.join(ROOT, "tests/js/node_modules/vite/bin/vite.js");
const TSC = path.join(ROOT, "tests/js/node_modules/typescript/bin/tsc");
// The versions the tests run with (tests/js/package.json pins the same).
const DEPENDENCIES = ["react@19.3.1", "react-dom@19.3.1", "@tanstack/db@0.15.1", "@tanstack/react-db@0.5.11", "@types/react@19.3.0"];

let scratch;
let relay;

/** Runs a command in `cwd`; on failure, throws with what it printed. */
function run(args, cwd) {
  try {
    execFileSync(process.execPath, args, { cwd, stdio: "pipe" });
  } catch (error) {
    throw new Error(`${path.basename(args[0])} failed:\n${error.stdout}${error.stderr}`);
  }
}

let browser;
const pages = [];

before(async () => {
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), "tidewire-react-"));
  const { tarball } = pack(scratch);
  const app = path.join(scratch, "react-app");
  fs.cpSync(FIXTURE, app, { recursive: true });
  install(app, tarball, DEPENDENCIES);
  // Typed collections, hooks and TanStack DB options (strict mode).
  run(
    [TSC, "--strict", "--noEmit", "--target", "es2022", "--module", "esnext", "--moduleResolution", "bundler",
      "--jsx", "react-jsx", "--lib", "es2022,dom,dom.iterable", "--skipLibCheck", "types-check.tsx"],
    app,
  );
  run([VITE, "build", "--logLevel", "warn"], app);
  relay = new Relay({ staticDir: path.join(app, "dist") });
  await relay.start();
  for (const [key, name] of [["u1", "Ann"], ["u2", "Ben"]]) await relay.publish("rx_users", key, "upsert", { id: key, name });
  for (const [key, title, owner, done] of [["t1", "milk", "u1", false], ["t2", "eggs", "u2", true], ["t3", "bread", "u1", false]]) {
    await relay.publish("rx_tasks", key, "upsert", { id: key, title, owner, done });
  }
  browser = await launch();
});

after(async () => {
  for (const page of pages) await page.close().catch(() => {});
  await browser?.close();
  await relay?.close();
  if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
});

async function open() {
  const page = await browser.context.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));
  page.errors = errors;
  await page.goto(`${relay.url}/index.html`);
  await page.waitForFunction(() => window.app !== undefined, null, { timeout: 30_000 });
  await page.evaluate(() => window.app.ready);
  pages.push(page);
  return page;
}

const text = (page, selector) => page.$eval(selector, (element) => element.textContent);
const titles = (page) => page.$$eval("#tasks li", (items) => items.map((item) => item.textContent));

async function until(page, selector, expected) {
  await waitFor(async () => (await text(page, selector)) === expected, { what: `${selector} to read ${expected}`, timeoutMs: 15_000 });
}

test("two pages converge through the hooks and a TanStack DB join; a changed row re-renders alone", async () => {
  const a = await open();
  const b = await open();
  for (const page of [a, b]) {
    await until(page, "#status", "live");
    await waitFor(async () => (await titles(page)).join() === "milk,eggs,bread", { what: "the tasks" });
    await until(page, "#first", "milk");
    await until(page, "#open", "t1,t3");
    await until(page, "#joined", "t1:milk@Ann|t2:eggs@Ben|t3:bread@Ann");
    await until(page, "#open-titles", "bread,milk");
    await until(page, "#presence", "2");
  }

  // A remote change to one record: only its row renders again.
  const rendersBefore = await a.evaluate(() => ({ ...window.renders }));
  await relay.publish("rx_tasks", "t2", "upsert", { id: "t2", title: "brown eggs", owner: "u2", done: true });
  for (const page of [a, b]) await until(page, "#joined", "t1:milk@Ann|t2:brown eggs@Ben|t3:bread@Ann");
  await sleep(100);
  const rendersAfter = await a.evaluate(() => ({ ...window.renders }));
  assert.deepEqual(rendersAfter, { ...rendersBefore, t2: rendersBefore.t2 + 1 }, "only t2's row rendered again");

  // A TanStack DB insert in one page reaches the other page's hooks and join.
  await b.evaluate(() => window.app.tasks.insert({ id: "t4", title: "jam", owner: "u2", done: false }).isPersisted.promise);
  for (const page of [a, b]) {
    await until(page, "#open", "t1,t3,t4");
    await until(page, "#joined", "t1:milk@Ann|t2:brown eggs@Ben|t3:bread@Ann|t4:jam@Ben");
  }
  const rendersInsert = await a.evaluate(() => ({ ...window.renders }));
  assert.deepEqual(rendersInsert, { ...rendersAfter, t4: 1 }, "the new row rendered once, the others not again");

  // The join follows the other collection too.
  await relay.publish("rx_users", "u2", "upsert", { id: "u2", name: "Bea" });
  for (const page of [a, b]) await until(page, "#joined", "t1:milk@Ann|t2:brown eggs@Bea|t3:bread@Ann|t4:jam@Bea");

  // A record moving into and out of a filtered collection (a tidewire view) is inserted
  // into and deleted from its TanStack DB collection.
  await until(a, "#open-titles", "bread,jam,milk");
  await relay.publish("rx_tasks", "t2", "patch", { done: false });
  for (const page of [a, b]) await until(page, "#open-titles", "bread,brown eggs,jam,milk");
  await b.evaluate(() => window.app.tasks.update("t3", (draft) => { draft.done = true; }).isPersisted.promise);
  for (const page of [a, b]) await until(page, "#open-titles", "brown eggs,jam,milk");

  // A TanStack DB delete.
  await a.evaluate(() => window.app.tasks.delete("t4").isPersisted.promise);
  for (const page of [a, b]) await until(page, "#open", "t1,t2");
  for (const page of [a, b]) await until(page, "#open-titles", "brown eggs,milk");
  for (const page of [a, b]) assert.deepEqual(page.errors, []);
});

test("a TanStack DB mutation stays optimistic until its seq is applied, then gives way at once", async () => {
  const page = await open();
  await until(page, "#first", "milk");
  // Hold every commit: the relay's write waits on the events table's lock.
  const held = relay.psql("BEGIN; LOCK TABLE tidewire.events IN EXCLUSIVE MODE; SELECT pg_sleep(1.5); COMMIT;");
  await waitFor(
    async () =>
      (await relay.psql("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'events' AND l.mode = 'ExclusiveLock' AND l.granted")).trim() === "1",
    { what: "the lock", intervalMs: 20 },
  );
  const started = await page.evaluate(() => {
    const { tasks, live, client } = window.app;
    const seen = (window.seen = []);
    // Every state TanStack DB showed for t1, with tidewire's applied seq at that moment.
    tasks.subscribeChanges((changes) => {
      for (const change of changes) if (change.key === "t1") seen.push({ title: change.value?.title, seq: live.seq });
    });
    client.on("write", (write) => {
      if (write.key === "t1") window.confirmed = write.seq;
    });
    const seqBefore = live.seq;
    const tx = tasks.update("t1", (draft) => {
      draft.title = "oat milk";
    });
    window.settled = tx.isPersisted.promise.then(() => ({
      seq: live.seq,
      shown: tasks.get("t1").title,
      synced: tasks._state.syncedData.get("t1")?.title,
      optimistic: tasks._state.optimisticUpserts.size,
      state: tx.state,
    }));
    window.tx = tx;
    return { seqBefore, shown: tasks.get("t1").title };
  });
  assert.equal(started.shown, "oat milk", "shown optimistically at once");
  await sleep(500);
  const waiting = await page.evaluate(() => ({
    state: window.tx.state,
    seq: window.app.live.seq,
    shown: window.app.tasks.get("t1").title,
    synced: window.app.tasks._state.syncedData.get("t1")?.title,
  }));
  assert.deepEqual(waiting, { state: "persisting", seq: started.seqBefore, shown: "oat milk", synced: "milk" }, "still optimistic while the commit is held");
  await held;
  const settled = await page.evaluate(() => window.settled);
  const confirmed = await page.evaluate(() => window.confirmed);
  assert.ok(confirmed > started.seqBefore, `the write committed (seq ${confirmed})`);
  assert.deepEqual(settled, { seq: confirmed, shown: "oat milk", synced: "oat milk", optimistic: 0, state: "completed" }, "the committed value replaced the optimistic one when its seq was applied");
  const seen = await page.evaluate(() => window.seen);
  assert.ok(seen.every((state) => state.title === "oat milk"), `no flicker back to the old title: ${JSON.stringify(seen)}`);
  await until(page, "#first", "oat milk");
  assert.deepEqual(page.errors, []);
});

test("a refused TanStack DB mutation is rolled back", async () => {
  const page = await open();
  await until(page, "#first", "oat milk");
  const outcome = await page.evaluate(async () => {
    const { tasks } = window.app;
    // Keys are at most 512 bytes: tidewire refuses the write with bad_key.
    const id = "x".repeat(600);
    const tx = tasks.insert({ id, title: "too long", owner: "u1", done: false });
    const shown = tasks.has(id);
    const error = await tx.isPersisted.promise.then(() => null, (error) => error.code ?? error.message);
    return { shown, error, after: tasks.has(id), state: tx.state };
  });
  assert.deepEqual(outcome, { shown: true, error: "bad_key", after: false, state: "failed" });
});
