// The SSE transport against a scripted server: the misbehaviour the real server
// cannot be made to show on cue (a proxy that buffers and never sends `ready`, an
// answer that is not an event stream, a stream that goes silent, a payload that is
// not JSON), and the contract's resume rules (Last-Event-ID only for the same streams).
import assert from "node:assert/strict";
import http from "node:http";
import { test } from "node:test";
import { Tokens } from "../dist/tokens.js";
import { SseTransport } from "../dist/transport/sse.js";
import { waitFor } from "./helpers.mjs";

/** A server whose every GET /api/realtime/stream is answered by `script(req, res, n)`. */
async function scripted(t, script) {
  const requests = [];
  const open = new Set();
  const server = http.createServer((req, res) => {
    requests.push({ url: req.url, headers: req.headers });
    open.add(res);
    res.on("close", () => open.delete(res));
    script(req, res, requests.length);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.after(async () => {
    for (const res of open) res.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
  return { url: `http://127.0.0.1:${server.address().port}`, requests };
}

const stream = (res) => res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
const frame = (event, data, id) => `event: ${event}\n${id === undefined ? "" : `id: ${id}\n`}data: ${JSON.stringify(data)}\n\n`;

/** A transport with fast settings; `specs` is what it opens with; collects what it reports. */
function transport(t, url, specs, settings = {}) {
  const sse = new SseTransport(
    { url, readyTimeoutMs: 1000, idleTimeoutMs: 1000, delay: () => 50, specs: () => specs.current, ...settings },
    new Tokens(() => "header.eyJzdWIiOiJ1In0.sig"),
  );
  const log = { ready: [], events: [], failures: [], downs: [] };
  sse.on("ready", (s) => log.ready.push(s));
  sse.on("event", (name, payload) => log.events.push([name, payload.seq]));
  sse.on("failure", (err) => log.failures.push(err.code));
  sse.on("down", (err) => log.downs.push(err.code));
  t.after(() => sse.stop());
  sse.start();
  return { sse, log };
}

test("ready, events, and a reopen after end UNAVAILABLE that resumes with Last-Event-ID", async (t) => {
  const server = await scripted(t, (req, res, n) => {
    stream(res);
    res.write("retry: 100\n");
    if (n === 1) {
      res.write(frame("ready", { streams: [{ stream: "messages:c", cursor: 4 }] }, "0.0.4"));
      res.write(": ping\n\n");
      res.write(frame("message", { seq: 5, courseId: "c" }, "0.0.5"));
      res.end(frame("end", { code: "UNAVAILABLE", message: "too slow" }));
    } else {
      res.write(frame("ready", { streams: [{ stream: "messages:c", cursor: 5 }] }, "0.0.5"));
    }
  });
  const specs = { current: ["notifications:u", "progress:u", "messages:c:4"] };
  const { log } = transport(t, server.url, specs);
  await waitFor(() => log.ready.length === 2, "two connections ready");
  assert.deepEqual(log.events, [["message", 5]]);
  assert.deepEqual(log.downs, ["UNAVAILABLE"]);
  assert.deepEqual(log.failures, []);
  const [first, second] = server.requests;
  assert.equal(first.headers["last-event-id"], undefined);
  assert.equal(first.headers.authorization, "Bearer header.eyJzdWIiOiJ1In0.sig");
  assert.equal(first.headers.accept, "text/event-stream");
  assert.equal(new URL(first.url, server.url).searchParams.get("streams"), "notifications:u,progress:u,messages:c:4");
  assert.equal(second.headers["last-event-id"], "0.0.5", "the id of the last event seen");
});

test("reopen() with other streams sends explicit cursors and no Last-Event-ID", async (t) => {
  const server = await scripted(t, (req, res) => {
    stream(res);
    res.write(frame("ready", { streams: [] }, "1.2"));
  });
  const specs = { current: ["notifications:u:1", "progress:u:2"] };
  const { sse, log } = transport(t, server.url, specs);
  await waitFor(() => log.ready.length === 1, "ready");
  specs.current = ["notifications:u:1", "progress:u:2", "messages:c"];
  sse.reopen();
  await waitFor(() => log.ready.length === 2, "ready again");
  assert.equal(server.requests[1].headers["last-event-id"], undefined, "the streams changed");
  sse.reopen(); // same streams: resume by id
  await waitFor(() => log.ready.length === 3, "ready a third time");
  assert.equal(server.requests[2].headers["last-event-id"], "1.2");
  assert.deepEqual([log.failures, log.downs], [[], []], "a reopen is not a drop");
});

test("no ready within readyTimeoutMs (a buffering proxy) is a failed attempt, retried", async (t) => {
  const server = await scripted(t, (req, res) => {
    stream(res);
    res.write(": buffered somewhere\n\n");
  });
  const { log } = transport(t, server.url, { current: ["progress:u"] }, { readyTimeoutMs: 200 });
  await waitFor(() => log.failures.length >= 2, "two failed attempts", 5000);
  assert.deepEqual(log.failures.slice(0, 2), ["TIMEOUT", "TIMEOUT"]);
  assert.equal(log.ready.length, 0);
});

test("an answer that is not an event stream, and the contract's JSON refusals", async (t) => {
  const server = await scripted(t, (req, res, n) => {
    if (n === 1) {
      res.writeHead(200, { "content-type": "text/html" });
      res.end("<html>a captive portal</html>");
    } else {
      res.writeHead(503, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { code: "UNAVAILABLE", message: "SSE is switched off" } }));
    }
  });
  const { log } = transport(t, server.url, { current: ["progress:u"] });
  await waitFor(() => log.failures.length >= 2, "two failures");
  assert.deepEqual(log.failures.slice(0, 2), ["UNAVAILABLE", "UNAVAILABLE"]);
});

test("a refusal that is not transient waits for reconnect()", async (t) => {
  const server = await scripted(t, (req, res, n) => {
    if (n === 1) {
      res.writeHead(401, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { code: "TOKEN_EXPIRED", message: "expired" } }));
      return;
    }
    stream(res);
    res.write(frame("ready", { streams: [] }, "0"));
  });
  const { sse, log } = transport(t, server.url, { current: ["progress:u"] });
  await waitFor(() => log.failures.length === 1, "the refusal");
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(server.requests.length, 1, "no retry on its own");
  sse.reconnect();
  await waitFor(() => log.ready.length === 1, "ready after reconnect()");
});

test("a stream silent for idleTimeoutMs, and data that is not JSON, are drops", async (t) => {
  const server = await scripted(t, (req, res, n) => {
    stream(res);
    res.write(frame("ready", { streams: [] }, "0"));
    if (n === 2) res.write("event: message\ndata: {not json\n\n");
    // n === 1: then nothing at all, not even the heartbeat
  });
  const { log } = transport(t, server.url, { current: ["progress:u"] }, { idleTimeoutMs: 300 });
  await waitFor(() => log.downs.length >= 2, "two drops", 5000);
  assert.deepEqual(log.downs.slice(0, 2), ["TIMEOUT", "UNAVAILABLE"]);
  assert.deepEqual(log.events, [], "the malformed event is not handed on");
});
