// Server-sent events (GET /api/realtime/stream) as the first fallback: a proxy in
// front of the server refuses Socket.IO and, when told, the SSE endpoint too, or cuts
// the live SSE stream. Every stream arrives exactly once and in order across every
// switch: WebSocket -> SSE -> long polling -> WebSocket.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  allMessages,
  api,
  assertInOrder,
  makeClient,
  notifyAndReport,
  record,
  sleep,
  startProxy,
  startServer,
  userToken,
  waitFor,
} from "./helpers.mjs";

let server;
let proxy;
before(async () => {
  server = await startServer({ students: 3 });
  proxy = await startProxy(server.url);
});
after(async () => {
  await proxy?.close();
  await server?.stop();
});

const sseRequests = () => proxy.state.requests.filter((r) => r.url.startsWith("/api/realtime/stream"));

/** Sends `content` as `user` straight to the server (not through the proxy). */
async function post(user, content) {
  const res = await api(server.url, "POST", `/api/realtime/messages/${server.seed.courseId}`, {
    token: user.token,
    body: { content, clientMsgId: `m-${content.replace(/[^A-Za-z0-9_-]/g, "-")}` },
  });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body.event;
}

test("WebSocket blocked: every stream arrives over SSE, writes go over HTTP", async (t) => {
  const { courseId } = server.seed;
  const [a, b] = server.seed.users;
  proxy.blockSockets();
  t.after(() => proxy.allowSockets());
  const alice = makeClient(proxy.url, a.token, { fallback: { afterFailures: 2 } });
  t.after(() => alice.close());
  const la = record(alice);
  const joined = await alice.chat.join(courseId);
  assert.equal(joined.ok, true);
  assert.equal(alice.status, "sse");
  assert.equal(alice.mode, "sse");
  assert.ok(!la.statuses.includes("polling"), `never polled: ${la.statuses}`);

  for (const n of [1, 2, 3]) await post(b, `b${n} to alice on SSE`);
  await waitFor(() => la.messages.length === 3, "three messages over SSE");
  await notifyAndReport(server, a, "SSE due", 30);
  await waitFor(() => la.notifications.some((n) => n.title === "SSE due"), "the notification over SSE");
  await waitFor(() => la.progress.some((p) => p.progress === 30), "the progress over SSE");

  const sent = await alice.chat.send(courseId, "alice over HTTP while on SSE");
  await waitFor(() => la.messages.some((m) => m.messageId === sent.event.messageId), "alice's own message over SSE");
  assert.equal(await alice.chat.typing(courseId), false, "typing is sockets-only");

  // One SSE connection carries all of alice's streams, authenticated by header.
  const streams = sseRequests().map((r) => new URL(r.url, proxy.url).searchParams.get("streams"));
  const last = streams.at(-1).split(",").map((spec) => spec.split(":").slice(0, 2).join(":"));
  assert.deepEqual(last, [`notifications:${a.id}`, `progress:${a.id}`, `messages:${courseId}`]);
  assert.ok(sseRequests().every((r) => r.headers.authorization === `Bearer ${a.token}`), "token in the header");
  assert.ok(sseRequests().every((r) => !r.url.includes("access_token")), "never a token in the query");
  assert.ok(
    !proxy.state.requests.some((r) => /^\/api\/realtime\/(messages|notifications|progress)\/[^?]*\?.*wait=[1-9]/.test(r.url)),
    "no long poll while SSE works",
  );

  const stored = await allMessages(server.url, a.token, courseId);
  const mine = stored.filter((m) => m.seq > joined.cursor);
  assert.deepEqual(
    la.messages.map((m) => m.seq),
    mine.map((m) => m.seq),
    "every message after the join, once, in order",
  );
  assert.deepEqual(la.errors, []);
});

test("the SSE connection is cut: it resumes with Last-Event-ID and loses nothing", async (t) => {
  const { courseId } = server.seed;
  const [a, b] = server.seed.users;
  proxy.blockSockets();
  t.after(() => proxy.allowSockets());
  const alice = makeClient(proxy.url, a.token, { fallback: { afterFailures: 2, probeIntervalMs: 60_000 } });
  t.after(() => alice.close());
  const la = record(alice);
  await alice.chat.join(courseId);
  assert.equal(alice.status, "sse");
  await post(b, "before the cut");
  await waitFor(() => la.messages.length === 1, "the first message");
  const opened = sseRequests().length;

  proxy.cutSse();
  // Written while alice's stream is down (the reconnect waits for the server's retry).
  for (const n of [1, 2, 3, 4]) await post(b, `during the cut ${n}`);
  await waitFor(() => sseRequests().length > opened, "a new SSE request", 10_000);
  await waitFor(() => la.messages.length === 5, "the four messages written during the cut", 10_000);
  await post(b, "after the cut");
  await waitFor(() => la.messages.length === 6, "live again");

  const resumed = sseRequests().at(-1);
  const lastId = resumed.headers["last-event-id"];
  assert.match(lastId ?? "", /^\d+\.\d+\.\d+$/, "Last-Event-ID: the three cursors");
  assert.equal(Number(lastId.split(".")[2]), la.messages[0].seq, "the course's position was the last message seen");
  assert.deepEqual(
    la.messages.map((m) => m.content),
    ["before the cut", "during the cut 1", "during the cut 2", "during the cut 3", "during the cut 4", "after the cut"],
  );
  assertInOrder(la.messages);
  assert.equal(alice.mode, "sse");
  assert.deepEqual(la.errors, []);
});

