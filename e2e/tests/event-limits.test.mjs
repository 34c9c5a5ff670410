// Per-socket limits (PROTOCOL.md section 2, "Limits"): the event rate
// (SOCKET_EVENTS_PER_SECOND / SOCKET_EVENTS_BURST: RATE_LIMITED acks, then a
// disconnect for a socket that keeps flooding) and the packet size
// (WEBSOCKET_MAX_PAYLOAD: an oversized packet closes that connection only).

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { startServer } from "../lib/server.mjs";
import { Sockets, TRANSPORTS, ack, ackOk, collect, connected, sleep, waitFor } from "../lib/client.mjs";

// PROTOCOL.md section 5: a flooding client is disconnected whole; with packets still
// in flight the client may see the transport go before the disconnect packet.
const FLOOD_REASONS = ["io server disconnect", "transport close", "transport error"];

const MAX_PAYLOAD = 2048;

// Two servers, so that one limit never trips the other: a polling client batches many
// small packets into one HTTP body, and WEBSOCKET_MAX_PAYLOAD bounds that body.
let rateServer; // SOCKET_EVENTS_PER_SECOND=2, SOCKET_EVENTS_BURST=3
let payloadServer; // WEBSOCKET_MAX_PAYLOAD=2048
before(async () => {
  rateServer = await startServer({
    students: 2 * TRANSPORTS.length,
    env: { SOCKET_EVENTS_PER_SECOND: 2, SOCKET_EVENTS_BURST: 3 },
  });
  payloadServer = await startServer({ students: 2 * TRANSPORTS.length, env: { WEBSOCKET_MAX_PAYLOAD: MAX_PAYLOAD } });
});
after(async () => {
  await Promise.all([rateServer?.stop(), payloadServer?.stop()]);
});

