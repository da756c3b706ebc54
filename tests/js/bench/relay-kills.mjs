// Long fault run: the relay is killed (SIGKILL) and restarted on the same port N times while
// the load generator's native clients (WebSocket and SSE, with their own invariant checker)
// and several browser pages running the npm package (headless Chromium) stay subscribed to
// the same durable stream, which the load generator publishes to through PostgreSQL.
// Run by scripts/bench.d/45-kills-browser; not a test in the suite (it takes about a minute).
//
// Every page must end with exactly the committed state (the relay's snapshot), must report
// every event after its snapshot as a change exactly once and in order, and must have resumed
// (not re-snapshotted) after each kill; the native clients' verdict comes from the load generator. Prints the wasm
// clients' chosen reconnect delays as a histogram (full jitter) and writes a JSON report.
//
//   DATABASE_URL=... TIDEWIRE_RELAY_BIN=target/release/tidewire-relay \
//     LOADGEN=target/release/loadgen node bench/relay-kills.mjs [kills] [pages] [json]
import { spawn } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";

import { launch, openPage } from "../lib/browser.js";
import { sleep, startRelay } from "../lib/relay.js";

const kills = Number(process.argv[2] ?? 10);
const pages = Number(process.argv[3] ?? 4);
const jsonPath = process.argv[4] ?? "artifacts/bench/kills-browser.json";
const loadgenBin = process.env.LOADGEN ?? "target/release/loadgen";
if (!process.env.DATABASE_URL) throw new Error("DATABASE_URL must point at a migrated PostgreSQL");

