// The demo page (clients/js/demo/dist, served by the real server at /demo/) in
// headless Chromium: two users chat in two browser contexts; then Socket.IO is
// blocked for one of them, who keeps sending and receiving over server-sent events,
// then SSE is blocked too and he goes on over HTTP long polling. Then an admin opens
// /admin while messages flow; screenshots go to artifacts/.
//
// Needs: the server binary (target/debug/coursecast, or COURSECAST_BIN), the built
// demo (clients/js: npm run build && npm run build:demo), Debian's chromium
// (/usr/bin/chromium, or CHROMIUM_PATH).

import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(here, "../..");
const BIN = path.resolve(ROOT, process.env.COURSECAST_BIN ?? "target/debug/coursecast");
const DEMO_DIR = path.join(ROOT, "clients/js/demo/dist");
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const ARTIFACTS = path.join(here, "artifacts");
const JWT_SECRET = "coursecast-browser-test-secret-0123456789abcdef";
const STEP_MS = 15_000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function serviceToken() {
  const now = Math.floor(Date.now() / 1000);
  const enc = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const head = `${enc({ alg: "HS256", typ: "JWT" })}.${enc({ sub: "analysis-service", role: "SERVICE", iat: now, exp: now + 600 })}`;
  return `${head}.${createHmac("sha256", JWT_SECRET).update(head).digest("base64url")}`;
}

async function api(method, pathname, token, body) {
  const res = await fetch(server.url + pathname, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const answer = await res.json();
  assert.ok(res.ok, `${method} ${pathname}: ${res.status} ${JSON.stringify(answer)}`);
  return answer;
}

let server;
let browser;

before(async () => {
  for (const [what, file] of [["server binary", BIN], ["built demo (clients/js: npm run build:demo)", path.join(DEMO_DIR, "app.js")], ["chromium", CHROMIUM]]) {
    if (!fs.existsSync(file)) throw new Error(`missing ${what}: ${file}`);
  }
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "coursecast-browser-"));
  const port = await freePort();
  const env = { ...process.env, PORT: String(port), HOST: "127.0.0.1", DATA_DIR: path.join(work, "data"), JWT_SECRET,
    LOG_LEVEL: "warn", WEBSOCKET_CORS_ORIGIN: "http://localhost:5173", DEMO_DIR };
  delete env.DATABASE_URL;
  delete env.REDIS_URL;
  fs.mkdirSync(env.DATA_DIR);
  execFileSync(BIN, ["seed", "--students", "2", "--out", path.join(work, "seed.json")], { env, cwd: work, stdio: "pipe", timeout: 60_000 });
  const seed = JSON.parse(fs.readFileSync(path.join(work, "seed.json"), "utf8"));
  const child = spawn(BIN, ["serve"], { env, cwd: work, stdio: ["ignore", "ignore", "inherit"] });
  const url = `http://127.0.0.1:${port}`;
  server = { url, seed, child, work };
  const deadline = Date.now() + 20_000;
  for (;;) {
    const ok = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1000) }).then((r) => r.ok, () => false);
    if (ok) break;
    if (Date.now() > deadline || child.exitCode !== null) throw new Error("coursecast did not start");
    await sleep(50);
  }
  // playwright's launch() gives every run a fresh temporary --user-data-dir itself.
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close().catch(() => {});
  if (server) {
    const { child, work } = server;
    if (child.exitCode === null) {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await Promise.race([exited, sleep(10_000).then(() => child.kill("SIGKILL"))]);
    }
    fs.rmSync(work, { recursive: true, force: true });
  }
});

/**
 * A pass-through HTTP proxy to the server whose open connections can be cut: the
 * browser cannot be made to drop a live response it streams (going offline does not),
 * so a context's SSE requests are sent through one of these.
 */
async function startCutter() {
  const upstream = new URL(server.url);
  const open = new Set();
  const proxy = http.createServer((req, res) => {
    const out = http.request(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode, answer.headers);
        answer.pipe(res);
      },
    );
    out.on("error", () => res.destroy());
    res.on("close", () => out.destroy());
    req.pipe(out);
  });
  proxy.on("connection", (socket) => {
    open.add(socket);
    socket.on("close", () => open.delete(socket));
  });
  const port = await freePort();
  await new Promise((resolve) => proxy.listen(port, "127.0.0.1", resolve));
  const cut = () => open.forEach((socket) => socket.destroy());
  return {
    url: `http://127.0.0.1:${port}`,
    cut,
    close() {
      cut();
      return new Promise((resolve) => proxy.close(resolve));
    },
  };
}

/**
 * A browser context whose Socket.IO traffic can be blocked (Engine.IO polling requests
 * are aborted and WebSockets closed, the live one too, while `blocked` is set), and
 * whose SSE requests can be refused (503, as a proxy without streaming would answer)
 * after the live stream is cut.
 */
