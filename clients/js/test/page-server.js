/**
 * A page on the API's origin for the browser tests: a tiny HTTP server that answers a few files of
 * its own (a bundled app) and passes every other request, WebSocket upgrades included, to the API
 * unchanged (a reverse proxy, byte for byte), so the page's fetch and WebSocket are same-origin.
 */

import { once } from "node:events";
import { request, createServer } from "node:http";
import { connect } from "node:net";

const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".map": "application/json" };

/**
 * @param {{files: Map<string, string | Uint8Array>, apiPort: number}} options  files: path ("/app.js") → body
 * @returns {Promise<{url: string, close: () => Promise<void>}>}
 */
export async function servePage({ files, apiPort }) {
  /** @type {Set<import("node:net").Socket>} */
  const sockets = new Set();
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://page").pathname;
    const body = files.get(path === "/" ? "/index.html" : path);
    if (body !== undefined) {
      const type = TYPES[/** @type {keyof typeof TYPES} */ (path === "/" ? ".html" : path.slice(path.lastIndexOf(".")))];
      res.writeHead(200, { "content-type": type ?? "application/octet-stream", "cache-control": "no-store" });
      res.end(body);
      return;
    }
    const upstream = request(
      { host: "127.0.0.1", port: apiPort, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on("error", () => res.destroy());
    req.pipe(upstream);
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  server.on("upgrade", (req, socket, head) => {
    // Replay the handshake to the API as it came (Host and Origin are the page's: same-origin there too).
    const upstream = connect(apiPort, "127.0.0.1", () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      upstream.write(`${lines.join("\r\n")}\r\n\r\n`);
      if (head.length) upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    sockets.add(upstream);
    upstream.on("close", () => sockets.delete(upstream));
    upstream.on("error", () => socket.destroy());
    socket.on("error", () => upstream.destroy());
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = /** @type {import("node:net").AddressInfo} */ (server.address());
  return {
    url: `http://127.0.0.1:${port}/`,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      server.close();
      await once(server, "close");
    },
  };
}
