// Resume without gaps across a server restart (same data dir and port): what was
// sent while the client was away arrives exactly once, in order.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { allMessages, api, assertInOrder, makeClient, record, startProxy, startServer, waitFor } from "./helpers.mjs";

let server;
let proxy;
before(async () => {
  server = await startServer({ students: 2 });
  proxy = await startProxy(server.url);
});
after(async () => {
  await proxy?.close();
  await server?.stop();
});

test("a server restart loses nothing: missed messages and notifications arrive once, in order", async (t) => {
  const { courseId, professor } = server.seed;
  const [a, b] = server.seed.users;
  // Alice reaches the server through the proxy, which keeps her away while the server
  // restarts and Bob writes, so those writes are certainly made in her absence.
  const alice = makeClient(proxy.url, a.token);
  t.after(() => alice.close());
  const la = record(alice);
  await alice.chat.join(courseId);
  const post = (content) =>
    api(server.url, "POST", `/api/realtime/messages/${courseId}`, {
      token: b.token,
      body: { content, clientMsgId: `m-${content}` },
    }).then((res) => assert.equal(res.status, 201, JSON.stringify(res.body)));
  for (let i = 1; i <= 3; i++) await post(`before-${i}`);
  await waitFor(() => la.messages.length === 3, "the first three messages");

  proxy.down();
  await waitFor(() => alice.status !== "online", "alice sees the connection drop");
  await server.restart(); // SIGTERM, then the same binary on the same DATA_DIR and port
  for (let i = 1; i <= 6; i++) await post(`away-${i}`);
  const note = await api(server.url, "POST", "/api/notifications", {
    token: professor.token,
    body: { userId: a.id, notificationType: "SYSTEM_UPDATE", title: "Restarted", message: "while you were away", priority: "LOW" },
  });
  assert.equal(note.status, 201);
  assert.equal(la.messages.length, 3, "nothing reached alice while she was away");
  proxy.up();

  await waitFor(() => la.messages.length >= 9, "the six missed messages", 20_000);
  await waitFor(() => la.notifications.some((n) => n.title === "Restarted"), "the missed notification", 10_000);
  // Live again (sockets or, until the next probe, polling): new messages flow.
  await waitFor(() => alice.status === "online", "alice online again", 20_000);
  for (let i = 1; i <= 2; i++) await post(`after-${i}`);
  await waitFor(() => la.messages.length >= 11, "messages after the return");

  const stored = await allMessages(server.url, a.token, courseId);
  assertInOrder(la.messages, "alice's messages");
  assert.deepEqual(
    la.messages.map((m) => m.content),
    stored.map((m) => m.content),
    "every stored message exactly once, in order",
  );
  assert.equal(la.notifications.filter((n) => n.title === "Restarted").length, 1);
  assert.deepEqual(alice.cursors()[`messages:${courseId}`], stored.at(-1).seq);
});

test("a client restarted with saved cursors resumes where the old one stopped", async (t) => {
  const { courseId } = server.seed;
  const [a, b] = server.seed.users;
  const first = makeClient(server.url, a.token);
  t.after(() => first.close());
  await first.chat.join(courseId);
  const saved = first.cursors();
  first.close();
  for (let i = 1; i <= 3; i++) {
    const res = await api(server.url, "POST", `/api/realtime/messages/${courseId}`, {
      token: b.token,
      body: { content: `gap-${i}`, clientMsgId: `gap-${i}` },
    });
    assert.equal(res.status, 201);
  }
  const second = makeClient(server.url, a.token, { cursors: saved });
  t.after(() => second.close());
  const l2 = record(second);
  await second.chat.join(courseId);
  await waitFor(() => l2.messages.length === 3, "the three messages sent in between");
  assert.deepEqual(
    l2.messages.map((m) => m.content),
    ["gap-1", "gap-2", "gap-3"],
  );
});
