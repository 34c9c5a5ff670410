// Connecting with the official client: every namespace, both ways of passing the
// token (auth payload and Authorization header), every transport set-up, the allowed
// Origin, the polling -> websocket upgrade, and HTTP working beside live sockets.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { startServer, ALLOWED_ORIGIN } from "../lib/server.mjs";
import { NAMESPACES, Sockets, TRANSPORTS, ack, api, close, connected, waitFor } from "../lib/client.mjs";

let server;
before(async () => {
  // Many handshakes in a short time: keep the per-IP handshake limit out of the way.
  server = await startServer({ students: 4, env: { SOCKET_CONNECTS_PER_SECOND_PER_IP: 5000 } });
});
after(async () => {
  await server?.stop();
});

for (const transport of TRANSPORTS) {
  describe(`transport: ${transport.name}`, () => {
    for (const namespace of NAMESPACES) {
      test(`connects to ${namespace} with auth: {token}`, async (t) => {
        const sockets = new Sockets(server.url);
        t.after(() => sockets.closeAll());
        const socket = await sockets.connect(namespace, { token: server.seed.users[0].token, transport });
        assert.equal(socket.connected, true);
        assert.equal(typeof socket.id, "string");
      });

      test(`connects to ${namespace} with an Authorization: Bearer header`, async (t) => {
        const sockets = new Sockets(server.url);
        t.after(() => sockets.closeAll());
        const socket = await sockets.connect(namespace, {
          transport,
          extraHeaders: { Authorization: `Bearer ${server.seed.users[1].token}` },
        });
        assert.equal(socket.connected, true);
        // The socket is usable: an acked event round-trips.
        const reply = await ack(socket, "reauth", { token: server.seed.users[1].token });
        assert.equal(reply.ok, true, JSON.stringify(reply));
      });
    }

    test("an event emitted the moment `connect` fires is handled (150 fresh connections)", async (t) => {
      // The official client may emit as soon as it sees `connect` (and flushes
      // buffered emits then): the server must have its handlers in place by the time
      // it sends the CONNECT packet.
      const sockets = new Sockets(server.url);
      t.after(() => sockets.closeAll());
      const courseId = server.seed.courseId;
      for (let i = 0; i < 150; i++) {
        const socket = await sockets.connect("/chat", { token: server.seed.users[0].token, transport });
        const reply = await ack(socket, "leave", { courseId }, 2000).catch((err) => ({ lost: err.message }));
        assert.deepEqual(reply, { ok: true }, `connection #${i + 1}: the first event got no ack`);
        close(socket);
        sockets.all.delete(socket);
      }
    });

    test("all four namespaces share one connection (multiplexing)", async (t) => {
      const sockets = new Sockets(server.url);
      t.after(() => sockets.closeAll());
      const first = await sockets.connect("/chat", { token: server.seed.users[2].token, transport });
      const manager = first.io; // one Engine.IO connection, several namespaces
      const others = NAMESPACES.slice(1).map((ns) => manager.socket(ns, { auth: { token: server.seed.users[2].token } }));
      for (const s of others) sockets.all.add(s);
      await Promise.all(others.map((s) => connected(s)));
      for (const s of others) assert.equal(s.connected, true, s.nsp);
    });

    test(`a handshake with the allowed Origin ${ALLOWED_ORIGIN} connects`, async (t) => {
      const sockets = new Sockets(server.url);
      t.after(() => sockets.closeAll());
      const socket = await sockets.connect("/chat", {
        token: server.seed.users[0].token,
        transport,
        extraHeaders: { Origin: ALLOWED_ORIGIN },
      });
      assert.equal(socket.connected, true);
      const reply = await ack(socket, "join", { courseId: server.seed.courseId });
      assert.equal(reply.ok, true, JSON.stringify(reply));
    });

    test("HTTP keeps working while sockets are connected", async (t) => {
      const sockets = new Sockets(server.url);
      t.after(() => sockets.closeAll());
      const user = server.seed.users[3];
      const live = [];
      for (const ns of NAMESPACES) live.push(await sockets.connect(ns, { token: user.token, transport }));
      for (let i = 0; i < 3; i++) {
        const me = await api(server.url, "GET", "/api/auth/me", { token: user.token });
        assert.equal(me.status, 200, JSON.stringify(me.body));
        assert.equal(me.body.user.id, user.id);
        const health = await api(server.url, "GET", "/healthz");
        assert.equal(health.status, 200);
      }
      for (const s of live) assert.equal(s.connected, true, `${s.nsp} still connected`);
      const reply = await ack(live[0], "join", { courseId: server.seed.courseId });
      assert.equal(reply.ok, true, JSON.stringify(reply));
    });
  });
}

test("polling with upgrade ends up on websocket", async (t) => {
  const sockets = new Sockets(server.url);
  t.after(() => sockets.closeAll());
  const socket = sockets.open("/chat", { token: server.seed.users[0].token, transport: TRANSPORTS[2] });
  const upgraded = waitFor(socket.io.engine, "upgrade");
  await connected(socket);
  const transport = await upgraded;
  assert.equal(transport.name, "websocket");
  assert.equal(socket.io.engine.transport.name, "websocket");
  // Still usable after the upgrade.
  const reply = await ack(socket, "join", { courseId: server.seed.courseId });
  assert.equal(reply.ok, true, JSON.stringify(reply));
});
