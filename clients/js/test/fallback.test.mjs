// Fallback to HTTP long polling when Socket.IO is refused (a proxy in front of the
// server refuses /socket.io/, both Engine.IO polling and the WebSocket upgrade, and
// the SSE endpoint, and passes the rest of /api), and the return to sockets once they
// work again. SSE, the fallback tried before polling, is in sse.test.mjs.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  allMessages,
  assertInOrder,
  makeClient,
  notifyAndReport,
  record,
  startProxy,
  startServer,
  waitFor,
} from "./helpers.mjs";

let server;
let proxy;
before(async () => {
  server = await startServer({ students: 3 });
  proxy = await startProxy(server.url);
  proxy.blockSse(); // a proxy that does not stream: SSE is refused, so the client polls
});
after(async () => {
  await proxy?.close();
  await server?.stop();
});

test("sockets refused mid-session: polling carries every stream, then sockets come back", async (t) => {
  const { courseId } = server.seed;
  const [a, b] = server.seed.users;
  const alice = makeClient(proxy.url, a.token); // behind the proxy
  const bob = makeClient(server.url, b.token); // direct
  t.after(() => {
    alice.close();
    bob.close();
  });
  const la = record(alice);
  const lb = record(bob);
  await Promise.all([alice.chat.join(courseId), bob.chat.join(courseId)]);
  assert.equal(alice.status, "online");

  await alice.chat.send(courseId, "a1 over the socket");
  await bob.chat.send(courseId, "b1 over the socket");
  await waitFor(() => la.messages.length === 2 && lb.messages.length === 2, "both see both messages");

  // Socket.IO refused from now on; live connections are cut.
  proxy.blockSockets();
  await waitFor(() => alice.status === "polling", "alice polling", 15_000);
  assert.equal(alice.mode, "polling");
  assert.ok(la.statuses.includes("connecting"), `went through connecting: ${la.statuses}`);

  // Receiving while polling: chat, notifications, analysis progress.
  for (const n of [2, 3, 4]) await bob.chat.send(courseId, `b${n} while alice polls`);
  await waitFor(() => la.messages.length === 5, "alice polls bob's messages", 10_000);
  await notifyAndReport(server, a, "Due", 40);
  await waitFor(() => la.notifications.some((n) => n.title === "Due"), "notification while polling", 10_000);
  await waitFor(() => la.progress.some((p) => p.progress === 40), "progress while polling", 10_000);

  // Sending while polling (HTTP fallback endpoints), and reading a notification.
  const sent = await alice.chat.send(courseId, "a2 over HTTP");
  assert.equal(sent.ok, true);
  await waitFor(() => lb.messages.some((m) => m.messageId === sent.event.messageId), "bob gets alice's HTTP message");
  const edited = await alice.chat.edit(courseId, sent.event.messageId, "a2 edited over HTTP");
  assert.equal(edited.event.type, "message_edited");
  const read = await alice.notifications.read(la.notifications.find((n) => n.title === "Due").notificationId);
  assert.equal(read.event.type, "notification_read");
  await waitFor(() => la.notifications.some((n) => n.type === "notification_read"), "read event polled back");
  assert.equal(await alice.chat.typing(courseId), false, "typing is not sent while polling");
  assert.ok(proxy.state.requests.some((r) => r.method === "POST" && r.url.startsWith("/api/realtime/messages/")));
  await waitFor(() => proxy.state.requests.some((r) => r.url === "/api/realtime/ping"), "a probe (ping)", 5000);
  const attempts = () => proxy.state.requests.filter((r) => r.url.startsWith("/socket.io/")).length;
  const before = attempts();
  await waitFor(() => attempts() > before, "a probe's socket attempt", 5000);
  assert.equal(alice.status, "polling", "still polling: the probes' socket attempts are refused");

  // Sockets allowed again: the next probe connects and the client goes back.
  proxy.allowSockets();
  await waitFor(() => alice.status === "online", "alice back online", 10_000);
  assert.equal(alice.mode, "socket");
  await bob.chat.send(courseId, "b5 after the return");
  const last = await alice.chat.send(courseId, "a3 over the socket again");
  await waitFor(() => la.messages.some((m) => m.messageId === last.event.messageId), "alice's own message");
  await waitFor(() => lb.messages.some((m) => m.messageId === last.event.messageId), "bob gets it");
  await waitFor(() => la.messages.some((m) => m.content === "b5 after the return"), "alice gets b5");
  assert.equal(await alice.chat.typing(courseId), true, "typing works over the socket");

  // Exactly once, in order, and the same as the stored stream.
  const stored = await allMessages(server.url, a.token, courseId);
  assertInOrder(la.messages, "alice's messages");
  assert.deepEqual(
    la.messages.map((m) => m.seq),
    stored.map((m) => m.seq),
    "alice saw every stored event once",
  );
  assert.deepEqual(
    lb.messages.map((m) => m.seq),
    stored.map((m) => m.seq),
  );
  assertInOrder(la.notifications, "notifications");
  assert.deepEqual(
    la.errors.filter((e) => e.fatal),
    [],
  );
});

