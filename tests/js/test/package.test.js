// Packaging: `npm pack` of the built package installs into a plain HTML page (import map,
// no bundler) and into a scratch Vite 7 project (type check, production build and dev
// server), and
// works in Chromium against a real relay in each.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";

import { launch } from "../lib/browser.js";
import { install, pack } from "../lib/pack.js";
import { freePort, ROOT, Relay, waitFor } from "../lib/relay.js";

const FIXTURES = path.join(ROOT, "tests/js/fixtures");
const VITE = path.join(ROOT, "tests/js/node_modules/vite/bin/vite.js");
const TSC = path.join(ROOT, "tests/js/node_modules/typescript/bin/tsc");
let scratch;
let tarball;
let browser;
const relays = [];

async function check(page, url, relay) {
  await page.goto(url);
  await page.waitForFunction(() => window.app !== undefined, null, { timeout: 30_000 });
  await page.evaluate(() => window.app.ready);
  const seq = await relay.publish("pkg_todos", "b", "upsert", { title: "bread" });
  await page.waitForFunction((seq) => window.app.todos.seq >= seq, seq);
  const items = await page.$$eval("#todos li", (items) => items.map((item) => item.textContent).sort());
  assert.deepEqual(items, ["bread", "milk"]);
  await relay.publish("pkg_todos", "b", "delete", null);
  await page.evaluate(() => window.app.client.close());
}

before(async () => {
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), "tidewire-pack-"));
  let files;
  ({ tarball, files } = pack(scratch));
  for (const required of ["index.js", "index.d.ts", "tidewire.js", "tidewire_bg.wasm", "package.json", "README.md"]) {
    assert.ok(files.includes(required), `${required} is packed (${files.join(", ")})`);
  }
  assert.ok(files.some((file) => file.startsWith("snippets/")), "wasm-bindgen snippets are packed");
  browser = await launch();
});

after(async () => {
  await browser?.close();
  for (const relay of relays) await relay.close();
  fs.rmSync(scratch, { recursive: true, force: true });
});

test("npm pack installs and works from a plain <script type=module> page", async () => {
  const site = path.join(scratch, "plain");
  fs.cpSync(path.join(FIXTURES, "plain"), site, { recursive: true });
  install(site, tarball);
  const relay = new Relay({ staticDir: site });
  relays.push(relay);
  await relay.start();
  await relay.publish("pkg_todos", "a", "upsert", { title: "milk" });
  const page = await browser.context.newPage();
  await check(page, `${relay.url}/index.html`, relay);
  await page.close();
});

test("npm pack installs into a Vite 7 project: production build and dev server", async () => {
  const app = path.join(scratch, "vite-app");
  fs.cpSync(path.join(FIXTURES, "vite-app"), app, { recursive: true });
  install(app, tarball);
  // The published TypeScript types describe the API (strict mode).
  execFileSync(
    process.execPath,
    [TSC, "--strict", "--noEmit", "--target", "es2022", "--module", "esnext", "--moduleResolution", "bundler",
      "--lib", "es2022,dom,dom.iterable", "types-check.ts"],
    { cwd: app, stdio: "pipe" },
  );
  execFileSync(process.execPath, [VITE, "build", "--logLevel", "warn"], { cwd: app, stdio: "pipe" });
  const dist = path.join(app, "dist");
  assert.ok(fs.readdirSync(path.join(dist, "assets")).some((file) => file.endsWith(".wasm")), "the .wasm is emitted as an asset");
  const relay = new Relay({ staticDir: dist });
  relays.push(relay);
  await relay.start();
  await relay.publish("pkg_todos", "a", "upsert", { title: "milk" });
  const page = await browser.context.newPage();
  await check(page, `${relay.url}/index.html`, relay);

  // The dev server (another origin than the relay: allowed by the relay's default
  // same-host origin rule).
  const port = await freePort();
  const dev = spawn(process.execPath, [VITE, "--port", String(port), "--strictPort", "--host", "127.0.0.1"], {
    cwd: app,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const log = [];
  dev.stdout.on("data", (chunk) => log.push(chunk.toString()));
  dev.stderr.on("data", (chunk) => log.push(chunk.toString()));
  try {
    await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/`)).ok, { what: "the Vite dev server" });
    await check(page, `http://127.0.0.1:${port}/?relay=${encodeURIComponent(relay.url)}`, relay);
  } finally {
    dev.kill("SIGTERM");
  }
  await page.close();
  assert.ok(!log.join("").includes("error"), log.join(""));
});
