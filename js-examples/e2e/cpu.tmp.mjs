import { spawn } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { TestServer } from "../../pkg/test/server.js";
import { serveStatic } from "./static.js";
const [size = "65536", count = "1024"] = process.argv.slice(2);
const snap = () => { const m = {}; for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) { try { const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8"); let k = null; if (cmd.includes("steadfast-server")) k = "server"; else if (cmd.includes("chromium")) { const t = cmd.match(/--type=([a-z-]+)/); const u = cmd.match(/--utility-sub-type=([a-z.A-Z]+)/); k = (t ? t[1] : "browser") + (u ? ":" + u[1].split(".").pop() : ""); } else if (Number(pid) === process.pid) k = "node"; if (!k) continue; const st = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" "); m[k] = (m[k] || 0) + Number(st[11]) + Number(st[12]); } catch {} } return m; };
for (const kind of ["raw", "reliable", "plain"]) {
  const server = new TestServer(0, []); await server.start();
  let settle; const done = new Promise((r) => (settle = r));
  const site = await serveStatic("/work/main/", 0, (path, body) => { if (path !== "/log") settle(JSON.parse(body)); });
  const plan = { url: server.url, closedUrl: "ws://127.0.0.1:1", runs: 3, kinds: [kind], sizes: [{ size: Number(size), count: Number(count) }], indexeddb: { messages: 1, sequential: 1 } };
  const chrome = spawn("/usr/bin/chromium", ["--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=/tmp/diag/cpu-profile", `${site.url}js-examples/e2e/bench-page/index.html?plan=${encodeURIComponent(JSON.stringify(plan))}`], { stdio: "ignore" });
  await new Promise((r) => setTimeout(r, 1500));
  const a = snap(); const t = Date.now();
  const result = await done; const b = snap(); const wall = Date.now() - t;
  const n = 3 * Number(count);
  console.log(kind, Math.round(result.throughput[0][kind].messages_per_s), "msg/s; CPU µs/msg:", Object.keys(b).map((k) => `${k} ${(((b[k] - (a[k] || 0)) * 10000) / n).toFixed(0)}`).join(", "), `; wall µs/msg ${(wall * 1000 / n).toFixed(0)}`);
  chrome.kill("SIGKILL"); await site.close(); await server.stop();
  await new Promise((r) => setTimeout(r, 500));
}
process.exit(0);
