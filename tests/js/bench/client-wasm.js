// Browser micro-benchmark of the tidewire client in headless Chromium (prints numbers; not a
// timed test). Run by scripts/bench.d/client-wasm with the benchmark build of the package.
//
//   1. apply a 10,000-record snapshot (20 chunks of 500, as the relay sends it);
//   2. apply 10,000 live events (one message each, as they arrive), and the same stream with
//      every value the number 1 (what the engine and the calls between wasm and JavaScript
//      cost when values cost nothing);
//   3. change-callback overhead: the same events with a no-op listener (and once more with
//      the first event held back to the end, the path a replay after a gap takes);
//   3b. the floor of a redesign where wasm decides from keys and seqs alone: a per-key check
//       (BenchSeqs), and the shared merge rules themselves (BenchLedger);
//   4. values handed to JavaScript: JSON text + JSON.parse vs serde-wasm-bindgen;
//   5. a 10,000-record snapshot read over HTTP pages (`snapshot: "http"`, 20 pages of 500
//      served by this script), from `collection()` to the last record shown.
// Each number is the median of several runs; the baseline is JSON.parse of the same texts
// in JavaScript (what any client must at least pay). The target ratios are taken in each run
// and their median printed with their range: this VM's speed drifts between runs.
import { once } from "node:events";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";

import { launch } from "../lib/browser.js";

const pkg = process.argv[2];
if (!pkg) throw new Error("usage: node bench/client-wasm.js <package dir>");

const types = { ".js": "text/javascript", ".wasm": "application/wasm", ".html": "text/html" };
// The snapshot pages of stream `bench`, as the relay serves them: the same records as the
// socket snapshot below.
const PAGE_RECORDS = 500;
const PAGES = 20;
const pageRecord = (n) => ({ title: `todo number ${n}`, done: n % 3 === 0, priority: n % 5, tags: ["home", `t${n % 7}`], owner: { id: n % 100, name: "ann" } });
const pageTexts = Array.from({ length: PAGES }, (_, page) => {
  const records = [];
  for (let n = page * PAGE_RECORDS; n < (page + 1) * PAGE_RECORDS; n += 1) records.push({ key: `k${n}`, seq: n + 1, data: pageRecord(n) });
  return JSON.stringify({ stream: "bench", epoch: 1, seq: PAGES * PAGE_RECORDS, next: page + 1 < PAGES ? String(page + 1) : null, records });
});
const server = http.createServer((request, response) => {
  const url = new URL(request.url, "http://x");
  if (url.pathname === "/v1/streams/bench/snapshot") {
    const page = Number(url.searchParams.get("cursor") ?? 0);
    response.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
    response.end(pageTexts[page] ?? pageTexts[0]);
    return;
  }
  const file = url.pathname === "/" ? null : path.join(pkg, path.normalize(url.pathname));
  if (!file || !file.startsWith(pkg) || !fs.existsSync(file)) {
    response.writeHead(url.pathname === "/" ? 200 : 404, { "content-type": "text/html" });
    response.end('<!doctype html><link rel="icon" href="data:,"><script type="module">import * as t from "/index.js"; window.t = t;</script>');
    return;
  }
  response.writeHead(200, { "content-type": types[path.extname(file)] ?? "application/octet-stream" });
  fs.createReadStream(file).pipe(response);
});
server.listen(0, "127.0.0.1");
await once(server, "listening");

const browser = await launch();
const page = await browser.context.newPage();
await page.goto(`http://127.0.0.1:${server.address().port}/`);
await page.waitForFunction(() => window.t !== undefined);
// The package's own record helpers (its `js/records.js`, which wasm-bindgen copies under
// `snippets/`), for the floor below: the same freezing and patching as the client.
const snippets = fs.readdirSync(path.join(pkg, "snippets"));
const recordsModule = snippets.map((dir) => `/snippets/${dir}/js/records.js`).find((url) => fs.existsSync(path.join(pkg, url)));
if (!recordsModule) throw new Error(`no js/records.js under ${pkg}/snippets`);