const prefix = "kills";
const stream = `${prefix}-0`;
const relay = await startRelay();
const browser = await launch();
const problems = [];
try {
  // Native clients first: they create the stream by publishing and check themselves.
  const publishSeconds = 8 + kills * 4;
  const loadgenJson = jsonPath.replace(/\.json$/, "-native.json");
  const loadgen = spawn(
    loadgenBin,
    [
      "--relay", `127.0.0.1:${relay.port}`, "--database-url", process.env.DATABASE_URL,
      "--ws", "200", "--sse", "50", "--stream-prefix", prefix, "--rate", "100",
      "--duration", String(publishSeconds), "--drain-timeout", "60",
      "--label", `native clients through ${kills} relay kills`, "--json", loadgenJson,
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  let loadgenOutput = "";
  loadgen.stdout.on("data", (chunk) => {
    loadgenOutput += chunk.toString();
  });
  const loadgenExit = once(loadgen, "exit");

  // The pages join once the stream exists.
  await sleep(3000);
  const opened = [];
  for (let index = 0; index < pages; index += 1) {
    const page = await openPage(browser.context, relay.url);
    await page.evaluate(
      (stream) => {
        const index = harness.open(stream, { backoff: { initialMs: 100, maxMs: 2000 }, keepaliveMs: 4000 });
        return harness.get(index).collection.ready();
      },
      stream,
    );
    opened.push(page);
  }

  const downtimes = [];
  for (let kill = 0; kill < kills; kill += 1) {
    await sleep(3000);
    await relay.kill();
    const down = Date.now();
    await sleep(500);
    await relay.start();
    downtimes.push(Date.now() - down);
  }
  const [code] = await loadgenExit;
  console.log(loadgenOutput.split("\n").filter((line) => /verdict|lost|expected|e2e|reconnect|connects/.test(line)).join("\n"));
  const native = JSON.parse(fs.readFileSync(loadgenJson, "utf8"));
  if (code !== 0) problems.push(`loadgen exited with ${code}`);

  // Every page ends at the committed head with exactly the committed records.
  const committed = await relay.snapshot(stream);
  const pageReports = [];
  for (const [index, page] of opened.entries()) {
    try {
      await page.waitForFunction((seq) => harness.get().collection.seq >= seq, committed.seq, { timeout: 60_000 });
    } catch {
      problems.push(`page ${index} never reached seq ${committed.seq}`);
    }
    const state = await page.evaluate(() => harness.state());
    const log = await page.evaluate(() => {
      const { log } = harness.get();
      return {
        seqs: log.changes.filter((change) => change.origin === "event").map((change) => change.seq),
        resyncs: log.resyncs.length,
        delays: log.statuses.filter((status) => status.retryInMs !== undefined).map((status) => status.retryInMs),
        errors: log.errors,
      };
    });
    const duplicates = log.seqs.length - new Set(log.seqs).size;
    let outOfOrder = 0;
    for (let at = 1; at < log.seqs.length; at += 1) if (log.seqs[at] <= log.seqs[at - 1]) outOfOrder += 1;
    // Every event after the page's first one changes its record (the load generator's values
    // are unique), so the changes must be exactly the seqs from the first to the head.
    const first = log.seqs[0] ?? committed.seq + 1;
    const missing = committed.seq - first + 1 - new Set(log.seqs).size;
    if (missing !== 0) problems.push(`page ${index} did not report ${missing} events after seq ${first}`);
    const exact = state.seq === committed.seq && state.epoch === committed.epoch && JSON.stringify(sortKeys(state.records)) === JSON.stringify(sortKeys(committed.records));
    if (!exact) problems.push(`page ${index} state differs from the committed state (seq ${state.seq} vs ${committed.seq})`);
    if (duplicates > 0) problems.push(`page ${index} reported ${duplicates} changes twice`);
    if (outOfOrder > 0) problems.push(`page ${index} reported ${outOfOrder} changes out of order`);
    if (log.resyncs > 0) problems.push(`page ${index} re-snapshotted ${log.resyncs} times instead of resuming`);
    pageReports.push({
      page: index,
      seq: state.seq,
      records: state.size,
      changes_reported: log.seqs.length,
      first_change_seq: first,
      unreported: missing,
      duplicates,
      out_of_order: outOfOrder,
      resyncs: log.resyncs,
      connections: state.stats.connections,
      exact,
      reconnect_delays_ms: log.delays,
    });
  }

  const delays = [...pageReports.flatMap((report) => report.reconnect_delays_ms)];
  const histogram = {};
  for (const delay of delays) {
    const bucket = Math.min(Math.floor(delay / 250) * 250, 2000);
    histogram[bucket] = (histogram[bucket] ?? 0) + 1;
  }
  const report = {
    date: new Date().toISOString(),
    kills,
    pages,
    committed_seq: committed.seq,
    relay_downtime_ms: downtimes,
    wasm_pages: pageReports,
    wasm_reconnect_delay_histogram_ms: histogram,
    native: {
      verdict: native.invariants,
      deliveries: native.deliveries_during_publish,
      reconnect_delay_ms: native.reconnect_delay_ms,
    },
    problems,
  };
  fs.writeFileSync(jsonPath, JSON.stringify(report, null, 2));
  console.log(`relay killed ${kills} times (down ${Math.min(...downtimes)}-${Math.max(...downtimes)} ms each); committed head ${committed.seq}`);
  for (const page of pageReports) {
    console.log(
      `wasm page ${page.page}: seq ${page.seq}, ${page.records} records, ${page.changes_reported} changes reported, ` +
        `unreported ${page.unreported}, dup ${page.duplicates}, ooo ${page.out_of_order}, resyncs ${page.resyncs}, connections ${page.connections}, exact ${page.exact}`,
    );
  }
  console.log(`wasm reconnect delays chosen (ms bucket: count): ${JSON.stringify(histogram)}`);
  console.log(problems.length === 0 ? "verdict: PASS" : `verdict: FAIL\n${problems.join("\n")}`);
} finally {
  await browser.close();
  await relay.close();
}
process.exitCode = problems.length === 0 ? 0 : 1;

function sortKeys(records) {
  return Object.fromEntries(Object.entries(records).sort(([a], [b]) => a.localeCompare(b)));
}
