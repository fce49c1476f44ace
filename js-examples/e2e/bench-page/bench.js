// The browser side of `cargo xtask bench`. browser-bench.js starts
// Chromium on this page with a plan (`?plan=` JSON); the page runs every
// case and POSTs what it measured to the server that served it: /log for
// progress lines, /result at the end, /error if anything failed. No
// DevTools client is attached (it would report every WebSocket frame).
// The npm package is imported as a browser would (pkg/src/browser.js, the
// wasm fetched beside its glue), from the same server as this page.
import { Steadfast } from "/pkg/src/browser.js";

/** `count` binary messages of `size` bytes, all sent at once, through a raw WebSocket; seconds until every echo is back. */
async function raw(url, size, count) {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error(`raw: cannot connect to ${url}`));
  });
  const payload = new Uint8Array(size).fill(0x5a);
  let received = 0;
  let bytes = 0;
  const done = new Promise((resolve, reject) => {
    ws.onmessage = (event) => {
      bytes += event.data.byteLength;
      if (++received === count) resolve();
    };
    ws.onclose = (event) => reject(new Error(`raw: closed ${event.code} after ${received} echoes`));
  });
  const start = performance.now();
  for (let i = 0; i < count; i++) ws.send(payload);
  await done;
  const seconds = (performance.now() - start) / 1000;
  ws.onclose = null;
  ws.close();
  if (bytes !== size * count) throw new Error(`raw: ${bytes} bytes echoed, ${size * count} sent`);
  return seconds;
}

/** The same through the npm package (`reliable`: "on" or "off"), outbox in memory; seconds until every echo is back. */
async function steadfast(url, reliable, size, count) {
  const client = new Steadfast(url, {
    reliable,
    persist: "memory",
    queue: { maxMessages: Math.max(count, 1000), maxBytes: Math.max(size * count, 64 << 20) },
  });
  await client.ready;
  await new Promise((resolve, reject) => {
    const check = () => {
      const state = client.state.state;
      if (state === "open") resolve();
      else if (state === "closed") reject(new Error(`steadfast: closed while connecting to ${url}`));
    };
    client.addEventListener("state", check);
    check();
  });
  const payload = new Uint8Array(size).fill(0x5a);
  let received = 0;
  let bytes = 0;
  let failure = null;
  const done = new Promise((resolve, reject) => {
    client.addEventListener("message", (event) => {
      bytes += event.data.byteLength;
      if (++received === count) resolve();
    });
    failure = reject;
  });
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    client.send(payload).catch((error) => failure(new Error(`steadfast: send failed: ${error.code} ${error.message}`)));
  }
  await done;
  const seconds = (performance.now() - start) / 1000;
  await client.close();
  if (bytes !== size * count) throw new Error(`steadfast: ${bytes} bytes echoed, ${size * count} sent`);
  return seconds;
}

/**
 * IndexedDB enqueue: `count` 64 B messages queued while nothing listens
 * (`url` is a closed port), each counted once its `onQueued` says it is
 * committed and durable. Concurrent (all sends at once: the store commits
 * them in batches) and sequential (each waits for the one before); µs per
 * message for each.
 */
async function indexeddb(url, count, sequentialCount) {
  const payload = new Uint8Array(64).fill(0x42);
  const run = async (name, n, sequential) => {
    const client = new Steadfast(url, {
      persist: "indexeddb",
      name,
      queue: { maxMessages: n * 2 },
      backoff: { initialMs: 60000, maxMs: 60000, slowMaxMs: 60000 },
    });
    await client.ready;
    const start = performance.now();
    const queued = (id, durable) => {
      if (!durable) throw new Error("indexeddb: a message was queued but not durable");
    };
    if (sequential) {
      for (let i = 0; i < n; i++) {
        await new Promise((resolve, reject) => {
          client.send(payload, { onQueued: (id, durable) => (queued(id, durable), resolve()) }).catch(reject);
        });
      }
    } else {
      await Promise.all(
        Array.from(
          { length: n },
          () =>
            new Promise((resolve, reject) => {
              client.send(payload, { onQueued: (id, durable) => (queued(id, durable), resolve()) }).catch(reject);
            }),
        ),
      );
    }
    const us = ((performance.now() - start) * 1000) / n;
    const stats = client.stats();
    if (stats.queued !== n) throw new Error(`indexeddb: ${stats.queued} of ${n} queued`);
    await client.close();
    await new Promise((resolve) => {
      const request = indexedDB.deleteDatabase(name);
      request.onsuccess = request.onerror = request.onblocked = resolve;
    });
    return us;
  };
  const tag = Math.random().toString(36).slice(2);
  return {
    concurrentUs: await run(`bench-concurrent-${tag}`, count, false),
    sequentialUs: await run(`bench-sequential-${tag}`, sequentialCount, true),
  };
}

const post = (path, body) => fetch(path, { method: "POST", body: JSON.stringify(body) });
const log = (line) => post("/log", { line });
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

/**
 * Run `plan`: `{ url, closedUrl, runs, kinds: [key], sizes: [{ size, count }],
 * indexeddb: { messages, sequential } }`. Kinds are interleaved, their order
 * rotating run by run.
 */
async function run(plan) {
  const throughput = [];
  for (const { size, count } of plan.sizes) {
    const seconds = Object.fromEntries(plan.kinds.map((k) => [k, []]));
    for (let r = 0; r < plan.runs; r++) {
      for (let i = 0; i < plan.kinds.length; i++) {
        const kind = plan.kinds[(r + i) % plan.kinds.length];
        const s =
          kind === "raw"
            ? await raw(plan.url, size, count)
            : await steadfast(plan.url, kind === "reliable" ? "on" : "off", size, count);
        seconds[kind].push(s);
      }
    }
    const row = { size, messages: count, runs: plan.runs };
    for (const kind of plan.kinds) {
      const perS = seconds[kind].map((s) => count / s);
      const m = median(perS);
      row[kind] = { messages_per_s: m, mb_per_s: (m * size) / 1e6, runs_per_s: perS };
    }
    throughput.push(row);
    await log(
      `${String(size).padStart(8)} B × ${count}: ` +
        plan.kinds.map((k) => `${k} ${Math.round(row[k].messages_per_s)}/s`).join(", ") +
        (row.raw && row.reliable ? `; reliable/raw ${(row.reliable.messages_per_s / row.raw.messages_per_s).toFixed(2)}` : ""),
    );
  }
  const idbRuns = [];
  for (let r = 0; r < plan.runs; r++) {
    idbRuns.push(await indexeddb(plan.closedUrl, plan.indexeddb.messages, plan.indexeddb.sequential));
  }
  const idb = {
    messages: plan.indexeddb.messages,
    sequential_messages: plan.indexeddb.sequential,
    concurrent_us_per_message: median(idbRuns.map((r) => r.concurrentUs)),
    sequential_us_per_message: median(idbRuns.map((r) => r.sequentialUs)),
  };
  await log(
    `IndexedDB enqueue: ${idb.concurrent_us_per_message.toFixed(1)} µs/message all at once, ` +
      `${idb.sequential_us_per_message.toFixed(0)} µs awaiting each`,
  );
  return { browser: navigator.userAgent, runs: plan.runs, throughput, indexeddb: idb };
}

const fail = (error) => post("/error", { message: String(error?.stack ?? error?.message ?? error) });
addEventListener("error", (event) => fail(event.error ?? event.message));
addEventListener("unhandledrejection", (event) => fail(event.reason));
const plan = new URLSearchParams(location.search).get("plan");
if (plan) {
  run(JSON.parse(plan)).then((result) => post("/result", result), fail);
}
