// Per-event validation and authorisation on /chat (PROTOCOL.md sections 2 and 3):
// acked failures answer {ok: false, error: {code, message}}; unknown events and
// failures of events sent without an ack get an `error` event {code, message}.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { startServer } from "../lib/server.mjs";
import { Sockets, TRANSPORTS, ack, ackOk, api, collect, sleep, waitFor } from "../lib/client.mjs";

const CODES = [
  "VALIDATION_FAILED", "INVALID_CREDENTIALS", "TOKEN_MISSING", "TOKEN_INVALID", "TOKEN_EXPIRED", "FORBIDDEN",
  "NOT_FOUND", "CONFLICT", "PAYLOAD_TOO_LARGE", "RATE_LIMITED", "UNAVAILABLE", "INTERNAL",
];

let server;
let foreignCourse; // a course the students are not enrolled in
before(async () => {
  // Many acked events in a row: keep the per-socket event limit (tested elsewhere) out of the way.
  server = await startServer({ students: TRANSPORTS.length, env: { SOCKET_EVENTS_BURST: 200 } });
  const created = await api(server.url, "POST", "/api/courses", {
    token: server.seed.professor.token,
    body: { title: "Not your course" },
  });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  assert.equal(created.body.course.professorId, server.seed.professor.id);
  foreignCourse = created.body.course.id;
});
after(async () => {
  await server?.stop();
});

function assertRefused(reply, code, what) {
  assert.equal(reply?.ok, false, `${what}: ${JSON.stringify(reply)}`);
  assert.equal(reply.error?.code, code, `${what}: ${JSON.stringify(reply)}`);
  assert.equal(typeof reply.error.message, "string", `${what}: error.message is a string`);
  assert.ok(reply.error.message.length > 0, `${what}: error.message is not empty`);
}

function assertErrorEvent(payload, code, what) {
  assert.equal(payload?.code, code, `${what}: ${JSON.stringify(payload)}`);
  assert.equal(typeof payload.message, "string", `${what}: message is a string`);
}

