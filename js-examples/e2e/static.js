// A static file server on loopback for a built example (its dist/), with
// the content types a browser insists on (application/wasm for
// WebAssembly.instantiateStreaming).
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { extname, join, normalize, sep } from "node:path";

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".wasm": "application/wasm",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
};

/**
 * Serve `root` on 127.0.0.1 (port 0: any free one, or `port`); `{ url, close }`.
 * `onPost(path, body)`, if given, receives each POST request's path and text.
 */
export async function serveStatic(root, port = 0, onPost = null) {
  const base = normalize(root + sep);
  const server = createServer(async (request, response) => {
    const path = decodeURIComponent(new URL(request.url, "http://x").pathname);
    if (request.method === "POST" && onPost) {
      let body = "";
      request.setEncoding("utf8");
      for await (const chunk of request) body += chunk;
      response.writeHead(204).end();
      onPost(path, body);
      return;
    }
    let file = normalize(join(base, path));
    if (!file.startsWith(base)) {
      response.writeHead(403).end();
      return;
    }
    if (file.endsWith(sep)) file = join(file, "index.html");
    try {
      const body = await readFile(file);
      response.writeHead(200, {
        "content-type": TYPES[extname(file)] ?? "application/octet-stream",
        "cache-control": "no-store",
      });
      response.end(body);
    } catch {
      response.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
    }
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", resolve);
  });
  const { port: bound } = server.address();
  return {
    url: `http://127.0.0.1:${bound}/`,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}