test("WebSocket -> SSE -> long polling -> WebSocket, messages sent throughout: each once, in order", async (t) => {
  const { courseId } = server.seed;
  const [a, b] = server.seed.users;
  const alice = makeClient(proxy.url, a.token, { fallback: { probeIntervalMs: 500 } });
  t.after(() => {
    alice.close();
    proxy.allowSockets();
    proxy.allowSse();
  });
  const la = record(alice);
  const modes = [];
  alice.on("status", (s) => modes.push(`${alice.mode}:${s}`));
  await alice.chat.join(courseId, { since: 0 });
  assert.equal(alice.status, "online");

  // Bob writes every 50 ms, alice every 200 ms, whatever transport alice is on.
  let writing = true;
  let n = 0;
  const sentByAlice = [];
  const bobWrites = (async () => {
    while (writing) {
      await post(b, `bob ${++n}`);
      await sleep(50);
    }
  })();
  const aliceWrites = (async () => {
    for (let i = 1; writing; i++) {
      sentByAlice.push(alice.chat.send(courseId, `alice ${i} (${alice.mode})`));
      await sleep(200);
    }
  })();
  t.after(() => {
    writing = false;
  });

  await sleep(500);
  proxy.blockSockets();
  await waitFor(() => alice.status === "sse", "alice on SSE", 15_000);
  await sleep(1000);
  proxy.blockSse();
  await waitFor(() => alice.status === "polling", "alice polling", 15_000);
  await sleep(1000);
  proxy.allowSockets(); // SSE stays refused, so the probe's way back is the WebSocket
  await waitFor(() => alice.status === "online", "alice back on the WebSocket", 15_000);
  proxy.allowSse();
  await sleep(500);
  writing = false;
  await Promise.all([bobWrites, aliceWrites]);
  const acks = await Promise.all(sentByAlice);

  const stored = await allMessages(server.url, a.token, courseId);
  await waitFor(() => la.messages.length >= stored.length, `all ${stored.length} stored messages`, 15_000);
  assertInOrder(la.messages, "alice's messages");
  assert.deepEqual(
    la.messages.map((m) => m.seq),
    stored.map((m) => m.seq),
    "every stored message exactly once, in order",
  );
  assert.ok(n >= 20, `bob wrote throughout (${n})`);
  for (const mode of ["sse", "polling"]) {
    assert.ok(
      acks.some((ack) => ack.event.content.endsWith(`(${mode})`)),
      `alice wrote while on ${mode}`,
    );
  }
  const path = modes.filter((m) => /:(online|sse|polling)$/.test(m));
  assert.deepEqual(
    path.filter((m, i) => m !== path[i - 1]),
    ["socket:online", "sse:sse", "polling:polling", "socket:online"],
    `the path of switches: ${modes}`,
  );
  assert.deepEqual(la.errors.filter((e) => e.fatal), [], "no fatal error");
});

test("polling while SSE is refused: once SSE works again, a probe's trial stream takes over", async (t) => {
  const { courseId } = server.seed;
  const [a, b] = server.seed.users;
  proxy.blockSockets();
  proxy.blockSse();
  t.after(() => {
    proxy.allowSockets();
    proxy.allowSse();
  });
  const alice = makeClient(proxy.url, a.token, { fallback: { afterFailures: 2, probeIntervalMs: 500 } });
  t.after(() => alice.close());
  const la = record(alice);
  await alice.chat.join(courseId);
  assert.equal(alice.status, "polling");
  await post(b, "while alice polls");
  await waitFor(() => la.messages.length === 1, "the message over polling");
  proxy.allowSse(); // sockets stay refused
  await waitFor(() => alice.status === "sse", "alice on SSE after a probe", 10_000);
  await post(b, "while alice is on SSE");
  await waitFor(() => la.messages.length === 2, "the message over SSE");
  assert.deepEqual(
    la.messages.map((m) => m.content),
    ["while alice polls", "while alice is on SSE"],
  );
  assert.deepEqual(la.errors, []);
});

test("a token near its expiry: session:expiring makes the SSE stream reopen with a fresh token", async (t) => {
  const { courseId } = server.seed;
  const [, , c] = server.seed.users;
  proxy.blockSockets();
  t.after(() => proxy.allowSockets());
  const tokens = [userToken(c, 20), userToken(c, 3600)];
  let calls = 0;
  const carol = makeClient(proxy.url, () => tokens[Math.min(calls++, 1)], { fallback: { afterFailures: 2 } });
  t.after(() => carol.close());
  const lc = record(carol);
  await carol.chat.join(courseId);
  assert.equal(carol.status, "sse");
  // Less than 60 s left: the server says session:expiring at once.
  await waitFor(() => sseRequests().some((r) => r.headers.authorization === `Bearer ${tokens[1]}`), "an SSE request with the fresh token");
  assert.equal(calls, 2, "one refresh");
  const [b] = server.seed.users;
  await post(b, "to carol after the refresh");
  await waitFor(() => lc.messages.some((m) => m.content === "to carol after the refresh"), "the message after the reopen");
  assert.equal(carol.status, "sse");
  assert.deepEqual(lc.errors, []);
});

