// The reference server for the JS tests: started on loopback, restartable
// on the same port, stopped when the test process ends.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const binary =
  process.env.STEADFAST_SERVER ??
  fileURLToPath(new URL("../../target/debug/steadfast-server", import.meta.url));

export class TestServer {
  #child = null;
  constructor(port = 0, flags = []) {
    this.port = port;
    this.flags = flags;
  }

  /** Start (again, on the same port after the first start); resolves with the URL. */
  async start() {
    const child = spawn(binary, ["--listen", `127.0.0.1:${this.port}`, "--exit-on-stdin-eof", ...(this.flags.includes("--sessions") ? [] : ["--sessions", "memory"]), ...this.flags], {
      stdio: ["pipe", "pipe", "inherit"],
    });
    this.#child = child;
    const line = await new Promise((resolve, reject) => {
      const lines = createInterface({ input: child.stdout });
      lines.once("line", resolve);
      child.once("error", reject);
      child.once("exit", (code) => reject(new Error(`the server exited (${code}) before listening`)));
    });
    const url = line.match(/(wss?:\/\/\S+)/)?.[1];
    if (!url) throw new Error(`unexpected first line from the server: ${line}`);
    this.url = url;
    this.port = Number(new URL(url.replace(/^ws/, "http")).port);
    return url;
  }

  /** Stop it (SIGKILL: sessions are lost, like a crash). */
  async stop() {
    const child = this.#child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGKILL");
    await exited;
    this.#child = null;
  }
}

/** Resolve when `predicate()` holds, polling; reject after `ms`. */
export async function until(what, predicate, ms = 20000) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** The next `type` event from `target` that satisfies `filter`. */
export function next(target, type, filter = () => true, ms = 20000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      target.removeEventListener(type, listener);
      reject(new Error(`timed out waiting for a ${type} event`));
    }, ms);
    const listener = (event) => {
      if (!filter(event)) return;
      clearTimeout(timer);
      target.removeEventListener(type, listener);
      resolve(event);
    };
    target.addEventListener(type, listener);
  });
}

/** A store object over a Map: what a Node app would back with a file. */
export function mapStore() {
  const data = { session: null, messages: new Map() };
  return {
    durable: true,
    applies: 0,
    async load() {
      return { session: data.session, messages: [...data.messages.entries()] };
    },
    async apply(ops) {
      this.applies += 1;
      for (const op of ops) {
        if (op.op === "session") data.session = op.value.slice();
        else if (op.op === "put") data.messages.set(op.seq, op.value.slice());
        else if (op.op === "delete") data.messages.delete(op.seq);
        else if (op.op === "clear") data.messages.clear();
      }
    },
    get size() {
      return data.messages.size;
    },
  };
}
