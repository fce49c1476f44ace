// steadfast/vue in Node: the composable in an effect scope.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { effectScope, nextTick, ref, watch } from "vue";
import { useSteadfast } from "steadfast/vue";
import { TestServer, mapStore, until } from "./server.js";

const server = new TestServer(0);
after(() => server.stop());

test("useSteadfast (vue): state, queued count, messages; closed when the scope ends; a new url, a new client", async () => {
  await server.start();
  const url = ref(server.url);
  const scope = effectScope();
  const chat = scope.run(() => useSteadfast(url, { persist: "memory", keep: 2 }));
  await until("open", () => chat.state.value.state === "open");
  const results = await Promise.all([chat.send("a"), chat.send("b"), chat.send("c")]);
  assert.ok(results.every((r) => r.acked));
  await until("3 messages", () => chat.lastMessage.value === "c");
  assert.deepEqual(chat.messages.value, ["b", "c"], "keeps the last 2");
  await until("queued back to 0", () => chat.queued.value === 0);
  await until("the last two acknowledged", () => chat.outgoing.value.filter((m) => m.status === "acked").length === 2);
  assert.deepEqual(
    chat.outgoing.value.map(({ data, status, restored }) => [data, status, restored]),
    [
      ["b", "acked", false],
      ["c", "acked", false],
    ],
    "the last 2 sent, each acknowledged",
  );
  assert.deepEqual(
    chat.outgoing.value.map((m) => m.id),
    results.slice(1).map((r) => r.id),
  );
  const first = chat.client.value;
  url.value = server.url + "/other";
  await nextTick();
  assert.notEqual(chat.client.value, first, "a new url makes a new client");
  await until("the old client closed", () => first.state.state === "closed");
  const second = chat.client.value;
  scope.stop();
  await until("closed with the scope", () => second.state.state === "closed");
  assert.equal(chat.client.value, null);
});

test("useSteadfast (vue): outgoing shows queued messages, restored after a reload, sent then acknowledged", async () => {
  const down = new TestServer(0);
  await down.start();
  const url = down.url;
  await down.stop();
  const store = mapStore();
  const options = { persist: store, backoff: { initialMs: 50, maxMs: 200 } };
  const page = effectScope();
  const before = page.run(() => useSteadfast(url, options));
  for (const text of ["x", "y"]) before.send(text).catch(() => {});
  await until("both queued", () => before.outgoing.value.length === 2);
  assert.deepEqual(
    before.outgoing.value.map(({ data, status }) => [data, status]),
    [
      ["x", "queued"],
      ["y", "queued"],
    ],
  );
  assert.equal(before.queued.value, 2);
  page.stop(); // the reload
  await until("the old client closed", () => before.client.value === null);

  const reloaded = effectScope();
  const after = reloaded.run(() => useSteadfast(url, options));
  await until("restored", () => after.outgoing.value.length === 2);
  assert.deepEqual(
    after.outgoing.value.map(({ data, status, restored }) => [data, status, restored]),
    [
      ["x", "queued", true],
      ["y", "queued", true],
    ],
  );
  const statuses = [];
  const stopWatching = watch(after.outgoing, (list) => statuses.push(list.map((m) => m.status).join(",")));
  const server = new TestServer(down.port);
  await server.start();
  try {
    await until("both acknowledged", () => after.outgoing.value.every((m) => m.status === "acked"));
    await until("both echoed", () => after.messages.value.length === 2);
    assert.deepEqual(after.messages.value, ["x", "y"], "delivered once each, in order");
    assert.ok(
      statuses.some((s) => s.includes("sent")),
      `went through "sent" on the way: ${statuses.join(" | ")}`,
    );
    assert.equal(after.queued.value, 0);
  } finally {
    stopWatching();
    reloaded.stop();
    await server.stop();
  }
});
