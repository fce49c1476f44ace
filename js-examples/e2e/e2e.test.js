// The React and Vue examples, built (`vite build`), in headless Chromium
// (Debian's /usr/bin/chromium driven by playwright-core: no browser
// download) against `steadfast serve` on loopback, which this harness
// starts, kills and restarts. Each scenario saves a screenshot.
//
// Needs: both apps built into ../react/dist and ../vue/dist, and the
// reference server built (target/debug/steadfast-server, or the
// STEADFAST_SERVER variable). `cargo xtask test` does all of it.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { TestServer } from "../../pkg/test/server.js";
import { serveStatic } from "./static.js";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SHOTS =
  process.env.STEADFAST_SCREENSHOTS ?? fileURLToPath(new URL("../../target/e2e-screenshots/", import.meta.url));
mkdirSync(SHOTS, { recursive: true });

let browser;
before(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-quic",
      "--no-first-run",
    ],
  });
});
after(async () => {
  await browser?.close();
});

/** Poll `predicate` (sync or async) until it returns a truthy value; that value. */
async function until(what, predicate, ms = 30000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await predicate();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A counter from the server's /metrics. */
async function metric(server, name) {
  const text = await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`steadfast_${name} `));
  assert.ok(line, `the server reports ${name}`);
  return Number(line.split(" ")[1]);
}

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

/** What the page shows, read from the DOM. */
const ui = {
  state: (page) =>
    page.$eval("[data-testid=state]", (el) => ({
      name: el.dataset.state,
      retryMs: el.dataset.retryMs === "" ? null : Number(el.dataset.retryMs),
      text: el.textContent,
    })),
  queued: async (page) => Number(await page.textContent("[data-testid=queued]")),
  outgoing: (page) =>
    page.$$eval("[data-testid=outgoing] > li", (items) =>
      items.map((li) => ({
        id: Number(li.dataset.id),
        status: li.dataset.status,
        restored: li.querySelector(".restored") !== null,
        text: li.querySelector(".payload").textContent,
        sha256: li.querySelector(".payload").dataset.sha256 ?? null,
      })),
    ),
  received: (page) =>
    page.$$eval("[data-testid=received] > li .payload", (items) =>
      items.map((el) => ({
        text: el.textContent,
        size: el.dataset.size ? Number(el.dataset.size) : null,
        sha256: el.dataset.sha256 ?? null,
      })),
    ),
  log: (page) =>
    page.$$eval("[data-testid=log] > li", (items) =>
      items.map((li) => ({ state: li.dataset.state, reason: li.dataset.reason })),
    ),
};

async function send(page, text) {
  await page.fill("[data-testid=text]", text);
  await page.click("[data-testid=send]");
}

async function open(page, app, server) {
  const url = `${app.url}?server=${encodeURIComponent(server.url + "/")}`;
  await page.goto(url);
  await until("connected", async () => (await ui.state(page)).name === "open");
}

/** How often each of `texts` appears among the received messages. */
async function receivedCounts(page, texts) {
  const received = (await ui.received(page)).map((r) => r.text);
  return texts.map((t) => received.filter((r) => r === t).length);
}

