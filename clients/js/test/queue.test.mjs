// The offline queue: writes made while offline wait, go out once a transport is back,
// in order, and a retry carries the same clientMsgId so nothing is stored twice.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { allMessages, makeClient, record, startProxy, startServer, waitFor, within } from "./helpers.mjs";

let server;
before(async () => {
  server = await startServer({ students: 2 });
});
after(() => server?.stop());

test("sends made while the server is down are delivered once after it is back", async (t) => {
  const { courseId } = server.seed;
  const [a, b] = server.seed.users;
  const alice = makeClient(server.url, a.token);
  const bob = makeClient(server.url, b.token);
  t.after(() => {
    alice.close();
    bob.close();
  });
  const la = record(alice);
  const lb = record(bob);
  await Promise.all([alice.chat.join(courseId), bob.chat.join(courseId)]);
  await alice.chat.send(courseId, "before the outage");

  await server.halt();
  await waitFor(() => alice.status !== "online", "alice notices the outage");
  const ids = ["queued-1", "queued-2", "queued-3"];
  const sends = ids.map((id, i) => alice.chat.send(courseId, `offline ${i + 1}`, { clientMsgId: id }));
  // Failed reconnection attempts make alice fall back to polling, which fails too.
  await waitFor(() => alice.status === "offline", "alice offline", 10_000);
  assert.equal(alice.pendingWrites, 3, "the three sends wait in the queue");

  await server.start();
  const acks = await within(Promise.all(sends), 20_000, "the queued sends to be acked");
  assert.equal(alice.pendingWrites, 0);
  assert.deepEqual(
    acks.map((ack) => ack.event.content),
    ["offline 1", "offline 2", "offline 3"],
  );
  const stored = (await allMessages(server.url, a.token, courseId)).filter((m) => m.senderId === a.id);
  assert.deepEqual(
    stored.map((m) => m.content),
    ["before the outage", "offline 1", "offline 2", "offline 3"],
    "each stored once, in the order they were sent",
  );
  assert.deepEqual(
    stored.slice(1).map((m) => m.messageId),
    acks.map((ack) => ack.event.messageId),
  );
  // Everyone (the sender included) receives each exactly once.
  await waitFor(() => lb.messages.length === 4 && la.messages.length === 4, "all four messages on both clients", 15_000);
  assert.deepEqual(
    lb.messages.map((m) => m.content),
    stored.map((m) => m.content),
  );
  assert.deepEqual(
    la.messages.map((m) => m.content),
    stored.map((m) => m.content),
  );
});

test("an attempt whose answer is lost is retried with the same clientMsgId: one stored message", async (t) => {
  const { courseId } = server.seed;
  const [a] = server.seed.users;
  const proxy = await startProxy(server.url);
  t.after(() => proxy.close());
  proxy.state.blockSockets = true; // HTTP fallback: every write is a POST we can see
  proxy.state.blockSse = true; // and polling rather than SSE
  // The server handles the first POST of a message, then the proxy cuts the connection
  // instead of answering: the client cannot know whether it was stored.
  let cut = 0;
  proxy.state.dropAnswer = (req) => req.method === "POST" && req.url.startsWith("/api/realtime/messages/") && cut++ === 0;
  const alice = makeClient(proxy.url, a.token, { fallback: { afterFailures: 1 } });
  t.after(() => alice.close());
  const la = record(alice);
  await alice.chat.join(courseId);
  assert.equal(alice.status, "polling");

  const ack = await within(alice.chat.send(courseId, "answer lost once"), 15_000, "the retried send");
  const posts = proxy.state.requests.filter((r) => r.method === "POST" && r.url.startsWith("/api/realtime/messages/"));
  assert.equal(posts.length, 2, "one lost answer, one retry");
  const [first, retry] = posts.map((p) => JSON.parse(p.body));
  assert.equal(first.clientMsgId, retry.clientMsgId, "the retry carries the same clientMsgId");
  const stored = (await allMessages(server.url, a.token, courseId)).filter((m) => m.content === "answer lost once");
  assert.equal(stored.length, 1, "stored once");
  assert.equal(ack.event.messageId, stored[0].messageId, "the retry answered with the original event");
  await waitFor(() => la.messages.some((m) => m.messageId === ack.event.messageId), "the message polled back");
  assert.equal(la.messages.filter((m) => m.content === "answer lost once").length, 1);
});

test("a refused write is rejected with the contract's code and the queue goes on", async (t) => {
  const { courseId } = server.seed;
  const [a] = server.seed.users;
  const alice = makeClient(server.url, a.token);
  t.after(() => alice.close());
  await alice.chat.join(courseId);
  const unknownCourse = "00000000-0000-4000-8000-00000000abcd";
  const refused = alice.chat.send(unknownCourse, "nowhere");
  const invalid = alice.chat.send(courseId, "   ");
  const fine = alice.chat.send(courseId, "after the refusals");
  await assert.rejects(refused, (err) => err.code === "NOT_FOUND" || err.code === "FORBIDDEN");
  await assert.rejects(invalid, { code: "VALIDATION_FAILED" });
  assert.equal((await fine).ok, true);
  await assert.rejects(alice.chat.edit(courseId, "no-such-message", "x"), (err) => ["NOT_FOUND", "VALIDATION_FAILED"].includes(err.code));
});
