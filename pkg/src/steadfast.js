// The Steadfast class: an EventTarget over the wasm client (../wasm).
// Everything that decides runs in Rust; this file turns values into
// events, promises and errors. Entry points: browser.js and node.js.

import * as wasm from "../wasm/steadfast.js";

let loader = null;
let loaded = null;

/** @internal Set by the entry point: how to instantiate the wasm. */
export function _setLoader(load) {
  loader = load;
}

function ready() {
  loaded ??= Promise.resolve().then(() => loader());
  return loaded;
}

const decoder = new TextDecoder();

/** Every error steadfast reports: an `Error` with a stable `code`. */
export class SteadfastError extends Error {
  constructor(code, message, options) {
    super(message, options);
    this.name = "SteadfastError";
    this.code = code;
  }
}

function toError(error) {
  if (error instanceof SteadfastError) return error;
  if (error && typeof error.code === "string") {
    return new SteadfastError(error.code, error.message);
  }
  return new SteadfastError("ERR_INTERNAL", String(error?.message ?? error), { cause: error });
}

/** A message from the server. `data` is a string or a Uint8Array. */
export class SteadfastMessageEvent extends Event {
  constructor(data) {
    super("message");
    this.data = data;
  }
  /** The payload parsed as JSON (text, or UTF-8 bytes). */
  json() {
    return JSON.parse(typeof this.data === "string" ? this.data : decoder.decode(this.data));
  }
}

/** The connection state changed; the fields of `detail` are also on the event. */
export class SteadfastStateEvent extends Event {
  constructor(detail) {
    super("state");
    this.detail = detail;
    Object.assign(this, detail);
  }
}

/** A sent message was acknowledged (or, in plain mode, handed to the socket). */
export class SteadfastAckEvent extends Event {
  constructor(result) {
    super("ack");
    this.id = result.id;
    this.acked = result.acked;
    this.durable = result.durable;
  }
}

/** A message went on the wire and awaits its ACK (reliable mode; again after a reconnect). */
export class SteadfastSentEvent extends Event {
  constructor(id) {
    super("sent");
    this.id = id;
  }
}

/** A message will never be acknowledged (expired, dropped, refused); `send` rejects with the same error. */
export class SteadfastFailedEvent extends Event {
  constructor(id, error) {
    super("failed");
    this.id = id;
    this.error = error;
    this.code = error.code;
  }
}

/** The client started with messages from its store (a page reload or restart before their ACK). */
export class SteadfastRestoredEvent extends Event {
  constructor(messages) {
    super("restored");
    this.messages = messages;
  }
}

/** Something went wrong and was handled (`error`), or a degraded set-up (`warning`). */
export class SteadfastErrorEvent extends Event {
  constructor(type, error) {
    super(type);
    this.error = error;
    this.code = error.code;
    this.message = error.message;
  }
}