const results = await page.evaluate(async (recordsModule) => {
  const { TidewireClient, benchConvert, BenchSeqs, BenchLedger } = window.t;
  const RECORDS = 10_000;
  const CHUNK = 500;
  const RUNS = 7;
  const record = (n) => ({ title: `todo number ${n}`, done: n % 3 === 0, priority: n % 5, tags: ["home", `t${n % 7}`], owner: { id: n % 100, name: "ann" } });
  const chunks = [];
  for (let chunk = 0; chunk * CHUNK < RECORDS; chunk += 1) {
    const records = [];
    for (let n = chunk * CHUNK; n < (chunk + 1) * CHUNK; n += 1) records.push({ key: `k${n}`, seq: n + 1, data: record(n) });
    chunks.push(JSON.stringify({ type: "snapshot", stream: "bench", epoch: 1, seq: RECORDS, chunk, last: (chunk + 1) * CHUNK >= RECORDS, records }));
  }
  const subscribed = JSON.stringify({ type: "subscribed", stream: "bench", epoch: 1, seq: RECORDS, resumed: false });
  const events = [];
  for (let n = 0; n < RECORDS; n += 1) {
    const seq = RECORDS + 1 + n;
    events.push(
      JSON.stringify(
        n % 2 === 0
          ? { type: "event", stream: "bench", epoch: 1, seq, key: `k${n}`, op: "patch", data: { done: true, priority: n % 4 } }
          : { type: "event", stream: "bench", epoch: 1, seq, key: `k${n}`, op: "upsert", data: record(n + 1) },
      ),
    );
  }
  // The same stream with every value the number 1: what the client costs when values cost
  // nothing to parse, store or freeze (its engine and the calls between wasm and JavaScript).
  const oneChunks = chunks.map((text) => {
    const message = JSON.parse(text);
    for (const record of message.records) record.data = 1;
    return JSON.stringify(message);
  });
  const oneEvents = events.map((text) => JSON.stringify({ ...JSON.parse(text), op: "upsert", data: 1 }));
  const median = (values) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)];
  const time = (body) => {
    const start = performance.now();
    body();
    return performance.now() - start;
  };
  const live = (listener) => {
    const client = new TidewireClient("http://127.0.0.1:1", { transport: "manual" });
    const collection = client.collection("bench");
    if (listener) collection.subscribe(listener);
    return { client, collection };
  };

  const out = {};
  let calls = 0;
  const count = () => (calls += 1);
  // One client's run: the snapshot `snapshotTexts`, then the live `eventTexts`, each timed.
  const apply = (listener, snapshotTexts, eventTexts, what) => {
    const { client, collection } = live(listener);
    const snapshotMs = time(() => {
      for (const text of snapshotTexts) client._inject(text);
      client._inject(subscribed);
    });
    if (collection.size !== RECORDS) throw new Error(`${what}: the snapshot applied ${collection.size} records`);
    const eventsMs = time(() => {
      for (const text of eventTexts) client._inject(text);
    });
    if (collection.seq !== 2 * RECORDS) throw new Error(`${what}: events applied up to ${collection.seq}`);
    client.close();
    return { snapshotMs, eventsMs };
  };
  // What any client must at least pay: JSON.parse of the same texts.
  const parseMs = (texts) => time(() => texts.forEach((text) => JSON.parse(text)));
  const measure = () => {
    const plain = apply(null, chunks, events, "events");
    const listened = apply(count, chunks, events, "events with a listener");
    const one = apply(count, oneChunks, oneEvents, "events of 1");
    const parsedSnapshotMs = parseMs(chunks);
    const parsedEventsMs = parseMs(events);
    return {
      snapshotMs: plain.snapshotMs,
      snapshotWithListenerMs: listened.snapshotMs,
      eventsMs: plain.eventsMs,
      eventsWithListenerMs: listened.eventsMs,
      eventsOfOneMs: one.eventsMs,
      baselineSnapshotParseMs: parsedSnapshotMs,
      baselineEventsParseMs: parsedEventsMs,
      // Each run's ratios against the JSON.parse of the same run: this machine's speed drifts
      // by a third between runs, and a ratio of medians mixes runs.
      ratios: {
        snapshot: plain.snapshotMs / parsedSnapshotMs,
        events: listened.eventsMs / parsedEventsMs,
        one: one.eventsMs / parsedEventsMs,
      },
    };
  };
  // One run first, not counted: wasm starts in V8's baseline compiler, and the first run
  // measured up to twice the others.
  measure();
  const runs = Array.from({ length: RUNS }, measure);
  // The same events with the first one held back until the end: every other event arrives
  // ahead of a missing seq, so the merge rules keep per-key seqs for all of them (the path a
  // replay after a gap takes). Not a target: a guard on that path's cost.
  const late = [...events.slice(1), events[0]];
  const lateRatios = Array.from({ length: RUNS }, () => apply(count, chunks, late, "late events").eventsMs / parseMs(events));
  for (const name of Object.keys(runs[0]).filter((name) => name !== "ratios")) out[name] = median(runs.map((run) => run[name]));
  // Each ratio's median over the runs, and its lowest and highest.
  const spread = (values) => ({ median: median([...values]), low: Math.min(...values), high: Math.max(...values) });
  out.ratios = Object.fromEntries(Object.keys(runs[0].ratios).map((name) => [name, spread(runs.map((run) => run.ratios[name]))]));
  out.ratios.late = spread(lateRatios);
  out.callbacks = calls;

  // The floor of a redesign (`BenchSeqs` in client-wasm/src/bench.rs): JavaScript parses each
  // message once and keeps the values, and wasm decides what applies from the key and the seq
  // alone, given the key as a string or as a number JavaScript assigns. Not the client: what
  // such a client could not go below, with the same listener, and the client's own freezing
  // and patching of records.
  const { freeze, patched, OPS } = await import(recordsModule);
  // What every floor keeps in JavaScript: the records, a number for each key, and how a change
  // is shown (frozen into the Map, then the listener).
  const floorState = () => {
    const records = new Map();
    const ids = new Map();
    const keyId = (key) => {
      let id = ids.get(key);
      if (id === undefined) {
        id = ids.size;
        ids.set(key, id);
      }
      return id;
    };
    const listener = () => (calls += 1);
    const show = (key, op, seq, newValue) => {
      const oldValue = records.get(key);
      if (newValue === undefined) records.delete(key);
      else records.set(key, freeze(newValue));
      listener({ key, op, seq, newValue, oldValue, origin: "event" });
    };
    return { records, keyId, show };
  };
  const floor = (numbered) => {
    const seqs = new BenchSeqs();
    const { records, keyId, show } = floorState();
    const decide = numbered ? (key, seq) => seqs.decideId(keyId(key), seq) : (key, seq) => seqs.decide(key, seq);
    const snapshotMs = time(() => {
      for (const text of chunks) {
        for (const record of JSON.parse(text).records) {
          if (decide(record.key, record.seq)) show(record.key, "upsert", record.seq, record.data);
        }
      }
    });
    const eventsMs = time(() => {
      for (const text of events) {
        const message = JSON.parse(text);
        if (!decide(message.key, message.seq)) continue;
        const value = message.op === "patch" ? patched(records.get(message.key), message.data) : message.data;
        show(message.key, message.op, message.seq, value);
      }
    });
    if (records.size !== RECORDS) throw new Error(`the floor kept ${records.size} records`);
    seqs.free();
    return { snapshotMs, eventsMs };
  };
  // The same with the shared merge rules deciding (`BenchLedger`: the `Ledger` the client's
  // collections use, per-field seqs, gaps and duplicates included), keys numbered in
  // JavaScript; JavaScript makes each new value from the answer as the ledger's docs say.
  // The ledger asks for a patch's field names only when events come out of order.
  const pick = (object, names) => {
    const picked = {};
    for (const name of names) if (typeof object === "object" && object !== null && Object.prototype.hasOwnProperty.call(object, name)) picked[name] = object[name];
    return picked;
  };
  const floorLedger = () => {
    const ledger = new BenchLedger();
    const { records, keyId, show } = floorState();
    const snapshotMs = time(() => {
      for (const text of chunks) {
        const message = JSON.parse(text);
        for (const record of message.records) show(record.key, "upsert", record.seq, record.data);
        if (message.last) ledger.load(message.epoch, message.seq);
      }
    });
    const eventsMs = time(() => {
      for (const text of events) {
        const message = JSON.parse(text);
        const data = message.data;
        const object = typeof data === "object" && data !== null && !Array.isArray(data);
        const id = keyId(message.key);
        const op = OPS.indexOf(message.op);
        let how = ledger.event(message.epoch, message.seq, id, op, object, undefined);
        if (how === 3) how = ledger.event(message.epoch, message.seq, id, op, object, Object.keys(data));
        if (how < 0) continue;
        const old = records.get(message.key);
        let value;
        if (how === 0) value = message.op === "delete" ? undefined : data;
        else if (how === 1) value = patched(old, data);
        else if (message.op === "patch") value = patched(old, pick(data, ledger.fields()));
        else value = patched(message.op === "delete" ? undefined : data, pick(old, ledger.fields()));
        show(message.key, message.op, message.seq, value);
      }
    });
    if (records.size !== RECORDS) throw new Error(`the ledger floor kept ${records.size} records`);
    ledger.free();
    return { snapshotMs, eventsMs };
  };
  for (const variant of ["keyed", "numbered", "ledger"]) {
    const name = { keyed: "floorKeyed", numbered: "floorNumbered", ledger: "floorLedger" }[variant];
    const snapshotRatios = [];
    const eventRatios = [];
    for (let run = 0; run < RUNS; run += 1) {
      const floorRun = variant === "ledger" ? floorLedger() : floor(variant === "numbered");
      snapshotRatios.push(floorRun.snapshotMs / parseMs(chunks));
      eventRatios.push(floorRun.eventsMs / parseMs(events));
    }
    out.ratios[`${name}Snapshot`] = spread(snapshotRatios);
    out.ratios[`${name}Events`] = spread(eventRatios);
  }

  // Reads: get() of every key, and a full iteration.
  const { client, collection } = live(null);
  for (const text of chunks) client._inject(text);
  client._inject(subscribed);
  out.get10kMs = median(Array.from({ length: RUNS }, () => time(() => { for (let n = 0; n < RECORDS; n += 1) collection.get(`k${n}`); })));
  out.entries10kMs = median(Array.from({ length: RUNS }, () => time(() => { let count = 0; for (const _ of collection) count += 1; if (count !== RECORDS) throw new Error("iteration"); })));
  // The same reads on a plain JavaScript Map of the same objects: the baseline for reads.
  const map = new Map(collection.entries());
  out.mapGet10kMs = median(Array.from({ length: RUNS }, () => time(() => { for (let n = 0; n < RECORDS; n += 1) map.get(`k${n}`); })));
  out.mapEntries10kMs = median(Array.from({ length: RUNS }, () => time(() => { let count = 0; for (const _ of map) count += 1; if (count !== RECORDS) throw new Error("iteration"); })));
  client.close();

  // A snapshot over HTTP pages, from `collection()` to its last record shown; the baseline
  // is JSON.parse of the same pages.
  const pageText = (page) => fetch(`/v1/streams/bench/snapshot${page ? `?cursor=${page}` : ""}`).then((answer) => answer.text());
  const pageTexts = await Promise.all(Array.from({ length: 20 }, (_, page) => pageText(page)));
  const httpRuns = [];
  const baselinePages = [];
  const fetchRuns = [];
  for (let run = 0; run < RUNS; run += 1) {
    // The 20 fetches alone, one after the other as the client must (each page names the next).
    const fetchStart = performance.now();
    for (let page = 0; page < 20; page += 1) await pageText(page);
    fetchRuns.push(performance.now() - fetchStart);
    const client = new TidewireClient(location.origin, { transport: "manual", snapshot: "http" });
    const start = performance.now();
    const collection = client.collection("bench");
    await new Promise((resolve, reject) => {
      const stuck = setTimeout(() => reject(new Error(`the HTTP snapshot showed ${collection.size} records in 30 s`)), 30_000);
      collection.subscribe(() => {
        if (collection.size === RECORDS) {
          clearTimeout(stuck);
          resolve();
        }
      });
    });
    httpRuns.push(performance.now() - start);
    client.close();
    baselinePages.push(parseMs(pageTexts));
  }
  out.httpSnapshotMs = median(httpRuns);
  out.fetchPagesMs = median(fetchRuns);
  out.baselinePagesParseMs = median(baselinePages);

  const convert = [];
  for (let run = 0; run < RUNS; run += 1) convert.push(benchConvert(JSON.stringify(record(42)), 10_000));
  out.convertJsonParseMs = median(convert.map((result) => result.jsonParseMs));
  out.convertSerdeWasmBindgenMs = median(convert.map((result) => result.serdeWasmBindgenMs));
  const big = { items: Array.from({ length: 100 }, (_, n) => record(n)) };
  const convertBig = [];
  for (let run = 0; run < RUNS; run += 1) convertBig.push(benchConvert(JSON.stringify(big), 200));
  out.convertBigJsonParseMs = median(convertBig.map((result) => result.jsonParseMs));
  out.convertBigSerdeWasmBindgenMs = median(convertBig.map((result) => result.serdeWasmBindgenMs));
  return out;
}, recordsModule);

