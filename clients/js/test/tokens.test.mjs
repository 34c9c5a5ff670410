// Token handling: refresh once on TOKEN_EXPIRED, stop on TOKEN_INVALID, reauth on
// session:expiring, refresh over HTTP too while polling.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { makeClient, record, signToken, sleep, startProxy, startServer, userToken, waitFor } from "./helpers.mjs";

let server;
before(async () => {
  server = await startServer({ students: 2 });
});
after(() => server?.stop());

const expiredToken = (user) => {
  const now = Math.floor(Date.now() / 1000);
  return signToken({ sub: user.id, role: "STUDENT", iat: now - 3600, exp: now - 120 });
};

test("TOKEN_EXPIRED at connect: getToken() is asked once more and the client connects", async (t) => {
  const user = server.seed.users[0];
  const tokens = [expiredToken(user), userToken(user)];
  let calls = 0;
  const client = makeClient(server.url, () => tokens[Math.min(calls++, 1)]);
  t.after(() => client.close());
  const log = record(client);
  await waitFor(() => client.status === "online", "online after the refresh");
  assert.equal(calls, 2, "one initial token, one refresh");
  assert.deepEqual(log.errors, []);
  const joined = await client.chat.join(server.seed.courseId);
  assert.equal(joined.ok, true);
});

test("a refresh that yields an expired token again stops the client (offline + error)", async (t) => {
  const user = server.seed.users[0];
  let calls = 0;
  const client = makeClient(server.url, async () => {
    calls += 1;
    return expiredToken(user);
  });
  t.after(() => client.close());
  const log = record(client);
  await waitFor(() => log.errors.length > 0, "an error event");
  assert.equal(client.status, "offline");
  assert.deepEqual(log.errors[0], { code: "TOKEN_EXPIRED", message: log.errors[0].message, fatal: true });
  assert.equal(calls, 2, "refreshed exactly once");
});

test("TOKEN_INVALID stops: status offline, one error event, no further attempts", async (t) => {
  const user = server.seed.users[0];
  let calls = 0;
  const bad = signToken({ sub: user.id, role: "STUDENT" }, "not-the-server-secret-0123456789abcdef");
  const client = makeClient(server.url, () => {
    calls += 1;
    return bad;
  });
  t.after(() => client.close());
  const log = record(client);
  const reconnects = [];
  client.on("reconnecting", (n) => reconnects.push(n));
  await waitFor(() => log.errors.length > 0, "an error event");
  assert.equal(client.status, "offline");
  assert.equal(log.errors[0].code, "TOKEN_INVALID");
  assert.equal(log.errors[0].fatal, true);
  await sleep(700);
  assert.equal(calls, 1, "no refresh for an invalid token");
  assert.equal(log.errors.length, 1, "reported once");
  assert.deepEqual(reconnects, [], "no reconnection after TOKEN_INVALID");
  await assert.rejects(client.chat.send(server.seed.courseId, "x"), { code: "CLOSED" });
});

test("session:expiring: the client fetches a fresh token and reauths the live socket", async (t) => {
  const user = server.seed.users[1];
  let calls = 0;
  // 5 s left: the server warns at once and would disconnect at exp.
  const client = makeClient(server.url, () => (calls++ === 0 ? userToken(user, 5) : userToken(user, 3600)));
  t.after(() => client.close());
  const log = record(client);
  await waitFor(() => client.status === "online", "online");
  await waitFor(() => calls === 2, "getToken() called on session:expiring", 5000);
  await client.chat.join(server.seed.courseId);
  await sleep(6500); // past the first token's exp
  assert.equal(client.status, "online");
  assert.deepEqual([...log.statuses], ["connecting", "online"], "never dropped");
  assert.deepEqual(log.errors, []);
  const ack = await client.chat.send(server.seed.courseId, "still here after exp");
  assert.equal(ack.ok, true);
  assert.equal(calls, 2);
});

test("while polling, an HTTP TOKEN_EXPIRED is refreshed once and polling goes on", async (t) => {
  const proxy = await startProxy(server.url);
  t.after(() => proxy.close());
  proxy.state.blockSockets = true;
  proxy.state.blockSse = true;
  const user = server.seed.users[1];
  let calls = 0;
  // The socket never gets to see the first token (sockets blocked); HTTP refuses it as expired.
  const client = makeClient(proxy.url, () =>
    calls++ === 0 ? expiredToken(user) : userToken(user),
  );
  t.after(() => client.close());
  const log = record(client);
  await waitFor(() => client.status === "polling", "polling", 10_000);
  assert.equal(calls, 2);
  await client.chat.join(server.seed.courseId);
  const ack = await client.chat.send(server.seed.courseId, "sent over HTTP with the refreshed token");
  await waitFor(() => log.messages.some((m) => m.messageId === ack.event.messageId), "own message polled back");
  assert.deepEqual(log.errors, []);
});

test("logout elsewhere: the server closes the socket, the old token is refused, the client stops", async (t) => {
  const user = server.seed.users[1];
  const token = userToken(user);
  let calls = 0;
  const client = makeClient(server.url, () => {
    calls += 1;
    return token;
  });
  t.after(() => client.close());
  const log = record(client);
  await waitFor(() => client.status === "online", "online");
  const res = await fetch(`${server.url}/api/auth/logout`, { method: "POST", headers: { authorization: `Bearer ${token}` } });
  assert.equal(res.status, 200);
  await waitFor(() => log.errors.some((e) => e.fatal), "a fatal error", 10_000);
  assert.equal(client.status, "offline");
  assert.equal(log.errors.find((e) => e.fatal).code, "TOKEN_INVALID");
  assert.equal(calls, 1, "an invalid token is not refreshed");
});

test("disconnected at exp: the client refreshes before reconnecting, and stops if getToken() has nothing fresher", async (t) => {
  const user = server.seed.users[0];
  const short = userToken(user, 2);
  // getToken() keeps returning the same short-lived token: reauth cannot help, the
  // server closes the sockets at exp, the refresh yields the same expired token.
  let calls = 0;
  const stuck = makeClient(server.url, () => {
    calls += 1;
    return short;
  });
  t.after(() => stuck.close());
  const log = record(stuck);
  await waitFor(() => stuck.status === "online", "online");
  await waitFor(() => log.errors.some((e) => e.fatal), "a fatal error after exp", 10_000);
  assert.equal(log.errors.find((e) => e.fatal).code, "TOKEN_EXPIRED");
  assert.equal(stuck.status, "offline");
  // connect, reauth on session:expiring, refresh before reconnecting; when the
  // reconnect lands inside the server's 30 s exp leeway it is accepted and cut at
  // once, which can add one more reauth and refresh. A client that looped would call
  // it dozens of times in these seconds.
  assert.ok(calls <= 6, `getToken() called ${calls} times`);
});