async function openUser(user) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 820 } });
  const sockets = new Set();
  const gate = { blocked: false, sseBlocked: false };
  const cutter = await startCutter();
  await context.route("**/socket.io/**", (route) => (gate.blocked ? route.abort("connectionrefused") : route.continue()));
  await context.route(/\/api\/realtime\/stream\?/, (route) => {
    if (gate.sseBlocked) return route.fulfill({ status: 503, contentType: "text/plain", body: "SSE blocked by the test" });
    const { pathname, search } = new URL(route.request().url());
    return route.continue({ url: cutter.url + pathname + search }); // unseen by the page
  });
  await context.routeWebSocket(/\/socket\.io\//, (ws) => {
    if (gate.blocked) {
      ws.close({ code: 1011, reason: "blocked by the test" });
      return;
    }
    ws.connectToServer();
    sockets.add(ws);
  });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (err) => problems.push(err.message));
  const requests = [];
  page.on("request", (request) => requests.push(request.url()));
  await page.goto(`${server.url}/demo/`);
  await page.fill("#login-form input[name=email]", user.email);
  await page.fill("#login-form input[name=password]", user.password);
  await page.click("#login-form button[type=submit]");
  return {
    page,
    context,
    cutter,
    problems,
    /** Long polls (GETs of a stream that wait) made so far. */
    longPolls: () => requests.filter((url) => /\/api\/realtime\/[a-z]+\/[^?]+\?.*wait=[1-9]/.test(url)).length,
    block() {
      gate.blocked = true;
      for (const ws of sockets) ws.close({ code: 1001, reason: "blocked by the test" });
      sockets.clear();
    },
    /** Refuses SSE from now on, and cuts the live stream. */
    blockSse() {
      gate.sseBlocked = true;
      cutter.cut();
    },
    allow() {
      gate.blocked = false;
      gate.sseBlocked = false;
    },
  };
}

const status = (page, value) => page.waitForSelector(`#status[data-status="${value}"]`, { timeout: STEP_MS });

async function send(page, text) {
  await page.fill("#message", text);
  await page.click("#send");
}

const texts = (page) => page.$$eval("#messages li .text", (nodes) => nodes.map((n) => n.textContent));

async function waitTexts(page, expected) {
  await page.waitForFunction(
    (n) => document.querySelectorAll("#messages li").length >= n,
    expected.length,
    { timeout: STEP_MS },
  );
  assert.deepEqual(await texts(page), expected, "every message once, in order");
}

/** `asker` writes `question`, `answerer` sees it and writes `answer`: both pages show `chat` plus the two. */
async function exchange(chat, asker, question, answerer, answer) {
  await send(asker, question);
  chat.push(question);
  await waitTexts(answerer, chat);
  await send(answerer, answer);
  chat.push(answer);
  await waitTexts(asker, chat);
  await waitTexts(answerer, chat);
}