function payloadOf(data) {
  if (typeof data === "string" || data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (typeof Blob !== "undefined" && data instanceof Blob) {
    throw new SteadfastError("ERR_INVALID_MESSAGE", "send a Blob as `new Uint8Array(await blob.arrayBuffer())`");
  }
  let text;
  try {
    text = JSON.stringify(data);
  } catch (error) {
    throw new SteadfastError("ERR_INVALID_MESSAGE", "the message is not JSON-serialisable: " + error.message, { cause: error });
  }
  if (text === undefined) {
    throw new SteadfastError("ERR_INVALID_MESSAGE", "the message is not JSON-serialisable (" + typeof data + ")");
  }
  return text;
}

/**
 * A WebSocket client that never loses, duplicates or reorders a message.
 * See index.d.ts for the options and events.
 */
export class Steadfast extends EventTarget {
  #core = null;
  #started;
  #state = { state: "connecting", attempt: 0 };
  #stopped = false;
  /** Sends queued at once, by id: their promises settle with `settled`. */
  #waiting = new Map();

  constructor(url, options = {}) {
    super();
    if (typeof url !== "string" && !(url instanceof URL)) {
      throw new SteadfastError("ERR_INVALID_URL", "the URL must be a string or a URL");
    }
    if (options === null || typeof options !== "object") {
      throw new SteadfastError("ERR_INVALID_OPTION", "options must be an object");
    }
    if (options.WebSocket === undefined && typeof globalThis.WebSocket !== "function") {
      throw new SteadfastError(
        "ERR_NO_WEBSOCKET",
        "no WebSocket implementation: this JavaScript runtime has no global `WebSocket` " +
          "(Node.js before 22 needs --experimental-websocket); pass one as the `WebSocket` " +
          "option, e.g. `import { WebSocket } from \"ws\"`",
      );
    }
    this.url = String(url);
    this.#started = ready()
      .then(() => wasm.open(this.url, options, (kind, value) => this.#event(kind, value)))
      .then(
        (core) => {
          this.#core = core;
          if (this.#stopped) core.close(1000, "").catch(() => {});
          return core;
        },
        (error) => {
          const failed = toError(error);
          this.#state = { state: "closed", reason: "failed" };
          this.dispatchEvent(new SteadfastErrorEvent("error", failed));
          this.dispatchEvent(new SteadfastStateEvent(this.#state));
          throw failed;
        },
      );
    // Reported through `error`; `ready` and `send` reject with it too.
    this.#started.catch(() => {});
  }

  /** Start a client and wait until it runs (rejects on bad options). */
  static async connect(url, options) {
    const client = new Steadfast(url, options);
    await client.ready;
    return client;
  }

  /** Resolves once the client runs (its store loaded); rejects on bad options. */
  get ready() {
    return this.#started.then(() => undefined);
  }

  /** The current state: `{ state, attempt, mode, nextRetryAt, retryInMs, reason, code }`. */
  get state() {
    return this.#state;
  }

  /** Counters: queued, queuedBytes, durable, resends, duplicates, ... (null before start). */
  stats() {
    return this.#core ? this.#core.stats() : null;
  }

  /**
   * Queue a message; resolves on the server's ACK with `{ id, acked, durable }`.
   * Strings go as text, bytes as binary, anything else as JSON text.
   */
  send(data, options = {}) {
    try {
      const payload = payloadOf(data);
      const core = this.#core;
      if (core) return this.#send(core, payload, options.onQueued);
      return this.#started.then((started) => this.#send(started, payload, options.onQueued));
    } catch (error) {
      return Promise.reject(toError(error));
    }
  }

  /**
   * Queued at once, the core returns the id and the outcome comes as the
   * `settled` event (which cannot come before this returns); otherwise it
   * returns a promise of the outcome.
   */
  #send(core, payload, onQueued) {
    let queued;
    try {
      queued = core.send(payload, onQueued);
    } catch (error) {
      return Promise.reject(toError(error));
    }
    if (typeof queued === "number") {
      return new Promise((resolve, reject) => this.#waiting.set(queued, { resolve, reject }));
    }
    return queued.catch((error) => {
      throw toError(error);
    });
  }

  /** Close (1000 or 3000-4999) and stop reconnecting; queued messages stay queued. */
  async close(code = 1000, reason = "") {
    this.#stopped = true;
    const core = await this.#started.catch(() => null);
    if (!core) return;
    try {
      await core.close(code, reason);
    } catch (error) {
      throw toError(error);
    }
  }

  /** Connect again now, from any state (also after close()). */
  reconnect() {
    this.#stopped = false;
    this.#started.then((core) => core.reconnect(), () => {});
  }

  /** Tell the client about its environment: "online", "offline", "visible", "hidden", "pageshow". */
  hint(hint) {
    this.#started.then((core) => core.hint(hint), () => {});
  }

  /** Iterate over received messages (data), until close(). */
  [Symbol.asyncIterator]() {
    const queue = [];
    let wake = null;
    let done = false;
    const onMessage = (event) => {
      queue.push(event.data);
      wake?.();
    };
    const onState = (event) => {
      if (event.state === "closed") {
        done = true;
        wake?.();
      }
    };
    const stop = () => {
      done = true;
      this.removeEventListener("message", onMessage);
      this.removeEventListener("state", onState);
    };
    this.addEventListener("message", onMessage);
    this.addEventListener("state", onState);
    return {
      next: async () => {
        while (queue.length === 0 && !done) {
          await new Promise((resolve) => (wake = resolve));
          wake = null;
        }
        if (queue.length > 0) return { value: queue.shift(), done: false };
        stop();
        return { value: undefined, done: true };
      },
      return: async () => {
        stop();
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }

  #event(kind, value) {
    switch (kind) {
      case "message":
        this.dispatchEvent(new SteadfastMessageEvent(value));
        break;
      case "state":
        this.#state = value;
        this.dispatchEvent(new SteadfastStateEvent(value));
        break;
      case "error": {
        // Degraded, not failed: a warning. ERR_STORE: the store is
        // unavailable or failed; the client goes on in memory.
        // ERR_NOT_STEADFAST: the server selected steadfast.v1 but does not
        // speak it; with reliable "auto" the client goes on in plain mode.
        const error = toError(value);
        const degraded = error.code === "ERR_STORE" || error.code === "ERR_NOT_STEADFAST";
        this.dispatchEvent(new SteadfastErrorEvent(degraded ? "warning" : "error", error));
        break;
      }
      case "resync":
        this.dispatchEvent(new Event("resync"));
        break;
      case "restored":
        this.dispatchEvent(new SteadfastRestoredEvent(value));
        break;
      case "sent":
        this.dispatchEvent(new SteadfastSentEvent(value));
        break;
      case "settled": {
        const waiting = this.#waiting.get(value.id);
        if (waiting) this.#waiting.delete(value.id);
        if (value.error) {
          const error = toError(value.error);
          waiting?.reject(error);
          this.dispatchEvent(new SteadfastFailedEvent(value.id, error));
        } else {
          waiting?.resolve(value);
          this.dispatchEvent(new SteadfastAckEvent(value));
        }
        break;
      }
      case "skipped": {
        const event = new Event("skipped");
        event.count = value;
        this.dispatchEvent(event);
        break;
      }
    }
  }
}

/**
 * @internal For the React and Vue bindings: listen to what a UI shows —
 * `state`, each `message`, `error`/`warning`, the queue length on every
 * change, and `outgoing`: the last `keep` messages sent through the
 * returned `send` or restored from the store, each `{ id, data, status:
 * "queued" | "sent" | "acked" | "failed", restored, error }`. Returns
 * `{ send, stop }`.
 */
export function _subscribe(client, { onState, onMessage, onError, onQueued, onOutgoing }, keep = 100) {
  const refresh = () => onQueued(client.stats()?.queued ?? 0);
  let outgoing = [];
  // Progress for ids whose `onQueued` has not run yet (it may come later).
  const early = new Map();
  const add = (entries) => {
    for (const entry of entries) {
      Object.assign(entry, early.get(entry.id));
      early.delete(entry.id);
    }
    outgoing = outgoing.concat(entries);
    if (outgoing.length > keep) outgoing = outgoing.slice(outgoing.length - keep);
    onOutgoing(outgoing);
  };
  const update = (id, change) => {
    const index = outgoing.findLastIndex((entry) => entry.id === id);
    if (index < 0) {
      early.set(id, { ...early.get(id), ...change });
      // Ids sent around `send` (client.send directly) are never claimed.
      if (early.size > 4096) early.delete(early.keys().next().value);
      return;
    }
    outgoing = outgoing.slice();
    outgoing[index] = { ...outgoing[index], ...change };
    onOutgoing(outgoing);
  };
  const listeners = [
    ["state", (event) => (onState(event.detail), refresh())],
    ["message", (event) => onMessage(event.data)],
    ["restored", (event) => (add(event.messages.map(({ id, data }) => ({ id, data, status: "queued", restored: true }))), refresh())],
    ["sent", (event) => update(event.id, { status: "sent" })],
    ["ack", (event) => (update(event.id, { status: event.acked ? "acked" : "sent" }), refresh())],
    ["failed", (event) => (update(event.id, { status: "failed", error: event.error }), refresh())],
    ["error", (event) => onError(event.error)],
    ["warning", (event) => onError(event.error)],
  ];
  for (const [type, listener] of listeners) client.addEventListener(type, listener);
  client.ready.then(refresh, () => {});
  const send = (data, options = {}) =>
    client.send(data, {
      ...options,
      onQueued: (id, durable) => {
        add([{ id, data, status: "queued", restored: false }]);
        refresh();
        options.onQueued?.(id, durable);
      },
    });
  const stop = () => {
    for (const [type, listener] of listeners) client.removeEventListener(type, listener);
  };
  return { send, stop };
}

/** The version of the wasm module. */
export async function version() {
  await ready();
  return wasm.version();
}