test("a client that starts while sockets are refused polls from the start", async (t) => {
  const { courseId } = server.seed;
  const [, , c] = server.seed.users;
  proxy.blockSockets();
  t.after(() => proxy.allowSockets());
  const carol = makeClient(proxy.url, c.token, { fallback: { afterFailures: 2 } });
  t.after(() => carol.close());
  const lc = record(carol);
  const joined = await carol.chat.join(courseId);
  assert.equal(joined.ok, true);
  assert.equal(carol.status, "polling");
  assert.deepEqual([joined.online, joined.onlineCount], [[], 0], "no presence of its own over polling");
  const page = await carol.chat.presence(courseId);
  assert.deepEqual([page.courseId, typeof page.count, page.hasMore], [courseId, "number", false], "pages over HTTP");
  const ack = await carol.chat.send(courseId, "from carol, polling only");
  await waitFor(() => lc.messages.some((m) => m.messageId === ack.event.messageId), "carol's message polled back");
  assert.equal(lc.messages.length, 1, "joined without since: no history");
});

test("a socket that keeps dropping (maxDrops within dropWindowMs) makes the client poll", async (t) => {
  const { courseId } = server.seed;
  const [a, b] = server.seed.users;
  const alice = makeClient(proxy.url, a.token, { fallback: { maxDrops: 3, dropWindowMs: 30_000, probeIntervalMs: 1500 } });
  const bob = makeClient(server.url, b.token);
  t.after(() => {
    alice.close();
    bob.close();
  });
  const la = record(alice);
  await Promise.all([alice.chat.join(courseId), bob.chat.join(courseId)]);
  const seen = la.messages.length;
  for (let drop = 1; drop <= 3; drop++) {
    await waitFor(() => alice.status === "online", `online before drop ${drop}`, 10_000);
    proxy.cutAll();
    await waitFor(() => alice.status !== "online", `drop ${drop} noticed`, 5000);
    await bob.chat.send(courseId, `during drop ${drop}`);
  }
  await waitFor(() => alice.mode === "polling", "polling after the third drop", 5000);
  const statuses = [...la.statuses];
  assert.equal(statuses.filter((s) => s === "online").length, 3, `three sessions before falling back: ${statuses}`);
  // Sockets work, so a later probe brings the client back.
  await waitFor(() => alice.status === "online", "back online after a probe", 10_000);
  await waitFor(() => la.messages.length === seen + 3, "the three messages sent during the drops");
  assertInOrder(la.messages, "messages across the drops");
  assert.deepEqual(
    la.messages.slice(seen).map((m) => m.content),
    ["during drop 1", "during drop 2", "during drop 3"],
  );
});
