// Builds the example into dist/ and serves it, forwarding /api/ to
// tokenrelay so that the page and the relay share one origin (no CORS, no
// URL baked into the bundle). `node serve.mjs --build-only` just builds, for
// putting dist/ behind any static host that forwards /api/ the same way.
//
//   TOKENRELAY_URL  where tokenrelay listens (default http://127.0.0.1:3000)
//   PORT            where this listens (default 8080; 0 picks a free port)
//
// The first line printed is `listening on http://127.0.0.1:PORT`, which the
// browser test reads to find the page.
import { copyFile, mkdir, readFile } from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.join(here, "dist");

await mkdir(dist, { recursive: true });
await esbuild.build({
  entryPoints: [path.join(here, "app.jsx")],
  outfile: path.join(dist, "app.js"),
  bundle: true,
  minify: true,
  jsx: "automatic",
  define: { "process.env.NODE_ENV": '"production"' },
  logLevel: "warning",
});
await copyFile(path.join(here, "index.html"), path.join(dist, "index.html"));
if (process.argv.includes("--build-only")) process.exit(0);

const relay = new URL(process.env.TOKENRELAY_URL ?? "http://127.0.0.1:3000");
const files = {
  "/": ["index.html", "text/html; charset=utf-8"],
  "/app.js": ["app.js", "text/javascript; charset=utf-8"],
};

const server = http.createServer(async (request, response) => {
  if (request.url.startsWith("/api/")) {
    // Streamed both ways as it comes: an answer must reach the page token by
    // token, and a page that goes away must drop the relay's connection too.
    const upstream = http.request(
      {
        host: relay.hostname,
        port: relay.port,
        method: request.method,
        path: request.url,
        headers: { ...request.headers, host: relay.host },
      },
      (answer) => {
        response.writeHead(answer.statusCode, answer.headers);
        answer.pipe(response);
      },
    );
    upstream.on("error", () => {
      if (!response.headersSent) response.writeHead(502);
      response.end();
    });
    response.on("close", () => upstream.destroy());
    request.pipe(upstream);
    return;
  }
  const file = files[new URL(request.url, "http://page").pathname];
  if (!file) {
    response.writeHead(404).end();
    return;
  }
  const body = await readFile(path.join(dist, file[0]));
  response.writeHead(200, { "content-type": file[1], "cache-control": "no-cache" }).end(body);
});
server.listen(Number(process.env.PORT ?? 8080), "127.0.0.1", () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});