const fixed = (value) => value.toFixed(1).padStart(8);
const callbackOverhead = results.eventsWithListenerMs - results.eventsMs;
console.log(`tidewire client micro-benchmark (headless Chromium ${browser.context.browser()?.version() ?? ""}, median of 7 runs)`);
console.log(`  apply 10,000-record snapshot (20 chunks)     ${fixed(results.snapshotMs)} ms   (JSON.parse baseline ${results.baselineSnapshotParseMs.toFixed(1)} ms)`);
console.log(`    with a change listener (10,000 callbacks)  ${fixed(results.snapshotWithListenerMs)} ms`);
console.log(`  apply 10,000 live events (one message each)  ${fixed(results.eventsMs)} ms   (JSON.parse baseline ${results.baselineEventsParseMs.toFixed(1)} ms)`);
console.log(`    with a change listener                     ${fixed(results.eventsWithListenerMs)} ms`);
console.log(`    the same, every value the number 1         ${fixed(results.eventsOfOneMs)} ms`);
console.log(`  change-callback overhead                     ${fixed(callbackOverhead)} ms per 10,000 events (${((callbackOverhead / 10_000) * 1000).toFixed(2)} µs each)`);
console.log(`  10,000-record snapshot over HTTP pages (20)   ${fixed(results.httpSnapshotMs)} ms   (JSON.parse of the pages ${results.baselinePagesParseMs.toFixed(1)} ms; the 20 fetches alone ${results.fetchPagesMs.toFixed(1)} ms)`);
console.log(`  get() of 10,000 keys                         ${fixed(results.get10kMs)} ms`);
console.log(`  iterate 10,000 entries                       ${fixed(results.entries10kMs)} ms`);
console.log(`  value -> JS, one record x10,000: JSON text + JSON.parse ${results.convertJsonParseMs.toFixed(1)} ms, serde-wasm-bindgen ${results.convertSerdeWasmBindgenMs.toFixed(1)} ms`);
console.log(`  value -> JS, 100 records x200:   JSON text + JSON.parse ${results.convertBigJsonParseMs.toFixed(1)} ms, serde-wasm-bindgen ${results.convertBigSerdeWasmBindgenMs.toFixed(1)} ms`);

