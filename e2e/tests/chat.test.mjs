// /chat end to end with two users over every transport (PROTOCOL.md section 3):
// join, presence, send (ack + delivery), idempotent retries, edit, delete, typing,
// replay with `since`, and the cursor across a server restart.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { startServer } from "../lib/server.mjs";
import { Sockets, TRANSPORTS, ack, ackOk, close, collect, createCourse, sleep, staysQuiet, waitFor } from "../lib/client.mjs";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

let server;
before(async () => {
  // A short presence window keeps the presence steps below apart and quick.
  server = await startServer({ students: 2 * TRANSPORTS.length + 2, env: { PRESENCE_WINDOW: 200 } });
});
after(async () => {
  await server?.stop();
});

let courseCounter = 0;
/** A fresh course (its own message stream) with the given members. */
const freshCourse = (...members) => createCourse(server, `chat e2e ${++courseCounter}`, members);

function assertMessageEvent(event, { type, courseId, senderId, content }) {
  assert.equal(event.type, type, JSON.stringify(event));
  assert.ok(Number.isSafeInteger(event.seq) && event.seq > 0, `seq is a positive integer: ${event.seq}`);
  assert.match(event.messageId, UUID);
  assert.equal(event.courseId, courseId);
  assert.equal(event.senderId, senderId);
  if (content !== undefined) assert.equal(event.content, content);
  assert.match(event.timestamp, TIMESTAMP);
}

