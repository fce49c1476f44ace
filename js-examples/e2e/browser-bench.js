// `cargo xtask bench`, browser part: the npm package against the raw
// browser WebSocket in headless Chromium (Debian's /usr/bin/chromium), in
// one page, against one reference server, the kinds interleaved run by
// run. Writes JSON (argument 1, default target/bench-browser.json).
//
// Chromium is started directly on bench-page/ with the plan in its URL;
// the page POSTs its figures back to the static server here. No DevTools
// client (playwright) is attached while it measures: one reports every
// WebSocket frame to the driver, which here cost the browser and the
// driver 30-65 µs of CPU per message and cut the raw WebSocket's 64 B rate
// from ~27,000 to ~11,000 messages/s — a cost no user's browser pays, and
// one that grows with the number of frames rather than with the work.
//
// Needs: pkg/ built (`cargo xtask pkg`) and the reference server binary
// (STEADFAST_SERVER, default target/release/steadfast-server).
// Environment: BENCH_QUICK=1 for a smoke run (every case once, small);
// CHROMIUM, default /usr/bin/chromium.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { TestServer } from "../../pkg/test/server.js";
import { serveStatic } from "./static.js";

const quick = process.env.BENCH_QUICK === "1";
const out = process.argv[2] ?? fileURLToPath(new URL("../../target/bench-browser.json", import.meta.url));
const root = fileURLToPath(new URL("../../", import.meta.url));
process.env.STEADFAST_SERVER ??= fileURLToPath(new URL("../../target/release/steadfast-server", import.meta.url));
const KIB = 1024;
const SIZES = [64, 16 * KIB, 64 * KIB, 1024 * KIB];
// Messages per run: up to MESSAGES, fewer for large payloads (a byte budget).
const MESSAGES = quick ? 500 : 20000;
const BUDGET = quick ? 4 << 20 : 64 << 20;
const countFor = (size) => Math.max(8, Math.min(MESSAGES, Math.floor(BUDGET / size)));
const KINDS = [
  { key: "raw", name: "raw browser WebSocket" },
  { key: "reliable", name: "steadfast reliable (npm)" },
  { key: "plain", name: "steadfast plain (npm)" },
];
const TIMEOUT_MS = 12 * 60 * 1000;

const server = new TestServer(0, []);
await server.start();
// Nothing listens on a port we bound and closed (the IndexedDB case).
const closed = await serveStatic(root);
await closed.close();

let settle;
const outcome = new Promise((resolve) => (settle = resolve));
const site = await serveStatic(root, 0, (path, body) => {
  const message = JSON.parse(body);
  if (path === "/log") console.log(message.line);
  else if (path === "/result") settle({ result: message });
  else if (path === "/error") settle({ error: message.message });
});
const plan = {
  url: server.url,
  closedUrl: closed.url.replace(/^http/, "ws"),
  runs: quick ? 1 : 5,
  kinds: KINDS.map((k) => k.key),
  sizes: SIZES.map((size) => ({ size, count: countFor(size) })),
  sequential: quick ? 100 : 1000,
  indexeddb: { messages: quick ? 200 : 5000, sequential: quick ? 50 : 500 },
};
const profile = mkdtempSync(join(tmpdir(), "steadfast-bench-chromium-"));
const chromium = spawn(
  process.env.CHROMIUM ?? "/usr/bin/chromium",
  [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    `--user-data-dir=${profile}`,
    `${site.url}js-examples/e2e/bench-page/index.html?plan=${encodeURIComponent(JSON.stringify(plan))}`,
  ],
  { stdio: ["ignore", "ignore", "pipe"] },
);
let stderr = "";
chromium.stderr.on("data", (chunk) => (stderr = (stderr + chunk).slice(-4000)));
chromium.once("exit", (code) => settle({ error: `chromium exited (${code}) before the page reported:\n${stderr}` }));
const timer = setTimeout(() => settle({ error: `no result within ${TIMEOUT_MS / 60000} minutes` }), TIMEOUT_MS);
const { result, error } = await outcome;
clearTimeout(timer);
if (chromium.exitCode === null && chromium.signalCode === null) {
  const exited = new Promise((resolve) => chromium.once("exit", resolve));
  chromium.kill("SIGKILL");
  await exited;
}
await Promise.all([site.close(), server.stop()]);
// Chromium's helper processes may still be writing into the profile for a
// moment after the browser process is gone: retried, and a leftover temp
// dir is not the benchmark's failure.
try {
  rmSync(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
} catch (e) {
  console.error(`warning: could not remove ${profile}: ${e.message}`);
}
if (error) {
  console.error(`browser bench failed: ${error}`);
  process.exit(1);
}
writeFileSync(out, JSON.stringify({ ...result, kinds: KINDS }, null, 2) + "\n");
console.log(`wrote ${out}`);
process.exit(0);
