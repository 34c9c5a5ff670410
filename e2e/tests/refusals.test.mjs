// Handshakes the server must refuse, and exactly how (PROTOCOL.md sections 1 and 3):
// connect_error messages for tokens, the unknown namespace, and the Origin check
// (HTTP 403 on both transports, seen by the client as a transport error).

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { randomBytes, randomUUID } from "node:crypto";
import { startServer, ALLOWED_ORIGIN } from "../lib/server.mjs";
import { NAMESPACES, Sockets, TRANSPORTS, connectError, nowSecs, signToken } from "../lib/client.mjs";

const EVIL_ORIGIN = "https://evil.example";
const APP_CODES = ["TOKEN_MISSING", "TOKEN_INVALID", "TOKEN_EXPIRED", "FORBIDDEN", "SERVER_FULL", "RATE_LIMITED"];

let server;
before(async () => {
  // Many handshakes in a short time: keep the per-IP handshake limit out of the way.
  server = await startServer({ students: 2, env: { SOCKET_CONNECTS_PER_SECOND_PER_IP: 5000 } });
});
after(async () => {
  await server?.stop();
});

/** Each case: how the client passes (or does not pass) a token, and the expected message. */
function cases() {
  const user = server.seed.users[0];
  const now = nowSecs();
  return [
    { name: "no token at all", opts: {}, expect: "TOKEN_MISSING" },
    { name: "token only in the query string", opts: { query: { token: user.token } }, expect: "TOKEN_MISSING" },
    { name: "garbage token in auth", opts: { token: "garbage.not-a.jwt" }, expect: "TOKEN_INVALID" },
    {
      name: "garbage token in the Authorization header",
      opts: { extraHeaders: { Authorization: "Bearer garbage" } },
      expect: "TOKEN_INVALID",
    },
    {
      name: "token signed with another secret",
      opts: { token: signToken({ sub: user.id, role: "STUDENT", iat: now, exp: now + 600 }, { secret: randomBytes(32).toString("hex") }) },
      expect: "TOKEN_INVALID",
    },
    {
      name: "alg none",
      opts: {
        token: (() => {
          const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
          return `${b64({ alg: "none", typ: "JWT" })}.${b64({ sub: user.id, role: "STUDENT", iat: now, exp: now + 600 })}.`;
        })(),
      },
      expect: "TOKEN_INVALID",
    },
    {
      name: "token of a user who does not exist",
      opts: { token: signToken({ sub: randomUUID(), role: "STUDENT", iat: now, exp: now + 600 }) },
      expect: "TOKEN_INVALID",
    },
    {
      name: "token with exp as a string",
      opts: { token: signToken({ sub: user.id, role: "STUDENT", iat: now, exp: String(now + 600) }) },
      expect: "TOKEN_INVALID",
    },
    {
      name: "expired token (exp 120 s ago)",
      opts: { token: signToken({ sub: user.id, role: "STUDENT", iat: now - 3600, exp: now - 120 }) },
      expect: "TOKEN_EXPIRED",
    },
    {
      name: "expired token in the Authorization header",
      opts: { extraHeaders: { Authorization: `Bearer ${signToken({ sub: user.id, role: "STUDENT", iat: now - 3600, exp: now - 120 })}` } },
      expect: "TOKEN_EXPIRED",
    },
    {
      name: "service token (role SERVICE)",
      opts: { token: signToken({ sub: "analysis-service", role: "SERVICE", iat: now, exp: now + 600 }) },
      expect: "FORBIDDEN",
    },
    {
      name: "service token in the Authorization header",
      opts: { extraHeaders: { Authorization: `Bearer ${signToken({ sub: "analysis-service", role: "SERVICE", iat: now, exp: now + 600 })}` } },
      expect: "FORBIDDEN",
    },
  ];
}

for (const transport of TRANSPORTS) {
  describe(`transport: ${transport.name}`, () => {
    test("token refusals: connect_error message is the exact code, on every namespace", async (t) => {
      for (const c of cases()) {
        await t.test(c.name, async (t2) => {
          const sockets = new Sockets(server.url);
          t2.after(() => sockets.closeAll());
          const errors = await Promise.all(
            NAMESPACES.map((ns) => connectError(sockets.open(ns, { transport, ...c.opts }))),
          );
          for (const [i, err] of errors.entries()) {
            assert.equal(err.message, c.expect, `${NAMESPACES[i]}: ${c.name}`);
          }
        });
      }
    });

    test("unknown namespace /nope -> Invalid namespace", async (t) => {
      const sockets = new Sockets(server.url);
      t.after(() => sockets.closeAll());
      const err = await connectError(sockets.open("/nope", { transport, token: server.seed.users[0].token }));
      assert.equal(err.message, "Invalid namespace");
    });

    test(`Origin ${EVIL_ORIGIN} is refused with a transport error`, async (t) => {
      const sockets = new Sockets(server.url);
      t.after(() => sockets.closeAll());
      const socket = sockets.open("/chat", {
        transport,
        token: server.seed.users[0].token,
        extraHeaders: { Origin: EVIL_ORIGIN },
      });
      const err = await connectError(socket);
      assert.ok(!APP_CODES.includes(err.message), `a transport error, not an application refusal: ${err.message}`);
      assert.equal(err.type, "TransportError", `error type (message: ${err.message})`);
      if (transport.transports[0] === "polling") assert.equal(err.description, 403, "the polling handshake answers 403");
    });
  });
}

describe("Origin check on the raw handshake", () => {
  test("polling handshake: 403 for a foreign Origin, 200 for the allowed one and for none", async () => {
    const path = "/socket.io/?EIO=4&transport=polling";
    const evil = await fetch(server.url + path, { headers: { Origin: EVIL_ORIGIN }, signal: AbortSignal.timeout(5000) });
    await evil.arrayBuffer();
    assert.equal(evil.status, 403);
    for (const headers of [{ Origin: ALLOWED_ORIGIN }, {}]) {
      const ok = await fetch(server.url + path, { headers, signal: AbortSignal.timeout(5000) });
      const body = await ok.text();
      assert.equal(ok.status, 200, JSON.stringify(headers));
      assert.match(body, /^0\{/, "an Engine.IO open packet");
    }
  });

  test("websocket handshake: 403 for a foreign Origin, 101 for the allowed one", async () => {
    assert.equal(await wsHandshakeStatus(EVIL_ORIGIN), 403);
    assert.equal(await wsHandshakeStatus(ALLOWED_ORIGIN), 101);
    assert.equal(await wsHandshakeStatus(undefined), 101);
  });
});

/** Sends a raw WebSocket upgrade request to /socket.io/ and resolves with the status. */
function wsHandshakeStatus(origin) {
  return new Promise((resolve, reject) => {
    const headers = {
      Connection: "Upgrade",
      Upgrade: "websocket",
      "Sec-WebSocket-Key": randomBytes(16).toString("base64"),
      "Sec-WebSocket-Version": "13",
    };
    if (origin) headers.Origin = origin;
    const req = http.request(`${server.url}/socket.io/?EIO=4&transport=websocket`, { headers, timeout: 5000 });
    req.on("upgrade", (res, socket) => {
      socket.destroy();
      resolve(res.statusCode);
    });
    req.on("response", (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on("timeout", () => req.destroy(new Error("websocket handshake timed out")));
    req.on("error", reject);
    req.end();
  });
}