TRANSPORTS.forEach((transport, index) => {
  describe(`transport: ${transport.name}`, () => {
    const user = () => server.seed.users[index];

    test("acked events with bad payloads answer {ok: false, error: {code, message}}", async (t) => {
      const sockets = new Sockets(server.url);
      t.after(() => sockets.closeAll());
      const courseId = server.seed.courseId;
      const s = await sockets.connect("/chat", { token: user().token, transport });
      await ackOk(s, "join", { courseId });
      const messages = collect(s, "message");

      const cases = [
        ["send", { courseId, content: "", clientMsgId: "v-1" }, "VALIDATION_FAILED", "empty content"],
        ["send", { courseId, content: "   \n\t ", clientMsgId: "v-2" }, "VALIDATION_FAILED", "blank content"],
        ["send", { courseId, content: "x".repeat(4001), clientMsgId: "v-3" }, "VALIDATION_FAILED", "4,001 characters"],
        ["send", { courseId, content: "bell\u0007", clientMsgId: "v-4" }, "VALIDATION_FAILED", "control character"],
        ["send", { courseId, content: "hi", clientMsgId: "has space" }, "VALIDATION_FAILED", "clientMsgId with a space"],
        ["send", { courseId, content: "hi", clientMsgId: "" }, "VALIDATION_FAILED", "empty clientMsgId"],
        ["send", { courseId, content: "hi", clientMsgId: "a".repeat(65) }, "VALIDATION_FAILED", "65-char clientMsgId"],
        ["send", { courseId, content: "hi", clientMsgId: "ünïcode" }, "VALIDATION_FAILED", "non-ASCII clientMsgId"],
        ["send", { courseId, content: "hi", clientMsgId: 42 }, "VALIDATION_FAILED", "numeric clientMsgId"],
        ["send", { courseId, content: "hi" }, "VALIDATION_FAILED", "missing clientMsgId"],
        ["send", { courseId, content: "hi", clientMsgId: "v-5", extra: 1 }, "VALIDATION_FAILED", "unknown field"],
        ["send", { courseId, content: "hi", clientMsgId: "v-6", senderId: randomUUID() }, "VALIDATION_FAILED", "senderId from the client"],
        ["send", { courseId: "not-a-uuid", content: "hi", clientMsgId: "v-7" }, "VALIDATION_FAILED", "bad courseId"],
        ["send", "just a string", "VALIDATION_FAILED", "payload not an object"],
        ["send", { courseId: foreignCourse, content: "hi", clientMsgId: "v-8" }, "FORBIDDEN", "not a member"],
        ["send", { courseId: randomUUID(), content: "hi", clientMsgId: "v-9" }, "NOT_FOUND", "unknown course"],
        ["join", { courseId: foreignCourse }, "FORBIDDEN", "join a course of which one is not a member"],
        ["join", { courseId: randomUUID() }, "NOT_FOUND", "join an unknown course"],
        ["join", { courseId, since: "yesterday" }, "VALIDATION_FAILED", "join with a non-numeric since"],
        ["join", { courseId, since: -1 }, "VALIDATION_FAILED", "join with a negative since"],
        ["join", {}, "VALIDATION_FAILED", "join without courseId"],
        ["edit", { courseId, messageId: "nope", content: "x" }, "VALIDATION_FAILED", "edit with a bad messageId"],
        ["delete", { courseId: foreignCourse, messageId: randomUUID() }, "FORBIDDEN", "delete in a foreign course"],
        ["typing", { courseId: foreignCourse }, "FORBIDDEN", "typing in a foreign course"],
      ];
      for (const [event, payload, code, what] of cases) {
        assertRefused(await ack(s, event, payload), code, `${event}: ${what}`);
      }
      // A valid send still works on the same socket, and nothing refused was stored.
      const ok = await ack(s, "send", { courseId, content: "valid", clientMsgId: "v-ok" });
      assert.equal(ok.ok, true, JSON.stringify(ok));
      await sleep(200);
      assert.ok(messages.every((m) => m.content === "valid"), `only the valid message was delivered: ${JSON.stringify(messages)}`);
    });

    test("an unknown event gets an `error` event (and a refusing ack when one is asked for)", async (t) => {
      const sockets = new Sockets(server.url);
      t.after(() => sockets.closeAll());
      const s = await sockets.connect("/chat", { token: user().token, transport });

      let errorEvent = waitFor(s, "error");
      s.emit("no-such-event", { x: 1 });
      const payload = await errorEvent;
      assert.ok(CODES.includes(payload.code), `a contract code: ${JSON.stringify(payload)}`);
      assert.equal(typeof payload.message, "string");

      errorEvent = waitFor(s, "error");
      const reply = await ack(s, "no-such-event", { x: 1 });
      assert.equal(reply.ok, false, JSON.stringify(reply));
      assert.ok(CODES.includes(reply.error?.code), JSON.stringify(reply));
      assert.equal(typeof reply.error.message, "string");
      const payload2 = await errorEvent;
      assert.ok(CODES.includes(payload2.code), JSON.stringify(payload2));
      assert.equal(s.connected, true, "the socket stays connected");
    });

    test("a failing event sent without an ack gets an `error` event {code, message}", async (t) => {
      const sockets = new Sockets(server.url);
      t.after(() => sockets.closeAll());
      const courseId = server.seed.courseId;
      const s = await sockets.connect("/chat", { token: user().token, transport });

      let errorEvent = waitFor(s, "error");
      s.emit("send", { courseId, content: "", clientMsgId: "noack-bad" });
      assertErrorEvent(await errorEvent, "VALIDATION_FAILED", "empty content without ack");

      errorEvent = waitFor(s, "error");
      s.emit("send", { courseId, content: "hi", clientMsgId: "noack-unknown", bogus: true });
      assertErrorEvent(await errorEvent, "VALIDATION_FAILED", "unknown field without ack");

      errorEvent = waitFor(s, "error");
      s.emit("send", { courseId: foreignCourse, content: "hi", clientMsgId: "noack-foreign" });
      assertErrorEvent(await errorEvent, "FORBIDDEN", "non-member course without ack");

      errorEvent = waitFor(s, "error");
      s.emit("join", { courseId: randomUUID() });
      assertErrorEvent(await errorEvent, "NOT_FOUND", "unknown course without ack");

      // A successful event without an ack produces no `error` event.
      const errors = collect(s, "error");
      s.emit("join", { courseId });
      s.emit("send", { courseId, content: "fine", clientMsgId: "noack-fine" });
      await sleep(500);
      assert.deepEqual(errors, []);
      assert.equal(s.connected, true);
    });
  });
});
