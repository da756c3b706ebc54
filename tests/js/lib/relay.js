// Starts real relays for the browser tests (the package's, and through www/tests/lib the
// demo's): the built `tidewire-relay` binary with its embedded PostgreSQL in a temporary
// directory, on a free port, serving a static directory (the built npm package and the test
// pages, or the demo site) so pages and relay share one origin.
import { spawn, execFile, execFileSync } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const RELAY_BINARY = process.env.TIDEWIRE_RELAY_BIN ?? path.join(ROOT, "target/debug/tidewire-relay");
export const PACKAGE_DIR = process.env.TIDEWIRE_PKG_DIR ?? path.join(ROOT, "client-wasm/pkg");

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits until `check()` returns a truthy value (polling), or throws after `timeoutMs`. */
export async function waitFor(check, { timeoutMs = 30_000, intervalMs = 100, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last})`);
    await sleep(intervalMs);
  }
}

export async function freePort() {
  const server = net.createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address();
  server.close();
  await once(server, "close");
  return port;
}

/** A static directory with the package under `pkg/` and the test harness page. */
export function makeStaticDir() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tidewire-static-"));
  if (!fs.existsSync(path.join(PACKAGE_DIR, "index.js"))) {
    throw new Error(`the package is not built: run scripts/build-client (looked in ${PACKAGE_DIR})`);
  }
  fs.cpSync(PACKAGE_DIR, path.join(dir, "pkg"), { recursive: true });
  fs.cpSync(path.join(ROOT, "tests/js/pages"), dir, { recursive: true });
  return dir;
}

function pgCtl() {
  const base = "/usr/lib/postgresql";
  const versions = fs.existsSync(base) ? fs.readdirSync(base).sort((a, b) => Number(b) - Number(a)) : [];
  for (const version of versions) {
    const candidate = path.join(base, version, "bin/pg_ctl");
    if (fs.existsSync(candidate)) return candidate;
  }
  return "pg_ctl";
}

/** Runs pg_ctl as the user owning the data directory (the relay runs PostgreSQL as
 * `postgres` when started as root). */
function runPgCtl(dataDir, args) {
  const owner = fs.statSync(dataDir).uid;
  const command = process.getuid?.() === 0 && owner !== 0 ? ["runuser", ["-u", "postgres", "--", pgCtl(), ...args]] : [pgCtl(), args];
  return execFileSync(command[0], command[1], { stdio: "pipe", timeout: 60_000 }).toString();
}

export class Relay {
  constructor({ args = [], staticDir = makeStaticDir() } = {}) {
    this.args = args;
    this.staticDir = staticDir;
    this.dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "tidewire-relay-"));
    this.port = 0;
    this.child = null;
    this.log = [];
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Starts (or restarts, on the same port and data directory) and waits for /readyz. */
  async start() {
    if (!this.port) this.port = await freePort();
    const args = [
      "--listen", `127.0.0.1:${this.port}`,
      "--data-dir", this.dataDir,
      "--static-dir", this.staticDir,
      "--pg-health-interval-ms", "500",
      "--pg-reconnect-max-ms", "1000",
      "--outbox-poll-ms", "500",
      "--shutdown-grace-ms", "1000",
      "--publish-rate", "1000",
      "--publish-burst", "2000",
      ...this.args,
    ];
    const child = spawn(RELAY_BINARY, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, TIDEWIRE_LOG: "warn" } });
    this.child = child;
    const keep = (chunk) => {
      this.log.push(chunk.toString());
      if (this.log.length > 200) this.log.shift();
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    this.exited = once(child, "exit");
    // A relay that exits while starting fails the start at once (not after the timeout).
    let exitedEarly = false;
    this.exited.then(() => {
      exitedEarly = true;
    });
    await waitFor(
      async () => {
        if (exitedEarly || child.exitCode !== null) return "exited";
        const response = await fetch(`${this.url}/readyz`);
        return response.ok;
      },
      { timeoutMs: 90_000, intervalMs: 200, what: "the relay to be ready" },
    );
    if (exitedEarly || child.exitCode !== null) throw new Error(`relay exited: ${this.log.join("")}`);
  }

  /** kill -9: the embedded PostgreSQL keeps running and is adopted by the next start. */
  async kill() {
    if (!this.child || this.child.exitCode !== null) return;
    this.child.kill("SIGKILL");
    await this.exited;
  }

  /** SIGTERM: graceful shutdown, which also stops the embedded PostgreSQL. */
  async stop() {
    if (!this.child || this.child.exitCode !== null) return;
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 15_000);
    await this.exited;
    clearTimeout(timer);
  }

  /** `pg_ctl restart -m fast` of the embedded cluster, under the running relay. */
  restartPostgres() {
    return runPgCtl(this.dataDir, ["-D", this.dataDir, "restart", "-m", "fast", "-w", "-l", path.join(this.dataDir, "tidewire-server.log")]);
  }

  async close() {
    await this.stop();
    try {
      runPgCtl(this.dataDir, ["-D", this.dataDir, "stop", "-m", "immediate"]);
    } catch {
      // Already stopped with the relay.
    }
    fs.rmSync(this.dataDir, { recursive: true, force: true });
    fs.rmSync(this.staticDir, { recursive: true, force: true });
  }

  headers(token) {
    const headers = { "content-type": "application/json" };
    if (token) headers.authorization = `Bearer ${token}`;
    return headers;
  }

  /** Publishes over the HTTP API; resolves with the committed seq. */
  async publish(stream, key, op, data, token) {
    const response = await fetch(`${this.url}/v1/streams/${encodeURIComponent(stream)}/events`, {
      method: "POST",
      headers: this.headers(token),
      body: JSON.stringify({ key, op, data }),
    });
    const body = await response.json();
    if (!response.ok) throw Object.assign(new Error(`publish failed: ${JSON.stringify(body)}`), { status: response.status });
    return body.seq;
  }

  /** The committed state: `{epoch, seq, records: {key: data}}`. Reads every snapshot page,
   * then the events after the snapshot's seq (a snapshot may start at a position shared with
   * one started moments ago), as the Rust client's `HttpApi::snapshot` does. */
  async snapshot(stream, token) {
    const base = `${this.url}/v1/streams/${encodeURIComponent(stream)}`;
    const get = async (url) => {
      const response = await fetch(url, { headers: this.headers(token) });
      if (!response.ok) throw new Error(`GET ${url} failed: ${response.status} ${await response.text()}`);
      return response.json();
    };
    let page = await get(`${base}/snapshot`);
    const { epoch } = page;
    let { seq } = page;
    const records = new Map();
    for (;;) {
      for (const record of page.records) records.set(record.key, record.data);
      if (!page.next) break;
      page = await get(`${base}/snapshot?cursor=${encodeURIComponent(page.next)}`);
    }
    for (;;) {
      const body = await get(`${base}/events?since=${seq}&epoch=${epoch}`);
      for (const event of body.events) {
        if (event.op === "delete") records.delete(event.key);
        else if (event.op === "upsert") records.set(event.key, event.data);
        else if (event.op === "patch") {
          const old = records.get(event.key);
          const object = old !== null && typeof old === "object" && !Array.isArray(old) ? old : {};
          records.set(event.key, { ...object, ...event.data });
        }
      }
      const next = body.next ?? body.events.at(-1)?.seq ?? seq;
      if (!body.more || next <= seq) {
        seq = Math.max(seq, next);
        break;
      }
      seq = next;
    }
    return { epoch, seq, records: Object.fromEntries(records) };
  }

  /** The embedded PostgreSQL's URL (its port is in the data directory). */
  get databaseUrl() {
    const port = fs.readFileSync(path.join(this.dataDir, "tidewire.port"), "utf8").trim();
    return `postgres://postgres@127.0.0.1:${port}/tidewire`;
  }

  /** Runs SQL with psql, directly against PostgreSQL (not through the relay); the output
   * without headers or alignment. */
  async psql(sql, { timeoutMs = 60_000 } = {}) {
    const { stdout } = await run("psql", [this.databaseUrl, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql], {
      timeout: timeoutMs,
      maxBuffer: 64 * 1024 * 1024,
    });
    return stdout.trim();
  }
}

/** Starts a relay; the caller closes it. */
export async function startRelay(options) {
  const relay = new Relay(options);
  await relay.start();
  return relay;
}
