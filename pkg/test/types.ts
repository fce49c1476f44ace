// Type-checked by `tsc -p test/tsconfig.json` (cargo xtask test): every
// public option and API, as a user would write them.
import {
  Steadfast,
  SteadfastError,
  type ConnectionState,
  type SendResult,
  type StoreObject,
  type SteadfastOptions,
  type Stats,
  version,
} from "steadfast";
import { useSteadfast as useReact, type UseSteadfast as ReactResult } from "steadfast/react";
import { useSteadfast as useVue } from "steadfast/vue";
import { WebSocket as WsWebSocket } from "ws";
import { ref } from "vue";

const store: StoreObject = {
  durable: true,
  async load() {
    return { session: null, messages: [[1, new Uint8Array([1])]] };
  },
  async apply(ops) {
    for (const op of ops) {
      if (op.op === "put") void op.seq.toFixed();
      if (op.op === "session") void op.value.byteLength;
    }
  },
};

const options: SteadfastOptions = {
  reliable: "auto",
  persist: store,
  name: "chat",
  protocols: ["chat.v2"],
  chunkSize: 32 * 1024,
  sendBuffer: 1 << 20,
  connectTimeoutMs: 10_000,
  backoff: { initialMs: 500, maxMs: 1_000, fastPhaseMs: 30_000, slowMaxMs: 30_000, fastRetryMs: 100, healthyAfterMs: 5_000 },
  queue: { maxMessages: 10_000, maxBytes: 64 << 20, ttlMs: 86_400_000, maxInFlightBytes: 1 << 20 },
  overflow: "dropOldest",
  limits: {
    maxMessageSize: 16 << 20,
    reorderWindow: 256,
    maxBufferedBytes: 32 << 20,
    maxPartialMessages: 4,
    maxPartialAgeMs: 60_000,
    gapTimeoutMs: 5_000,
    handshakeTimeoutMs: 10_000,
  },
  ack: { delayMs: 20, every: 32, everyBytes: 65_536 },
  heartbeat: { intervalMs: 15_000, idleMs: 15_000, probeTimeoutMs: 10_000 },
  seed: 7,
  WebSocket: WsWebSocket,
  auth: async () => "token",
  authQuery: "token",
};
const other: SteadfastOptions = { reliable: false, persist: "indexeddb", heartbeat: false, authProtocol: "bearer." };

async function main(): Promise<void> {
  const ws = new Steadfast("ws://127.0.0.1:9000", options);
  const ws2 = await Steadfast.connect(new URL("ws://127.0.0.1:9000"), other);
  await ws.ready;
  ws.addEventListener("message", (e) => {
    const data: string | Uint8Array = e.data;
    const parsed = e.json<{ hello: string }>();
    void data, parsed.hello;
  });
  ws.addEventListener("state", (e) => {
    const state: ConnectionState = e.detail;
    if (state.state === "reconnecting") {
      const at: number = state.nextRetryAt;
      void at;
    }
    void e.attempt, e.nextRetryAt;
  });
  ws.addEventListener("error", (e) => {
    const error: SteadfastError = e.error;
    void error.code;
  });
  ws.addEventListener("ack", (e) => void e.id);
  ws.addEventListener("sent", (e) => void (e.id + 1));
  ws.addEventListener("failed", (e) => void [e.id, e.code, e.error.message]);
  ws.addEventListener("restored", (e) => {
    for (const m of e.messages) void [m.id, typeof m.data === "string" ? m.data : m.data.byteLength];
  });
  ws.addEventListener("resync", () => {});
  const result: SendResult = await ws.send({ hello: "world" }, { onQueued: (id, durable) => void [id, durable] });
  await ws.send("text");
  await ws.send(new Uint8Array(4));
  await ws.send(new ArrayBuffer(4));
  void result.acked;
  const stats: Stats | null = ws.stats();
  void stats?.queued;
  for await (const message of ws) {
    void message;
    break;
  }
  ws.hint("online");
  ws.reconnect();
  await ws.close(4000, "bye");
  await ws2.close();
  try {
    await ws.send(undefined);
  } catch (error) {
    if (error instanceof SteadfastError) void error.code;
  }
  void (await version());
}

function reactComponent(): ReactResult {
  const chat = useReact("ws://127.0.0.1:9000", { keep: 50, persist: "memory" });
  void chat.send("x").then((r) => r.id);
  void chat.state.state, chat.queued, chat.messages, chat.lastMessage, chat.error;
  for (const m of chat.outgoing) {
    const status: "queued" | "sent" | "acked" | "failed" = m.status;
    void m.id, m.data, m.restored, m.error?.code, status;
  }
  return chat;
}

function vueSetup(): void {
  const url = ref<string | null>("ws://127.0.0.1:9000");
  const chat = useVue(url, { keep: 10 });
  void chat.state.value.state, chat.queued.value, chat.messages.value, chat.client.value;
  void chat.outgoing.value.map((m) => m.status);
  void chat.send({ a: 1 });
}

void main, reactComponent, vueSetup;
