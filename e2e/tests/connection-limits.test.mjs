// Connection limits (PROTOCOL.md sections 2 and 3): WEBSOCKET_MAX_CONNECTIONS clients
// per node and WEBSOCKET_MAX_SOCKETS_PER_USER sockets per user per namespace refuse
// with SERVER_FULL; SOCKET_CONNECTS_PER_SECOND_PER_IP refuses with RATE_LIMITED.
// Each test starts its own server with the limit it checks.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { startServer } from "../lib/server.mjs";
import { Sockets, TRANSPORTS, ack, close, connectError, connected, sleep } from "../lib/client.mjs";

/** A fresh server with `env`, stopped after the test `t`. */
async function serverFor(t, env, students = 5) {
  const server = await startServer({ students, env });
  t.after(() => server.stop());
  return server;
}

/** Retries connecting (a released slot is freed asynchronously), bounded. */
async function connectEventually(sockets, namespace, options, ms = 5000) {
  const deadline = Date.now() + ms;
  let lastError;
  while (Date.now() < deadline) {
    const socket = sockets.open(namespace, options);
    try {
      return await connected(socket);
    } catch (err) {
      lastError = err;
      close(socket);
      await sleep(100);
    }
  }
  throw new Error(`could not connect again within ${ms} ms: ${lastError?.message}`);
}

for (const transport of TRANSPORTS) {
  describe(`transport: ${transport.name}`, () => {
    test("WEBSOCKET_MAX_CONNECTIONS=2: the third client gets SERVER_FULL", async (t) => {
      const server = await serverFor(t, { WEBSOCKET_MAX_CONNECTIONS: 2 });
      const sockets = new Sockets(server.url);
      t.after(() => sockets.closeAll());
      const [u0, u1, u2] = server.seed.users;
      const first = await sockets.connect("/chat", { token: u0.token, transport });
      await sockets.connect("/chat", { token: u1.token, transport });

      const err = await connectError(sockets.open("/chat", { token: u2.token, transport }));
      assert.equal(err.message, "SERVER_FULL");
      const err2 = await connectError(sockets.open("/notifications", { token: u0.token, transport }));
      assert.equal(err2.message, "SERVER_FULL", "a new client of a connected user counts too");

      // A connected client may still open more namespaces over its own connection.
      const extra = first.io.socket("/notifications", { auth: { token: u0.token } });
      sockets.all.add(extra);
      await connected(extra);

      // The limit counts live clients: once one leaves, a new client fits again.
      close(first);
      close(extra);
      const again = await connectEventually(sockets, "/chat", { token: u2.token, transport });
      assert.equal(again.connected, true);
    });

    test("WEBSOCKET_MAX_SOCKETS_PER_USER=2: the user's third socket in a namespace gets SERVER_FULL", async (t) => {
      const server = await serverFor(t, { WEBSOCKET_MAX_SOCKETS_PER_USER: 2 });
      const sockets = new Sockets(server.url);
      t.after(() => sockets.closeAll());
      const [u0, u1] = server.seed.users;
      const first = await sockets.connect("/chat", { token: u0.token, transport });
      await sockets.connect("/chat", { token: u0.token, transport });

      const err = await connectError(sockets.open("/chat", { token: u0.token, transport }));
      assert.equal(err.message, "SERVER_FULL");

      // Per namespace and per user: other namespaces and other users are unaffected.
      await sockets.connect("/notifications", { token: u0.token, transport });
      await sockets.connect("/chat", { token: u1.token, transport });

      close(first);
      const again = await connectEventually(sockets, "/chat", { token: u0.token, transport });
      assert.equal(again.connected, true);
    });

    test("SOCKET_CONNECTS_PER_SECOND_PER_IP=1: rapid new clients get RATE_LIMITED", async (t) => {
      const server = await serverFor(t, { SOCKET_CONNECTS_PER_SECOND_PER_IP: 1 });
      const sockets = new Sockets(server.url);
      t.after(() => sockets.closeAll());
      const users = server.seed.users;

      const first = await sockets.connect("/chat", { token: users[0].token, transport });
      assert.equal(first.connected, true, "the first handshake is within the burst");

      const outcomes = [];
      for (let i = 0; i < 6; i++) {
        const socket = sockets.open("/chat", { token: users[(i + 1) % users.length].token, transport });
        outcomes.push(
          connected(socket).then(
            () => "connected",
            (err) => err.cause?.message ?? err.message,
          ),
        );
      }
      const results = await Promise.all(outcomes);
      assert.ok(results.includes("RATE_LIMITED"), `some rapid clients are refused: ${results}`);
      for (const r of results) assert.ok(r === "connected" || r === "RATE_LIMITED", `unexpected outcome ${r}`);

      // An already connected client keeps working.
      const reply = await ack(first, "join", { courseId: server.seed.courseId });
      assert.equal(reply.ok, true, JSON.stringify(reply));

      // Backing off helps: after the bucket refills, a new client connects.
      await sleep(2100);
      const later = await sockets.connect("/chat", { token: users[0].token, transport });
      assert.equal(later.connected, true);
    });
  });
}
