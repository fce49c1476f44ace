// The npm package against the reference server on loopback (Node.js).
import assert from "node:assert/strict";
import { randomBytes, createHash } from "node:crypto";
import { after, describe, test } from "node:test";
import { WebSocket as WsWebSocket, WebSocketServer } from "ws";
import { Steadfast, SteadfastError } from "steadfast";
import { TestServer, until, next, mapStore } from "./server.js";

const servers = [];
async function server(flags) {
  const s = new TestServer(0, flags);
  servers.push(s);
  await s.start();
  return s;
}
after(async () => {
  for (const s of servers) await s.stop();
});

/** Collect message data as it arrives. */
function collect(client) {
  const got = [];
  client.addEventListener("message", (e) => got.push(e.data));
  return got;
}

describe("steadfast in Node.js", () => {
  test("sends text, bytes and JSON; each send resolves on the server's ACK", async () => {
    const s = await server();
    const client = new Steadfast(s.url, { persist: "memory" });
    const got = collect(client);
    const acks = [];
    client.addEventListener("ack", (e) => acks.push(e.id));
    const results = await Promise.all([
      client.send("hello"),
      client.send(new Uint8Array([1, 2, 3])),
      client.send(new Uint16Array([0x0201]).buffer),
      client.send({ hello: "world", n: 1 }),
    ]);
    for (const result of results) assert.equal(result.acked, true);
    assert.deepEqual(results.map((r) => r.id), [1, 2, 3, 4]);
    assert.deepEqual(acks.sort(), [1, 2, 3, 4]);
    await until("4 echoes", () => got.length === 4);
    assert.equal(got[0], "hello");
    assert.deepEqual(got[1], new Uint8Array([1, 2, 3]));
    assert.deepEqual(got[2], new Uint8Array([1, 2]));
    assert.deepEqual(JSON.parse(got[3]), { hello: "world", n: 1 });
    assert.equal(client.state.state, "open");
    assert.equal(client.state.mode, "reliable");
    await client.close();
    assert.equal(client.state.state, "closed");
  });

  test("a server restart: reconnecting with a countdown, then every queued message once, in order", async () => {
    const s = await server();
    const client = new Steadfast(s.url, { persist: "memory", backoff: { initialMs: 100, maxMs: 500 } });
    const got = collect(client);
    await client.send("before");
    await until("the first echo", () => got.length === 1);
    const reconnecting = next(client, "state", (e) => e.state === "reconnecting");
    await s.stop();
    const state = await reconnecting;
    assert.equal(typeof state.nextRetryAt, "number");
    assert.ok(state.nextRetryAt >= Date.now() - 1000, "nextRetryAt is a wall-clock time");
    const resolved = [];
    const sends = [];
    for (let i = 0; i < 5; i++) {
      sends.push(client.send(`queued ${i}`).then((r) => resolved.push(r.id)));
    }
    await until("5 queued", () => client.stats().queued === 5);
    await s.start();
    await Promise.all(sends);
    assert.equal(resolved.length, 5);
    assert.equal(new Set(resolved).size, 5, "each promise resolved once");
    await until("5 echoes", () => got.length === 6);
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(got, ["before", "queued 0", "queued 1", "queued 2", "queued 3", "queued 4"]);
    await client.close();
  });

  test("offline from the start: 200 sends flushed in order once the server is up, every promise once", async () => {
    const s = new TestServer(0);
    servers.push(s);
    await s.start();
    const url = s.url;
    await s.stop();
    const client = new Steadfast(url, { persist: "memory", backoff: { initialMs: 50, maxMs: 200 } });
    const got = collect(client);
    let settled = 0;
    const sends = [];
    for (let i = 0; i < 200; i++) {
      sends.push(client.send(`m${i}`).finally(() => settled++));
    }
    await until("200 queued", () => client.stats()?.queued === 200);
    assert.equal(settled, 0, "nothing resolves before the server has it");
    await s.start();
    const results = await Promise.all(sends);
    assert.ok(results.every((r) => r.acked));
    await until("200 echoes", () => got.length === 200);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(settled, 200);
    assert.deepEqual(got, Array.from({ length: 200 }, (_, i) => `m${i}`));
    await client.close();
  });

  test("a ws server with default settings selects steadfast.v1 and echoes: auto mode goes plain, with a warning", async () => {
    // `ws` selects the first subprotocol offered unless told otherwise.
    const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
    await new Promise((resolve) => wss.once("listening", resolve));
    const received = [];
    wss.on("connection", (ws) => {
      ws.on("message", (data, binary) => {
        received.push(binary ? "binary" : String(data));
        ws.send(data, { binary });
      });
    });
    const client = new Steadfast(`ws://127.0.0.1:${wss.address().port}`, { persist: "memory" });
    const warnings = [];
    client.addEventListener("warning", (e) => warnings.push(e.code));
    const got = collect(client);
    const result = await client.send("hello");
    assert.equal(result.acked, false, "plain mode: handed to the socket");
    await until("the echo", () => got.length === 1);
    assert.deepEqual(got, ["hello"]);
    assert.deepEqual(warnings, ["ERR_NOT_STEADFAST"]);
    assert.equal(client.state.mode, "plain");
    // The server saw our HELLO (binary, echoed and dropped) and the text.
    assert.deepEqual(received, ["binary", "hello"]);
    await client.close();

    const strict = new Steadfast(`ws://127.0.0.1:${wss.address().port}`, { persist: "memory", reliable: "on" });
    const closed = next(strict, "state", (e) => e.state === "closed");
    const errors = [];
    strict.addEventListener("error", (e) => errors.push(e.code));
    await closed;
    assert.equal(strict.state.reason, "subprotocol-refused");
    assert.ok(errors.includes("ERR_SUBPROTOCOL_REFUSED"), String(errors));
    await new Promise((resolve) => wss.close(resolve));
  });

  test("a server that stops reading: past sendBuffer messages wait in the outbox, then all arrive in order", async () => {
    // A plain WebSocket server (no steadfast subprotocol) that pauses reading.
    const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
    await new Promise((resolve) => wss.once("listening", resolve));
    const COUNT = 640;
    const SIZE = 64 * 1024; // 40 MiB in all: more than loopback's socket buffers
    const got = [];
    let peer = null;
    wss.on("connection", (ws) => {
      peer = ws;
      ws.pause();
      ws.on("message", (data) => got.push(data));
    });
    const client = new Steadfast(`ws://127.0.0.1:${wss.address().port}`, {
      persist: "memory",
      reliable: "off",
      sendBuffer: 256 * 1024,
      queue: { maxMessages: COUNT, maxBytes: COUNT * SIZE },
    });
    await until("the plain connection", () => client.state.state === "open" && peer !== null);
    const sends = [];
    for (let i = 0; i < COUNT; i++) {
      const bytes = new Uint8Array(SIZE);
      new DataView(bytes.buffer).setUint32(0, i);
      sends.push(client.send(bytes));
    }
    // Let the client push what it can; then it must hold the rest.
    let last = -1;
    for (let i = 0; i < 50; i++) {
      await new Promise((r) => setTimeout(r, 100));
      const queued = client.stats().queued;
      if (queued === last) break;
      last = queued;
    }
    const held = client.stats().queued;
    assert.ok(held > 0, "every message went into the socket although the server read nothing");
    peer.resume();
    await until(`${COUNT} messages at the server`, () => got.length === COUNT, 60000);
    got.forEach((data, i) => {
      assert.equal(data.length, SIZE);
      assert.equal(data.readUInt32BE(0), i, `message ${i} out of order`);
    });
    const results = await Promise.all(sends);
    assert.equal(results.length, COUNT);
    await until("the outbox empties", () => client.stats().queued === 0);
    await client.close();
    await new Promise((resolve) => wss.close(resolve));
  });

  test("a 4 MiB message is chunked and arrives intact", async () => {
    const s = await server();
    const client = new Steadfast(s.url, { persist: "memory", chunkSize: 32 * 1024 });
    const got = collect(client);
    const big = new Uint8Array(randomBytes(4 * 1024 * 1024));
    const result = await client.send(big);
    assert.equal(result.acked, true);
    await until("the echo", () => got.length === 1, 60000);
    const digest = (bytes) => createHash("sha256").update(bytes).digest("hex");
    assert.equal(got[0].length, big.length);
    assert.equal(digest(got[0]), digest(big));
    assert.ok(client.stats().messagesOut >= 1);
    await client.close();
  });

  test("a reload: a new instance on the same store delivers what the old one queued, exactly once", async () => {
    const s = new TestServer(0);
    servers.push(s);
    await s.start();
    const url = s.url;
    await s.stop();
    const store = mapStore();
    const first = new Steadfast(url, { persist: store, backoff: { initialMs: 50, maxMs: 200 } });
    const queued = [];
    for (let i = 0; i < 10; i++) {
      first.send(`kept ${i}`, { onQueued: (id, durable) => queued.push([id, durable]) }).catch(() => {});
    }
    await until("10 queued", () => queued.length === 10);
    assert.ok(queued.every(([, durable]) => durable), "a durable store object makes durable receipts");
    assert.equal(store.size, 10);
    await first.close(); // the page goes away
    const second = new Steadfast(url, { persist: store, backoff: { initialMs: 50, maxMs: 200 } });
    const got = collect(second);
    // The page learns what came back, and each one's progress.
    const progress = [];
    let restored = null;
    second.addEventListener("restored", (e) => {
      assert.equal(progress.length, 0, "restored comes before any progress");
      restored = e.messages;
    });
    second.addEventListener("sent", (e) => progress.push(["sent", e.id]));
    second.addEventListener("ack", (e) => progress.push(["ack", e.id, e.acked, e.durable]));
    await second.ready;
    assert.equal(second.stats().queued, 10, "the outbox came back from the store");
    await until("the restored event", () => restored !== null);
    assert.deepEqual(
      restored.map((m) => m.data),
      Array.from({ length: 10 }, (_, i) => `kept ${i}`),
    );
    await s.start();
    await until("10 echoes", () => got.length === 10);
    await until("the outbox empties", () => second.stats().queued === 0);
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(got, Array.from({ length: 10 }, (_, i) => `kept ${i}`));
    assert.equal(store.size, 0, "acknowledged messages leave the store");
    for (const { id } of restored) {
      const sent = progress.findIndex(([kind, of]) => kind === "sent" && of === id);
      const acked = progress.findIndex(([kind, of]) => kind === "ack" && of === id);
      assert.ok(sent >= 0 && acked > sent, `message ${id}: sent, then acknowledged`);
      assert.deepEqual(progress[acked], ["ack", id, true, true]);
    }
    await second.close();
  });

  test("a message that outlives its TTL: send rejects with ERR_EXPIRED and a failed event names it", async () => {
    const s = new TestServer(0);
    servers.push(s);
    await s.start();
    const url = s.url;
    await s.stop();
    const client = new Steadfast(url, { persist: "memory", queue: { ttlMs: 200 }, backoff: { initialMs: 50, maxMs: 100 } });
    const failed = [];
    client.addEventListener("failed", (e) => failed.push([e.id, e.code, e.error instanceof SteadfastError]));
    let id = null;
    await assert.rejects(
      client.send("too late", { onQueued: (queuedId) => (id = queuedId) }),
      (error) => error instanceof SteadfastError && error.code === "ERR_EXPIRED",
    );
    await until("the failed event", () => failed.length === 1);
    assert.deepEqual(failed, [[id, "ERR_EXPIRED", true]]);
    await client.close();
  });

  test("an injected WebSocket constructor (the ws package) works", async () => {
    const s = await server();
    const client = new Steadfast(s.url, { persist: "memory", WebSocket: WsWebSocket });
    const got = collect(client);
    assert.equal((await client.send("via ws")).acked, true);
    await until("the echo", () => got.length === 1);
    assert.equal(got[0], "via ws");
    await client.close();
  });

  test("no WebSocket anywhere: a clear error, not a crash", async () => {
    const saved = Object.getOwnPropertyDescriptor(globalThis, "WebSocket");
    delete globalThis.WebSocket;
    try {
      assert.equal(typeof globalThis.WebSocket, "undefined");
      assert.throws(
        () => new Steadfast("ws://127.0.0.1:9"),
        (error) =>
          error instanceof SteadfastError &&
          error instanceof Error &&
          error.code === "ERR_NO_WEBSOCKET" &&
          /--experimental-websocket/.test(error.message),
      );
    } finally {
      if (saved) Object.defineProperty(globalThis, "WebSocket", saved);
    }
  });

  test("listeners may send, reconnect and read stats from inside a callback", async () => {
    const s = await server();
    const client = new Steadfast(s.url, { persist: "memory" });
    const got = [];
    let reconnected = false;
    client.addEventListener("message", (e) => {
      got.push(e.data);
      client.stats();
      if (e.data === "ping") {
        // Re-entrant: the engine is not borrowed while listeners run.
        client.send("pong").catch(() => {});
        client.reconnect();
        reconnected = true;
      }
    });
    client.addEventListener("state", () => client.stats());
    await client.send("ping");
    await until("the echo of the listener's send", () => got.includes("pong"));
    assert.ok(reconnected);
    await until("open again", () => client.state.state === "open");
    assert.deepEqual(got, ["ping", "pong"]);
    await client.close();
  });

  test("messages can be read with for await", async () => {
    const s = await server();
    const client = new Steadfast(s.url, { persist: "memory" });
    for (let i = 0; i < 3; i++) client.send(`it ${i}`);
    const seen = [];
    for await (const data of client) {
      seen.push(data);
      if (seen.length === 3) break;
    }
    assert.deepEqual(seen, ["it 0", "it 1", "it 2"]);
    await client.close();
  });

  test("bad input is a SteadfastError with a code, never a crash", async () => {
    const s = await server();
    assert.throws(() => new Steadfast(42), { code: "ERR_INVALID_URL" });
    const bad = new Steadfast(s.url, { backoff: { initialMs: -1 } });
    const error = next(bad, "error");
    await assert.rejects(bad.ready, { code: "ERR_INVALID_OPTION", message: /initialMs/ });
    assert.equal((await error).code, "ERR_INVALID_OPTION");
    await assert.rejects(bad.send("x"), { code: "ERR_INVALID_OPTION" });
    await assert.rejects(new Steadfast("http://x", { persist: "memory" }).ready, { code: "ERR_INVALID_URL" });
    await assert.rejects(new Steadfast(s.url, { persist: "disk" }).ready, { code: "ERR_INVALID_OPTION" });
    await assert.rejects(new Steadfast(s.url, { reliable: "maybe" }).ready, { code: "ERR_INVALID_OPTION" });
    await assert.rejects(new Steadfast(s.url, { persist: {} }).ready, { code: "ERR_STORE" });
    const client = new Steadfast(s.url, { persist: "memory" });
    await assert.rejects(client.send(undefined), { code: "ERR_INVALID_MESSAGE" });
    const circular = {};
    circular.self = circular;
    await assert.rejects(client.send(circular), { code: "ERR_INVALID_MESSAGE" });
    await assert.rejects(client.close(1001), { code: "ERR_INVALID_CLOSE_CODE" });
    await assert.rejects(client.close(1000, "x".repeat(124)), { code: "ERR_CLOSE_REASON_TOO_LONG" });
    const reject = new Steadfast(s.url, { persist: "memory", queue: { maxMessages: 1 }, overflow: "reject" });
    await reject.close();
    reject.send("one").catch(() => {});
    await assert.rejects(reject.send("two"), { code: "ERR_QUEUE_FULL" });
    assert.equal((await client.send("still fine")).acked, true);
    await client.close();
  });

  test("IndexedDB is missing in Node.js: the default store is memory, without a warning", async () => {
    const s = await server();
    const client = new Steadfast(s.url);
    let warned = false;
    client.addEventListener("warning", () => (warned = true));
    await client.ready;
    assert.equal(client.stats().durable, false);
    assert.equal((await client.send("x")).acked, true);
    assert.equal(warned, false);
    await client.close();
    const explicit = new Steadfast(s.url, { persist: "indexeddb" });
    const warning = await next(explicit, "warning");
    assert.equal(warning.code, "ERR_STORE");
    await explicit.close();
  });
});
