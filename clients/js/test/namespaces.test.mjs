// Every namespace through the client API over sockets: chat edit/delete, presence and
// typing; notifications read; analytics progress and watch; collaboration.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { api, assertInOrder, makeClient, record, serviceToken, startServer, waitFor } from "./helpers.mjs";

let server;
before(async () => {
  server = await startServer({ students: 2 });
});
after(() => server?.stop());

function pair(t) {
  const [a, b] = server.seed.users;
  const alice = makeClient(server.url, a.token);
  const bob = makeClient(server.url, b.token);
  t.after(() => {
    alice.close();
    bob.close();
  });
  return { a, b, alice, bob, la: record(alice), lb: record(bob) };
}

test("chat: send, edit, delete, presence, typing, and refusals carry the contract's code", async (t) => {
  const { courseId } = server.seed;
  const { a, b, alice, bob, lb } = pair(t);
  const presence = [];
  const typing = [];
  const rosters = [];
  alice.chat.on("presence", (p) => presence.push(p));
  alice.chat.on("roster", (r) => rosters.push(r));
  bob.chat.on("typing", (e) => typing.push(e));
  const joined = await alice.chat.join(courseId);
  assert.deepEqual([joined.online, joined.onlineCount], [[a.id], 1]);
  assert.deepEqual(rosters, [{ courseId, online: [a.id], count: 1 }]);
  await bob.chat.join(courseId);
  await waitFor(() => presence.some((p) => p.online?.includes(b.id)), "bob's presence");
  assert.equal(presence.at(-1).count, 2);
  const page = await alice.chat.presence(courseId, { limit: 1 });
  assert.deepEqual([page.courseId, page.count, page.online.length, page.hasMore], [courseId, 2, 1, true]);
  const rest = await alice.chat.presence(courseId, { after: page.online[0] });
  assert.deepEqual([...page.online, ...rest.online].sort(), [a.id, b.id].sort());
  assert.equal(rest.hasMore, false);

  const sent = await alice.chat.send(courseId, "first draft", { channelId: "general" });
  assert.equal(sent.event.type, "message_sent");
  assert.equal(sent.event.channelId, "general");
  const edited = await alice.chat.edit(courseId, sent.event.messageId, "final text");
  assert.equal(edited.event.type, "message_edited");
  const deleted = await alice.chat.delete(courseId, sent.event.messageId);
  assert.equal(deleted.event.type, "message_deleted");
  await waitFor(() => lb.messages.length === 3, "bob sees sent, edited, deleted");
  assert.deepEqual(
    lb.messages.map((m) => m.type),
    ["message_sent", "message_edited", "message_deleted"],
  );
  assertInOrder(lb.messages);
  await assert.rejects(alice.chat.edit(courseId, sent.event.messageId, "again"), { code: "NOT_FOUND" });

  assert.equal(await alice.chat.typing(courseId), true);
  await waitFor(() => typing.some((e) => e.userId === a.id), "bob sees alice typing");
  assert.equal(await alice.chat.typing(courseId), false, "throttled: one per user per course per interval");

  await bob.chat.leave(courseId);
  await waitFor(() => presence.some((p) => p.offline?.includes(b.id)), "bob offline");
  await assert.rejects(alice.chat.join("00000000-0000-4000-8000-000000000000"), { code: "NOT_FOUND" });
});

test("notifications: delivered live, read over the socket, the read event reaches the user", async (t) => {
  const { professor } = server.seed;
  const { a, alice, la } = pair(t);
  await waitFor(() => alice.status === "online", "online");
  const before = la.notifications.length;
  const res = await api(server.url, "POST", "/api/notifications", {
    token: professor.token,
    body: { userId: a.id, notificationType: "PEER_CONNECTION", title: "Hi", message: "Bob wants to connect", priority: "NORMAL" },
  });
  assert.equal(res.status, 201);
  await waitFor(() => la.notifications.length === before + 1, "the notification");
  const note = la.notifications.at(-1);
  const read = await alice.notifications.read(note.notificationId);
  assert.equal(read.event.type, "notification_read");
  await waitFor(() => la.notifications.at(-1).type === "notification_read", "the read event");
  const again = await alice.notifications.read(note.notificationId);
  assert.equal(again.event.seq, read.event.seq, "reading twice answers the original event");
  assertInOrder(la.notifications);
});

test("analytics: the owner gets progress; the professor watching the course gets it too", async (t) => {
  const { courseId, professor } = server.seed;
  const { a, alice, la } = pair(t);
  const prof = makeClient(server.url, professor.token);
  t.after(() => prof.close());
  const lp = record(prof);
  await waitFor(() => prof.status === "online", "professor online");
  assert.deepEqual(await prof.analytics.watch(courseId), { ok: true });
  // Offline, `watch` only records the wish (sent on connect, refusals as `error`):
  // the refusal comes back in the answer once Alice's socket is up.
  await waitFor(() => alice.status === "online", "alice online");
  await assert.rejects(alice.analytics.watch(courseId), { code: "FORBIDDEN" });
  const { body } = await api(server.url, "POST", "/api/analyses", { token: a.token, body: { courseId, input: { x: 1 } } });
  for (const progress of [30, 100]) {
    const res = await api(server.url, "POST", `/api/analyses/${body.analysisId}/progress`, {
      token: serviceToken(),
      body: { progress, data: null },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
  }
  await waitFor(() => la.progress.length === 2 && lp.progress.length === 2, "progress on both");
  assert.deepEqual(
    la.progress.map((p) => p.type),
    ["analysis_progress", "analysis_complete"],
  );
  await waitFor(() => la.notifications.some((n) => n.notificationType === "CNN_ANALYSIS_COMPLETE"), "completion notification");
});

test("collaboration: join, annotate, cursor relay", async (t) => {
  const { courseId } = server.seed;
  const { a, alice, bob, lb } = pair(t);
  const cursors = [];
  bob.collaboration.on("cursor", (c) => cursors.push(c));
  await Promise.all([alice.collaboration.join(courseId), bob.collaboration.join(courseId)]);
  const ack = await alice.collaboration.annotate(courseId, "doc-1.pdf", { page: 2, text: "see here" });
  assert.equal(ack.event.documentId, "doc-1.pdf");
  await waitFor(() => lb.annotations.some((x) => x.annotationId === ack.event.annotationId), "bob gets the annotation");
  assert.equal(await alice.collaboration.cursor(courseId, "doc-1.pdf", { x: 10, y: 20 }), true);
  await waitFor(() => cursors.length === 1, "bob gets the cursor");
  assert.deepEqual(cursors[0], { courseId, documentId: "doc-1.pdf", userId: a.id, position: { x: 10, y: 20 } });
  await assert.rejects(alice.collaboration.annotate(courseId, "bad id with spaces", {}), { code: "VALIDATION_FAILED" });
});