TRANSPORTS.forEach((transport, index) => {
  describe(`transport: ${transport.name}`, () => {
    // Each transport has its own pair of users, so presence is never disturbed by
    // sockets of another transport's tests that are still closing.
    const alice = () => server.seed.users[2 * index];
    const bob = () => server.seed.users[2 * index + 1];

    test("join answers {ok, courseId, cursor, missed: [], hasMore: false, online, onlineCount}", async (t) => {
      const sockets = new Sockets(server.url);
      t.after(() => sockets.closeAll());
      const courseId = await freshCourse(alice(), bob());
      const a = await sockets.connect("/chat", { token: alice().token, transport });
      const joined = await ack(a, "join", { courseId });
      assert.deepEqual(joined, {
        ok: true, courseId, cursor: 0, missed: [], hasMore: false, online: [alice().id], onlineCount: 1,
      });

      const b = await sockets.connect("/chat", { token: bob().token, transport });
      const joinedB = await ack(b, "join", { courseId });
      assert.equal(joinedB.ok, true, JSON.stringify(joinedB));
      const both = [alice().id, bob().id].sort();
      assert.deepEqual([joinedB.online, joinedB.onlineCount], [both, 2], "ordered by id");

      const first = await ack(a, "presence", { courseId, limit: 1 });
      assert.deepEqual(first, { ok: true, courseId, count: 2, online: [both[0]], hasMore: true });
      const rest = await ack(a, "presence", { courseId, after: both[0] });
      assert.deepEqual(rest, { ok: true, courseId, count: 2, online: [both[1]], hasMore: false });
    });

    test("presence: coalesced diffs on the first join, on leave and on the last disconnect", async (t) => {
      const sockets = new Sockets(server.url);
      t.after(() => sockets.closeAll());
      const courseId = await freshCourse(alice(), bob());
      const a = await sockets.connect("/chat", { token: alice().token, transport });
      const own = waitFor(a, "presence", { what: "Alice's own arrival" });
      await ackOk(a, "join", { courseId });
      assert.deepEqual(await own, { courseId, online: [alice().id], offline: [], count: 1 });
      const presence = collect(a, "presence");

      // Bob joins: Alice sees him online.
      const b1 = await sockets.connect("/chat", { token: bob().token, transport });
      let next = waitFor(a, "presence", { what: "Bob's first join" });
      await ackOk(b1, "join", { courseId });
      assert.deepEqual(await next, { courseId, online: [bob().id], offline: [], count: 2 });

      // Bob leaves: offline.
      next = waitFor(a, "presence", { what: "Bob's leave" });
      await ackOk(b1, "leave", { courseId });
      assert.deepEqual(await next, { courseId, online: [], offline: [bob().id], count: 1 });

      // Bob joins again: online.
      next = waitFor(a, "presence", { what: "Bob's second join" });
      await ackOk(b1, "join", { courseId });
      assert.deepEqual(await next, { courseId, online: [bob().id], offline: [], count: 2 });

      // A second socket of Bob joining is not a new "online"; closing one of the two
      // is not "offline"; closing the last one is.
      const b2 = await sockets.connect("/chat", { token: bob().token, transport });
      await ackOk(b2, "join", { courseId });
      close(b1);
      assert.equal(await staysQuiet(a, "presence", 700), true, `no presence while Bob has a socket left: ${JSON.stringify(presence)}`);
      next = waitFor(a, "presence", { what: "Bob's last socket closed" });
      close(b2);
      assert.deepEqual(await next, { courseId, online: [], offline: [bob().id], count: 1 });
      assert.deepEqual(
        presence.map((p) => p.count),
        [2, 1, 2, 1],
      );
    });

    test("send: ack {ok, event}; the other member receives the same event; content trimmed", async (t) => {
      const sockets = new Sockets(server.url);
      t.after(() => sockets.closeAll());
      const courseId = await freshCourse(alice(), bob());
      const a = await sockets.connect("/chat", { token: alice().token, transport });
      const b = await sockets.connect("/chat", { token: bob().token, transport });
      await ackOk(a, "join", { courseId });
      await ackOk(b, "join", { courseId });

      const received = waitFor(b, "message");
      const reply = await ack(a, "send", { courseId, content: "  Hello, Bob!\n ", clientMsgId: "msg-1" });
      assert.equal(reply.ok, true, JSON.stringify(reply));
      assert.deepEqual(Object.keys(reply).sort(), ["event", "ok"]);
      assertMessageEvent(reply.event, { type: "message_sent", courseId, senderId: alice().id, content: "Hello, Bob!" });
      assert.deepEqual(await received, reply.event);

      // The same clientMsgId again (different content): the original event, no new delivery.
      const bobMessages = collect(b, "message");
      const retry = await ack(a, "send", { courseId, content: "something else", clientMsgId: "msg-1" });
      assert.deepEqual(retry, { ok: true, event: reply.event });
      await sleep(600);
      assert.deepEqual(bobMessages, [], "a retried send is not delivered again");

      // A new clientMsgId is a new message with a later seq.
      const second = waitFor(b, "message");
      const reply2 = await ack(a, "send", { courseId, content: "second", clientMsgId: "msg-2" });
      assert.equal(reply2.ok, true, JSON.stringify(reply2));
      assert.ok(reply2.event.seq > reply.event.seq);
      assert.notEqual(reply2.event.messageId, reply.event.messageId);
      assert.deepEqual(await second, reply2.event);

      // Bob answers; Alice receives it with Bob as sender (from his token).
      const toAlice = waitFor(a, "message", { filter: (m) => m.senderId === bob().id });
      const answer = await ack(b, "send", { courseId, content: "Hi Alice", clientMsgId: "msg-1" });
      assert.equal(answer.ok, true, JSON.stringify(answer));
      assertMessageEvent(answer.event, { type: "message_sent", courseId, senderId: bob().id, content: "Hi Alice" });
      assert.notEqual(answer.event.messageId, reply.event.messageId, "clientMsgId is per user");
      assert.deepEqual(await toAlice, answer.event);
    });

    test("a send without an ack callback still runs and is delivered", async (t) => {
      const sockets = new Sockets(server.url);
      t.after(() => sockets.closeAll());
      const courseId = await freshCourse(alice(), bob());
      const a = await sockets.connect("/chat", { token: alice().token, transport });
      const b = await sockets.connect("/chat", { token: bob().token, transport });
      await ackOk(a, "join", { courseId });
      await ackOk(b, "join", { courseId });
      const errors = collect(a, "error");
      const received = waitFor(b, "message");
      a.emit("send", { courseId, content: "no ack", clientMsgId: "noack-1" });
      const event = await received;
      assertMessageEvent(event, { type: "message_sent", courseId, senderId: alice().id, content: "no ack" });
      assert.deepEqual(errors, []);
    });

    test("edit and delete are new events with later seq; the room receives them", async (t) => {
      const sockets = new Sockets(server.url);
      t.after(() => sockets.closeAll());
      const courseId = await freshCourse(alice(), bob());
      const a = await sockets.connect("/chat", { token: alice().token, transport });
      const b = await sockets.connect("/chat", { token: bob().token, transport });
      await ackOk(a, "join", { courseId });
      await ackOk(b, "join", { courseId });

      const sent = await ack(a, "send", { courseId, content: "first draft", clientMsgId: "edit-me" });
      assert.equal(sent.ok, true, JSON.stringify(sent));
      const { messageId, seq } = sent.event;

      let received = waitFor(b, "message", { filter: (m) => m.type === "message_edited" });
      const edited = await ack(a, "edit", { courseId, messageId, content: "  final text " });
      assert.equal(edited.ok, true, JSON.stringify(edited));
      assertMessageEvent(edited.event, { type: "message_edited", courseId, senderId: alice().id, content: "final text" });
      assert.equal(edited.event.messageId, messageId, "names the original message");
      assert.ok(edited.event.seq > seq, "a later seq");
      assert.deepEqual(await received, edited.event);

      // Only the sender may edit.
      const notMine = await ack(b, "edit", { courseId, messageId, content: "hijack" });
      assert.equal(notMine.ok, false, JSON.stringify(notMine));
      assert.equal(notMine.error.code, "FORBIDDEN");

      received = waitFor(b, "message", { filter: (m) => m.type === "message_deleted" });
      const deleted = await ack(a, "delete", { courseId, messageId });
      assert.equal(deleted.ok, true, JSON.stringify(deleted));
      assertMessageEvent(deleted.event, { type: "message_deleted", courseId, senderId: alice().id });
      assert.equal(deleted.event.messageId, messageId);
      assert.ok(deleted.event.seq > edited.event.seq, "a later seq");
      assert.deepEqual(await received, deleted.event);

      // Unknown messages.
      const unknown = "00000000-0000-4000-8000-000000000000";
      for (const [event, payload] of [
        ["edit", { courseId, messageId: unknown, content: "x" }],
        ["delete", { courseId, messageId: unknown }],
      ]) {
        const r = await ack(a, event, payload);
        assert.equal(r.ok, false, `${event}: ${JSON.stringify(r)}`);
        assert.equal(r.error.code, "NOT_FOUND", `${event}: ${JSON.stringify(r)}`);
      }
    });

    test("typing reaches the other member but not the sender", async (t) => {
      const sockets = new Sockets(server.url);
      t.after(() => sockets.closeAll());
      const courseId = await freshCourse(alice(), bob());
      const a = await sockets.connect("/chat", { token: alice().token, transport });
      const b = await sockets.connect("/chat", { token: bob().token, transport });
      await ackOk(a, "join", { courseId });
      await ackOk(b, "join", { courseId });
      const toSender = collect(a, "typing");
      const received = waitFor(b, "typing");
      const reply = await ack(a, "typing", { courseId });
      assert.deepEqual(reply, { ok: true, relayed: true });
      assert.deepEqual(await received, { courseId, userId: alice().id });
      await sleep(500);
      assert.deepEqual(toSender, [], "the sender does not get its own typing");
    });

    test("join with since replays missed messages in order", async (t) => {
      const sockets = new Sockets(server.url);
      t.after(() => sockets.closeAll());
      const courseId = await freshCourse(alice(), bob());
      const a = await sockets.connect("/chat", { token: alice().token, transport });
      const sent = [];
      for (let i = 1; i <= 5; i++) {
        const r = await ack(a, "send", { courseId, content: `message ${i}`, clientMsgId: `replay-${i}` });
        assert.equal(r.ok, true, JSON.stringify(r));
        sent.push(r.event);
      }
      const edited = await ack(a, "edit", { courseId, messageId: sent[0].messageId, content: "message 1 (edited)" });
      assert.equal(edited.ok, true, JSON.stringify(edited));
      const all = [...sent, edited.event];

      const b = await sockets.connect("/chat", { token: bob().token, transport });
      const full = await ack(b, "join", { courseId, since: 0 });
      assert.equal(full.ok, true, JSON.stringify(full));
      assert.deepEqual(full.missed, all, "every event, oldest first, exactly as acked");
      assert.equal(full.cursor, edited.event.seq);
      assert.equal(full.hasMore, false);
      assert.equal(full.courseId, courseId);

      // From a cursor in the middle: only what follows it.
      const b2 = await sockets.connect("/chat", { token: bob().token, transport });
      const partial = await ack(b2, "join", { courseId, since: sent[2].seq });
      assert.equal(partial.ok, true, JSON.stringify(partial));
      assert.deepEqual(partial.missed, all.slice(3));
      assert.equal(partial.cursor, edited.event.seq);

      // From the head: nothing missed, the cursor stays.
      const b3 = await sockets.connect("/chat", { token: bob().token, transport });
      const atHead = await ack(b3, "join", { courseId, since: edited.event.seq });
      assert.deepEqual(
        { ok: atHead.ok, missed: atHead.missed, cursor: atHead.cursor, hasMore: atHead.hasMore },
        { ok: true, missed: [], cursor: edited.event.seq, hasMore: false },
      );

      // Without since: no replay, the cursor is the head.
      const b4 = await sockets.connect("/chat", { token: bob().token, transport });
      const noSince = await ack(b4, "join", { courseId });
      assert.deepEqual(
        { ok: noSince.ok, missed: noSince.missed, cursor: noSince.cursor, hasMore: noSince.hasMore },
        { ok: true, missed: [], cursor: edited.event.seq, hasMore: false },
      );
    });
  });
});

