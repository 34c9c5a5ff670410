// Token lifecycle on live sockets (PROTOCOL.md sections 2 and 3): logout disconnects
// every socket of the user; `session:expiring` before `exp`; the server disconnects
// at `exp`; `reauth` replaces the token (same user only).

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { startServer } from "../lib/server.mjs";
import {
  Sockets, TRANSPORTS, ack, api, collect, connectError, connected, nowSecs, signToken, sleep, waitFor,
} from "../lib/client.mjs";

const USERS_PER_TRANSPORT = 3;

let server;
before(async () => {
  server = await startServer({ students: USERS_PER_TRANSPORT * TRANSPORTS.length + 1 });
});
after(async () => {
  await server?.stop();
});

const claimsOf = (token) => JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString());
const iso = (secs) => new Date(secs * 1000).toISOString();

TRANSPORTS.forEach((transport, index) => {
  describe(`transport: ${transport.name}`, () => {
    const user = (k) => server.seed.users[USERS_PER_TRANSPORT * index + k];

    test("logout disconnects every socket of the user (io server disconnect); the token stops working", async (t) => {
      const sockets = new Sockets(server.url);
      t.after(() => sockets.closeAll());
      const me = user(0);
      const bystander = user(1);

      const login = await api(server.url, "POST", "/api/auth/login", { body: { email: me.email, password: me.password } });
      assert.equal(login.status, 200, JSON.stringify(login.body));
      assert.equal(login.body.user.id, me.id);
      const token = login.body.token;

      const chat = await sockets.connect("/chat", { token, transport });
      const notifications = await sockets.connect("/notifications", { token, transport });
      const viaHeader = await sockets.connect("/analytics", { transport, extraHeaders: { Authorization: `Bearer ${token}` } });
      const oldToken = await sockets.connect("/collaboration", { token: me.token, transport });
      const other = await sockets.connect("/chat", { token: bystander.token, transport });
      const otherGone = collect(other, "disconnect");

      const mine = [chat, notifications, viaHeader, oldToken];
      const reasons = Promise.all(mine.map((s) => waitFor(s, "disconnect")));
      const out = await api(server.url, "POST", "/api/auth/logout", { token });
      assert.equal(out.status, 200, JSON.stringify(out.body));
      assert.deepEqual(out.body, { ok: true });
      assert.deepEqual(await reasons, mine.map(() => "io server disconnect"));

      await sleep(300);
      assert.deepEqual(otherGone, [], "another user's socket stays");
      assert.equal(other.connected, true);

      // Tokens issued before the logout no longer open sockets nor call the API.
      const refused = await connectError(sockets.open("/chat", { token, transport }));
      assert.equal(refused.message, "TOKEN_INVALID");
      const refusedOld = await connectError(sockets.open("/chat", { token: me.token, transport }));
      assert.equal(refusedOld.message, "TOKEN_INVALID");
      const meAfter = await api(server.url, "GET", "/api/auth/me", { token });
      assert.equal(meAfter.status, 401);
      assert.equal(meAfter.body?.error?.code, "TOKEN_INVALID");

      // Logging in again gives a token that works.
      const again = await api(server.url, "POST", "/api/auth/login", { body: { email: me.email, password: me.password } });
      assert.equal(again.status, 200, JSON.stringify(again.body));
      const fresh = await sockets.connect("/chat", { token: again.body.token, transport });
      assert.equal(fresh.connected, true);
    });

    test("session:expiring arrives at once when less than 60 s are left; reauth extends; another user's token is FORBIDDEN", async (t) => {
      const sockets = new Sockets(server.url);
      t.after(() => sockets.closeAll());
      const me = user(1);
      const now = nowSecs();
      const exp = now + 40;
      const shortLived = signToken({ sub: me.id, role: "STUDENT", iat: now, exp });

      const socket = sockets.open("/chat", { token: shortLived, transport });
      const expiring = waitFor(socket, "session:expiring", { timeout: 3000 });
      await connected(socket);
      assert.deepEqual(await expiring, { expiresAt: iso(exp) });

      const renewed = await ack(socket, "reauth", { token: me.token });
      assert.deepEqual(renewed, { ok: true, expiresAt: iso(claimsOf(me.token).exp) });
      // A day left: no warning now.
      const warnings = collect(socket, "session:expiring");

      const foreign = await ack(socket, "reauth", { token: user(2).token });
      assert.equal(foreign.ok, false, JSON.stringify(foreign));
      assert.equal(foreign.error?.code, "FORBIDDEN", JSON.stringify(foreign));
      assert.equal(typeof foreign.error.message, "string");

      const service = await ack(socket, "reauth", {
        token: signToken({ sub: "analysis-service", role: "SERVICE", iat: now, exp: now + 600 }),
      });
      assert.equal(service.error?.code, "FORBIDDEN", JSON.stringify(service));

      const garbage = await ack(socket, "reauth", { token: "garbage" });
      assert.equal(garbage.error?.code, "TOKEN_INVALID", JSON.stringify(garbage));

      const expired = await ack(socket, "reauth", {
        token: signToken({ sub: me.id, role: "STUDENT", iat: now - 3600, exp: now - 120 }),
      });
      assert.equal(expired.error?.code, "TOKEN_EXPIRED", JSON.stringify(expired));

      assert.equal(socket.connected, true, "failed reauths do not cost the socket");
      await sleep(300);
      assert.deepEqual(warnings, [], "no session:expiring for a token with a day left");
    });

    test("the server disconnects a socket at its token's exp, unless reauth replaced the token", async (t) => {
      const sockets = new Sockets(server.url);
      t.after(() => sockets.closeAll());
      const me = user(2);
      const now = nowSecs();
      const exp = now + 3;
      const token = signToken({ sub: me.id, role: "STUDENT", iat: now, exp });

      const expiring = sockets.open("/notifications", { token, transport });
      const warned = waitFor(expiring, "session:expiring", { timeout: 5000 });
      await connected(expiring);
      const renewing = await sockets.connect("/chat", { token, transport });

      assert.deepEqual(await warned, { expiresAt: iso(exp) });
      const renewed = await ack(renewing, "reauth", { token: me.token });
      assert.equal(renewed.ok, true, JSON.stringify(renewed));
      const renewingGone = collect(renewing, "disconnect");

      const reason = await waitFor(expiring, "disconnect", { timeout: 8000 });
      assert.equal(reason, "io server disconnect");
      assert.ok(Date.now() / 1000 >= exp - 1, "not long before exp");

      await sleep(1500);
      assert.deepEqual(renewingGone, [], "the reauthenticated socket outlives the old exp");
      const still = await ack(renewing, "join", { courseId: server.seed.courseId });
      assert.equal(still.ok, true, JSON.stringify(still));
    });
  });
});
