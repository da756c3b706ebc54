// Harness of the demo's browser tests: a real `tidewire-relay` with its embedded PostgreSQL in
// a temporary directory, on a free port, serving a copy of the built site (www/dist), plus
// headless Chromium through playwright-core (the machine's /usr/bin/chromium, fresh profile).
import { execFile, execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const run = promisify(execFile);

export const WWW = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const ROOT = path.resolve(WWW, "..");
export const RELAY_BINARY = process.env.TIDEWIRE_RELAY_BIN ?? path.join(ROOT, "target/debug/tidewire-relay");
export const SITE_DIR = process.env.TIDEWIRE_SITE_DIR ?? path.join(WWW, "dist");
export const ARTIFACTS = path.join(ROOT, "artifacts");
export const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
export const STREAM = "demo:tasks";

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check()` until it returns something truthy; throws after `timeoutMs`. */
export async function waitFor(check, { timeoutMs = 20_000, intervalMs = 50, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last?.message ?? JSON.stringify(last)})`);
    await sleep(intervalMs);
  }
}

async function freePort() {
  const server = net.createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address();
  server.close();
  await once(server, "close");
  return port;
}

function postgresBin(name) {
  const base = "/usr/lib/postgresql";
  const versions = fs.existsSync(base) ? fs.readdirSync(base).sort((a, b) => Number(b) - Number(a)) : [];
  for (const version of versions) {
    const candidate = path.join(base, version, "bin", name);
    if (fs.existsSync(candidate)) return candidate;
  }
  return name;
}

/** The relay, its embedded PostgreSQL and the site it serves. */
export class DemoRelay {
  constructor() {
    this.dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "tidewire-demo-pg-"));
    this.siteDir = fs.mkdtempSync(path.join(os.tmpdir(), "tidewire-demo-site-"));
    this.port = 0;
    this.log = [];
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  get databaseUrl() {
    const port = fs.readFileSync(path.join(this.dataDir, "tidewire.port"), "utf8").trim();
    return `postgres://postgres@127.0.0.1:${port}/tidewire`;
  }

  async start() {
    if (!fs.existsSync(path.join(SITE_DIR, "index.html"))) throw new Error(`the site is not built: run (cd www && npm run build) (looked in ${SITE_DIR})`);
    fs.cpSync(SITE_DIR, this.siteDir, { recursive: true });
    this.port = await freePort();
    const args = [
      "--listen", `127.0.0.1:${this.port}`,
      "--data-dir", this.dataDir,
      "--static-dir", this.siteDir,
      "--anon-read", "demo:*",
      "--anon-write", "demo:*",
      "--pg-health-interval-ms", "500",
      "--pg-reconnect-max-ms", "1000",
      "--outbox-poll-ms", "500",
      "--shutdown-grace-ms", "1000",
    ];
    this.child = spawn(RELAY_BINARY, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, TIDEWIRE_LOG: "warn" } });
    const keep = (chunk) => {
      this.log.push(chunk.toString());
      if (this.log.length > 300) this.log.shift();
    };
    this.child.stdout.on("data", keep);
    this.child.stderr.on("data", keep);
    this.exited = once(this.child, "exit");
    await waitFor(
      async () => {
        if (this.child.exitCode !== null) throw new Error(`relay exited: ${this.log.join("")}`);
        return (await fetch(`${this.url}/readyz`)).ok;
      },
      { timeoutMs: 90_000, intervalMs: 200, what: "the relay to be ready" },
    );
    await this.psqlFile(path.join(WWW, "sql/demo.sql"));
    fs.writeFileSync(
      path.join(this.siteDir, "demo-config.json"),
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

  /** `pg_ctl restart -m fast` of the embedded cluster, under the running relay (as the
   * unprivileged user that owns it when we are root). */
  async restartPostgres() {
    const pgCtl = postgresBin("pg_ctl");
    const args = ["-D", this.dataDir, "restart", "-m", "fast", "-w", "-l", path.join(this.dataDir, "tidewire-server.log")];
    const owner = fs.statSync(this.dataDir).uid;
    const [command, argv] = process.getuid?.() === 0 && owner !== 0 ? ["runuser", ["-u", "postgres", "--", pgCtl, ...args]] : [pgCtl, args];
    await run(command, argv, { timeout: 60_000 });
  }

  /** The committed board, read over HTTP: `{ seq, records: { key: value } }`. */
  async snapshot() {
    const response = await fetch(`${this.url}/v1/streams/${encodeURIComponent(STREAM)}/snapshot`);
    if (!response.ok) throw new Error(`snapshot: ${response.status}`);
    const body = await response.json();
    return { seq: body.seq, records: Object.fromEntries(body.records.map((record) => [record.key, record.data])) };
  }

  async close() {
    if (this.child && this.child.exitCode === null) {
      this.child.kill("SIGTERM");
      const timer = setTimeout(() => this.child.kill("SIGKILL"), 15_000);
      await this.exited;
      clearTimeout(timer);
    }
    try {
      const pgCtl = postgresBin("pg_ctl");
      const owner = fs.statSync(this.dataDir).uid;
      const args = ["-D", this.dataDir, "stop", "-m", "immediate"];
      if (process.getuid?.() === 0 && owner !== 0) execFileSync("runuser", ["-u", "postgres", "--", pgCtl, ...args], { stdio: "ignore" });
      else execFileSync(pgCtl, args, { stdio: "ignore" });
    } catch {
      // Already stopped with the relay.
    }
    fs.rmSync(this.dataDir, { recursive: true, force: true });
    fs.rmSync(this.siteDir, { recursive: true, force: true });
  }
}

/** Headless Chromium with a fresh profile; every page's console errors are collected. */
export class Browser {
  async launch() {
    this.profile = fs.mkdtempSync(path.join(os.tmpdir(), "tidewire-demo-chromium-"));
    this.context = await chromium.launchPersistentContext(this.profile, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1280, height: 860 },
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"],
    });
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

  async close() {
    await this.context?.close();
    if (this.profile) fs.rmSync(this.profile, { recursive: true, force: true });
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