test("the cursor survives a server restart: join with since after restart replays exactly the rest", async (t) => {
  const sockets = new Sockets(server.url);
  t.after(() => sockets.closeAll());
  const [alice, bob] = server.seed.users.slice(-2);
  const courseId = await freshCourse(alice, bob);
  const a = await sockets.connect("/chat", { token: alice.token, transport: TRANSPORTS[0] });
  const before = [];
  for (let i = 1; i <= 3; i++) {
    const r = await ack(a, "send", { courseId, content: `before restart ${i}`, clientMsgId: `restart-${i}` });
    assert.equal(r.ok, true, JSON.stringify(r));
    before.push(r.event);
  }
  const disconnected = waitFor(a, "disconnect", { timeout: 15_000 });
  await server.restart();
  await disconnected;

  const b = await sockets.connect("/chat", { token: bob.token, transport: TRANSPORTS[2] });
  const joined = await ack(b, "join", { courseId, since: before[0].seq });
  assert.equal(joined.ok, true, JSON.stringify(joined));
  assert.deepEqual(joined.missed, before.slice(1));
  const a2 = await sockets.connect("/chat", { token: alice.token, transport: TRANSPORTS[1] });
  const retry = await ack(a2, "send", { courseId, content: "dup", clientMsgId: "restart-3" });
  assert.deepEqual(retry, { ok: true, event: before[2] }, "clientMsgId dedup survives the restart");
});
