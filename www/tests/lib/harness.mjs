// Harness of the demo's browser tests, on the shared browser-test fixture (tests/js/lib): a
// real `tidewire-relay` with its embedded PostgreSQL in a temporary directory, on a free port,
// serving a copy of the built site (www/dist), plus headless Chromium through playwright-core
// (the machine's /usr/bin/chromium, fresh profile).
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";

import { launch } from "../../../tests/js/lib/browser.js";
import { Relay, sleep, waitFor as waitUntil } from "../../../tests/js/lib/relay.js";

export { sleep };

const run = promisify(execFile);

export const WWW = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const ROOT = path.resolve(WWW, "..");
export const SITE_DIR = process.env.TIDEWIRE_SITE_DIR ?? path.join(WWW, "dist");
export const ARTIFACTS = path.join(ROOT, "artifacts");
export const STREAM = "demo:tasks";

/** Polls `check()` until it returns something truthy; throws after `timeoutMs` (the demo's
 * pages react within milliseconds, so it polls often). */
export function waitFor(check, { timeoutMs = 20_000, intervalMs = 50, what = "condition" } = {}) {
  return waitUntil(check, { timeoutMs, intervalMs, what });
}

/** The relay of the demo: the shared test relay, open to anonymous `demo:*` readers and
 * writers, serving a copy of the built site, with the demo's table and tracking installed. */
export class DemoRelay extends Relay {
  constructor() {
    super({
      args: ["--anon-read", "demo:*", "--anon-write", "demo:*"],
      staticDir: fs.mkdtempSync(path.join(os.tmpdir(), "tidewire-demo-site-")),
    });
  }

  get databaseUrl() {
    const port = fs.readFileSync(path.join(this.dataDir, "tidewire.port"), "utf8").trim();
    return `postgres://postgres@127.0.0.1:${port}/tidewire`;
  }

  async start() {
    if (!fs.existsSync(path.join(SITE_DIR, "index.html"))) throw new Error(`the site is not built: run (cd www && npm run build) (looked in ${SITE_DIR})`);
    fs.cpSync(SITE_DIR, this.staticDir, { recursive: true });
    await super.start();
    await this.psqlFile(path.join(WWW, "sql/demo.sql"));
    fs.writeFileSync(
      path.join(this.staticDir, "demo-config.json"),
      JSON.stringify({ stream: STREAM, psql: `psql ${this.databaseUrl}` }, null, 2),
    );
  }

  /** Runs SQL with psql (directly against PostgreSQL, not through the relay). */
  async psql(sql) {
    const { stdout } = await run("psql", [this.databaseUrl, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql], { timeout: 30_000 });
    return stdout.trim();
  }

  async psqlFile(file) {
    await run("psql", [this.databaseUrl, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", file], { timeout: 30_000 });
  }

  /** The committed board, read over HTTP: `{ seq, records: { key: value } }`. */
  async snapshot() {
    const { seq, records } = await super.snapshot(STREAM);
    return { seq, records };
  }
}

/** Headless Chromium with a fresh profile; every page's console errors are collected. */
export class Browser {
  async launch() {
    const { context, close } = await launch({ viewport: { width: 1280, height: 860 } });
    this.context = context;
    this.closeContext = close;
    // The persistent context opens one blank tab; the tests open their own.
    for (const page of this.context.pages()) await page.close();
    /** Console errors and uncaught exceptions of every page: the demo must log none. */
    this.errors = [];
    return this;
  }

  /** Opens the demo as `name` and waits until the board is live. */
  async open(url, name, { viewport } = {}) {
    const page = await this.context.newPage();
    if (viewport) await page.setViewportSize(viewport);
    page.on("console", (message) => {
      if (message.type() === "error") this.errors.push(`${name}: ${message.text()}`);
    });
    page.on("pageerror", (error) => this.errors.push(`${name}: ${error.message}`));
    await page.goto(`${url}/?name=${encodeURIComponent(name)}`);
    await page.waitForFunction(() => window.tidewireDemo?.state().status === "live", null, { timeout: 30_000 });
    await page.locator("#loading").waitFor({ state: "hidden" });
    return page;
  }

  /** Opens the React page (react.html) as `name` and waits until it is live. */
  async openReact(url, name) {
    const page = await this.context.newPage();
    page.on("console", (message) => {
      if (message.type() === "error") this.errors.push(`${name} (React): ${message.text()}`);
    });
    page.on("pageerror", (error) => this.errors.push(`${name} (React): ${error.message}`));
    await page.goto(`${url}/react.html?name=${encodeURIComponent(name)}`);
    await page.locator("#status-pill[data-state=live]").waitFor({ timeout: 30_000 });
    return page;
  }

  async close() {
    await this.closeContext?.();
  }
}

/** The state a page shows (see `window.tidewireDemo.state()` in src/main.js). */
export function state(page) {
  return page.evaluate(() => window.tidewireDemo.state());
}

/** The task titles rendered in a page's list, top to bottom (what the user sees). */
export function titles(page) {
  return page.locator("#task-list .task-title").allTextContents();
}

/** Waits until every page has applied `seq` or later. */
export async function allAt(pages, seq) {
  for (const page of pages) {
    await page.waitForFunction((target) => window.tidewireDemo.state().seq >= target, seq, { timeout: 20_000 });
  }
}

/** Adds a task through a page's form and waits until that page renders it. */
export async function addTask(page, title) {
  await page.locator("#new-title").fill(title);
  await page.locator("#new-title").press("Enter");
  await page.locator("#task-list .task-title", { hasText: title }).first().waitFor();
}

/** The `<li>` of the task titled `title`. */
export function task(page, title) {
  return page.locator("#task-list li.task", { has: page.locator(".task-title", { hasText: title }) });
}

export function saveArtifact(name, buffer) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, name);
  fs.writeFileSync(file, buffer);
  return file;
}
