// Test helpers: the real coursecast binary (fresh data dir, free port, seed), a
// switchable HTTP proxy in front of it, token signing, HTTP calls and bounded waits.

import { spawn, execFileSync } from "node:child_process";
import { createHmac } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createClient } from "../dist/index.js";

const here = path.dirname(fileURLToPath(import.meta.url));
export const BIN = path.resolve(here, "../../..", process.env.COURSECAST_BIN ?? "target/debug/coursecast");
export const JWT_SECRET = "coursecast-js-client-test-secret-0123456789abcdef";

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it returns a truthy value (returned) or `ms` pass (throws `what`). */
export async function waitFor(check, what, ms = 10_000, every = 20) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(every);
  }
}

/** Rejects after `ms` unless `promise` settles first. */
export function within(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const b64url = (value) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

/** An HS256 JWT; `claims` override `sub`, `role`, `iat`, `exp`. */
export function signToken(claims, secret = JWT_SECRET) {
  const now = Math.floor(Date.now() / 1000);
  const body = { iat: now, exp: now + 3600, ...claims };
  const head = `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url(body)}`;
  return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`;
}

export function userToken(user, seconds = 3600, role = "STUDENT") {
  const now = Math.floor(Date.now() / 1000);
  return signToken({ sub: user.id, role, iat: now - 1, exp: now + seconds });
}

export const serviceToken = () => signToken({ sub: "analysis-service", role: "SERVICE" });

/** JSON over fetch; resolves `{status, body}`. */
export async function api(base, method, pathname, { token, body } = {}) {
  const headers = { accept: "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(base + pathname, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/**
 * Events for `user`'s own streams: a notification titled `title` (sent by the
 * professor), and an analysis of theirs at `progress` percent (reported by the service).
 */
export async function notifyAndReport(server, user, title, progress) {
  const { courseId, professor } = server.seed;
  const note = await api(server.url, "POST", "/api/notifications", {
    token: professor.token,
    body: { userId: user.id, notificationType: "ASSIGNMENT_DUE", title, message: `${title}: essay due`, priority: "HIGH" },
  });
  if (note.status !== 201) throw new Error(`POST /api/notifications: ${note.status} ${JSON.stringify(note.body)}`);
  const analysis = await api(server.url, "POST", "/api/analyses", { token: user.token, body: { courseId, input: {} } });
  if (analysis.status !== 201) throw new Error(`POST /api/analyses: ${analysis.status} ${JSON.stringify(analysis.body)}`);
  const report = await api(server.url, "POST", `/api/analyses/${analysis.body.analysisId}/progress`, {
    token: serviceToken(),
    body: { progress, data: { step: "features" } },
  });
  if (report.status !== 200) throw new Error(`POST progress: ${report.status} ${JSON.stringify(report.body)}`);
}

/** Every stored message of a course, oldest first (HTTP, no wait). */
export async function allMessages(base, token, courseId) {
  const out = [];
  let since = 0;
  for (;;) {
    const { status, body } = await api(base, "GET", `/api/realtime/messages/${courseId}?since=${since}&limit=1000`, { token });
    if (status !== 200) throw new Error(`GET messages: ${status} ${JSON.stringify(body)}`);
    out.push(...body.events);
    since = body.cursor;
    if (!body.hasMore) return out;
  }
}

/**
 * Seeds and starts the server. `env` overrides settings. Returns
 * {url, port, seed, stop(), restart(), kill(), start()}.
 */
export async function startServer({ students = 3, env: overrides = {} } = {}) {
  if (!fs.existsSync(BIN)) throw new Error(`no server binary at ${BIN} (cargo build -p coursecast --bin coursecast)`);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "coursecast-js-"));
  const dataDir = path.join(work, "data");
  fs.mkdirSync(dataDir);
  const port = await freePort();
  const env = { ...process.env };
  for (const key of Object.keys(env)) if (/^(DATABASE_URL|REDIS_URL|JWT_|WEBSOCKET_|SOCKET_|POLLING_|LOG_|RUST_LOG)/.test(key)) delete env[key];
  Object.assign(env, {
    PORT: String(port),
    HOST: "127.0.0.1",
    DATA_DIR: dataDir,
    JWT_SECRET,
    LOG_LEVEL: "warn",
    WEBSOCKET_CORS_ORIGIN: "http://localhost:5173",
    DEMO_DIR: path.join(work, "no-demo"),
    ...overrides,
  });
  const out = path.join(work, "seed.json");
  execFileSync(BIN, ["seed", "--students", String(students), "--out", out], { env, cwd: work, stdio: "pipe", timeout: 60_000 });
  const seed = JSON.parse(fs.readFileSync(out, "utf8"));
  const url = `http://127.0.0.1:${port}`;
  let child;
  let log = "";

  async function start() {
    child = spawn(BIN, ["serve"], { env, cwd: work, stdio: ["ignore", "pipe", "pipe"] });
    const keep = (chunk) => {
      log = (log + chunk).slice(-20_000);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    const proc = child;
    await waitFor(async () => {
      if (proc.exitCode !== null) throw new Error(`coursecast exited at start:\n${log}`);
      try {
        const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1000) });
        await res.arrayBuffer();
        return res.status === 200;
      } catch {
        return false;
      }
    }, "GET /healthz", 20_000, 50);
  }

  async function halt() {
    const proc = child;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((resolve) => proc.once("exit", resolve));
    proc.kill("SIGTERM");
    try {
      await within(exited, 10_000, "coursecast to exit after SIGTERM");
    } catch (err) {
      proc.kill("SIGKILL");
      await within(exited, 5000, "coursecast to exit after SIGKILL").catch(() => {});
      throw err;
    }
  }

  await start();
  return {
    url,
    port,
    seed,
    logs: () => log,
    start,
    halt,
    async restart() {
      await halt();
      await start();
    },
    async stop() {
      try {
        await halt();
      } finally {
        fs.rmSync(work, { recursive: true, force: true });
      }
    },
  };
}