TRANSPORTS.forEach((transport, index) => {
  describe(`transport: ${transport.name}`, () => {
    const alice = (server) => server.seed.users[2 * index];
    const bob = (server) => server.seed.users[2 * index + 1];

    test("a burst of acked events yields RATE_LIMITED acks", async (t) => {
      const server = rateServer;
      const sockets = new Sockets(server.url);
      t.after(() => sockets.closeAll());
      const courseId = server.seed.courseId;
      const s = await sockets.connect("/chat", { token: alice(server).token, transport });
      const replies = await Promise.all(Array.from({ length: 7 }, () => ack(s, "leave", { courseId })));
      const ok = replies.filter((r) => r.ok === true);
      const limited = replies.filter((r) => r.ok === false);
      assert.ok(ok.length >= 1 && ok.length <= 4, `about the burst is accepted: ${JSON.stringify(replies)}`);
      assert.ok(limited.length >= 3, `the rest is refused: ${JSON.stringify(replies)}`);
      for (const r of limited) {
        assert.equal(r.error?.code, "RATE_LIMITED", JSON.stringify(r));
        assert.equal(typeof r.error.message, "string");
      }
      assert.equal(s.connected, true, "a short burst does not cost the connection");

      // The bucket refills: after a pause, events are accepted again.
      await sleep(1600);
      const later = await ack(s, "leave", { courseId });
      assert.equal(later.ok, true, JSON.stringify(later));
    });

    test("a socket that keeps flooding is disconnected by the server; others are not", async (t) => {
      const server = rateServer;
      const sockets = new Sockets(server.url);
      t.after(() => sockets.closeAll());
      const courseId = server.seed.courseId;
      const flooder = await sockets.connect("/chat", { token: alice(server).token, transport });
      const sameUser = await sockets.connect("/chat", { token: alice(server).token, transport });
      const gone = waitFor(flooder, "disconnect", { timeout: 8000 });
      const acks = [];
      for (let i = 0; i < 40 && flooder.connected; i++) {
        acks.push(ack(flooder, "leave", { courseId }, 8000).catch((err) => ({ timeout: err.message })));
      }
      const reason = await gone;
      assert.ok(FLOOD_REASONS.includes(reason), `documented reasons only (PROTOCOL.md section 5): ${reason}`);
      // The client is cut while its flood is in flight, so some acks never arrive
      // (RATE_LIMITED acks themselves are checked by the burst test above); those
      // that do are either accepted or RATE_LIMITED.
      const answered = (await Promise.all(acks)).filter((r) => !r.timeout);
      for (const r of answered) {
        assert.ok(r.ok === true || r.error?.code === "RATE_LIMITED", `unexpected ack ${JSON.stringify(r)}`);
      }

      // Per socket: the user's other socket is fine.
      assert.equal(sameUser.connected, true);
      const reply = await ack(sameUser, "leave", { courseId });
      assert.equal(reply.ok, true, JSON.stringify(reply));
    });

    test("flooding disconnects the whole client: every namespace on its connection goes (PROTOCOL.md section 5)", async (t) => {
      const server = rateServer;
      const sockets = new Sockets(server.url);
      t.after(() => sockets.closeAll());
      const courseId = server.seed.courseId;
      const token = bob(server).token;
      const flooder = await sockets.connect("/chat", { token, transport });
      // Another namespace over the flooder's own connection (one Engine.IO client).
      const sibling = flooder.io.socket("/notifications", { auth: { token } });
      sockets.all.add(sibling);
      await connected(sibling);
      const bystander = await sockets.connect("/notifications", { token, transport });

      const gone = waitFor(flooder, "disconnect", { timeout: 8000 });
      const siblingGone = waitFor(sibling, "disconnect", { timeout: 8000 });
      for (let i = 0; i < 40 && flooder.connected; i++) {
        ack(flooder, "leave", { courseId }, 8000).catch(() => {});
      }
      const reasons = [await gone, await siblingGone];
      for (const reason of reasons) {
        assert.ok(FLOOD_REASONS.includes(reason), `documented reasons only: ${reasons}`);
      }
      await sleep(1500); // lets the event bucket refill
      assert.equal(bystander.connected, true, "another client of the same user stays");
      const sync = await ack(bystander, "sync", { since: 0 });
      assert.equal(sync.ok, true, JSON.stringify(sync));
    });

    test(`a packet over WEBSOCKET_MAX_PAYLOAD=${MAX_PAYLOAD} closes that connection; others stay`, async (t) => {
      const server = payloadServer;
      const sockets = new Sockets(server.url);
      t.after(() => sockets.closeAll());
      const courseId = server.seed.courseId;
      const a = await sockets.connect("/chat", { token: alice(server).token, transport });
      const b = await sockets.connect("/chat", { token: bob(server).token, transport });
      if (transport.transports.length > 1 && a.io.engine.transport.name !== "websocket") {
        await waitFor(a.io.engine, "upgrade").catch(() => {}); // either transport must close
      }
      await ackOk(b, "join", { courseId });

      // A packet under the limit is fine.
      const small = await ack(a, "send", { courseId, content: "x".repeat(1000), clientMsgId: "small" });
      assert.equal(small.ok, true, JSON.stringify(small));
      await sleep(1100); // let the event bucket refill

      const bobMessages = [];
      b.on("message", (m) => bobMessages.push(m));
      const gone = waitFor(a, "disconnect", { timeout: 8000 });
      a.emit("send", { courseId, content: "y".repeat(3000), clientMsgId: "too-big" });
      const reason = await gone;
      assert.ok(["transport close", "transport error", "io server disconnect"].includes(reason), `disconnect reason ${reason}`);

      await sleep(300);
      assert.equal(b.connected, true, "another client stays connected");
      assert.deepEqual(bobMessages, [], "the oversized message was not delivered");
      const stillWorks = await ack(b, "send", { courseId, content: "still here", clientMsgId: `after-${index}` });
      assert.equal(stillWorks.ok, true, JSON.stringify(stillWorks));

      // The closed client can connect again.
      const again = await connected(sockets.open("/chat", { token: alice(server).token, transport }));
      assert.equal(again.connected, true);
    });
  });
});