for (const name of ["react", "vue"]) {
  describe(`${name} example`, () => {
    const app = { url: null, close: null };
    let context;
    let page;
    let server;

    before(async () => {
      const dist = fileURLToPath(new URL(`../${name}/dist/`, import.meta.url));
      const site = await serveStatic(dist);
      app.url = site.url;
      app.close = site.close;
    });
    after(async () => {
      await app.close?.();
    });

    // Each scenario: a fresh browser context (its own IndexedDB) and server.
    const scenario = (title, shot, body, flags = []) =>
      test(title, async () => {
        server = new TestServer(0, flags);
        await server.start();
        context = await browser.newContext({ viewport: { width: 1000, height: 760 } });
        page = await context.newPage();
        const errors = [];
        page.on("pageerror", (error) => errors.push(error.message));
        try {
          await body();
          await page.screenshot({ path: `${SHOTS}/${name}-${shot}.png`, fullPage: true });
          assert.deepEqual(errors, [], "no uncaught errors in the page");
        } catch (error) {
          await page.screenshot({ path: `${SHOTS}/${name}-${shot}-FAILED.png`, fullPage: true }).catch(() => {});
          throw error;
        } finally {
          await context.close();
          await server.stop();
        }
      });

    // The server waits 1.5 s before acknowledging (not at the end of the
    // read burst, --ack-delay-only): long enough to see "sent".
    scenario("1. send and receive; each message queued, sent, then acknowledged", "1-send-receive", async () => {
      await open(page, app, server);
      await send(page, "hello from " + name);
      await send(page, "second");
      await until("both on the wire, awaiting the ACK", async () => {
        const out = await ui.outgoing(page);
        return out.length === 2 && out.every((m) => m.status === "sent");
      });
      await until("both echoed before the ACK", async () => (await ui.received(page)).length === 2);
      await page.screenshot({ path: `${SHOTS}/${name}-1-send-receive-sent.png`, fullPage: true });
      await until("both acknowledged", async () => {
        const out = await ui.outgoing(page);
        return out.length === 2 && out.every((m) => m.status === "acked");
      });
      const out = await ui.outgoing(page);
      assert.deepEqual(
        out.map((m) => m.text),
        ["hello from " + name, "second"],
      );
      await until("both echoed", async () => (await ui.received(page)).length === 2);
      assert.deepEqual(
        (await ui.received(page)).map((r) => r.text),
        ["hello from " + name, "second"],
      );
      assert.equal(await ui.queued(page), 0);
      assert.equal(await metric(server, "messages_in"), 2, "the server got each once");
    }, ["--ack-delay", "1500ms", "--ack-delay-only"]);

    scenario("2. server down: reconnecting with a countdown; 5 sends delivered once after the restart", "2-restart", async () => {
      await open(page, app, server);
      await send(page, "before");
      await until("the first echo", async () => (await ui.received(page)).length === 1);
      // Acknowledged before the kill: the server keeps sessions in memory, so
      // a message still in flight at a kill -9 is sent again to the new
      // process, which cannot know it had it (a resync).
      await until("the first acknowledged", async () => (await ui.outgoing(page))[0]?.status === "acked");
      await server.stop();
      // A live countdown: the same attempt, read twice, counts down.
      // Retries come within 1 s (the default cap); catch one with over
      // 0.6 s to go and read it again 250 ms later. (This caught the React
      // example showing each new wait against a clock up to a phase old.)
      const attemptOf = (state) => state.text.match(/attempt \d+/)?.[0];
      const first = await until("a reconnect wait of over 0.6 s", async () => {
        const state = await ui.state(page);
        return state.name === "reconnecting" && state.retryMs > 600 ? state : null;
      });
      await new Promise((resolve) => setTimeout(resolve, 250));
      const second = await ui.state(page);
      assert.equal(second.name, "reconnecting", `still waiting: ${second.text}`);
      assert.equal(attemptOf(second), attemptOf(first), "the same attempt");
      assert.ok(
        second.retryMs <= first.retryMs - 100,
        `the countdown runs: ${first.text} then ${second.text}`,
      );
      assert.match(second.text, /reconnecting in \d+\.\d s/);
      const texts = [1, 2, 3, 4, 5].map((i) => `offline ${i}`);
      for (const text of texts) await send(page, text);
      await until("5 queued", async () => (await ui.queued(page)) === 5);
      const queued = await until("5 shown queued", async () => {
        const out = (await ui.outgoing(page)).slice(1);
        return out.length === 5 ? out : null;
      });
      assert.deepEqual(
        queued.map((m) => [m.text, m.status]),
        texts.map((t) => [t, "queued"]),
      );
      await page.screenshot({ path: `${SHOTS}/${name}-2-restart-reconnecting.png`, fullPage: true });
      await server.start();
      await until(
        "all 5 acknowledged",
        async () => (await ui.outgoing(page)).every((m) => m.status === "acked"),
      );
      await until("5 echoes", async () => (await ui.received(page)).length === 6);
      assert.deepEqual(await receivedCounts(page, texts), [1, 1, 1, 1, 1], "each echoed once");
      assert.equal(await metric(server, "messages_in"), 5, "the restarted server got each once");
      assert.equal(await ui.queued(page), 0);
    });

    scenario("3. queued while the server is down, the page reloaded: delivered once after the restart", "3-reload", async () => {
      await open(page, app, server);
      await server.stop();
      await until("disconnected", async () => (await ui.state(page)).name !== "open");
      const texts = ["kept 1", "kept 2", "kept 3"];
      for (const text of texts) await send(page, text);
      // `queued` shows once each is committed to IndexedDB.
      await until("3 queued", async () => (await ui.outgoing(page)).filter((m) => m.status === "queued").length === 3);
      await page.reload();
      const restored = await until("the restored outbox", async () => {
        const out = await ui.outgoing(page);
        return out.length === 3 ? out : null;
      });
      assert.deepEqual(
        restored.map((m) => [m.text, m.status, m.restored]),
        texts.map((t) => [t, "queued", true]),
        "after the reload the page shows what is still queued",
      );
      assert.equal(await ui.queued(page), 3);
      await page.screenshot({ path: `${SHOTS}/${name}-3-reload-restored.png`, fullPage: true });
      await server.start();
      await until(
        "all 3 acknowledged",
        async () => (await ui.outgoing(page)).every((m) => m.status === "acked"),
      );
      await until("3 echoes", async () => (await ui.received(page)).length === 3);
      assert.deepEqual(await receivedCounts(page, texts), [1, 1, 1], "each echoed once");
      assert.equal(await metric(server, "messages_in"), 3, "the server got each once");
    });

    scenario("4. a 2 MiB payload arrives intact", "4-large", async () => {
      await open(page, app, server);
      const bytes = randomBytes(2 * 1024 * 1024);
      const digest = sha256(bytes);
      await page.setInputFiles("[data-testid=file]", {
        name: "payload.bin",
        mimeType: "application/octet-stream",
        buffer: bytes,
      });
      await until(
        "acknowledged",
        async () => (await ui.outgoing(page)).some((m) => m.status === "acked" && m.sha256 === digest),
        60000,
      );
      const echo = await until("the echo with its checksum", async () => {
        const [first] = await ui.received(page);
        return first?.sha256 ? first : null;
      }, 60000);
      assert.equal(echo.size, bytes.length);
      assert.equal(echo.sha256, digest, "the checksum the page computed matches the bytes sent");
      assert.match(echo.text, new RegExp(`binary · 2,097,152 bytes · sha256 ${digest}`));
    });

    scenario("5. offline then online: reconnects at once, not after a backoff", "5-offline", async () => {
      await open(page, app, server);
      const before = (await ui.log(page)).length;
      await context.setOffline(true);
      await until("offline shown", async () => (await ui.state(page)).name === "suspended");
      assert.match((await ui.state(page)).text, /offline/);
      await send(page, "written offline");
      await until("queued", async () => (await ui.queued(page)) === 1);
      await page.screenshot({ path: `${SHOTS}/${name}-5-offline-suspended.png`, fullPage: true });
      // Long enough for a backoff to grow, were the client retrying.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      assert.equal((await ui.state(page)).name, "suspended", "no retries while offline");
      const online = Date.now();
      await context.setOffline(false);
      await until("connected again", async () => (await ui.state(page)).name === "open", 10000);
      const took = Date.now() - online;
      const log = (await ui.log(page)).slice(before).map((e) => e.state);
      assert.deepEqual(
        log,
        ["suspended", "connecting", "open"],
        `straight back on "online", no backoff wait (took ${took} ms)`,
      );
      await until("acknowledged", async () => (await ui.outgoing(page)).every((m) => m.status === "acked"));
      assert.deepEqual(await receivedCounts(page, ["written offline"]), [1]);
    });
  });
}