// The targets of the speed issue, as ratios measured in this run.
const perKey = (ms) => (ms / 10_000) * 1000;
const wasmGzip = Number(process.env.TIDEWIRE_WASM_GZIP ?? NaN);
const row = (what, value, target) => console.log(`  ${what.padEnd(46)} ${value.padStart(16)}   ${target}`);
console.log("ratios (targets of the client speed and size issue)");
// Each run's ratio, then the median over the runs (the runs' range after it).
const ratio = ({ median, low, high }) => `${median.toFixed(1)}x (${low.toFixed(1)}-${high.toFixed(1)})`;
row("snapshot apply / JSON.parse", ratio(results.ratios.snapshot), "target <= 2x");
row("live events with a listener / JSON.parse", ratio(results.ratios.events), "target <= 3x");
row("the same, every value 1 / JSON.parse", ratio(results.ratios.one), "no target: the engine and the calls, values costing nothing");
row("the same, first seq held back / JSON.parse", ratio(results.ratios.late), "no target (out of order: per-key seqs kept)");
for (const [name, label, note] of [
  ["floorKeyed", "string keys", "floor: JS parses once, wasm checks each key's seq (bench.rs)"],
  ["floorNumbered", "numbered keys", "floor: JS parses once, wasm checks each key's seq (bench.rs)"],
  ["floorLedger", "merge rules", "JS parses once, the shared Ledger decides (bench.rs)"],
]) {
  row(`floor, ${label}: snapshot / JSON.parse`, ratio(results.ratios[`${name}Snapshot`]), note);
  row(`floor, ${label}: events / JSON.parse`, ratio(results.ratios[`${name}Events`]), note);
}
row("HTTP-page snapshot less its fetches / JSON.parse", `${((results.httpSnapshotMs - results.fetchPagesMs) / results.baselinePagesParseMs).toFixed(1)}x`, "no target (the socket snapshot's is <= 2x)");
row("get() per key", `${perKey(results.get10kMs).toFixed(3)} µs`, `target <= 0.2 µs (a JS Map: ${perKey(results.mapGet10kMs).toFixed(3)} µs)`);
row("iteration per entry", `${perKey(results.entries10kMs).toFixed(3)} µs`, `a JS Map: ${perKey(results.mapEntries10kMs).toFixed(3)} µs`);
row("change callback per change", `${Math.max(0, perKey(callbackOverhead)).toFixed(2)} µs`, "target <= 1 µs");
if (Number.isFinite(wasmGzip)) row(".wasm gzipped (release package)", `${(wasmGzip / 1024).toFixed(1)} KB`, "target <= 60 KB");
await browser.close();
server.close();
