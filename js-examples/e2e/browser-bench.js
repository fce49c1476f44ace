// `cargo xtask bench`, browser part: the npm package against the raw
// browser WebSocket in headless Chromium (Debian's /usr/bin/chromium through
// playwright-core), same page, same reference server, interleaved run by
// run. Writes JSON (argument 1, default target/bench-browser.json).
//
// Needs: pkg/ built (`cargo xtask pkg`) and the reference server binary
// (STEADFAST_SERVER, default target/release/steadfast-server).
// Environment: BENCH_QUICK=1 for a smoke run (every case once, small).
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { TestServer } from "../../pkg/test/server.js";
import { serveStatic } from "./static.js";

const quick = process.env.BENCH_QUICK === "1";
const out = process.argv[2] ?? fileURLToPath(new URL("../../target/bench-browser.json", import.meta.url));
const root = fileURLToPath(new URL("../../", import.meta.url));
const KIB = 1024;
const SIZES = [64, 16 * KIB, 64 * KIB, 1024 * KIB];
const RUNS = quick ? 1 : 5;
// Messages per run: up to MESSAGES, fewer for large payloads (a byte budget).
const MESSAGES = quick ? 500 : 20000;
const BUDGET = quick ? 4 << 20 : 64 << 20;
const countFor = (size) => Math.max(8, Math.min(MESSAGES, Math.floor(BUDGET / size)));
const KINDS = [
  { key: "raw", name: "raw browser WebSocket" },
  { key: "reliable", name: "steadfast reliable (npm)" },
  { key: "plain", name: "steadfast plain (npm)" },
];
const IDB_MESSAGES = quick ? 200 : 5000;
const IDB_SEQUENTIAL = quick ? 50 : 500;

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

const server = new TestServer(0, []);
await server.start();
const site = await serveStatic(root);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
});
let failed = false;
try {
  const page = await (await browser.newContext()).newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));
  await page.goto(`${site.url}js-examples/e2e/bench-page/index.html`);
  await page.waitForFunction(() => window.benchReady === true, null, { timeout: 30000 });
  const userAgent = await page.evaluate(() => window.bench.userAgent);
  const url = server.url;

  const throughput = [];
  for (const size of SIZES) {
    const count = countFor(size);
    const seconds = Object.fromEntries(KINDS.map((k) => [k.key, []]));
    for (let run = 0; run < RUNS; run++) {
      // Interleaved, the order rotating each run: A B C, B C A, ...
      for (let i = 0; i < KINDS.length; i++) {
        const kind = KINDS[(run + i) % KINDS.length].key;
        const s = await page.evaluate(
          ([kind, url, size, count]) =>
            kind === "raw"
              ? window.bench.raw(url, size, count)
              : window.bench.steadfast(url, kind === "reliable" ? "on" : "off", size, count),
          [kind, url, size, count],
        );
        seconds[kind].push(s);
      }
    }
    const row = { size, messages: count, runs: RUNS };
    for (const { key } of KINDS) {
      const perS = seconds[key].map((s) => count / s);
      row[key] = { messages_per_s: median(perS), mb_per_s: (median(perS) * size) / 1e6, runs_per_s: perS };
    }
    throughput.push(row);
    console.log(
      `${String(size).padStart(8)} B × ${count}: ` +
        KINDS.map(({ key }) => `${key} ${Math.round(row[key].messages_per_s)}/s`).join(", ") +
        `; reliable/raw ${(row.reliable.messages_per_s / row.raw.messages_per_s).toFixed(2)}`,
    );
  }

  // Nothing listens on a port we bound and closed.
  const closed = await serveStatic(root);
  const closedUrl = closed.url.replace(/^http/, "ws");
  await closed.close();
  const idbRuns = [];
  for (let run = 0; run < RUNS; run++) {
    idbRuns.push(
      await page.evaluate(([u, n, s]) => window.bench.indexeddb(u, n, s), [closedUrl, IDB_MESSAGES, IDB_SEQUENTIAL]),
    );
  }
  const indexeddb = {
    messages: IDB_MESSAGES,
    sequential_messages: IDB_SEQUENTIAL,
    concurrent_us_per_message: median(idbRuns.map((r) => r.concurrentUs)),
    sequential_us_per_message: median(idbRuns.map((r) => r.sequentialUs)),
  };
  console.log(
    `IndexedDB enqueue: ${indexeddb.concurrent_us_per_message.toFixed(1)} µs/message concurrent, ` +
      `${indexeddb.sequential_us_per_message.toFixed(0)} µs sequential`,
  );
  if (errors.length) throw new Error(`errors in the page: ${errors.join("; ")}`);
  writeFileSync(
    out,
    JSON.stringify({ browser: userAgent, kinds: KINDS, runs: RUNS, throughput, indexeddb }, null, 2) + "\n",
  );
  console.log(`wrote ${out}`);
} catch (error) {
  failed = true;
  console.error(`browser bench failed: ${error.stack ?? error}`);
} finally {
  await browser.close();
  await site.close();
  await server.stop();
}
process.exit(failed ? 1 : 0);
