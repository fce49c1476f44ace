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

/** Open a steadfast client (`reliable`: "on" or "off") on `url`, outbox in memory; resolves once it is open. */
async function openSteadfast(url, reliable, options = {}) {
  const client = new Steadfast(url, { reliable, persist: "memory", ...options });
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
  return client;
}

/** The same through the npm package (`reliable`: "on" or "off"), outbox in memory; seconds until every echo is back. */
async function steadfast(url, reliable, size, count) {
  const client = await openSteadfast(url, reliable, {
    queue: { maxMessages: Math.max(count, 1000), maxBytes: Math.max(size * count, 64 << 20) },
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

const percentile = (sorted, p) => sorted[Math.floor((sorted.length - 1) * p)];

/**
 * One 64 B message at a time, `count` times: each sent once the previous
 * one came back. `kind` "raw" waits for the raw WebSocket's echo;
 * "reliable-ack" for `await send()` (the server's ACK); "reliable-echo" for
 * the echo. p50 and p99 in µs.
 */
async function sequential(url, kind, count) {
  const payload = new Uint8Array(64).fill(0x5a);
  const times = [];
  if (kind === "raw") {
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error(`raw: cannot connect to ${url}`));
    });
    let echoed = null;
    ws.onmessage = () => echoed?.();
    for (let i = 0; i < count; i++) {
      const start = performance.now();
      const back = new Promise((resolve) => (echoed = resolve));
      ws.send(payload);
      await back;
      times.push((performance.now() - start) * 1000);
    }
    ws.close();
  } else {
    const client = await openSteadfast(url, "on");
    let echoed = null;
    client.addEventListener("message", () => echoed?.());
    for (let i = 0; i < count; i++) {
      const start = performance.now();
      const back = new Promise((resolve) => (echoed = resolve));
      const receipt = await client.send(payload);
      if (!receipt.acked) throw new Error(`steadfast: send ${i} resolved without an ACK`);
      if (kind === "reliable-ack") times.push((performance.now() - start) * 1000);
      await back;
      if (kind === "reliable-echo") times.push((performance.now() - start) * 1000);
    }
    await client.close();
  }
  times.sort((a, b) => a - b);
  return { p50: percentile(times, 0.5), p99: percentile(times, 0.99) };
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
 * sequential, indexeddb: { messages, sequential } }`. Kinds are interleaved, their order
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
  const sequentialKinds = ["raw", "reliable-ack", "reliable-echo"];
  const sequentialRuns = Object.fromEntries(sequentialKinds.map((k) => [k, []]));
  for (let r = 0; r < plan.runs; r++) {
    for (let i = 0; i < sequentialKinds.length; i++) {
      const kind = sequentialKinds[(r + i) % sequentialKinds.length];
      sequentialRuns[kind].push(await sequential(plan.url, kind, plan.sequential));
    }
  }
  const oneAtATime = sequentialKinds.map((kind) => ({
    client: kind === "raw" ? "raw" : "reliable",
    awaits: kind === "reliable-ack" ? "ack" : "echo",
    messages: plan.sequential,
    p50_us: median(sequentialRuns[kind].map((r) => r.p50)),
    p99_us: median(sequentialRuns[kind].map((r) => r.p99)),
  }));
  await log(
    "one 64 B message at a time: " +
      oneAtATime.map((r) => `${r.client} (${r.awaits}) p50 ${r.p50_us.toFixed(0)} µs p99 ${r.p99_us.toFixed(0)} µs`).join(", "),
  );
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
  return { browser: navigator.userAgent, runs: plan.runs, throughput, sequential: oneAtATime, indexeddb: idb };
}

const fail = (error) => post("/error", { message: String(error?.stack ?? error?.message ?? error) });
addEventListener("error", (event) => fail(event.error ?? event.message));
addEventListener("unhandledrejection", (event) => fail(event.reason));
const plan = new URLSearchParams(location.search).get("plan");
if (plan) {
  run(JSON.parse(plan)).then((result) => post("/result", result), fail);
}
