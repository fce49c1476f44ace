// The browser side of `cargo xtask bench`: each case runs in this page and
// reports back to browser-bench.js, which drives Chromium through
// playwright-core. The npm package is imported as a browser would
// (pkg/src/browser.js, the wasm fetched beside its glue), from the same
// static server as this page.
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

window.bench = { raw, steadfast, indexeddb, userAgent: navigator.userAgent };
window.benchReady = true;