test("on SSE, a join the server refuses rejects with its code; the other streams go on", async (t) => {
  const { courseId, professor } = server.seed;
  const [a, b] = server.seed.users;
  const other = await api(server.url, "POST", "/api/courses", { token: professor.token, body: { title: "Not alice's" } });
  assert.equal(other.status, 201, JSON.stringify(other.body));
  proxy.blockSockets();
  t.after(() => proxy.allowSockets());
  const alice = makeClient(proxy.url, a.token, { fallback: { afterFailures: 2 } });
  t.after(() => alice.close());
  const la = record(alice);
  await alice.chat.join(courseId);
  assert.equal(alice.status, "sse");
  await assert.rejects(alice.chat.join(other.body.course.id), { code: "FORBIDDEN" });
  assert.deepEqual(
    la.errors.map((e) => [e.code, e.fatal]),
    [["FORBIDDEN", false]],
    "reported, not fatal",
  );
  await post(b, "after the refused join");
  await waitFor(() => la.messages.some((m) => m.content === "after the refused join"), "the joined course goes on");
  assert.equal(alice.status, "sse");
  const last = new URL(sseRequests().at(-1).url, proxy.url).searchParams.get("streams");
  assert.ok(!last.includes(other.body.course.id), `the refused course is no longer asked for: ${last}`);
});

test("on SSE, a professor's watch carries the course's analysis progress", async (t) => {
  const { courseId, professor } = server.seed;
  const [a] = server.seed.users;
  proxy.blockSockets();
  t.after(() => proxy.allowSockets());
  const prof = makeClient(proxy.url, professor.token, { fallback: { afterFailures: 2 } });
  t.after(() => prof.close());
  const lp = record(prof);
  await waitFor(() => prof.status === "sse", "the professor on SSE");
  assert.deepEqual(await prof.analytics.watch(courseId), { ok: true });
  assert.match(new URL(sseRequests().at(-1).url, proxy.url).searchParams.get("streams"), new RegExp(`watch:${courseId}`));
  await notifyAndReport(server, a, "Watched", 55);
  await waitFor(() => lp.progress.some((p) => p.userId === a.id && p.progress === 55), "the student's progress, watched");
  assert.deepEqual(lp.errors, []);
});

test("end TOKEN_EXPIRED at exp: refreshed once, resumed with the last id, nothing lost", async (t) => {
  const { courseId } = server.seed;
  const [, b, c] = server.seed.users;
  proxy.blockSockets();
  t.after(() => proxy.allowSockets());
  // getToken() has nothing fresher at session:expiring; after the server's end it has.
  const short = userToken(c, 3);
  const fresh = userToken(c, 3600);
  let calls = 0;
  const carol = makeClient(proxy.url, () => (++calls <= 2 ? short : fresh), {
    fallback: { afterFailures: 2, probeIntervalMs: 60_000 },
  });
  t.after(() => carol.close());
  const lc = record(carol);
  await carol.chat.join(courseId);
  assert.equal(carol.status, "sse");
  const before = sseRequests().length;
  await waitFor(() => sseRequests().length > before, "a new SSE request after the end at exp", 15_000);
  const resumed = sseRequests().at(-1);
  assert.equal(resumed.headers.authorization, `Bearer ${fresh}`);
  assert.ok(resumed.headers["last-event-id"], "resumed with the last id");
  await post(b, "to carol after exp");
  await waitFor(() => lc.messages.some((m) => m.content === "to carol after exp"), "live after the refresh");
  assert.equal(carol.status, "sse");
  assert.equal(calls, 3, "initial, session:expiring, the refresh after end");
  assert.deepEqual(lc.errors, []);
});

test("logout elsewhere ends the SSE stream with TOKEN_INVALID: the client stops", async (t) => {
  // Last in this file: the logout refuses every token of this user issued before it.
  const [, , c] = server.seed.users;
  proxy.blockSockets();
  t.after(() => proxy.allowSockets());
  const token = userToken(c);
  let calls = 0;
  const getToken = () => {
    calls += 1;
    return token;
  };
  const carol = makeClient(proxy.url, getToken, { fallback: { afterFailures: 2 } });
  t.after(() => carol.close());
  const lc = record(carol);
  await waitFor(() => carol.status === "sse", "carol on SSE");
  const res = await api(server.url, "POST", "/api/auth/logout", { token });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  await waitFor(() => lc.errors.some((e) => e.fatal), "a fatal error", 10_000);
  assert.deepEqual(
    lc.errors.map((e) => [e.code, e.fatal]),
    [["TOKEN_INVALID", true]],
  );
  assert.equal(carol.status, "offline");
  assert.equal(calls, 1, "an invalid token is not refreshed");
});
