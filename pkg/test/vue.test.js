// steadfast/vue in Node: the composable in an effect scope.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { effectScope, nextTick, ref } from "vue";
import { useSteadfast } from "steadfast/vue";
import { TestServer, until } from "./server.js";

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