/**
 * An HTTP proxy in front of `target` that can refuse Socket.IO (both Engine.IO
 * polling and the WebSocket upgrade) and the SSE endpoint while passing the rest of
 * `/api` through, cut live SSE streams, and answer chosen requests by cutting the
 * connection after the server handled them.
 */
export async function startProxy(target) {
  const upstream = new URL(target);
  const open = new Set(); // client sockets, to cut live Socket.IO connections
  const state = {
    /** Cut every request: the server looks unreachable. */
    down: false,
    blockSockets: false,
    blockSse: false,
    /** (req, body) => true: forward, then cut the client connection instead of answering. */
    dropAnswer: null,
    requests: [],
  };
  const isSocketIo = (url) => url.startsWith("/socket.io");
  const isSse = (url) => url.startsWith("/api/realtime/stream");

  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      state.requests.push({ method: req.method, url: req.url, body: body.toString(), headers: req.headers });
      if (state.down) {
        req.socket.destroy();
        return;
      }
      if ((state.blockSockets && isSocketIo(req.url)) || (state.blockSse && isSse(req.url))) {
        res.writeHead(503, { "content-type": "text/plain", connection: "close" });
        res.end("blocked by the test proxy");
        return;
      }
      req.socket.isSse = isSse(req.url); // a kept-alive connection serves one request at a time
      const drop = state.dropAnswer?.(req, body.toString());
      const out = http.request(
        { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
        (answer) => {
          if (drop) {
            answer.resume();
            answer.on("end", () => req.socket.destroy());
            return;
          }
          res.writeHead(answer.statusCode, answer.headers);
          answer.pipe(res);
        },
      );
      out.on("error", () => req.socket.destroy());
      res.on("close", () => out.destroy());
      out.end(body);
    });
  });
  server.on("connection", (socket) => {
    open.add(socket);
    socket.on("close", () => open.delete(socket));
  });
  server.on("upgrade", (req, socket, head) => {
    state.requests.push({ method: req.method, url: req.url, upgrade: true });
    if (state.down) {
      socket.destroy();
      return;
    }
    if (state.blockSockets && isSocketIo(req.url)) {
      socket.end("HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
      return;
    }
    const out = net.connect(Number(upstream.port), upstream.hostname, () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      out.write(`${lines.join("\r\n")}\r\n\r\n`);
      if (head.length) out.write(head);
      out.pipe(socket);
      socket.pipe(out);
    });
    const close = () => {
      out.destroy();
      socket.destroy();
    };
    out.on("error", close);
    socket.on("error", close);
    out.on("close", close);
    socket.on("close", close);
    socket.isSocketIo = true;
  });
  const port = await freePort();
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${port}`,
    state,
    /** Refuse Socket.IO from now on and cut every connection that carries it. */
    blockSockets() {
      state.blockSockets = true;
      for (const socket of open) socket.destroy();
    },
    /** Cut every live connection once (a network blip); new ones are allowed. */
    cutAll() {
      for (const socket of open) socket.destroy();
    },
    allowSockets() {
      state.blockSockets = false;
    },
    /** Refuse the SSE endpoint (503, as a proxy without it would) and cut the live streams. */
    blockSse() {
      state.blockSse = true;
      this.cutSse();
    },
    allowSse() {
      state.blockSse = false;
    },
    /** Cut every live SSE stream once; new ones are allowed. */
    cutSse() {
      for (const socket of open) if (socket.isSse) socket.destroy();
    },
    /** Cut every connection and refuse everything until `up()`. */
    down() {
      state.down = true;
      for (const socket of open) socket.destroy();
    },
    up() {
      state.down = false;
    },
    async close() {
      for (const socket of open) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Collects a client's events for assertions. */
export function record(client) {
  const log = { statuses: [client.status], messages: [], notifications: [], progress: [], annotations: [], errors: [] };
  client.on("status", (s) => log.statuses.push(s));
  client.on("error", (err, fatal) => log.errors.push({ code: err.code, message: err.message, fatal }));
  client.chat.on("message", (e) => log.messages.push(e));
  client.notifications.on("notification", (e) => log.notifications.push(e));
  client.analytics.on("progress", (e) => log.progress.push(e));
  client.collaboration.on("annotation", (e) => log.annotations.push(e));
  return log;
}

/** Asserts strictly increasing seqs (exactly once, in order). */
export function assertInOrder(events, what = "events") {
  for (let i = 1; i < events.length; i++) {
    if (!(events[i].seq > events[i - 1].seq)) {
      throw new Error(`${what} out of order or repeated at ${i}: ${events.map((e) => e.seq).join(",")}`);
    }
  }
}

/** Fast settings for tests: short backoff, quick fallback and probes. */
export function makeClient(url, getToken, options = {}) {
  const { fallback, ...rest } = options;
  return createClient({
    url,
    getToken: typeof getToken === "function" ? getToken : () => getToken,
    reconnectionDelay: 100,
    reconnectionDelayMax: 800,
    randomizationFactor: 0.2,
    connectTimeoutMs: 3000,
    ackTimeoutMs: 3000,
    httpTimeoutMs: 5000,
    fallback: fallback === false ? false : { afterFailures: 3, maxDrops: 3, probeIntervalMs: 500, pollWaitSeconds: 5, ...fallback },
    ...rest,
  });
}