test("two users chat on the demo page; with Socket.IO blocked one goes on over SSE, then over polling", async (t) => {
  const { courseId, professor, users } = server.seed;
  const [u1, u2] = users;
  const a = await openUser(u1);
  const b = await openUser(u2);
  t.after(() =>
    Promise.all([a.context.close(), b.context.close(), a.cutter.close(), b.cutter.close()]).catch(() => {}),
  );

  await Promise.all([status(a.page, "online"), status(b.page, "online")]);
  await b.page.waitForFunction(() => document.querySelectorAll("#presence li").length === 2, null, { timeout: STEP_MS });

  // Chat over sockets, with typing.
  await a.page.type("#message", "hel");
  await b.page.waitForFunction(() => /typing/.test(document.querySelector("#typing").textContent), null, { timeout: STEP_MS });
  await send(a.page, "Hello from Ada over a WebSocket");
  await waitTexts(b.page, ["Hello from Ada over a WebSocket"]);
  await send(b.page, "Hi Ada, Ben here");
  const chat = ["Hello from Ada over a WebSocket", "Hi Ada, Ben here"];
  await waitTexts(a.page, chat);

  assert.equal(await a.page.textContent("#transport"), "via Socket.IO");

  // Socket.IO blocked for Ben: his client falls back to server-sent events.
  b.block();
  await status(b.page, "sse");
  assert.equal(await b.page.textContent("#transport"), "via server-sent events");
  await exchange(chat, a.page, "Ben, can you still read me?", b.page, "Yes, over server-sent events");
  // His notifications arrive on the same stream.
  await api("POST", "/api/notifications", professor.token, {
    userId: u2.id, notificationType: "ASSIGNMENT_DUE", title: "Essay due Friday",
    message: "Submit your essay on the course page.", priority: "HIGH",
  });
  await b.page.waitForSelector("#notifications li.unread", { timeout: STEP_MS });
  assert.equal(await b.page.textContent("#status"), "sse");
  assert.equal(b.longPolls(), 0, "one SSE connection, no long poll per stream");
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await b.page.screenshot({ path: path.join(ARTIFACTS, "demo-sse.png"), fullPage: true });

  // SSE refused too (a proxy that does not stream): long polling.
  b.blockSse();
  await status(b.page, "polling");
  assert.equal(await b.page.textContent("#transport"), "via HTTP long polling");
  assert.ok(b.longPolls() > 0, "long polls now");
  await exchange(chat, a.page, "And now?", b.page, "Yes, through long polling");

  // His analysis progress keeps coming too.
  await b.page.click("#start-analysis");
  await b.page.waitForSelector("#analysis-id[data-analysis-id]", { timeout: STEP_MS });
  const analysisId = await b.page.getAttribute("#analysis-id", "data-analysis-id");
  await api("POST", `/api/analyses/${analysisId}/progress`, serviceToken(), { progress: 65, data: { stage: "training" } });
  await b.page.waitForFunction(() => document.querySelector(".bar").getAttribute("aria-valuenow") === "65", null, { timeout: STEP_MS });
  assert.equal(await b.page.textContent("#status"), "polling");

  // Let the bar's CSS transition finish before the picture.
  await b.page.waitForFunction(() => {
    const fill = document.querySelector("#progress-fill");
    return fill.getBoundingClientRect().width >= 0.64 * fill.parentElement.getBoundingClientRect().width;
  }, null, { timeout: STEP_MS });
  await b.page.screenshot({ path: path.join(ARTIFACTS, "demo.png"), fullPage: true });
  await a.page.screenshot({ path: path.join(ARTIFACTS, "demo-online.png"), fullPage: true });

  // Sockets and SSE allowed again: the next probe takes Ben back to sockets.
  b.allow();
  await b.page.waitForSelector('#status[data-status="online"]', { timeout: 20_000 });
  await send(b.page, "Back on sockets");
  chat.push("Back on sockets");
  await waitTexts(a.page, chat);
  await waitTexts(b.page, chat);
  assert.deepEqual([...a.problems, ...b.problems], [], "no page errors");
});

test("an admin opens the dashboard under load and sees copies, refusals, dependencies and rooms", async (t) => {
  const { courseId, admin, professor, users } = server.seed;
  // Two students on the demo page: sockets in the course room, so every message is
  // one event and several copies.
  const a = await openUser(users[0]);
  const b = await openUser(users[1]);
  const dashboard = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  // Each user's SSE cutter is a listening proxy: left open, it keeps the test process alive.
  t.after(() =>
    Promise.all([a.context.close(), b.context.close(), a.cutter.close(), b.cutter.close(), dashboard.close()]).catch(
      () => {},
    ),
  );
  await Promise.all([status(a.page, "online"), status(b.page, "online")]);

  const page = await dashboard.newPage();
  const problems = [];
  page.on("pageerror", (err) => problems.push(err.message));
  await page.goto(`${server.url}/admin`);
  await page.fill("#email", admin.email);
  await page.fill("#password", admin.password);
  await page.click("#login-form button[type=submit]");
  await page.waitForSelector("#deliveries tr", { timeout: STEP_MS });

  // Load: a steady stream of messages over HTTP, and some refusals (a bad token).
  let sent = 0;
  let stop = false;
  const load = (async () => {
    while (!stop) {
      await api("POST", `/api/realtime/messages/${courseId}`, professor.token, { content: `load ${sent}`, clientMsgId: `load-${sent}` });
      sent += 1;
      if (sent % 10 === 0) {
        await fetch(`${server.url}/api/realtime/messages/${courseId}`, { headers: { authorization: "Bearer not-a-token" } }).then((r) => r.arrayBuffer());
      }
      await sleep(20);
    }
  })();
  try {
    // Rates need two polls with traffic between them.
    await page.waitForFunction(() => {
      const cells = [...document.querySelectorAll("#deliveries td")].map((td) => td.textContent);
      const socketRate = Number.parseFloat(cells[cells.indexOf("copies to sockets") + 1]);
      return socketRate > 0 && document.querySelectorAll("#rooms-members tr").length > 1;
    }, null, { timeout: STEP_MS });
    await page.waitForFunction(() => /TOKEN_INVALID/.test(document.querySelector("#refusals").textContent), null, { timeout: STEP_MS });
    await sleep(1500);
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, "dashboard.png"), fullPage: true });
  } finally {
    stop = true;
    await load;
  }
  assert.ok(sent > 0);
  assert.match(await page.textContent("#dependencies"), /database\s*up/);
  assert.match(await page.textContent("#dependencies"), /not configured/);
  const busiest = await page.textContent("#rooms-traffic");
  assert.ok(busiest.includes(`chat ${courseId.slice(0, 8)}`), busiest);
  assert.deepEqual([...problems, ...a.problems, ...b.problems], [], "no page errors");
});
